//! The background probe and the rotation driver.
//!
//! Every `status.probeInterval`: keep the token fresh, read the Transit
//! facts (key metadata, `cluster_id`, mount identity, `disable_upsert`),
//! assess them (pins, upsert, profile), hand the metadata to the pure
//! rotation machine (`bao_kms_core::rotation`), persist the transition it
//! returns (state, then checkpoint) and only then copy the durable registry
//! into the next published value. A promotion forces a deep probe of the
//! new key before it is published. No lock is held across an `.await`.

use std::sync::Arc;

use bao_kms_core::reason::ReasonCode;
use bao_kms_core::registry::{IdentityPins, StateFile};
use bao_kms_core::rotation::{ActivationClock, Note, Transition};
use bao_kms_core::transit::{KeyMetadata, profile_findings};
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::time::Instant;

use super::kms::deep_probe;
use super::{Engine, Published, Reason, RotationState, lock};
use crate::metrics::Status as StatusLabel;
use crate::transit::{BaoError, Transit};

/// The Transit facts one probe reads.
pub(super) struct ProbeFacts {
    pub(super) meta: KeyMetadata,
    pub(super) live_pins: IdentityPins,
    pub(super) upsert_disabled: Result<bool, BaoError>,
}

pub(super) async fn gather(transit: &dyn Transit, token: &SecretString) -> Result<ProbeFacts, BaoError> {
    let meta = transit.key_metadata(token).await?;
    let cluster_id = transit.cluster_id().await?;
    let mount = transit.mount_identity(token).await?;
    let upsert_disabled = transit.disable_upsert(token).await;
    Ok(ProbeFacts {
        meta,
        live_pins: IdentityPins::new(cluster_id, mount.accessor, mount.uuid),
        upsert_disabled,
    })
}

/// Problems with the facts that are not rotation decisions: live identity
/// pins, `disable_upsert` and the Transit profile. The second value is
/// false when the pins do not match: metadata from another OpenBao or a
/// re-created mount must not drive rotation.
pub(super) fn assess(facts: &ProbeFacts, state: &StateFile, pins: &IdentityPins) -> (Vec<Reason>, bool) {
    let mut reasons = Vec::new();
    let mismatches = pins.mismatches(&facts.live_pins);
    let pins_ok = mismatches.is_empty();
    for m in mismatches {
        reasons.push(Reason::new(ReasonCode::IdentityDrift, m));
    }
    match &facts.upsert_disabled {
        Ok(true) => {}
        Ok(false) => reasons.push(Reason::new(
            ReasonCode::UpsertAllowed,
            "Transit mount allows implicit key creation; set disable_upsert=true on <mount>/config/keys",
        )),
        Err(e) => reasons.push(Reason::new(ReasonCode::UpsertCheckFailed, e.to_string())),
    }
    // `min_encryption_version` above the active version is the rotation
    // machine's `encryption_blocked`, not a profile finding.
    for f in profile_findings(&facts.meta, &state.retained_versions(), None) {
        reasons.push(Reason::new(ReasonCode::ProfileInvalid, format!("{f} [{}]", f.code)));
    }
    (reasons, pins_ok)
}

/// What one probe did: whether a deep probe ran and whether it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub ran_deep: bool,
    pub deep_ok: bool,
}

impl Engine {
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
            self.transit.maintain_token().await;
            let deep_due = deep_failed || last_deep.elapsed() >= deep_interval;
            let outcome = self.probe_once(deep_due).await;
            if outcome.ran_deep {
                last_deep = Instant::now();
                deep_failed = !outcome.deep_ok;
            }
        }
    }

    /// One probe, with a deep probe when `deep_due` (or after a promotion,
    /// or while the previous probe was unhealthy).
    pub async fn probe_once(&self, deep_due: bool) -> ProbeOutcome {
        let previous = self.published.borrow().clone();
        let mut next = (*previous).clone();
        next.metadata_error_class = None;
        next.deep_error_class = None;
        let mut outcome = ProbeOutcome {
            ran_deep: false,
            deep_ok: false,
        };
        let token = match self.transit.token().await {
            Ok(t) => Some(t),
            Err(e) => {
                next.metadata_error_class = Some(e.class());
                next.reasons = vec![Reason::probe_failure(e.class(), ReasonCode::AuthFailed, &e)];
                None
            }
        };
        if let Some(token) = token {
            match gather(self.transit.as_ref(), &token).await {
                Err(e) => {
                    // 403: the token expired, was revoked or replaced; log in again next time.
                    if e.http_status == Some(403) {
                        self.transit.invalidate(&token).await;
                    }
                    self.metrics
                        .transit_metadata_observation
                        .get_or_create(&StatusLabel { status: "error" })
                        .inc();
                    next.metadata_error_class = Some(e.class);
                    next.reasons = vec![Reason::probe_failure(e.class, ReasonCode::MetadataReadFailed, &e)];
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
                        outcome.ran_deep = true;
                        match deep_probe(self.transit.as_ref(), &self.scope, &token, &next.active).await {
                            Err(e) => {
                                next.deep_error_class = Some(e.class);
                                reasons.push(Reason::new(ReasonCode::of_deep_probe_failure(e.class), e.message));
                            }
                            Ok(()) => outcome.deep_ok = true,
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
        // A state directory that refuses writes is unhealthy even before a
        // rotation needs it: the next observation could not be recorded.
        if let Err(e) = self.store.check_writable(false) {
            next.persistence_degraded = true;
            if !next.reasons.iter().any(|r| r.code == ReasonCode::StateUnavailable) {
                next.reasons
                    .push(Reason::new(ReasonCode::StateUnavailable, e.to_string()));
            }
        }
        log_health_change(&previous, &next);
        self.publish(next);
        outcome
    }

    /// Runs the rotation machine on one successful observation, persists
    /// what it decided, then copies the durable registry into `next`.
    /// Returns the health reasons, the rotation state, and whether a
    /// promotion was persisted.
    fn observe(&self, facts: &ProbeFacts, next: &mut Published) -> (Vec<Reason>, RotationState, bool) {
        // No await while the lock is held: the step and the save are synchronous.
        let mut registry = lock(&self.registry);
        let (mut reasons, pins_ok) = assess(facts, &registry.state, &self.pins);
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
                    if let Some(p) = step.progress.filter(|p| p.held_at.is_some()) {
                        tracing::info!(
                            message = "rotation.held",
                            transit_key_version = p.candidate.version,
                            hold_at_version = p.held_at,
                            stable = p.stable,
                            generation = state.generation
                        );
                    }
                    registry.state = state.clone();
                    next.persistence_degraded = false;
                    true
                }
                Err(e) => {
                    // Nothing new is published; the next probe retries with
                    // fresh metadata. Unhealthy either way: this node cannot
                    // record what its peers may already use.
                    next.persistence_degraded = true;
                    tracing::warn!(
                        message = "rotation.save_deferred",
                        generation = state.generation,
                        files_unchanged = e.files_unchanged,
                        error = %e
                    );
                    reasons.push(if e.files_unchanged {
                        Reason::new(
                            ReasonCode::StateUnavailable,
                            format!("rotation observation could not be saved (registry on disk unchanged): {e}"),
                        )
                    } else {
                        Reason::new(ReasonCode::StateSaveFailed, format!("registry save failed: {e}"))
                    });
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
                    next.persistence_degraded = true;
                    tracing::warn!(
                        message = "rotation.promotion_save_failed",
                        generation = state.generation,
                        new_transit_key_version = to.version,
                        error = %e
                    );
                    reasons.push(Reason::new(
                        ReasonCode::StateSaveFailed,
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
}

/// One log line when health or its reasons change.
fn log_health_change(previous: &Published, next: &Published) {
    if next.reasons == previous.reasons {
        return;
    }
    if next.reasons.is_empty() {
        tracing::info!(message = "status.probe", healthz = "ok", key_id_hash = %next.active.key_id.hash());
    } else {
        let text = next
            .reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!(message = "status.probe", healthz = "unhealthy", reasons = %text);
    }
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
