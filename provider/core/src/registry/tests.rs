use super::*;
use crate::identity::tests::sample_scope;
use crate::transit::parse_key_metadata;

const DISCOVERED: &str = include_str!("../../../../tests/fixtures/registry/state-discovered-v2.json");
const LEGACY: &str = include_str!("../../../../tests/fixtures/registry/state-rotated-v1-v2.legacy-v1alpha1.json");
const BOOTSTRAP: &str = include_str!("../../../../tests/fixtures/registry/state-bootstrap-v1.json");

fn bootstrap_state() -> StateFile {
    let scope = sample_scope();
    let snap = KeySnapshot::new(&scope, 1, 1_700_000_060).unwrap();
    StateFile::bootstrap(&scope, &snap, 1_700_000_000)
}

#[test]
fn published_v1alpha2_fixture_hash_and_bytes() {
    let state = StateFile::decode(DISCOVERED.as_bytes()).unwrap();
    assert_eq!(
        state.computed_hash(),
        "krs1.tu6TkH8g61rdindHuId9bXZcMXbUgYPcygzMWgtzBgk"
    );
    // Our encoder writes the published fixture byte for byte.
    assert_eq!(String::from_utf8(state.encode()).unwrap(), DISCOVERED);
    assert_eq!(state.decryptable().len(), 2);
}

#[test]
fn published_legacy_fixture_hash_rule_and_refusal() {
    // The hash body rule is the same on the legacy schema.
    let mut value: serde_json::Value = serde_json::from_str(LEGACY).unwrap();
    value.as_object_mut().unwrap().shift_remove("currentHash");
    let body = crate::gojson::to_compact(&value).unwrap();
    assert_eq!(
        format!("krs1.{}", crate::hash::sha256_b64url(&body)),
        "krs1.evEbhkz0ZC9-duP2_n0HgzZ3szBdAPtktM6iSYw1On4"
    );
    assert_eq!(StateFile::decode(LEGACY.as_bytes()), Err(StateError::LegacySchema));
}

#[test]
fn bootstrap_golden() {
    let state = bootstrap_state();
    assert_eq!(state.generation, 1);
    assert_eq!(state.active_key_id, "obk2.SU0bKFnl1E6uEttJ3yhQy_uGBWZ6MUOJrNH4VJwtz0k");
    assert_eq!(String::from_utf8(state.encode()).unwrap(), BOOTSTRAP);
    assert_eq!(StateFile::decode(BOOTSTRAP.as_bytes()).unwrap(), state);
    state.check_scope(&sample_scope()).unwrap();
}

#[test]
fn any_edit_breaks_the_hash() {
    let text = BOOTSTRAP.replace("\"observedAtUnix\": 1700000000", "\"observedAtUnix\": 1700000001");
    assert!(matches!(
        StateFile::decode(text.as_bytes()),
        Err(StateError::HashMismatch { .. })
    ));
}

#[test]
fn structural_corruption_is_refused() {
    for (bad, want) in [
        ("{", "Syntax"),
        ("{\"schemaVersion\":\"keyregistry.openbao-kms/v9\"}", "UnknownSchema"),
        ("[]", "Syntax"),
    ] {
        let err = StateFile::decode(bad.as_bytes()).unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{bad}: {err:?}");
    }
    let with_unknown = BOOTSTRAP.replacen("\"generation\"", "\"extra\": 1,\n  \"generation\"", 1);
    assert!(matches!(
        StateFile::decode(with_unknown.as_bytes()),
        Err(StateError::Syntax(_))
    ));
}

#[test]
fn inconsistent_content_with_a_valid_hash_is_refused() {
    let base = bootstrap_state();
    let rehash = |mut s: StateFile| {
        s.current_hash = s.computed_hash();
        StateFile::decode(&s.encode())
    };
    let mut s = base.clone();
    s.snapshots[0].kubernetes_key_id = "obk2.ImmpIXr3v4Fw4Im7457LAJiZdLOqK2dL6Nm3DEk-KEY".into();
    s.active_key_id = s.snapshots[0].kubernetes_key_id.clone();
    assert!(matches!(rehash(s), Err(StateError::Invalid(m)) if m.contains("derived")));

    let mut s = base.clone();
    s.snapshots[0].state = SnapshotState::Retired;
    assert!(matches!(rehash(s), Err(StateError::Invalid(m)) if m.contains("exactly one active")));

    let mut s = base.clone();
    s.snapshots.push(s.snapshots[0].clone());
    assert!(matches!(rehash(s), Err(StateError::Invalid(_))));

    let mut s = base.clone();
    s.snapshots[0].stable_at_unix = 5;
    assert!(matches!(rehash(s), Err(StateError::Invalid(m)) if m.contains("stableAtUnix")));

    let mut s = base;
    s.generation = 2;
    assert!(matches!(rehash(s), Err(StateError::Invalid(m)) if m.contains("previousHash")));
}

#[test]
fn successor_chains_generations() {
    let scope = sample_scope();
    let g1 = bootstrap_state();
    let v2 = KeySnapshot::new(&scope, 2, 1_700_000_120).unwrap();
    let g2 = g1
        .successor(|s| {
            let mut r = SnapshotRecord::new(&scope, &v2, SnapshotState::Pending);
            r.observed_at_unix = 1_700_000_200;
            s.snapshots.push(r);
        })
        .unwrap();
    assert_eq!(g2.generation, 2);
    assert_eq!(g2.previous_hash, g1.current_hash);
    assert_eq!(StateFile::decode(&g2.encode()).unwrap(), g2);
    assert_eq!(
        checkpoint_status(Some(&g2), Some(&Checkpoint::of(&g1))),
        Ok(CheckpointStatus::Behind)
    );
    // A successor that breaks an invariant is refused, not written.
    assert!(g2.successor(|s| s.snapshots[1].state = SnapshotState::Active).is_err());
}

#[test]
fn checkpoint_rules() {
    let scope = sample_scope();
    let g1 = bootstrap_state();
    let g2 = g1.successor(|_| {}).unwrap();
    let g3 = g2.successor(|_| {}).unwrap();
    let c1 = Checkpoint::of(&g1);
    let c2 = Checkpoint::of(&g2);
    assert_eq!(checkpoint_status(None, None), Ok(CheckpointStatus::Absent));
    assert_eq!(checkpoint_status(Some(&g1), None), Ok(CheckpointStatus::Missing));
    assert_eq!(checkpoint_status(Some(&g2), Some(&c2)), Ok(CheckpointStatus::Current));
    assert_eq!(checkpoint_status(Some(&g2), Some(&c1)), Ok(CheckpointStatus::Behind));
    let missing = checkpoint_status(None, Some(&c2)).unwrap_err();
    assert!(missing.contains("state file is missing"), "{missing}");
    let older = checkpoint_status(Some(&g1), Some(&c2)).unwrap_err();
    assert!(older.contains("rolled back"), "{older}");
    // Same generation, different content: a replaced file.
    let other = StateFile::bootstrap(
        &scope,
        &KeySnapshot::new(&scope, 1, 1_700_000_060).unwrap(),
        1_700_000_999,
    );
    let replaced = checkpoint_status(Some(&other), Some(&c1)).unwrap_err();
    assert!(replaced.contains("rolled back or replaced"), "{replaced}");
    // Two generations ahead is not a crash between two writes.
    assert!(checkpoint_status(Some(&g3), Some(&c1)).is_err());
}

#[test]
fn checkpoint_encoding_golden() {
    let c = Checkpoint::of(&bootstrap_state());
    let text = String::from_utf8(c.encode()).unwrap();
    assert_eq!(
        text,
        format!(
            "{{\n  \"schemaVersion\": \"keyregistry.openbao-kms/checkpoint/v1alpha1\",\n  \"generation\": 1,\n  \"currentHash\": \"{}\"\n}}\n",
            bootstrap_state().current_hash
        )
    );
    assert_eq!(Checkpoint::decode(text.as_bytes()).unwrap(), c);
    assert!(Checkpoint::decode(b"{\"schemaVersion\":\"x\",\"generation\":1,\"currentHash\":\"krs1.a\"}").is_err());
}

#[test]
fn scope_mismatch_is_refused() {
    let state = bootstrap_state();
    let mut other = sample_scope();
    other.transit_key_name = "another-key".into();
    assert!(matches!(
        state.check_scope(&other),
        Err(StateError::IdentityMismatch(_))
    ));
}

#[test]
fn drift_against_metadata() {
    let state = bootstrap_state();
    let meta = |keys: serde_json::Value, latest: u64| {
        let mut j = crate::transit::tests::fresh_key_json();
        j["keys"] = keys;
        j["latest_version"] = latest.into();
        parse_key_metadata(&j).unwrap()
    };
    assert!(
        state
            .drift_against(&meta(serde_json::json!({"1": 1_700_000_060}), 1))
            .is_empty()
    );
    let drift = state.drift_against(&meta(serde_json::json!({"1": 1_700_000_061}), 1));
    assert!(drift[0].starts_with("identity_drift"), "{drift:?}");
    let gone = state.drift_against(&meta(serde_json::json!({"2": 1_700_000_120}), 2));
    assert!(gone[0].starts_with("metadata_unverified"), "{gone:?}");
}

#[test]
fn snapshot_state_names_are_the_wire_names() {
    for s in [
        SnapshotState::Active,
        SnapshotState::Pending,
        SnapshotState::Retired,
        SnapshotState::Removed,
        SnapshotState::Rejected,
    ] {
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
    }
}

/// The content digest of the published fixture: an active version and a
/// discovered pending one. Generation and counters do not enter it.
#[test]
fn content_digest_of_the_published_fixture() {
    // Computed independently with sha256sum over the two hashes (docs/rotation.md).
    let state = StateFile::decode(DISCOVERED.as_bytes()).unwrap();
    let digest = state.content_digest();
    assert_eq!(digest, "rcd1.NF3GAVOCSrCPrmTyPPaUNjmE5NJLJ_46vZ5IwNa05IM");
    let mut other = state.clone();
    other.generation += 7;
    for r in &mut other.snapshots {
        r.stable_observation_count += 1;
        r.observed_at_unix += 5;
    }
    assert_eq!(other.content_digest(), digest);
}
