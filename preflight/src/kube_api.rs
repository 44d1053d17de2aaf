//! The Kubernetes API side: a client configured like kubectl (kubeconfig
//! from `--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`, or the in-cluster
//! service account), control-plane nodes, and the per-node report Leases.
//! A request that cannot connect names its cause and fix
//! ([`connect_cause`], worded by core `checks::api_connect`).

use std::path::Path;
use std::time::Duration;

use bao_kms_core::checks::api_connect::{self, Cause};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rustls::CertificateError;

use crate::checks::cluster::{NodeInfo, ReportState};
use crate::collect::error_chain;
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
    /// No connection to the API server: the cause named, with its fix.
    #[error("{what}: {cause}")]
    Connect { what: String, cause: String, fix: String },
}

impl ApiError {
    /// The message, and on a second line `fix: ...` when there is one.
    pub fn with_fix(&self) -> String {
        match self.fix() {
            Some(fix) => format!("{self}\nfix: {fix}"),
            None => self.to_string(),
        }
    }

    /// The one-line fix of a connection failure.
    pub fn fix(&self) -> Option<&str> {
        match self {
            Self::Connect { fix, .. } => Some(fix),
            _ => None,
        }
    }
}

/// A client and where it connects, for naming a failed connection.
#[derive(Clone)]
pub struct KubeApi {
    pub client: Client,
    /// The kubeconfig's cluster URL.
    pub server: String,
    pub connect_timeout: Duration,
}

impl KubeApi {
    /// The error of `what` failing with `e`: a connection failure names
    /// its cause and fix; anything else carries the whole error chain.
    pub fn error(&self, what: &str, e: &kube::Error) -> ApiError {
        tracing::debug!(error = %error_chain(e), "{what}");
        match connect_cause(e, self.connect_timeout) {
            Some(cause) => {
                let words = api_connect::explain(&cause, &self.server);
                ApiError::Connect {
                    what: what.to_owned(),
                    cause: words.cause,
                    fix: words.fix,
                }
            }
            None => ApiError::Request(format!("{what}: {}", error_chain(e))),
        }
    }
}

/// Unix seconds as RFC 3339.
fn rfc3339(t: rustls::pki_types::UnixTime) -> String {
    lease::timestamp_from_unix(i64::try_from(t.as_secs()).unwrap_or(i64::MAX), 0).to_string()
}

/// The cause rustls names (its certificate errors are typed; a CA
/// certificate served as the end entity is webpki's `CaUsedAsEndEntity`
/// inside rustls' `Other`).
fn rustls_cause(e: &rustls::Error) -> Cause {
    let rustls::Error::InvalidCertificate(c) = e else {
        return Cause::Handshake(e.to_string());
    };
    match c {
        CertificateError::UnknownIssuer => Cause::UnknownIssuer,
        CertificateError::NotValidForNameContext { expected, presented } => Cause::NameMismatch {
            expected: expected.to_str().into_owned(),
            presented: presented.clone(),
        },
        CertificateError::NotValidForName => Cause::NameMismatch {
            expected: String::new(),
            presented: Vec::new(),
        },
        CertificateError::ExpiredContext { time, not_after } => Cause::Expired {
            not_after: rfc3339(*not_after),
            now: rfc3339(*time),
        },
        CertificateError::Expired => Cause::Expired {
            not_after: String::new(),
            now: String::new(),
        },
        CertificateError::NotValidYetContext { time, not_before } => Cause::NotYetValid {
            not_before: rfc3339(*not_before),
            now: rfc3339(*time),
        },
        CertificateError::NotValidYet => Cause::NotYetValid {
            not_before: String::new(),
            now: String::new(),
        },
        CertificateError::Other(rustls::OtherError(inner))
            if matches!(
                inner.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            Cause::CaAsServer
        }
        other => Cause::BadCertificate(format!("{other:?}")),
    }
}

/// Walks `e`'s source chain (and the errors an `io::Error` wraps, which
/// `source()` skips) for the cause of a failed connection: rustls' verdict,
/// a refused TCP connection, the connect timeout, a failed name lookup.
/// `None` when the request got an answer or failed otherwise.
pub fn connect_cause(e: &(dyn std::error::Error + 'static), connect_timeout: Duration) -> Option<Cause> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(rustls_cause(r));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref()
                && let Some(cause) = connect_cause(inner, connect_timeout)
            {
                return Some(cause);
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Some(Cause::Refused),
                std::io::ErrorKind::TimedOut => {
                    return Some(Cause::Timeout {
                        seconds: connect_timeout.as_secs(),
                    });
                }
                _ => {}
            }
        }
        // hyper-util's connector error has no public type; its text for a
        // failed lookup is fixed.
        if err.to_string() == "dns error" {
            return Some(Cause::Dns);
        }
        current = err.source();
    }
    None
}

/// A client configured like kubectl: `kubeconfig` (else `$KUBECONFIG`,
/// `~/.kube/config`, else in-cluster) and `context` (else the current one),
/// connecting within `connect_timeout` (TCP and TLS handshake).
/// Returns it with the namespace of the context (or of the pod).
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    connect_timeout: Duration,
) -> Result<(KubeApi, String), ApiError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let mut config = match kubeconfig {
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
    config.connect_timeout = Some(connect_timeout);
    let namespace = config.default_namespace.clone();
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| ApiError::Config(e.to_string()))?;
    Ok((
        KubeApi {
            client,
            server: server.trim_end_matches('/').to_owned(),
            connect_timeout,
        },
        namespace,
    ))
}

/// Every node labelled [`CONTROL_PLANE_LABEL`], sorted by name, with the
/// names of the images it holds.
pub async fn control_plane_nodes(api: &KubeApi) -> Result<Vec<NodeInfo>, ApiError> {
    let list = Api::<Node>::all(api.client.clone())
        .list(&ListParams::default().labels(CONTROL_PLANE_LABEL))
        .await
        .map_err(|e| api.error("listing control-plane nodes", &e))?;
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
pub async fn node_report(api: &KubeApi, namespace: &str, node: &str) -> Result<ReportState, ApiError> {
    let leases: Api<Lease> = Api::namespaced(api.client.clone(), namespace);
    let name = lease::lease_name(node);
    match leases
        .get_opt(&name)
        .await
        .map_err(|e| api.error(&format!("reading Lease {namespace}/{name}"), &e))?
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
    api: &KubeApi,
    namespace: &str,
    summary: &lease::NodeSummary,
    lease_duration: std::time::Duration,
) -> Result<lease::NodeSummary, ApiError> {
    let leases: Api<Lease> = Api::namespaced(api.client.clone(), namespace);
    let name = lease::lease_name(&summary.node);
    let stored = leases
        .get_opt(&name)
        .await
        .map_err(|e| api.error(&format!("reading Lease {namespace}/{name}"), &e))?;
    let previous = stored.as_ref().and_then(|l| lease::from_lease(l).ok());
    let summary = lease::carry_forward(summary, previous.as_ref());
    let desired = lease::to_lease(&summary, namespace, lease_duration, stored.as_ref());
    let pp = PostParams {
        field_manager: Some(lease::APP_NAME.to_owned()),
        ..PostParams::default()
    };
    match stored {
        None => leases
            .create(&pp, &desired)
            .await
            .map(|_| summary)
            .map_err(|e| api.error(&format!("creating Lease {namespace}/{name}"), &e)),
        Some(_) => leases
            .replace(&name, &pp, &desired)
            .await
            .map(|_| summary)
            .map_err(|e| api.error(&format!("updating Lease {namespace}/{name}"), &e)),
    }
}
