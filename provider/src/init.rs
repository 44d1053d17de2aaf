//! `bao-kms-provider init`: the I/O around [`bao_kms_core::init::render`]:
//! read the values file, generate a key lineage ID for `--new-key`, and write
//! the rendered files into an absent or empty directory, never over an
//! existing file (`O_EXCL`). A failed write removes what this run created,
//! so a retry starts from the same state. Never contacts OpenBao.
//!
//! Exit codes: 0 written, 1 write failure (including a non-empty `--out`),
//! 2 bad flags, 3 bad values.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bao_kms_core::config::ValidationContext;
use bao_kms_core::init::{Generator, InitError, InitRequest, Model, OutputFile, PullPolicy, render};
use rand::RngCore;

use crate::config_file::ALLOWED_SOCKET_DIR_ENV;

pub const EXIT_WRITE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_VALUES: u8 = 3;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ModelArg {
    Systemd,
    StaticPod,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PullPolicyArg {
    Never,
    IfNotPresent,
}

/// `init` flags.
#[derive(clap::Args)]
pub struct InitArgs {
    /// Values file, in the configuration file format.
    #[arg(long, value_parser = crate::cli::absolute_path)]
    pub values: PathBuf,
    /// Output directory; must be absent or empty.
    #[arg(long, value_parser = crate::cli::absolute_path)]
    pub out: PathBuf,
    /// How the provider runs on the node.
    #[arg(long, value_enum, default_value = "systemd")]
    pub model: ModelArg,
    /// Generate transit.keyIdScope.keyLineageId for a new Transit key.
    #[arg(long)]
    pub new_key: bool,
    /// OpenBao policy name [default: openbao-kms-<clusterId>].
    #[arg(long)]
    pub policy_name: Option<String>,
    /// Static pod image, pinned: <repository>@sha256:<digest>.
    #[arg(long)]
    pub image: Option<String>,
    /// Static pod imagePullPolicy [default: never, for preloaded images].
    #[arg(long, value_enum)]
    pub image_pull_policy: Option<PullPolicyArg>,
    /// Static pod: host GID of the socket group; overrides server.socketGroup.
    #[arg(long)]
    pub socket_gid: Option<String>,
    // Accepted only to be refused with a clear message: init reads the
    // values file alone, so nothing may override it.
    #[arg(long, hide = true)]
    pub config: Option<String>,
    #[arg(long, hide = true)]
    pub metrics_address: Option<String>,
    #[arg(long, hide = true)]
    pub health_address: Option<String>,
}

/// Runs `init`; returns the exit code. `log_level` is the global
/// `--log-level`, refused here like the other overrides.
pub fn run(args: InitArgs, log_level: bool) -> u8 {
    for (flag, set) in [
        ("--config", args.config.is_some()),
        ("--log-level", log_level),
        ("--metrics-address", args.metrics_address.is_some()),
        ("--health-address", args.health_address.is_some()),
    ] {
        if set {
            eprintln!(
                "init: {flag} is not accepted: init renders from --values alone (environment overrides are ignored too)"
            );
            return EXIT_USAGE;
        }
    }
    let values = match fs::read_to_string(&args.values) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("init: cannot read the values file {}: {e}", args.values.display());
            return EXIT_VALUES;
        }
    };
    let mut extra_socket_dirs = Vec::new();
    if let Some(dir) = std::env::var_os(ALLOWED_SOCKET_DIR_ENV).filter(|d| !d.is_empty()) {
        extra_socket_dirs.push(PathBuf::from(dir));
    }
    let build = crate::build::current();
    let req = InitRequest {
        values,
        model: match args.model {
            ModelArg::Systemd => Model::Systemd,
            ModelArg::StaticPod => Model::StaticPod,
        },
        new_key_lineage_id: args.new_key.then(new_lineage_id),
        policy_name: args.policy_name,
        image: args.image,
        image_pull_policy: args.image_pull_policy.map(|p| match p {
            PullPolicyArg::Never => PullPolicy::Never,
            PullPolicyArg::IfNotPresent => PullPolicy::IfNotPresent,
        }),
        socket_gid: args.socket_gid,
        context: ValidationContext {
            extra_socket_dirs,
            ..ValidationContext::default()
        },
        generator: Generator {
            version: build.version.to_owned(),
            commit: build.commit.to_owned(),
        },
    };
    let rendered = match render(&req) {
        Ok(r) => r,
        Err(InitError::Usage(m)) => {
            eprintln!("init: {m}");
            return EXIT_USAGE;
        }
        Err(InitError::Values(problems)) => {
            eprintln!("init: the values file {} is invalid:", args.values.display());
            for p in problems {
                eprintln!("{p}");
            }
            return EXIT_VALUES;
        }
        Err(e @ InitError::Template(_)) => {
            eprintln!("init: {e}");
            return EXIT_WRITE;
        }
    };
    if let Err(e) = write_all(&args.out, &rendered.files) {
        eprintln!("init: {e}");
        return EXIT_WRITE;
    }
    let scope = rendered.config.identity_scope();
    let mut text = format!("wrote {} ({} model):\n", args.out.display(), req.model.as_str());
    for f in &rendered.files {
        text.push_str(&format!("  {:04o} {}\n", f.mode, f.name));
    }
    text.push_str(&format!("identity fingerprint: {}\n", scope.fingerprint()));
    text.push_str(&format!("key lineage ID: {}\n", scope.key_lineage_id));
    text.push_str(&format!("OpenBao policy: {}\n", rendered.policy_name));
    text.push_str("next: openbao-setup.sh (OpenBao operator), then node-setup.sh on each control-plane node");
    crate::stdout::print_or_exit(&text);
    0
}

/// 16 random bytes in hex: a new key's lineage ID (not a secret).
fn new_lineage_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why the files were not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0} exists and is not empty: init never overwrites; choose a new --out directory")]
    NotEmpty(PathBuf),
    #[error("{0} exists and is not a directory")]
    NotADirectory(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `files` into `out` (absent or empty). On failure, removes every
/// file this call created and the directory when it created it.
pub fn write_all(out: &Path, files: &[OutputFile]) -> Result<(), WriteError> {
    let created_dir = match fs::symlink_metadata(out) {
        Ok(meta) if meta.is_dir() => {
            if fs::read_dir(out).map_err(io(out))?.next().is_some() {
                return Err(WriteError::NotEmpty(out.to_path_buf()));
            }
            false
        }
        Ok(_) => return Err(WriteError::NotADirectory(out.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir(out).map_err(io(out))?;
            fs::set_permissions(out, fs::Permissions::from_mode(0o750)).map_err(io(out))?;
            true
        }
        Err(e) => return Err(io(out)(e)),
    };
    let mut written: Vec<PathBuf> = Vec::new();
    let result = files.iter().try_for_each(|f| {
        let path = out.join(f.name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io(&path))?;
        written.push(path.clone());
        file.write_all(f.contents.as_bytes()).map_err(io(&path))?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(f.mode))
            .map_err(io(&path))?;
        file.sync_all().map_err(io(&path))
    });
    if result.is_err() {
        for path in &written {
            let _ = fs::remove_file(path);
        }
        if created_dir {
            let _ = fs::remove_dir(out);
        }
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(name: &'static str, mode: u32) -> OutputFile {
        OutputFile {
            name,
            mode,
            contents: format!("{name}\n"),
        }
    }

    #[test]
    fn writes_exact_modes_into_a_new_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        write_all(&out, &[file("a.yaml", 0o640), file("b.sh", 0o755)]).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o7777, 0o750);
        assert_eq!(
            fs::metadata(out.join("a.yaml")).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert_eq!(
            fs::metadata(out.join("b.sh")).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert_eq!(fs::read_to_string(out.join("b.sh")).unwrap(), "b.sh\n");
    }

    #[test]
    fn a_failed_write_removes_what_it_created() {
        let tmp = tempfile::tempdir().unwrap();
        // A fresh directory: the second file collides with the first
        // (O_EXCL), so the run fails after one file was written.
        let out = tmp.path().join("out");
        let err = write_all(&out, &[file("a.yaml", 0o644), file("a.yaml", 0o644)]).unwrap_err();
        assert!(matches!(err, WriteError::Io { .. }), "{err}");
        assert!(!out.exists());
        // An existing empty directory stays, empty.
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        write_all(&empty, &[file("a.yaml", 0o644), file("a.yaml", 0o644)]).unwrap_err();
        assert!(empty.is_dir());
        assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
    }

    #[test]
    fn refuses_a_non_empty_directory_and_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("keep"), "x").unwrap();
        let err = write_all(tmp.path(), &[file("keep", 0o644)]).unwrap_err();
        assert!(matches!(err, WriteError::NotEmpty(_)), "{err}");
        assert_eq!(fs::read_to_string(tmp.path().join("keep")).unwrap(), "x");
        let err = write_all(&tmp.path().join("keep"), &[file("a", 0o644)]).unwrap_err();
        assert!(matches!(err, WriteError::NotADirectory(_)), "{err}");
    }
}
