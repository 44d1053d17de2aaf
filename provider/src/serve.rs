//! `serve`: start the engine, bind the socket and listeners, run until
//! SIGTERM/SIGINT, drain in-flight calls within a deadline, remove the socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bao_kms_core::config::Config;
use bao_kms_core::connections::FdBudget;
use bao_kms_core::limits::MAX_GRPC_MESSAGE_BYTES;
use bao_kms_proto::v2::key_management_service_server::KeyManagementServiceServer;
use tokio::sync::watch;

use crate::health::{HealthState, health_router, metrics_router};
use crate::listen::{self, Gate};
use crate::metrics::Metrics;
use crate::runtime::{Engine, StartupError};
use crate::service::KmsService;
use crate::socket;

/// How long in-flight KMS calls may take to finish after a stop signal.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the process can still be killed; never stop on our own.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn bind_http(addr: &str, what: &str) -> Result<tokio::net::TcpListener, StartupError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartupError::FailClosed(format!("binding the {what} listener on {addr}: {e}")))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, logs the result
/// once, and warns when the listeners at their caps plus the reserve would
/// not fit under it (they are still served; the accept loops then wait
/// out `EMFILE` instead of spinning).
fn prepare_nofile(cfg: &Config) {
    let s = &cfg.server;
    match listen::raise_nofile() {
        Ok(n) => {
            tracing::info!(
                message = "serve.nofile",
                soft = n.soft,
                hard = n.hard,
                raised_from = n.raised_from,
            );
            let budget = FdBudget {
                kms: u64::from(s.max_kms_connections),
                health: s
                    .health_address
                    .as_ref()
                    .map_or(0, |_| u64::from(s.max_health_connections)),
                metrics: s
                    .metrics_address
                    .as_ref()
                    .map_or(0, |_| u64::from(s.max_metrics_connections)),
            };
            if let Some(short) = budget.shortfall(n.soft) {
                tracing::warn!(
                    message = "serve.fd_budget_short",
                    nofile = n.soft,
                    needed = budget.needed(),
                    short,
                    max_kms_connections = s.max_kms_connections,
                    max_health_connections = s.max_health_connections,
                    max_metrics_connections = s.max_metrics_connections,
                    reserve = bao_kms_core::connections::FD_RESERVE,
                    hint =
                        "raise LimitNOFILE (systemd) or the container runtime's limit, or lower server.max*Connections",
                );
            }
        }
        Err(e) => tracing::warn!(message = "serve.nofile_unchanged", error = %e),
    }
}

fn last_exit_path(state: &std::path::Path) -> std::path::PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(".last-exit");
    s.into()
}

/// Writes `<state.path>.last-exit` for a fail-closed exit (best effort: the
/// directory may be the very thing that failed; then the log line and
/// stderr are all there is).
pub fn record_last_exit(state: &std::path::Path, message: &str, exit_code: i32) {
    let record = bao_kms_core::last_exit::LastExit::new(message, exit_code, crate::now_unix());
    let path = last_exit_path(state);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let written = (|| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&record.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        tracing::warn!(message = "serve.last_exit_unrecorded", path = %path.display(), error = %e);
    }
}

/// Publishes the last fail-closed exit, if one was recorded, as metrics and
/// one log line (the state directory was checked by the start).
fn publish_last_exit(state: &std::path::Path, metrics: &crate::metrics::Metrics) {
    let path = last_exit_path(state);
    let read = crate::fsutil::regular_file(&path, 0o137, "0640 or stricter").and_then(|meta| {
        meta.map(|_| std::fs::read(&path).map_err(|e| e.to_string()))
            .transpose()?
            .map(|b| bao_kms_core::last_exit::LastExit::decode(&b))
            .transpose()
    });
    match read {
        Ok(None) => {}
        Ok(Some(r)) => {
            metrics
                .last_exit_info
                .get_or_create(&crate::metrics::Reason {
                    reason: static_reason(&r.reason),
                })
                .set(1);
            metrics.last_exit_timestamp.set(r.exited_at_unix);
            tracing::warn!(message = "serve.last_exit", reason = %r.reason, exit_code = r.exit_code, exited_at_unix = r.exited_at_unix);
        }
        Err(e) => tracing::warn!(message = "serve.last_exit_unreadable", path = %path.display(), error = %e),
    }
}

/// The label value of a decoded reason (decode accepted only these).
fn static_reason(reason: &str) -> &'static str {
    bao_kms_core::reason::ReasonCode::parse(reason).map_or(bao_kms_core::last_exit::FAIL_CLOSED, |c| c.as_str())
}

pub async fn run(cfg: Config) -> Result<(), StartupError> {
    let cfg = Arc::new(cfg);
    tracing::info!(message = "serve.start", version = crate::VERSION, identity_fingerprint = %cfg.identity_scope().fingerprint());
    prepare_nofile(&cfg);
    let mut otlp = match &cfg.telemetry.otlp {
        Some(o) => {
            let otlp = crate::telemetry::Otlp::start(o).map_err(|e| StartupError::Config(e.to_string()))?;
            // The endpoint and what is exported; header values never.
            tracing::info!(message = "telemetry.otlp", endpoint = %o.endpoint, traces = o.traces, metrics = o.metrics, header_count = o.header_files.len());
            Some(otlp)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::for_serve(&cfg.auth.method, otlp.as_mut()));
    let result = serve(cfg, metrics.clone()).await;
    // However serving ended (a failed start too): the last spans and metric
    // push within the export deadline, off the async threads, instead of
    // the SDK's blocking shutdown when the last handle drops.
    if let Some(otlp) = otlp {
        let limit = otlp.export_timeout() + Duration::from_secs(1);
        otlp.shutdown().await;
        metrics.shutdown_export(limit).await;
    }
    result
}

/// Everything after the telemetry is set up: the engine, the listeners,
/// the KMS server until a stop signal, and the drain.
async fn serve(cfg: Arc<Config>, metrics: Arc<Metrics>) -> Result<(), StartupError> {
    let gid = socket::resolve_group(&cfg.server.socket_group).map_err(|e| StartupError::Config(e.to_string()))?;
    // Fail on a bad socket directory before the registry is touched.
    if let Some(dir) = cfg.server.socket_path.parent() {
        socket::check_parent(dir).map_err(|e| StartupError::FailClosed(e.to_string()))?;
    }
    metrics.request_log.set_budget(cfg.logging.request_log);
    let engine = Engine::start(cfg.clone(), metrics.clone(), crate::VERSION.to_owned()).await?;
    publish_last_exit(&cfg.state.path, &metrics);

    let health = match &cfg.server.health_address {
        Some(a) => Some(bind_http(a, "health").await?),
        None => None,
    };
    let metrics_listener = match &cfg.server.metrics_address {
        Some(a) => Some(bind_http(a, "metrics").await?),
        None => None,
    };
    let (listener, bound, removed_stale) = socket::bind(&cfg.server.socket_path, cfg.server.socket_mode, gid)
        .await
        .map_err(|e| StartupError::FailClosed(e.to_string()))?;
    if removed_stale {
        metrics.socket_restarts.inc();
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let live = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(engine.clone().run_probes(stop_rx.clone()));
    tasks.spawn(flush_request_log(metrics.clone(), stop_rx.clone()));
    if let Some(l) = health {
        let state = HealthState {
            engine: engine.clone(),
            live: live.clone(),
            version: crate::VERSION,
        };
        let gate = Gate::new("health", cfg.server.max_health_connections, metrics.clone());
        tasks.spawn(listen::serve_http(
            l,
            health_router(state),
            gate,
            cfg.server.http_header_read_timeout,
            stop_rx.clone(),
        ));
    }
    if let Some(l) = metrics_listener {
        let gate = Gate::new("metrics", cfg.server.max_metrics_connections, metrics.clone());
        tasks.spawn(listen::serve_http(
            l,
            metrics_router(engine.clone()),
            gate,
            cfg.server.http_header_read_timeout,
            stop_rx.clone(),
        ));
    }

    let kms = KmsService::new(engine.clone());
    if let Some(correlation) = kms.correlation() {
        tasks.spawn(correlation.clone().announce(stop_rx.clone()));
    }
    let service = KeyManagementServiceServer::new(kms)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let (signal_tx, mut signal_rx) = watch::channel(false);
    let live_for_signal = live.clone();
    let incoming = listen::kms_incoming(
        listener,
        Gate::new("kms", cfg.server.max_kms_connections, metrics.clone()),
        cfg.server.kms_idle_timeout,
    );
    // Server pings keep kube-apiserver's one long-lived connection
    // answering, so the idle timeout only closes peers that send nothing.
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(cfg.server.kms_keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.server.kms_keepalive_timeout))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            let which = stop_signal().await;
            live_for_signal.store(false, Ordering::Release);
            tracing::info!(message = "serve.shutdown", signal = which);
            let _ = signal_tx.send(true);
        });
    live.store(true, Ordering::Release);
    let view = engine.view();
    tracing::info!(
        message = "serve.ready",
        socket = %cfg.server.socket_path.display(),
        key_id_hash = %view.published.active.key_id.hash(),
        generation = view.published.generation,
    );

    tokio::pin!(grpc);
    let result = tokio::select! {
        r = &mut grpc => r.map_err(|e| StartupError::FailClosed(format!("KMS gRPC server failed: {e}"))),
        () = async {
            let _ = signal_rx.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_DEADLINE).await;
        } => {
            tracing::warn!(message = "serve.drain_deadline", deadline_secs = DRAIN_DEADLINE.as_secs());
            Ok(())
        }
    };
    live.store(false, Ordering::Release);
    bound.remove();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    result
}

/// Writes the `log.suppressed` summaries once per `logging.requestLogWindow`,
/// so a burst that stopped is still reported, and every open count when
/// serve stops.
async fn flush_request_log(metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(metrics.request_log.window());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => metrics.request_log.flush(),
            _ = stop.changed() => {
                metrics.request_log.drain();
                return;
            }
        }
    }
}
