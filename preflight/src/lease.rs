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
use bao_kms_core::checks::artifact::Model;
use bao_kms_core::checks::catalogue::REGISTRY_ROLLBACK;

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
    pub const DEPLOYMENT_MODEL: &str = "preflight.kms.openbao.org/deployment-model";
    pub const BINARY: &str = "preflight.kms.openbao.org/binary";
    pub const BINARY_DIGEST: &str = "preflight.kms.openbao.org/binary-digest";
    pub const CONTENT_DIGEST: &str = "preflight.kms.openbao.org/content-digest";
    pub const PENDING_VERSION: &str = "preflight.kms.openbao.org/pending-version";
    pub const HOLD_AT_VERSION: &str = "preflight.kms.openbao.org/hold-at-version";
    pub const PROVIDER_REACHABLE: &str = "preflight.kms.openbao.org/provider-reachable";
    pub const HIGHEST_GENERATION: &str = "preflight.kms.openbao.org/highest-generation";
    pub const HIGHEST_ACTIVE_VERSION: &str = "preflight.kms.openbao.org/highest-active-version";
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
    /// The registry generation: per-node history (how many writes this
    /// node's registry saw), never compared across nodes.
    pub generation: u64,
    pub rotation_state: String,
    pub active_version: u64,
    /// The registry content digest (`rcd1.`...) from `/status`; empty when
    /// the provider did not answer or is older than the field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_digest: String,
    /// The newest pending (observed, not promoted) Transit version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_version: Option<u64>,
    /// The provider's promotion hold (`rotation.holdAtVersion`), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_at_version: Option<u64>,
    /// False when the local provider's `/status` did not answer: the key
    /// fields are then empty, not zero values to compare.
    #[serde(default = "yes")]
    pub provider_reachable: bool,
    /// The highest generation and active Transit version this node ever
    /// reported (carried from Lease to Lease); a lower current value is a
    /// rollback.
    #[serde(default)]
    pub highest_generation: u64,
    #[serde(default)]
    pub highest_active_version: u64,
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
    /// `static-pod` (the agent read the manifest), `systemd` (it read the
    /// unit), or empty (neither).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment_model: String,
    /// systemd: the program the unit's `ExecStart=` runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binary: String,
    /// systemd: `sha256:<hex>` of that file; empty when it could not be read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binary_digest: String,
    pub preflight_version: String,
    pub checks: Vec<CheckResult>,
    /// Publication time (RFC 3339).
    pub timestamp: Timestamp,
}

fn yes() -> bool {
    true
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

/// What the node's previous report carries into this one: the key_id hash
/// before the last key change (`previous-key-id-hash`), the highest
/// generation and active Transit version ever reported, and the
/// [`REGISTRY_ROLLBACK`] finding when the current values are below them.
/// An unreachable provider reports nothing to compare: the marks and any
/// earlier finding are kept as they were.
pub fn carry_forward(summary: &NodeSummary, previous: Option<&NodeSummary>) -> NodeSummary {
    let mut s = summary.clone();
    s.checks.retain(|c| c.id != REGISTRY_ROLLBACK.id);
    let (mut high_gen, mut high_ver) = (0, 0);
    if let Some(prev) = previous {
        // An empty hash (provider unreachable or unhealthy) is no key change.
        let changed = !prev.key_id_hash.is_empty() && !s.key_id_hash.is_empty() && prev.key_id_hash != s.key_id_hash;
        s.previous_key_id_hash = if changed {
            prev.key_id_hash.clone()
        } else {
            prev.previous_key_id_hash.clone()
        };
        // Reports from before the marks existed carry their own values.
        high_gen = prev.highest_generation.max(prev.generation);
        high_ver = prev.highest_active_version.max(prev.active_version);
    }
    let check = if !s.provider_reachable {
        match previous.and_then(|p| p.checks.iter().find(|c| c.id == REGISTRY_ROLLBACK.id)) {
            Some(earlier) if earlier.status == CheckStatus::Fail => earlier.clone(),
            _ => CheckResult {
                id: REGISTRY_ROLLBACK.id.to_owned(),
                status: CheckStatus::Skip,
                message: Some("the provider is unreachable".into()),
            },
        }
    } else {
        let mut behind = Vec::new();
        if s.generation < high_gen {
            behind.push(format!(
                "registry generation {} is below {high_gen} reported earlier",
                s.generation
            ));
        }
        if s.active_version < high_ver {
            behind.push(format!(
                "active Transit version {} is below {high_ver} reported earlier",
                s.active_version
            ));
        }
        if behind.is_empty() {
            CheckResult {
                id: REGISTRY_ROLLBACK.id.to_owned(),
                status: CheckStatus::Pass,
                message: None,
            }
        } else {
            CheckResult {
                id: REGISTRY_ROLLBACK.id.to_owned(),
                status: CheckStatus::Fail,
                message: Some(format!(
                    "{} on this node: its registry was restored from an older state or replaced",
                    behind.join("; ")
                )),
            }
        }
    };
    if s.provider_reachable {
        high_gen = high_gen.max(s.generation);
        high_ver = high_ver.max(s.active_version);
    }
    s.highest_generation = high_gen;
    s.highest_active_version = high_ver;
    s.checks.push(check);
    s
}

/// The Lease carrying `summary` as given (see [`carry_forward`] for what
/// the previous report adds). `previous` is the Lease currently stored;
/// its `resourceVersion` is kept for an optimistic update.
pub fn to_lease(summary: &NodeSummary, namespace: &str, lease_duration: Duration, previous: Option<&Lease>) -> Lease {
    let s = summary.clone();
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
    if !s.content_digest.is_empty() {
        put(key::CONTENT_DIGEST, s.content_digest.clone());
    }
    if let Some(v) = s.pending_version {
        put(key::PENDING_VERSION, v.to_string());
    }
    if let Some(v) = s.hold_at_version {
        put(key::HOLD_AT_VERSION, v.to_string());
    }
    put(key::PROVIDER_REACHABLE, s.provider_reachable.to_string());
    put(key::HIGHEST_GENERATION, s.highest_generation.to_string());
    put(key::HIGHEST_ACTIVE_VERSION, s.highest_active_version.to_string());
    put(key::PROVIDER_VERSION, s.provider_version.clone());
    put(key::PROVIDER_NAME, s.provider_name.clone());
    put(key::HEALTHY, s.healthy.to_string());
    if !s.image.is_empty() {
        put(key::IMAGE, s.image.clone());
    }
    if !s.image_digest.is_empty() {
        put(key::IMAGE_DIGEST, s.image_digest.clone());
    }
    for (k, v) in [
        (key::DEPLOYMENT_MODEL, &s.deployment_model),
        (key::BINARY, &s.binary),
        (key::BINARY_DIGEST, &s.binary_digest),
    ] {
        if !v.is_empty() {
            put(k, v.clone());
        }
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
    let opt_num = |k: &'static str| -> Result<u64, LeaseError> {
        match a.get(k) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|e: std::num::ParseIntError| LeaseError::Invalid(k, e.to_string())),
        }
    };
    let opt_some = |k: &'static str| -> Result<Option<u64>, LeaseError> {
        a.get(k)
            .map(|v| {
                v.parse()
                    .map_err(|e: std::num::ParseIntError| LeaseError::Invalid(k, e.to_string()))
            })
            .transpose()
    };
    let provider_version = get(key::PROVIDER_VERSION)?;
    let provider_reachable = match a.get(key::PROVIDER_REACHABLE) {
        Some(v) => v == "true",
        // Agents before the annotation: an unanswered /status left the version empty.
        None => !provider_version.is_empty(),
    };
    Ok(NodeSummary {
        node: get(key::NODE)?,
        key_id_hash: get(key::KEY_ID_HASH)?,
        previous_key_id_hash: opt(key::PREVIOUS_KEY_ID_HASH),
        generation: num(key::GENERATION)?,
        rotation_state: get(key::ROTATION_STATE)?,
        active_version: num(key::ACTIVE_VERSION)?,
        content_digest: opt(key::CONTENT_DIGEST),
        pending_version: opt_some(key::PENDING_VERSION)?,
        hold_at_version: opt_some(key::HOLD_AT_VERSION)?,
        provider_reachable,
        highest_generation: opt_num(key::HIGHEST_GENERATION)?,
        highest_active_version: opt_num(key::HIGHEST_ACTIVE_VERSION)?,
        provider_version,
        provider_name: opt(key::PROVIDER_NAME),
        healthy: get(key::HEALTHY)? == "true",
        // Agents before the model annotation read only static pod manifests.
        deployment_model: match a.get(key::DEPLOYMENT_MODEL) {
            Some(m) => m.clone(),
            None if a.contains_key(key::IMAGE) => Model::StaticPod.as_str().to_owned(),
            None => String::new(),
        },
        binary: opt(key::BINARY),
        binary_digest: opt(key::BINARY_DIGEST),
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
            content_digest: "rcd1.c".into(),
            pending_version: None,
            hold_at_version: None,
            provider_reachable: true,
            highest_generation: 3,
            highest_active_version: 2,
            provider_version: "0.1.0".into(),
            provider_name: "p".into(),
            healthy: true,
            image: "r/bao-kms-provider@sha256:00".into(),
            image_digest: "sha256:00".into(),
            deployment_model: "static-pod".into(),
            binary: String::new(),
            binary_digest: String::new(),
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
        let mut systemd = summary("A");
        (systemd.image, systemd.image_digest) = (String::new(), String::new());
        systemd.deployment_model = "systemd".into();
        systemd.binary = "/usr/bin/bao-kms-provider".into();
        systemd.binary_digest = "sha256:11".into();
        let lease = to_lease(&systemd, "kube-system", Duration::from_secs(90), None);
        assert_eq!(
            lease.metadata.annotations.as_ref().unwrap()[key::BINARY_DIGEST],
            "sha256:11"
        );
        assert_eq!(from_lease(&lease).unwrap(), systemd);

        let mut held = summary("A");
        (held.pending_version, held.hold_at_version) = (Some(3), Some(2));
        let lease = to_lease(&held, "kube-system", Duration::from_secs(90), None);
        let a = lease.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            (a[key::PENDING_VERSION].as_str(), a[key::HOLD_AT_VERSION].as_str()),
            ("3", "2")
        );
        assert_eq!(from_lease(&lease).unwrap(), held);

        let s = summary("A");
        let lease = to_lease(&s, "kube-system", Duration::from_secs(90), None);
        assert!(
            !lease
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(key::HOLD_AT_VERSION)
        );
        assert_eq!(lease.metadata.name.as_deref(), Some("bao-kms-preflight-cp-1"));
        let a = lease.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[key::TIMESTAMP], "2027-01-15T08:00:00Z");
        assert_eq!(a[key::CHECKS], r#"[{"id":"config.file","status":"pass"}]"#);
        assert_eq!(from_lease(&lease).unwrap(), s);

        let mut stored = lease.clone();
        stored.metadata.resource_version = Some("7".into());
        let same = to_lease(&s, "kube-system", Duration::from_secs(90), Some(&stored));
        assert_eq!(same.metadata.resource_version.as_deref(), Some("7"));

        // Same key: no previous hash. New key: the old one is remembered and
        // carried forward on later reports.
        let first = from_lease(&lease).unwrap();
        assert_eq!(carry_forward(&s, Some(&first)).previous_key_id_hash, "");
        let moved = carry_forward(&summary("B"), Some(&first));
        assert_eq!(moved.previous_key_id_hash, "A");
        let again = carry_forward(&summary("B"), Some(&moved));
        assert_eq!(again.previous_key_id_hash, "A");
    }

    fn rollback_of(s: &NodeSummary) -> &CheckResult {
        s.checks.iter().find(|c| c.id == REGISTRY_ROLLBACK.id).unwrap()
    }

    /// A node's generation or active version going backwards is a rollback
    /// finding that stays until the Lease is deleted; going forward, or an
    /// unreachable provider, is not.
    #[test]
    fn rollback_is_found_and_kept() {
        let mut s = summary("A");
        s.generation = 6;
        s.active_version = 3;
        let first = carry_forward(&s, None);
        assert_eq!(rollback_of(&first).status, CheckStatus::Pass);
        assert_eq!((first.highest_generation, first.highest_active_version), (6, 3));

        let mut restored = summary("A");
        restored.generation = 4;
        restored.active_version = 3;
        let r = carry_forward(&restored, Some(&first));
        assert_eq!(rollback_of(&r).status, CheckStatus::Fail);
        assert_eq!(
            rollback_of(&r).message.as_deref(),
            Some(
                "registry generation 4 is below 6 reported earlier on this node: its registry was restored from an older state or replaced"
            )
        );
        assert_eq!(r.highest_generation, 6);
        // Round trip through the Lease, then another round: still a finding.
        let stored = from_lease(&to_lease(&r, "ns", Duration::from_secs(90), None)).unwrap();
        assert_eq!(stored.highest_generation, 6);
        let r2 = carry_forward(&restored, Some(&stored));
        assert_eq!(rollback_of(&r2).status, CheckStatus::Fail);

        // The active version alone going backwards is one too.
        let mut older = summary("A");
        older.generation = 9;
        older.active_version = 2;
        let r3 = carry_forward(&older, Some(&first));
        assert!(
            rollback_of(&r3)
                .message
                .as_deref()
                .unwrap()
                .starts_with("active Transit version 2 is below 3")
        );

        // Unreachable: nothing compared, marks and finding kept.
        let mut down = summary("");
        down.provider_reachable = false;
        down.generation = 0;
        down.active_version = 0;
        let d = carry_forward(&down, Some(&first));
        assert_eq!(rollback_of(&d).status, CheckStatus::Skip);
        assert_eq!((d.highest_generation, d.highest_active_version), (6, 3));
        let d2 = carry_forward(&down, Some(&r));
        assert_eq!(rollback_of(&d2).status, CheckStatus::Fail);

        // Forward: the marks follow.
        let mut ahead = summary("B");
        ahead.generation = 11;
        ahead.active_version = 4;
        let f = carry_forward(&ahead, Some(&first));
        assert_eq!(rollback_of(&f).status, CheckStatus::Pass);
        assert_eq!((f.highest_generation, f.highest_active_version), (11, 4));
    }

    /// A Lease written by an agent before the content digest, reachability
    /// and marks existed still parses.
    #[test]
    fn older_leases_parse() {
        let mut lease = to_lease(&summary("A"), "ns", Duration::from_secs(90), None);
        let a = lease.metadata.annotations.as_mut().unwrap();
        for k in [
            key::CONTENT_DIGEST,
            key::PROVIDER_REACHABLE,
            key::HIGHEST_GENERATION,
            key::HIGHEST_ACTIVE_VERSION,
            key::DEPLOYMENT_MODEL,
        ] {
            a.remove(k);
        }
        let s = from_lease(&lease).unwrap();
        assert!(s.provider_reachable);
        assert_eq!((s.content_digest.as_str(), s.highest_generation), ("", 0));
        // A report with an image is a static pod's.
        assert_eq!(s.deployment_model, "static-pod");
        let a = lease.metadata.annotations.as_mut().unwrap();
        a.insert(key::PROVIDER_VERSION.into(), String::new());
        assert!(!from_lease(&lease).unwrap().provider_reachable);
    }

    proptest::proptest! {
        /// Lease annotations come from the API server: any values give a
        /// report or an error, never a panic.
        #[test]
        fn random_annotations_never_panic(values in proptest::collection::vec(".{0,40}", 21), drop in 0usize..21) {
            let keys = [
                key::NODE, key::KEY_ID_HASH, key::PREVIOUS_KEY_ID_HASH, key::GENERATION, key::ROTATION_STATE,
                key::ACTIVE_VERSION, key::PROVIDER_VERSION, key::PROVIDER_NAME, key::HEALTHY, key::IMAGE,
                key::IMAGE_DIGEST, key::PREFLIGHT_VERSION, key::CHECKS, key::TIMESTAMP, key::CONTENT_DIGEST,
                key::PROVIDER_REACHABLE, key::HIGHEST_GENERATION, key::HIGHEST_ACTIVE_VERSION,
                key::DEPLOYMENT_MODEL, key::BINARY, key::BINARY_DIGEST,
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
