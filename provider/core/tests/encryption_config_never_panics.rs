//! The EncryptionConfiguration decoder and rules on outside bytes: random
//! text, random YAML structures and corrupted valid files yield findings,
//! never a panic, and no finding ever carries an inline key secret.

use bao_kms_core::encryption_config::{ProviderExpectation, ValidateOptions, analyze};
use proptest::prelude::*;

const PHASE2: &str = include_str!("../../../tests/fixtures/preflight/encryption-config/valid-phase2-kms-first.yaml");
const AESCBC: &str =
    include_str!("../../../tests/fixtures/preflight/encryption-config/valid-migration-from-aescbc.yaml");
/// The inline key of the aescbc fixture.
const SECRET: &str = "c2VjcmV0IGlzIHNlY3VyZSwgaXMgaXQgbm90Pz8/Pz8=";

fn expected() -> ProviderExpectation {
    ProviderExpectation {
        name: "openbao-kms-workload-a".into(),
        endpoint: "unix:///run/openbao-kms/kms.sock".into(),
        resources: vec!["secrets".into(), "configmaps".into()],
    }
}

fn yaml_value() -> impl Strategy<Value = serde_yaml_ng::Value> {
    let leaf = prop_oneof![
        Just(serde_yaml_ng::Value::Null),
        any::<bool>().prop_map(serde_yaml_ng::Value::from),
        any::<i32>().prop_map(serde_yaml_ng::Value::from),
        prop_oneof![
            Just("v2".to_owned()),
            Just("unix:///run/openbao-kms/kms.sock".to_owned()),
            Just("*.".to_owned()),
            Just("secrets".to_owned()),
            ".{0,10}"
        ]
        .prop_map(serde_yaml_ng::Value::from),
    ];
    let key = prop_oneof![
        Just("apiVersion"),
        Just("kind"),
        Just("resources"),
        Just("providers"),
        Just("kms"),
        Just("identity"),
        Just("aesgcm"),
        Just("keys"),
        Just("name"),
        Just("secret"),
        Just("endpoint"),
        Just("timeout"),
        Just("cachesize"),
    ];
    leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_yaml_ng::Value::Sequence),
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                serde_yaml_ng::Value::Mapping(
                    kv.into_iter()
                        .map(|(k, v)| (serde_yaml_ng::Value::from(k), v))
                        .collect(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text(text in ".{0,256}") {
        let _ = analyze(&text, &expected(), &ValidateOptions::default());
    }

    #[test]
    fn random_structures(v in yaml_value()) {
        let text = serde_yaml_ng::to_string(&v).expect("a generated YAML value serialises");
        for opts in [ValidateOptions::default(), ValidateOptions { automatic_reload: true, kms_v1_enabled: true }] {
            let _ = analyze(&text, &expected(), &opts);
        }
    }

    #[test]
    fn corrupted_valid_files(pos in 0usize..PHASE2.len(), byte in 0x20u8..0x7f) {
        let mut bytes = PHASE2.as_bytes().to_vec();
        bytes[pos] = byte;
        let text = String::from_utf8_lossy(&bytes);
        let _ = analyze(&text, &expected(), &ValidateOptions::default());
    }

    #[test]
    fn secrets_stay_out_of_findings(pos in 0usize..AESCBC.len(), byte in 0x20u8..0x7f) {
        let mut bytes = AESCBC.as_bytes().to_vec();
        bytes[pos] = byte;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for f in analyze(&text, &expected(), &ValidateOptions::default()) {
            prop_assert!(!f.to_string().contains(SECRET), "{f}");
        }
    }
}
