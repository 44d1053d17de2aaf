//! The provider's runtime, split along its jobs:
//!
//! - [`startup`]: registry load or auto-bootstrap and the first proof that
//!   the active key works ([`Engine::start`], [`Engine::start_with`]).
//! - [`probe`]: the background probe and the rotation driver: it reads the
//!   Transit facts, runs the pure rotation machine, persists what it
//!   decides and only then publishes ([`Engine::run_probes`]).
//! - [`discovery`]: unknown-key_id discovery on Decrypt.
//! - [`call`]: one Transit call with the current token (re-login once on
//!   403) and the mapping of its failures to KMS errors.
//! - [`batch`]: distinct in-flight Decrypts batched into Transit
//!   `batch_input` calls, item-for-item equivalent to single calls.
//! - [`kms`]: the KMS operations ([`Engine::encrypt`], [`Engine::decrypt`])
//!   and the deep probe's round trip.
//!
//! All of them talk to OpenBao only through the [`Transit`] seam, so
//! in-process component tests (`provider/tests/`) drive every event order
//! with a scripted Transit and paused time.
//!
//! Status never calls OpenBao: it reads the [`Published`] snapshot the probe
//! last wrote, ageing it at read time so a stuck probe turns into
//! `status_stale`. Encrypt uses only the active snapshot of the same
//! published value Status reads.

mod batch;
mod call;
mod discovery;
mod kms;
mod probe;
mod startup;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bao_kms_core::config::Config;
use bao_kms_core::errors::{ErrorClass, KmsError};
use bao_kms_core::identity::IdentityScope;
use bao_kms_core::keyid::KeyId;
use bao_kms_core::reason::ReasonCode;
use bao_kms_core::registry::{IdentityPins, SnapshotState, StateFile};
use bao_kms_core::rotation::{Candidate, Rotation};
pub use bao_kms_core::rotation::{Reason, RotationState};
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_core::transit::KeyMetadata;
pub use kms::deep_probe;
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::metrics::Metrics;
use crate::singleflight::SingleFlight;
use crate::state::RegistryStore;
use crate::transit::{BaoError, Transit};
use call::call_with_token;

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
    /// The registry content digest (`StateFile::content_digest`).
    pub content_digest: String,
    /// The state directory refused a write (a rotation observation or
    /// promotion could not be saved, or the per-probe writability check
    /// failed). Always with a `state_unavailable` or `state_save_failed`
    /// reason: Status is unhealthy; nothing new was published.
    pub persistence_degraded: bool,
    /// When OpenBao last confirmed this snapshot.
    pub confirmed_at: Instant,
    pub metadata_error_class: Option<ErrorClass>,
    pub deep_error_class: Option<ErrorClass>,
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
    transit: Arc<dyn Transit>,
    metrics: Arc<Metrics>,
    store: RegistryStore,
    registry: Mutex<Registry>,
    pins: IdentityPins,
    plugin_version: String,
    published: watch::Sender<Arc<Published>>,
    /// Identical concurrent Decrypts (same key_id and ciphertext) share one Transit call.
    decrypts: SingleFlight<(String, Vec<u8>), DecryptResult>,
    /// Distinct concurrent Decrypts share Transit `batch_input` calls.
    batcher: Arc<batch::Batcher>,
    /// Unknown-key_id discovery: one shared metadata read at a time ...
    discovery: SingleFlight<(), Option<Result<Arc<KeyMetadata>, KmsError>>>,
    /// ... and at most one attempt per `status.probeInterval` (failures count).
    last_discovery: Mutex<Option<Instant>>,
}

type DecryptResult = Result<Zeroizing<Vec<u8>>, KmsError>;

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
        p.content_digest = self.state.content_digest();
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

/// A poisoned lock only means another caller panicked while holding it;
/// the registry inside is replaced whole, so it is still consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    fn rotation(&self) -> Rotation<'_> {
        Rotation {
            scope: &self.scope,
            policy: &self.cfg.rotation,
        }
    }

    /// Publishes `next` and exports its key metrics.
    fn publish(&self, next: Published) {
        let next = Arc::new(next);
        self.export_metrics(&next);
        self.published.send_replace(next);
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
                ReasonCode::StatusStale,
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

    /// Calls Transit with the current token; on 403 the token is dropped,
    /// re-obtained once and the call retried.
    async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, KmsError>
    where
        F: Fn(SecretString) -> Fut,
        Fut: Future<Output = Result<T, BaoError>>,
    {
        call_with_token(&*self.transit, call).await
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
