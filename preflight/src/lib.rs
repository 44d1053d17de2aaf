//! bao-kms-preflight: node-local checks, a node agent, and a kubectl-style
//! cluster checker for bao-kms-provider (docs/preflight.md).
//!
//! Data flow: [`cli`] -> collect ([`collect`]: files, local `/status`)
//! -> [`checks`] (pure, calling the provider core for configuration and
//! EncryptionConfiguration rules) -> [`report`] -> exit code.
//!
//! - [`node`]: `bao-kms-preflight node`, the node checks in dependency order.
//! - [`agent`]: `bao-kms-preflight agent`, the node checks every interval,
//!   published as one `coordination.k8s.io/v1` Lease per node ([`lease`]).
//! - [`cluster`]: `bao-kms-preflight cluster`, every control-plane node's
//!   report through the Kubernetes API ([`kube_api`]), cross-node checks.
//! - [`storage`]: `bao-kms-preflight storage`, how every object in etcd is
//!   encrypted ([`etcd`]: read-only paging client), with gates.
//! - [`rewrite`]: `bao-kms-preflight rewrite`, every object of the
//!   encrypted resources replaced unchanged through the Kubernetes API.

pub mod agent;
pub mod checks;
pub mod cli;
pub mod cluster;
pub mod collect;
pub mod etcd;
pub mod kube_api;
pub mod lease;
pub mod node;
pub mod report;
pub mod rewrite;
pub mod storage;

/// Version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit codes (the provider CLI's): 0 every check passed, 2 usage,
/// 4 a check failed, 5 a runtime failure (e.g. the API server unreachable).
pub mod exit {
    pub const OK: u8 = 0;
    pub const USAGE: u8 = 2;
    pub const CHECK_FAILED: u8 = 4;
    pub const RUNTIME: u8 = 5;
}
