//! Live OpenBao identity pinned beside the registry: the server's
//! `cluster_id` and the Transit mount's accessor and uuid, recorded at
//! bootstrap and compared on every probe. A swapped OpenBao, or a Transit
//! mount disabled and re-enabled under the same path, no longer matches and
//! the provider fails closed.
//!
//! Kept in its own file (`<state.path>.openbao-identity`) so the state file
//! stays byte-compatible with the published v1alpha2 registry format
//! (golden vectors in tests/fixtures/registry).

use serde::{Deserialize, Serialize};

use crate::gojson;

pub const PINS_SCHEMA: &str = "bao-kms-provider/openbao-identity/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityPins {
    pub schema_version: String,
    pub cluster_id: String,
    pub mount_accessor: String,
    pub mount_uuid: String,
}

impl IdentityPins {
    pub fn new(cluster_id: String, mount_accessor: String, mount_uuid: String) -> Self {
        Self {
            schema_version: PINS_SCHEMA.to_owned(),
            cluster_id,
            mount_accessor,
            mount_uuid,
        }
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
        if p.schema_version != PINS_SCHEMA {
            return Err(format!(
                "identity pins schema {:?} is not supported (expected {PINS_SCHEMA})",
                p.schema_version
            ));
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
}
