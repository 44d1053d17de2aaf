//! `repin`: the supported way to accept a new OpenBao identity after a
//! deliberate move or restore (a new `cluster_id`, a re-created Transit
//! mount). Pure planning over the registry, the pins file and what OpenBao
//! reports now; the shell takes the writer lock and writes.
//!
//! A re-pin is refused unless the live Transit key still holds every
//! version the registry retains, with its recorded creation second and
//! without a rollback: the same metadata rule the running provider applies
//! ([`StateFile::drift_against`]). A recreated key under the same name, or
//! an OpenBao restored to before a rotation, is not accepted by a re-pin:
//! that is a different key lineage, not the same key in a new place.

use serde::Serialize;

use super::StateFile;
use super::pins::{IdentityPins, PinsVerdict, RollbackAnchor, pins_verdict};
use crate::transit::KeyMetadata;

pub const REPIN_RECORD_SCHEMA: &str = "bao-kms-provider/openbao-identity-change/v1";

/// An accepted re-pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepinPlan {
    /// The pins file now (`None`: none yet).
    pub previous: Option<IdentityPins>,
    /// The identity to pin: the live one.
    pub next: IdentityPins,
    /// What changes, one line each; empty when the live identity is
    /// already pinned (applying writes nothing).
    pub changes: Vec<String>,
}

/// Plans `repin`. `Err` lists every reason it is refused.
pub fn plan_repin(
    state: &StateFile,
    meta: &KeyMetadata,
    stored: Option<&IdentityPins>,
    live: &IdentityPins,
) -> Result<RepinPlan, Vec<String>> {
    let drift = state.drift_against(meta);
    if !drift.is_empty() {
        return Err(drift
            .into_iter()
            .map(|d| {
                format!(
                    "{d}: the Transit key behind the live OpenBao does not hold the registry's versions as recorded; re-pinning would accept another key lineage. Restore OpenBao from a backup that holds them"
                )
            })
            .collect());
    }
    let changes = match pins_verdict(stored, live) {
        PinsVerdict::Match => Vec::new(),
        PinsVerdict::FirstPin => vec!["no identity pins file: pin the live identity".to_owned()],
        PinsVerdict::Drift(lines) => lines,
    };
    // The rollback anchor is this node's, not OpenBao's: it carries over.
    let anchor = RollbackAnchor::of(state);
    let anchor = stored.and_then(|p| p.rollback_anchor).map_or(anchor, |a| a.max(anchor));
    Ok(RepinPlan {
        previous: stored.cloned(),
        next: live.clone().with_anchor(anchor),
        changes,
    })
}

/// One line of the re-pin history (`<state.path>.openbao-identity-history`,
/// JSON Lines): when, against which registry state, the identity before and
/// after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepinRecord {
    pub schema_version: &'static str,
    pub repinned_at_unix: i64,
    pub state_generation: u64,
    pub state_hash: String,
    pub previous: Option<IdentityPins>,
    pub current: IdentityPins,
}

impl RepinRecord {
    pub fn new(plan: &RepinPlan, state: &StateFile, now_unix: i64) -> Self {
        Self {
            schema_version: REPIN_RECORD_SCHEMA,
            repinned_at_unix: now_unix,
            state_generation: state.generation,
            state_hash: state.current_hash.clone(),
            previous: plan.previous.clone(),
            current: plan.next.clone(),
        }
    }

    /// The record as one JSON line, newline-terminated.
    pub fn line(&self) -> Vec<u8> {
        // A derived struct of strings and integers always serialises.
        let mut out = serde_json::to_vec(self).expect("the re-pin record serialises to JSON");
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::identity::tests::sample_scope;
    use crate::snapshot::KeySnapshot;
    use crate::transit::parse_key_metadata;
    use crate::transit::tests::fresh_key_json;

    #[test]
    fn plans_and_refusals() {
        let scope = sample_scope();
        let mut j = fresh_key_json();
        j["keys"] = serde_json::json!({"1": 1_700_000_060});
        let meta = parse_key_metadata(&j).unwrap();
        let state = StateFile::bootstrap(
            &scope,
            &KeySnapshot::new(&scope, 1, 1_700_000_060).unwrap(),
            1_700_000_000,
        );
        let pinned = IdentityPins::new("c1".into(), "transit_a".into(), "u1".into());
        let mut moved = pinned.clone();
        moved.cluster_id = "c2".into();

        let same = plan_repin(&state, &meta, Some(&pinned), &pinned).unwrap();
        assert!(same.changes.is_empty());
        let first = plan_repin(&state, &meta, None, &pinned).unwrap();
        assert_eq!(first.changes, vec!["no identity pins file: pin the live identity"]);
        let plan = plan_repin(&state, &meta, Some(&pinned), &moved).unwrap();
        assert_eq!(
            plan.changes,
            vec!["OpenBao cluster_id is c2 but c1 was pinned at bootstrap"]
        );
        assert_eq!(plan.previous.as_ref(), Some(&pinned));
        assert_eq!(plan.next, moved.clone().with_anchor(RollbackAnchor::of(&state)));

        // Another key lineage: version 1 created at another second.
        let mut other = meta.clone();
        for v in other.versions.values_mut() {
            *v += 1;
        }
        let refused = plan_repin(&state, &other, Some(&pinned), &moved).unwrap_err();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("another key lineage"), "{refused:?}");

        let record = RepinRecord::new(&plan, &state, 1_700_000_000);
        let line = String::from_utf8(record.line()).unwrap();
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["schemaVersion"], REPIN_RECORD_SCHEMA);
        assert_eq!(v["previous"]["clusterId"], "c1");
        assert_eq!(v["current"]["clusterId"], "c2");
        assert_eq!(v["stateHash"], state.current_hash);
    }
}
