//! Cluster checks: every control-plane node's report (from its Lease) and
//! its `Node.status.images`, in; per-node and cross-node checks out. Each
//! failure names the node, the check and the fix.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::lease::NodeSummary;
use bao_kms_core::checks::artifact::{self, Expected, Model, NodeArtifact};
use bao_kms_core::checks::catalogue::{
    CONTENT_CONVERGED, IMAGE_PRESENT, KEY_ID_CONVERGED, NODE_CHECKS, NODES_FOUND, PROVIDER_HEALTHY, REGISTRY_ROLLBACK,
    REPORT_FRESH, REPORT_PRESENT, ROTATION_ACTIVE, ROTATION_MOVED, VERSION_CONVERGED,
};
use bao_kms_core::checks::converge::converged;
use bao_kms_core::checks::hold::{self, Gate, NodeHold};

use crate::report::{Check, CheckStatus, align};

/// `--phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Gate before rotating the Transit key: every node converged and `active`.
    BeforeRotation,
    /// Gate after a rotation: every node moved to one new key_id and settled.
    AfterRotation,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BeforeRotation => "before-rotation",
            Self::AfterRotation => "after-rotation",
        }
    }
}

/// One control-plane node as the API server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// Every name of every image in `Node.status.images`.
    pub images: Vec<String>,
}

/// A node's report as read from the API: absent, unreadable, or parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportState {
    Missing,
    Invalid(String),
    Present(Box<NodeSummary>),
}

/// Everything the cluster checks decide on.
#[derive(Debug, Clone)]
pub struct ClusterInputs {
    pub namespace: String,
    pub nodes: Vec<NodeInfo>,
    /// By node name.
    pub reports: BTreeMap<String, ReportState>,
    pub now: Timestamp,
    /// A report older than this is stale.
    pub max_age: Duration,
    pub phase: Option<Phase>,
    /// The key_id hash in use before the rotation (`--before-key-id-hash`).
    pub before_key_id_hash: Option<String>,
    /// `--expected-image-digest`, `--expected-binary-digest`.
    pub expected: Expected,
}

/// One row of the node table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    /// `fresh`, `stale`, `missing` or `invalid`.
    pub report: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<NodeSummary>,
    /// Whether the pinned digest is in `Node.status.images`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_present: Option<bool>,
}

/// The cluster report (`-o json|yaml` prints it as is).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    pub passed: bool,
    pub nodes: Vec<NodeRow>,
    pub checks: Vec<Check>,
}

/// Shown for an empty value.
pub const NONE: &str = "<none>";

fn short(hash: &str) -> String {
    if hash.is_empty() {
        NONE.to_owned()
    } else {
        hash.chars().take(12).collect()
    }
}

/// A content digest without its `rcd1.` prefix, shortened.
fn short_digest(digest: &str) -> String {
    short(
        digest
            .strip_prefix(bao_kms_core::registry::CONTENT_DIGEST_PREFIX)
            .unwrap_or(digest),
    )
}

fn or_none(v: &str) -> String {
    if v.is_empty() { NONE.to_owned() } else { v.to_owned() }
}

/// Fresh reports by node (stale and missing ones are excluded from the
/// convergence checks, which they already fail).
fn fresh_reports<'a>(inputs: &'a ClusterInputs, rows: &[NodeRow]) -> Vec<(&'a str, &'a NodeSummary)> {
    rows.iter()
        .filter(|r| r.report == "fresh")
        .filter_map(|r| match inputs.reports.get_key_value(&r.node) {
            Some((node, ReportState::Present(s))) => Some((node.as_str(), s.as_ref())),
            _ => None,
        })
        .collect()
}

/// Runs every cluster check.
pub fn evaluate(inputs: &ClusterInputs) -> ClusterReport {
    let mut checks = Vec::new();
    let mut rows = Vec::new();
    let ns = &inputs.namespace;
    if inputs.nodes.is_empty() {
        checks.push(NODES_FOUND.fail(
            "no node has the label node-role.kubernetes.io/control-plane",
            "label the control-plane nodes (kubeadm does), or point --kubeconfig/--context at the right cluster",
        ));
    } else {
        checks.push(NODES_FOUND.pass(format!("{} control-plane nodes", inputs.nodes.len())));
    }

    for node in &inputs.nodes {
        let name = node.name.as_str();
        let agent_pods = format!(
            "kubectl -n {ns} get pods -l app.kubernetes.io/name=bao-kms-preflight -o wide --field-selector spec.nodeName={name}"
        );
        let mut row = NodeRow {
            node: node.name.clone(),
            report: "missing".into(),
            age_seconds: None,
            summary: None,
            image_present: None,
        };
        let summary = match inputs.reports.get(name) {
            None | Some(ReportState::Missing) => {
                checks.push(
                    REPORT_PRESENT.fail(format!("no Lease {} in namespace {ns}", crate::lease::lease_name(name)),
                        format!("run the preflight agent on {name} (the chart's DaemonSet tolerates control-plane taints): {agent_pods}"),
                    )
                    .on_node(name),
                );
                rows.push(row);
                continue;
            }
            Some(ReportState::Invalid(e)) => {
                row.report = "invalid".into();
                checks.push(
                    REPORT_PRESENT
                        .fail(
                            format!("Lease {} is not a node report: {e}", crate::lease::lease_name(name)),
                            format!("upgrade the agent on {name} to this preflight version: {agent_pods}"),
                        )
                        .on_node(name),
                );
                rows.push(row);
                continue;
            }
            Some(ReportState::Present(s)) => s.as_ref(),
        };
        row.summary = Some(summary.clone());
        let age = inputs.now.as_second() - summary.timestamp.as_second();
        row.age_seconds = Some(age);
        let max = i64::try_from(inputs.max_age.as_secs()).unwrap_or(i64::MAX);
        if age > max {
            row.report = "stale".into();
            checks.push(
                REPORT_FRESH
                    .fail(
                        format!(
                            "last report {} ago, at {} (older than {})",
                            human_age(age),
                            summary.timestamp,
                            human_age(max)
                        ),
                        format!("the agent on {name} stopped reporting: {agent_pods}, then kubectl -n {ns} logs <pod>"),
                    )
                    .on_node(name),
            );
        } else {
            row.report = "fresh".into();
        }
        let failed: Vec<&str> = summary
            .failed_checks()
            .into_iter()
            .filter(|id| *id != REGISTRY_ROLLBACK.id)
            .collect();
        if let Some(r) = summary
            .checks
            .iter()
            .find(|c| c.id == REGISTRY_ROLLBACK.id && c.status == CheckStatus::Fail)
        {
            checks.push(
                REGISTRY_ROLLBACK
                    .fail(
                        r.message.clone().unwrap_or_else(|| "the registry went backwards".into()),
                        format!(
                            "if the restore was not intended, stop the provider on {name} and put back its newest key-registry.json and checkpoint (docs/registry.md); if it was, accept it with kubectl -n {ns} delete lease {}",
                            crate::lease::lease_name(name)
                        ),
                    )
                    .on_node(name),
            );
        }
        if !failed.is_empty() {
            checks.push(
                NODE_CHECKS
                    .fail(
                        format!("failing node checks: {}", failed.join(", ")),
                        format!("run bao-kms-preflight node on {name} for each finding and its fix"),
                    )
                    .on_node(name),
            );
        }
        if !summary.provider_reachable {
            checks.push(
                PROVIDER_HEALTHY
                    .fail(
                        "the provider is unreachable: its /status did not answer",
                        format!("check that the provider runs on {name} and serves server.healthAddress (bao-kms-preflight node on {name} shows the error)"),
                    )
                    .on_node(name),
            );
        } else if !summary.healthy {
            checks.push(
                PROVIDER_HEALTHY
                    .fail(
                        "the provider's /status is not healthy",
                        format!("curl the provider's /status on {name} for its reasons; see docs/operations.md"),
                    )
                    .on_node(name),
            );
        }
        // Only a static pod's pinned image is looked for in the node's images;
        // a systemd node runs a binary (artifact.converged compares it), and
        // a static pod without a digest fails artifact.reported.
        if Model::parse(&summary.deployment_model) == Some(Model::StaticPod) && !summary.image_digest.is_empty() {
            let present = node
                .images
                .iter()
                .any(|i| i.ends_with(&format!("@{}", summary.image_digest)));
            row.image_present = Some(present);
            if !present {
                checks.push(
                    IMAGE_PRESENT.fail(format!("{} is not in Node.status.images", summary.image),
                        format!(
                            "preload the image on {name} (ctr -n k8s.io images import <archive>, or crictl pull {}) so the static pod starts without a registry",
                            summary.image
                        ),
                    )
                    .on_node(name),
                );
            }
        }
        rows.push(row);
    }

    // What each node runs, compared within its deployment model (the
    // artifact is read from disk: reachable or not, a fresh report has it).
    let artifacts: Vec<NodeArtifact<'_>> = fresh_reports(inputs, &rows)
        .into_iter()
        .map(|(node, s)| {
            let model = Model::parse(&s.deployment_model);
            let (what, digest) = match model {
                Some(Model::Systemd) => (s.binary.as_str(), s.binary_digest.as_str()),
                _ => (s.image.as_str(), s.image_digest.as_str()),
            };
            NodeArtifact {
                node,
                model,
                what,
                digest,
            }
        })
        .collect();
    checks.extend(artifact::evaluate(&artifacts, &inputs.expected));

    // Convergence compares what answered: an unreachable provider already
    // fails provider.healthy and has no values to compare.
    let fresh: Vec<(&str, &NodeSummary)> = fresh_reports(inputs, &rows)
        .into_iter()
        .filter(|(_, s)| s.provider_reachable)
        .collect();
    let values =
        |f: &dyn Fn(&NodeSummary) -> String| -> Vec<(&str, String)> { fresh.iter().map(|(n, s)| (*n, f(s))).collect() };
    converged(
        &mut checks,
        &KEY_ID_CONVERGED,
        "key_id hash",
        &values(&|s| s.key_id_hash.clone()),
        short,
        "wait rotation.activationDelay plus rotation.requireStableObservationCount probe intervals and run the gate again; if the node stays behind, bao-kms-provider rotation-plan on it names what holds the promotion; a node on another Transit key or identity scope needs its configuration corrected",
    );
    converged(
        &mut checks,
        &CONTENT_CONVERGED,
        "registry content",
        // A provider older than the digest reports none: it is not compared
        // (version.converged already names it during an upgrade).
        &values(&|s| s.content_digest.clone())
            .into_iter()
            .filter(|(_, d)| !d.is_empty())
            .collect::<Vec<_>>(),
        short_digest,
        "compare bao-kms-provider rotation-plan on this node and a converged one: a version pending here is promoted after the activation delay (wait and run the gate again); a version retired elsewhere (retire-versions) must be retired here with the same plan",
    );
    converged(
        &mut checks,
        &VERSION_CONVERGED,
        "provider version",
        &values(&|s| s.provider_version.clone()),
        or_none,
        "upgrade every node to one release: the same image digest in each static pod manifest, the same bao-kms-provider package on systemd nodes (systemctl restart bao-kms-provider)",
    );

    // A promotion hold: what it keeps from promoting, and whether the gate
    // may call the rotation complete.
    let holds: Vec<NodeHold<'_>> = fresh
        .iter()
        .map(|(node, s)| NodeHold {
            node,
            hold_at_version: s.hold_at_version,
            pending_version: s.pending_version,
            active_version: s.active_version,
        })
        .collect();
    checks.extend(hold::evaluate(
        &holds,
        match inputs.phase {
            None => Gate::None,
            Some(Phase::BeforeRotation) => Gate::BeforeRotation,
            Some(Phase::AfterRotation) => Gate::AfterRotation,
        },
    ));

    match inputs.phase {
        None => {}
        Some(Phase::BeforeRotation) => rotation_active(
            &mut checks,
            &fresh,
            "finish the rotation in progress before starting another",
        ),
        Some(Phase::AfterRotation) => {
            rotation_active(
                &mut checks,
                &fresh,
                "wait for rotation.activationDelay and rotation.requireStableObservationCount, then run the gate again",
            );
            let mut moved_ok = true;
            for (node, s) in &fresh {
                let before = inputs.before_key_id_hash.as_deref().unwrap_or(&s.previous_key_id_hash);
                let problem = if before.is_empty() {
                    Some((
                        "no earlier key_id was observed on this node".to_owned(),
                        "pass --before-key-id-hash with the hash shown by the before-rotation gate",
                    ))
                } else if s.key_id_hash == before {
                    Some((
                        format!("still on key_id hash {} (the one before the rotation)", short(before)),
                        "check that Transit rotated the key (bao read <mount>/keys/<key>) and that the provider observes it",
                    ))
                } else {
                    None
                };
                if let Some((msg, fix)) = problem {
                    moved_ok = false;
                    checks.push(ROTATION_MOVED.fail(msg, fix).on_node(node));
                }
            }
            if moved_ok && !fresh.is_empty() {
                checks.push(ROTATION_MOVED.pass(format!("{} nodes moved to a new key_id", fresh.len())));
            }
        }
    }

    let passed = !checks.iter().any(|c| c.status == CheckStatus::Fail);
    ClusterReport {
        name: "cluster".into(),
        namespace: inputs.namespace.clone(),
        phase: inputs.phase,
        passed,
        nodes: rows,
        checks,
    }
}

fn rotation_active(checks: &mut Vec<Check>, fresh: &[(&str, &NodeSummary)], fix: &str) {
    let mut ok = true;
    for (node, s) in fresh {
        if s.rotation_state != "active" {
            ok = false;
            let held = s
                .pending_version
                .and_then(|p| bao_kms_core::rotation::held_at(s.hold_at_version, p));
            let check = match held {
                // Waiting does not help a held version: releasing does.
                Some(h) => ROTATION_ACTIVE.fail(
                    format!(
                        "rotation state {} (promotion held at version {h}, rotation.holdAtVersion)",
                        s.rotation_state
                    ),
                    hold::release_fix(node),
                ),
                None => ROTATION_ACTIVE.fail(
                    format!("rotation state {} (a rotation is in progress)", s.rotation_state),
                    fix,
                ),
            };
            checks.push(check.on_node(node));
        }
    }
    if ok && !fresh.is_empty() {
        checks.push(ROTATION_ACTIVE.pass(format!("{} nodes active", fresh.len())));
    }
}

/// `45s`, `3m`, `2h`.
pub fn human_age(secs: i64) -> String {
    match secs {
        s if s < 0 => "0s".to_owned(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

impl ClusterReport {
    /// kubectl-style node table, then the failures (node, check, message,
    /// fix), then a summary line.
    pub fn to_table(&self) -> String {
        let mut rows = vec![
            [
                "NODE",
                "REPORT",
                "AGE",
                "KEY-ID-HASH",
                "CONTENT",
                "GENERATION",
                "ROTATION",
                "VERSION",
                "ARTIFACT",
                "CHECKS",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
        ];
        for r in &self.nodes {
            let s = r.summary.as_ref();
            let checks = s
                .map(|s| {
                    let pass = s.checks.iter().filter(|c| c.status == CheckStatus::Pass).count();
                    format!("{pass}/{}", s.checks.len())
                })
                .unwrap_or_else(|| "-".into());
            rows.push(vec![
                r.node.clone(),
                r.report.clone(),
                r.age_seconds.map(human_age).unwrap_or_else(|| "-".into()),
                s.map(|s| {
                    if s.provider_reachable {
                        short(&s.key_id_hash)
                    } else {
                        "unreachable".into()
                    }
                })
                .unwrap_or_else(|| "-".into()),
                s.map(|s| {
                    if s.provider_reachable {
                        short_digest(&s.content_digest)
                    } else {
                        "unreachable".into()
                    }
                })
                .unwrap_or_else(|| "-".into()),
                s.map(|s| {
                    if s.provider_reachable {
                        s.generation.to_string()
                    } else {
                        "unreachable".into()
                    }
                })
                .unwrap_or_else(|| "-".into()),
                s.map(|s| {
                    // A held promotion shows in the row: `pending (held at 2)`.
                    match s
                        .pending_version
                        .and_then(|p| bao_kms_core::rotation::held_at(s.hold_at_version, p))
                    {
                        Some(h) => format!("{} (held at {h})", s.rotation_state),
                        None => s.rotation_state.clone(),
                    }
                })
                .unwrap_or_else(|| "-".into()),
                s.map(|s| {
                    if s.provider_reachable {
                        or_none(&s.provider_version)
                    } else {
                        "unreachable".into()
                    }
                })
                .unwrap_or_else(|| "-".into()),
                match (r.image_present, s) {
                    (Some(true), _) => "image present".into(),
                    (Some(false), _) => "image absent".into(),
                    (None, Some(s)) if Model::parse(&s.deployment_model) == Some(Model::Systemd) => {
                        format!("binary {}", artifact::short_digest(&s.binary_digest))
                    }
                    (None, Some(_)) => NONE.into(),
                    (None, None) => "-".into(),
                },
                checks,
            ]);
        }
        let mut out = align(&rows);
        let failures: Vec<&Check> = self.checks.iter().filter(|c| c.status == CheckStatus::Fail).collect();
        if !failures.is_empty() {
            out.push_str("\nFAILURES\n");
            let mut f = vec![vec!["NODE".to_owned(), "CHECK".to_owned(), "MESSAGE".to_owned()]];
            for c in &failures {
                f.push(vec![
                    c.node.clone().unwrap_or_else(|| "-".into()),
                    c.id.clone(),
                    c.message.clone().unwrap_or_default(),
                ]);
            }
            out.push_str(&align(&f));
            out.push_str("\nFIXES\n");
            for c in &failures {
                out.push_str(&format!(
                    "{} {}: {}\n",
                    c.node.as_deref().unwrap_or("-"),
                    c.id,
                    c.fix.as_deref().unwrap_or_default()
                ));
            }
        }
        let phase = self
            .phase
            .map(|p| format!(" (phase {})", p.as_str()))
            .unwrap_or_default();
        out.push_str(&format!(
            "\ncluster{phase}: {} control-plane nodes, {} checks failed: {}\n",
            self.nodes.len(),
            failures.len(),
            if self.passed { "PASS" } else { "FAIL" }
        ));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(7200), "2h");
        assert_eq!(human_age(-3), "0s");
    }
}
