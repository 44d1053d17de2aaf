//! The system tests, one binary with a module per area: the real
//! `bao-kms-provider` and `bao-kms-preflight` binaries against real OpenBao
//! servers, real Unix sockets and real file systems (harness: `src/`).
//!
//! One binary links once instead of once per area. The slow tiers, which
//! start a containerd or a Prometheus or read the OCI image archive, live
//! under [`slow`]; `make test-system` skips them and `make test-image`,
//! `make test-containerd` and `make test-prometheus` run one tier each
//! (`make test` runs all of them).

mod auth_methods;
mod batching;
mod benchmark;
mod burst;
mod cli;
mod cluster_gate;
mod decrypt_validation;
mod demo;
mod doctor;
mod drills;
mod grpc_codes;
mod harness_openbao;
mod identity_pins;
mod init;
mod key_snapshots;
mod kms_roundtrip;
mod limits;
mod log_fields;
mod openbao_outage;
mod otlp;
mod policy_openbao;
mod preflight_node;
mod probe;
mod profile;
mod promotion_hold;
mod registry_failclosed;
mod resource_limits;
mod retire_versions;
mod rotation;
mod rotation_plan;
mod serve_lifecycle;
mod slow;
mod state_directory;
mod storage;
mod systemd_units;
mod tls_openbao;
mod token_lifecycle;
