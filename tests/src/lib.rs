//! Harness for the system tests: the real `bao-kms-provider` binary, serving
//! on a real Unix socket, against a real OpenBao server, driven by a client
//! that behaves like kube-apiserver.
//!
//! Layout, in the order a test uses it:
//! - [`openbao`]: start an OpenBao dev server (TLS, in memory) or a persistent
//!   raft server (own CA, 1-of-1 unseal key) on free loopback ports; run the
//!   real `bao` CLI against it; stop, restart, seal and unseal it.
//! - [`openbao::provision`]: Transit mount, aes256-gcm96 key,
//!   `disable_upsert`, the documented least-privilege policy and a token that
//!   holds only that policy.
//! - [`provider`]: a temp directory with config, token file, state and socket
//!   directories ([`provider::ProviderEnv`]), and the provider process
//!   ([`provider::Provider`]) with its health, status and metrics endpoints.
//! - [`oauth2`]: a local OAuth2 token endpoint (client credentials, HTTPS).
//! - [`kms_client`]: the kube-apiserver side of KMS v2 over the socket, with
//!   the same per-call deadline and the same checks of every response.
//! - [`metrics`]: reading samples out of Prometheus text.
//! - [`otlp_receiver`]: an OTLP/gRPC receiver on the official protobuf
//!   definitions, keeping the spans and metric points it is sent.
//! - [`fault_proxy`]: a TCP proxy between the provider and OpenBao that
//!   pauses, resets, blackholes or slows the connections.
//! - [`net`], [`wait`]: free loopback ports and bounded polling.
//! - [`process`]: kill-on-drop child processes and checked commands.
//! - [`crash`]: SIGKILL injected by the real `strace` at each write step of
//!   a registry save.
//! - [`etcd`]: a real etcd with TLS client certificates, as kube-apiserver's store.
//! - [`fake_kube`]: the fake Kubernetes API (nodes, Leases, core objects) the
//!   preflight agents and `cluster` talk to.
//! - [`static_pod`]: the provider's static pod manifest as a node holds it.
//! - [`containerd`]: a throw-away containerd for the image and hook tests.
//! - [`prometheus`]: a real Prometheus for the alert-rule and dashboard tests.
//! - [`modgraph`]: the module graph of a crate read from its sources; its
//!   test holds the workspace's crates to no import cycles.
//! - [`nspawn`]: a booted Debian system (systemd as PID 1) for the systemd
//!   model; [`install_doc`]: the install guide's tables the tests check.
//!
//! Every child process is killed when its handle is dropped, and every file
//! lives in a temp directory removed at the end of the test.

pub mod containerd;
pub mod crash;
pub mod doctor;
pub mod etcd;
pub mod fake_kube;
pub mod fault_proxy;
pub mod init_files;
pub mod install_doc;
pub mod kms_client;
pub mod metrics;
pub mod modgraph;
pub mod net;
pub mod nspawn;
pub mod oauth2;
pub mod openbao;
pub mod otlp_receiver;
pub mod process;
pub mod prometheus;
pub mod provider;
pub mod static_pod;
pub mod wait;

pub use kms_client::{EncryptedSeed, KmsClient};
pub use metrics::{counter, increase, metric};
pub use openbao::{KeyMetadata, OpenBao, Provisioned, provision};
pub use provider::{Provider, ProviderEnv};

/// Deadline kube-apiserver puts on every KMS call (`kms.timeout` default).
pub const KMS_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
