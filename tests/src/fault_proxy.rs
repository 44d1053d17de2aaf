//! A TCP fault proxy between the provider and OpenBao: the provider's
//! `openbao.address` names the proxy, which relays bytes (TLS passes
//! through untouched) to the real server and can inject one network fault
//! at a time:
//!
//! - [`Fault::Pass`] relays.
//! - [`Fault::Pause`] holds every byte (existing and new connections) until
//!   the fault is cleared, then deliver it.
//! - [`Fault::Reset`] aborts every open connection with a TCP RST
//!   (`SO_LINGER` 0) and resets every new one as soon as it is accepted.
//! - [`Fault::Blackhole`] accepts, reads and discards; it never answers. A
//!   connection that lost bytes stays dead after the fault is cleared (its
//!   TLS stream is broken); new ones relay again.
//! - [`Fault::Slow`] delays every chunk, in both directions, by the given
//!   time.
//!
//! It runs in the test's tokio runtime; dropping it stops it and closes
//! every connection.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The fault the proxy injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Pause,
    Reset,
    Blackhole,
    Slow(Duration),
}

/// A running proxy on a free loopback port.
pub struct FaultProxy {
    port: u16,
    fault: watch::Sender<Fault>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and relays to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let upstream: SocketAddr = upstream
            .parse()
            .with_context(|| format!("upstream {upstream:?} is not host:port"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (fault, rx) = watch::channel(Fault::Pass);
        let task = tokio::spawn(accept_loop(listener, upstream, rx));
        Ok(Self { port, fault, task })
    }

    /// A proxy in front of an OpenBao at `https://host:port`.
    pub async fn in_front_of(openbao_address: &str) -> anyhow::Result<Self> {
        let upstream = openbao_address
            .strip_prefix("https://")
            .with_context(|| format!("{openbao_address} is not an https:// address"))?;
        Self::start(upstream).await
    }

    /// `https://127.0.0.1:<port>`: the address to give the provider.
    pub fn address(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Injects `fault` from now on ([`Fault::Pass`] clears it).
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts until aborted; the connection tasks live in a [`JoinSet`] that
/// aborts them when the loop is dropped.
async fn accept_loop(listener: TcpListener, upstream: SocketAddr, rx: watch::Receiver<Fault>) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((down, _)) = listener.accept().await else {
            continue;
        };
        let fault = *rx.borrow();
        match fault {
            Fault::Reset => reset(&down),
            Fault::Blackhole => {
                conns.spawn(swallow(down));
            }
            Fault::Pass | Fault::Pause | Fault::Slow(_) => {
                conns.spawn(relay(down, upstream, rx.clone()));
            }
        }
    }
}

/// Closes `stream` with a RST once it is dropped.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Reads and discards until the peer closes.
async fn swallow(mut down: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while matches!(down.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// How one direction of a relay ended.
enum End {
    Closed,
    Reset,
}

async fn relay(mut down: TcpStream, upstream: SocketAddr, rx: watch::Receiver<Fault>) {
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        reset(&down);
        return;
    };
    let end = {
        let (mut down_read, mut down_write) = down.split();
        let (mut up_read, mut up_write) = up.split();
        tokio::select! {
            end = pump(&mut down_read, &mut up_write, rx.clone()) => end,
            end = pump(&mut up_read, &mut down_write, rx) => end,
        }
    };
    if matches!(end, End::Reset) {
        reset(&down);
        reset(&up);
    }
}

/// Copies `from` to `to` under the current fault.
async fn pump(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, mut rx: watch::Receiver<Fault>) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    let mut dead = false;
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => n,
            },
            _ = rx.wait_for(|f| *f == Fault::Reset) => return End::Reset,
        };
        loop {
            let fault = *rx.borrow_and_update();
            match fault {
                Fault::Pass => break,
                Fault::Reset => return End::Reset,
                Fault::Blackhole => {
                    dead = true;
                    break;
                }
                Fault::Slow(delay) => {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => break,
                        _ = rx.wait_for(|f| *f == Fault::Reset) => return End::Reset,
                    }
                }
                Fault::Pause => {
                    if rx.changed().await.is_err() {
                        return End::Closed;
                    }
                }
            }
        }
        if !dead && to.write_all(&buf[..n]).await.is_err() {
            return End::Closed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; returns its `host:port`.
    async fn echo() -> anyhow::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Ok(addr)
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> std::io::Result<Vec<u8>> {
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(within, s.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn every_fault_does_what_it_says_and_clears() -> anyhow::Result<()> {
        let proxy = FaultProxy::start(&echo().await?).await?;
        let addr = format!("127.0.0.1:{}", proxy.port);
        let short = Duration::from_millis(300);

        let mut held = TcpStream::connect(&addr).await?;
        assert_eq!(round_trip(&mut held, short).await?, b"ping");

        // Pause: nothing arrives until cleared, then the held bytes do.
        proxy.set(Fault::Pause);
        held.write_all(b"late").await?;
        let mut buf = [0u8; 4];
        assert!(tokio::time::timeout(short, held.read_exact(&mut buf)).await.is_err());
        proxy.set(Fault::Pass);
        held.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"late");

        // Slow: delivered, later.
        proxy.set(Fault::Slow(Duration::from_millis(200)));
        let started = std::time::Instant::now();
        assert_eq!(round_trip(&mut held, Duration::from_secs(5)).await?, b"ping");
        assert!(started.elapsed() >= Duration::from_millis(400));

        // Blackhole: new connections accepted, never answered.
        proxy.set(Fault::Blackhole);
        let mut hole = TcpStream::connect(&addr).await?;
        assert!(round_trip(&mut hole, short).await.is_err());

        // Reset: the open connection and a new one are reset.
        proxy.set(Fault::Reset);
        let is_reset = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        };
        let err = round_trip(&mut held, short).await.expect_err("reset");
        assert!(is_reset(&err), "{err}");
        let mut fresh = TcpStream::connect(&addr).await?;
        let err = round_trip(&mut fresh, short).await.expect_err("reset");
        assert!(is_reset(&err), "{err}");

        proxy.set(Fault::Pass);
        let mut after = TcpStream::connect(&addr).await?;
        assert_eq!(round_trip(&mut after, short).await?, b"ping");
        Ok(())
    }
}
