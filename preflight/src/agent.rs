//! `bao-kms-preflight agent`: on every control-plane node (the chart's
//! DaemonSet), re-run the node checks and read the local `/status` every
//! interval, and publish the result as this node's report Lease. `--once`
//! publishes one report and exits (tests, and a manual refresh).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::kube_api::{self, ApiError, KubeApi};
use crate::lease::{CheckResult, NodeSummary, timestamp_from_unix};
use crate::node::{self, NodeOptions, NodeOutcome};

/// What the agent does, from the command line.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node: NodeOptions,
    pub node_name: String,
    pub namespace: String,
    pub interval: Duration,
    pub once: bool,
}

/// The report of one round, from the node checks.
pub fn summarize(node_name: &str, outcome: &NodeOutcome, now: SystemTime) -> NodeSummary {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    // Without an answer from the provider the report says so: not
    // reachable, no key_id hash or digest, rotation state `unknown`, not
    // healthy (generation and version 0 are not compared).
    let status = outcome.status.as_ref();
    NodeSummary {
        node: node_name.to_owned(),
        key_id_hash: status.map(|s| s.key_id_hash.clone()).unwrap_or_default(),
        previous_key_id_hash: String::new(),
        generation: status.map_or(0, |s| s.generation),
        rotation_state: status
            .map(|s| s.rotation_state.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "unknown".to_owned()),
        active_version: status.map_or(0, |s| s.active_version),
        content_digest: status.and_then(|s| s.content_digest.clone()).unwrap_or_default(),
        pending_version: status.and_then(|s| s.pending_version),
        hold_at_version: status.and_then(|s| s.hold_at_version),
        provider_reachable: status.is_some(),
        highest_generation: 0,
        highest_active_version: 0,
        provider_version: status.map(|s| s.version.clone()).unwrap_or_default(),
        provider_name: status.map(|s| s.provider_name.clone()).unwrap_or_default(),
        healthy: status.is_some_and(|s| s.healthy),
        image: outcome.image.clone().unwrap_or_default(),
        image_digest: outcome.image_digest.clone().unwrap_or_default(),
        deployment_model: outcome.model.map(|m| m.as_str().to_owned()).unwrap_or_default(),
        binary: outcome.binary.clone().unwrap_or_default(),
        binary_digest: outcome.binary_digest.clone().unwrap_or_default(),
        preflight_version: crate::VERSION.to_owned(),
        checks: outcome.report.checks.iter().map(CheckResult::from).collect(),
        timestamp: timestamp_from_unix(secs, 0),
    }
}

/// A report older than three intervals is stale for the cluster check; the
/// Lease says so too.
pub fn lease_duration(interval: Duration) -> Duration {
    interval.saturating_mul(3)
}

/// One round: node checks, then publish.
pub async fn round(api: &KubeApi, opts: &AgentOptions) -> Result<NodeSummary, ApiError> {
    let outcome = node::run(&opts.node).await;
    let summary = summarize(&opts.node_name, &outcome, SystemTime::now());
    kube_api::publish(api, &opts.namespace, &summary, lease_duration(opts.interval)).await
}

/// Runs until `stop` resolves (or once). A failed publication is logged
/// and retried next round; with `--once` it is the result.
pub async fn run(
    api: KubeApi,
    opts: AgentOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ApiError> {
    tokio::pin!(stop);
    loop {
        match round(&api, &opts).await {
            Ok(s) => tracing::info!(
                node = %s.node,
                key_id_hash = %s.key_id_hash,
                generation = s.generation,
                failed_checks = s.failed_checks().len(),
                "published the node report"
            ),
            Err(e) if opts.once => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, fix = e.fix().unwrap_or_default(), "cannot publish the node report; retrying next round")
            }
        }
        if opts.once {
            return Ok(());
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(opts.interval) => {}
        }
    }
}
