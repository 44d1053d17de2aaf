//! Every decoder of bytes from outside (disk, OpenBao, kube-apiserver)
//! returns an error on garbage and never panics. Inputs are random bytes,
//! random JSON, and valid documents with random single-byte corruptions.

use std::collections::HashMap;

use bao_kms_core::annotations;
use bao_kms_core::identity::IdentityScope;
use bao_kms_core::registry::{Checkpoint, IdentityPins, StateFile};
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_core::transit::parse_key_metadata;
use proptest::prelude::*;

const STATE: &str = include_str!("../../../tests/fixtures/registry/state-bootstrap-v1.json");

fn scope() -> IdentityScope {
    IdentityScope {
        provider_name: "openbao-kms-workload-a".into(),
        cluster_id: "workload-a".into(),
        openbao_instance_id: "bao-prod-a".into(),
        openbao_namespace: String::new(),
        transit_mount_id: "transit-prod-primary".into(),
        key_lineage_id: "01HXEXAMPLEKEYLINEAGEID".into(),
        transit_mount_path: "transit".into(),
        transit_key_name: "k8s-workload-a-etcd".into(),
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::hash_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn registry_files_from_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = StateFile::decode(&bytes);
        let _ = Checkpoint::decode(&bytes);
        let _ = IdentityPins::decode(&bytes);
    }

    #[test]
    fn corrupted_state_file_is_refused(pos in 0usize..STATE.len(), byte in any::<u8>()) {
        let mut bytes = STATE.as_bytes().to_vec();
        prop_assume!(bytes[pos] != byte);
        bytes[pos] = byte;
        // An edit that leaves the content equal (whitespace) may load;
        // any edit to the content must be refused.
        let original = StateFile::decode(STATE.as_bytes()).unwrap();
        if let Ok(state) = StateFile::decode(&bytes) {
            prop_assert_eq!(state, original);
        }
    }

    #[test]
    fn transit_metadata_from_random_json(v in json_value()) {
        let _ = parse_key_metadata(&v);
    }

    #[test]
    fn annotations_from_random_maps(
        map in prop::collection::hash_map(".{0,40}", prop::collection::vec(any::<u8>(), 0..50), 0..10)
    ) {
        let s = scope();
        let snap = KeySnapshot::new(&s, 1, 1_700_000_060).unwrap();
        let map: HashMap<String, Vec<u8>> = map;
        prop_assert!(annotations::verify(&map, &s, &snap).is_err());
    }

    #[test]
    fn stored_value_prefixes_and_keys_from_random_bytes(
        head in prop::sample::select(vec![&b""[..], b"k8s:enc:kms:v2:", b"k8s:enc:aescbc:v1:", b"k8s\x00", b"/registry/"]),
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let value = [head, &bytes[..]].concat();
        let _ = bao_kms_core::storage::value::parse(&value);
        let _ = bao_kms_core::storage::value::resource_of(&value, b"/registry/");
        let _ = serde_json::from_slice::<bao_kms_core::storage::StorageReport>(&value);
    }
}
