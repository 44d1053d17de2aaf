use serde_json::json;

use super::*;
use crate::identity::tests::sample_scope;
use crate::keyid::KeyId;
use crate::registry::SnapshotRecord;
use crate::snapshot::KeySnapshot;
use crate::transit::parse_key_metadata;
use crate::transit::tests::fresh_key_json;

const T0: i64 = 1_700_000_000;

fn created(v: u64) -> i64 {
    1_700_000_060 + 60 * (v as i64 - 1)
}

/// A registry rotated up to `active` (every older version `retired`), each
/// promotion one generation: the fixed fixture of the golden tests.
fn rotated(active: u64) -> StateFile {
    let scope = sample_scope();
    let mut s = StateFile::bootstrap(&scope, &KeySnapshot::new(&scope, 1, created(1)).unwrap(), T0);
    for v in 2..=active {
        let snap = KeySnapshot::new(&scope, v, created(v)).unwrap();
        s = s
            .successor(|s| {
                s.snapshots[0].state = SnapshotState::Retired;
                let mut r = SnapshotRecord::new(&scope, &snap, SnapshotState::Active);
                r.observed_at_unix = T0 + 100 * v as i64;
                r.stable_observation_count = 1;
                r.stable_at_unix = r.observed_at_unix;
                r.promoted_at_unix = r.observed_at_unix + 10;
                s.snapshots.push(r);
                s.active_key_id = snap.key_id.as_str().to_owned();
            })
            .unwrap();
    }
    s
}

/// `rotated(active)` with a pending record for `active + 1`.
fn with_pending(active: u64) -> StateFile {
    let scope = sample_scope();
    let v = active + 1;
    let snap = KeySnapshot::new(&scope, v, created(v)).unwrap();
    rotated(active)
        .successor(|s| {
            let mut r = SnapshotRecord::new(&scope, &snap, SnapshotState::Pending);
            r.observed_at_unix = T0 + 1000;
            r.stable_observation_count = 1;
            s.snapshots.push(r);
        })
        .unwrap()
}

/// Metadata of the untouched key rotated to `latest`, edited by `edit`.
fn meta_edit(latest: u64, edit: impl FnOnce(&mut serde_json::Value)) -> KeyMetadata {
    let mut j = fresh_key_json();
    let keys: serde_json::Map<String, serde_json::Value> =
        (1..=latest).map(|v| (v.to_string(), json!(created(v)))).collect();
    j["keys"] = serde_json::Value::Object(keys);
    j["latest_version"] = json!(latest);
    edit(&mut j);
    parse_key_metadata(&j).unwrap()
}

fn meta(latest: u64) -> KeyMetadata {
    meta_edit(latest, |_| {})
}

fn state_of(s: &StateFile, v: u64) -> SnapshotState {
    s.snapshots.iter().find(|r| r.transit_version == v).unwrap().state
}

fn refused(result: Result<VersionPlan, Vec<String>>) -> String {
    result.expect_err("the plan must be refused").join("; ")
}

#[test]
fn retire_removes_versions_below_n_and_chains_the_state() {
    let s = rotated(3);
    let plan = plan_retire(&s, &meta(3), 3).unwrap();
    assert_eq!(plan.operation, Operation::Retire);
    assert_eq!(plan.removed_versions, vec![1, 2]);
    assert!(plan.restored_versions.is_empty());
    let next = &plan.next;
    assert_eq!(next.generation, s.generation + 1);
    assert_eq!(next.previous_hash, s.current_hash);
    assert_eq!(next.current_hash, next.computed_hash());
    // The active key never changes; removed records stay in the file.
    assert_eq!(next.active_key_id, s.active_key_id);
    assert_eq!(next.snapshots.len(), 3);
    assert_eq!(state_of(next, 3), SnapshotState::Active);
    assert_eq!(state_of(next, 2), SnapshotState::Removed);
    assert_eq!(state_of(next, 1), SnapshotState::Removed);
    // Nothing but the state field changed in the removed records.
    for (a, b) in s.snapshots.iter().zip(&next.snapshots) {
        let mut a = a.clone();
        a.state = b.state;
        assert_eq!(&a, b);
    }
    assert_eq!(next.decryptable().len(), 1);
    assert_eq!(next.retained_versions(), vec![3]);
    assert_eq!(StateFile::decode(&next.encode()).as_ref(), Ok(next));

    // N below the active version keeps the versions in between.
    let plan = plan_retire(&s, &meta(3), 2).unwrap();
    assert_eq!(plan.removed_versions, vec![1]);
    assert_eq!(state_of(&plan.next, 2), SnapshotState::Retired);
}

#[test]
fn golden_hashes_of_the_fixed_fixture() {
    let s = rotated(3);
    assert_eq!(s.generation, 3);
    assert_eq!(s.current_hash, "krs1.Fu4K-D-iozfG6Q3pW-RFSZm9HpyR1NAqXRunChUJnlU");
    let retired = plan_retire(&s, &meta(3), 3).unwrap().next;
    assert_eq!(retired.generation, 4);
    assert_eq!(retired.current_hash, "krs1.mz4c-Pp8HAynPPYFfbUZDwYOIdM8FJ46HEqPnDzsGks");
    let restored = plan_restore(&retired, &meta(3), &[1]).unwrap().next;
    assert_eq!(restored.generation, 5);
    assert_eq!(restored.previous_hash, retired.current_hash);
    assert_eq!(
        restored.current_hash,
        "krs1.MFCge9HYFsHtcOoYK1QhCdVlR6wmfJ8-rkOYFyB2nX4"
    );
}

#[test]
fn before_version_must_be_above_one_and_at_most_active() {
    let s = rotated(3);
    for n in [0, 1] {
        let why = refused(plan_retire(&s, &meta(3), n));
        assert!(why.contains("greater than 1"), "{n}: {why}");
    }
    let why = refused(plan_retire(&s, &meta(3), 4));
    assert!(why.contains("above the active version 3"), "{why}");
    // N == active is the upper bound.
    assert!(plan_retire(&s, &meta(3), 3).is_ok());
}

#[test]
fn a_pending_rotation_refuses_retirement() {
    let s = with_pending(2);
    let why = refused(plan_retire(&s, &meta(3), 2));
    assert!(why.contains("rotation is pending (version 3"), "{why}");
}

#[test]
fn transit_latest_must_equal_the_active_version() {
    let s = rotated(2);
    // Newer, not observed yet.
    let why = refused(plan_retire(&s, &meta(3), 2));
    assert!(why.contains("newer than the active version 2"), "{why}");
    // Rolled back below the active version.
    let rolled_back = meta_edit(1, |_| {});
    let why = refused(plan_retire(&s, &rolled_back, 2));
    assert!(why.contains("below the active version 2"), "{why}");
    assert!(why.contains("version_rollback"), "{why}");
}

#[test]
fn retained_versions_must_stay_decryptable() {
    let s = rotated(3);
    // min_decryption_version=2 excludes version 1, which is being removed:
    // allowed (that is the order: retire, then raise it).
    let m = meta_edit(3, |j| j["min_decryption_version"] = json!(2));
    assert_eq!(plan_retire(&s, &m, 2).unwrap().removed_versions, vec![1]);
    // ... but not version 2, which stays.
    let m = meta_edit(3, |j| j["min_decryption_version"] = json!(3));
    let why = refused(plan_retire(&s, &m, 2));
    assert!(why.contains("min_decryption_version=3 excludes version 2"), "{why}");
    let m = meta_edit(3, |j| j["min_available_version"] = json!(3));
    let why = refused(plan_retire(&s, &m, 2));
    assert!(why.contains("min_available_version=3 excludes version 2"), "{why}");
    // A retained version whose creation second changed is drift.
    let m = meta_edit(3, |j| j["keys"]["2"] = json!(created(2) + 1));
    let why = refused(plan_retire(&s, &m, 2));
    assert!(why.contains("identity_drift"), "{why}");
    // So is the active one.
    let m = meta_edit(3, |j| j["keys"]["3"] = json!(created(3) + 1));
    assert!(refused(plan_retire(&s, &m, 3)).contains("identity_drift"));
    // A retained version Transit no longer reports.
    let m = meta_edit(3, |j| {
        j["keys"].as_object_mut().unwrap().shift_remove("2");
    });
    let why = refused(plan_retire(&s, &m, 2));
    assert!(why.contains("no longer reports version 2"), "{why}");
}

#[test]
fn versions_being_removed_may_be_trimmed_but_not_drifted() {
    let s = rotated(3);
    let trimmed = meta_edit(3, |j| {
        j["keys"].as_object_mut().unwrap().shift_remove("1");
        j["min_available_version"] = json!(2);
        j["min_decryption_version"] = json!(2);
    });
    assert_eq!(plan_retire(&s, &trimmed, 2).unwrap().removed_versions, vec![1]);
    let drifted = meta_edit(3, |j| j["keys"]["1"] = json!(created(1) + 7));
    let why = refused(plan_retire(&s, &drifted, 2));
    assert!(why.contains("identity_drift: Transit version 1"), "{why}");
}

#[test]
fn inconsistent_metadata_is_refused() {
    let s = rotated(2);
    let m = meta_edit(2, |j| j["keys"]["5"] = json!(created(5)));
    let why = refused(plan_retire(&s, &m, 2));
    assert!(why.contains("version 5 is listed above latest_version=2"), "{why}");
}

#[test]
fn nothing_left_to_retire_is_refused() {
    let s = rotated(3);
    let next = plan_retire(&s, &meta(3), 3).unwrap().next;
    let why = refused(plan_retire(&next, &meta(3), 3));
    assert!(why.contains("no decryptable version below 3"), "{why}");
}

#[test]
fn removed_records_are_immutable_and_never_decrypt() {
    let s = rotated(3);
    let g4 = plan_retire(&s, &meta(3), 2).unwrap().next;
    let r1 = g4.snapshots.iter().find(|r| r.transit_version == 1).unwrap().clone();
    let g5 = plan_retire(&g4, &meta(3), 3).unwrap();
    assert_eq!(g5.removed_versions, vec![2], "only newly removed versions are listed");
    let again = g5.next.snapshots.iter().find(|r| r.transit_version == 1).unwrap();
    assert_eq!(again, &r1);
    assert_eq!(g5.next.removed_version(&r1.kubernetes_key_id), Some(1));
    assert!(!g5.next.decryptable().contains_key(&r1.kubernetes_key_id));
    assert_eq!(g5.next.removed_version(&g5.next.active_key_id), None);
}

#[test]
fn restore_brings_removed_records_back_as_retired() {
    let s = rotated(3);
    let retired = plan_retire(&s, &meta(3), 3).unwrap().next;
    let plan = plan_restore(&retired, &meta(3), &[1]).unwrap();
    assert_eq!(plan.operation, Operation::Restore);
    assert_eq!(plan.restored_versions, vec![1]);
    assert_eq!(plan.removed_versions, vec![2], "version 2 stays removed");
    let next = &plan.next;
    assert_eq!(next.generation, retired.generation + 1);
    assert_eq!(next.previous_hash, retired.current_hash);
    assert_eq!(next.active_key_id, s.active_key_id);
    assert_eq!(state_of(next, 1), SnapshotState::Retired);
    assert_eq!(state_of(next, 2), SnapshotState::Removed);
    let k1 = KeyId::derive(&sample_scope(), 1, created(1)).unwrap();
    assert!(next.decryptable().contains_key(k1.as_str()));

    // Both, duplicates ignored: back to the original records.
    let plan = plan_restore(&retired, &meta(3), &[2, 1, 2]).unwrap();
    assert_eq!(plan.restored_versions, vec![1, 2]);
    assert!(plan.removed_versions.is_empty());
    assert_eq!(plan.next.snapshots, s.snapshots);
}

#[test]
fn restore_refuses_records_that_are_not_removed() {
    let s = rotated(3);
    let retired = plan_retire(&s, &meta(3), 2).unwrap().next;
    let why = refused(plan_restore(&retired, &meta(3), &[2]));
    assert!(why.contains("version 2 is retired, not removed"), "{why}");
    let why = refused(plan_restore(&retired, &meta(3), &[3]));
    assert!(why.contains("version 3 is active, not removed"), "{why}");
    let why = refused(plan_restore(&retired, &meta(3), &[9]));
    assert!(why.contains("version 9 is not in the key registry"), "{why}");
    let why = refused(plan_restore(&retired, &meta(3), &[]));
    assert!(why.contains("no version to restore"), "{why}");
}

#[test]
fn restore_needs_transit_to_still_decrypt_the_version() {
    let s = rotated(3);
    let retired = plan_retire(&s, &meta(3), 3).unwrap().next;
    let m = meta_edit(3, |j| j["min_decryption_version"] = json!(2));
    let why = refused(plan_restore(&retired, &m, &[1]));
    assert!(why.contains("min_decryption_version=2 excludes version 1"), "{why}");
    // Version 2 is still decryptable under the same metadata.
    assert_eq!(plan_restore(&retired, &m, &[2]).unwrap().restored_versions, vec![2]);
    let m = meta_edit(3, |j| j["min_available_version"] = json!(2));
    let why = refused(plan_restore(&retired, &m, &[1]));
    assert!(why.contains("min_available_version=2 excludes version 1"), "{why}");
    let m = meta_edit(3, |j| {
        j["keys"].as_object_mut().unwrap().shift_remove("1");
    });
    let why = refused(plan_restore(&retired, &m, &[1]));
    assert!(why.contains("no longer reports version 1"), "{why}");
    let m = meta_edit(3, |j| j["keys"]["1"] = json!(created(1) + 1));
    let why = refused(plan_restore(&retired, &m, &[1]));
    assert!(why.contains("identity_drift: Transit version 1"), "{why}");
    // A rollback below the active version refuses a restore too.
    let why = refused(plan_restore(&retired, &meta(2), &[1]));
    assert!(why.contains("version_rollback"), "{why}");
}
