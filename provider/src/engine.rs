//! The provider's runtime: startup (registry load or auto-bootstrap), the
//! background probe that publishes the status snapshot, and the KMS
//! operations.
//!
//! Status never calls OpenBao: it reads the [`Published`] snapshot the probe
//! last wrote, ageing it at read time so a stuck probe turns into
//! `status_stale`. Encrypt uses only the active snapshot of the same
//! published value Status reads, with its explicit Transit `key_version`.
//! Decrypt checks key_id, annotations and ciphertext version before the one
//! Transit call, and rebuilds the AAD from the snapshot.
//!
//! Rotation: each successful probe hands the Transit metadata to the pure
//! rotation machine (`bao_kms_core::rotation`), persists what it decides
//! with [`RegistryStore::save_transition`] and only then publishes from the
//! durable registry: a pending version becomes decryptable, a promotion
//! changes the key_id, never the other way round. The activation clock (the
//! monotonic instant this process confirmed a durable stable candidate)
//! lives in [`Registry`] beside the state it belongs to.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bao_kms_core::aad;
use bao_kms_core::annotations;
use bao_kms_core::config::Config;
use bao_kms_core::errors::ErrorClass;
use bao_kms_core::identity::IdentityScope;
use bao_kms_core::keyid::KeyId;
use bao_kms_core::limits;
use bao_kms_core::registry::{CheckpointStatus, IdentityPins, SnapshotState, StateFile, checkpoint_status};
use bao_kms_core::rotation::{ActivationClock, Candidate, Discovery, ENCRYPTION_BLOCKED, Note, Rotation, Transition};
pub use bao_kms_core::rotation::{Reason, RotationState};
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_core::transit::{BootstrapDecision, KeyMetadata, bootstrap_decision, profile_findings};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::auth::Auth;
use crate::metrics::{Metrics, Reason as ReasonLabel, Status as StatusLabel};
use crate::openbao::{BaoError, ClientSettings, OpenBao};
use crate::singleflight::SingleFlight;
use crate::state::RegistryStore;

/// What the last probe established; replaced whole, never mutated.
#[derive(Debug, Clone)]
pub struct Published {
    /// Problems found by the probe (empty = healthy before ageing).
    pub reasons: Vec<Reason>,
    pub active: KeySnapshot,
    pub generation: u64,
    pub rotation_state: RotationState,
    pub latest_version: u64,
    /// Newest pending version in the durable registry.
    pub pending_version: Option<u64>,
    pub decryptable: Arc<BTreeMap<String, KeySnapshot>>,
    /// The last rotation observation could not be saved and is deferred
    /// (Status stays healthy; nothing new was published).
    pub persistence_degraded: bool,
    /// When OpenBao last confirmed this snapshot.
    pub confirmed_at: Instant,
    pub metadata_error_class: Option<&'static str>,
    pub deep_error_class: Option<&'static str>,
}

/// The published snapshot aged at read time.
#[derive(Debug, Clone)]
pub struct View {
    pub published: Arc<Published>,
    pub cache_age: Duration,
    pub stale: bool,
    pub reasons: Vec<Reason>,
}

impl View {
    pub fn healthy(&self) -> bool {
        self.reasons.is_empty()
    }

    /// The key_id Status reports: only when healthy.
    pub fn key_id(&self) -> Option<&KeyId> {
        self.healthy().then_some(&self.published.active.key_id)
    }
}

/// A KMS request failure: a class (code, metric label) and a message
/// kube-apiserver may show; never secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct KmsError {
    pub class: ErrorClass,
    pub message: String,
}

impl KmsError {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

impl From<BaoError> for KmsError {
    fn from(e: BaoError) -> Self {
        let message = match e.class {
            ErrorClass::IntegrityFailed => {
                "Transit rejected the ciphertext: message authentication failed (integrity error)".into()
            }
            _ => format!("OpenBao {}: {}", e.class.as_str(), e.message),
        };
        Self {
            class: e.class,
            message,
        }
    }
}

/// Why the provider did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A configuration problem (exit code 3).
    #[error("{0}")]
    Config(String),
    /// A fail-closed decision or an unrecoverable runtime failure (exit code 5).
    #[error("{0}")]
    FailClosed(String),
}

pub struct Engine {
    cfg: Arc<Config>,
    scope: IdentityScope,
    bao: OpenBao,
    auth: Auth,
    metrics: Arc<Metrics>,
    store: RegistryStore,
    registry: Mutex<Registry>,
    pins: IdentityPins,
    plugin_version: String,
    published: watch::Sender<Arc<Published>>,
    /// Identical concurrent Decrypts (same key_id and ciphertext) share one Transit call.
    decrypts: SingleFlight<(String, Vec<u8>), DecryptResult>,
    /// Unknown-key_id discovery: one shared metadata read at a time ...
    discovery: SingleFlight<(), Option<Result<Arc<KeyMetadata>, KmsError>>>,
    /// ... and at most one attempt per `status.probeInterval` (failures count).
    last_discovery: Mutex<Option<Instant>>,
}

/// The durable registry and the process-local activation clock.
struct Registry {
    /// What is on disk (state file + checkpoint), never ahead of it.
    state: StateFile,
    /// The candidate whose durable stable state this process confirmed, and when.
    clock: Option<(Candidate, Instant)>,
}

impl Registry {
    /// Copies the durable registry into `p`: the active key, generation and
    /// decryptable snapshots are only ever published from here.
    fn publish_into(&self, p: &mut Published) {
        if let Some(active) = self.state.active().snapshot() {
            p.active = active;
        }
        p.generation = self.state.generation;
        p.pending_version = pending_version(&self.state);
        p.decryptable = Arc::new(self.state.decryptable());
    }
}

fn pending_version(state: &StateFile) -> Option<u64> {
    state
        .snapshots
        .iter()
        .filter(|r| r.state == SnapshotState::Pending)
        .map(|r| r.transit_version)
        .max()
}

/// Outcome of the checks one probe runs against OpenBao.
struct ProbeFacts {
    meta: KeyMetadata,
    live_pins: IdentityPins,
    upsert_disabled: Result<bool, BaoError>,
}

impl Engine {
    /// Loads or bootstraps the registry and proves the active key works,
    /// retrying transient OpenBao failures for `bootstrap.graceTimeout`.
    pub async fn start(
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        plugin_version: String,
    ) -> Result<Arc<Self>, StartupError> {
        let scope = cfg.identity_scope();
        let settings = ClientSettings::from_config(&cfg);
        let bao = OpenBao::new(settings, metrics.clone()).map_err(|e| StartupError::Config(e.to_string()))?;
        let auth = Auth::new(&cfg.auth.method, bao.clone(), metrics.clone())
            .map_err(|e| StartupError::Config(e.to_string()))?;
        let store = RegistryStore::open(&cfg.state.path).map_err(|e| StartupError::FailClosed(e.to_string()))?;
        let disk = store
            .read()
            .map_err(|e| StartupError::FailClosed(format!("registry unreadable: {e}")))?;
        let cp = checkpoint_status(disk.state.as_ref(), disk.checkpoint.as_ref())
            .map_err(|e| StartupError::FailClosed(format!("registry fails closed: {e}")))?;
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
        let (state, pins, meta, rotation_state, observing) = loop {
            match Self::initial_attempt(&cfg, &scope, &bao, &auth, disk.state.as_ref(), disk.pins.as_ref()).await {
                Ok(done) => break done,
                Err(Attempt::Fatal(msg)) => return Err(StartupError::FailClosed(msg)),
                Err(Attempt::Retry(reasons)) => {
                    let text = reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
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

        // Persist before anything is published.
        let save = |r: Result<(), crate::state::StoreError>| {
            r.map_err(|e| StartupError::FailClosed(format!("registry save failed: {e}")))
        };
        match (disk.state.is_some(), cp) {
            (false, _) => {
                save(store.save(&state))?;
                tracing::info!(message = "registry.bootstrapped", generation = state.generation, key_id_hash = %state.active().snapshot().map(|s| s.key_id.hash()).unwrap_or_default());
            }
            (true, CheckpointStatus::Behind | CheckpointStatus::Missing) => {
                save(store.save_checkpoint(&bao_kms_core::registry::Checkpoint::of(&state)))?;
                tracing::warn!(
                    message = "registry.checkpoint_rewritten",
                    checkpoint = cp.as_str(),
                    generation = state.generation
                );
            }
            _ => {}
        }
        if disk.pins.is_none() {
            save(store.save_pins(&pins))?;
            tracing::info!(message = "registry.identity_pinned");
        }

        let active = state
            .active()
            .snapshot()
            .ok_or_else(|| StartupError::FailClosed("registry active snapshot is malformed".into()))?;
        if !observing.is_empty() {
            let text = observing.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            tracing::warn!(message = "serve.started_observing", healthz = "unhealthy", reasons = %text);
        }
        let published = Arc::new(Published {
            reasons: observing,
            rotation_state,
            latest_version: meta.latest_version,
            pending_version: pending_version(&state),
            generation: state.generation,
            decryptable: Arc::new(state.decryptable()),
            persistence_degraded: false,
            active,
            confirmed_at: Instant::now(),
            metadata_error_class: None,
            deep_error_class: None,
        });
        let (tx, _) = watch::channel(published);
        let engine = Arc::new(Self {
            cfg,
            scope,
            bao,
            auth,
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

    async fn gather(bao: &OpenBao, token: &SecretString) -> Result<ProbeFacts, BaoError> {
        let t = token.expose_secret();
        let meta = bao.key_metadata(t).await?;
        let cluster_id = bao.cluster_id().await?;
        let (accessor, uuid) = bao.mount_identity(t).await?;
        let upsert_disabled = bao.disable_upsert(t).await;
        Ok(ProbeFacts {
            meta,
            live_pins: IdentityPins::new(cluster_id, accessor, uuid),
            upsert_disabled,
        })
    }

    /// Problems with the facts that are not rotation decisions: live
    /// identity pins, `disable_upsert` and the Transit profile. The second
    /// value is false when the pins do not match: metadata from another
    /// OpenBao or a re-created mount must not drive rotation.
    fn assess(facts: &ProbeFacts, state: &StateFile, pins: &IdentityPins) -> (Vec<Reason>, bool) {
        let mut reasons = Vec::new();
        let mismatches = pins.mismatches(&facts.live_pins);
        let pins_ok = mismatches.is_empty();
        for m in mismatches {
            reasons.push(Reason::new("identity_drift", m));
        }
        match &facts.upsert_disabled {
            Ok(true) => {}
            Ok(false) => reasons.push(Reason::new(
                "upsert_allowed",
                "Transit mount allows implicit key creation; set disable_upsert=true on <mount>/config/keys",
            )),
            Err(e) => reasons.push(Reason::new("upsert_check_failed", e.to_string())),
        }
        // `min_encryption_version` above the active version is the rotation
        // machine's `encryption_blocked`, not a profile finding.
        for f in profile_findings(&facts.meta, &state.retained_versions(), None) {
            reasons.push(Reason::new("profile_invalid", format!("{f} [{}]", f.code)));
        }
        (reasons, pins_ok)
    }

    fn rotation(&self) -> Rotation<'_> {
        Rotation {
            scope: &self.scope,
            policy: &self.cfg.rotation,
        }
    }

    async fn initial_attempt(
        cfg: &Config,
        scope: &IdentityScope,
        bao: &OpenBao,
        auth: &Auth,
        state: Option<&StateFile>,
        pins: Option<&IdentityPins>,
    ) -> Result<(StateFile, IdentityPins, KeyMetadata, RotationState, Vec<Reason>), Attempt> {
        let token = auth
            .token()
            .await
            .map_err(|e| Attempt::Retry(vec![Reason::new("auth_failed", e.to_string())]))?;
        let facts = match Self::gather(bao, &token).await {
            Ok(f) => f,
            Err(e) => {
                if e.http_status == Some(403) {
                    auth.invalidate(&token).await;
                }
                return Err(Attempt::Retry(vec![Reason::new("metadata_read_failed", e.to_string())]));
            }
        };
        let state = match state {
            Some(s) => s.clone(),
            None => match bootstrap_decision(&facts.meta) {
                BootstrapDecision::Denied { .. } => {
                    return Err(Attempt::Fatal(format!(
                        "no registry state and checkpoint in {}: {}",
                        cfg.state
                            .path
                            .parent()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        bootstrap_decision(&facts.meta).describe()
                    )));
                }
                BootstrapDecision::Allowed { created_unix } => {
                    let snap = KeySnapshot::new(scope, 1, created_unix)
                        .map_err(|e| Attempt::Fatal(format!("cannot derive the key_id: {e}")))?;
                    tracing::info!(message = "registry.bootstrap_decision", decision = %bootstrap_decision(&facts.meta).describe());
                    StateFile::bootstrap(scope, &snap, crate::now_unix())
                }
            },
        };
        let pins = pins.cloned().unwrap_or_else(|| facts.live_pins.clone());
        let (mut reasons, pins_ok) = Self::assess(&facts, &state, &pins);
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
        // the node from ever observing the rotation.
        if reasons.iter().all(|r| r.code == ENCRYPTION_BLOCKED) && !reasons.is_empty() {
            return Ok((state, pins, facts.meta, rotation_state, reasons));
        }
        if !reasons.is_empty() {
            return Err(Attempt::Retry(reasons));
        }
        let active = state
            .active()
            .snapshot()
            .ok_or_else(|| Attempt::Fatal("registry active snapshot is malformed".into()))?;
        deep_probe(bao, scope, &token, &active)
            .await
            .map_err(|e| Attempt::Retry(vec![Reason::new("deep_probe_failed", e.message)]))?;
        Ok((state, pins, facts.meta, rotation_state, Vec::new()))
    }

    /// Runs the background probe until `stop` fires.
    pub async fn run_probes(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let interval = self.cfg.status.probe_interval;
        let deep_interval = self.cfg.status.deep_probe_interval;
        let mut last_deep = Instant::now();
        let mut deep_failed = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            self.auth
                .maintain(
                    self.cfg.auth.login_before_token_expiry,
                    self.cfg.auth.token_renewal_increment,
                )
                .await;
            let deep_due = deep_failed || last_deep.elapsed() >= deep_interval;
            let (ran_deep, deep_ok) = self.probe_once(deep_due).await;
            if ran_deep {
                last_deep = Instant::now();
                deep_failed = !deep_ok;
            }
        }
    }

    /// One probe; returns (deep probe ran, deep probe passed).
    pub async fn probe_once(&self, deep_due: bool) -> (bool, bool) {
        let previous = self.published.borrow().clone();
        let mut next = (*previous).clone();
        next.metadata_error_class = None;
        next.deep_error_class = None;
        let mut ran_deep = false;
        let mut deep_ok = false;
        let token = match self.auth.token().await {
            Ok(t) => Some(t),
            Err(e) => {
                next.metadata_error_class = Some(e.class().as_str());
                next.reasons = vec![Reason::new("auth_failed", e.to_string())];
                None
            }
        };
        if let Some(token) = token {
            match Self::gather(&self.bao, &token).await {
                Err(e) => {
                    // 403: the token expired, was revoked or replaced; log in again next time.
                    if e.http_status == Some(403) {
                        self.auth.invalidate(&token).await;
                    }
                    self.metrics
                        .transit_metadata_observation
                        .get_or_create(&StatusLabel { status: "error" })
                        .inc();
                    next.metadata_error_class = Some(e.class.as_str());
                    next.reasons = vec![Reason::new("metadata_read_failed", e.to_string())];
                    // Unknown until OpenBao answers again; the last key stays in place.
                    next.rotation_state = RotationState::Unknown;
                }
                Ok(facts) => {
                    self.metrics
                        .transit_metadata_observation
                        .get_or_create(&StatusLabel { status: "ok" })
                        .inc();
                    let (mut reasons, rotation, promoted) = self.observe(&facts, &mut next);
                    // After a promotion, health needs a deep probe of the new key.
                    if reasons.is_empty() && (deep_due || promoted || !previous.reasons.is_empty()) {
                        ran_deep = true;
                        if let Err(e) = deep_probe(&self.bao, &self.scope, &token, &next.active).await {
                            next.deep_error_class = Some(e.class.as_str());
                            reasons.push(Reason::new("deep_probe_failed", e.message));
                        } else {
                            deep_ok = true;
                        }
                    }
                    next.rotation_state = rotation;
                    next.latest_version = facts.meta.latest_version;
                    if reasons.is_empty() {
                        next.confirmed_at = Instant::now();
                    }
                    next.reasons = reasons;
                }
            }
        }
        let healthy_now = next.reasons.is_empty();
        if healthy_now != previous.reasons.is_empty() || next.reasons != previous.reasons {
            let text = next
                .reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            if healthy_now {
                tracing::info!(message = "status.probe", healthz = "ok", key_id_hash = %next.active.key_id.hash());
            } else {
                tracing::warn!(message = "status.probe", healthz = "unhealthy", reasons = %text);
            }
        }
        let next = Arc::new(next);
        self.export_metrics(&next);
        self.published.send_replace(next);
        (ran_deep, deep_ok)
    }

    /// Runs the rotation machine on one successful observation, persists
    /// what it decided, then copies the durable registry into `next`.
    /// Returns the health reasons, the rotation state, and whether a
    /// promotion was persisted.
    fn observe(&self, facts: &ProbeFacts, next: &mut Published) -> (Vec<Reason>, RotationState, bool) {
        // No await while the lock is held: the step and the save are synchronous.
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut reasons, pins_ok) = Self::assess(facts, &registry.state, &self.pins);
        if !pins_ok {
            return (reasons, RotationState::Unknown, false);
        }
        let clock = registry.clock.map(|(candidate, at)| ActivationClock {
            candidate,
            elapsed: at.elapsed(),
        });
        let step = self
            .rotation()
            .step(&registry.state, &facts.meta, crate::now_unix(), clock);
        reasons.extend(step.reasons.iter().cloned());
        let mut rotation_state = step.rotation_state;
        let mut promoted = false;
        let saved = match &step.transition {
            Transition::None => {
                next.persistence_degraded = false;
                true
            }
            Transition::Observe(state) => match self.store.save_transition(state) {
                Ok(()) => {
                    log_notes(&step.notes, state.generation);
                    registry.state = state.clone();
                    next.persistence_degraded = false;
                    true
                }
                Err(e) => {
                    // Nothing new is published; the next probe retries with fresh metadata.
                    next.persistence_degraded = true;
                    tracing::warn!(
                        message = "rotation.save_deferred",
                        generation = state.generation,
                        files_unchanged = e.files_unchanged,
                        error = %e
                    );
                    if !e.files_unchanged {
                        reasons.push(Reason::new("state_save_failed", format!("registry save failed: {e}")));
                    }
                    false
                }
            },
            Transition::Promote { next: state, from, to } => match self.store.save_transition(state) {
                Ok(()) => {
                    registry.state = state.clone();
                    promoted = true;
                    next.persistence_degraded = false;
                    self.metrics.rotation_promotions.inc();
                    tracing::info!(
                        message = "key.promoted",
                        old_key_id_hash = %from.key_id.hash(),
                        new_key_id_hash = %to.key_id.hash(),
                        old_transit_key_version = from.version,
                        new_transit_key_version = to.version,
                        generation = state.generation
                    );
                    true
                }
                Err(e) => {
                    rotation_state = RotationState::Pending;
                    tracing::warn!(
                        message = "rotation.promotion_save_failed",
                        generation = state.generation,
                        new_transit_key_version = to.version,
                        error = %e
                    );
                    reasons.push(Reason::new(
                        "state_save_failed",
                        format!("registry save failed while promoting version {}: {e}", to.version),
                    ));
                    false
                }
            },
        };
        if saved {
            match step.confirm {
                Some(c) if registry.clock.is_some_and(|(running, _)| running == c) => {}
                Some(c) => {
                    registry.clock = Some((c, Instant::now()));
                    tracing::info!(
                        message = "rotation.stable_confirmed",
                        transit_key_version = c.version,
                        activation_delay_ms = self.cfg.rotation.activation_delay.as_millis() as u64
                    );
                }
                None => registry.clock = None,
            }
        }
        registry.publish_into(next);
        (reasons, rotation_state, promoted)
    }

    fn export_metrics(&self, p: &Published) {
        let healthy = p.reasons.is_empty();
        let hash = healthy.then(|| p.active.key_id.hash());
        self.metrics
            .set_key_state(hash.as_deref(), p.active.version, p.rotation_state.as_str());
        self.metrics
            .rotation_persistence_degraded
            .set(i64::from(p.persistence_degraded));
    }

    /// The published snapshot, aged now.
    pub fn view(&self) -> View {
        let published = self.published.borrow().clone();
        let cache_age = published.confirmed_at.elapsed();
        let stale = cache_age > self.cfg.status.status_max_staleness;
        let mut reasons = published.reasons.clone();
        if stale && reasons.is_empty() {
            reasons.push(Reason::new(
                "status_stale",
                format!(
                    "last confirmation {}s ago exceeds status.statusMaxStaleness",
                    cache_age.as_secs()
                ),
            ));
        }
        View {
            published,
            cache_age,
            stale,
            reasons,
        }
    }

    /// Refreshes the gauges that depend on the read time (scrape hook).
    pub fn refresh_age_metrics(&self) {
        let view = self.view();
        self.metrics.status_cache_age_seconds.set(view.cache_age.as_secs_f64());
        if view.stale {
            self.metrics.set_key_state(
                None,
                view.published.active.version,
                view.published.rotation_state.as_str(),
            );
        }
    }

    pub fn generation(&self) -> u64 {
        self.published.borrow().generation
    }

    /// Calls Transit with the current token; on 403 the token is dropped,
    /// re-obtained once and the call retried.
    async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, KmsError>
    where
        F: Fn(SecretString) -> Fut,
        Fut: Future<Output = Result<T, BaoError>>,
    {
        let token = self
            .auth
            .token()
            .await
            .map_err(|e| KmsError::new(e.class(), e.to_string()))?;
        match call(token.clone()).await {
            Err(e) if e.http_status == Some(403) => {
                self.auth.invalidate(&token).await;
                let fresh = self
                    .auth
                    .token()
                    .await
                    .map_err(|e| KmsError::new(e.class(), e.to_string()))?;
                call(fresh).await.map_err(KmsError::from)
            }
            other => other.map_err(KmsError::from),
        }
    }

    /// KMS Encrypt: only with a healthy, active snapshot; explicit key_version.
    pub async fn encrypt(
        &self,
        plaintext: &[u8],
        uid: &str,
    ) -> Result<(Vec<u8>, KeyId, BTreeMap<String, Vec<u8>>), KmsError> {
        limits::check_encrypt_request(plaintext, uid)
            .map_err(|e| KmsError::new(ErrorClass::ProtocolLimit, e.to_string()))?;
        let view = self.view();
        if !view.healthy() {
            let class = if view.stale {
                ErrorClass::StatusStale
            } else {
                ErrorClass::StatusUnhealthy
            };
            let codes: Vec<&str> = view.reasons.iter().map(|r| r.code).collect();
            return Err(KmsError::new(
                class,
                format!("provider is not healthy ({}); refusing to encrypt", codes.join(", ")),
            ));
        }
        let snap = view.published.active.clone();
        let aad = aad::canonical(&self.scope, &snap);
        let ciphertext = self
            .with_token(|t| {
                let (bao, aad) = (&self.bao, &aad);
                async move { bao.encrypt(t.expose_secret(), plaintext, aad, snap.version).await }
            })
            .await?;
        let annotations = annotations::build(&self.scope, &snap, &self.plugin_version);
        limits::check_encrypt_response(ciphertext.as_bytes(), snap.key_id.as_str(), &annotations).map_err(|e| {
            KmsError::new(
                ErrorClass::InvalidResponse,
                format!("encrypt response would break the KMS contract: {e}"),
            )
        })?;
        Ok((ciphertext.into_bytes(), snap.key_id, annotations))
    }

    /// KMS Decrypt: every check that needs no OpenBao first, then Transit.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        uid: &str,
        key_id: &str,
        annotations: &HashMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        limits::check_decrypt_request(ciphertext, uid, key_id, annotations)
            .map_err(|e| KmsError::new(ErrorClass::ProtocolLimit, e.to_string()))?;
        let key_id_err = |class: ErrorClass, message: &str| {
            self.metrics
                .decrypt_key_id_errors
                .get_or_create(&ReasonLabel { reason: class.as_str() })
                .inc();
            KmsError::new(class, message)
        };
        let parsed = KeyId::parse(key_id).map_err(|e| key_id_err(ErrorClass::KeyIdMalformed, &e.to_string()))?;
        let published = self.published.borrow().clone();
        let known = published.decryptable.get(parsed.as_str()).cloned();
        let snap = match known {
            Some(snap) => snap,
            None => {
                // An operator-removed record never decrypts and is never rediscovered.
                if let Some(version) = self.removed_version(&parsed) {
                    return Err(key_id_err(
                        ErrorClass::KeyIdUnknown,
                        &format!(
                            "key_id names Transit version {version}, which was removed from this node's key registry with retire-versions; it no longer decrypts here (restore-versions brings it back while Transit can still decrypt it)"
                        ),
                    ));
                }
                self.discover(&parsed)
                    .await
                    .map_err(|e| key_id_err(e.class, &e.message))?
            }
        };
        let aad_err = |class: ErrorClass, message: String| {
            self.metrics
                .aad_validation_errors
                .get_or_create(&ReasonLabel { reason: class.as_str() })
                .inc();
            KmsError::new(class, message)
        };
        annotations::verify(annotations, &self.scope, &snap).map_err(|e| {
            let class = match e.reason() {
                "aad_missing" => ErrorClass::AadMissing,
                "aad_mismatch" => ErrorClass::AadMismatch,
                _ => ErrorClass::AnnotationInvalid,
            };
            aad_err(class, e.to_string())
        })?;
        let text = std::str::from_utf8(ciphertext)
            .ok()
            .filter(|t| t.starts_with(&format!("vault:v{}:", snap.version)))
            .ok_or_else(|| {
                aad_err(
                    ErrorClass::AadMismatch,
                    format!("ciphertext is not a Transit version {} ciphertext", snap.version),
                )
            })?;
        let aad = aad::canonical(&self.scope, &snap);
        // Only requests that passed every check above reach here, so callers
        // that share a result asked for the same key_id and ciphertext.
        let key = (snap.key_id.as_str().to_owned(), ciphertext.to_vec());
        self.decrypts
            .run(key, || {
                self.with_token(|t| {
                    let (bao, aad) = (&self.bao, &aad);
                    async move { bao.decrypt(t.expose_secret(), text, aad).await }
                })
            })
            .await
    }

    /// Unknown-key_id discovery (docs/rotation.md): another node may have
    /// promoted a version this node has not observed yet, and its
    /// kube-apiserver may already have written data under it. One shared
    /// read of the configured key's metadata, at most once per
    /// `status.probeInterval`; a key_id that is a newer version of this key
    /// with verified metadata is saved as pending (or retired) before it is
    /// used. Never an observation, never starts the delay, never promotes.
    async fn discover(&self, key_id: &KeyId) -> Result<KeySnapshot, KmsError> {
        let unknown = || {
            KmsError::new(
                ErrorClass::KeyIdUnknown,
                "key_id is not in the key registry (identity-bearing configuration changed, or registry state lost or rolled back?)",
            )
        };
        // The probe may have saved it after the snapshot this request read.
        if let Some(snap) = self.durable_snapshot(key_id) {
            return Ok(snap);
        }
        let meta = self
            .discovery
            .run((), || async {
                {
                    let mut last = self.last_discovery.lock().unwrap_or_else(PoisonError::into_inner);
                    if last.is_some_and(|at| at.elapsed() < self.cfg.status.probe_interval) {
                        return None;
                    }
                    *last = Some(Instant::now());
                }
                let read = self
                    .with_token(|t| {
                        let bao = &self.bao;
                        async move { bao.key_metadata(t.expose_secret()).await }
                    })
                    .await
                    .map(Arc::new)
                    .map_err(|e| {
                        KmsError::new(
                            ErrorClass::KeyMetadataRefreshFailed,
                            format!("key_id is not in the key registry and the key metadata read failed: {e}"),
                        )
                    });
                Some(read)
            })
            .await;
        let meta = match meta {
            None => return self.durable_snapshot(key_id).ok_or_else(unknown),
            Some(Err(e)) => return Err(e),
            Some(Ok(meta)) => meta,
        };
        let next = {
            let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            match self
                .rotation()
                .discover(&registry.state, &meta, key_id, crate::now_unix())
            {
                Discovery::NotFound => None,
                Discovery::Unverified(reasons) => {
                    let text = reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                    tracing::warn!(message = "rotation.discovery_refused", key_id_hash = %key_id.hash(), reasons = %text);
                    None
                }
                Discovery::Found(next) => match self.store.save_transition(&next) {
                    Ok(()) => {
                        registry.state = next;
                        let mut published = (**self.published.borrow()).clone();
                        registry.publish_into(&mut published);
                        self.published.send_replace(Arc::new(published));
                        tracing::info!(
                            message = "rotation.discovered",
                            key_id_hash = %key_id.hash(),
                            generation = registry.state.generation
                        );
                        Some(())
                    }
                    Err(e) => {
                        tracing::warn!(message = "rotation.discovery_save_failed", key_id_hash = %key_id.hash(), error = %e);
                        None
                    }
                },
            }
        };
        next.and_then(|()| self.durable_snapshot(key_id)).ok_or_else(unknown)
    }

    /// The Transit version of a `removed` record with this key_id.
    fn removed_version(&self, key_id: &KeyId) -> Option<u64> {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        registry.state.removed_version(key_id.as_str())
    }

    /// A decryptable snapshot of the durable registry.
    fn durable_snapshot(&self, key_id: &KeyId) -> Option<KeySnapshot> {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        registry
            .state
            .snapshots
            .iter()
            .find(|r| r.state.decrypts() && r.kubernetes_key_id == key_id.as_str())
            .and_then(|r| r.snapshot())
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store_paths(&self) -> &crate::state::RegistryPaths {
        &self.store.paths
    }
}

type DecryptResult = Result<Zeroizing<Vec<u8>>, KmsError>;

enum Attempt {
    /// Retried until the grace timeout.
    Retry(Vec<Reason>),
    /// A decision no retry can change.
    Fatal(String),
}

/// Encrypts and decrypts 32 random bytes with the active version and AAD.
async fn deep_probe(
    bao: &OpenBao,
    scope: &IdentityScope,
    token: &SecretString,
    snap: &KeySnapshot,
) -> Result<(), KmsError> {
    let mut sample = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(sample.as_mut());
    let aad = aad::canonical(scope, snap);
    let t = token.expose_secret();
    let ciphertext = bao.encrypt(t, sample.as_ref(), &aad, snap.version).await?;
    if ciphertext.len() > limits::MAX_CIPHERTEXT_BYTES {
        return Err(KmsError::new(
            ErrorClass::InvalidResponse,
            "deep probe ciphertext exceeds 1024 bytes",
        ));
    }
    let plain = bao.decrypt(t, &ciphertext, &aad).await?;
    if plain.as_slice() != sample.as_ref() {
        return Err(KmsError::new(
            ErrorClass::InvalidResponse,
            "deep probe round trip returned different bytes",
        ));
    }
    Ok(())
}

/// One info line per rotation event the machine reported.
fn log_notes(notes: &[Note], generation: u64) {
    for note in notes {
        match *note {
            Note::CandidateObserved(c) => tracing::info!(
                message = "rotation.observed",
                transit_key_version = c.version,
                generation
            ),
            Note::Superseded { version, by } => tracing::info!(
                message = "rotation.superseded",
                transit_key_version = version,
                superseded_by = by,
                generation
            ),
            Note::SkippedRetained(c) => tracing::info!(
                message = "rotation.skipped_version_retained",
                transit_key_version = c.version,
                generation
            ),
            Note::Stable(c) => tracing::info!(message = "rotation.stable", transit_key_version = c.version, generation),
        }
    }
}
