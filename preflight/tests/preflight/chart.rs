//! The Helm chart `charts/bao-kms-preflight`, rendered and linted by real
//! Helm (Helm v4's engine as a library: the `helm-python-sdk` package,
//! installed by `make deps`), every object validated against the
//! k8s-openapi types: it deserializes, and serializing it back gives the
//! same document (so no field is misspelt or misplaced).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::{Value, json};

const HELM_SDK: &str = "helm-python-sdk==0.2.2";

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/bao-kms-preflight")
}

const RENDER: &str = r#"
import json, sys
try:
    import helm_python
except ImportError:
    sys.exit(17)
chart_dir, values = sys.argv[1], json.loads(sys.argv[2])
chart = helm_python.Chart.load(chart_dir)
rendered = chart.render(values, name="kms-preflight", namespace="bao-kms-preflight")
lint = helm_python.lint(chart_dir, values, strict=True, namespace="bao-kms-preflight")
print(json.dumps({"rendered": rendered, "lint": lint, "helm": helm_python.helm_sdk_version()}))
"#;

/// Renders the chart with `values`; returns the objects (by kind and name)
/// and the lint report.
fn render(values: Value) -> (Vec<Value>, Value) {
    let out = Command::new("python3")
        .args(["-c", RENDER])
        .arg(chart_dir())
        .arg(values.to_string())
        .output()
        .expect("python3 is required to render the chart with Helm");
    assert!(
        out.status.code() != Some(17),
        "the Python package {HELM_SDK} (Helm's engine) is missing: run `make deps` or `python3 -m pip install {HELM_SDK}`"
    );
    assert!(
        out.status.success(),
        "helm render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["helm"].as_str().unwrap().starts_with("v4."), "{}", doc["helm"]);
    let mut objects = Vec::new();
    for (path, text) in doc["rendered"].as_object().unwrap() {
        if path.ends_with("NOTES.txt") {
            continue;
        }
        for part in text.as_str().unwrap().split("\n---") {
            let v: Value = serde_yaml_ng::from_str(part).unwrap_or_else(|e| panic!("{path}: {e}\n{part}"));
            if !v.is_null() {
                objects.push(v);
            }
        }
    }
    (objects, doc["lint"].clone())
}

/// Deserializes into `T` and checks that nothing was dropped or altered.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:#}"));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(&back, v, "the object does not round-trip through its k8s-openapi type");
    t
}

/// Every object validated by kind; returns them by `Kind/name`.
fn validate(objects: &[Value]) -> BTreeMap<String, Value> {
    let mut by = BTreeMap::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap();
        match kind {
            "DaemonSet" => drop(typed::<DaemonSet>(o)),
            "Job" => drop(typed::<Job>(o)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(o)),
            "Role" => drop(typed::<Role>(o)),
            "RoleBinding" => drop(typed::<RoleBinding>(o)),
            "ClusterRole" => drop(typed::<ClusterRole>(o)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(o)),
            other => panic!("unexpected kind {other}"),
        }
        let key = format!("{kind}/{}", o["metadata"]["name"].as_str().unwrap());
        assert!(by.insert(key.clone(), o.clone()).is_none(), "{key} rendered twice");
    }
    by
}

#[test]
fn default_values_render_valid_objects() {
    let (objects, lint) = render(json!({}));
    let errors: Vec<&Value> = lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64() >= Some(2))
        .collect();
    assert!(
        errors.is_empty() && lint["errors"].as_array().unwrap().is_empty(),
        "{lint:#}"
    );
    let by = validate(&objects);
    let p = "kms-preflight-bao-kms-preflight";
    assert_eq!(
        by.keys().cloned().collect::<Vec<_>>(),
        [
            format!("ClusterRole/{p}-nodes-reader"),
            format!("ClusterRoleBinding/{p}-nodes-reader"),
            format!("DaemonSet/{p}-agent"),
            format!("Job/{p}-cluster-check"),
            format!("Role/{p}-agent"),
            format!("Role/{p}-reports-reader"),
            format!("RoleBinding/{p}-agent"),
            format!("RoleBinding/{p}-reports-reader"),
            format!("ServiceAccount/{p}-agent"),
            format!("ServiceAccount/{p}-cluster"),
        ]
    );

    // The agent: control-plane nodes only, read-only hostPath mounts, node
    // name from the downward API, no capability but DAC_READ_SEARCH.
    let ds: DaemonSet = typed(&by[&format!("DaemonSet/{p}-agent")]);
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(
        spec.node_selector.unwrap(),
        BTreeMap::from([("node-role.kubernetes.io/control-plane".to_owned(), String::new())])
    );
    let tolerations = spec.tolerations.unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node-role.kubernetes.io/control-plane")
                && t.effect.as_deref() == Some("NoSchedule")
                && t.operator.as_deref() == Some("Exists"))
    );
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some(format!("{p}-agent").as_str())
    );
    let volumes = spec.volumes.unwrap();
    assert!(volumes.iter().all(|v| v.host_path.is_some()), "{volumes:?}");
    let host_paths: Vec<&str> = volumes
        .iter()
        .map(|v| v.host_path.as_ref().unwrap().path.as_str())
        .collect();
    assert_eq!(
        host_paths,
        [
            "/etc/openbao-kms",
            "/run/openbao-kms",
            "/etc/kubernetes/openbao-kms/encryption-config.yaml",
            "/etc/kubernetes/manifests/bao-kms-provider.yaml",
            "/etc/group"
        ]
    );
    let c = &spec.containers[0];
    let mounts = c.volume_mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), volumes.len());
    assert!(mounts.iter().all(|m| m.read_only == Some(true)), "{mounts:?}");
    let args = c.args.as_ref().unwrap();
    assert_eq!(
        args,
        &[
            "agent",
            "--config=/etc/openbao-kms/config.yaml",
            "--encryption-config=/etc/kubernetes/openbao-kms/encryption-config.yaml",
            "--manifest=/etc/kubernetes/manifests/bao-kms-provider.yaml",
            "--group-file=/host/etc/group",
            "--interval=30s",
        ]
    );
    let env = c.env.as_ref().unwrap();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(
        node_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(caps.add.as_deref(), Some(&["DAC_READ_SEARCH".to_owned()][..]));

    // RBAC: the agent may only touch Leases in its namespace.
    let role: Role = typed(&by[&format!("Role/{p}-agent")]);
    assert_eq!(role.metadata.namespace.as_deref(), Some("bao-kms-preflight"));
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["coordination.k8s.io".to_owned()][..])
    );
    assert_eq!(rules[0].resources.as_deref(), Some(&["leases".to_owned()][..]));
    assert_eq!(rules[0].verbs, ["get", "create", "update", "patch"]);
    let rb: RoleBinding = typed(&by[&format!("RoleBinding/{p}-agent")]);
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(rb.subjects.unwrap()[0].name, format!("{p}-agent"));
    // The cluster check reads nodes cluster-wide and Leases in the namespace.
    let cr: ClusterRole = typed(&by[&format!("ClusterRole/{p}-nodes-reader")]);
    let rules = cr.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].resources.as_deref(), Some(&["nodes".to_owned()][..]));
    assert_eq!(rules[0].verbs, ["get", "list"]);
    let reader: Role = typed(&by[&format!("Role/{p}-reports-reader")]);
    assert_eq!(reader.rules.unwrap()[0].verbs, ["get", "list"]);

    let job: Job = typed(&by[&format!("Job/{p}-cluster-check")]);
    assert_eq!(
        job.metadata
            .annotations
            .unwrap()
            .get("helm.sh/hook")
            .map(String::as_str),
        Some("test")
    );
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(format!("{p}-cluster").as_str())
    );
    assert_eq!(
        pod.containers[0].args.as_deref().unwrap(),
        ["cluster", "--namespace=bao-kms-preflight", "--max-age=2m"]
    );
}

#[test]
fn values_change_the_objects() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let (objects, _) = render(json!({
        "image": {"repository": "registry.example/bao-kms-preflight", "digest": digest},
        "host": {"manifest": "", "encryptionConfig": ""},
        "agent": {"expectedProviderDigest": digest, "interval": "15s"},
        "clusterCheck": {"phase": "after-rotation", "beforeKeyIdHash": "AAAA", "helmTestHook": false},
    }));
    let by = validate(&objects);
    let p = "kms-preflight-bao-kms-preflight";
    let ds: DaemonSet = typed(&by[&format!("DaemonSet/{p}-agent")]);
    let spec = ds.spec.unwrap().template.spec.unwrap();
    let c = &spec.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some(format!("registry.example/bao-kms-preflight@{digest}").as_str())
    );
    assert_eq!(
        c.args.as_deref().unwrap(),
        [
            "agent".to_owned(),
            "--config=/etc/openbao-kms/config.yaml".to_owned(),
            format!("--expected-digest={digest}"),
            "--group-file=/host/etc/group".to_owned(),
            "--interval=15s".to_owned(),
        ]
    );
    assert_eq!(
        spec.volumes.unwrap().len(),
        3,
        "no manifest or EncryptionConfiguration mount"
    );
    let job: Job = typed(&by[&format!("Job/{p}-cluster-check")]);
    assert!(job.metadata.annotations.is_none());
    assert_eq!(
        job.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .as_deref()
            .unwrap(),
        [
            "cluster",
            "--namespace=bao-kms-preflight",
            "--max-age=2m",
            "--phase=after-rotation",
            "--before-key-id-hash=AAAA"
        ]
    );

    let (objects, _) = render(json!({"clusterCheck": {"enabled": false}}));
    let by = validate(&objects);
    assert!(
        by.keys().all(|k| !k.starts_with("Job/") && !k.starts_with("Cluster")),
        "{:?}",
        by.keys()
    );
}

/// host.unit selects the systemd model: the agent reads the unit and hashes
/// the host's provider binary (both mounted read-only), not the manifest.
#[test]
fn a_systemd_unit_replaces_the_manifest() {
    let unit = "/usr/lib/systemd/system/bao-kms-provider.service";
    let (objects, _) = render(json!({"host": {"unit": unit}}));
    let by = validate(&objects);
    let ds: DaemonSet = typed(&by["DaemonSet/kms-preflight-bao-kms-preflight-agent"]);
    let spec = ds.spec.unwrap().template.spec.unwrap();
    let args = spec.containers[0].args.clone().unwrap();
    assert!(args.contains(&format!("--unit={unit}")), "{args:?}");
    assert!(
        args.contains(&"--provider-binary=/host/provider-binary".to_owned()),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a.starts_with("--manifest")), "{args:?}");
    let paths: Vec<String> = spec
        .volumes
        .unwrap()
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    assert!(
        paths.contains(&unit.to_owned()) && paths.contains(&"/usr/bin/bao-kms-provider".to_owned()),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p.contains("manifests")), "{paths:?}");
}
