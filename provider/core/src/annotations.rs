//! KMS annotations returned by Encrypt and required on Decrypt
//! (`*.kms.openbao.org`, docs/key-id-and-aad.md). They are stored in plaintext
//! with every object in etcd, so they carry only hashes and versions.

use std::collections::{BTreeMap, HashMap};

use crate::aad::{AAD_VERSION, PROVIDER_KIND};
use crate::errors::ErrorClass;
use crate::hash::{h, is_hash};
use crate::identity::IdentityScope;
use crate::limits::is_fqdn;
use crate::snapshot::KeySnapshot;

pub const PROVIDER: &str = "provider.kms.openbao.org";
pub const KEY_ID_HASH: &str = "key-id-hash.kms.openbao.org";
pub const TRANSIT_KEY_VERSION: &str = "transit-key-version.kms.openbao.org";
pub const TRANSIT_MOUNT_HASH: &str = "transit-mount-hash.kms.openbao.org";
pub const TRANSIT_KEY_HASH: &str = "transit-key-hash.kms.openbao.org";
pub const OPENBAO_NAMESPACE_HASH: &str = "openbao-namespace-hash.kms.openbao.org";
pub const PLUGIN_VERSION: &str = "plugin-version.kms.openbao.org";
pub const AAD_VERSION_KEY: &str = "aad-version.kms.openbao.org";

/// Annotations for a ciphertext produced under `snapshot`.
pub fn build(scope: &IdentityScope, snapshot: &KeySnapshot, plugin_version: &str) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        map.insert(k.to_owned(), v.into_bytes());
    };
    put(PROVIDER, PROVIDER_KIND.to_owned());
    put(KEY_ID_HASH, snapshot.key_id.hash());
    put(TRANSIT_KEY_VERSION, snapshot.version.to_string());
    put(TRANSIT_MOUNT_HASH, h(&scope.transit_mount_id));
    put(TRANSIT_KEY_HASH, h(&scope.key_lineage_id));
    if !scope.openbao_namespace.is_empty() {
        put(OPENBAO_NAMESPACE_HASH, h(&scope.openbao_namespace));
    }
    put(PLUGIN_VERSION, plugin_version.to_owned());
    put(AAD_VERSION_KEY, AAD_VERSION.to_owned());
    map
}

/// Why Decrypt refused the annotations; the `reason` label of
/// `openbao_kms_aad_validation_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("annotation {0} is missing")]
    Missing(&'static str),
    #[error("annotation {key} is invalid: {why}")]
    Invalid { key: String, why: &'static str },
    #[error("annotation {0} does not match the key snapshot of key_id")]
    Mismatch(&'static str),
}

impl AnnotationError {
    /// `aad_missing`, `annotation_invalid` or `aad_mismatch`.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Missing(_) => ErrorClass::AadMissing,
            Self::Invalid { .. } => ErrorClass::AnnotationInvalid,
            Self::Mismatch(_) => ErrorClass::AadMismatch,
        }
    }
}

fn text<'a>(map: &'a HashMap<String, Vec<u8>>, key: &'static str) -> Result<&'a str, AnnotationError> {
    let raw = map.get(key).ok_or(AnnotationError::Missing(key))?;
    let value = std::str::from_utf8(raw).map_err(|_| AnnotationError::Invalid {
        key: key.to_owned(),
        why: "value is not UTF-8",
    })?;
    if value.is_empty() {
        return Err(AnnotationError::Missing(key));
    }
    Ok(value)
}

fn expect_hash(map: &HashMap<String, Vec<u8>>, key: &'static str, want: &str) -> Result<(), AnnotationError> {
    let got = text(map, key)?;
    if !is_hash(got) {
        return Err(AnnotationError::Invalid {
            key: key.to_owned(),
            why: "not a 43-character SHA-256 hash",
        });
    }
    if got != want {
        return Err(AnnotationError::Mismatch(key));
    }
    Ok(())
}

/// Validates Decrypt annotations against the snapshot that key_id selected.
/// Never calls out; the AAD is then rebuilt from the snapshot itself.
pub fn verify(
    map: &HashMap<String, Vec<u8>>,
    scope: &IdentityScope,
    snapshot: &KeySnapshot,
) -> Result<(), AnnotationError> {
    for key in map.keys() {
        if !is_fqdn(key) {
            return Err(AnnotationError::Invalid {
                key: key.clone(),
                why: "key is not a fully qualified domain name",
            });
        }
    }
    if text(map, PROVIDER)? != PROVIDER_KIND {
        return Err(AnnotationError::Invalid {
            key: PROVIDER.to_owned(),
            why: "unsupported provider",
        });
    }
    if text(map, AAD_VERSION_KEY)? != AAD_VERSION {
        return Err(AnnotationError::Invalid {
            key: AAD_VERSION_KEY.to_owned(),
            why: "unsupported AAD version",
        });
    }
    text(map, PLUGIN_VERSION)?;
    let version = text(map, TRANSIT_KEY_VERSION)?;
    let parsed: u64 = version
        .parse()
        .ok()
        .filter(|v| *v > 0 && version.bytes().all(|b| b.is_ascii_digit()) && !version.starts_with('0'))
        .ok_or_else(|| AnnotationError::Invalid {
            key: TRANSIT_KEY_VERSION.to_owned(),
            why: "not a positive integer",
        })?;
    if parsed != snapshot.version {
        return Err(AnnotationError::Mismatch(TRANSIT_KEY_VERSION));
    }
    expect_hash(map, KEY_ID_HASH, &snapshot.key_id.hash())?;
    expect_hash(map, TRANSIT_MOUNT_HASH, &h(&scope.transit_mount_id))?;
    expect_hash(map, TRANSIT_KEY_HASH, &h(&scope.key_lineage_id))?;
    if scope.openbao_namespace.is_empty() {
        if map.contains_key(OPENBAO_NAMESPACE_HASH) {
            return Err(AnnotationError::Mismatch(OPENBAO_NAMESPACE_HASH));
        }
    } else {
        expect_hash(map, OPENBAO_NAMESPACE_HASH, &h(&scope.openbao_namespace))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::sample_scope;

    fn golden() -> serde_json::Value {
        serde_json::from_str(include_str!("../../../tests/fixtures/golden/key-aad-v1.json")).unwrap()
    }

    fn to_request(map: &BTreeMap<String, Vec<u8>>) -> HashMap<String, Vec<u8>> {
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn published_golden_annotations() {
        let g = golden();
        let scope = sample_scope();
        let snap = KeySnapshot::new(&scope, 3, 1_715_803_200).unwrap();
        assert_eq!(snap.key_id.as_str(), g["expectedKeyId"].as_str().unwrap());
        let built = build(&scope, &snap, g["pluginVersion"].as_str().unwrap());
        let want: BTreeMap<String, Vec<u8>> = g["expectedAnnotations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
            .collect();
        assert_eq!(built, want);
        verify(&to_request(&built), &scope, &snap).unwrap();
    }

    #[test]
    fn tampering_is_classified() {
        let scope = sample_scope();
        let snap = KeySnapshot::new(&scope, 3, 1_715_803_200).unwrap();
        let good = to_request(&build(&scope, &snap, "v0.1.0"));

        let mut m = good.clone();
        m.remove(KEY_ID_HASH);
        assert_eq!(verify(&m, &scope, &snap).unwrap_err().class(), ErrorClass::AadMissing);

        let mut m = good.clone();
        m.insert(TRANSIT_KEY_VERSION.into(), b"4".to_vec());
        assert_eq!(verify(&m, &scope, &snap).unwrap_err().class(), ErrorClass::AadMismatch);

        let mut m = good.clone();
        m.insert(TRANSIT_MOUNT_HASH.into(), h("other").into_bytes());
        assert_eq!(verify(&m, &scope, &snap).unwrap_err().class(), ErrorClass::AadMismatch);

        let mut m = good.clone();
        m.insert(KEY_ID_HASH.into(), b"not-a-hash".to_vec());
        assert_eq!(
            verify(&m, &scope, &snap).unwrap_err().class(),
            ErrorClass::AnnotationInvalid
        );

        let mut m = good.clone();
        m.insert("Bad_Key".into(), b"x".to_vec());
        assert_eq!(
            verify(&m, &scope, &snap).unwrap_err().class(),
            ErrorClass::AnnotationInvalid
        );

        let mut m = good.clone();
        m.insert(TRANSIT_KEY_VERSION.into(), b"03".to_vec());
        assert_eq!(
            verify(&m, &scope, &snap).unwrap_err().class(),
            ErrorClass::AnnotationInvalid
        );

        let mut m = good.clone();
        m.insert(AAD_VERSION_KEY.into(), b"v2".to_vec());
        assert_eq!(
            verify(&m, &scope, &snap).unwrap_err().class(),
            ErrorClass::AnnotationInvalid
        );

        let mut m = good;
        m.insert(OPENBAO_NAMESPACE_HASH.into(), h("ns").into_bytes());
        assert_eq!(verify(&m, &scope, &snap).unwrap_err().class(), ErrorClass::AadMismatch);
    }
}
