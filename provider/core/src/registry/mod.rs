//! The key registry: a non-secret JSON state file with a hash chain, and a
//! checkpoint beside it that catches rollbacks (docs/registry.md).
//!
//! This module is the file format and its rules; reading, locking and
//! crash-safe writing live in the provider's `state` module.
//!
//! - [`StateFile`] is schema `keyregistry.openbao-kms/v1alpha2`, byte
//!   compatible with the published format (golden vectors in
//!   tests/fixtures/registry): `currentHash` is `krs1.` + H(Go compact
//!   JSON of the state without `currentHash`).
//! - [`Checkpoint`] holds the generation and hash of the last state written.
//! - [`checkpoint_status`] applies the rollback rules to what is on disk.
//! - [`content_digest`] names what a registry holds, not how it got there.
//! - [`StateFile::verify_metadata`] holds the registry against Transit's
//!   key metadata (`metadata`); [`retire`] plans retiring and restoring
//!   versions.

mod checkpoint;
mod content;
mod metadata;
mod pins;
pub mod repin;
pub mod retire;

pub use checkpoint::{CHECKPOINT_SCHEMA, Checkpoint, CheckpointStatus, checkpoint_status};
pub use content::{CONTENT_DIGEST_PREFIX, content_digest};
pub use pins::{IdentityPins, PINS_SCHEMA, PINS_SCHEMA_V1, PinsVerdict, RollbackAnchor, anchor_check, pins_verdict};

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::gojson;
use crate::hash::sha256_b64url;
use crate::identity::IdentityScope;
use crate::keyid::KeyId;
use crate::snapshot::KeySnapshot;

/// Current state schema.
pub const STATE_SCHEMA: &str = "keyregistry.openbao-kms/v1alpha2";
/// Legacy schema without the identity fingerprint; refused, never rewritten.
pub const LEGACY_STATE_SCHEMA: &str = "keyregistry.openbao-kms/v1alpha1";
/// Prefix of state hashes.
pub const STATE_HASH_PREFIX: &str = "krs1.";
/// The only AAD mode.
pub const AAD_REQUIRED: &str = "aad.required";

/// Lifecycle of one snapshot record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Encrypts and decrypts; exactly one.
    Active,
    /// Observed newer version, not promoted; decrypts, never encrypts.
    Pending,
    /// Former active (or skipped) version; decrypt only.
    Retired,
    /// Retired by an operator; never decrypts again.
    Removed,
    /// Defined by the schema; never persisted by this implementation.
    Rejected,
}

impl SnapshotState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Pending => "pending",
            Self::Retired => "retired",
            Self::Removed => "removed",
            Self::Rejected => "rejected",
        }
    }

    /// True when Decrypt may use the record.
    pub fn decrypts(self) -> bool {
        matches!(self, Self::Active | Self::Pending | Self::Retired)
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// One record of `snapshots` (field order is the wire order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotRecord {
    pub provider_name: String,
    pub cluster_id: String,
    pub openbao_instance_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub openbao_namespace: String,
    pub transit_mount_id: String,
    pub transit_key_lineage_id: String,
    pub transit_version: u64,
    pub transit_version_created_at_unix: i64,
    pub kubernetes_key_id: String,
    pub state: SnapshotState,
    pub aad_mode: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observed_at_unix: i64,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub stable_observation_count: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stable_at_unix: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub promoted_at_unix: i64,
}

impl SnapshotRecord {
    /// A record for `snapshot` in `scope`.
    pub fn new(scope: &IdentityScope, snapshot: &KeySnapshot, state: SnapshotState) -> Self {
        Self {
            provider_name: scope.provider_name.clone(),
            cluster_id: scope.cluster_id.clone(),
            openbao_instance_id: scope.openbao_instance_id.clone(),
            openbao_namespace: scope.openbao_namespace.clone(),
            transit_mount_id: scope.transit_mount_id.clone(),
            transit_key_lineage_id: scope.key_lineage_id.clone(),
            transit_version: snapshot.version,
            transit_version_created_at_unix: snapshot.created_unix,
            kubernetes_key_id: snapshot.key_id.as_str().to_owned(),
            state,
            aad_mode: AAD_REQUIRED.to_owned(),
            observed_at_unix: 0,
            stable_observation_count: 0,
            stable_at_unix: 0,
            promoted_at_unix: 0,
        }
    }

    fn scope(&self, fingerprint_scope: &IdentityScope) -> IdentityScope {
        IdentityScope {
            provider_name: self.provider_name.clone(),
            cluster_id: self.cluster_id.clone(),
            openbao_instance_id: self.openbao_instance_id.clone(),
            openbao_namespace: self.openbao_namespace.clone(),
            transit_mount_id: self.transit_mount_id.clone(),
            key_lineage_id: self.transit_key_lineage_id.clone(),
            transit_mount_path: fingerprint_scope.transit_mount_path.clone(),
            transit_key_name: fingerprint_scope.transit_key_name.clone(),
        }
    }

    /// The snapshot this record describes; `None` only for a record whose
    /// key_id is malformed, which `StateFile::decode` never lets through.
    pub fn snapshot(&self) -> Option<KeySnapshot> {
        Some(KeySnapshot {
            version: self.transit_version,
            created_unix: self.transit_version_created_at_unix,
            key_id: KeyId::parse(&self.kubernetes_key_id).ok()?,
        })
    }
}

/// The state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateFile {
    pub schema_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity_fingerprint: String,
    pub generation: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous_hash: String,
    pub current_hash: String,
    pub active_key_id: String,
    pub snapshots: Vec<SnapshotRecord>,
}

/// Why a state file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state file is not valid registry JSON: {0}")]
    Syntax(String),
    #[error(
        "state file uses legacy schema {LEGACY_STATE_SCHEMA}, which is not bound to an identity fingerprint; it is left untouched: restore a {STATE_SCHEMA} state and checkpoint pair"
    )]
    LegacySchema,
    #[error("state file schema {0:?} is not supported (expected {STATE_SCHEMA})")]
    UnknownSchema(String),
    #[error(
        "state file hash does not match its content (stored {stored}, computed {computed}): the file is corrupt or was edited"
    )]
    HashMismatch { stored: String, computed: String },
    #[error("state file is inconsistent: {0}")]
    Invalid(String),
    #[error("state file belongs to a different identity: {0}; identity-bearing configuration must never change")]
    IdentityMismatch(String),
}

impl StateFile {
    /// Generation 1 for a freshly bootstrapped, unrotated key.
    pub fn bootstrap(scope: &IdentityScope, active: &KeySnapshot, now_unix: i64) -> Self {
        let mut record = SnapshotRecord::new(scope, active, SnapshotState::Active);
        record.observed_at_unix = now_unix;
        record.promoted_at_unix = now_unix;
        let mut state = Self {
            schema_version: STATE_SCHEMA.to_owned(),
            identity_fingerprint: scope.fingerprint(),
            generation: 1,
            previous_hash: String::new(),
            current_hash: String::new(),
            active_key_id: active.key_id.as_str().to_owned(),
            snapshots: vec![record],
        };
        state.current_hash = state.computed_hash();
        state
    }

    /// The next generation: `edit` changes the snapshots and active key_id,
    /// the chain fields are filled in here.
    pub fn successor(&self, edit: impl FnOnce(&mut Self)) -> Result<Self, StateError> {
        let mut next = self.clone();
        edit(&mut next);
        next.generation = self.generation + 1;
        next.previous_hash = self.current_hash.clone();
        next.snapshots
            .sort_by_key(|r| (r.state != SnapshotState::Active, std::cmp::Reverse(r.transit_version)));
        next.current_hash = next.computed_hash();
        next.check_consistency()?;
        Ok(next)
    }

    /// `krs1.` + H(Go compact JSON without `currentHash`).
    pub fn computed_hash(&self) -> String {
        // serde_json fails only on a map key that is neither a string nor a
        // number, or on a Serialize impl that errs; the state is derived structs
        // of strings, integers, booleans and lists, and a `Value` always
        // serialises.
        let mut value = serde_json::to_value(self).expect("the registry state serialises to JSON");
        if let Some(obj) = value.as_object_mut() {
            obj.shift_remove("currentHash");
        }
        let bytes = gojson::to_compact(&value).expect("a JSON value serialises");
        format!("{STATE_HASH_PREFIX}{}", sha256_b64url(&bytes))
    }

    /// Bytes written to disk: 2-space indented JSON and a trailing newline.
    pub fn encode(&self) -> Vec<u8> {
        // As in `computed_hash`: derived structs of plain values always serialise.
        gojson::to_indented(self).expect("the registry state serialises to JSON")
    }

    /// Parses and checks a state file: schema, hash, and internal consistency.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let probe: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| StateError::Syntax(e.to_string()))?;
        match probe.get("schemaVersion").and_then(|v| v.as_str()) {
            Some(STATE_SCHEMA) => {}
            Some(LEGACY_STATE_SCHEMA) => return Err(StateError::LegacySchema),
            Some(other) => return Err(StateError::UnknownSchema(other.to_owned())),
            None => return Err(StateError::Syntax("schemaVersion is missing".into())),
        }
        let state: Self = serde_json::from_value(probe).map_err(|e| StateError::Syntax(e.to_string()))?;
        let computed = state.computed_hash();
        if computed != state.current_hash {
            return Err(StateError::HashMismatch {
                stored: state.current_hash.clone(),
                computed,
            });
        }
        state.check_consistency()?;
        Ok(state)
    }

    fn check_consistency(&self) -> Result<(), StateError> {
        let bad = |m: String| Err(StateError::Invalid(m));
        if self.generation == 0 {
            return bad("generation must be at least 1".into());
        }
        if self.generation == 1 && !self.previous_hash.is_empty() {
            return bad("generation 1 must not have a previousHash".into());
        }
        if self.generation > 1 && !self.previous_hash.starts_with(STATE_HASH_PREFIX) {
            return bad(format!("generation {} has no previousHash", self.generation));
        }
        if !self
            .identity_fingerprint
            .starts_with(crate::identity::FINGERPRINT_PREFIX)
            || self.identity_fingerprint.len() != 48
        {
            return bad("identityFingerprint is malformed".into());
        }
        if self.snapshots.is_empty() {
            return bad("snapshots is empty".into());
        }
        let actives: Vec<_> = self
            .snapshots
            .iter()
            .filter(|r| r.state == SnapshotState::Active)
            .collect();
        if actives.len() != 1 {
            return bad(format!("expected exactly one active snapshot, found {}", actives.len()));
        }
        if self.snapshots[0].state != SnapshotState::Active {
            return bad("the active snapshot must be listed first".into());
        }
        if actives[0].kubernetes_key_id != self.active_key_id {
            return bad("activeKeyId is not the active snapshot's key_id".into());
        }
        let mut seen_ids = HashSet::new();
        let mut seen_versions = HashSet::new();
        for r in &self.snapshots {
            let v = r.transit_version;
            if r.aad_mode != AAD_REQUIRED {
                return bad(format!("version {v}: aadMode {:?} is not {AAD_REQUIRED}", r.aad_mode));
            }
            if r.state == SnapshotState::Rejected {
                return bad(format!("version {v}: rejected snapshots are never persisted"));
            }
            let scope = IdentityScope {
                provider_name: r.provider_name.clone(),
                cluster_id: r.cluster_id.clone(),
                openbao_instance_id: r.openbao_instance_id.clone(),
                openbao_namespace: r.openbao_namespace.clone(),
                transit_mount_id: r.transit_mount_id.clone(),
                key_lineage_id: r.transit_key_lineage_id.clone(),
                transit_mount_path: String::new(),
                transit_key_name: String::new(),
            };
            let derived = KeyId::derive(&scope, v, r.transit_version_created_at_unix)
                .map_err(|e| StateError::Invalid(format!("version {v}: {e}")))?;
            if derived.as_str() != r.kubernetes_key_id {
                return bad(format!(
                    "version {v}: kubernetesKeyId does not match the key_id derived from the record"
                ));
            }
            if !seen_ids.insert(r.kubernetes_key_id.as_str()) || !seen_versions.insert(v) {
                return bad(format!("version {v} is listed more than once"));
            }
            if r.observed_at_unix < 0 || r.stable_at_unix < 0 || r.promoted_at_unix < 0 {
                return bad(format!("version {v}: negative timestamp"));
            }
            if r.stable_observation_count > 0 && r.observed_at_unix == 0 {
                return bad(format!("version {v}: stableObservationCount without observedAtUnix"));
            }
            if r.stable_at_unix > 0 && r.stable_observation_count == 0 {
                return bad(format!("version {v}: stableAtUnix without stableObservationCount"));
            }
            if (r.stable_at_unix > 0 && r.stable_at_unix < r.observed_at_unix)
                || (r.promoted_at_unix > 0 && r.promoted_at_unix < r.observed_at_unix)
            {
                return bad(format!("version {v}: stable/promoted time precedes observed time"));
            }
        }
        let active_version = actives[0].transit_version;
        if let Some(r) = self
            .snapshots
            .iter()
            .find(|r| r.state == SnapshotState::Pending && r.transit_version <= active_version)
        {
            return bad(format!(
                "pending version {} is not newer than active version {active_version}",
                r.transit_version
            ));
        }
        Ok(())
    }

    /// Refuses a state written for other identity values.
    pub fn check_scope(&self, scope: &IdentityScope) -> Result<(), StateError> {
        let want = scope.fingerprint();
        if self.identity_fingerprint != want {
            return Err(StateError::IdentityMismatch(format!(
                "state fingerprint {} differs from the configured identity fingerprint {want}",
                self.identity_fingerprint
            )));
        }
        for r in &self.snapshots {
            if r.scope(scope) != *scope {
                return Err(StateError::IdentityMismatch(format!(
                    "snapshot of version {} records identity values that differ from the configuration",
                    r.transit_version
                )));
            }
        }
        Ok(())
    }

    pub fn active(&self) -> &SnapshotRecord {
        // check_consistency guarantees the active record is first.
        &self.snapshots[0]
    }

    /// Snapshots Decrypt may use, by key_id.
    pub fn decryptable(&self) -> BTreeMap<String, KeySnapshot> {
        self.snapshots
            .iter()
            .filter(|r| r.state.decrypts())
            .filter_map(|r| Some((r.kubernetes_key_id.clone(), r.snapshot()?)))
            .collect()
    }

    /// The Transit version of the `removed` record with `key_id`, if any:
    /// Decrypt refuses it with that reason instead of treating it as unknown.
    pub fn removed_version(&self, key_id: &str) -> Option<u64> {
        self.snapshots
            .iter()
            .find(|r| r.state == SnapshotState::Removed && r.kubernetes_key_id == key_id)
            .map(|r| r.transit_version)
    }

    /// Versions Decrypt may still need.
    pub fn retained_versions(&self) -> Vec<u64> {
        self.snapshots
            .iter()
            .filter(|r| r.state.decrypts())
            .map(|r| r.transit_version)
            .collect()
    }
}

#[cfg(test)]
mod tests;
