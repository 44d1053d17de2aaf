//! The Kubernetes API side: a client configured like kubectl (kubeconfig
//! from `--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`, or the in-cluster
//! service account), control-plane nodes, and the per-node report Leases.

use std::path::Path;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::checks::cluster::{NodeInfo, ReportState};
use crate::lease;

/// Label every control-plane node carries (kubeadm and most installers).
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Why the API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot load the kubeconfig: {0}")]
    Config(String),
    #[error("{0}")]
    Request(String),
}

fn request_error(what: &str, e: kube::Error) -> ApiError {
    ApiError::Request(format!("{what}: {e}"))
}

/// A client configured like kubectl: `kubeconfig` (else `$KUBECONFIG`,
/// `~/.kube/config`, else in-cluster) and `context` (else the current one).
/// Returns it with the namespace of the context (or of the pod).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<(Client, String), ApiError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| ApiError::Config(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| ApiError::Config(e.to_string()))?
        }
        None if context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| ApiError::Config(e.to_string()))?,
        None => Config::infer().await.map_err(|e| ApiError::Config(e.to_string()))?,
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| ApiError::Config(e.to_string()))?;
    Ok((client, namespace))
}

/// Every node labelled [`CONTROL_PLANE_LABEL`], sorted by name, with the
/// names of the images it holds.
pub async fn control_plane_nodes(client: &Client) -> Result<Vec<NodeInfo>, ApiError> {
    let api: Api<Node> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(CONTROL_PLANE_LABEL))
        .await
        .map_err(|e| request_error("listing control-plane nodes", e))?;
    let mut nodes: Vec<NodeInfo> = list
        .items
        .into_iter()
        .map(|n| NodeInfo {
            name: n.metadata.name.unwrap_or_default(),
            images: n
                .status
                .and_then(|s| s.images)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|i| i.names.unwrap_or_default())
                .collect(),
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// The report Lease of `node`, read and parsed.
pub async fn node_report(client: &Client, namespace: &str, node: &str) -> Result<ReportState, ApiError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = lease::lease_name(node);
    match api
        .get_opt(&name)
        .await
        .map_err(|e| request_error(&format!("reading Lease {namespace}/{name}"), e))?
    {
        None => Ok(ReportState::Missing),
        Some(l) => Ok(match lease::from_lease(&l) {
            Ok(s) => ReportState::Present(Box::new(s)),
            Err(e) => ReportState::Invalid(e.to_string()),
        }),
    }
}

/// Creates or replaces this node's report Lease (optimistic concurrency:
/// a replace carries the stored `resourceVersion`; a conflict is an error
/// and the next round retries). The stored report is the node's previous
/// one ([`lease::carry_forward`]); returns the report as published.
pub async fn publish(
    client: &Client,
    namespace: &str,
    summary: &lease::NodeSummary,
    lease_duration: std::time::Duration,
) -> Result<lease::NodeSummary, ApiError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = lease::lease_name(&summary.node);
    let stored = api
        .get_opt(&name)
        .await
        .map_err(|e| request_error(&format!("reading Lease {namespace}/{name}"), e))?;
    let previous = stored.as_ref().and_then(|l| lease::from_lease(l).ok());
    let summary = lease::carry_forward(summary, previous.as_ref());
    let desired = lease::to_lease(&summary, namespace, lease_duration, stored.as_ref());
    let pp = PostParams {
        field_manager: Some(lease::APP_NAME.to_owned()),
        ..PostParams::default()
    };
    match stored {
        None => api
            .create(&pp, &desired)
            .await
            .map(|_| summary)
            .map_err(|e| request_error(&format!("creating Lease {namespace}/{name}"), e)),
        Some(_) => api
            .replace(&name, &pp, &desired)
            .await
            .map(|_| summary)
            .map_err(|e| request_error(&format!("updating Lease {namespace}/{name}"), e)),
    }
}
