//! `bao-kms-preflight cluster` and `agent` against a fake Kubernetes API
//! server: three control-plane nodes (and a worker that is ignored), each
//! with a report Lease. Converged, one stale, one on another key_id, one
//! missing the image, a rotation half-way and done; table and JSON output
//! and exit codes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::fake_api::FakeApi;
use crate::common::*;
use bao_kms_preflight::lease::{
    CheckResult, NodeSummary, carry_forward, from_lease, lease_name, timestamp_from_unix, to_lease,
};
use bao_kms_preflight::report::CheckStatus;
use serde_json::Value;

const NS: &str = "kube-system";
const NODES: [&str; 3] = ["cp-1", "cp-2", "cp-3"];

fn image() -> String {
    format!("registry.example/bao-kms-provider@{DIGEST}")
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn summary(node: &str, hash: &str, age_secs: i64) -> NodeSummary {
    NodeSummary {
        node: node.into(),
        key_id_hash: hash.into(),
        previous_key_id_hash: String::new(),
        generation: 3,
        rotation_state: "active".into(),
        active_version: 2,
        content_digest: CONTENT_A.into(),
        pending_version: None,
        hold_at_version: None,
        provider_reachable: true,
        highest_generation: 3,
        highest_active_version: 2,
        provider_version: "0.1.0".into(),
        provider_name: PROVIDER_NAME.into(),
        healthy: true,
        image: image(),
        image_digest: DIGEST.into(),
        deployment_model: "static-pod".into(),
        binary: String::new(),
        binary_digest: String::new(),
        preflight_version: "0.1.0".into(),
        checks: ["config.file", "socket.directory", "provider.status"]
            .iter()
            .map(|id| CheckResult {
                id: (*id).into(),
                status: CheckStatus::Pass,
                message: None,
            })
            .collect(),
        timestamp: timestamp_from_unix(now_secs() - age_secs, 0),
    }
}

/// Three control-plane nodes holding the pinned image, one worker, and a
/// fresh converged report per control-plane node (also the kubectl
/// plugin's tests, `plugin.rs`).
pub(crate) struct Cluster {
    pub(crate) api: FakeApi,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) kubeconfig: std::path::PathBuf,
}

impl Cluster {
    pub(crate) fn new() -> Self {
        let api = FakeApi::start();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path(), NS);
        let image = image();
        for n in NODES {
            api.add_node(n, true, &[image.as_str(), "registry.example/bao-kms-provider:0.1.0"]);
        }
        api.add_node("worker-1", false, &[]);
        let c = Self {
            api,
            _dir: dir,
            kubeconfig,
        };
        for n in NODES {
            c.report(summary(n, KEY_HASH_A, 5));
        }
        c
    }

    /// Publishes `s` as the agent does: carried forward from the stored report.
    fn report(&self, s: NodeSummary) {
        let previous: Option<k8s_openapi::api::coordination::v1::Lease> = self
            .api
            .lease(NS, &lease_name(&s.node))
            .map(|v| serde_json::from_value(v).unwrap());
        let prev = previous.as_ref().map(|l| from_lease(l).unwrap());
        let s = carry_forward(&s, prev.as_ref());
        self.api
            .put_lease(NS, &to_lease(&s, NS, Duration::from_secs(90), previous.as_ref()));
    }

    fn cluster(&self, extra: &[&str]) -> (i32, String) {
        let mut args = vec![
            "cluster".to_owned(),
            "--kubeconfig".to_owned(),
            self.kubeconfig.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let (code, out, err) = run(&args, &[]);
        assert!(code == 0 || code == 4, "exit {code}: {err}");
        (code, out)
    }

    fn json(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["-o", "json"];
        args.extend_from_slice(extra);
        let (code, out) = self.cluster(&args);
        (
            code,
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")),
        )
    }
}

/// `(node, id, message)` of every failing check.
fn failures(report: &Value) -> Vec<(String, String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            (
                c["node"].as_str().unwrap_or("-").to_owned(),
                c["id"].as_str().unwrap().to_owned(),
                c["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn f(node: &str, id: &str, msg: &str) -> (String, String, String) {
    (node.into(), id.into(), msg.into())
}

#[test]
fn converged_cluster_passes() {
    let c = Cluster::new();
    let (code, table) = c.cluster(&[]);
    assert_eq!(code, 0, "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "NODE   REPORT   AGE   KEY-ID-HASH    CONTENT        GENERATION   ROTATION   VERSION   ARTIFACT        CHECKS"
    );
    for (i, n) in NODES.iter().enumerate() {
        let row = lines[i + 1];
        assert!(row.starts_with(&format!("{n}   fresh    ")), "{row}");
        assert!(
            row.ends_with("AAAAAAAAAAAA   aaaaaaaaaaaa   3            active     0.1.0     image present   4/4"),
            "{row}"
        );
    }
    assert_eq!(
        lines[4..],
        ["", "cluster: 3 control-plane nodes, 0 checks failed: PASS"],
        "{table}"
    );

    let (code, report) = c.json(&[]);
    assert_eq!(code, 0);
    assert_eq!(report["passed"], true);
    assert_eq!(report["namespace"], NS);
    assert_eq!(
        report["nodes"].as_array().unwrap().len(),
        3,
        "the worker is not a control-plane node"
    );
    assert_eq!(report["nodes"][0]["summary"]["keyIdHash"], KEY_HASH_A);
    let passes: Vec<(&str, &str)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        passes,
        [
            ("nodes.found", "3 control-plane nodes"),
            ("artifact.reported", "3 static pod, 0 systemd"),
            (
                "artifact.converged",
                "3 nodes report static pod image sha256:0123456789ab"
            ),
            ("key_id.converged", "3 nodes report key_id hash AAAAAAAAAAAA"),
            ("content.converged", "3 nodes report registry content aaaaaaaaaaaa"),
            ("version.converged", "3 nodes report provider version 0.1.0"),
            ("rotation.hold", "no promotion hold on 3 nodes"),
        ]
    );
    // YAML carries the same document.
    let (_, yaml) = c.cluster(&["-o", "yaml"]);
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_yaml["checks"], report["checks"]);
    // Reads: one LIST of control-plane nodes, one GET per node's Lease.
    let reqs = c.api.requests();
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /api/v1/nodes?")
            && r.contains("labelSelector=node-role.kubernetes.io%2Fcontrol-plane")),
        "{reqs:?}"
    );
    assert!(
        reqs.contains(
            &"GET /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/bao-kms-preflight-cp-2".to_owned()
        )
    );
}

#[test]
fn one_stale_report() {
    let c = Cluster::new();
    let stale = summary("cp-2", KEY_HASH_A, 600);
    let at = stale.timestamp.to_string();
    c.report(stale);
    let (code, report) = c.json(&[]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [f(
            "cp-2",
            "report.fresh",
            &format!("last report 10m ago, at {at} (older than 2m)")
        )]
    );
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "report.fresh")
        .unwrap();
    assert!(
        check["fix"].as_str().unwrap().starts_with(
            "the agent on cp-2 stopped reporting: kubectl -n kube-system get pods -l app.kubernetes.io/name=bao-kms-preflight -o wide --field-selector spec.nodeName=cp-2"
        ),
        "{check}"
    );
    assert_eq!(report["nodes"][1]["report"], "stale");
    // A longer freshness window accepts it.
    assert_eq!(c.cluster(&["--max-age", "15m"]).0, 0);

    let (_, table) = c.cluster(&[]);
    assert!(table.contains("\ncp-2   stale    10m   "), "{table}");
    assert!(
        table.contains("\nFAILURES\nNODE   CHECK          MESSAGE\ncp-2   report.fresh   last report 10m ago"),
        "{table}"
    );
    assert!(
        table.ends_with("cluster: 3 control-plane nodes, 1 checks failed: FAIL\n"),
        "{table}"
    );
}

#[test]
fn one_node_on_another_key_id() {
    let c = Cluster::new();
    c.report(summary("cp-3", KEY_HASH_B, 5));
    let (code, report) = c.json(&[]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [f(
            "cp-3",
            "key_id.converged",
            "key_id hash BBBBBBBBBBBB differs from AAAAAAAAAAAA on 2 of 3 nodes"
        )]
    );
    let (_, table) = c.cluster(&[]);
    assert!(
        table.contains("cp-3   key_id.converged   key_id hash BBBBBBBBBBBB differs"),
        "{table}"
    );
    assert!(
        table.contains("\ncp-3 key_id.converged: wait rotation.activationDelay plus"),
        "{table}"
    );
}

#[test]
fn split_without_a_majority_names_every_node() {
    let c = Cluster::new();
    c.api
        .state
        .lock()
        .unwrap()
        .leases
        .remove(&(NS.to_owned(), lease_name("cp-1")));
    c.report(summary("cp-3", KEY_HASH_B, 5));
    let (code, report) = c.json(&[]);
    assert_eq!(code, 4);
    let split = "(AAAAAAAAAAAA on 1, BBBBBBBBBBBB on 1)";
    assert_eq!(
        failures(&report),
        [
            f(
                "cp-1",
                "report.present",
                "no Lease bao-kms-preflight-cp-1 in namespace kube-system"
            ),
            f(
                "cp-2",
                "key_id.converged",
                &format!("key_id hash AAAAAAAAAAAA here; no value has a majority {split}")
            ),
            f(
                "cp-3",
                "key_id.converged",
                &format!("key_id hash BBBBBBBBBBBB here; no value has a majority {split}")
            ),
        ]
    );
}

#[test]
fn one_node_missing_the_image() {
    let c = Cluster::new();
    {
        let mut st = c.api.state.lock().unwrap();
        st.nodes[1]["status"]["images"] = serde_json::json!([{"names": ["registry.example/pause:3.10"]}]);
    }
    let (code, report) = c.json(&[]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [f(
            "cp-2",
            "image.present",
            &format!("{} is not in Node.status.images", image())
        )]
    );
    assert_eq!(report["nodes"][1]["imagePresent"], false);
    let (_, table) = c.cluster(&[]);
    let row = table.lines().find(|l| l.starts_with("cp-2 ")).unwrap();
    assert!(row.starts_with("cp-2   fresh    "), "{table}");
    assert!(
        row.ends_with("   AAAAAAAAAAAA   aaaaaaaaaaaa   3            active     0.1.0     image absent    4/4"),
        "{table}"
    );
    assert!(
        table.contains("preload the image on cp-2 (ctr -n k8s.io images import <archive>"),
        "{table}"
    );
}

#[test]
fn missing_report_failed_checks_and_unhealthy() {
    let c = Cluster::new();
    c.api
        .state
        .lock()
        .unwrap()
        .leases
        .remove(&(NS.to_owned(), lease_name("cp-1")));
    let mut bad = summary("cp-3", KEY_HASH_A, 5);
    bad.checks[1].status = CheckStatus::Fail;
    bad.healthy = false;
    c.report(bad);
    let (code, report) = c.json(&[]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [
            f(
                "cp-1",
                "report.present",
                "no Lease bao-kms-preflight-cp-1 in namespace kube-system"
            ),
            f("cp-3", "node.checks", "failing node checks: socket.directory"),
            f("cp-3", "provider.healthy", "the provider's /status is not healthy"),
        ]
    );
    // With no control-plane node at all.
    c.api
        .state
        .lock()
        .unwrap()
        .nodes
        .retain(|n| n["metadata"]["name"] == "worker-1");
    let (code, report) = c.json(&[]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [f(
            "-",
            "nodes.found",
            "no node has the label node-role.kubernetes.io/control-plane"
        )]
    );
}

#[test]
fn rotation_half_way_and_done() {
    let c = Cluster::new();
    // Before: converged on A, active everywhere.
    let (code, report) = c.json(&["--phase", "before-rotation"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["phase"], "before-rotation");

    // Half-way: cp-1 moved to B, cp-2 observed B but is pending, cp-3 still on A.
    let mut moved = summary("cp-1", KEY_HASH_B, 5);
    moved.generation = 4;
    moved.active_version = 3;
    moved.content_digest = CONTENT_B.into();
    c.report(moved.clone());
    let mut pending = summary("cp-2", KEY_HASH_A, 5);
    pending.rotation_state = "pending".into();
    c.report(pending);
    let (code, report) = c.json(&["--phase", "before-rotation"]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [
            f(
                "cp-1",
                "key_id.converged",
                "key_id hash BBBBBBBBBBBB differs from AAAAAAAAAAAA on 2 of 3 nodes"
            ),
            f(
                "cp-1",
                "content.converged",
                "registry content bbbbbbbbbbbb differs from aaaaaaaaaaaa on 2 of 3 nodes"
            ),
            f(
                "cp-2",
                "rotation.active",
                "rotation state pending (a rotation is in progress)"
            ),
        ]
    );
    let (code, report) = c.json(&["--phase", "after-rotation"]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [
            f(
                "cp-1",
                "key_id.converged",
                "key_id hash BBBBBBBBBBBB differs from AAAAAAAAAAAA on 2 of 3 nodes"
            ),
            f(
                "cp-1",
                "content.converged",
                "registry content bbbbbbbbbbbb differs from aaaaaaaaaaaa on 2 of 3 nodes"
            ),
            f(
                "cp-2",
                "rotation.active",
                "rotation state pending (a rotation is in progress)"
            ),
            f("cp-2", "rotation.moved", "no earlier key_id was observed on this node"),
            f("cp-3", "rotation.moved", "no earlier key_id was observed on this node"),
        ]
    );
    let (code, report) = c.json(&["--phase", "after-rotation", "--before-key-id-hash", KEY_HASH_A]);
    assert_eq!(code, 4);
    let moved_failures: Vec<_> = failures(&report)
        .into_iter()
        .filter(|x| x.1 == "rotation.moved")
        .collect();
    assert_eq!(
        moved_failures,
        [
            f(
                "cp-2",
                "rotation.moved",
                "still on key_id hash AAAAAAAAAAAA (the one before the rotation)"
            ),
            f(
                "cp-3",
                "rotation.moved",
                "still on key_id hash AAAAAAAAAAAA (the one before the rotation)"
            ),
        ]
    );

    // Done: every node on B, active; each Lease remembers A as the previous hash.
    for n in ["cp-2", "cp-3"] {
        let mut s = moved.clone();
        s.node = n.into();
        c.report(s);
    }
    let (code, report) = c.json(&["--phase", "after-rotation"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["nodes"][2]["summary"]["previousKeyIdHash"], KEY_HASH_A);
    let (code, table) = c.cluster(&["--phase", "after-rotation", "--before-key-id-hash", KEY_HASH_A]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.ends_with("cluster (phase after-rotation): 3 control-plane nodes, 0 checks failed: PASS\n"),
        "{table}"
    );
}

/// A promotion hold on one node: the others moved to B, cp-3 holds
/// version 3 pending at version 2 (rotation.holdAtVersion). Without a
/// phase it is a warning; the after-rotation gate fails on it with the
/// release as the fix; released and promoted, the gate passes.
#[test]
fn a_held_promotion_warns_and_fails_the_after_rotation_gate_until_released() {
    let c = Cluster::new();
    let mut moved = summary("cp-1", KEY_HASH_B, 5);
    (moved.generation, moved.active_version, moved.content_digest) = (5, 3, CONTENT_B.into());
    for n in ["cp-1", "cp-2"] {
        moved.node = n.into();
        c.report(moved.clone());
    }
    let mut held = summary("cp-3", KEY_HASH_A, 5);
    (held.rotation_state, held.pending_version, held.hold_at_version) = ("pending".into(), Some(3), Some(2));
    held.generation = 5;
    c.report(held.clone());

    let (_, report) = c.json(&[]);
    let hold: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "rotation.hold")
        .collect();
    assert_eq!(hold.len(), 1, "{report:#}");
    assert_eq!(
        (&hold[0]["status"], &hold[0]["node"]),
        (&Value::from("warn"), &Value::from("cp-3"))
    );
    assert!(
        hold[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("promotion held on cp-3 at version 2: version 3 is pending"),
        "{report:#}"
    );
    assert!(
        hold[0]["fix"]
            .as_str()
            .unwrap()
            .contains("remove rotation.holdAtVersion")
    );
    assert_eq!(report["nodes"][2]["summary"]["holdAtVersion"], 2);

    let (code, report) = c.json(&["--phase", "after-rotation", "--before-key-id-hash", KEY_HASH_A]);
    assert_eq!(code, 4);
    let ids: Vec<(String, String)> = failures(&report).into_iter().map(|(n, id, _)| (n, id)).collect();
    let want: Vec<(String, String)> = [
        ("cp-3", "key_id.converged"),
        ("cp-3", "content.converged"),
        ("cp-3", "rotation.hold"),
        ("cp-3", "rotation.active"),
        ("cp-3", "rotation.moved"),
    ]
    .iter()
    .map(|(n, id)| ((*n).to_owned(), (*id).to_owned()))
    .collect();
    assert_eq!(ids, want, "{report:#}");
    let active = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "rotation.active" && c["status"] == "fail")
        .unwrap();
    assert!(
        active["message"]
            .as_str()
            .unwrap()
            .contains("promotion held at version 2")
    );
    assert!(
        active["fix"]
            .as_str()
            .unwrap()
            .contains("remove rotation.holdAtVersion")
    );

    // Released: cp-3 promoted version 3 like the others.
    let mut released = moved.clone();
    released.node = "cp-3".into();
    released.generation = 6;
    c.report(released);
    let (code, report) = c.json(&["--phase", "after-rotation", "--before-key-id-hash", KEY_HASH_A]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn unreachable_api_is_a_runtime_error() {
    let c = Cluster::new();
    let kubeconfig = std::fs::read_to_string(&c.kubeconfig)
        .unwrap()
        .replace(&c.api.address, "127.0.0.1:1");
    std::fs::write(&c.kubeconfig, kubeconfig).unwrap();
    let (code, _, err) = run(
        &[
            "cluster".into(),
            "--kubeconfig".into(),
            c.kubeconfig.display().to_string(),
        ],
        &[],
    );
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("listing control-plane nodes"), "{err}");
}

#[test]
fn agent_publishes_the_node_report_then_cluster_reads_it() {
    let api = FakeApi::start();
    let tree = NodeTree::new();
    let kubeconfig = api.write_kubeconfig(tree.dir.path(), "preflight");
    api.add_node("cp-1", true, &[image().as_str()]);
    let mut args = tree.node_args();
    args[0] = "agent".into();
    args.truncate(args.len() - 2); // no -o for the agent
    args.extend([
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--node-name".into(),
        "cp-1".into(),
        "--interval".into(),
        "20s".into(),
        "--once".into(),
    ]);
    let (code, _, err) = run(&args, &[]);
    assert_eq!(code, 0, "{err}");
    let lease = api.lease("preflight", "bao-kms-preflight-cp-1").expect("lease created");
    let a = &lease["metadata"]["annotations"];
    assert_eq!(a["preflight.kms.openbao.org/node"], "cp-1");
    assert_eq!(a["preflight.kms.openbao.org/key-id-hash"], KEY_HASH_A);
    assert_eq!(a["preflight.kms.openbao.org/generation"], "3");
    assert_eq!(a["preflight.kms.openbao.org/rotation-state"], "active");
    assert_eq!(a["preflight.kms.openbao.org/active-version"], "2");
    assert_eq!(a["preflight.kms.openbao.org/provider-version"], "0.1.0");
    assert_eq!(a["preflight.kms.openbao.org/image-digest"], DIGEST);
    assert_eq!(a["preflight.kms.openbao.org/healthy"], "true");
    assert!(a.get("preflight.kms.openbao.org/previous-key-id-hash").is_none());
    let checks: Vec<Value> = serde_json::from_str(a["preflight.kms.openbao.org/checks"].as_str().unwrap()).unwrap();
    assert_eq!(checks.len(), 16);
    assert_eq!(
        checks[15],
        serde_json::json!({"id": "registry.rollback", "status": "pass"})
    );
    assert_eq!(a["preflight.kms.openbao.org/content-digest"], CONTENT_A);
    assert_eq!(a["preflight.kms.openbao.org/provider-reachable"], "true");
    assert_eq!(a["preflight.kms.openbao.org/highest-generation"], "3");
    assert_eq!(
        checks[0],
        serde_json::json!({"id": "config.file", "status": "pass", "message": checks[0]["message"]})
    );
    assert_eq!(lease["spec"]["holderIdentity"], "bao-kms-preflight/cp-1");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 60);
    assert_eq!(
        lease["metadata"]["labels"]["app.kubernetes.io/name"],
        "bao-kms-preflight"
    );
    let timestamp = a["preflight.kms.openbao.org/timestamp"].as_str().unwrap();
    assert!(
        lease["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .starts_with(&timestamp[..19]),
        "{lease:#}"
    );

    // The key moves: the second round updates the Lease in place and
    // remembers the previous key_id hash.
    tree.provider.set_status("keyIDHash", KEY_HASH_B.into());
    let (code, _, err) = run(&args, &[]);
    assert_eq!(code, 0, "{err}");
    let lease = api.lease("preflight", "bao-kms-preflight-cp-1").unwrap();
    let a = &lease["metadata"]["annotations"];
    assert_eq!(a["preflight.kms.openbao.org/key-id-hash"], KEY_HASH_B);
    assert_eq!(a["preflight.kms.openbao.org/previous-key-id-hash"], KEY_HASH_A);
    let reqs = api.requests();
    assert_eq!(
        reqs.iter().filter(|r| r.starts_with("POST ")).count(),
        1,
        "created once, then replaced: {reqs:?}"
    );
    assert_eq!(reqs.iter().filter(|r| r.starts_with("PUT ")).count(), 1, "{reqs:?}");

    let (code, out, err) = run(
        &[
            "cluster".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--phase".into(),
            "after-rotation".into(),
            "-o".into(),
            "json".into(),
        ],
        &[],
    );
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["namespace"], "preflight");

    // The node's registry goes back to an older generation: the agent's
    // next report carries the rollback finding, and cluster fails it.
    tree.provider.set_status("generation", 2.into());
    let (code, _, err) = run(&args, &[]);
    assert_eq!(code, 0, "{err}");
    let lease = api.lease("preflight", "bao-kms-preflight-cp-1").unwrap();
    let a = &lease["metadata"]["annotations"];
    let checks: Vec<Value> = serde_json::from_str(a["preflight.kms.openbao.org/checks"].as_str().unwrap()).unwrap();
    assert_eq!(
        checks.last().unwrap(),
        &serde_json::json!({"id": "registry.rollback", "status": "fail",
            "message": "registry generation 2 is below 3 reported earlier on this node: its registry was restored from an older state or replaced"})
    );
    let (code, out, _) = run(
        &[
            "cluster".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "-o".into(),
            "json".into(),
        ],
        &[],
    );
    assert_eq!(code, 4, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        failures(&report),
        [f(
            "cp-1",
            "registry.rollback",
            "registry generation 2 is below 3 reported earlier on this node: its registry was restored from an older state or replaced"
        )]
    );

    // An API server that refuses the write makes `--once` fail.
    api.state.lock().unwrap().leases.clear();
    let mut bad = args.clone();
    let i = bad.iter().position(|a| a == "--kubeconfig").unwrap();
    let broken = tree.dir.path().join("broken-kubeconfig");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace(&api.address, "127.0.0.1:1"),
    )
    .unwrap();
    bad[i + 1] = broken.display().to_string();
    assert_eq!(run(&bad, &[]).0, 5);
}

/// The event orders seen on real clusters: nodes end on different
/// generations with the same keys. One node learned the new version by
/// unknown-key_id discovery before its promotion (generations 4/4/5); two
/// rotations seconds apart (6/6/4, one node skipping the middle version,
/// retained as retired). The after-rotation gate passes on content.
#[test]
fn after_rotation_passes_when_content_agrees_although_generations_differ() {
    for generations in [[4, 4, 5], [6, 6, 4]] {
        let c = Cluster::new();
        for (n, g) in NODES.iter().zip(generations) {
            let mut s = summary(n, KEY_HASH_B, 5);
            s.generation = g;
            s.active_version = 3;
            s.content_digest = CONTENT_B.into();
            c.report(s);
        }
        let (code, table) = c.cluster(&["--phase", "after-rotation", "--before-key-id-hash", KEY_HASH_A]);
        assert_eq!(code, 0, "{generations:?}\n{table}");
        let gens: Vec<&str> = table
            .lines()
            .skip(1)
            .take(3)
            .map(|l| l.split_whitespace().nth(5).unwrap())
            .collect();
        assert_eq!(gens, generations.map(|g| g.to_string()), "{table}");
        let (_, report) = c.json(&["--phase", "after-rotation"]);
        let content = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "content.converged")
            .unwrap()
            .clone();
        assert_eq!(content["status"], "pass");
        assert_eq!(content["message"], "3 nodes report registry content bbbbbbbbbbbb");
    }
}

/// Same key_id, different content (a version retired on one node only):
/// content.converged fails that node and says how to align it.
#[test]
fn same_key_other_content_fails_with_a_fix() {
    let c = Cluster::new();
    let mut s = summary("cp-2", KEY_HASH_A, 5);
    s.content_digest = CONTENT_B.into();
    c.report(s);
    let (code, report) = c.json(&[]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [f(
            "cp-2",
            "content.converged",
            "registry content bbbbbbbbbbbb differs from aaaaaaaaaaaa on 2 of 3 nodes"
        )]
    );
    let fix = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "content.converged")
        .unwrap()["fix"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        fix.contains("rotation-plan") && fix.contains("retire-versions"),
        "{fix}"
    );
}

/// A node whose registry went backwards fails registry.rollback until the
/// operator accepts the restore by deleting its Lease (the printed fix).
#[test]
fn rollback_fails_until_the_lease_is_deleted() {
    let c = Cluster::new();
    let mut ahead = summary("cp-1", KEY_HASH_A, 5);
    ahead.generation = 7;
    c.report(ahead);
    c.report(summary("cp-1", KEY_HASH_A, 5)); // generation 3 again
    let (code, report) = c.json(&[]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [f(
            "cp-1",
            "registry.rollback",
            "registry generation 3 is below 7 reported earlier on this node: its registry was restored from an older state or replaced"
        )]
    );
    let rollback = &report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "registry.rollback")
        .unwrap()["fix"];
    assert!(
        rollback
            .as_str()
            .unwrap()
            .ends_with("kubectl -n kube-system delete lease bao-kms-preflight-cp-1"),
        "{rollback}"
    );
    // Still there on the next report.
    c.report(summary("cp-1", KEY_HASH_A, 5));
    assert_eq!(c.json(&[]).0, 4);
    // Accepted: the Lease is deleted, the agent reports afresh.
    c.api
        .state
        .lock()
        .unwrap()
        .leases
        .remove(&(NS.to_owned(), lease_name("cp-1")));
    c.report(summary("cp-1", KEY_HASH_A, 5));
    let (code, report) = c.json(&[]);
    assert_eq!(code, 0, "{report:#}");
}

/// A node whose provider does not answer shows "unreachable", fails
/// provider.healthy once, and is not compared (no empty version, no
/// generation 0).
#[test]
fn unreachable_provider_is_named_not_compared() {
    let c = Cluster::new();
    let mut down = summary("cp-3", "", 5);
    down.provider_reachable = false;
    down.healthy = false;
    down.generation = 0;
    down.active_version = 0;
    down.content_digest = String::new();
    down.provider_version = String::new();
    down.rotation_state = "unknown".into();
    c.report(down);
    let (code, report) = c.json(&[]);
    assert_eq!(code, 4);
    assert_eq!(
        failures(&report),
        [f(
            "cp-3",
            "provider.healthy",
            "the provider is unreachable: its /status did not answer"
        )]
    );
    let (_, table) = c.cluster(&[]);
    let row = table.lines().find(|l| l.starts_with("cp-3")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[3..8],
        ["unreachable", "unreachable", "unreachable", "unknown", "unreachable"],
        "{table}"
    );
}

/// Runs the agent once for `tree` as node `node`, with `model_args` in
/// place of the static pod manifest flags when given.
fn agent_once(tree: &NodeTree, kubeconfig: &std::path::Path, node: &str, model_args: Option<Vec<String>>) {
    let mut args = tree.node_args();
    args[0] = "agent".into();
    args.truncate(args.len() - 2); // no -o for the agent
    if let Some(model) = model_args {
        let i = args.iter().position(|a| a == "--manifest").unwrap();
        args.drain(i..i + 2);
        args.extend(model);
    }
    args.extend([
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--node-name".into(),
        node.into(),
        "--once".into(),
    ]);
    let (code, _, err) = run(&args, &[]);
    assert_eq!(code, 0, "{err}");
}

/// A systemd unit in `tree` whose ExecStart= runs a provider binary with
/// `content`; returns the unit's path and the binary's digest.
fn systemd_install(tree: &NodeTree, content: &[u8]) -> (std::path::PathBuf, String) {
    let bin = tree.path("usr/bin/bao-kms-provider");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, content).unwrap();
    let unit = tree.path("bao-kms-provider.service");
    std::fs::write(
        &unit,
        format!(
            "[Unit]\nDescription=bao-kms-provider\n\n[Service]\nType=notify\nExecStart={} serve --config {}\n",
            bin.display(),
            tree.path("etc/config.yaml").display()
        ),
    )
    .unwrap();
    let digest = bao_kms_preflight::collect::sha256_file(&bin).unwrap();
    (unit, digest)
}

/// A cluster migrating between deployment models: one static pod node and
/// two systemd nodes, real agents each reading its own files. They pass
/// together (no node fails for the other model's artifact); a systemd node
/// whose binary differs from the expected digest fails, named, with a fix.
#[test]
fn systemd_and_static_pod_nodes_pass_together_and_a_wrong_binary_fails() {
    let api = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path(), "preflight");
    api.add_node("cp-1", true, &[image().as_str()]);
    api.add_node("cp-2", true, &[]);
    api.add_node("cp-3", true, &[]);
    let pod_tree = NodeTree::new();
    agent_once(&pod_tree, &kubeconfig, "cp-1", None);
    let release = b"bao-kms-provider release build".to_vec();
    let mut digest = String::new();
    let trees: Vec<NodeTree> = (2..=3).map(|_| NodeTree::new()).collect();
    for (tree, node) in trees.iter().zip(["cp-2", "cp-3"]) {
        let (unit, d) = systemd_install(tree, &release);
        digest = d;
        agent_once(
            tree,
            &kubeconfig,
            node,
            Some(vec!["--unit".into(), unit.display().to_string()]),
        );
    }
    let lease = api.lease("preflight", "bao-kms-preflight-cp-2").unwrap();
    let a = &lease["metadata"]["annotations"];
    assert_eq!(a["preflight.kms.openbao.org/deployment-model"], "systemd");
    assert_eq!(a["preflight.kms.openbao.org/binary-digest"], digest.as_str());
    assert_eq!(
        a["preflight.kms.openbao.org/binary"],
        trees[0].path("usr/bin/bao-kms-provider").display().to_string()
    );
    assert!(a.get("preflight.kms.openbao.org/image-digest").is_none());
    let cluster = |extra: &[&str]| {
        let mut args = vec![
            "cluster".to_owned(),
            "--kubeconfig".to_owned(),
            kubeconfig.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        run(&args, &[])
    };
    let (code, table, err) = cluster(&[]);
    assert_eq!(code, 0, "{table}{err}");
    let short = &digest[..19];
    assert!(table.contains(&format!("binary {short}")), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("cp-1") && l.contains("image present")),
        "{table}"
    );
    let (code, out, _) = cluster(&["-o", "json", "--expected-binary-digest", &digest]);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let artifact: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"].as_str().unwrap().starts_with("artifact."))
        .map(|c| c["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        artifact,
        [
            "1 static pod, 2 systemd".to_owned(),
            format!(
                "1 nodes report static pod image sha256:0123456789ab; 2 nodes run the expected systemd binary {short}"
            ),
        ]
    );

    // cp-3 gets another binary: its next report fails it against the
    // expected digest, and the other nodes stay green.
    std::fs::write(trees[1].path("usr/bin/bao-kms-provider"), b"a different build").unwrap();
    let unit = trees[1].path("bao-kms-provider.service");
    agent_once(
        &trees[1],
        &kubeconfig,
        "cp-3",
        Some(vec!["--unit".into(), unit.display().to_string()]),
    );
    let wrong = bao_kms_preflight::collect::sha256_file(&trees[1].path("usr/bin/bao-kms-provider")).unwrap();
    let (code, out, _) = cluster(&["-o", "json", "--expected-binary-digest", &digest]);
    assert_eq!(code, 4, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        failures(&report),
        [f(
            "cp-3",
            "artifact.converged",
            &format!(
                "systemd binary {} is not the expected {short} (--expected-binary-digest)",
                &wrong[..19]
            )
        )]
    );
    let (code, table, _) = cluster(&["--expected-binary-digest", &digest]);
    assert_eq!(code, 4);
    assert!(
        table.contains("cp-3 artifact.converged: install the one release on every systemd node"),
        "{table}"
    );
}
