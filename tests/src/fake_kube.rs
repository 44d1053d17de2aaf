//! A fake Kubernetes API server on loopback (plain HTTP) implementing only
//! what preflight uses: LIST nodes (label selector by key), and GET, POST,
//! PUT of `coordination.k8s.io/v1` Leases with resourceVersion conflicts.
//! For `rewrite`: core-group discovery (`/api`, `/api/v1`), LIST of
//! namespaced core objects (`secrets`, `configmaps`) across namespaces with
//! `limit` and `continue`, and GET and PUT of one object with
//! resourceVersion conflicts, injectable extra conflicts and a count of the
//! writes each object received.
//! It records every request and writes a kubeconfig pointing at itself.
//! Shared by preflight's tests and the system tests that run real agents.

// A fixture of the tests that drive it: a request it cannot answer, or a
// poisoned lock, is a failed test, so it panics instead of threading errors.
#![allow(clippy::unwrap_used)]

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
    /// Core objects by (resource, namespace, name).
    pub objects: BTreeMap<ObjectKey, Value>,
    /// Conflicts to answer to the next PUTs of an object (as if someone
    /// else updated it in between: its resourceVersion moves on).
    pub conflicts: BTreeMap<ObjectKey, u32>,
    /// Successful PUTs per object.
    pub writes: BTreeMap<ObjectKey, u32>,
    /// Continue tokens answered with 410 Gone (expired).
    pub expired_tokens: Vec<String>,
}

/// (resource, namespace, name).
pub type ObjectKey = (String, String, String);

/// Resources the fake serves in the core group.
pub const CORE_RESOURCES: [(&str, &str); 2] = [("secrets", "Secret"), ("configmaps", "ConfigMap")];

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

fn query_param(uri: &Uri, key: &str) -> Option<String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(|v| v.replace("%2F", "/").replace("%3D", "="))
}

async fn core_versions(State(s): State<Shared>, uri: Uri) -> (StatusCode, String) {
    s.lock().unwrap().requests.push(format!("GET {uri}"));
    (
        StatusCode::OK,
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}).to_string(),
    )
}

async fn core_resources(State(s): State<Shared>, uri: Uri) -> (StatusCode, String) {
    s.lock().unwrap().requests.push(format!("GET {uri}"));
    let mut resources: Vec<Value> = CORE_RESOURCES
        .iter()
        .map(|(plural, kind)| {
            json!({"name": plural, "singularName": "", "namespaced": true, "kind": kind,
                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    resources.push(
        json!({"name": "nodes", "singularName": "", "namespaced": false, "kind": "Node",
                          "verbs": ["get", "list"]}),
    );
    (
        StatusCode::OK,
        json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}).to_string(),
    )
}

/// LIST across namespaces, ordered by (namespace, name); the continue
/// token is the key of the last object returned.
async fn list_objects(State(s): State<Shared>, uri: Uri, UrlPath(resource): UrlPath<String>) -> (StatusCode, String) {
    let mut st = s.lock().unwrap();
    st.requests.push(format!("GET {uri}"));
    let Some((_, kind)) = CORE_RESOURCES.iter().find(|(p, _)| *p == resource) else {
        return status(
            404,
            "NotFound",
            format!("the server could not find the requested resource {resource}"),
        );
    };
    let limit: usize = query_param(&uri, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let after = query_param(&uri, "continue");
    if let Some(token) = &after
        && st.expired_tokens.contains(token)
    {
        return status(410, "Expired", "The provided continue parameter is too old".into());
    }
    let mut items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((r, ns, name), _)| *r == resource && after.as_ref().is_none_or(|a| format!("{ns}/{name}") > *a))
        .map(|(_, v)| v.clone())
        .collect();
    let more = items.len() > limit;
    items.truncate(limit);
    let token = if more {
        let last = items.last().unwrap();
        format!(
            "{}/{}",
            last["metadata"]["namespace"].as_str().unwrap(),
            last["metadata"]["name"].as_str().unwrap()
        )
    } else {
        String::new()
    };
    (
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": format!("{kind}List"),
               "metadata": {"resourceVersion": st.resource_version.to_string(), "continue": token},
               "items": items})
        .to_string(),
    )
}

async fn object_item(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    UrlPath((ns, resource, name)): UrlPath<(String, String, String)>,
    body: Bytes,
) -> (StatusCode, String) {
    let mut st = s.lock().unwrap();
    st.requests.push(format!("{method} {uri}"));
    let key = (resource.clone(), ns, name.clone());
    let not_found = || status(404, "NotFound", format!("{resource} \"{name}\" not found"));
    match method {
        Method::GET => match st.objects.get(&key) {
            Some(o) => (StatusCode::OK, o.to_string()),
            None => not_found(),
        },
        Method::PUT => {
            let mut obj: Value = serde_json::from_slice(&body).unwrap();
            let Some(stored) = st.objects.get(&key).cloned() else {
                return not_found();
            };
            let pending = st.conflicts.get(&key).copied().unwrap_or(0);
            if pending > 0 {
                st.conflicts.insert(key.clone(), pending - 1);
                st.resource_version += 1;
                let rv = st.resource_version.to_string();
                st.objects.get_mut(&key).unwrap()["metadata"]["resourceVersion"] = json!(rv);
            }
            let stored_rv = st.objects[&key]["metadata"]["resourceVersion"].clone();
            if obj["metadata"]["resourceVersion"] != stored_rv || pending > 0 {
                return status(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            // An update never changes the data of a no-op replace.
            assert_eq!(obj["data"], stored["data"], "rewrite changed the object's data");
            st.resource_version += 1;
            obj["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
            st.objects.insert(key.clone(), obj.clone());
            *st.writes.entry(key).or_default() += 1;
            (StatusCode::OK, obj.to_string())
        }
        _ => status(405, "MethodNotAllowed", "method not allowed".into()),
    }
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
                    .route("/api", get(core_versions))
                    .route("/api/v1", get(core_resources))
                    .route("/api/v1/{resource}", get(list_objects))
                    .route(
                        "/api/v1/namespaces/{ns}/{resource}/{name}",
                        get(object_item).put(object_item),
                    )
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

    /// Adds a core object (`secrets` or `configmaps`) with `data`.
    pub fn add_object(&self, resource: &str, namespace: &str, name: &str, data: Value) {
        let kind = CORE_RESOURCES.iter().find(|(p, _)| *p == resource).unwrap().1;
        let mut st = self.state.lock().unwrap();
        st.resource_version += 1;
        let obj = json!({"apiVersion": "v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace,
                         "resourceVersion": st.resource_version.to_string()},
            "data": data});
        st.objects.insert((resource.into(), namespace.into(), name.into()), obj);
    }

    /// Answers the next `n` PUTs of an object with a conflict.
    pub fn conflict_next(&self, resource: &str, namespace: &str, name: &str, n: u32) {
        self.state
            .lock()
            .unwrap()
            .conflicts
            .insert((resource.into(), namespace.into(), name.into()), n);
    }

    /// Successful PUTs per object of `resource`.
    pub fn writes(&self, resource: &str) -> BTreeMap<(String, String), u32> {
        self.state
            .lock()
            .unwrap()
            .writes
            .iter()
            .filter(|((r, _, _), _)| r == resource)
            .map(|((_, ns, n), c)| ((ns.clone(), n.clone()), *c))
            .collect()
    }
}
