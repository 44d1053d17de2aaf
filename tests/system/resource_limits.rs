//! Descriptor exhaustion by a local process: a hog running as uid 65534
//! (not in the socket group) cannot reach the KMS socket at all, holds at
//! most `server.maxHealthConnections` connections to the health port, and
//! loses those to the header-read timeout, while kube-apiserver's side (the
//! socket group) keeps getting KMS connections and the provider's
//! descriptor count stays bounded. Idle KMS connections are closed, a live
//! client answering the server's pings is not. With a small `NOFILE` and
//! caps that do not fit under it, the accept loops wait out `EMFILE`
//! instead of spinning and serve again once the hog leaves. Descriptor
//! counts, RSS and CPU time are printed, not asserted as timings.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bao_kms_system_tests::provider::{ProviderEnv, dev_setup_with};
use bao_kms_system_tests::{EncryptedSeed, Provider, counter};
use tokio::io::AsyncReadExt as _;

/// The unprivileged user the hog runs as (`nobody`).
const HOG_UID: u32 = 65_534;

/// Long enough for any condition here; only a hang reaches it.
const CONDITION_TIMEOUT: Duration = Duration::from_secs(60);

/// The config with `lines` added to its `server` section.
fn with_server(env: &ProviderEnv, lines: &str) -> anyhow::Result<()> {
    let yaml = env.config_yaml().replacen("server:\n", &format!("server:\n{lines}"), 1);
    env.write_config_text(&yaml)
}

/// The connection hog (`src/bin/connection-hog.rs`) as uid/gid 65534
/// without supplementary groups.
struct Hog {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Hog {
    fn spawn(health: &str, count: usize, kms_socket: &std::path::Path) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_connection-hog"))
            .arg(health)
            .arg(count.to_string())
            .arg(kms_socket)
            // Dropping root: std clears the supplementary groups as well.
            .uid(HOG_UID)
            .gid(HOG_UID)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the connection hog")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("hog stdout")?);
        Ok(Self { child, stdin, stdout })
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the hog exited");
        }
        Ok(line.trim().to_owned())
    }

    /// (open, closed) connections of the hog now.
    fn check(&mut self) -> anyhow::Result<(usize, usize)> {
        let stdin = self.stdin.as_mut().context("hog stdin")?;
        writeln!(stdin, "check")?;
        let line = self.line()?;
        let field = |name: &str| -> anyhow::Result<usize> {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .with_context(|| format!("{name} in {line:?}"))?
                .parse()
                .with_context(|| line.clone())
        };
        Ok((field("open=")?, field("closed=")?))
    }

    /// Waits until `done(open, closed)` holds.
    fn wait_until(&mut self, what: &str, done: impl Fn(usize, usize) -> bool) -> anyhow::Result<(usize, usize)> {
        let deadline = Instant::now() + CONDITION_TIMEOUT;
        loop {
            let (open, closed) = self.check()?;
            if done(open, closed) {
                return Ok((open, closed));
            }
            if Instant::now() >= deadline {
                bail!("{what}: still open={open} closed={closed} after {CONDITION_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn leave(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()
        .context("VmRSS value")
}

/// CPU time the process has run, from the scheduler's own accounting.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    let ns: u64 = schedstat.split_whitespace().next().context("schedstat")?.parse()?;
    Ok(Duration::from_nanos(ns))
}

fn metric(text: &str, name: &str, listener: &str) -> f64 {
    counter(text, name, &[("listener", listener)])
}

/// Encrypt and Decrypt through a fresh connection, as a restarting
/// kube-apiserver does, and Decrypt of data written before.
async fn fresh_client_serves(provider: &Provider, earlier: &EncryptedSeed) -> anyhow::Result<()> {
    let fresh = provider.client().await?;
    fresh.healthy_status().await?;
    let stored = fresh.prime().await?;
    fresh.decrypt(earlier).await?;
    fresh.decrypt(&stored).await?;
    Ok(())
}

#[tokio::test]
async fn an_unprivileged_hog_cannot_starve_the_kms_socket_or_the_descriptors() -> anyhow::Result<()> {
    const CAP: usize = 16;
    const HOG_CONNECTIONS: usize = 200;
    let (_bao, _p, env) = dev_setup_with(|b| b).await?;
    with_server(
        &env,
        &format!("  maxHealthConnections: {CAP}\n  httpHeaderReadTimeout: 2s\n"),
    )?;
    let provider = Provider::start(&env).await?;
    let pid = provider.pid();
    let kms = provider.client().await?;
    let earlier = kms.prime().await?;
    let fds_before = open_fds(pid)?;
    let rss_before = rss_kib(pid)?;

    let mut hog = Hog::spawn(env.health_address(), HOG_CONNECTIONS, env.socket_path())?;
    let hello = hog.line()?;
    assert_eq!(
        hello,
        format!("uid={HOG_UID} kms=PermissionDenied"),
        "the hog must run unprivileged and the KMS socket must refuse it"
    );
    let opened = hog.line()?;
    assert_eq!(opened, format!("opened={HOG_CONNECTIONS} failed=0"));

    // Connections beyond the cap are closed at accept.
    let (open, closed) = hog.wait_until("connections beyond the cap", |_, closed| {
        closed >= HOG_CONNECTIONS - CAP
    })?;
    let fds_under_hog = open_fds(pid)?;
    let rss_under_hog = rss_kib(pid)?;
    eprintln!(
        "hog of {HOG_CONNECTIONS} half-sent requests (uid {HOG_UID}), health cap {CAP}: \
         open={open} closed={closed}; provider fds {fds_before} -> {fds_under_hog}, \
         RSS {rss_before} KiB -> {rss_under_hog} KiB"
    );
    assert!(
        fds_under_hog <= fds_before + CAP + 8,
        "the provider holds {fds_under_hog} descriptors under the hog (before: {fds_before}, cap {CAP})"
    );

    // kube-apiserver's side still connects and is served while the hog is present.
    fresh_client_serves(&provider, &earlier).await?;
    kms.healthy_status().await?;

    // The half-sent requests inside the cap are closed by the header-read timeout.
    hog.wait_until("half-sent requests", |open, _| open == 0)?;
    let fds_after = open_fds(pid)?;
    eprintln!(
        "after the header-read timeout: provider fds {fds_after}, RSS {} KiB",
        rss_kib(pid)?
    );
    let metrics = provider.metrics_text().await?;
    let refused = metric(&metrics, "openbao_kms_connections_refused_total", "health");
    let timed_out = metric(&metrics, "openbao_kms_connections_timed_out_total", "health");
    eprintln!("health listener: refused {refused}, timed out {timed_out}");
    assert!(refused >= (HOG_CONNECTIONS - CAP) as f64, "refused {refused}");
    assert!(timed_out >= 1.0, "timed out {timed_out}");
    hog.leave()?;
    fresh_client_serves(&provider, &earlier).await?;
    Ok(())
}

#[tokio::test]
async fn idle_kms_connections_are_closed_and_a_live_client_is_kept() -> anyhow::Result<()> {
    const CAP: usize = 8;
    const SILENT: usize = 20;
    let (_bao, _p, env) = dev_setup_with(|b| b).await?;
    with_server(
        &env,
        &format!(
            "  maxKmsConnections: {CAP}\n  kmsKeepaliveInterval: 500ms\n  kmsKeepaliveTimeout: 1s\n  kmsIdleTimeout: 3s\n"
        ),
    )?;
    let provider = Provider::start(&env).await?;
    let pid = provider.pid();
    let live = provider.client().await?;
    let earlier = live.prime().await?;
    let fds_before = open_fds(pid)?;

    // Peers in the socket group that connect and send nothing. The reads
    // are async: the live client's connection task must keep running to
    // answer the server's pings, as kube-apiserver's does.
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(tokio::net::UnixStream::connect(env.socket_path()).await?);
    }
    // The provider holds its cap (the live client and seven silent peers)
    // once it has accepted them all.
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    loop {
        let open = metric(&provider.metrics_text().await?, "openbao_kms_connections_open", "kms");
        if open >= CAP as f64 {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the KMS listener holds {open} connections, not its cap of {CAP}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fds_with_silent = open_fds(pid)?;
    // Each read ends when the provider closes that connection (EOF or reset).
    let started = Instant::now();
    for (i, s) in silent.iter_mut().enumerate() {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout_at((started + CONDITION_TIMEOUT).into(), s.read(&mut buf)).await {
                Err(_) => bail!("silent KMS connection {i} still open after {CONDITION_TIMEOUT:?}"),
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => continue,
            }
        }
    }
    eprintln!(
        "{SILENT} silent KMS connections (cap {CAP}): provider fds {fds_before} -> {fds_with_silent}, all closed within {:?}",
        started.elapsed()
    );
    assert!(fds_with_silent <= fds_before + CAP + 4, "{fds_with_silent} descriptors");

    // The live client stayed connected through the idle period: its
    // connection was never one of those closed as idle.
    live.healthy_status().await?;
    live.decrypt(&earlier).await?;
    let metrics = provider.metrics_text().await?;
    let refused = metric(&metrics, "openbao_kms_connections_refused_total", "kms");
    let timed_out = metric(&metrics, "openbao_kms_connections_timed_out_total", "kms");
    let open = metric(&metrics, "openbao_kms_connections_open", "kms");
    eprintln!("kms listener: refused {refused}, timed out {timed_out}, open {open}");
    assert_eq!(refused, (SILENT - (CAP - 1)) as f64);
    assert_eq!(timed_out, (CAP - 1) as f64, "only the silent connections time out");
    assert_eq!(open, 1.0, "the live client's connection");
    Ok(())
}

#[tokio::test]
async fn out_of_descriptors_the_accept_loops_wait_instead_of_spinning_and_recover() -> anyhow::Result<()> {
    const NOFILE: usize = 128;
    const HOG_CONNECTIONS: usize = 200;
    const WINDOW: Duration = Duration::from_secs(3);
    let (_bao, _p, env) = dev_setup_with(|b| b.probe_interval("1s")).await?;
    // Caps above the limit: the budget warning, then real exhaustion.
    with_server(&env, "  maxHealthConnections: 1024\n  httpHeaderReadTimeout: 1m\n")?;
    let nofile = format!("--nofile={NOFILE}:{NOFILE}");
    let mut provider = Provider::spawn_wrapped(&env, &["prlimit", &nofile, "--"])?;
    provider.wait_ready(Duration::from_secs(20)).await?;
    let pid = provider.pid();
    let stderr = provider.stderr();
    assert!(
        stderr.contains("serve.fd_budget_short"),
        "no descriptor budget warning:\n{stderr}"
    );
    let kms = provider.client().await?;
    let earlier = kms.prime().await?;

    let mut hog = Hog::spawn(env.health_address(), HOG_CONNECTIONS, env.socket_path())?;
    hog.line()?;
    hog.line()?;
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    while open_fds(pid)? < NOFILE - 2 {
        if Instant::now() >= deadline {
            bail!(
                "the provider never reached its descriptor limit ({} open)",
                open_fds(pid)?
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A restarting kube-apiserver dials the socket: the connection waits in
    // the backlog and keeps the listener readable while accept fails.
    let pending = UnixStream::connect(env.socket_path())?;
    let cpu_before = cpu_time(pid)?;
    tokio::time::sleep(WINDOW).await;
    let cpu_used = cpu_time(pid)? - cpu_before;
    eprintln!(
        "NOFILE {NOFILE}, hog of {HOG_CONNECTIONS}: provider fds {}, RSS {} KiB, CPU {cpu_used:?} over {WINDOW:?}",
        open_fds(pid)?,
        rss_kib(pid)?
    );
    assert!(
        cpu_used < Duration::from_secs(1),
        "the provider used {cpu_used:?} of CPU in {WINDOW:?} while out of descriptors: the accept loop spins"
    );

    hog.leave()?;
    drop(pending);
    let left = Instant::now();
    let fresh = provider.client().await?;
    fresh.status().await?;
    let kms_back = left.elapsed();
    provider.wait_ready(CONDITION_TIMEOUT).await?;
    eprintln!(
        "after the hog left: a new KMS connection answered Status within {kms_back:?}, /ready 200 within {:?}",
        left.elapsed()
    );
    fresh_client_serves(&provider, &earlier).await?;
    let metrics = provider.metrics_text().await?;
    let fd_errors = |listener| {
        counter(
            &metrics,
            "openbao_kms_accept_errors_total",
            &[("listener", listener), ("kind", "process_fd_limit")],
        )
    };
    let (kms_errors, health_errors) = (fd_errors("kms"), fd_errors("health"));
    eprintln!(
        "accept errors (process_fd_limit): kms {kms_errors}, health {health_errors}; fds after the hog left: {}",
        open_fds(pid)?
    );
    assert!(kms_errors >= 1.0, "the KMS accept loop never met EMFILE");
    assert!(kms_errors <= 1000.0, "the KMS accept loop retried {kms_errors} times");
    Ok(())
}
