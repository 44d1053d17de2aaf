//! `bao-kms-preflight cluster`: list the control-plane nodes, read every
//! node's report Lease, and run the cluster checks.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bao_kms_core::checks::artifact::Expected;

use crate::checks::cluster::{self, ClusterInputs, ClusterReport, Phase};
use crate::kube_api::{self, ApiError, KubeApi};
use crate::lease::timestamp_from_unix;

/// What `cluster` checks, from the command line.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub namespace: String,
    pub max_age: Duration,
    pub phase: Option<Phase>,
    pub before_key_id_hash: Option<String>,
    /// Digests each deployment model's nodes must run.
    pub expected: Expected,
}

/// Reads the nodes and their reports, then evaluates.
pub async fn run(api: &KubeApi, opts: &ClusterOptions) -> Result<ClusterReport, ApiError> {
    let nodes = kube_api::control_plane_nodes(api).await?;
    let mut reports = BTreeMap::new();
    for n in &nodes {
        reports.insert(
            n.name.clone(),
            kube_api::node_report(api, &opts.namespace, &n.name).await?,
        );
    }
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let inputs = ClusterInputs {
        namespace: opts.namespace.clone(),
        nodes,
        reports,
        now: timestamp_from_unix(i64::try_from(since.as_secs()).unwrap_or(i64::MAX), 0),
        max_age: opts.max_age,
        phase: opts.phase,
        before_key_id_hash: opts.before_key_id_hash.clone(),
        expected: opts.expected.clone(),
    };
    Ok(cluster::evaluate(&inputs))
}
