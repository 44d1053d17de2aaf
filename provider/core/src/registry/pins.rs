//! Live OpenBao identity pinned beside the registry: the server's
//! `cluster_id` and the Transit mount's accessor and uuid, recorded at
//! bootstrap and compared on every probe. A swapped OpenBao, or a Transit
//! mount disabled and re-enabled under the same path, no longer matches and
//! the provider fails closed.
//!
//! Kept in its own file (`<state.path>.openbao-identity`) so the state file
//! stays byte-compatible with the published v1alpha2 registry format
//! (golden vectors in tests/fixtures/registry).
//!
//! Schema v2 adds the second rollback anchor ([`RollbackAnchor`]): the
//! highest generation and active Transit version this node has saved. The
//! checkpoint is the first anchor; each catches an older state file when
//! the other was deleted ([`anchor_check`]). A v1 file (no anchor) is read
//! as before and rewritten as v2 at the next start or save.

use serde::{Deserialize, Serialize};

use super::StateFile;
use crate::gojson;

/// The schema this release writes (with a rollback anchor).
pub const PINS_SCHEMA: &str = "bao-kms-provider/openbao-identity/v2";
/// The schema before the rollback anchor; still read.
pub const PINS_SCHEMA_V1: &str = "bao-kms-provider/openbao-identity/v1";

/// The highest registry a node has saved: the state file must never be
/// older than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackAnchor {
    pub highest_generation: u64,
    pub highest_active_version: u64,
}

impl RollbackAnchor {
    /// The anchor a saved `state` sets.
    pub fn of(state: &StateFile) -> Self {
        Self {
            highest_generation: state.generation,
            highest_active_version: state.active().transit_version,
        }
    }

    /// The higher of both fields (an anchor only ever moves up).
    pub fn max(self, other: Self) -> Self {
        Self {
            highest_generation: self.highest_generation.max(other.highest_generation),
            highest_active_version: self.highest_active_version.max(other.highest_active_version),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityPins {
    pub schema_version: String,
    pub cluster_id: String,
    pub mount_accessor: String,
    pub mount_uuid: String,
    /// Present exactly in schema v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_anchor: Option<RollbackAnchor>,
}

impl IdentityPins {
    /// An identity without an anchor (what OpenBao reports live).
    pub fn new(cluster_id: String, mount_accessor: String, mount_uuid: String) -> Self {
        Self {
            schema_version: PINS_SCHEMA_V1.to_owned(),
            cluster_id,
            mount_accessor,
            mount_uuid,
            rollback_anchor: None,
        }
    }

    /// The same identity carrying `anchor` (schema v2).
    pub fn with_anchor(mut self, anchor: RollbackAnchor) -> Self {
        self.schema_version = PINS_SCHEMA.to_owned();
        self.rollback_anchor = Some(anchor);
        self
    }

    /// These pins with the anchor raised to `state`, or `None` when the
    /// anchor already covers it (nothing to write).
    pub fn raised_to(&self, state: &StateFile) -> Option<Self> {
        let target = RollbackAnchor::of(state);
        let next = self.rollback_anchor.map_or(target, |a| a.max(target));
        (self.rollback_anchor != Some(next)).then(|| self.clone().with_anchor(next))
    }

    pub fn encode(&self) -> Vec<u8> {
        // serde_json fails only on a map key that is neither a string nor a
        // number, or on a Serialize impl that errs; the pins are a derived struct
        // of strings.
        gojson::to_indented(self).expect("the identity pins serialise to JSON")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let p: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("identity pins file is not valid JSON: {e}"))?;
        match (p.schema_version.as_str(), p.rollback_anchor) {
            (PINS_SCHEMA, Some(_)) | (PINS_SCHEMA_V1, None) => {}
            (PINS_SCHEMA, None) => return Err(format!("identity pins schema {PINS_SCHEMA} needs rollbackAnchor")),
            (PINS_SCHEMA_V1, Some(_)) => {
                return Err(format!("identity pins schema {PINS_SCHEMA_V1} has no rollbackAnchor"));
            }
            (other, _) => {
                return Err(format!(
                    "identity pins schema {other:?} is not supported (expected {PINS_SCHEMA} or {PINS_SCHEMA_V1})"
                ));
            }
        }
        if p.cluster_id.is_empty() || p.mount_accessor.is_empty() {
            return Err("identity pins file has an empty cluster_id or mount accessor".into());
        }
        Ok(p)
    }

    /// Differences from what OpenBao reports now, one line each.
    pub fn mismatches(&self, live: &Self) -> Vec<String> {
        let mut out = Vec::new();
        if self.cluster_id != live.cluster_id {
            out.push(format!(
                "OpenBao cluster_id is {} but {} was pinned at bootstrap",
                live.cluster_id, self.cluster_id
            ));
        }
        if self.mount_accessor != live.mount_accessor || self.mount_uuid != live.mount_uuid {
            out.push(format!(
                "Transit mount is accessor {} uuid {} but accessor {} uuid {} was pinned at bootstrap (mount re-created?)",
                live.mount_accessor, live.mount_uuid, self.mount_accessor, self.mount_uuid
            ));
        }
        out
    }
}

/// What a start does with the pins file against the identity OpenBao
/// reports now: the one rule `serve` (startup and every probe), `doctor`,
/// `verify-key`, `rotation-plan`, `verify-rotation` and `repin` apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinsVerdict {
    /// The pinned identity is the live one.
    Match,
    /// No pins file yet: the first start pins the live identity.
    FirstPin,
    /// The live identity differs (`identity_drift`): serve refuses to
    /// start and a running provider turns unhealthy. One line per
    /// difference.
    Drift(Vec<String>),
}

impl PinsVerdict {
    pub fn is_drift(&self) -> bool {
        matches!(self, Self::Drift(_))
    }
}

/// The verdict for `stored` (the pins file, if any) against `live`.
pub fn pins_verdict(stored: Option<&IdentityPins>, live: &IdentityPins) -> PinsVerdict {
    match stored {
        None => PinsVerdict::FirstPin,
        Some(pinned) => {
            let m = pinned.mismatches(live);
            if m.is_empty() {
                PinsVerdict::Match
            } else {
                PinsVerdict::Drift(m)
            }
        }
    }
}

/// The second rollback rule, beside `checkpoint_status`: the state file
/// (if any) must not be older than the anchor in the pins file (if any).
/// `Err` is the fail-closed reason (`version_rollback`).
pub fn anchor_check(state: Option<&StateFile>, pins: Option<&IdentityPins>) -> Result<(), String> {
    let Some(anchor) = pins.and_then(|p| p.rollback_anchor) else {
        return Ok(());
    };
    let restore = "restore the state file, checkpoint and identity pins file together from one backup set (docs/registry.md#backups)";
    let Some(state) = state else {
        return Err(format!(
            "the state file is missing but the identity pins file records generation {}: refusing to bootstrap over a registry that existed; {restore}",
            anchor.highest_generation
        ));
    };
    let active = state.active().transit_version;
    if state.generation < anchor.highest_generation {
        return Err(format!(
            "the state file was rolled back: state generation {} is older than generation {} recorded in the identity pins file; {restore}",
            state.generation, anchor.highest_generation
        ));
    }
    if active < anchor.highest_active_version {
        return Err(format!(
            "the state file was rolled back: its active Transit version {active} is older than version {} recorded in the identity pins file; {restore}",
            anchor.highest_active_version
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_encoding_and_mismatch() {
        let p = IdentityPins::new("7810551a-8b9b".into(), "transit_f3275c90".into(), "e7be4835".into());
        let text = String::from_utf8(p.encode()).unwrap();
        assert_eq!(
            text,
            "{\n  \"schemaVersion\": \"bao-kms-provider/openbao-identity/v1\",\n  \"clusterId\": \"7810551a-8b9b\",\n  \"mountAccessor\": \"transit_f3275c90\",\n  \"mountUuid\": \"e7be4835\"\n}\n"
        );
        assert_eq!(IdentityPins::decode(text.as_bytes()).unwrap(), p);
        assert!(p.mismatches(&p).is_empty());
        let mut other = p.clone();
        other.mount_accessor = "transit_00000000".into();
        assert_eq!(p.mismatches(&other).len(), 1);
        assert_eq!(pins_verdict(Some(&p), &p), PinsVerdict::Match);
        assert_eq!(pins_verdict(None, &other), PinsVerdict::FirstPin);
        assert!(pins_verdict(Some(&p), &other).is_drift());
        let mut moved = p.clone();
        moved.cluster_id = "0b6c2f1e".into();
        assert_eq!(
            pins_verdict(Some(&p), &moved),
            PinsVerdict::Drift(vec![
                "OpenBao cluster_id is 0b6c2f1e but 7810551a-8b9b was pinned at bootstrap".into()
            ])
        );
        assert!(
            IdentityPins::decode(
                b"{\"schemaVersion\":\"x\",\"clusterId\":\"a\",\"mountAccessor\":\"b\",\"mountUuid\":\"c\"}"
            )
            .is_err()
        );
    }

    /// Golden v2 vector: the anchor follows the identity fields; a v1 file
    /// reads as pins without an anchor and gains one when raised.
    #[test]
    fn golden_v2_encoding_and_migration_from_v1() {
        let v1 = IdentityPins::new("7810551a-8b9b".into(), "transit_f3275c90".into(), "e7be4835".into());
        let v2 = v1.clone().with_anchor(RollbackAnchor {
            highest_generation: 7,
            highest_active_version: 3,
        });
        let text = String::from_utf8(v2.encode()).unwrap();
        assert_eq!(
            text,
            "{\n  \"schemaVersion\": \"bao-kms-provider/openbao-identity/v2\",\n  \"clusterId\": \"7810551a-8b9b\",\n  \"mountAccessor\": \"transit_f3275c90\",\n  \"mountUuid\": \"e7be4835\",\n  \"rollbackAnchor\": {\n    \"highestGeneration\": 7,\n    \"highestActiveVersion\": 3\n  }\n}\n"
        );
        assert_eq!(IdentityPins::decode(text.as_bytes()).unwrap(), v2);
        assert!(v1.mismatches(&v2).is_empty(), "the anchor is not identity");
        // A v2 without an anchor, and a v1 with one, are refused.
        let no_anchor = text.replace(
            ",\n  \"rollbackAnchor\": {\n    \"highestGeneration\": 7,\n    \"highestActiveVersion\": 3\n  }",
            "",
        );
        assert!(IdentityPins::decode(no_anchor.as_bytes()).is_err(), "{no_anchor}");
        let v1_with_anchor = text.replace("openbao-identity/v2", "openbao-identity/v1");
        assert!(IdentityPins::decode(v1_with_anchor.as_bytes()).is_err());
        // v1 still decodes.
        assert_eq!(IdentityPins::decode(&v1.encode()).unwrap(), v1);
    }

    fn state(generation: u64, active: u64) -> StateFile {
        use crate::identity::IdentityScope;
        use crate::snapshot::KeySnapshot;
        let scope = IdentityScope {
            provider_name: "p".into(),
            cluster_id: "c".into(),
            openbao_instance_id: "i".into(),
            openbao_namespace: String::new(),
            transit_mount_id: "m".into(),
            key_lineage_id: "l".into(),
            transit_mount_path: "transit".into(),
            transit_key_name: "k".into(),
        };
        let mut s = StateFile::bootstrap(&scope, &KeySnapshot::new(&scope, active, 100).unwrap(), 50);
        s.generation = generation;
        s
    }

    #[test]
    fn an_older_state_than_the_anchor_fails_closed() {
        let pins = IdentityPins::new("c".into(), "a".into(), "u".into());
        let anchored = pins.clone().with_anchor(RollbackAnchor::of(&state(5, 3)));
        // No anchor (v1 or no pins file): nothing to compare.
        assert_eq!(anchor_check(Some(&state(1, 1)), Some(&pins)), Ok(()));
        assert_eq!(anchor_check(Some(&state(1, 1)), None), Ok(()));
        assert_eq!(anchor_check(Some(&state(5, 3)), Some(&anchored)), Ok(()));
        assert_eq!(anchor_check(Some(&state(6, 3)), Some(&anchored)), Ok(()));
        let older = anchor_check(Some(&state(4, 3)), Some(&anchored)).unwrap_err();
        assert!(older.contains("generation 4 is older than generation 5"), "{older}");
        let lower = anchor_check(Some(&state(9, 2)), Some(&anchored)).unwrap_err();
        assert!(lower.contains("version 2 is older than version 3"), "{lower}");
        assert!(anchor_check(None, Some(&anchored)).unwrap_err().contains("missing"));
        assert_eq!(anchor_check(None, Some(&pins)), Ok(()));
    }

    #[test]
    fn the_anchor_only_moves_up() {
        let pins = IdentityPins::new("c".into(), "a".into(), "u".into());
        let raised = pins.raised_to(&state(2, 1)).expect("a v1 file gains an anchor");
        assert_eq!(raised.schema_version, PINS_SCHEMA);
        assert_eq!(raised.raised_to(&state(2, 1)), None, "nothing to write");
        assert_eq!(raised.raised_to(&state(1, 1)), None, "never lowered");
        let up = raised.raised_to(&state(3, 2)).unwrap();
        assert_eq!(
            up.rollback_anchor,
            Some(RollbackAnchor {
                highest_generation: 3,
                highest_active_version: 2
            })
        );
    }
}
