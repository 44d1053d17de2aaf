//! The command line of `bao-kms-provider`: every subcommand, flag and
//! value type as clap definitions. `main` parses with [`Cli`]; the man
//! pages and shell completions are generated from the same definitions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "bao-kms-provider", version = crate::VERSION, about = "Kubernetes KMS v2 plugin for OpenBao Transit")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level: overrides logging.level for serve; on the other commands
    /// (except init), their logs on stderr at this level (JSON).
    #[arg(long, value_enum, global = true)]
    pub log_level: Option<LogLevelArg>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogLevelArg {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the KMS v2 API on the configured Unix socket.
    Serve {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        /// Overrides server.metricsAddress.
        #[arg(long)]
        metrics_address: Option<String>,
        /// Overrides server.healthAddress.
        #[arg(long)]
        health_address: Option<String>,
    },
    /// Status -> Encrypt -> Decrypt round trip through a running provider's socket.
    Probe {
        #[arg(long, default_value = crate::probe_cmd::DEFAULT_SOCKET, value_parser = absolute_path)]
        socket: PathBuf,
        /// Deadline of each call, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Fail unless Status reports this key_id.
        #[arg(long)]
        expected_key_id: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Check configuration, socket, auth, OpenBao, Transit key and registry, one line each.
    Doctor {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        /// Also check kube-apiserver's --encryption-provider-config file against this configuration.
        #[arg(long, value_parser = absolute_path)]
        encryption_config: Option<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print the resolved configuration and identity fingerprint, or `config schema`.
    Config {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        what: Option<ConfigWhat>,
    },
    /// Key-only checks: Transit key, profile, version restrictions, registry, key_id.
    VerifyKey {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Rotation state, candidate, observations and what promotion waits for (read-only).
    RotationPlan {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The local registry against Transit, with a confidence statement (complete only with --storage-report).
    VerifyRotation {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        /// A `bao-kms-preflight storage -o json` report: evidence from etcd
        /// (confidence becomes complete when it covers this registry).
        #[arg(long, value_parser = absolute_path)]
        storage_report: Option<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// What Decrypt expects for a key_id (or every registry record): Transit
    /// version, state, key_id hash, annotations and AAD hash (read-only, no OpenBao).
    KeySnapshots {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        /// Only the record of this key_id (an object's EncryptedObject keyID).
        #[arg(long, conflicts_with = "key_id_hash")]
        key_id: Option<String>,
        /// Only the record whose key_id hashes to this (H(key_id), as the
        /// key-id-hash annotation, /status keyIDHash and storage reports;
        /// base64url, so it may start with `-`).
        #[arg(long, allow_hyphen_values = true)]
        key_id_hash: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Plan (or --apply) removing Transit versions below N from this node's local decryption.
    RetireVersions {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        /// Retire every retained version below this one (greater than 1, at most the active version).
        #[arg(long)]
        before_version: u64,
        /// A `bao-kms-preflight storage -o json` report: the plan is refused
        /// while any object still uses a version it removes.
        #[arg(long, value_parser = absolute_path)]
        storage_report: Option<PathBuf>,
        #[command(flatten)]
        apply: ApplyArgs,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Plan (or --apply) making removed versions decryptable again on this node.
    RestoreVersions {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        /// Removed versions to restore, comma-separated (e.g. 1,2).
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        versions: Vec<u64>,
        #[command(flatten)]
        apply: ApplyArgs,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Plan (or --apply) pinning the OpenBao identity seen now (cluster_id,
    /// Transit mount) after a deliberate move or restore of OpenBao.
    Repin {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        #[command(flatten)]
        apply: ApplyArgs,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Write the install files (config, EncryptionConfigurations, OpenBao setup, node setup) from a values file.
    Init(crate::init::InitArgs),
    /// Print the least-privilege policy for this configuration.
    Policy {
        #[command(subcommand)]
        target: PolicyTarget,
    },
    /// Encrypt/Decrypt latency with random non-secret data: against Transit
    /// with this configuration, or through a running provider's socket, or
    /// (both flags) the two side by side with the restart burst, start to
    /// ready and memory.
    Benchmark(BenchmarkArgs),
    /// Print version, commit, build date and dirty flag.
    Version,
    /// Print shell completion.
    Completion { shell: clap_complete::Shell },
}

#[derive(clap::Args)]
pub struct BenchmarkArgs {
    /// Configuration file (Transit mode) [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
    #[arg(long, value_parser = absolute_path)]
    pub config: Option<PathBuf>,
    /// Benchmark through this KMS socket (what kube-apiserver sees); with
    /// --config, compare it with direct Transit.
    #[arg(long, value_parser = absolute_path)]
    pub socket: Option<PathBuf>,
    /// Encrypt+Decrypt round trips (comparison: calls per method, side and round).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub iterations: u32,
    /// Round trips in flight at once; comparison: a comma-separated list [default: 1, comparison 1,16]
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: Vec<u32>,
    /// Comparison: rounds, each measuring both sides in turn.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Comparison: connections of the restart burst (one per kube-apiserver).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub burst_connections: u32,
    /// Comparison: distinct Decrypts each burst connection sends at once.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub burst_distinct: u32,
    /// Comparison: identical Decrypts (one ciphertext) in the burst.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub burst_identical: u32,
    /// Comparison: cold and warm starts of a scratch copy of the deployment (0: skip).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub startup_runs: u32,
    /// Comparison: the gRPC deadline of each KMS call (kube-apiserver's kms timeout).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub kms_timeout: Duration,
    /// Connect timeout for --socket.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Also write the JSON report to this file.
    #[arg(long, value_parser = absolute_path)]
    pub json_file: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Subcommand)]
pub enum PolicyTarget {
    /// The OpenBao policy (HCL) the provider's token needs, and nothing more.
    Openbao {
        /// Configuration file [env: BAO_KMS_PROVIDER_CONFIG or BAO_KMS_PROVIDER_CONFIG_PATH; default /etc/openbao-kms/config.yaml]
        #[arg(long, value_parser = absolute_path)]
        config: Option<PathBuf>,
        /// Include `auth/token/renew-self` (token renewal).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        include_token_renewal: bool,
    },
}

#[derive(Subcommand)]
pub enum ConfigWhat {
    /// Print the configuration JSON Schema.
    Schema,
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

impl From<LogLevelArg> for bao_kms_core::config::LogLevel {
    fn from(l: LogLevelArg) -> Self {
        match l {
            LogLevelArg::Debug => Self::Debug,
            LogLevelArg::Info => Self::Info,
            LogLevelArg::Warn => Self::Warn,
            LogLevelArg::Error => Self::Error,
        }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    bao_kms_core::config::validate::parse_duration(s).map_err(|e| e.to_string())
}

/// `--apply` with the reviewed state hash, shared by `retire-versions` and
/// `restore-versions`; each flag requires the other.
#[derive(clap::Args)]
pub struct ApplyArgs {
    /// Write the plan; the provider must be stopped.
    #[arg(long, requires = "expected_state_hash")]
    pub apply: bool,
    /// The stateHash of the reviewed plan; --apply refuses any other state.
    #[arg(long, requires = "apply")]
    pub expected_state_hash: Option<String>,
}
