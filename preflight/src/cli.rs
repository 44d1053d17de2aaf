//! Command line of `bao-kms-preflight`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check this node's provider files, EncryptionConfiguration, static pod
    /// manifest, socket and local /ready, /status (no API server needed).
    Node(NodeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct NodeFlags {
    /// Provider configuration file.
    #[arg(long, default_value = bao_kms_core::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// kube-apiserver's --encryption-provider-config file.
    #[arg(long)]
    pub encryption_config: Option<PathBuf>,
    /// The provider's static pod manifest.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// The image digest (sha256:<hex>) the manifest must be pinned to.
    #[arg(long, value_parser = parse_digest)]
    pub expected_digest: Option<String>,
    /// /etc/group-format file used to resolve server.socketGroup by name.
    #[arg(long, default_value = "/etc/group")]
    pub group_file: PathBuf,
    /// Overrides server.healthAddress (host:port of /ready and /status).
    #[arg(long)]
    pub health_address: Option<String>,
    /// An extra directory the socket may live in (as the provider's
    /// BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR; tests and `make demo`).
    #[arg(long, env = crate::node::ALLOWED_SOCKET_DIR_ENV)]
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
