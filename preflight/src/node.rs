//! `bao-kms-preflight node`: collect the node's facts in dependency order
//! (configuration first; the socket, manifest and health address come from
//! it) and run the pure node checks on them.

use std::path::{Path, PathBuf};

use bao_kms_core::config::{Config, Override, Overrides, ValidationContext};

use bao_kms_core::checks::artifact::{Model, exec_start_binary, unit_binary_check};
use bao_kms_core::checks::catalogue::{
    CONFIG_FILE, CONFIG_VALIDATE, PROVIDER_READY, PROVIDER_STATUS, SOCKET_DIRECTORY, SOCKET_FILE, SOCKET_GROUP,
};
use bao_kms_core::status::StatusDocument;

use crate::checks::node as checks;
use crate::collect;
use crate::report::Report;

/// Same knob as the provider's: one extra directory the socket may live in
/// (tests and `make demo`), in addition to `/run/openbao-kms`.
pub use bao_kms_core::config::ALLOWED_SOCKET_DIR_ENV;

/// What `node` checks, from the command line.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    pub config: PathBuf,
    pub encryption_config: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    /// `sha256:<hex>` the manifest's image must be pinned to.
    pub expected_digest: Option<String>,
    /// systemd model: the provider's unit file and its drop-ins, in order.
    pub units: Vec<PathBuf>,
    /// systemd model: the file to hash instead of `ExecStart=`'s program
    /// (where the agent sees the host's binary), or the binary alone.
    pub provider_binary: Option<PathBuf>,
    /// `/etc/group`-format file used to resolve a group name.
    pub group_file: PathBuf,
    /// Overrides `server.healthAddress`.
    pub health_address: Option<String>,
    /// Extra allowed socket directory (also from [`ALLOWED_SOCKET_DIR_ENV`]).
    pub allowed_socket_dir: Option<PathBuf>,
    /// Skip the socket and `/ready`, `/status` (before the provider runs).
    pub no_live: bool,
}

/// The node report and the facts the agent publishes.
#[derive(Debug, Clone)]
pub struct NodeOutcome {
    pub report: Report,
    pub config: Option<Config>,
    pub status: Option<StatusDocument>,
    /// The provider image from the manifest, and its digest when pinned.
    pub image: Option<String>,
    pub image_digest: Option<String>,
    /// The deployment model the flags describe (`--manifest` or `--unit`).
    pub model: Option<Model>,
    /// systemd: the program the unit runs, and the SHA-256 of the file.
    pub binary: Option<String>,
    pub binary_digest: Option<String>,
}

fn text_of(r: &Result<String, String>) -> Result<&str, &str> {
    r.as_deref().map_err(String::as_str)
}

/// Runs every node check. Never fails: problems are checks.
pub async fn run(opts: &NodeOptions) -> NodeOutcome {
    let mut report = Report::new("node");
    let mut out = NodeOutcome {
        report: Report::new("node"),
        config: None,
        status: None,
        image: None,
        image_digest: None,
        model: None,
        binary: None,
        binary_digest: None,
    };

    // Configuration.
    let facts = collect::stat(&opts.config);
    let file_check = checks::config_file(&facts);
    let file_ok = file_check.status == crate::report::CheckStatus::Pass;
    report.push(file_check);
    let cfg = if file_ok {
        let ctx = ValidationContext {
            extra_socket_dirs: opts.allowed_socket_dir.iter().cloned().collect(),
            overrides: Overrides {
                health_address: opts.health_address.as_ref().map(|v| Override {
                    value: v.clone(),
                    origin: "--health-address".into(),
                }),
                ..Overrides::default()
            },
        };
        let text = collect::read_text(&opts.config);
        let (check, cfg) = checks::config_validate(text_of(&text), &ctx);
        report.push(check);
        cfg
    } else {
        report.push(CONFIG_VALIDATE.skipped_after(&CONFIG_FILE));
        None
    };

    // Socket group, directory, socket.
    let gid = match &cfg {
        Some(cfg) => {
            let text = collect::read_text(&opts.group_file);
            let (check, gid) = checks::socket_group(cfg, &opts.group_file, text_of(&text));
            report.push(check);
            gid
        }
        None => {
            report.push(SOCKET_GROUP.skipped_after(&CONFIG_VALIDATE));
            None
        }
    };
    match (&cfg, gid) {
        (Some(cfg), Some(gid)) => {
            let dir = cfg.server.socket_path.parent().unwrap_or(Path::new("/"));
            report.push(checks::socket_directory(&collect::stat(dir), gid));
            if opts.no_live {
                report.push(SOCKET_FILE.skip("skipped: --no-live"));
            } else {
                report.push(checks::socket_file(
                    &collect::stat(&cfg.server.socket_path),
                    gid,
                    cfg.server.socket_mode,
                    true,
                ));
            }
        }
        _ => {
            let dep = if cfg.is_some() { &SOCKET_GROUP } else { &CONFIG_VALIDATE };
            report.push(SOCKET_DIRECTORY.skipped_after(dep));
            report.push(SOCKET_FILE.skipped_after(dep));
        }
    }

    // EncryptionConfiguration.
    if let Some(path) = &opts.encryption_config {
        let text = collect::read_text(path);
        for c in checks::encryption_config(path, text_of(&text), cfg.as_ref()) {
            report.push(c);
        }
    }

    // Static pod manifest.
    if let Some(path) = &opts.manifest {
        let text = collect::read_text(path);
        let (found, facts) = checks::manifest(
            path,
            text_of(&text),
            cfg.as_ref(),
            &opts.config,
            gid,
            opts.expected_digest.as_deref(),
        );
        for c in found {
            report.push(c);
        }
        out.image = facts.image;
        out.image_digest = facts.digest;
        out.model = Some(Model::StaticPod);
    }

    // systemd unit: the binary ExecStart= runs, hashed.
    if !opts.units.is_empty() || opts.provider_binary.is_some() {
        let program = if opts.units.is_empty() {
            opts.provider_binary
                .as_ref()
                .map(|p| p.display().to_string())
                .ok_or_else(String::new)
        } else {
            let texts: Result<Vec<(String, String)>, String> = opts
                .units
                .iter()
                .map(|u| collect::read_text(u).map(|t| (u.display().to_string(), t)))
                .collect();
            texts.and_then(|t| {
                let files: Vec<(&str, &str)> = t.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
                exec_start_binary(&files)
            })
        };
        let hashed = match (&opts.provider_binary, &program) {
            (Some(p), _) => p.display().to_string(),
            (None, Ok(p)) => p.clone(),
            (None, Err(_)) => String::new(),
        };
        let digest = if hashed.is_empty() {
            Err(String::new())
        } else {
            collect::sha256_file(Path::new(&hashed))
        };
        report.push(unit_binary_check(&program, &hashed, &digest));
        out.model = Some(Model::Systemd);
        out.binary = program.ok();
        out.binary_digest = out.binary.as_ref().and(digest.ok());
    }

    // Live provider.
    let health = cfg.as_ref().and_then(|c| c.server.health_address.clone());
    match (&cfg, health) {
        _ if opts.no_live => {
            for d in [PROVIDER_READY, PROVIDER_STATUS] {
                report.push(d.skip("skipped: --no-live"));
            }
        }
        (Some(cfg), Some(addr)) => {
            let target = checks::health_target(&addr);
            let client = reqwest::Client::builder().no_proxy().build();
            let (ready, status) = match &client {
                Ok(client) => (
                    collect::http_get(client, &target, "/ready").await,
                    collect::http_get(client, &target, "/status").await,
                ),
                Err(e) => (Err(e.to_string()), Err(e.to_string())),
            };
            report.push(checks::provider_ready(ready.as_ref().map_err(String::as_str)));
            let (check, status) = checks::provider_status(status.as_ref().map_err(String::as_str), cfg);
            report.push(check);
            out.status = status;
        }
        (Some(_), None) => {
            for d in [PROVIDER_READY, PROVIDER_STATUS] {
                report.push(d.skip("skipped: server.healthAddress is empty (listener disabled)"));
            }
        }
        (None, _) => {
            for d in [PROVIDER_READY, PROVIDER_STATUS] {
                report.push(d.skipped_after(&CONFIG_VALIDATE));
            }
        }
    }
    out.report = report;
    out.config = cfg;
    out
}
