//! Test harness: a node fixture tree in a temp directory (provider
//! configuration, socket directory with a real Unix socket, state
//! directory, EncryptionConfiguration, static pod manifest) and a fake
//! provider health listener serving `/ready` and `/status` on loopback.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use bao_kms_core::status::{ReadyDocument, StatusDocument};
use serde_json::Value;

pub const PROVIDER_NAME: &str = "openbao-kms-workload-a";
pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const KEY_HASH_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
pub const KEY_HASH_B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
/// Registry content digests: A alone active; B active with A retired.
pub const CONTENT_A: &str = "rcd1.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const CONTENT_B: &str = "rcd1.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A fake provider health listener; its answers can be changed while it runs.
pub struct FakeProvider {
    pub address: String,
    pub ready: Arc<Mutex<(u16, Value)>>,
    pub status: Arc<Mutex<Value>>,
    _thread: std::thread::JoinHandle<()>,
}

type Shared = (Arc<Mutex<(u16, Value)>>, Arc<Mutex<Value>>);

async fn ready(State((r, _)): State<Shared>) -> (StatusCode, String) {
    let (code, body) = r.lock().unwrap().clone();
    (StatusCode::from_u16(code).unwrap(), body.to_string())
}

async fn status(State((_, s)): State<Shared>) -> (StatusCode, String) {
    (StatusCode::OK, s.lock().unwrap().to_string())
}

impl FakeProvider {
    pub fn start(fingerprint: &str) -> Self {
        // The provider's own document types, as its health listener serves them.
        let ready_doc = ReadyDocument {
            status: "ok".into(),
            healthz: "ok".into(),
            cache_age_ms: 1500,
            stale: false,
            rotation_state: "active".into(),
            reasons: vec![],
            metadata_error_class: String::new(),
            persistence_degraded: false,
            deep_error_class: None,
        };
        let status_doc = StatusDocument {
            key_id: "obk2.test".into(),
            key_id_hash: KEY_HASH_A.into(),
            generation: 3,
            rotation_state: "active".into(),
            active_version: 2,
            latest_version: 2,
            pending_version: None,
            persistence_degraded: false,
            healthy: true,
            reasons: vec![],
            version: "0.1.0".into(),
            cache_age_seconds: 1.5,
            provider_name: PROVIDER_NAME.into(),
            identity_fingerprint: fingerprint.into(),
            content_digest: Some(CONTENT_A.into()),
            hold_at_version: None,
        };
        let ready_v = Arc::new(Mutex::new((200, serde_json::to_value(ready_doc).unwrap())));
        let status_v = Arc::new(Mutex::new(serde_json::to_value(status_doc).unwrap()));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let address = std_listener.local_addr().unwrap().to_string();
        let state: Shared = (ready_v.clone(), status_v.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let app = Router::new()
                    .route("/ready", get(ready))
                    .route("/status", get(status))
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self {
            address,
            ready: ready_v,
            status: status_v,
            _thread: thread,
        }
    }

    pub fn set_status(&self, key: &str, value: Value) {
        self.status.lock().unwrap()[key] = value;
    }

    /// Answers `/ready` with `code` and `key` set to `value` in the document.
    pub fn set_ready(&self, code: u16, key: &str, value: Value) {
        let mut r = self.ready.lock().unwrap();
        r.0 = code;
        r.1[key] = value;
    }
}

/// A node's provider files under one temp directory.
pub struct NodeTree {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub gid: u32,
    pub provider: FakeProvider,
    _socket: UnixListener,
}

impl NodeTree {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let gid = fs::metadata(&root).unwrap().gid();
        for d in ["etc/tls", "run", "state", "kubernetes/manifests"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o2750)).unwrap();
        fs::set_permissions(root.join("state"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(root.join("etc/tls/ca.crt"), "not checked by preflight\n").unwrap();
        fs::write(root.join("etc/token"), "s.test\n").unwrap();
        let socket = UnixListener::bind(root.join("run/kms.sock")).unwrap();
        fs::set_permissions(root.join("run/kms.sock"), fs::Permissions::from_mode(0o660)).unwrap();
        // The fingerprint the provider would report for this configuration.
        let fp = bao_kms_core::config::parse_yaml_with(
            &config_text(&root, gid, "127.0.0.1:1"),
            &bao_kms_core::config::ValidationContext {
                extra_socket_dirs: vec![root.join("run")],
                ..Default::default()
            },
        )
        .unwrap()
        .identity_scope()
        .fingerprint();
        let provider = FakeProvider::start(&fp);
        let tree = Self {
            dir,
            root,
            gid,
            provider,
            _socket: socket,
        };
        tree.write_config(gid);
        tree.write_encryption_config(
            PROVIDER_NAME,
            &format!("unix://{}", tree.path("run/kms.sock").display()),
            "v2",
            "",
        );
        tree.write_manifest(&tree.good_manifest());
        tree
    }

    /// A static pod manifest every manifest check passes for this tree.
    pub fn good_manifest(&self) -> ManifestSpec {
        ManifestSpec {
            image: format!("registry.example/bao-kms-provider@{DIGEST}"),
            supplemental_groups: vec![self.gid],
            mounts: vec![
                ("etc".into(), self.path("etc").display().to_string(), true),
                ("run".into(), self.path("run").display().to_string(), false),
                ("state".into(), self.path("state").display().to_string(), false),
            ],
            run_as_user: 65532,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write_config(&self, socket_gid: u32) {
        let p = self.path("etc/config.yaml");
        fs::write(&p, config_text(&self.root, socket_gid, &self.provider.address)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    }

    pub fn write_encryption_config(&self, name: &str, endpoint: &str, api_version: &str, extra: &str) {
        let text = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: {api_version}\n          name: {name}\n          endpoint: {endpoint}\n          timeout: 3s\n{extra}      - identity: {{}}\n"
        );
        fs::write(self.path("kubernetes/encryption-config.yaml"), text).unwrap();
    }

    pub fn write_manifest(&self, m: &ManifestSpec) {
        fs::write(self.path("kubernetes/manifests/bao-kms-provider.yaml"), m.render()).unwrap();
    }

    /// Arguments of `node` for this tree (JSON output).
    pub fn node_args(&self) -> Vec<String> {
        vec![
            "node".into(),
            "--config".into(),
            self.path("etc/config.yaml").display().to_string(),
            "--encryption-config".into(),
            self.path("kubernetes/encryption-config.yaml").display().to_string(),
            "--manifest".into(),
            self.path("kubernetes/manifests/bao-kms-provider.yaml")
                .display()
                .to_string(),
            "--allowed-socket-dir".into(),
            self.path("run").display().to_string(),
            "-o".into(),
            "json".into(),
        ]
    }
}

pub fn config_text(root: &Path, socket_gid: u32, health: &str) -> String {
    format!(
        r#"configVersion: v1alpha1
server:
  socketPath: {root}/run/kms.sock
  socketMode: "0660"
  socketGroup: "{socket_gid}"
  metricsAddress: ""
  healthAddress: "{health}"
openbao:
  address: https://127.0.0.1:8200
  caCertFile: {root}/etc/tls/ca.crt
  tlsServerName: localhost
  instanceId: bao-test-a
auth:
  method: token
  token:
    tokenFile: {root}/etc/token
transit:
  mountPath: transit
  keyName: k8s-workload-a-etcd
  keyIdScope:
    providerName: {PROVIDER_NAME}
    clusterId: workload-a
    transitMountId: transit-test
    keyLineageId: "01HXTESTLINEAGE"
state:
  path: {root}/state/key-registry.json
"#,
        root = root.display()
    )
}

/// Runs the preflight binary; returns (exit code, stdout, stderr).
pub fn run(args: &[String], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bao-kms-preflight"));
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .env_remove(bao_kms_preflight::node::ALLOWED_SOCKET_DIR_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `(status, message)` of check `id` in a JSON report.
pub fn check(report: &Value, id: &str) -> (String, String) {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"));
    (
        c["status"].as_str().unwrap().to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Every `(id, status)` of a JSON report.
pub fn statuses(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}
pub use bao_kms_system_tests::fake_kube as fake_api;
pub use bao_kms_system_tests::static_pod::ManifestSpec;
