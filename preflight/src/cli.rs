//! Command line of `bao-kms-preflight`.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::report::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "bao-kms-preflight",
    version,
    about = "Preflight checks for bao-kms-provider: node files, the node agent, and cross-node key_id convergence"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level of the logs on stderr (JSON) [default: info for agent;
    /// the other commands log only with this flag].
    #[arg(long, value_enum, global = true)]
    pub log_level: Option<LogLevel>,
}

/// The file name under which kubectl finds this binary as its plugin
/// `kubectl bao-kms` (a dash in a plugin name is an underscore in the file).
pub const KUBECTL_PLUGIN_FILE: &str = "kubectl-bao_kms";

/// How the usage and help name the command: `kubectl bao-kms` when run as
/// the kubectl plugin (kubectl passes the plugin's own path as argv[0]),
/// else the binary's name.
pub fn bin_name(argv0: Option<&std::ffi::OsStr>) -> &'static str {
    let file = argv0.and_then(|a| std::path::Path::new(a).file_name());
    if file.is_some_and(|f| f == KUBECTL_PLUGIN_FILE) {
        "kubectl bao-kms"
    } else {
        "bao-kms-preflight"
    }
}

impl Cli {
    /// Parses this process's arguments (usage errors exit 2, `--help` and
    /// `--version` exit 0), naming the command as it was invoked.
    pub fn parse_invoked() -> Self {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let command = Self::command().bin_name(bin_name(args.first().map(|a| a.as_os_str())));
        let matches = command.get_matches_from(args);
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// A path flag: a relative path is taken from the working directory, as
/// shells and other tools do; the commands see it absolute. An empty value
/// stays empty (the command then says what it expected).
pub fn absolute_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Ok(PathBuf::new());
    }
    std::path::absolute(s).map_err(|e| format!("cannot resolve against the working directory: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check this node's provider files, EncryptionConfiguration, static pod
    /// manifest, socket and local /ready, /status (no API server needed).
    Node(NodeArgs),
    /// Run on a control-plane node (DaemonSet): re-run the node checks and
    /// publish them with the local /status as this node's report Lease.
    Agent(AgentArgs),
    /// kubectl-style: check every control-plane node's report for
    /// freshness and one key_id hash, registry content digest and provider version.
    Cluster(ClusterArgs),
    /// Read etcd (read-only, with kube-apiserver's etcd client certificate)
    /// and count how every stored object is encrypted, per resource, by
    /// provider name and key_id hash; optional gates for the rotation.
    Storage(StorageArgs),
    /// Re-encrypt the resources an EncryptionConfiguration encrypts: list
    /// and replace each object unchanged through the Kubernetes API, so
    /// kube-apiserver writes it again with its current key.
    Rewrite(RewriteArgs),
}

/// Where the Kubernetes API is, like kubectl.
#[derive(Debug, Clone, Args)]
pub struct KubeFlags {
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_parser = absolute_path)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace of the report Leases (default: the context's, or the pod's).
    #[arg(short = 'n', long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Deadline of a new connection to the API server (TCP and TLS handshake).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub flags: NodeFlags,
    #[command(flatten)]
    pub kube: KubeFlags,
    /// This node's name (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Time between two reports.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Publish one report and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub kube: KubeFlags,
    /// Rotation gate: before-rotation requires every node active and
    /// converged; after-rotation requires every node on one new key_id.
    #[arg(long, value_enum)]
    pub phase: Option<crate::checks::cluster::Phase>,
    /// The key_id hash in use before the rotation (after-rotation gate;
    /// default: each node's own previous hash). A hash may start with `-`.
    #[arg(long, allow_hyphen_values = true)]
    pub before_key_id_hash: Option<String>,
    /// A report older than this is stale.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub max_age: std::time::Duration,
    /// Every static pod node must run this image digest (sha256:<hex>).
    #[arg(long, value_parser = parse_digest)]
    pub expected_image_digest: Option<String>,
    /// Every systemd node's provider binary must have this SHA-256
    /// (sha256:<hex>, as sha256sum prints it with the prefix).
    #[arg(long, value_parser = parse_digest)]
    pub expected_binary_digest: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match bao_kms_core::config::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be positive".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Clone, Args)]
pub struct NodeFlags {
    /// Provider configuration file.
    #[arg(long, default_value = bao_kms_core::config::DEFAULT_CONFIG_PATH, value_parser = absolute_path)]
    pub config: PathBuf,
    /// kube-apiserver's --encryption-provider-config file.
    #[arg(long, value_parser = absolute_path)]
    pub encryption_config: Option<PathBuf>,
    /// The provider's static pod manifest (static pod model).
    #[arg(long, value_parser = absolute_path, conflicts_with_all = ["units", "provider_binary"])]
    pub manifest: Option<PathBuf>,
    /// systemd model: the provider's installed unit file, then its drop-ins
    /// in order (repeat the flag); the agent reports the SHA-256 of the
    /// binary its ExecStart= runs.
    #[arg(long = "unit", value_parser = absolute_path)]
    pub units: Vec<PathBuf>,
    /// systemd model: where the agent reads the provider binary (hashed
    /// instead of ExecStart='s path, e.g. the host's binary mounted
    /// elsewhere), or the binary alone without --unit.
    #[arg(long, value_parser = absolute_path)]
    pub provider_binary: Option<PathBuf>,
    /// The image digest (sha256:<hex>) the manifest must be pinned to.
    #[arg(long, value_parser = parse_digest)]
    pub expected_digest: Option<String>,
    /// /etc/group-format file used to resolve server.socketGroup by name.
    #[arg(long, default_value = "/etc/group", value_parser = absolute_path)]
    pub group_file: PathBuf,
    /// Overrides server.healthAddress (host:port of /ready and /status).
    #[arg(long)]
    pub health_address: Option<String>,
    /// An extra directory the socket may live in (as the provider's
    /// BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR; tests and `make demo`).
    #[arg(long, env = crate::node::ALLOWED_SOCKET_DIR_ENV, value_parser = absolute_path)]
    pub allowed_socket_dir: Option<PathBuf>,
    /// Skip the socket and the provider's /ready and /status (bootstrap
    /// hooks that run before the provider starts).
    #[arg(long)]
    pub no_live: bool,
}

impl NodeFlags {
    pub fn options(&self) -> crate::node::NodeOptions {
        crate::node::NodeOptions {
            config: self.config.clone(),
            encryption_config: self.encryption_config.clone(),
            manifest: self.manifest.clone(),
            expected_digest: self.expected_digest.clone(),
            units: self.units.clone(),
            provider_binary: self.provider_binary.clone(),
            group_file: self.group_file.clone(),
            health_address: self.health_address.clone(),
            allowed_socket_dir: self.allowed_socket_dir.clone(),
            no_live: self.no_live,
        }
    }
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub flags: NodeFlags,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

fn parse_digest(s: &str) -> Result<String, String> {
    if crate::checks::node::is_digest(s) {
        Ok(s.to_owned())
    } else {
        Err("must be sha256:<64 lowercase hex digits>".to_owned())
    }
}

#[derive(Debug, Args)]
pub struct StorageArgs {
    /// etcd endpoints (kube-apiserver's --etcd-servers), tried in order.
    #[arg(long, value_delimiter = ',', default_value = "https://127.0.0.1:2379")]
    pub etcd_servers: Vec<String>,
    /// CA that signed etcd's serving certificate (kube-apiserver's --etcd-cafile).
    #[arg(long, default_value = "/etc/kubernetes/pki/etcd/ca.crt", value_parser = absolute_path)]
    pub etcd_cafile: PathBuf,
    /// Client certificate (kube-apiserver's --etcd-certfile).
    #[arg(long, default_value = "/etc/kubernetes/pki/apiserver-etcd-client.crt", value_parser = absolute_path)]
    pub etcd_certfile: PathBuf,
    /// Client key (kube-apiserver's --etcd-keyfile).
    #[arg(long, default_value = "/etc/kubernetes/pki/apiserver-etcd-client.key", value_parser = absolute_path)]
    pub etcd_keyfile: PathBuf,
    /// kube-apiserver's --etcd-prefix.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// Scan one resource directory only (e.g. secrets); such a report is
    /// not evidence for the whole store.
    #[arg(long)]
    pub resource: Option<String>,
    /// Keys per range request.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
    /// Deadline of the connection and of each page.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Provider configuration: its key registry (read-only) maps key_id
    /// hashes to Transit versions.
    #[arg(long, value_parser = absolute_path)]
    pub config: Option<PathBuf>,
    /// An extra directory the configured socket may live in (as `node`).
    #[arg(long, env = crate::node::ALLOWED_SOCKET_DIR_ENV, value_parser = absolute_path)]
    pub allowed_socket_dir: Option<PathBuf>,
    /// Gate: every encrypted object uses this key_id hash (base64url: it may
    /// start with `-`).
    #[arg(long, value_parser = parse_hash, allow_hyphen_values = true)]
    pub require_key_id_hash: Option<String>,
    /// Gate: no object of the provider uses a Transit version below N
    /// (needs --config).
    #[arg(long, requires = "config", value_parser = clap::value_parser!(u64).range(1..))]
    pub forbid_version_below: Option<u64>,
    /// Progress on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

impl StorageArgs {
    pub fn options(&self) -> crate::storage::StorageOptions {
        crate::storage::StorageOptions {
            etcd: crate::etcd::EtcdOptions {
                endpoints: self.etcd_servers.clone(),
                ca_file: Some(self.etcd_cafile.clone()),
                cert_file: Some(self.etcd_certfile.clone()),
                key_file: Some(self.etcd_keyfile.clone()),
                timeout: self.timeout,
            },
            etcd_prefix: self.etcd_prefix.clone(),
            resource: self.resource.clone(),
            page_size: self.page_size,
            config: self.config.clone(),
            allowed_socket_dir: self.allowed_socket_dir.clone(),
            require_key_id_hash: self.require_key_id_hash.clone(),
            forbid_version_below: self.forbid_version_below,
            progress: self.progress,
        }
    }
}

fn parse_hash(s: &str) -> Result<String, String> {
    if bao_kms_core::hash::is_hash(s) {
        Ok(s.to_owned())
    } else {
        Err("must be a key_id hash: 43 base64url characters (H(key_id), as /status keyIDHash)".to_owned())
    }
}

#[derive(Debug, Args)]
pub struct RewriteArgs {
    #[command(flatten)]
    pub kube: KubeFlags,
    /// kube-apiserver's --encryption-provider-config file: the resources to rewrite.
    #[arg(long, value_parser = absolute_path)]
    pub encryption_config: PathBuf,
    /// Only this resource (plural[.group], e.g. secrets); repeatable.
    #[arg(long = "resource")]
    pub resources: Vec<String>,
    /// List and count only; replace nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replaces per second.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rate: u32,
    /// Objects per list request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    pub page_size: u32,
    /// Resume one --resource from the continue token a previous run printed.
    #[arg(long = "continue")]
    pub continue_token: Option<String>,
    /// Progress on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

impl RewriteArgs {
    pub fn options(&self) -> crate::rewrite::RewriteOptions {
        crate::rewrite::RewriteOptions {
            encryption_config: self.encryption_config.clone(),
            resources: self.resources.clone(),
            dry_run: self.dry_run,
            rate: self.rate,
            page_size: self.page_size,
            continue_token: self.continue_token.clone(),
            progress: self.progress,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    /// A key_id hash is base64url: one in 64 starts with `-` and must still
    /// be taken as the value, not as a flag.
    #[test]
    fn a_hash_starting_with_a_hyphen_is_a_value() {
        let hash = format!("-{}", "A".repeat(42));
        let cli = Cli::try_parse_from(["bao-kms-preflight", "storage", "--require-key-id-hash", &hash]).unwrap();
        let Command::Storage(args) = cli.command else {
            panic!("not the storage command");
        };
        assert_eq!(args.require_key_id_hash.as_deref(), Some(hash.as_str()));
    }
}
