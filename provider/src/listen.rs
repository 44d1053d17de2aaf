//! The listeners' connection handling: the soft `RLIMIT_NOFILE` raised to
//! the hard limit, a cap on the connections each listener holds (one more
//! is closed at accept), accept loops that wait with a bounded backoff when
//! `accept` fails (out of descriptors, the listener stays readable and an
//! immediate retry would spin), the HTTP listeners' header-read timeout
//! (also their keep-alive idle time), and the KMS connections' idle timeout
//! (nothing received from the peer; the server's HTTP/2 pings make a live
//! client answer, see `server.kmsIdleTimeout`). Rules in
//! `bao_kms_core::connections`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bao_kms_core::connections::{ACCEPT_LOG_BUDGET, AcceptBackoff, AcceptErrorKind, nofile_target};
use bao_kms_core::log_budget::LogBudget;
use futures_util::Stream;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, UdsConnectInfo};

use crate::metrics::{Listener, ListenerKind, Metrics, UpDown};
use crate::request_log::ACCEPT_FAILED;

/// The process' `RLIMIT_NOFILE` after [`raise_nofile`].
#[derive(Clone, Copy, Debug)]
pub struct Nofile {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before it was raised (`None`: left as it was).
    pub raised_from: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the kernel allows
/// an unprivileged process that much). Systemd's default soft limit is
/// 1024 whatever `LimitNOFILE=` raises the hard one to.
pub fn raise_nofile() -> io::Result<Nofile> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let Some(target) = nofile_target(soft, hard) else {
        return Ok(Nofile {
            soft,
            hard,
            raised_from: None,
        });
    };
    setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    Ok(Nofile {
        soft: target,
        hard,
        raised_from: Some(soft),
    })
}

fn classify(e: &io::Error) -> AcceptErrorKind {
    match e.raw_os_error() {
        Some(libc::EMFILE) => AcceptErrorKind::ProcessFdLimit,
        Some(libc::ENFILE) => AcceptErrorKind::SystemFdLimit,
        Some(libc::ENOBUFS | libc::ENOMEM) => AcceptErrorKind::Memory,
        Some(
            libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::EPROTO
            | libc::EINTR
            | libc::EPERM
            | libc::ETIMEDOUT
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH,
        ) => AcceptErrorKind::Aborted,
        _ => AcceptErrorKind::Other,
    }
}

/// A held connection slot; dropping it frees the slot.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: UpDown,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// One listener's cap, backoff and failure log.
pub struct Gate {
    listener: &'static str,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    backoff: AcceptBackoff,
    log: LogBudget,
}

impl Gate {
    /// `listener` is the metric label (`kms`, `health`, `metrics`).
    pub fn new(listener: &'static str, max_connections: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max_connections as usize)),
            metrics,
            backoff: AcceptBackoff::default(),
            log: LogBudget::new(ACCEPT_LOG_BUDGET),
        }
    }

    fn label(&self) -> Listener {
        Listener {
            listener: self.listener,
        }
    }

    /// After a successful accept: a slot to serve the connection in, or
    /// `None` when every slot is taken (the caller drops the connection,
    /// which the peer sees closed at once).
    fn admit(&mut self) -> Option<Slot> {
        self.backoff.accepted();
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.metrics.connections_refused.get_or_create(&self.label()).inc();
            return None;
        };
        let open = self.metrics.connections_open.get_or_create(&self.label());
        open.inc();
        Some(Slot { _permit: permit, open })
    }

    /// After a failed accept: counts it, logs within [`ACCEPT_LOG_BUDGET`]
    /// (a written line carries the number suppressed before it; suppressed
    /// ones count in `openbao_kms_log_lines_suppressed_total`), and waits
    /// the backoff before the next accept.
    async fn failed(&mut self, e: io::Error) {
        let kind = classify(&e);
        self.metrics
            .accept_errors
            .get_or_create(&ListenerKind {
                listener: self.listener,
                kind: kind.as_str(),
            })
            .inc();
        let wait = self.backoff.failed(kind);
        let admit = self.log.admit((ACCEPT_FAILED, kind.as_str()), Instant::now());
        if admit.log {
            tracing::warn!(
                message = ACCEPT_FAILED,
                listener = self.listener,
                kind = kind.as_str(),
                error = %e,
                backoff_ms = wait.as_millis() as u64,
                suppressed = admit.suppressed_before,
            );
        } else {
            self.metrics.request_log.count_suppressed(ACCEPT_FAILED);
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Serves `router` over HTTP/1.1 on `listener` until `stop` changes: at
/// most the gate's connections at once, each closed when a request's
/// headers (or the next request of a kept-alive connection) take longer
/// than `header_timeout`.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    mut gate: Gate,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let gate_timeouts = gate.metrics.connections_timed_out.get_or_create(&gate.label());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _)) => {
                let Some(slot) = gate.admit() else {
                    drop(stream);
                    continue;
                };
                let service = TowerToHyperService::new(router.clone());
                let timeouts = gate_timeouts.clone();
                let mut stop = stop.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .keep_alive(true);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result
                        && e.is_timeout()
                    {
                        timeouts.inc();
                    }
                });
            }
            Err(e) => {
                tokio::select! {
                    () = gate.failed(e) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The KMS socket's accepted connections for tonic: capped by the gate,
/// each wrapped in a [`KmsConnection`] with the idle timeout.
pub fn kms_incoming(
    listener: UnixListener,
    gate: Gate,
    idle_timeout: Duration,
) -> impl Stream<Item = io::Result<KmsConnection>> + Send + 'static {
    futures_util::stream::unfold((listener, gate), move |(listener, mut gate)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let Some(slot) = gate.admit() else {
                        drop(stream);
                        continue;
                    };
                    let timeouts = gate.metrics.connections_timed_out.get_or_create(&gate.label());
                    let conn = KmsConnection {
                        stream,
                        _slot: slot,
                        idle_timeout,
                        idle: Box::pin(tokio::time::sleep(idle_timeout)),
                        timed_out: timeouts,
                    };
                    return Some((Ok(conn), (listener, gate)));
                }
                Err(e) => gate.failed(e).await,
            }
        }
    })
}

/// An accepted KMS connection: reads fail with `TimedOut` (closing the
/// connection) once the peer has sent nothing for the idle timeout.
pub struct KmsConnection {
    stream: UnixStream,
    _slot: Slot,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    timed_out: crate::metrics::Counter,
}

impl Connected for KmsConnection {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for KmsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.timed_out.inc();
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer sent nothing within server.kmsIdleTimeout",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for KmsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified_by_errno() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(classify(&e(libc::EMFILE)), AcceptErrorKind::ProcessFdLimit);
        assert_eq!(classify(&e(libc::ENFILE)), AcceptErrorKind::SystemFdLimit);
        assert_eq!(classify(&e(libc::ENOBUFS)), AcceptErrorKind::Memory);
        assert_eq!(classify(&e(libc::ECONNABORTED)), AcceptErrorKind::Aborted);
        assert_eq!(classify(&e(libc::EBADF)), AcceptErrorKind::Other);
    }

    #[test]
    fn the_soft_nofile_limit_ends_at_the_hard_one() {
        let n = raise_nofile().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((n.soft, n.hard), (soft, hard));
        assert_eq!(nofile_target(soft, hard), None);
    }
}
