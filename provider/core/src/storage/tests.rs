use super::evidence::evaluate;
use super::gates::{forbid_version_below, require_key_id_hash};
use super::*;
use crate::identity::tests::sample_scope;
use crate::registry::{SnapshotRecord, SnapshotState};
use crate::snapshot::KeySnapshot;

const PROVIDER: &str = "openbao-kms-workload-a";

fn snap(version: u64) -> KeySnapshot {
    KeySnapshot::new(&sample_scope(), version, 1_700_000_000 + version as i64).unwrap()
}

fn hash(version: u64) -> String {
    snap(version).key_id.hash()
}

/// Registry with v3 active, v2 retired, v1 removed.
pub(crate) fn rotated_state() -> StateFile {
    let scope = sample_scope();
    let s1 = StateFile::bootstrap(&scope, &snap(1), 1_700_000_100);
    s1.successor(|s| {
        for r in &mut s.snapshots {
            r.state = if r.transit_version == 1 {
                SnapshotState::Removed
            } else {
                SnapshotState::Retired
            };
        }
        s.snapshots
            .push(SnapshotRecord::new(&scope, &snap(2), SnapshotState::Retired));
        s.snapshots
            .push(SnapshotRecord::new(&scope, &snap(3), SnapshotState::Active));
        s.active_key_id = snap(3).key_id.as_str().to_owned();
    })
    .unwrap()
}

fn etcd() -> EtcdSource {
    EtcdSource {
        endpoints: vec!["https://127.0.0.1:2379".into()],
        prefix: "/registry/".into(),
        revision: 42,
    }
}

/// secrets: 5 on v3, 2 on v2, 1 identity, 1 aescbc; configmaps: 3 on v3.
fn mixed() -> Tally {
    let mut t = Tally::default();
    for _ in 0..5 {
        t.add("secrets", Entry::of(Class::KmsV2, Some(PROVIDER), Some(hash(3))));
    }
    for _ in 0..2 {
        t.add("secrets", Entry::of(Class::KmsV2, Some(PROVIDER), Some(hash(2))));
    }
    t.add("secrets", Entry::identity());
    t.add("secrets", Entry::of(Class::Aescbc, Some("key1"), None));
    for _ in 0..3 {
        t.add("configmaps", Entry::of(Class::KmsV2, Some(PROVIDER), Some(hash(3))));
    }
    t
}

#[test]
fn tally_groups_and_sorts() {
    let r = mixed().into_report(etcd(), true, 1_700_000_500);
    assert_eq!(r.objects, 12);
    assert_eq!(r.schema_version, REPORT_SCHEMA);
    let names: Vec<&str> = r.resources.iter().map(|x| x.resource.as_str()).collect();
    assert_eq!(names, ["configmaps", "secrets"]);
    let secrets = &r.resources[1];
    assert_eq!(secrets.objects, 9);
    let classes: Vec<(&str, u64)> = secrets
        .counts
        .iter()
        .map(|c| (c.encryption.as_str(), c.objects))
        .collect();
    // Ordered by class, then name, then hash.
    assert_eq!(classes[2..], [("aescbc", 1), ("identity", 1)]);
    assert_eq!(classes[..2].iter().map(|c| c.1).sum::<u64>(), 7);
    let key_ids = r.key_ids();
    assert_eq!(key_ids[&(PROVIDER.to_owned(), hash(3))], 8);
    assert_eq!(key_ids[&(PROVIDER.to_owned(), hash(2))], 2);
}

#[test]
fn report_json_round_trips_with_camel_case_fields() {
    let mut r = mixed().into_report(etcd(), true, 1_700_000_500);
    map_registry(&mut r, &rotated_state(), "/var/lib/x/key-registry.json");
    let text = serde_json::to_string(&r).unwrap();
    assert!(
        text.contains("\"schemaVersion\":\"storagereport.openbao-kms/v1\""),
        "{text}"
    );
    assert!(text.contains("\"encryption\":\"kms-v2\""), "{text}");
    assert!(text.contains("\"keyIdHash\""), "{text}");
    assert!(text.contains("\"transitVersion\":3"), "{text}");
    assert!(text.contains("\"registryState\":\"retired\""), "{text}");
    let back: StorageReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    // Extra fields (the command's gate checks) are ignored on read.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["checks"] = serde_json::json!([]);
    assert_eq!(serde_json::from_value::<StorageReport>(v).unwrap(), r);
}

#[test]
fn registry_maps_only_its_provider() {
    let mut t = mixed();
    t.add("secrets", Entry::of(Class::KmsV2, Some("other-kms"), Some(hash(3))));
    let mut r = t.into_report(etcd(), true, 0);
    map_registry(&mut r, &rotated_state(), "/s");
    for (_, c) in r.counts() {
        match (c.encryption, c.name.as_deref()) {
            (Class::KmsV2, Some(PROVIDER)) => assert!(c.transit_version.is_some()),
            _ => assert_eq!(c.transit_version, None, "{c:?}"),
        }
    }
    let reg = r.registry.unwrap();
    assert_eq!(reg.provider_name, PROVIDER);
    assert_eq!(reg.generation, 2);
}

#[test]
fn require_key_id_hash_counts_every_encrypted_object() {
    let r = mixed().into_report(etcd(), true, 0);
    let v = require_key_id_hash(&r, &hash(3));
    assert_eq!(v.status, crate::checks::CheckStatus::Fail);
    assert!(
        msg(&v).starts_with(&format!("3 of 11 encrypted objects do not use key_id hash {}", hash(3))),
        "{}",
        msg(&v)
    );
    assert!(msg(&v).contains("secrets: 1 aescbc key1"), "{}", msg(&v));
    assert!(msg(&v).contains(&format!("secrets: 2 kms-v2 {PROVIDER} {}", hash(2))));
    assert!(fix(&v).contains("rewrite"));

    let mut t = Tally::default();
    t.add("secrets", Entry::of(Class::KmsV2, Some(PROVIDER), Some(hash(3))));
    t.add("pods", Entry::identity());
    let v = require_key_id_hash(&t.into_report(etcd(), true, 0), &hash(3));
    assert_eq!(v.status, crate::checks::CheckStatus::Pass, "{v:?}");
    assert_eq!(msg(&v), format!("all 1 encrypted objects use key_id hash {}", hash(3)));

    // Unknown and malformed values are not proven to use the hash.
    let mut t = Tally::default();
    t.add("secrets", Entry::of(Class::Unknown, None, None));
    t.add("secrets", Entry::of(Class::KmsV2Malformed, Some(PROVIDER), None));
    let v = require_key_id_hash(&t.into_report(etcd(), true, 0), &hash(3));
    assert_eq!(v.status, crate::checks::CheckStatus::Fail);
    assert!(msg(&v).starts_with("2 of 2 "), "{}", msg(&v));
}

#[test]
fn forbid_version_below_needs_the_registry_and_fails_unknown_hashes() {
    let mut r = mixed().into_report(etcd(), true, 0);
    let v = forbid_version_below(&r, 3);
    assert_eq!(v.status, crate::checks::CheckStatus::Fail);
    assert!(msg(&v).contains("no key registry"), "{}", msg(&v));

    map_registry(&mut r, &rotated_state(), "/s");
    let v = forbid_version_below(&r, 2);
    assert_eq!(v.status, crate::checks::CheckStatus::Pass, "{v:?}");
    assert_eq!(
        msg(&v),
        format!("all 10 kms-v2 objects of {PROVIDER} use Transit version 2 or later")
    );
    let v = forbid_version_below(&r, 3);
    assert_eq!(v.status, crate::checks::CheckStatus::Fail);
    assert!(
        msg(&v).contains(&format!("secrets: 2 kms-v2 {PROVIDER} {} (v2)", hash(2))),
        "{}",
        msg(&v)
    );

    let mut t = mixed();
    t.add("secrets", Entry::of(Class::KmsV2, Some(PROVIDER), Some(hash(9))));
    let mut r = t.into_report(etcd(), true, 0);
    map_registry(&mut r, &rotated_state(), "/s");
    let v = forbid_version_below(&r, 2);
    assert_eq!(v.status, crate::checks::CheckStatus::Fail);
    assert!(msg(&v).contains("version unknown"), "{}", msg(&v));
    assert!(fix(&v).contains("does not know"), "{}", fix(&v));
}

#[test]
fn evidence_is_complete_only_for_a_whole_decryptable_store() {
    let state = rotated_state();
    let r = mixed().into_report(etcd(), true, 0);
    let ev = evaluate(&r, &state, None);
    assert!(ev.complete(), "{:?}", ev.findings);
    assert_eq!(ev.objects, 10);
    assert_eq!(ev.on_active, 8);
    assert_eq!(ev.objects_by_version, BTreeMap::from([(2, 2), (3, 8)]));

    // Retiring below 3 would break the two v2 secrets.
    let ev = evaluate(&r, &state, Some(3));
    assert!(!ev.complete());
    assert_eq!(ev.findings.len(), 1);
    assert!(
        ev.findings[0].contains("2 objects still use version 2"),
        "{:?}",
        ev.findings
    );
    assert!(evaluate(&r, &state, Some(2)).complete());

    // A narrowed scan is not evidence for the store.
    let partial = mixed().into_report(etcd(), false, 0);
    let ev = evaluate(&partial, &state, None);
    assert!(ev.findings[0].contains("covers only /registry/"), "{:?}", ev.findings);

    // Removed and unknown key_ids: this node cannot decrypt those objects.
    let mut t = Tally::default();
    t.add("secrets", Entry::of(Class::KmsV2, Some(PROVIDER), Some(hash(1))));
    t.add("secrets", Entry::of(Class::KmsV2, Some(PROVIDER), Some(hash(7))));
    t.add("secrets", Entry::of(Class::KmsV2Malformed, Some(PROVIDER), None));
    t.add("secrets", Entry::of(Class::KmsV2, Some("other"), Some(hash(7))));
    let ev = evaluate(&t.into_report(etcd(), true, 0), &state, None);
    assert_eq!(ev.findings.len(), 3, "{:?}", ev.findings);
    assert!(ev.findings[0].contains("removed version 1"));
    assert!(ev.findings[1].contains("does not know"));
    assert!(ev.findings[2].contains("does not decode"));

    let mut wrong = r;
    wrong.schema_version = "storagereport.openbao-kms/v9".into();
    assert!(evaluate(&wrong, &state, None).findings[0].contains("schema"));
}

fn msg(c: &crate::checks::Check) -> String {
    c.message.clone().unwrap_or_default()
}

fn fix(c: &crate::checks::Check) -> String {
    c.fix.clone().unwrap_or_default()
}
