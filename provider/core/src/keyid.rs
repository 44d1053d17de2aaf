//! The Kubernetes key_id: `obk2.` + base64url-nopad(SHA-256(fields)), 48 characters.
//!
//! The hashed input is every field followed by one NUL byte, the last one
//! included: the domain separator, provider name, cluster ID, OpenBao instance
//! ID, the namespace (only when configured), Transit mount ID, key lineage ID,
//! the Transit version and its creation time in Unix seconds, both in decimal.
//! Binding the creation second means a key re-created under the same name
//! never produces a key_id that old data refers to.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;

use crate::identity::IdentityScope;

/// Domain separator hashed first.
pub const KEY_ID_DOMAIN: &str = "openbao-kubernetes-kms/key-id/v1";
/// Prefix of every key_id.
pub const KEY_ID_PREFIX: &str = "obk2.";
/// Length of every key_id.
pub const KEY_ID_LEN: usize = 48;

/// A well-formed key_id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

/// Why a key_id could not be derived or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyIdError {
    #[error("key_id must be {KEY_ID_LEN} characters starting with {KEY_ID_PREFIX:?} and encoding 32 bytes")]
    Malformed,
    #[error("identity field {0} is empty")]
    EmptyField(&'static str),
    #[error("Transit key version must be positive")]
    ZeroVersion,
    #[error("Transit version creation time must be after the Unix epoch")]
    CreationTimeNotPositive,
}

impl KeyId {
    /// Derives the key_id of Transit `version`, created at `created_unix`, in `scope`.
    pub fn derive(scope: &IdentityScope, version: u64, created_unix: i64) -> Result<Self, KeyIdError> {
        let required = [
            ("providerName", &scope.provider_name),
            ("clusterId", &scope.cluster_id),
            ("openbao.instanceId", &scope.openbao_instance_id),
            ("transitMountId", &scope.transit_mount_id),
            ("keyLineageId", &scope.key_lineage_id),
        ];
        if let Some((name, _)) = required.iter().find(|(_, v)| v.is_empty()) {
            return Err(KeyIdError::EmptyField(name));
        }
        if version == 0 {
            return Err(KeyIdError::ZeroVersion);
        }
        if created_unix <= 0 {
            return Err(KeyIdError::CreationTimeNotPositive);
        }
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update(bytes);
            hasher.update([0u8]);
        };
        field(KEY_ID_DOMAIN.as_bytes());
        field(scope.provider_name.as_bytes());
        field(scope.cluster_id.as_bytes());
        field(scope.openbao_instance_id.as_bytes());
        if !scope.openbao_namespace.is_empty() {
            field(scope.openbao_namespace.as_bytes());
        }
        field(scope.transit_mount_id.as_bytes());
        field(scope.key_lineage_id.as_bytes());
        field(version.to_string().as_bytes());
        field(created_unix.to_string().as_bytes());
        Ok(Self(format!(
            "{KEY_ID_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(hasher.finalize())
        )))
    }

    /// Parses a key_id received from kube-apiserver: exact length, prefix and
    /// strict base64url decoding to 32 bytes.
    pub fn parse(s: &str) -> Result<Self, KeyIdError> {
        let body = s.strip_prefix(KEY_ID_PREFIX).ok_or(KeyIdError::Malformed)?;
        if s.len() != KEY_ID_LEN {
            return Err(KeyIdError::Malformed);
        }
        match URL_SAFE_NO_PAD.decode(body.as_bytes()) {
            Ok(bytes) if bytes.len() == 32 => Ok(Self(s.to_owned())),
            _ => Err(KeyIdError::Malformed),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `H(key_id)`: the value operators compare across nodes.
    pub fn hash(&self) -> String {
        crate::hash::h(&self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::sample_scope;
    use proptest::prelude::*;

    #[test]
    fn published_vectors() {
        let scope = sample_scope();
        let cases = [
            (3, 1_715_803_200, "obk2.ig7zS9_yvQrdlcvWgJUhA5q_fQYupc5jRX5MzhAMQSk"),
            (1, 1_700_000_060, "obk2.SU0bKFnl1E6uEttJ3yhQy_uGBWZ6MUOJrNH4VJwtz0k"),
            (2, 1_700_000_120, "obk2.ImmpIXr3v4Fw4Im7457LAJiZdLOqK2dL6Nm3DEk-KEY"),
        ];
        for (version, created, want) in cases {
            assert_eq!(KeyId::derive(&scope, version, created).unwrap().as_str(), want);
        }
    }

    #[test]
    fn key_id_hash_vector() {
        let id = KeyId::parse("obk2.ig7zS9_yvQrdlcvWgJUhA5q_fQYupc5jRX5MzhAMQSk").unwrap();
        assert_eq!(id.hash(), "qCXYChOIPSWs7scJIduEDiNOYvEUJtFS1Rsbz1eAWY4");
    }

    #[test]
    fn namespace_takes_a_slot_only_when_set() {
        let mut scope = sample_scope();
        let without = KeyId::derive(&scope, 3, 1_715_803_200).unwrap();
        scope.openbao_namespace = "admin/workload-a".into();
        let with = KeyId::derive(&scope, 3, 1_715_803_200).unwrap();
        assert_ne!(without, with);
    }

    #[test]
    fn derive_rejects_incomplete_input() {
        let scope = sample_scope();
        assert_eq!(KeyId::derive(&scope, 0, 1), Err(KeyIdError::ZeroVersion));
        assert_eq!(KeyId::derive(&scope, 1, 0), Err(KeyIdError::CreationTimeNotPositive));
        let mut empty = sample_scope();
        empty.cluster_id.clear();
        assert_eq!(KeyId::derive(&empty, 1, 1), Err(KeyIdError::EmptyField("clusterId")));
    }

    #[test]
    fn parse_rejects_malformed() {
        let good = "obk2.ig7zS9_yvQrdlcvWgJUhA5q_fQYupc5jRX5MzhAMQSk";
        for bad in [
            "",
            "obk2.",
            &good[..47],
            &format!("{good}A"),
            &good.replace("obk2.", "obk1."),
            &good.replace('_', "/"),
            &format!("{}=", &good[..47]),
        ] {
            assert_eq!(KeyId::parse(bad), Err(KeyIdError::Malformed), "{bad:?}");
        }
        assert!(KeyId::parse(good).is_ok());
    }

    proptest! {
        #[test]
        fn derived_ids_parse_and_differ_by_version(v in 1u64..1_000_000, t in 1i64..4_000_000_000) {
            let scope = sample_scope();
            let a = KeyId::derive(&scope, v, t).unwrap();
            prop_assert_eq!(KeyId::parse(a.as_str()).unwrap(), a.clone());
            prop_assert_ne!(KeyId::derive(&scope, v + 1, t).unwrap(), a.clone());
            prop_assert_ne!(KeyId::derive(&scope, v, t + 1).unwrap(), a);
        }

        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = KeyId::parse(&s);
        }
    }
}
