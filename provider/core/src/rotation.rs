//! The rotation state machine (docs/rotation.md): what one
//! successful Transit metadata observation does to the key registry.
//!
//! The machine's durable state is the registry ([`StateFile`]); its only
//! process-local state is the *activation clock*: the monotonic instant at
//! which this process confirmed that a stable candidate is durable. The
//! driver (the provider's background probe) owns that clock, the files and
//! the published snapshot; this module decides.
//!
//! ```text
//!  probe ──KeyMetadata──> Rotation::step(state, meta, now_unix, clock) ──> Step
//!                            transition  None | Observe(next) | Promote { next, from, to }
//!                            confirm     start the activation clock once `next` is durable
//!                            reasons     health reasons (version_rollback, identity_drift, ...)
//!  driver:  save(next) ──ok──> publish(next), start clock   (never publish before save)
//! ```
//!
//! Rules (each one has a test below):
//! - `latest_version > active` makes `latest` the candidate: a `pending`
//!   record, first sighting count 1 with `observedAtUnix`, +1 per successful
//!   observation of the same version and creation second; a different
//!   candidate retires the old pending record (peers may already use it).
//! - When the count reaches `requireStableObservationCount`, `stableAtUnix`
//!   is written. Promotion needs that stable state durable *and*
//!   `activationDelay` elapsed on the monotonic clock from this process's
//!   confirmation; persisted wall times never count, a restart restarts the
//!   delay, and counts are not rewritten during the delay.
//! - Promotion writes a new generation: candidate `active` with
//!   `promotedAtUnix`, previous active `retired`.
//! - Versions skipped by a jump of `latest_version` are retained as
//!   `retired` with their creation second; a skipped version without
//!   creation metadata fails closed.
//! - Every retained version (active, pending, retired) must still be
//!   reported with the same creation second: a different second is
//!   `identity_drift`, a missing version `metadata_unverified`; both are
//!   `unknown` and change nothing.
//! - `latest_version` below a retained version is `version_rollback`
//!   (unknown, unhealthy) unless `rejectVersionRollback` is false, in which
//!   case it changes nothing and only the metadata checks apply.
//! - Never demote; never promote on metadata that failed a check.
//! - `min_encryption_version` above the active version is
//!   `encryption_blocked`; observation and promotion continue.
//! - `rotation.holdAtVersion` (a promotion hold, the rotation runbook's
//!   rollback step): a candidate above the hold is observed, counted,
//!   marked stable and decryptable like any other, but never promoted; the
//!   state stays `pending` and the activation clock is not started.
//!   Removing the hold releases it: the next step confirms the stable
//!   candidate and promotion follows the activation delay. A hold below the
//!   active version never demotes.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::RotationConfig;
use crate::identity::IdentityScope;
use crate::keyid::KeyId;
use crate::registry::{SnapshotRecord, SnapshotState, StateFile};
use crate::snapshot::KeySnapshot;
use crate::transit::KeyMetadata;

// The reasons a step reports, named where the machine's output is read.
pub use crate::reason::{ENCRYPTION_BLOCKED, IDENTITY_DRIFT, METADATA_UNVERIFIED, Reason, VERSION_ROLLBACK};

/// Rotation state as Status, `/ready` and the `rotation_state` metric report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationState {
    /// The active version is Transit's latest.
    Active,
    /// A newer version is observed and not promoted yet.
    Pending,
    /// Metadata is unreadable, inconsistent or drifted: nothing is decided.
    Unknown,
}

impl RotationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Pending => "pending",
            Self::Unknown => "unknown",
        }
    }
}

/// A candidate version, identified by its number and creation second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    pub version: u64,
    pub created_unix: i64,
}

/// The driver's activation clock: it has been running for `elapsed` on the
/// monotonic clock since this process confirmed `candidate`'s durable
/// stable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationClock {
    pub candidate: Candidate,
    pub elapsed: Duration,
}

/// What the driver must persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Nothing to write.
    None,
    /// Observation bookkeeping (pending record, count, stable time,
    /// retained skipped or superseded versions); the active key is unchanged.
    Observe(StateFile),
    /// A new active version.
    Promote {
        next: StateFile,
        from: KeySnapshot,
        to: KeySnapshot,
    },
}

impl Transition {
    /// The state to persist, if any.
    pub fn next(&self) -> Option<&StateFile> {
        match self {
            Self::None => None,
            Self::Observe(next) | Self::Promote { next, .. } => Some(next),
        }
    }
}

/// Something worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A new candidate was first seen.
    CandidateObserved(Candidate),
    /// A pending version was superseded by a newer candidate; kept as retired.
    Superseded { version: u64, by: u64 },
    /// A version skipped by a `latest_version` jump is kept as retired.
    SkippedRetained(Candidate),
    /// The candidate reached the stable observation count.
    Stable(Candidate),
}

/// Where the candidate stands (for logs and `rotation-plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub candidate: Candidate,
    pub observations: u32,
    pub required: u32,
    /// Stable count reached and written.
    pub stable: bool,
    /// Delay still to wait; `None` until this process confirmed the stable state.
    pub remaining_delay: Option<Duration>,
    /// `rotation.holdAtVersion` when it keeps this candidate from promoting.
    pub held_at: Option<u64>,
}

/// The decision for one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub rotation_state: RotationState,
    pub transition: Transition,
    /// Health reasons; empty when the observation leaves the provider healthy.
    pub reasons: Vec<Reason>,
    /// After `transition` is durable (or at once when it is `None`), the
    /// registry holds this candidate stable: the driver starts its clock if
    /// it is not already running for it, and clears it when this is `None`.
    pub confirm: Option<Candidate>,
    pub progress: Option<Progress>,
    pub notes: Vec<Note>,
}

impl Step {
    fn unknown(reasons: Vec<Reason>) -> Self {
        Self {
            rotation_state: RotationState::Unknown,
            transition: Transition::None,
            reasons,
            confirm: None,
            progress: None,
            notes: Vec::new(),
        }
    }
}

/// Outcome of unknown-key_id discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// The key_id is not a version of the configured key that Transit reports.
    NotFound,
    /// Metadata failed a check; nothing may be learned from it.
    Unverified(Vec<Reason>),
    /// Persist this state, then publish it: it holds the key_id as pending or retired.
    Found(StateFile),
}

/// The rotation rules for one identity and one policy.
#[derive(Debug, Clone, Copy)]
pub struct Rotation<'a> {
    pub scope: &'a IdentityScope,
    pub policy: &'a RotationConfig,
}

impl Rotation<'_> {
    fn threshold(&self) -> u32 {
        self.policy.require_stable_observation_count.max(1)
    }

    /// The promotion hold that keeps `version` from becoming active, if any.
    pub fn held_at(&self, version: u64) -> Option<u64> {
        held_at(self.policy.hold_at_version, version)
    }

    /// Decides what one successful metadata observation does.
    pub fn step(&self, state: &StateFile, meta: &KeyMetadata, now_unix: i64, clock: Option<ActivationClock>) -> Step {
        let now_unix = now_unix.max(1);
        let active_version = state.active().transit_version;
        let problems = self.verify(state, meta);
        if !problems.is_empty() {
            return Step::unknown(problems);
        }
        let latest = meta.latest_version;
        if latest <= active_version {
            // Equal: nothing pending (a pending version above latest was a
            // rollback, refused by `verify`). Below: tolerated rollback
            // (`rejectVersionRollback: false`), which changes nothing.
            return Step {
                rotation_state: RotationState::Active,
                transition: Transition::None,
                reasons: encryption_blocked(meta, active_version),
                confirm: None,
                progress: None,
                notes: Vec::new(),
            };
        }
        let plan = match self.plan(state, meta, now_unix, true) {
            Ok(plan) => plan,
            Err(reasons) => return Step::unknown(reasons),
        };
        let threshold = self.threshold();
        let (candidate, next, notes) = match plan {
            Plan::Write { candidate, next, notes } => (candidate, next, notes),
            Plan::Recorded { candidate, record } => {
                // Durably stable and nothing else to record: the promotion decision.
                return self.decide(state, meta, candidate, record, clock, now_unix);
            }
        };
        let record = next
            .snapshots
            .iter()
            .find(|r| r.transit_version == latest)
            .map(|r| (r.stable_observation_count, r.stable_at_unix > 0));
        let (observations, stable) = record.unwrap_or((0, false));
        let stable = stable && observations >= threshold;
        let held = self.held_at(candidate.version);
        Step {
            rotation_state: RotationState::Pending,
            transition: Transition::Observe(next),
            reasons: encryption_blocked(meta, active_version),
            confirm: (stable && held.is_none()).then_some(candidate),
            progress: Some(Progress {
                candidate,
                observations,
                required: threshold,
                stable,
                remaining_delay: None,
                held_at: held,
            }),
            notes,
        }
    }

    /// A durably stable candidate: promote once this process's clock for it
    /// has run for the activation delay, else keep (re)confirming it.
    fn decide(
        &self,
        state: &StateFile,
        meta: &KeyMetadata,
        candidate: Candidate,
        record: &SnapshotRecord,
        clock: Option<ActivationClock>,
        now_unix: i64,
    ) -> Step {
        let held = self.held_at(candidate.version);
        // A held candidate starts no clock: the delay counts from the
        // release, as if the stable state had just been confirmed.
        let elapsed = clock
            .filter(|c| c.candidate == candidate && held.is_none())
            .map(|c| c.elapsed);
        let delay = self.policy.activation_delay;
        if elapsed.is_some_and(|e| e >= delay) {
            return self.promote(state, meta, record, now_unix);
        }
        Step {
            rotation_state: RotationState::Pending,
            transition: Transition::None,
            reasons: encryption_blocked(meta, state.active().transit_version),
            confirm: held.is_none().then_some(candidate),
            progress: Some(Progress {
                candidate,
                observations: record.stable_observation_count,
                required: self.threshold(),
                stable: true,
                remaining_delay: elapsed.map(|e| delay.saturating_sub(e)),
                held_at: held,
            }),
            notes: Vec::new(),
        }
    }

    /// Unknown-key_id discovery: when `key_id` is a version of the
    /// configured key newer than the active one, with verified metadata,
    /// the state that retains it (and any skipped version) for Decrypt.
    /// Never counts as an observation, never marks stable, never promotes.
    pub fn discover(&self, state: &StateFile, meta: &KeyMetadata, key_id: &KeyId, now_unix: i64) -> Discovery {
        let now_unix = now_unix.max(1);
        let problems = self.verify(state, meta);
        if !problems.is_empty() {
            return Discovery::Unverified(problems);
        }
        let active_version = state.active().transit_version;
        if meta.latest_version <= active_version {
            return Discovery::NotFound;
        }
        let found = meta
            .versions
            .range(active_version.saturating_add(1)..=meta.latest_version)
            .any(|(&v, &c)| KeyId::derive(self.scope, v, c).is_ok_and(|k| k == *key_id));
        if !found || state.snapshots.iter().any(|r| r.kubernetes_key_id == key_id.as_str()) {
            return Discovery::NotFound;
        }
        match self.plan(state, meta, now_unix, false) {
            Ok(Plan::Write { next, .. }) => Discovery::Found(next),
            Ok(Plan::Recorded { .. }) => Discovery::NotFound,
            Err(reasons) => Discovery::Unverified(reasons),
        }
    }

    fn verify(&self, state: &StateFile, meta: &KeyMetadata) -> Vec<Reason> {
        state.verify_metadata(meta, self.policy.reject_version_rollback)
    }

    /// The observation transition for `latest > active` on verified
    /// metadata: retain skipped and superseded versions, and record (and,
    /// when `counts`, count) the candidate.
    fn plan<'s>(
        &self,
        state: &'s StateFile,
        meta: &KeyMetadata,
        now_unix: i64,
        counts: bool,
    ) -> Result<Plan<'s>, Vec<Reason>> {
        let fail = |detail: String| vec![Reason::new(METADATA_UNVERIFIED, detail)];
        let active_version = state.active().transit_version;
        let latest = meta.latest_version;
        let created = *meta
            .versions
            .get(&latest)
            .ok_or_else(|| fail(format!("Transit reports no creation time for latest_version={latest}")))?;
        let candidate = Candidate {
            version: latest,
            created_unix: created,
        };
        let known: BTreeSet<u64> = state.snapshots.iter().map(|r| r.transit_version).collect();
        // Bounded: each turn either skips a known version, takes one from
        // `meta.versions`, or returns.
        let mut skipped = Vec::new();
        let mut v = active_version.saturating_add(1);
        while v < latest {
            if !known.contains(&v) {
                let c = *meta.versions.get(&v).ok_or_else(|| {
                    fail(format!(
                        "latest_version jumped from {active_version} to {latest} but Transit reports no creation time for skipped version {v}; stop rotations and restore the metadata"
                    ))
                })?;
                skipped.push(self.snapshot(v, c).map_err(fail)?);
            }
            v += 1;
        }
        let superseded: Vec<u64> = state
            .snapshots
            .iter()
            .filter(|r| r.state == SnapshotState::Pending && r.transit_version < latest)
            .map(|r| r.transit_version)
            .collect();
        let threshold = self.threshold();
        let current = state
            .snapshots
            .iter()
            .find(|r| r.state == SnapshotState::Pending && r.transit_version == latest);
        let durably_stable = current.is_some_and(|r| r.stable_at_unix > 0 && r.stable_observation_count >= threshold);
        if let Some(record) = current
            && skipped.is_empty()
            && superseded.is_empty()
            && (durably_stable || !counts)
        {
            return Ok(Plan::Recorded { candidate, record });
        }
        let mut notes = Vec::new();
        let fresh = match current {
            Some(_) => None,
            None => Some(self.snapshot(latest, created).map_err(fail)?),
        };
        for &version in &superseded {
            notes.push(Note::Superseded { version, by: latest });
        }
        for s in &skipped {
            notes.push(Note::SkippedRetained(Candidate {
                version: s.version,
                created_unix: s.created_unix,
            }));
        }
        if fresh.is_some() {
            notes.push(Note::CandidateObserved(candidate));
        }
        let mut became_stable = false;
        let next = state
            .successor(|s| {
                for r in &mut s.snapshots {
                    if r.state == SnapshotState::Pending && r.transit_version < latest {
                        r.state = SnapshotState::Retired;
                    }
                }
                for snap in &skipped {
                    let mut r = SnapshotRecord::new(self.scope, snap, SnapshotState::Retired);
                    r.observed_at_unix = now_unix;
                    s.snapshots.push(r);
                }
                if let Some(snap) = &fresh {
                    let mut r = SnapshotRecord::new(self.scope, snap, SnapshotState::Pending);
                    r.observed_at_unix = now_unix;
                    s.snapshots.push(r);
                }
                if counts
                    && let Some(r) = s
                        .snapshots
                        .iter_mut()
                        .find(|r| r.state == SnapshotState::Pending && r.transit_version == latest)
                {
                    if r.stable_observation_count < threshold {
                        r.stable_observation_count += 1;
                    }
                    if r.stable_observation_count >= threshold && r.stable_at_unix == 0 {
                        r.stable_at_unix = now_unix.max(r.observed_at_unix);
                        became_stable = true;
                    }
                }
            })
            .map_err(|e| fail(format!("the registry transition would be inconsistent: {e}")))?;
        if became_stable {
            notes.push(Note::Stable(candidate));
        }
        Ok(Plan::Write { candidate, next, notes })
    }

    fn promote(&self, state: &StateFile, meta: &KeyMetadata, record: &SnapshotRecord, now_unix: i64) -> Step {
        let (Some(from), Some(to)) = (state.active().snapshot(), record.snapshot()) else {
            return Step::unknown(vec![Reason::new(
                METADATA_UNVERIFIED,
                "a registry record has a malformed key_id",
            )]);
        };
        let version = record.transit_version;
        let next = state.successor(|s| {
            for r in &mut s.snapshots {
                if r.state == SnapshotState::Active {
                    r.state = SnapshotState::Retired;
                } else if r.transit_version == version {
                    r.state = SnapshotState::Active;
                    r.promoted_at_unix = now_unix.max(r.observed_at_unix);
                }
            }
            s.active_key_id = to.key_id.as_str().to_owned();
        });
        match next {
            Ok(next) => Step {
                rotation_state: if meta.latest_version > version {
                    RotationState::Pending
                } else {
                    RotationState::Active
                },
                transition: Transition::Promote { next, from, to },
                reasons: encryption_blocked(meta, version),
                confirm: None,
                progress: None,
                notes: Vec::new(),
            },
            Err(e) => Step::unknown(vec![Reason::new(
                METADATA_UNVERIFIED,
                format!("the promotion would leave the registry inconsistent: {e}"),
            )]),
        }
    }

    fn snapshot(&self, version: u64, created_unix: i64) -> Result<KeySnapshot, String> {
        KeySnapshot::new(self.scope, version, created_unix)
            .map_err(|e| format!("cannot derive the key_id of Transit version {version}: {e}"))
    }
}

/// What an observation of `latest > active` adds to the registry.
enum Plan<'s> {
    /// Nothing: the registry already records the candidate (durably
    /// stable, when observations are counted).
    Recorded {
        candidate: Candidate,
        record: &'s SnapshotRecord,
    },
    /// A new generation to write.
    Write {
        candidate: Candidate,
        next: StateFile,
        notes: Vec<Note>,
    },
}

/// The promotion hold `hold` keeps `version` from becoming active when
/// `version` is above it; it returns the hold then.
pub fn held_at(hold: Option<u64>, version: u64) -> Option<u64> {
    hold.filter(|&h| version > h)
}

fn encryption_blocked(meta: &KeyMetadata, active_version: u64) -> Vec<Reason> {
    if meta.min_encryption_version > active_version {
        vec![Reason::new(
            ENCRYPTION_BLOCKED,
            format!(
                "Transit min_encryption_version={} is above the active version {active_version}; Encrypt is refused until a newer version is promoted",
                meta.min_encryption_version
            ),
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
