//! The node report the agent publishes: one `coordination.k8s.io/v1` Lease
//! per control-plane node, named `bao-kms-preflight-<node>`, in the agent's
//! namespace. The report travels in annotations (prefix
//! [`ANNOTATION_PREFIX`]); `spec.renewTime` is the publication time and
//! `spec.holderIdentity` the node. Pure conversions in both directions.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::report::{Check, CheckStatus};

/// Prefix of every annotation and label the agent writes.
pub const ANNOTATION_PREFIX: &str = "preflight.kms.openbao.org/";
/// Name prefix of the per-node Lease.
pub const LEASE_PREFIX: &str = "bao-kms-preflight-";
/// `app.kubernetes.io/name` label of every Lease the agent writes.
pub const APP_NAME: &str = "bao-kms-preflight";

pub mod key {
    pub const NODE: &str = "preflight.kms.openbao.org/node";
    pub const KEY_ID_HASH: &str = "preflight.kms.openbao.org/key-id-hash";
    pub const PREVIOUS_KEY_ID_HASH: &str = "preflight.kms.openbao.org/previous-key-id-hash";
    pub const GENERATION: &str = "preflight.kms.openbao.org/generation";
    pub const ROTATION_STATE: &str = "preflight.kms.openbao.org/rotation-state";
    pub const ACTIVE_VERSION: &str = "preflight.kms.openbao.org/active-version";
    pub const PROVIDER_VERSION: &str = "preflight.kms.openbao.org/provider-version";
    pub const PROVIDER_NAME: &str = "preflight.kms.openbao.org/provider-name";
    pub const HEALTHY: &str = "preflight.kms.openbao.org/healthy";
    pub const IMAGE: &str = "preflight.kms.openbao.org/image";
    pub const IMAGE_DIGEST: &str = "preflight.kms.openbao.org/image-digest";
    pub const PREFLIGHT_VERSION: &str = "preflight.kms.openbao.org/preflight-version";
    pub const CHECKS: &str = "preflight.kms.openbao.org/checks";
    pub const TIMESTAMP: &str = "preflight.kms.openbao.org/timestamp";
}

/// One check as carried in the report (no title: the id names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub status: CheckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl From<&Check> for CheckResult {
    fn from(c: &Check) -> Self {
        Self {
            id: c.id.clone(),
            status: c.status,
            message: c.message.clone(),
        }
    }
}

/// What one node reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub node: String,
    /// `H(key_id)` of the active key; empty when the provider did not answer.
    pub key_id_hash: String,
    /// The hash this node reported before its last key_id change, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous_key_id_hash: String,
    pub generation: u64,
    pub rotation_state: String,
    pub active_version: u64,
    /// The provider binary's version (from `/status`).
    pub provider_version: String,
    pub provider_name: String,
    pub healthy: bool,
    /// The provider image from the static pod manifest, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// `sha256:<hex>` of that image when pinned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_digest: String,
    pub preflight_version: String,
    pub checks: Vec<CheckResult>,
    /// Publication time (RFC 3339).
    pub timestamp: Timestamp,
}

impl NodeSummary {
    /// Ids of the checks that failed on the node.
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .map(|c| c.id.as_str())
            .collect()
    }
}

/// `bao-kms-preflight-<node>`.
pub fn lease_name(node: &str) -> String {
    format!("{LEASE_PREFIX}{node}")
}

/// Seconds since the Unix epoch as a timestamp (falls back to the epoch
/// for out-of-range values, which no clock produces).
pub fn timestamp_from_unix(secs: i64, nanos: u32) -> Timestamp {
    Timestamp::new(secs, nanos as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The Lease carrying `summary`. `previous` is the Lease currently stored
/// (its `resourceVersion` is kept for an optimistic update, and its key_id
/// hash becomes `previous-key-id-hash` when the key changed).
pub fn to_lease(summary: &NodeSummary, namespace: &str, lease_duration: Duration, previous: Option<&Lease>) -> Lease {
    let mut s = summary.clone();
    if let Some(prev) = previous.and_then(|l| from_lease(l).ok()) {
        s.previous_key_id_hash = if !prev.key_id_hash.is_empty() && prev.key_id_hash != s.key_id_hash {
            prev.key_id_hash
        } else {
            prev.previous_key_id_hash
        };
    }
    // serde_json fails only on a map key that is neither a string nor a number, or
    // on a Serialize impl that errs; the check list is derived structs of strings
    // and enums.
    let checks = serde_json::to_string(&s.checks).expect("the check list serialises to JSON");
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        a.insert(k.to_owned(), v);
    };
    put(key::NODE, s.node.clone());
    put(key::KEY_ID_HASH, s.key_id_hash.clone());
    if !s.previous_key_id_hash.is_empty() {
        put(key::PREVIOUS_KEY_ID_HASH, s.previous_key_id_hash.clone());
    }
    put(key::GENERATION, s.generation.to_string());
    put(key::ROTATION_STATE, s.rotation_state.clone());
    put(key::ACTIVE_VERSION, s.active_version.to_string());
    put(key::PROVIDER_VERSION, s.provider_version.clone());
    put(key::PROVIDER_NAME, s.provider_name.clone());
    put(key::HEALTHY, s.healthy.to_string());
    if !s.image.is_empty() {
        put(key::IMAGE, s.image.clone());
    }
    if !s.image_digest.is_empty() {
        put(key::IMAGE_DIGEST, s.image_digest.clone());
    }
    put(key::PREFLIGHT_VERSION, s.preflight_version.clone());
    put(key::CHECKS, checks);
    put(key::TIMESTAMP, s.timestamp.to_string());
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        ("app.kubernetes.io/component".to_owned(), "node-report".to_owned()),
        (key::NODE.to_owned(), s.node.clone()),
    ]);
    Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(&s.node)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(a),
            resource_version: previous.and_then(|l| l.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(format!("{APP_NAME}/{}", s.node)),
            lease_duration_seconds: Some(i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX)),
            renew_time: Some(MicroTime(s.timestamp)),
            ..LeaseSpec::default()
        }),
    }
}

/// Why a Lease is not a node report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("annotation {0} is missing")]
    Missing(&'static str),
    #[error("annotation {0} is not valid: {1}")]
    Invalid(&'static str, String),
}

/// Reads a node report back from a Lease.
pub fn from_lease(lease: &Lease) -> Result<NodeSummary, LeaseError> {
    let empty = BTreeMap::new();
    let a = lease.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |k: &'static str| a.get(k).cloned().ok_or(LeaseError::Missing(k));
    let opt = |k: &'static str| a.get(k).cloned().unwrap_or_default();
    let num = |k: &'static str| -> Result<u64, LeaseError> {
        get(k)?
            .parse()
            .map_err(|e: std::num::ParseIntError| LeaseError::Invalid(k, e.to_string()))
    };
    let checks: Vec<CheckResult> =
        serde_json::from_str(&get(key::CHECKS)?).map_err(|e| LeaseError::Invalid(key::CHECKS, e.to_string()))?;
    // The renew time is authoritative; the annotation is for humans.
    let timestamp = match lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()) {
        Some(t) => t.0,
        None => get(key::TIMESTAMP)?
            .parse()
            .map_err(|e: k8s_openapi::jiff::Error| LeaseError::Invalid(key::TIMESTAMP, e.to_string()))?,
    };
    Ok(NodeSummary {
        node: get(key::NODE)?,
        key_id_hash: get(key::KEY_ID_HASH)?,
        previous_key_id_hash: opt(key::PREVIOUS_KEY_ID_HASH),
        generation: num(key::GENERATION)?,
        rotation_state: get(key::ROTATION_STATE)?,
        active_version: num(key::ACTIVE_VERSION)?,
        provider_version: get(key::PROVIDER_VERSION)?,
        provider_name: opt(key::PROVIDER_NAME),
        healthy: get(key::HEALTHY)? == "true",
        image: opt(key::IMAGE),
        image_digest: opt(key::IMAGE_DIGEST),
        preflight_version: opt(key::PREFLIGHT_VERSION),
        checks,
        timestamp,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub fn summary(hash: &str) -> NodeSummary {
        NodeSummary {
            node: "cp-1".into(),
            key_id_hash: hash.into(),
            previous_key_id_hash: String::new(),
            generation: 3,
            rotation_state: "active".into(),
            active_version: 2,
            provider_version: "0.1.0".into(),
            provider_name: "p".into(),
            healthy: true,
            image: "r/bao-kms-provider@sha256:00".into(),
            image_digest: "sha256:00".into(),
            preflight_version: "0.1.0".into(),
            checks: vec![CheckResult {
                id: "config.file".into(),
                status: CheckStatus::Pass,
                message: None,
            }],
            timestamp: timestamp_from_unix(1_800_000_000, 0),
        }
    }

    #[test]
    fn round_trip_and_previous_hash() {
        let s = summary("A");
        let lease = to_lease(&s, "kube-system", Duration::from_secs(90), None);
        assert_eq!(lease.metadata.name.as_deref(), Some("bao-kms-preflight-cp-1"));
        let a = lease.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[key::TIMESTAMP], "2027-01-15T08:00:00Z");
        assert_eq!(a[key::CHECKS], r#"[{"id":"config.file","status":"pass"}]"#);
        assert_eq!(from_lease(&lease).unwrap(), s);

        // Same key: no previous hash. New key: the old one is remembered and
        // carried forward on later reports.
        let mut stored = lease.clone();
        stored.metadata.resource_version = Some("7".into());
        let same = to_lease(&s, "kube-system", Duration::from_secs(90), Some(&stored));
        assert_eq!(same.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(from_lease(&same).unwrap().previous_key_id_hash, "");
        let moved = to_lease(&summary("B"), "kube-system", Duration::from_secs(90), Some(&stored));
        assert_eq!(from_lease(&moved).unwrap().previous_key_id_hash, "A");
        let again = to_lease(&summary("B"), "kube-system", Duration::from_secs(90), Some(&moved));
        assert_eq!(from_lease(&again).unwrap().previous_key_id_hash, "A");
    }

    proptest::proptest! {
        /// Lease annotations come from the API server: any values give a
        /// report or an error, never a panic.
        #[test]
        fn random_annotations_never_panic(values in proptest::collection::vec(".{0,40}", 14), drop in 0usize..14) {
            let keys = [
                key::NODE, key::KEY_ID_HASH, key::PREVIOUS_KEY_ID_HASH, key::GENERATION, key::ROTATION_STATE,
                key::ACTIVE_VERSION, key::PROVIDER_VERSION, key::PROVIDER_NAME, key::HEALTHY, key::IMAGE,
                key::IMAGE_DIGEST, key::PREFLIGHT_VERSION, key::CHECKS, key::TIMESTAMP,
            ];
            let mut lease = to_lease(&summary("A"), "ns", Duration::from_secs(90), None);
            lease.spec = None;
            let a = lease.metadata.annotations.as_mut().unwrap();
            for (k, v) in keys.iter().zip(values) {
                a.insert((*k).to_owned(), v);
            }
            a.remove(keys[drop]);
            let _ = from_lease(&lease);
        }
    }

    #[test]
    fn broken_leases_are_errors() {
        let mut lease = to_lease(&summary("A"), "ns", Duration::from_secs(90), None);
        lease.metadata.annotations.as_mut().unwrap().remove(key::GENERATION);
        assert_eq!(from_lease(&lease).unwrap_err(), LeaseError::Missing(key::GENERATION));
        lease
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(key::GENERATION.into(), "x".into());
        assert!(matches!(
            from_lease(&lease).unwrap_err(),
            LeaseError::Invalid(key::GENERATION, _)
        ));
    }
}
