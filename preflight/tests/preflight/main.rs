//! `bao-kms-preflight` tests in one binary: the node checks on real files,
//! the agent and the cluster check against a fake Kubernetes API server
//! (`common::fake_api`), the binary as the kubectl plugin `kubectl bao-kms`,
//! and the Helm chart rendered by Helm's own engine.

#![allow(clippy::unwrap_used)]

mod api_tls;
mod chart;
mod cluster;
mod common;
mod node;
mod plugin;
mod rewrite;
