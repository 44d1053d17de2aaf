//! A fake Kubernetes API server on loopback (plain HTTP) implementing only
//! what preflight uses: LIST nodes (label selector by key), and GET, POST,
//! PUT of `coordination.k8s.io/v1` Leases with resourceVersion conflicts.
//! It records every request and writes a kubeconfig pointing at itself.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Method, StatusCode, Uri};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Default)]
pub struct ApiState {
    pub nodes: Vec<Value>,
    /// By (namespace, name).
    pub leases: BTreeMap<(String, String), Value>,
    pub resource_version: u64,
    /// `METHOD path?query` of every request.
    pub requests: Vec<String>,
}

pub struct FakeApi {
    pub address: String,
    pub state: Arc<Mutex<ApiState>>,
    _thread: std::thread::JoinHandle<()>,
}

type Shared = Arc<Mutex<ApiState>>;

fn status(code: u16, reason: &str, message: String) -> (StatusCode, String) {
    (
        StatusCode::from_u16(code).unwrap(),
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code})
        .to_string(),
    )
}

async fn list_nodes(State(s): State<Shared>, uri: Uri) -> (StatusCode, String) {
    let mut st = s.lock().unwrap();
    st.requests.push(format!("GET {uri}"));
    let selector = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
        .map(|v| v.replace("%2F", "/"));
    let items: Vec<Value> = st
        .nodes
        .iter()
        .filter(|n| match &selector {
            None => true,
            Some(key) => n["metadata"]["labels"].get(key.as_str()).is_some(),
        })
        .cloned()
        .collect();
    (
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "1"}, "items": items})
            .to_string(),
    )
}

async fn lease_item(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    body: Bytes,
) -> (StatusCode, String) {
    let mut st = s.lock().unwrap();
    st.requests.push(format!("{method} {uri}"));
    let key = (ns.clone(), name.clone());
    match method {
        Method::GET => match st.leases.get(&key) {
            Some(l) => (StatusCode::OK, l.to_string()),
            None => status(
                404,
                "NotFound",
                format!("leases.coordination.k8s.io \"{name}\" not found"),
            ),
        },
        Method::PUT => {
            let mut obj: Value = serde_json::from_slice(&body).unwrap();
            let Some(stored) = st.leases.get(&key) else {
                return status(
                    404,
                    "NotFound",
                    format!("leases.coordination.k8s.io \"{name}\" not found"),
                );
            };
            if obj["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                return status(409, "Conflict", "the object has been modified".into());
            }
            st.resource_version += 1;
            obj["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
            st.leases.insert(key, obj.clone());
            (StatusCode::OK, obj.to_string())
        }
        _ => status(405, "MethodNotAllowed", "method not allowed".into()),
    }
}

async fn create_lease(
    State(s): State<Shared>,
    uri: Uri,
    UrlPath(ns): UrlPath<String>,
    body: Bytes,
) -> (StatusCode, String) {
    let mut st = s.lock().unwrap();
    st.requests.push(format!("POST {uri}"));
    let mut obj: Value = serde_json::from_slice(&body).unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
    let key = (ns.clone(), name.clone());
    if st.leases.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{name}\" already exists"),
        );
    }
    st.resource_version += 1;
    obj["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
    obj["metadata"]["namespace"] = json!(ns);
    st.leases.insert(key, obj.clone());
    (StatusCode::CREATED, obj.to_string())
}

impl FakeApi {
    pub fn start() -> Self {
        let state: Shared = Arc::new(Mutex::new(ApiState::default()));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let address = std_listener.local_addr().unwrap().to_string();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let app = Router::new()
                    .route("/api/v1/nodes", get(list_nodes))
                    .route(
                        "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                        axum::routing::post(create_lease),
                    )
                    .route(
                        "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                        get(lease_item).put(lease_item),
                    )
                    .with_state(shared);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self {
            address,
            state,
            _thread: thread,
        }
    }

    /// A kubeconfig for this server (context namespace `namespace`).
    pub fn write_kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
                self.address
            ),
        )
        .unwrap();
        path
    }

    /// Adds a node; `control_plane` sets the control-plane label;
    /// `images` are the names in `status.images`.
    pub fn add_node(&self, name: &str, control_plane: bool, images: &[&str]) {
        let labels = if control_plane {
            json!({"kubernetes.io/hostname": name, "node-role.kubernetes.io/control-plane": ""})
        } else {
            json!({"kubernetes.io/hostname": name})
        };
        self.state.lock().unwrap().nodes.push(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "status": {"images": [{"names": images, "sizeBytes": 12345678}]},
        }));
    }

    pub fn put_lease(&self, namespace: &str, lease: &k8s_openapi::api::coordination::v1::Lease) {
        let mut v = serde_json::to_value(lease).unwrap();
        let mut st = self.state.lock().unwrap();
        st.resource_version += 1;
        v["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
        let name = v["metadata"]["name"].as_str().unwrap().to_owned();
        st.leases.insert((namespace.to_owned(), name), v);
    }

    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .leases
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}
