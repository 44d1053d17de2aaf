//! The identity scope: the operator-declared, identity-bearing labels that
//! every key_id and every AAD is bound to, and its fingerprint.
//!
//! Changing any of these values changes every key_id and AAD, so data written
//! before the change can no longer be decrypted. They are recorded at rollout
//! and never changed (docs/key-id-and-aad.md).

use serde::Serialize;

use crate::gojson;
use crate::hash::sha256_b64url;

/// Domain separator of the identity fingerprint.
pub const FINGERPRINT_DOMAIN: &str = "openbao-kubernetes-kms/config-identity/v1";
/// Prefix of the identity fingerprint.
pub const FINGERPRINT_PREFIX: &str = "cfg1.";

/// Identity-bearing configuration values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityScope {
    /// `transit.keyIdScope.providerName`; equals `kms.name` in the EncryptionConfiguration.
    pub provider_name: String,
    /// `transit.keyIdScope.clusterId`.
    pub cluster_id: String,
    /// `openbao.instanceId`.
    pub openbao_instance_id: String,
    /// `openbao.namespace`; empty when no namespace is configured.
    pub openbao_namespace: String,
    /// `transit.keyIdScope.transitMountId` (an operator label, not the mount accessor).
    pub transit_mount_id: String,
    /// `transit.keyIdScope.keyLineageId`.
    pub key_lineage_id: String,
    /// `transit.mountPath`.
    pub transit_mount_path: String,
    /// `transit.keyName`.
    pub transit_key_name: String,
}

#[derive(Serialize)]
struct FingerprintBody<'a> {
    domain: &'static str,
    provider_name: &'a str,
    cluster_id: &'a str,
    openbao_instance_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    openbao_namespace: &'a str,
    transit_mount_id: &'a str,
    key_lineage_id: &'a str,
    transit_mount_path: &'a str,
    transit_key_name: &'a str,
}

impl IdentityScope {
    /// `cfg1.` + H(Go JSON of the identity fields): a short, stable name of
    /// this identity, stored in the registry state and printed by `config`.
    pub fn fingerprint(&self) -> String {
        let body = FingerprintBody {
            domain: FINGERPRINT_DOMAIN,
            provider_name: &self.provider_name,
            cluster_id: &self.cluster_id,
            openbao_instance_id: &self.openbao_instance_id,
            openbao_namespace: &self.openbao_namespace,
            transit_mount_id: &self.transit_mount_id,
            key_lineage_id: &self.key_lineage_id,
            transit_mount_path: &self.transit_mount_path,
            transit_key_name: &self.transit_key_name,
        };
        // serde_json fails only on a map key that is neither a string nor a
        // number, or on a Serialize impl that errs; FingerprintBody is a derived
        // struct of strings.
        let bytes = gojson::to_compact(&body).expect("the fingerprint body, a struct of strings, serialises to JSON");
        format!("{FINGERPRINT_PREFIX}{}", sha256_b64url(&bytes))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The sample identity of the published golden vectors (docs/key-id-and-aad.md).
    pub fn sample_scope() -> IdentityScope {
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

    #[test]
    fn fingerprint_vector() {
        assert_eq!(
            sample_scope().fingerprint(),
            "cfg1.iWfCItBef04qDNcnEXME76HSYDWTVfhtoTlg2YQpdPg"
        );
    }

    #[test]
    fn every_field_changes_the_fingerprint() {
        let base = sample_scope().fingerprint();
        let edits: [fn(&mut IdentityScope); 8] = [
            |s| s.provider_name.push('x'),
            |s| s.cluster_id.push('x'),
            |s| s.openbao_instance_id.push('x'),
            |s| s.openbao_namespace.push('x'),
            |s| s.transit_mount_id.push('x'),
            |s| s.key_lineage_id.push('x'),
            |s| s.transit_mount_path.push('x'),
            |s| s.transit_key_name.push('x'),
        ];
        for edit in edits {
            let mut s = sample_scope();
            edit(&mut s);
            assert_ne!(s.fingerprint(), base);
        }
    }
}
