//! Configuration: the published `configVersion: v1alpha1` schema
//! (docs/configuration.md), parsed strictly and validated into typed values.
//!
//! Flow: YAML text -> [`raw`] serde structs (unknown fields rejected, no
//! scalar coercion) -> defaults -> [`validate`] (every problem collected,
//! path-qualified) -> [`Config`]. File-system checks that need I/O (the config
//! file's own mode, the CA file) live in the provider crate; rules that only
//! need values live here.
//!
//! Layout: this file holds the validated types; [`schema`] the published
//! JSON Schema; [`raw`] the serde view of the file; [`validate`] the
//! validation pass, one module per section; beside them the problem type
//! (`error`), the environment and flag overrides (`overrides`) and Go-style
//! durations (`duration`), whose items are re-exported here.

mod duration;
mod error;
mod overrides;
pub mod raw;
pub mod schema;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

use crate::identity::IdentityScope;

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors};
pub use overrides::{Override, Overrides, ValidationContext};
pub use validate::{parse_yaml, parse_yaml_with};

/// Default path of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/openbao-kms/config.yaml";
/// The only accepted `configVersion`.
pub const CONFIG_VERSION: &str = "v1alpha1";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub openbao: OpenBaoConfig,
    pub auth: AuthConfig,
    pub transit: TransitConfig,
    pub bootstrap: BootstrapConfig,
    pub status: StatusConfig,
    pub state: StateConfig,
    pub rotation: RotationConfig,
    pub logging: LoggingConfig,
    pub telemetry: TelemetryConfig,
}

impl Config {
    /// The identity-bearing values every key_id and AAD is bound to.
    pub fn identity_scope(&self) -> IdentityScope {
        IdentityScope {
            provider_name: self.transit.key_id_scope.provider_name.clone(),
            cluster_id: self.transit.key_id_scope.cluster_id.clone(),
            openbao_instance_id: self.openbao.instance_id.clone(),
            openbao_namespace: self.openbao.namespace.clone(),
            transit_mount_id: self.transit.key_id_scope.transit_mount_id.clone(),
            key_lineage_id: self.transit.key_id_scope.key_lineage_id.clone(),
            transit_mount_path: self.transit.mount_path.clone(),
            transit_key_name: self.transit.key_name.clone(),
        }
    }
}

/// Test and development knob: one absolute directory in which the socket
/// may also be created, in addition to `/run/openbao-kms` and
/// `/var/run/openbao-kms`. Integration tests and `make demo` set it to a
/// temporary directory; production deployments leave it unset. Read by the
/// provider and by preflight.
pub const ALLOWED_SOCKET_DIR_ENV: &str = "BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR";

/// Permission bits a private file (the configuration, credentials, keys)
/// must not have: group write or execute, any world access ("0640 or
/// stricter"). The provider refuses such a file; preflight and doctor judge
/// it by the same rule.
pub const PRIVATE_FILE_FORBIDDEN_MODE: u32 = 0o037;

/// Permission bits `server.socketMode` must not have: execute for anyone,
/// any world access.
pub const SOCKET_MODE_FORBIDDEN: u32 = 0o117;

/// Permission bits the socket needs for kube-apiserver to connect through
/// the socket group: group read and write.
pub const SOCKET_MODE_GROUP_RW: u32 = 0o060;

/// `server.socketGroup`: a group name (systemd) or a numeric GID (static pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketGroup {
    Name(String),
    Gid(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Absolute; parent is `/run/openbao-kms` or `/var/run/openbao-kms` or below.
    pub socket_path: PathBuf,
    /// Octal permission bits, never intersecting 0o117.
    pub socket_mode: u32,
    pub socket_group: SocketGroup,
    /// `host:port`; `None` when configured as the empty string (listener disabled).
    pub metrics_address: Option<String>,
    /// `host:port` for `/live`, `/ready`, `/status`; `None` when disabled.
    pub health_address: Option<String>,
    pub max_concurrent_status: u32,
    pub max_concurrent_encrypt: u32,
    pub max_concurrent_decrypt: u32,
    /// Calls that may wait for a busy method's slot (0: none, refused at once).
    pub max_queued_status: u32,
    pub max_queued_encrypt: u32,
    pub max_queued_decrypt: u32,
    /// Longest wait for a slot when the caller's deadline is later or absent.
    pub max_queue_wait: Duration,
    /// Most distinct Decrypts one Transit `batch_input` call carries (1: no batching).
    pub decrypt_batch_max_items: u32,
    /// Longest a Decrypt waits for a free Transit call before it gets one
    /// of its own beyond `max_concurrent_decrypt_calls`.
    pub decrypt_batch_max_wait: Duration,
    /// Transit decrypt calls in flight before Decrypts queue up to be batched.
    pub max_concurrent_decrypt_calls: u32,
    /// Connections the KMS socket holds open at once; one more is closed at accept.
    pub max_kms_connections: u32,
    /// Connections the health listener holds open at once.
    pub max_health_connections: u32,
    /// Connections the metrics listener holds open at once.
    pub max_metrics_connections: u32,
    /// Longest an HTTP connection may take to send a request's headers,
    /// also the idle time of a kept-alive HTTP connection.
    pub http_header_read_timeout: Duration,
    /// A KMS connection whose peer sent nothing for this long is closed;
    /// longer than the keepalive interval plus its timeout, so a live
    /// client (which answers the server's pings) is never idle.
    pub kms_idle_timeout: Duration,
    /// Interval of the server's HTTP/2 pings on a KMS connection.
    pub kms_keepalive_interval: Duration,
    /// A ping unanswered for this long closes the KMS connection.
    pub kms_keepalive_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenBaoConfig {
    /// `https://host[:port]` without path suffix, userinfo, query or fragment.
    pub address: String,
    /// Identity-bearing; empty means no namespace. Sent as `X-Vault-Namespace`.
    pub namespace: String,
    pub ca_cert_file: PathBuf,
    pub tls_server_name: String,
    /// Deadline of one OpenBao request.
    pub timeout: Duration,
    /// Identity-bearing.
    pub instance_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub method: AuthMethod,
    pub login_before_token_expiry: Duration,
    pub token_renewal_increment: Duration,
    /// Effective login timeout: `loginTimeout`, or `max(openbao.timeout, 5s)` when it is `0s`.
    pub login_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthMethod {
    Jwt(JwtAuth),
    Cert(CertAuth),
    AppRole(AppRoleAuth),
    Token(TokenAuth),
}

impl AuthMethod {
    /// The `auth.method` value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Jwt(_) => "jwt",
            Self::Cert(_) => "cert",
            Self::AppRole(_) => "approle",
            Self::Token(_) => "token",
        }
    }

    /// Where the client certificate comes from (`pkcs11`, `file`), or
    /// `none` for methods without one.
    pub fn certificate_source(&self) -> &'static str {
        match self {
            Self::Cert(CertAuth {
                source: CertSource::Pkcs11(_),
                ..
            }) => "pkcs11",
            Self::Cert(CertAuth {
                source: CertSource::File { .. },
                ..
            }) => "file",
            _ => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtAuth {
    /// Relative path including `auth/`, e.g. `auth/k8s-workload-a-jwt`.
    pub mount_path: String,
    pub role: String,
    /// Where the JWT of each login comes from.
    pub source: JwtSource,
    pub min_remaining_ttl: Duration,
    pub clock_skew_leeway: Duration,
    pub expected_issuer: Option<String>,
    pub expected_audience: Vec<String>,
    pub expected_subject: Option<String>,
}

impl JwtAuth {
    /// The JWT file of the `file` source.
    pub fn jwt_file(&self) -> Option<&std::path::Path> {
        match &self.source {
            JwtSource::File { jwt_file } => Some(jwt_file),
            JwtSource::OAuth2(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtSource {
    /// A file kept fresh by an external issuer, re-read before every login.
    File { jwt_file: PathBuf },
    /// An OAuth2 client-credentials grant at a token endpoint.
    OAuth2(OAuth2Source),
}

/// `auth.jwt.oauth2`: the client-credentials grant (RFC 6749 section 4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Source {
    /// `https://` token endpoint (query allowed, no user info or fragment).
    pub token_url: String,
    pub client_id: String,
    /// Re-read before every grant.
    pub client_secret_file: PathBuf,
    pub auth_method: ClientAuthMethod,
    /// Joined with spaces into `scope`.
    pub scopes: Vec<String>,
    /// The issuer-specific `audience` request parameter.
    pub audience: Option<String>,
    /// RFC 8707 `resource` parameters, in order.
    pub resources: Vec<String>,
    /// CA bundle for the token endpoint; none = the system's roots.
    pub ca_cert_file: Option<PathBuf>,
}

/// How the client authenticates to the token endpoint (no fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl ClientAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    File {
        certificate_file: PathBuf,
        key_file: PathBuf,
    },
    Pkcs11(Pkcs11Source),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Source {
    pub certificate_file: PathBuf,
    pub module_path: PathBuf,
    pub token_label: String,
    pub key_label: String,
    pub pin_file: PathBuf,
    pub max_sessions: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertAuth {
    pub mount_path: String,
    /// OpenBao cert role `name`; empty lets OpenBao try every role.
    pub name: String,
    pub source: CertSource,
    pub min_remaining_ttl: Duration,
    pub clock_skew_leeway: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRoleAuth {
    pub mount_path: String,
    pub role_id_file: PathBuf,
    pub secret_id_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuth {
    /// Development only: a token read from this file.
    pub token_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdScope {
    pub provider_name: String,
    pub cluster_id: String,
    pub transit_mount_id: String,
    pub key_lineage_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitConfig {
    /// Identity-bearing; relative, slashes trimmed.
    pub mount_path: String,
    /// Identity-bearing; one path segment.
    pub key_name: String,
    pub key_id_scope: KeyIdScope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapConfig {
    pub grace_timeout: Duration,
    pub retry_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    pub probe_interval: Duration,
    pub deep_probe_interval: Duration,
    pub status_max_staleness: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Absolute; checkpoint is `<path>.checkpoint`, lock is `<path>.lock`.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationConfig {
    pub activation_delay: Duration,
    pub require_stable_observation_count: u32,
    pub reject_version_rollback: bool,
    /// `rotation.holdAtVersion`: never promote a Transit version above
    /// this one. Newer versions are still observed, counted and
    /// decryptable; removing the setting (and restarting) releases them.
    pub hold_at_version: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    pub log_openbao_request_ids: bool,
    /// `logging.debugCorrelation` when `enabled: true`.
    pub debug_correlation: Option<DebugCorrelation>,
    /// `logging.requestLogBurst` failure lines per event and error class
    /// in each `logging.requestLogWindow`.
    pub request_log: crate::log_budget::Budget,
}

/// Time-boxed debug correlation: for `ttl` after the provider starts, every
/// KMS request's log lines (its `kms.request` line and the `openbao.request`
/// lines of the OpenBao calls made for it) carry the hash of the request's
/// uid and the incident id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugCorrelation {
    pub ttl: Duration,
    pub incident_id: String,
}

/// The `telemetry` section: export beside `/metrics`, off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `telemetry.otlp`, when present: OTLP/gRPC export of metrics and traces.
    pub otlp: Option<OtlpConfig>,
}

/// OTLP/gRPC export to a collector. Header values are read from files at
/// start and never logged; the exporters run off the request path with a
/// bounded queue, so a collector that is down or slow costs dropped spans
/// (counted), never a failed or slower KMS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// `https://host:port`, or `http://` to a loopback address.
    pub endpoint: String,
    /// Trust for an `https` endpoint (required there).
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate and key (both or neither).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// gRPC metadata sent with every export: lower-case name, file holding the value.
    pub header_files: Vec<(String, PathBuf)>,
    /// How often metrics are pushed.
    pub export_interval: Duration,
    /// Deadline of one export call.
    pub timeout: Duration,
    /// Finished spans waiting for export; beyond it spans are dropped and counted.
    pub max_queue_size: u32,
    pub traces: bool,
    pub metrics: bool,
}
