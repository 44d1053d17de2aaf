//! bao-kms-provider: the I/O shell around `bao_kms_core`, named along the
//! request path:
//!
//! kube-apiserver -> [`socket`] (Unix socket lifecycle) -> [`service`]
//! (KMS v2 gRPC, concurrency, metrics) -> [`runtime`] (published status
//! snapshot, registry, startup, probes and rotation, Encrypt/Decrypt) ->
//! [`transit`] (the seam) -> [`openbao`] (HTTPS to Transit) with [`auth`]
//! (token lifecycle). [`state`] persists the registry;
//! [`health`] and [`metrics`] serve `/live`, `/ready`, `/status`, `/metrics`;
//! [`listen`] caps, times out and accepts the connections of all three
//! listeners; [`serve`] wires it together and handles shutdown. [`probe_cmd`] is the
//! client side used by `bao-kms-provider probe`; [`cli`] is the command
//! line `main` parses (and the man pages are generated from); [`stdout`]
//! is where every command prints, a closed pipe ending it quietly.

pub mod auth;
pub mod benchmark;
pub mod build;
pub mod cli;
pub mod config_file;
pub mod correlation;
pub mod doctor;
pub mod fsutil;
pub mod health;
pub mod init;
pub mod key_snapshots;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod openbao;
pub mod policy;
pub mod probe_cmd;
pub mod repin;
pub mod report;
pub mod request_log;
pub mod retire;
pub mod rotation_plan;
pub mod runtime;
pub mod serve;
pub mod service;
pub mod singleflight;
pub mod socket;
pub mod state;
pub mod stdout;
pub mod storage_report;
pub mod telemetry;
pub mod transit;

/// Wall-clock Unix seconds (0 if the clock is before the epoch). The only
/// place the provider reads the wall clock; the rules in core take it as input.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Version of this build (also the `plugin-version.kms.openbao.org` annotation).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
