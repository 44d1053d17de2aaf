//! `rotation.hold`: a promotion hold (`rotation.holdAtVersion`) on a node,
//! as the cluster check sees it in the node reports. A hold that keeps a
//! pending version from promoting means the rotation is not complete on
//! that node: the after-rotation gate fails on it, and so does the
//! before-rotation gate on any configured hold (the rotation about to
//! start would not promote there). Without a gate it is a warning.

use super::Check;
use super::catalogue::ROTATION_HOLD;
use crate::rotation::held_at;

/// What one node reports about its promotion hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHold<'a> {
    pub node: &'a str,
    /// `rotation.holdAtVersion`, when configured.
    pub hold_at_version: Option<u64>,
    /// The newest pending version in the node's registry.
    pub pending_version: Option<u64>,
    /// The version the node encrypts with.
    pub active_version: u64,
}

/// Which gate asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No `--phase`: report only.
    None,
    BeforeRotation,
    AfterRotation,
}

/// How to release a hold on `node`.
pub fn release_fix(node: &str) -> String {
    format!(
        "to release it, remove rotation.holdAtVersion from the provider configuration on {node} and restart that provider (systemctl restart bao-kms-provider, or restart its static pod); the pending version then promotes after rotation.activationDelay (docs/rotation.md, \"Holding a promotion\")"
    )
}

/// One verdict per node with a hold, or one pass.
pub fn evaluate(nodes: &[NodeHold<'_>], gate: Gate) -> Vec<Check> {
    if nodes.is_empty() {
        return vec![ROTATION_HOLD.skip("no fresh report")];
    }
    let mut out = Vec::new();
    for n in nodes {
        let Some(hold) = n.hold_at_version else { continue };
        let held = n.pending_version.filter(|&p| held_at(Some(hold), p).is_some());
        let check = match held {
            Some(pending) => {
                let msg = format!(
                    "promotion held on {} at version {hold}: version {pending} is pending (it decrypts, it does not encrypt); the node still encrypts with version {}",
                    n.node, n.active_version
                );
                let fix = release_fix(n.node);
                match gate {
                    Gate::None => ROTATION_HOLD.warn(msg, fix),
                    Gate::BeforeRotation | Gate::AfterRotation => {
                        ROTATION_HOLD.fail(format!("{msg}; the rotation is not complete"), fix)
                    }
                }
            }
            None => {
                let msg = format!(
                    "rotation.holdAtVersion={hold} is set on {}: no version above {hold} will become active there",
                    n.node
                );
                let fix = release_fix(n.node);
                match gate {
                    Gate::BeforeRotation => {
                        ROTATION_HOLD.fail(format!("{msg}; a rotation started now would not complete"), fix)
                    }
                    Gate::None | Gate::AfterRotation => ROTATION_HOLD.warn(msg, fix),
                }
            }
        };
        out.push(check.on_node(n.node));
    }
    if out.is_empty() {
        out.push(ROTATION_HOLD.pass(format!("no promotion hold on {} nodes", nodes.len())));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::checks::CheckStatus;

    fn node(name: &str, hold: Option<u64>, pending: Option<u64>, active: u64) -> NodeHold<'_> {
        NodeHold {
            node: name,
            hold_at_version: hold,
            pending_version: pending,
            active_version: active,
        }
    }

    fn statuses(checks: &[Check]) -> Vec<(Option<&str>, CheckStatus)> {
        checks.iter().map(|c| (c.node.as_deref(), c.status)).collect()
    }

    #[test]
    fn no_hold_passes_in_every_gate() {
        let nodes = [node("a", None, None, 2), node("b", None, Some(3), 2)];
        for gate in [Gate::None, Gate::BeforeRotation, Gate::AfterRotation] {
            let c = evaluate(&nodes, gate);
            assert_eq!(statuses(&c), vec![(None, CheckStatus::Pass)]);
            assert_eq!(c[0].id, "rotation.hold");
        }
        assert_eq!(evaluate(&[], Gate::AfterRotation)[0].status, CheckStatus::Skip);
    }

    #[test]
    fn a_held_pending_version_fails_both_gates_and_warns_otherwise() {
        let nodes = [node("a", None, None, 2), node("b", Some(1), Some(2), 1)];
        let after = evaluate(&nodes, Gate::AfterRotation);
        assert_eq!(statuses(&after), vec![(Some("b"), CheckStatus::Fail)]);
        let msg = after[0].message.as_deref().unwrap();
        assert!(
            msg.starts_with("promotion held on b at version 1: version 2 is pending"),
            "{msg}"
        );
        assert!(msg.contains("not complete"), "{msg}");
        let fix = after[0].fix.as_deref().unwrap();
        assert!(
            fix.contains("remove rotation.holdAtVersion") && fix.contains("restart"),
            "{fix}"
        );
        assert_eq!(
            statuses(&evaluate(&nodes, Gate::BeforeRotation)),
            vec![(Some("b"), CheckStatus::Fail)]
        );
        assert_eq!(
            statuses(&evaluate(&nodes, Gate::None)),
            vec![(Some("b"), CheckStatus::Warn)]
        );
    }

    #[test]
    fn a_configured_hold_with_nothing_held_fails_only_before_a_rotation() {
        // Hold at the active version, nothing pending; or a pending version at the hold.
        for nodes in [
            [node("a", Some(2), None, 2), node("b", None, None, 2)],
            [node("a", Some(3), Some(3), 2), node("b", None, Some(3), 2)],
        ] {
            assert_eq!(
                statuses(&evaluate(&nodes, Gate::BeforeRotation)),
                vec![(Some("a"), CheckStatus::Fail)]
            );
            for gate in [Gate::None, Gate::AfterRotation] {
                let c = evaluate(&nodes, gate);
                assert_eq!(statuses(&c), vec![(Some("a"), CheckStatus::Warn)]);
                assert!(c[0].message.as_deref().unwrap().contains("rotation.holdAtVersion="));
            }
        }
    }
}
