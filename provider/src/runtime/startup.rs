//! Startup: load the registry (or auto-bootstrap it when Transit shows an
//! initial, unrotated key), check the live identity, the Transit profile
//! and the rotation rules against it, prove the active key with a deep
//! probe, persist, and only then publish the first snapshot. Transient
//! OpenBao failures are retried every `bootstrap.retryInterval` until
//! `bootstrap.graceTimeout`; fail-closed decisions end startup at once.

use std::sync::{Arc, Mutex};

use bao_kms_core::config::Config;
use bao_kms_core::identity::IdentityScope;
use bao_kms_core::reason::ReasonCode;
use bao_kms_core::registry::{
    Checkpoint, CheckpointStatus, IdentityPins, RollbackAnchor, StateFile, anchor_check, checkpoint_status,
};
use bao_kms_core::rotation::{ENCRYPTION_BLOCKED, Rotation};
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_core::transit::{BootstrapDecision, KeyMetadata, bootstrap_decision};
use tokio::sync::watch;
use tokio::time::Instant;

use super::kms::deep_probe;
use super::probe::{assess, gather};
use super::{Engine, Published, Reason, Registry, RotationState, StartupError, pending_version};
use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::openbao::{ClientSettings, OpenBao};
use crate::singleflight::SingleFlight;
use crate::state::{RegistryStore, StoreError};
use crate::transit::{OpenBaoTransit, Transit};

/// What one startup attempt established.
struct Started {
    state: StateFile,
    pins: IdentityPins,
    meta: KeyMetadata,
    rotation_state: RotationState,
    /// Non-empty only for a node that starts unhealthy and observes
    /// (`encryption_blocked`).
    observing: Vec<Reason>,
}

enum Attempt {
    /// Retried until the grace timeout.
    Retry(Vec<Reason>),
    /// A decision no retry can change.
    Fatal(String),
}

impl Engine {
    /// Starts against the configured OpenBao with the configured auth method.
    pub async fn start(
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        plugin_version: String,
    ) -> Result<Arc<Self>, StartupError> {
        let settings = ClientSettings::from_config(&cfg);
        let bao = OpenBao::new(settings, metrics.clone()).map_err(|e| StartupError::Config(e.to_string()))?;
        let auth =
            Auth::new(&cfg.auth, bao.clone(), metrics.clone()).map_err(|e| StartupError::Config(e.to_string()))?;
        let transit = OpenBaoTransit::new(
            bao,
            auth,
            cfg.auth.login_before_token_expiry,
            cfg.auth.token_renewal_increment,
        );
        Self::start_with(cfg, metrics, plugin_version, Arc::new(transit)).await
    }

    /// Loads or bootstraps the registry and proves the active key works
    /// through `transit`, retrying transient failures for
    /// `bootstrap.graceTimeout`.
    pub async fn start_with(
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        plugin_version: String,
        transit: Arc<dyn Transit>,
    ) -> Result<Arc<Self>, StartupError> {
        let scope = cfg.identity_scope();
        let untrusted = crate::fsutil::check_trusted_paths(&cfg, nix::unistd::geteuid().as_raw());
        if !untrusted.is_empty() {
            return Err(StartupError::FailClosed(format!(
                "untrusted path: {}",
                untrusted.join("; ")
            )));
        }
        // The lock file is the first file created there: failing to create
        // it is the directory refusing writes, as is the check after it.
        let store = RegistryStore::open(&cfg.state.path).map_err(|e| match e {
            StoreError::File { .. } => StartupError::FailClosed(format!("{}: {e}", ReasonCode::StateUnavailable)),
            e => StartupError::FailClosed(e.to_string()),
        })?;
        store
            .check_writable(true)
            .map_err(|e| StartupError::FailClosed(format!("{}: {e}", ReasonCode::StateUnavailable)))?;
        let disk = store
            .read()
            .map_err(|e| StartupError::FailClosed(format!("registry unreadable: {e}")))?;
        let cp = checkpoint_status(disk.state.as_ref(), disk.checkpoint.as_ref())
            .map_err(|e| StartupError::FailClosed(format!("registry fails closed: {e}")))?;
        // The second anchor: one deleted file (checkpoint or pins) cannot
        // hide an older state file.
        anchor_check(disk.state.as_ref(), disk.pins.as_ref()).map_err(|e| {
            StartupError::FailClosed(format!("registry fails closed: {}: {e}", ReasonCode::VersionRollback))
        })?;
        if let Some(state) = &disk.state {
            state
                .check_scope(&scope)
                .map_err(|e| StartupError::FailClosed(format!("registry fails closed: {e}")))?;
        }
        tracing::info!(
            message = "registry.loaded",
            checkpoint = cp.as_str(),
            generation = disk.state.as_ref().map(|s| s.generation)
        );

        let deadline = Instant::now() + cfg.bootstrap.grace_timeout;
        let started = loop {
            match initial_attempt(&cfg, &scope, transit.as_ref(), disk.state.as_ref(), disk.pins.as_ref()).await {
                Ok(done) => break done,
                Err(Attempt::Fatal(msg)) => return Err(StartupError::FailClosed(msg)),
                Err(Attempt::Retry(reasons)) => {
                    let text = join(&reasons);
                    if Instant::now() + cfg.bootstrap.retry_interval > deadline {
                        return Err(StartupError::FailClosed(format!(
                            "startup did not succeed within bootstrap.graceTimeout ({:?}): {text}",
                            cfg.bootstrap.grace_timeout
                        )));
                    }
                    tracing::warn!(message = "serve.startup_retry", reasons = %text);
                    tokio::time::sleep(cfg.bootstrap.retry_interval).await;
                }
            }
        };
        let Started {
            state,
            pins,
            meta,
            rotation_state,
            observing,
        } = started;

        // Persist before anything is published.
        let save =
            |r: Result<(), StoreError>| r.map_err(|e| StartupError::FailClosed(format!("registry save failed: {e}")));
        match (disk.state.is_some(), cp) {
            (false, _) => {
                save(store.save(&state))?;
                tracing::info!(message = "registry.bootstrapped", generation = state.generation, key_id_hash = %state.active().snapshot().map(|s| s.key_id.hash()).unwrap_or_default());
            }
            (true, CheckpointStatus::Behind | CheckpointStatus::Missing) => {
                save(store.save_checkpoint(&Checkpoint::of(&state)))?;
                tracing::warn!(
                    message = "registry.checkpoint_rewritten",
                    checkpoint = cp.as_str(),
                    generation = state.generation
                );
            }
            _ => {}
        }
        match &disk.pins {
            None => {
                save(store.save_pins(&pins.clone().with_anchor(RollbackAnchor::of(&state))))?;
                tracing::info!(message = "registry.identity_pinned");
            }
            // A v1 pins file gains its anchor; a lagging anchor catches up.
            Some(stored) => {
                if let Some(raised) = stored.raised_to(&state) {
                    save(store.save_pins(&raised))?;
                    tracing::info!(message = "registry.anchor_raised", generation = state.generation);
                }
            }
        }

        let active = state
            .active()
            .snapshot()
            .ok_or_else(|| StartupError::FailClosed("registry active snapshot is malformed".into()))?;
        if !observing.is_empty() {
            tracing::warn!(message = "serve.started_observing", healthz = "unhealthy", reasons = %join(&observing));
        }
        let published = Arc::new(Published {
            reasons: observing,
            rotation_state,
            latest_version: meta.latest_version,
            pending_version: pending_version(&state),
            generation: state.generation,
            decryptable: Arc::new(state.decryptable()),
            content_digest: state.content_digest(),
            persistence_degraded: false,
            active,
            confirmed_at: Instant::now(),
            metadata_error_class: None,
            deep_error_class: None,
        });
        let (tx, _) = watch::channel(published);
        let server = &cfg.server;
        let batcher = Arc::new(super::batch::Batcher::new(
            transit.clone(),
            metrics.clone(),
            server.decrypt_batch_max_items,
            server.decrypt_batch_max_wait,
            server.max_concurrent_decrypt_calls,
        ));
        let engine = Arc::new(Self {
            batcher,
            cfg,
            scope,
            transit,
            metrics,
            store,
            registry: Mutex::new(Registry { state, clock: None }),
            pins,
            plugin_version,
            published: tx,
            decrypts: SingleFlight::default(),
            discovery: SingleFlight::default(),
            last_discovery: Mutex::new(None),
        });
        engine.export_metrics(&engine.published.borrow().clone());
        Ok(engine)
    }
}

fn join(reasons: &[Reason]) -> String {
    reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

async fn initial_attempt(
    cfg: &Config,
    scope: &IdentityScope,
    transit: &dyn Transit,
    state: Option<&StateFile>,
    pins: Option<&IdentityPins>,
) -> Result<Started, Attempt> {
    let token = transit
        .token()
        .await
        .map_err(|e| Attempt::Retry(vec![Reason::probe_failure(e.class(), ReasonCode::AuthFailed, &e)]))?;
    let facts = match gather(transit, &token).await {
        Ok(f) => f,
        Err(e) => {
            if e.http_status == Some(403) {
                transit.invalidate(&token).await;
            }
            return Err(Attempt::Retry(vec![Reason::probe_failure(
                e.class,
                ReasonCode::MetadataReadFailed,
                &e,
            )]));
        }
    };
    let state = match state {
        Some(s) => s.clone(),
        None => match bootstrap_decision(&facts.meta) {
            denied @ BootstrapDecision::Denied { .. } => {
                return Err(Attempt::Fatal(format!(
                    "no registry state and checkpoint in {}: {}",
                    cfg.state
                        .path
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    denied.describe()
                )));
            }
            allowed @ BootstrapDecision::Allowed { created_unix } => {
                let snap = KeySnapshot::new(scope, 1, created_unix)
                    .map_err(|e| Attempt::Fatal(format!("cannot derive the key_id: {e}")))?;
                tracing::info!(message = "registry.bootstrap_decision", decision = %allowed.describe());
                StateFile::bootstrap(scope, &snap, crate::now_unix())
            }
        },
    };
    let pins = pins.cloned().unwrap_or_else(|| facts.live_pins.clone());
    let (mut reasons, pins_ok) = assess(&facts, &state, &pins);
    // The rotation checks (rollback, drift, skipped-version metadata)
    // without acting: the first probe persists what they decide.
    let rotation_state = if pins_ok {
        let step = Rotation {
            scope,
            policy: &cfg.rotation,
        }
        .step(&state, &facts.meta, crate::now_unix(), None);
        reasons.extend(step.reasons);
        step.rotation_state
    } else {
        RotationState::Unknown
    };
    // `encryption_blocked` alone (the operator raised
    // `min_encryption_version` after rotating, before this node promoted)
    // is resolved by observing: start with Encrypt refused, Decrypt
    // served, and let the probes promote. Refusing to start would keep
    // the node from ever observing the rotation that unblocks it.
    if !reasons.is_empty() && reasons.iter().all(|r| r.code == ENCRYPTION_BLOCKED) {
        return Ok(Started {
            state,
            pins,
            meta: facts.meta,
            rotation_state,
            observing: reasons,
        });
    }
    if !reasons.is_empty() {
        return Err(Attempt::Retry(reasons));
    }
    let active = state
        .active()
        .snapshot()
        .ok_or_else(|| Attempt::Fatal("registry active snapshot is malformed".into()))?;
    deep_probe(transit, scope, &token, &active)
        .await
        .map_err(|e| Attempt::Retry(vec![Reason::new(ReasonCode::of_deep_probe_failure(e.class), e.message)]))?;
    Ok(Started {
        state,
        pins,
        meta: facts.meta,
        rotation_state,
        observing: Vec::new(),
    })
}
