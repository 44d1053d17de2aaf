use std::collections::{BTreeMap, BTreeSet, HashSet};

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::identity::tests::sample_scope;
use crate::transit::parse_key_metadata;
use crate::transit::tests::fresh_key_json;

const T0: i64 = 1_700_000_000;
const V1_CREATED: i64 = 1_700_000_060;

fn created(v: u64) -> i64 {
    V1_CREATED + 60 * (v as i64 - 1)
}

fn policy(count: u32, delay_secs: u64, reject: bool) -> RotationConfig {
    RotationConfig {
        activation_delay: Duration::from_secs(delay_secs),
        require_stable_observation_count: count,
        reject_version_rollback: reject,
        hold_at_version: None,
    }
}

/// Transit metadata with `latest` and creation times for `versions`.
fn meta_with(latest: u64, versions: &[(u64, i64)], min_enc: u64) -> KeyMetadata {
    let mut j = fresh_key_json();
    let keys: serde_json::Map<String, serde_json::Value> =
        versions.iter().map(|(v, c)| (v.to_string(), json!(c))).collect();
    j["keys"] = serde_json::Value::Object(keys);
    j["latest_version"] = json!(latest);
    j["min_encryption_version"] = json!(min_enc);
    parse_key_metadata(&j).unwrap()
}

/// Metadata of an untouched key rotated up to `latest`.
fn meta(latest: u64) -> KeyMetadata {
    let versions: Vec<_> = (1..=latest).map(|v| (v, created(v))).collect();
    meta_with(latest, &versions, 0)
}

fn bootstrap() -> StateFile {
    let scope = sample_scope();
    StateFile::bootstrap(&scope, &KeySnapshot::new(&scope, 1, V1_CREATED).unwrap(), T0)
}

fn key_id(v: u64) -> String {
    KeyId::derive(&sample_scope(), v, created(v))
        .unwrap()
        .as_str()
        .to_owned()
}

fn candidate(v: u64) -> Candidate {
    Candidate {
        version: v,
        created_unix: created(v),
    }
}

fn clock(v: u64, secs: u64) -> Option<ActivationClock> {
    Some(ActivationClock {
        candidate: candidate(v),
        elapsed: Duration::from_secs(secs),
    })
}

fn record(state: &StateFile, v: u64) -> &SnapshotRecord {
    state.snapshots.iter().find(|r| r.transit_version == v).unwrap()
}

fn observed(step: &Step) -> StateFile {
    match &step.transition {
        Transition::Observe(next) => {
            assert_eq!(StateFile::decode(&next.encode()).as_ref(), Ok(next));
            next.clone()
        }
        other => panic!("expected an observation, got {other:?}"),
    }
}

fn codes(step: &Step) -> Vec<crate::reason::ReasonCode> {
    step.reasons.iter().map(|r| r.code).collect()
}

/// Observes `latest` until the candidate is durably stable.
fn stable_state(p: &RotationConfig, latest: u64) -> StateFile {
    let scope = sample_scope();
    let r = Rotation {
        scope: &scope,
        policy: p,
    };
    let mut state = bootstrap();
    for i in 0..p.require_stable_observation_count {
        state = observed(&r.step(&state, &meta(latest), T0 + 100 + i64::from(i), None));
    }
    state
}

#[test]
fn unrotated_key_is_active_and_writes_nothing() {
    let scope = sample_scope();
    let p = policy(3, 120, true);
    let step = Rotation {
        scope: &scope,
        policy: &p,
    }
    .step(&bootstrap(), &meta(1), T0 + 5, None);
    assert_eq!(step.rotation_state, RotationState::Active);
    assert_eq!(step.transition, Transition::None);
    assert!(step.reasons.is_empty());
    assert_eq!(step.confirm, None);
}

#[test]
fn first_sighting_records_a_decryptable_pending_version() {
    let scope = sample_scope();
    let p = policy(3, 120, true);
    let step = Rotation {
        scope: &scope,
        policy: &p,
    }
    .step(&bootstrap(), &meta(2), T0 + 100, None);
    assert_eq!(step.rotation_state, RotationState::Pending);
    assert!(step.reasons.is_empty());
    assert_eq!(step.notes, vec![Note::CandidateObserved(candidate(2))]);
    assert_eq!(step.confirm, None);
    let next = observed(&step);
    assert_eq!(next.generation, 2);
    assert_eq!(
        next.active_key_id,
        key_id(1),
        "an observation never changes the active key"
    );
    let r = record(&next, 2);
    assert_eq!(r.state, SnapshotState::Pending);
    assert_eq!(
        (r.stable_observation_count, r.observed_at_unix, r.stable_at_unix),
        (1, T0 + 100, 0)
    );
    assert!(next.decryptable().contains_key(&key_id(2)));
}

#[test]
fn consecutive_observations_count_until_stable_then_stop_writing() {
    let scope = sample_scope();
    let p = policy(3, 120, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let s1 = observed(&r.step(&bootstrap(), &meta(2), T0 + 100, None));
    let step2 = r.step(&s1, &meta(2), T0 + 130, None);
    let s2 = observed(&step2);
    assert_eq!(record(&s2, 2).stable_observation_count, 2);
    assert_eq!(record(&s2, 2).stable_at_unix, 0);
    assert_eq!(step2.confirm, None);

    let step3 = r.step(&s2, &meta(2), T0 + 160, None);
    let s3 = observed(&step3);
    assert_eq!(record(&s3, 2).stable_observation_count, 3);
    assert_eq!(record(&s3, 2).stable_at_unix, T0 + 160);
    assert_eq!(record(&s3, 2).observed_at_unix, T0 + 100);
    assert_eq!(step3.notes, vec![Note::Stable(candidate(2))]);
    assert_eq!(
        step3.confirm,
        Some(candidate(2)),
        "the clock starts once the stable state is durable"
    );
    assert_eq!(s3.generation, 4);

    // During the delay: nothing rewritten, the stable state is confirmed again.
    let step4 = r.step(&s3, &meta(2), T0 + 190, clock(2, 30));
    assert_eq!(step4.transition, Transition::None);
    assert_eq!(step4.rotation_state, RotationState::Pending);
    assert_eq!(step4.confirm, Some(candidate(2)));
    let progress = step4.progress.unwrap();
    assert_eq!(
        (progress.observations, progress.required, progress.stable),
        (3, 3, true)
    );
    assert_eq!(progress.remaining_delay, Some(Duration::from_secs(90)));
}

#[test]
fn promotion_needs_this_process_clock_for_the_same_candidate_and_the_full_delay() {
    let scope = sample_scope();
    let p = policy(2, 120, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let stable = stable_state(&p, 2);
    let now = T0 + 100_000;

    for (clock, why) in [
        (
            None,
            "no clock: persisted wall times never satisfy the delay (e.g. after a restart)",
        ),
        (clock(2, 119), "delay not elapsed"),
        (clock(3, 1000), "clock of another candidate"),
        (
            Some(ActivationClock {
                candidate: Candidate {
                    version: 2,
                    created_unix: created(2) + 1,
                },
                elapsed: Duration::from_secs(1000),
            }),
            "clock of another creation second",
        ),
    ] {
        let step = r.step(&stable, &meta(2), now, clock);
        assert_eq!(step.transition, Transition::None, "{why}");
        assert_eq!(step.confirm, Some(candidate(2)), "{why}");
        assert_eq!(step.rotation_state, RotationState::Pending, "{why}");
    }

    let step = r.step(&stable, &meta(2), now, clock(2, 120));
    let Transition::Promote { next, from, to } = &step.transition else {
        panic!("expected a promotion: {step:?}")
    };
    assert_eq!(step.rotation_state, RotationState::Active);
    assert_eq!(step.confirm, None);
    assert_eq!((from.version, to.version), (1, 2));
    assert_eq!(to.key_id.as_str(), key_id(2));
    assert_eq!(next.generation, stable.generation + 1);
    assert_eq!(next.previous_hash, stable.current_hash);
    assert_eq!(next.active_key_id, key_id(2));
    assert_eq!(next.active().transit_version, 2);
    assert_eq!(next.active().promoted_at_unix, now);
    assert_eq!(record(next, 1).state, SnapshotState::Retired);
    assert_eq!(StateFile::decode(&next.encode()).as_ref(), Ok(next));
    assert_eq!(next.decryptable().len(), 2, "the old version stays decryptable");

    // After promotion the key is simply active again.
    let after = r.step(next, &meta(2), now + 30, None);
    assert_eq!(after.rotation_state, RotationState::Active);
    assert_eq!(after.transition, Transition::None);
}

#[test]
fn a_single_required_observation_is_stable_at_first_sighting() {
    let scope = sample_scope();
    let p = policy(1, 0, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let step = r.step(&bootstrap(), &meta(2), T0 + 100, clock(2, 1000));
    let s1 = observed(&step);
    assert_eq!(record(&s1, 2).stable_at_unix, T0 + 100);
    assert_eq!(step.confirm, Some(candidate(2)));
    // Not promoted in the same step: the stable state must be durable first.
    assert!(matches!(
        r.step(&s1, &meta(2), T0 + 101, clock(2, 0)).transition,
        Transition::Promote { .. }
    ));
}

#[test]
fn a_newer_candidate_supersedes_the_pending_version_which_stays_retired() {
    let scope = sample_scope();
    let p = policy(3, 120, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let s = observed(&r.step(&bootstrap(), &meta(2), T0 + 100, None));
    let s = observed(&r.step(&s, &meta(2), T0 + 130, None));
    let step = r.step(&s, &meta(3), T0 + 160, clock(2, 1000));
    let next = observed(&step);
    assert_eq!(
        step.notes,
        vec![
            Note::Superseded { version: 2, by: 3 },
            Note::CandidateObserved(candidate(3))
        ]
    );
    assert_eq!(record(&next, 2).state, SnapshotState::Retired);
    let v3 = record(&next, 3);
    assert_eq!((v3.state, v3.stable_observation_count), (SnapshotState::Pending, 1));
    assert_eq!(next.decryptable().len(), 3);
    assert_eq!(step.confirm, None, "the count restarts for the new candidate");
}

#[test]
fn skipped_versions_are_retained_with_their_creation_second() {
    let scope = sample_scope();
    let p = policy(2, 120, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let step = r.step(&bootstrap(), &meta(4), T0 + 100, None);
    let next = observed(&step);
    for v in [2, 3] {
        let rec = record(&next, v);
        assert_eq!(rec.state, SnapshotState::Retired, "version {v}");
        assert_eq!(rec.transit_version_created_at_unix, created(v));
        assert_eq!(rec.kubernetes_key_id, key_id(v));
        assert_eq!(rec.observed_at_unix, T0 + 100);
    }
    assert_eq!(record(&next, 4).state, SnapshotState::Pending);
    assert!(step.notes.contains(&Note::SkippedRetained(candidate(2))));
    assert!(step.notes.contains(&Note::SkippedRetained(candidate(3))));
    // Then promoted like any candidate; the skipped versions stay retired.
    let s = observed(&r.step(&next, &meta(4), T0 + 130, None));
    let Transition::Promote { next, .. } = r.step(&s, &meta(4), T0 + 300, clock(4, 120)).transition else {
        panic!("expected a promotion")
    };
    assert_eq!(next.active().transit_version, 4);
    assert_eq!(next.decryptable().len(), 4);
}

#[test]
fn missing_intermediate_metadata_fails_closed() {
    let scope = sample_scope();
    let p = policy(2, 120, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let m = meta_with(3, &[(1, created(1)), (3, created(3))], 0);
    let step = r.step(&bootstrap(), &m, T0 + 100, None);
    assert_eq!(step.rotation_state, RotationState::Unknown);
    assert_eq!(step.transition, Transition::None);
    assert_eq!(codes(&step), vec![METADATA_UNVERIFIED]);
    assert!(
        step.reasons[0].detail.contains("skipped version 2"),
        "{:?}",
        step.reasons
    );

    let no_latest = meta_with(2, &[(1, created(1))], 0);
    let step = r.step(&bootstrap(), &no_latest, T0 + 100, None);
    assert_eq!(step.rotation_state, RotationState::Unknown);
    assert!(
        step.reasons[0].detail.contains("latest_version=2"),
        "{:?}",
        step.reasons
    );
}

#[test]
fn metadata_listing_versions_above_latest_is_inconsistent() {
    let scope = sample_scope();
    let p = policy(2, 120, true);
    let m = meta_with(1, &[(1, created(1)), (2, created(2))], 0);
    let step = Rotation {
        scope: &scope,
        policy: &p,
    }
    .step(&bootstrap(), &m, T0, None);
    assert_eq!(step.rotation_state, RotationState::Unknown);
    assert_eq!(codes(&step), vec![METADATA_UNVERIFIED]);
}

#[test]
fn latest_below_a_retained_version_is_a_rejected_rollback() {
    let scope = sample_scope();
    let p = policy(1, 0, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    // Below the active version.
    let s = stable_state(&p, 2);
    let Transition::Promote { next: promoted, .. } = r.step(&s, &meta(2), T0 + 500, clock(2, 0)).transition else {
        panic!("expected a promotion")
    };
    let step = r.step(&promoted, &meta(1), T0 + 600, None);
    assert_eq!(step.rotation_state, RotationState::Unknown);
    assert_eq!(step.transition, Transition::None);
    assert_eq!(codes(&step), vec![VERSION_ROLLBACK]);
    // Below a pending version: dropping an identity peers may use.
    let step = r.step(&s, &meta(1), T0 + 600, clock(2, 1000));
    assert_eq!(codes(&step), vec![VERSION_ROLLBACK]);
    assert_eq!(step.transition, Transition::None);
}

#[test]
fn a_tolerated_rollback_changes_nothing_but_metadata_must_still_verify() {
    let scope = sample_scope();
    let strict = policy(1, 0, true);
    let p = policy(1, 0, false);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let s = stable_state(&strict, 2);
    let Transition::Promote { next: promoted, .. } = r.step(&s, &meta(2), T0 + 500, clock(2, 0)).transition else {
        panic!("expected a promotion")
    };
    let step = r.step(&promoted, &meta(1), T0 + 600, None);
    assert!(!codes(&step).contains(&VERSION_ROLLBACK), "{step:?}");
    assert_eq!(step.transition, Transition::None);
    // Version 2 is gone from the metadata: it cannot be verified.
    assert_eq!(codes(&step), vec![METADATA_UNVERIFIED]);
    assert_eq!(step.rotation_state, RotationState::Unknown);
}

#[test]
fn a_changed_creation_second_of_any_retained_version_is_identity_drift() {
    let scope = sample_scope();
    let p = policy(2, 120, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    // Active (the key was deleted and re-created under the same name).
    let recreated = meta_with(1, &[(1, created(1) + 7)], 0);
    let step = r.step(&bootstrap(), &recreated, T0 + 100, None);
    assert_eq!(step.rotation_state, RotationState::Unknown);
    assert_eq!(codes(&step), vec![IDENTITY_DRIFT]);
    assert!(step.reasons[0].detail.contains("version 1 creation time changed"));

    // Pending, with a stable state and an elapsed clock: never promoted.
    let stable = stable_state(&p, 2);
    let drifted = meta_with(2, &[(1, created(1)), (2, created(2) + 1)], 0);
    let step = r.step(&stable, &drifted, T0 + 1000, clock(2, 1000));
    assert_eq!(step.transition, Transition::None);
    assert_eq!(codes(&step), vec![IDENTITY_DRIFT]);
    assert_eq!(step.confirm, None, "the clock is dropped on inconsistent metadata");

    // Retired.
    let Transition::Promote { next, .. } = r.step(&stable, &meta(2), T0 + 1000, clock(2, 1000)).transition else {
        panic!("expected a promotion")
    };
    let drifted = meta_with(2, &[(1, created(1) - 1), (2, created(2))], 0);
    assert_eq!(codes(&r.step(&next, &drifted, T0 + 1100, None)), vec![IDENTITY_DRIFT]);
}

#[test]
fn a_trimmed_retained_version_is_unverified() {
    let scope = sample_scope();
    let p = policy(1, 0, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let s = stable_state(&p, 2);
    let Transition::Promote { next, .. } = r.step(&s, &meta(2), T0 + 500, clock(2, 0)).transition else {
        panic!("expected a promotion")
    };
    // min_decryption_version=2 archives version 1, which data may still use.
    let step = r.step(&next, &meta_with(2, &[(2, created(2))], 0), T0 + 600, None);
    assert_eq!(codes(&step), vec![METADATA_UNVERIFIED]);
    assert!(
        step.reasons[0].detail.contains("version 1 (retired)"),
        "{:?}",
        step.reasons
    );
}

#[test]
fn min_encryption_version_above_active_blocks_encryption_while_observation_continues() {
    let scope = sample_scope();
    let p = policy(2, 60, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let blocked = |latest| {
        let versions: Vec<_> = (1..=latest).map(|v| (v, created(v))).collect();
        meta_with(latest, &versions, 2)
    };
    let step = r.step(&bootstrap(), &blocked(2), T0 + 100, None);
    assert_eq!(codes(&step), vec![ENCRYPTION_BLOCKED]);
    let s = observed(&step);
    let s = observed(&r.step(&s, &blocked(2), T0 + 130, None));
    let step = r.step(&s, &blocked(2), T0 + 200, clock(2, 60));
    let Transition::Promote { next, .. } = &step.transition else {
        panic!("expected a promotion: {step:?}")
    };
    assert!(step.reasons.is_empty(), "promotion lifts the block: {:?}", step.reasons);
    assert!(r.step(next, &blocked(2), T0 + 230, None).reasons.is_empty());
}

#[test]
fn removed_records_are_neither_checked_nor_revived() {
    let scope = sample_scope();
    let p = policy(1, 0, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let s = stable_state(&p, 2);
    let Transition::Promote { next, .. } = r.step(&s, &meta(2), T0 + 500, clock(2, 0)).transition else {
        panic!("expected a promotion")
    };
    let removed = next
        .successor(|s| {
            for rec in &mut s.snapshots {
                if rec.transit_version == 1 {
                    rec.state = SnapshotState::Removed;
                }
            }
        })
        .unwrap();
    let trimmed = meta_with(2, &[(2, created(2))], 0);
    let step = r.step(&removed, &trimmed, T0 + 600, None);
    assert!(step.reasons.is_empty(), "{:?}", step.reasons);
    assert_eq!(step.transition, Transition::None);
    let k1 = KeyId::parse(&key_id(1)).unwrap();
    assert_eq!(r.discover(&removed, &meta(2), &k1, T0 + 700), Discovery::NotFound);
}

#[test]
fn discovery_retains_a_peer_promoted_version_without_counting_it() {
    let scope = sample_scope();
    let p = policy(3, 120, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let k2 = KeyId::parse(&key_id(2)).unwrap();
    let Discovery::Found(next) = r.discover(&bootstrap(), &meta(2), &k2, T0 + 100) else {
        panic!("expected discovery")
    };
    let v2 = record(&next, 2);
    assert_eq!((v2.state, v2.stable_observation_count), (SnapshotState::Pending, 0));
    assert_eq!(v2.observed_at_unix, T0 + 100);
    assert!(next.decryptable().contains_key(k2.as_str()));
    assert_eq!(StateFile::decode(&next.encode()).as_ref(), Ok(&next));
    // The next probe counts the first observation.
    let s = observed(&r.step(&next, &meta(2), T0 + 130, None));
    assert_eq!(record(&s, 2).stable_observation_count, 1);
    // Already known, unknown to Transit, or on drifted metadata: nothing.
    assert_eq!(r.discover(&next, &meta(2), &k2, T0 + 140), Discovery::NotFound);
    let other = KeyId::derive(&scope, 2, created(2) + 1).unwrap();
    assert_eq!(
        r.discover(&bootstrap(), &meta(2), &other, T0 + 140),
        Discovery::NotFound
    );
    let k3 = KeyId::parse(&key_id(3)).unwrap();
    assert_eq!(r.discover(&bootstrap(), &meta(2), &k3, T0 + 140), Discovery::NotFound);
    let drifted = meta_with(2, &[(1, created(1) + 1), (2, created(2))], 0);
    assert!(matches!(
        r.discover(&bootstrap(), &drifted, &k2, T0 + 140),
        Discovery::Unverified(_)
    ));
    // A version skipped by a jump is retained as retired; the latest as pending.
    let Discovery::Found(next) = r.discover(&bootstrap(), &meta(3), &k2, T0 + 150) else {
        panic!("expected discovery")
    };
    assert_eq!(record(&next, 2).state, SnapshotState::Retired);
    assert_eq!(record(&next, 3).stable_observation_count, 0);
}

// ---------------------------------------------------------------------------
// Property tests: a driver that behaves like the provider's probe runs random
// sequences of operator actions, probes, failures and restarts.

#[derive(Debug, Clone)]
enum Op {
    /// `bao write -f .../rotate`.
    Rotate,
    /// A successful probe after `wait_ms` on both clocks.
    Probe { wait_ms: u64 },
    /// A metadata read that fails: no step.
    ProbeFails,
    /// The next save fails (disk full, permissions).
    SaveFails,
    /// The process restarts: the activation clock is lost.
    Restart,
    /// The wall clock jumps back (NTP correction).
    WallClockBack { secs: i64 },
    /// The next probe sees a drifted creation second of `version_pick`.
    DriftOnce { version_pick: u8 },
    /// The next probe sees `latest_version` rolled back by one.
    RollbackOnce,
    /// `min_encryption_version` set to latest.
    RaiseMinEncryption,
    /// Decrypt of a key_id the peer published for `version_pick`.
    Discover { version_pick: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Rotate),
        8 => (0u64..3_000).prop_map(|wait_ms| Op::Probe { wait_ms }),
        1 => Just(Op::ProbeFails),
        1 => Just(Op::SaveFails),
        1 => Just(Op::Restart),
        1 => (1i64..500).prop_map(|secs| Op::WallClockBack { secs }),
        1 => any::<u8>().prop_map(|version_pick| Op::DriftOnce { version_pick }),
        1 => Just(Op::RollbackOnce),
        1 => Just(Op::RaiseMinEncryption),
        1 => any::<u8>().prop_map(|version_pick| Op::Discover { version_pick }),
    ]
}

struct Driver {
    policy: RotationConfig,
    scope: IdentityScope,
    latest: u64,
    min_enc: u64,
    wall: i64,
    mono_ms: u64,
    state: StateFile,
    clock: Option<(Candidate, u64)>,
    next_save_fails: bool,
    drift: Option<u64>,
    rollback: bool,
    /// What Status reports and Encrypt uses: one published snapshot.
    published: Option<KeySnapshot>,
    last_published: Option<String>,
    superseded_ids: HashSet<String>,
    ever_decryptable: BTreeSet<String>,
}

impl Driver {
    fn new(policy: RotationConfig) -> Self {
        let state = bootstrap();
        let published = state.active().snapshot();
        let ever_decryptable = state.decryptable().into_keys().collect();
        Self {
            policy,
            scope: sample_scope(),
            latest: 1,
            min_enc: 0,
            wall: T0,
            mono_ms: 0,
            state,
            clock: None,
            next_save_fails: false,
            drift: None,
            rollback: false,
            last_published: published.as_ref().map(|p| p.key_id.as_str().to_owned()),
            published,
            superseded_ids: HashSet::new(),
            ever_decryptable,
        }
    }

    fn metadata(&mut self) -> KeyMetadata {
        let latest = if std::mem::take(&mut self.rollback) {
            self.latest.saturating_sub(1).max(1)
        } else {
            self.latest
        };
        let drift = self.drift.take();
        let versions: Vec<_> = (1..=latest)
            .map(|v| (v, created(v) + i64::from(drift == Some(v))))
            .collect();
        meta_with(latest, &versions, self.min_enc)
    }

    fn save(&mut self, next: &StateFile) -> bool {
        if std::mem::take(&mut self.next_save_fails) {
            return false;
        }
        assert_eq!(next.generation, self.state.generation + 1, "generation +1 per write");
        assert_eq!(next.previous_hash, self.state.current_hash, "hash chain");
        assert_eq!(StateFile::decode(&next.encode()).as_ref(), Ok(next), "valid registry");
        assert!(
            next.active().transit_version >= self.state.active().transit_version,
            "the active version never decreases"
        );
        self.state = next.clone();
        true
    }

    fn publish(&mut self, healthy: bool) {
        self.published = healthy.then(|| self.state.active().snapshot()).flatten();
        if let Some(new) = &self.published {
            let id = new.key_id.as_str().to_owned();
            assert!(
                !self.superseded_ids.contains(&id),
                "a superseded key_id is published again"
            );
            if let Some(last) = self.last_published.replace(id.clone())
                && last != id
            {
                self.superseded_ids.insert(last);
            }
        }
    }

    fn probe(&mut self) {
        let meta = self.metadata();
        let clock = self.clock.map(|(candidate, at)| ActivationClock {
            candidate,
            elapsed: Duration::from_millis(self.mono_ms - at),
        });
        let before = self.state.clone();
        let step = Rotation {
            scope: &self.scope,
            policy: &self.policy,
        }
        .step(&before, &meta, self.wall, clock);
        let mut healthy = step.reasons.is_empty();
        let saved = match &step.transition {
            Transition::None => true,
            Transition::Observe(next) => {
                assert_eq!(
                    next.active_key_id, before.active_key_id,
                    "an observation never promotes"
                );
                // A failed observation save keeps the provider healthy.
                self.save(next)
            }
            Transition::Promote { next, from, to } => {
                let (c, _) = self.clock.expect("promotion without a running activation clock");
                let elapsed = Duration::from_millis(self.mono_ms - self.clock.map_or(0, |(_, at)| at));
                assert!(elapsed >= self.policy.activation_delay, "promoted before the delay");
                assert_eq!((c.version, c.created_unix), (to.version, to.created_unix));
                let pending = before
                    .snapshots
                    .iter()
                    .find(|r| r.transit_version == to.version)
                    .expect("promoted version was pending");
                assert_eq!(pending.state, SnapshotState::Pending);
                assert!(pending.stable_at_unix > 0, "promoted without a durable stable state");
                assert!(pending.stable_observation_count >= self.policy.require_stable_observation_count);
                assert_eq!(from.key_id.as_str(), before.active_key_id);
                let ok = self.save(next);
                healthy &= ok;
                ok
            }
        };
        if saved {
            match step.confirm {
                Some(c) if self.clock.is_some_and(|(running, _)| running == c) => {}
                Some(c) => self.clock = Some((c, self.mono_ms)),
                None => self.clock = None,
            }
        }
        self.publish(healthy);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Rotate => self.latest += 1,
            Op::Probe { wait_ms } => {
                self.mono_ms += wait_ms;
                self.wall += i64::try_from(wait_ms / 1000).unwrap_or(0);
                self.probe();
            }
            Op::ProbeFails => {}
            Op::SaveFails => self.next_save_fails = true,
            Op::Restart => self.clock = None,
            Op::WallClockBack { secs } => self.wall -= secs,
            Op::DriftOnce { version_pick } => self.drift = Some(1 + u64::from(version_pick) % self.latest),
            Op::RollbackOnce => self.rollback = true,
            Op::RaiseMinEncryption => self.min_enc = self.latest,
            Op::Discover { version_pick } => {
                let v = 1 + u64::from(version_pick) % self.latest;
                let id = KeyId::derive(&self.scope, v, created(v)).unwrap();
                let meta = self.metadata();
                let r = Rotation {
                    scope: &self.scope,
                    policy: &self.policy,
                };
                if let Discovery::Found(next) = r.discover(&self.state.clone(), &meta, &id, self.wall) {
                    assert_eq!(next.active_key_id, self.state.active_key_id, "discovery never promotes");
                    let counted = next
                        .snapshots
                        .iter()
                        .find(|r| r.kubernetes_key_id == id.as_str())
                        .map(|r| r.stable_observation_count);
                    assert_eq!(counted, Some(0), "discovery never counts as an observation");
                    if self.save(&next) {
                        assert!(self.state.decryptable().contains_key(id.as_str()));
                    }
                }
            }
        }
    }

    fn check(&mut self) {
        let decryptable: BTreeMap<_, _> = self.state.decryptable();
        for id in &self.ever_decryptable {
            assert!(decryptable.contains_key(id), "a retained key_id was dropped");
        }
        self.ever_decryptable.extend(decryptable.into_keys());
        if let Some(p) = &self.published {
            // Status and Encrypt read this one value: its key_id is the one
            // derived from the version Encrypt sends, and it is durable.
            assert_eq!(
                KeyId::derive(&self.scope, p.version, p.created_unix).as_ref(),
                Ok(&p.key_id)
            );
            assert_eq!(p.key_id.as_str(), self.state.active_key_id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rotation_invariants_hold_for_any_sequence(
        ops in proptest::collection::vec(op(), 1..80),
        count in 1u32..4,
        delay_ms in 0u64..5_000,
        reject in any::<bool>(),
    ) {
        let mut d = Driver::new(RotationConfig {
            activation_delay: Duration::from_millis(delay_ms),
            require_stable_observation_count: count,
            reject_version_rollback: reject,
            hold_at_version: None,
        });
        let mut generation = d.state.generation;
        let mut active = d.state.active().transit_version;
        for op in &ops {
            d.apply(op);
            d.check();
            prop_assert!(d.state.generation >= generation);
            prop_assert!(d.state.active().transit_version >= active);
            generation = d.state.generation;
            active = d.state.active().transit_version;
        }
    }

    #[test]
    fn enough_quiet_probes_always_promote_the_latest_version(
        rotations in 1u64..4,
        count in 1u32..4,
        delay_ms in 0u64..5_000,
    ) {
        let mut d = Driver::new(RotationConfig {
            activation_delay: Duration::from_millis(delay_ms),
            require_stable_observation_count: count,
            reject_version_rollback: true,
            hold_at_version: None,
        });
        for _ in 0..rotations {
            d.apply(&Op::Rotate);
        }
        let probes = count + 2 + u32::try_from(delay_ms / 1000).unwrap_or(0);
        for _ in 0..probes {
            d.apply(&Op::Probe { wait_ms: 1_000 });
            d.check();
        }
        prop_assert_eq!(d.state.active().transit_version, 1 + rotations);
        prop_assert_eq!(d.published.as_ref().map(|p| p.version), Some(1 + rotations));
        prop_assert_eq!(d.state.decryptable().len() as u64, 1 + rotations);
    }
}

/// Steps `state` on `meta` until the latest version is promoted, the
/// activation clock always elapsed once the machine confirms a candidate.
fn promote_latest(r: &Rotation<'_>, mut state: StateFile, meta: &KeyMetadata, mut now: i64) -> StateFile {
    let mut clock = None;
    for _ in 0..20 {
        let step = r.step(&state, meta, now, clock);
        now += 1;
        clock = step.confirm.map(|c| ActivationClock {
            candidate: c,
            elapsed: r.policy.activation_delay,
        });
        match step.transition {
            Transition::None if step.rotation_state == RotationState::Active => return state,
            Transition::None => {}
            Transition::Observe(next) => state = next,
            Transition::Promote { next, .. } => state = next,
        }
    }
    panic!("no promotion: {state:?}")
}

/// The event orders of a real cluster leave nodes on different generations
/// with the same keys: the content digest agrees where the generation does
/// not (docs/rotation.md, "Convergence").
#[test]
fn content_digest_converges_where_generations_differ() {
    let scope = sample_scope();
    let p = policy(2, 30, true);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    // Discovery, then promotion on one node; plain observation on another.
    let plain = promote_latest(&r, bootstrap(), &meta(2), T0 + 100);
    let k2 = KeyId::parse(&key_id(2)).unwrap();
    let Discovery::Found(discovered) = r.discover(&bootstrap(), &meta(2), &k2, T0 + 90) else {
        panic!("expected discovery")
    };
    let via_discovery = promote_latest(&r, discovered, &meta(2), T0 + 100);
    assert_eq!(plain.active_key_id, key_id(2));
    assert_ne!(plain.generation, via_discovery.generation);
    assert_eq!(plain.content_digest(), via_discovery.content_digest());

    // Two rotations seconds apart: one node saw version 2 pending before 3
    // appeared, another only ever saw 3 (2 skipped, retained as retired).
    let one = observed(&r.step(&bootstrap(), &meta(2), T0 + 100, None));
    let saw_both = promote_latest(&r, one, &meta(3), T0 + 103);
    let saw_last = promote_latest(&r, bootstrap(), &meta(3), T0 + 103);
    assert_eq!(saw_both.active_key_id, key_id(3));
    assert_ne!(saw_both.generation, saw_last.generation);
    assert_eq!(saw_both.content_digest(), saw_last.content_digest());
    assert_eq!(record(&saw_last, 2).state, SnapshotState::Retired);

    // A node still holding 3 as pending is not converged with them.
    let pending = observed(&r.step(&bootstrap(), &meta(3), T0 + 103, None));
    assert_ne!(pending.content_digest(), saw_last.content_digest());
}

// ---------------------------------------------------------------------------
// Promotion hold (`rotation.holdAtVersion`)

fn held(count: u32, delay_secs: u64, hold: u64) -> RotationConfig {
    RotationConfig {
        hold_at_version: Some(hold),
        ..policy(count, delay_secs, true)
    }
}

#[test]
fn a_held_candidate_is_observed_and_decryptable_but_never_promoted() {
    let scope = sample_scope();
    let p = held(2, 0, 1);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    // Observation bookkeeping is the same as without the hold.
    let stable = stable_state(&p, 2);
    assert_eq!(stable, stable_state(&policy(2, 0, true), 2));
    assert!(stable.decryptable().contains_key(&key_id(2)));
    assert_eq!(record(&stable, 2).state, SnapshotState::Pending);
    for (clock, now) in [
        (None, T0 + 200),
        (clock(2, 0), T0 + 300),
        (clock(2, 86_400), T0 + 100_000),
    ] {
        let step = r.step(&stable, &meta(2), now, clock);
        assert_eq!(step.transition, Transition::None, "a held candidate is never promoted");
        assert_eq!(step.rotation_state, RotationState::Pending);
        assert!(step.reasons.is_empty(), "a hold is not a health problem");
        assert_eq!(step.confirm, None, "a hold starts no activation clock");
        let progress = step.progress.unwrap();
        assert_eq!(progress.candidate, candidate(2));
        assert!(progress.stable);
        assert_eq!(progress.held_at, Some(1));
        assert_eq!(progress.remaining_delay, None);
    }
    // The step that makes the candidate stable does not confirm it either.
    let mut state = bootstrap();
    let mut last = None;
    for i in 0..2 {
        let step = r.step(&state, &meta(2), T0 + 100 + i, None);
        state = observed(&step);
        last = Some(step);
    }
    let last = last.unwrap();
    assert_eq!(last.notes, vec![Note::Stable(candidate(2))]);
    assert_eq!((last.confirm, last.progress.unwrap().held_at), (None, Some(1)));
}

#[test]
fn releasing_a_hold_promotes_after_the_activation_delay() {
    let scope = sample_scope();
    let hold = held(2, 120, 1);
    let stable = stable_state(&hold, 2);
    let released = policy(2, 120, true);
    let r = Rotation {
        scope: &scope,
        policy: &released,
    };
    // The first step after the release confirms the candidate (the clock
    // starts now), nothing is rewritten ...
    let step = r.step(&stable, &meta(2), T0 + 1_000, None);
    assert_eq!(step.transition, Transition::None);
    assert_eq!(step.confirm, Some(candidate(2)));
    assert_eq!(step.progress.unwrap().held_at, None);
    // ... and the full delay later the candidate is promoted.
    assert_eq!(
        r.step(&stable, &meta(2), T0 + 1_100, clock(2, 100)).transition,
        Transition::None
    );
    match r.step(&stable, &meta(2), T0 + 1_120, clock(2, 120)).transition {
        Transition::Promote { next, from, to } => {
            assert_eq!((from.version, to.version), (1, 2));
            assert_eq!(next.active().transit_version, 2);
        }
        other => panic!("expected a promotion, got {other:?}"),
    }
}

#[test]
fn a_hold_lets_versions_up_to_it_promote_and_holds_the_ones_above() {
    let scope = sample_scope();
    // Hold at 2: version 2 promotes as usual.
    let p = held(1, 0, 2);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let state = promote_latest(&r, bootstrap(), &meta(2), T0 + 100);
    assert_eq!(state.active().transit_version, 2);
    // Version 3 is observed and stays pending; a jump to 4 holds 4.
    for latest in [3, 4] {
        let mut s = state.clone();
        for i in 0..5 {
            let step = r.step(&s, &meta(latest), T0 + 200 + i, clock(latest, 3_600));
            assert!(!matches!(step.transition, Transition::Promote { .. }));
            if let Some(next) = step.transition.next() {
                s = next.clone();
            }
        }
        assert_eq!(s.active().transit_version, 2);
        assert!(s.decryptable().contains_key(&key_id(latest)));
        assert_eq!(r.held_at(latest), Some(2));
    }
    assert_eq!(r.held_at(2), None);
}

#[test]
fn a_hold_below_the_active_version_never_demotes() {
    let scope = sample_scope();
    let state = promote_latest(
        &Rotation {
            scope: &scope,
            policy: &policy(1, 0, true),
        },
        bootstrap(),
        &meta(3),
        T0 + 100,
    );
    assert_eq!(state.active().transit_version, 3);
    let p = held(1, 0, 1);
    let r = Rotation {
        scope: &scope,
        policy: &p,
    };
    let step = r.step(&state, &meta(3), T0 + 500, None);
    assert_eq!(step.rotation_state, RotationState::Active);
    assert_eq!(step.transition, Transition::None);
    assert!(step.reasons.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever happens (rotations, probes, failed saves, drift, rollback),
    /// nothing above the hold becomes active, and the invariants hold.
    #[test]
    fn nothing_above_the_hold_is_ever_promoted(
        ops in proptest::collection::vec(op(), 1..60),
        count in 1u32..4,
        delay_ms in 0u64..3_000,
        hold in 1u64..4,
    ) {
        let mut d = Driver::new(held(count, 0, hold));
        d.policy.activation_delay = Duration::from_millis(delay_ms);
        for op in &ops {
            d.apply(op);
            d.check();
            prop_assert!(d.state.active().transit_version <= hold);
            prop_assert!(d.published.as_ref().is_none_or(|p| p.version <= hold));
        }
    }
}
