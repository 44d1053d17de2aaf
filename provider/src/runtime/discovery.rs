//! Unknown-key_id discovery (docs/rotation.md): another node may have
//! promoted a version this node has not observed yet, and its
//! kube-apiserver may already have written data under it. One shared read
//! of the configured key's metadata, at most once per
//! `status.probeInterval`; a key_id that is a newer version of this key
//! with verified metadata is saved as pending (or retired) before it is
//! used. Never an observation, never starts the delay, never promotes.

use std::sync::Arc;

use bao_kms_core::admission;
use bao_kms_core::errors::KmsError;
use bao_kms_core::keyid::KeyId;
use bao_kms_core::rotation::Discovery;
use bao_kms_core::snapshot::KeySnapshot;
use tokio::time::Instant;

use super::{Engine, lock};

impl Engine {
    /// The decryptable snapshot `key_id` names, discovering it when this
    /// node has not seen it yet.
    pub(super) async fn discover(&self, key_id: &KeyId) -> Result<KeySnapshot, KmsError> {
        // An operator-removed record never decrypts and is never rediscovered.
        if let Some(version) = lock(&self.registry).state.removed_version(key_id.as_str()) {
            return Err(admission::key_id_removed(version));
        }
        // The probe may have saved it after the snapshot this request read.
        if let Some(snap) = self.durable_snapshot(key_id) {
            return Ok(snap);
        }
        let meta = self
            .discovery
            .run((), || async {
                {
                    let mut last = lock(&self.last_discovery);
                    if last.is_some_and(|at| at.elapsed() < self.cfg.status.probe_interval) {
                        return None;
                    }
                    *last = Some(Instant::now());
                }
                let read = self
                    .with_token(|t| async move { self.transit.key_metadata(&t).await })
                    .await
                    .map(Arc::new)
                    .map_err(admission::key_metadata_refresh_failed);
                Some(read)
            })
            .await;
        let meta = match meta {
            None => return self.durable_snapshot(key_id).ok_or_else(admission::key_id_unknown),
            Some(Err(e)) => return Err(e),
            Some(Ok(meta)) => meta,
        };
        let saved: Result<bool, KmsError> = {
            let mut registry = lock(&self.registry);
            match self
                .rotation()
                .discover(&registry.state, &meta, key_id, crate::now_unix())
            {
                Discovery::NotFound => Ok(false),
                Discovery::Unverified(reasons) => {
                    let text = reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                    tracing::warn!(message = "rotation.discovery_refused", key_id_hash = %key_id.hash(), reasons = %text);
                    Ok(false)
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
                        Ok(true)
                    }
                    Err(e) => {
                        // Verified but unrecorded: never decrypts from memory
                        // (a version is written before it is used), and is
                        // not `key_id_unknown` either: retryable, with the cause.
                        tracing::warn!(message = "rotation.discovery_save_failed", key_id_hash = %key_id.hash(), error = %e);
                        let version = next
                            .snapshots
                            .iter()
                            .find(|r| r.kubernetes_key_id == key_id.as_str())
                            .map_or(0, |r| r.transit_version);
                        Err(admission::state_unavailable(version, &e))
                    }
                },
            }
        };
        saved?
            .then(|| self.durable_snapshot(key_id))
            .flatten()
            .ok_or_else(admission::key_id_unknown)
    }

    /// A decryptable snapshot of the durable registry.
    fn durable_snapshot(&self, key_id: &KeyId) -> Option<KeySnapshot> {
        lock(&self.registry)
            .state
            .snapshots
            .iter()
            .find(|r| r.state.decrypts() && r.kubernetes_key_id == key_id.as_str())
            .and_then(|r| r.snapshot())
    }
}
