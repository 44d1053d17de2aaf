//! Loading the configuration file: the file-system checks around the pure
//! parser in `bao_kms_core::config`.
//!
//! Order:
//! 1. The file itself: absolute path, not a symlink, a regular file, mode not
//!    intersecting `0037` (recommended `root:openbao-kms 0640`). Nothing is
//!    parsed from a file that fails these checks.
//! 2. Environment overrides (only `logging.level`,
//!    `server.metricsAddress`, `server.healthAddress`), then flag overrides.
//! 3. [`parse_yaml_with`]: schema, defaults, value rules, cross-checks.
//! 4. Files the configuration points at that must exist now: the OpenBao CA
//!    bundle (`openbao.caCertFile`). Credential files (JWT, PIN, secret ID)
//!    are re-read at every login by the auth code, not here.
//!
//! Every problem is reported as one `path: message` line; messages name
//! files and modes, never file contents.

use std::fs::{File, Metadata};
use std::io::{BufReader, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bao_kms_core::config::Config;
use bao_kms_core::config::raw::RawConfig;
use bao_kms_core::config::validate::{
    ConfigError, ConfigErrors, ENV_CONFIG_PATH, Overrides, ValidationContext, parse_yaml_with,
};

pub use bao_kms_core::config::ALLOWED_SOCKET_DIR_ENV;

/// Largest configuration or CA file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Permission bits the configuration file must not have (the private-file rule).
pub use bao_kms_core::config::PRIVATE_FILE_FORBIDDEN_MODE as CONFIG_FORBIDDEN_MODE;
/// Permission bits the CA bundle must not have: group or world write.
pub const CA_FORBIDDEN_MODE: u32 = 0o022;

/// Why the configuration could not be loaded. `Display` prints one
/// `path: message` line per problem.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file failed a safety check or could not be read; nothing was parsed.
    #[error("{}", lines(.0))]
    File(Vec<ConfigError>),
    /// The file was read but its values (or the environment overrides, or a
    /// file it names) are invalid.
    #[error("{}", lines(&.0.0))]
    Invalid(ConfigErrors),
}

impl LoadError {
    /// Every problem, path-qualified.
    pub fn problems(&self) -> &[ConfigError] {
        match self {
            Self::File(p) => p,
            Self::Invalid(e) => &e.0,
        }
    }
}

fn lines(problems: &[ConfigError]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// The configuration path from `BAO_KMS_PROVIDER_CONFIG` or
/// `BAO_KMS_PROVIDER_CONFIG_PATH` (first non-empty), if set.
pub fn config_path_from_env() -> Option<PathBuf> {
    ENV_CONFIG_PATH
        .iter()
        .find_map(|n| std::env::var_os(n).filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// Loads the configuration at `path` with the process environment.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    load_with(path, &|name| std::env::var(name).ok(), Overrides::default())
}

/// Loads the configuration at `path`; `env` looks up environment variables
/// (tests pass a map), `flags` are command-line overrides that win over the
/// environment. Cross-checks (e.g. metrics vs health address) run on the
/// effective values.
pub fn load_with(path: &Path, env: &dyn Fn(&str) -> Option<String>, flags: Overrides) -> Result<Config, LoadError> {
    let text = read_config_file(path)?;

    let mut problems = Vec::new();
    let overrides = match Overrides::from_env(env) {
        Ok(o) => o,
        Err(e) => {
            problems.extend(e.0);
            Overrides::default()
        }
    }
    .overridden_by(flags);
    let mut extra_socket_dirs = Vec::new();
    if let Some(dir) = env(ALLOWED_SOCKET_DIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            extra_socket_dirs.push(dir);
        } else {
            problems.push(problem(ALLOWED_SOCKET_DIR_ENV, "must be an absolute directory"));
        }
    }
    let ctx = ValidationContext {
        extra_socket_dirs,
        overrides,
    };

    match parse_yaml_with(&text, &ctx) {
        Ok(cfg) => {
            problems.extend(check_ca_file(&cfg.openbao.ca_cert_file).map(|m| problem("openbao.caCertFile", m)));
            if problems.is_empty() {
                Ok(cfg)
            } else {
                Err(LoadError::Invalid(ConfigErrors(problems)))
            }
        }
        Err(e) => {
            problems.extend(e.0);
            Err(LoadError::Invalid(ConfigErrors(problems)))
        }
    }
}

fn mode_bits(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Checks the configuration file and reads it. The file is opened without
/// following symlinks and re-checked through the open handle, so a swap
/// between the check and the read is detected.
fn read_config_file(path: &Path) -> Result<String, LoadError> {
    let shown = path.display().to_string();
    let fail = |m: String| LoadError::File(vec![problem(shown.clone(), m)]);
    if !path.is_absolute() {
        return Err(fail("the configuration path must be absolute".into()));
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
    let mut problems = file_problems(&meta);
    if !problems.is_empty() {
        return Err(LoadError::File(
            problems.drain(..).map(|m| problem(shown.clone(), m)).collect(),
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(format!("cannot open the configuration file: {e}")))?;
    let opened = file
        .metadata()
        .map_err(|e| fail(format!("cannot inspect the configuration file: {e}")))?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() || !file_problems(&opened).is_empty() {
        return Err(fail("the configuration file changed while it was being opened".into()));
    }
    let bytes = read_limited(file).map_err(fail)?;
    String::from_utf8(bytes).map_err(|_| fail("the configuration file is not UTF-8 text".into()))
}

/// Problems with the configuration file's own metadata.
fn file_problems(meta: &Metadata) -> Vec<String> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        return vec!["the configuration file must not be a symlink; point --config at the real file".into()];
    }
    if !ft.is_file() {
        return vec!["the configuration file must be a regular file".into()];
    }
    let mode = mode_bits(meta);
    if mode & CONFIG_FORBIDDEN_MODE != 0 {
        return vec![format!(
            "mode {mode:04o} is too open: it must not intersect {CONFIG_FORBIDDEN_MODE:04o} (no group write or \
             execute, no world access); recommended owner root:openbao-kms, mode 0640"
        )];
    }
    Vec::new()
}

fn read_limited(file: File) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("is larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}

/// Checks the OpenBao CA bundle: exists, regular file (symlinks followed,
/// as CA bundles are often managed that way), not group/world-writable, PEM
/// with at least one `CERTIFICATE` block. Returns the first problem found.
fn check_ca_file(path: &Path) -> Option<String> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("{shown} does not exist"));
        }
        Err(e) => return Some(format!("cannot access {shown}: {e}")),
    };
    if !meta.is_file() {
        return Some(format!("{shown} must be a regular file"));
    }
    let mode = mode_bits(&meta);
    if mode & CA_FORBIDDEN_MODE != 0 {
        return Some(format!(
            "{shown} has mode {mode:04o}; the trust roots must not be group- or world-writable \
             (must not intersect {CA_FORBIDDEN_MODE:04o})"
        ));
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot open {shown}: {e}")),
    };
    let bytes = match read_limited(file) {
        Ok(b) => b,
        Err(e) => return Some(format!("{shown} {e}")),
    };
    let mut certs = 0usize;
    for item in rustls_pemfile::certs(&mut BufReader::new(bytes.as_slice())) {
        match item {
            Ok(_) => certs += 1,
            Err(_) => return Some(format!("{shown} is not valid PEM")),
        }
    }
    if certs == 0 {
        return Some(format!("{shown} contains no PEM CERTIFICATE block"));
    }
    None
}

/// The resolved configuration (defaults, file, environment) as YAML in the
/// file's own schema, for `bao-kms-provider config`. Secret-bearing values
/// are file paths, so no secret is ever printed.
pub fn resolved_yaml(cfg: &Config) -> String {
    match serde_yaml_ng::to_string(&RawConfig::from_config(cfg)) {
        Ok(text) => text,
        // Serializing plain structs of strings, integers and booleans does not fail.
        Err(e) => format!("# cannot render the configuration: {e}\n"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A self-signed test CA (public certificate only; its key was discarded).
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBdzCCAR2gAwIBAgIUKoyfoyDsjkfON0EbJceqI9TJ+pEwCgYIKoZIzj0EAwIw\n\
ETEPMA0GA1UEAwwGdGVzdGNhMB4XDTI2MTEyMjA2MjgxM1oXDTM2MTExOTA2Mjgx\n\
M1owETEPMA0GA1UEAwwGdGVzdGNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n\
BNLrobYjOY2ReF1V5k5bF//edqex3+PseSOZtOH5c+cx9VfCV8G6zWDB1e9DPL1a\n\
Ya7KRfB1Qhgvk6UK25VpBqNTMFEwHQYDVR0OBBYEFPTJBTkmkSwB1fhMooEdSglD\n\
/T/hMB8GA1UdIwQYMBaAFPTJBTkmkSwB1fhMooEdSglD/T/hMA8GA1UdEwEB/wQF\n\
MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAON8k8o1t382ZZXlYcQhFWYcJ2E7Tnfl\n\
Q+gWuMDdL7fWAiBX4vegjIg+eOt/Gz37r8HblqUKo1LUpm/Mz9MSwL5qfQ==\n\
-----END CERTIFICATE-----\n";

    struct Fixture {
        dir: tempfile::TempDir,
        config: PathBuf,
        ca: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca = dir.path().join("ca.crt");
            fs::write(&ca, CA_PEM).unwrap();
            fs::set_permissions(&ca, fs::Permissions::from_mode(0o644)).unwrap();
            let config = dir.path().join("config.yaml");
            let f = Self { dir, config, ca };
            f.write_config("");
            f
        }

        fn text(&self, extra: &str) -> String {
            format!(
                r#"server:
  socketPath: {sock}
  socketGroup: "1234"
openbao:
  address: https://127.0.0.1:8200
  caCertFile: {ca}
  tlsServerName: localhost
  instanceId: bao-test
auth:
  method: token
  token: {{tokenFile: /etc/openbao-kms/token}}
transit:
  mountPath: transit
  keyName: k
  keyIdScope: {{providerName: p, clusterId: c, transitMountId: t, keyLineageId: l}}
{extra}"#,
                sock = self.dir.path().join("kms.sock").display(),
                ca = self.ca.display(),
            )
        }

        fn write_config(&self, extra: &str) {
            fs::write(&self.config, self.text(extra)).unwrap();
            fs::set_permissions(&self.config, fs::Permissions::from_mode(0o640)).unwrap();
        }

        fn env(&self) -> HashMap<String, String> {
            HashMap::from([(ALLOWED_SOCKET_DIR_ENV.to_owned(), self.dir.path().display().to_string())])
        }

        fn load(&self) -> Result<Config, LoadError> {
            self.load_env(self.env())
        }

        fn load_env(&self, env: HashMap<String, String>) -> Result<Config, LoadError> {
            load_with(&self.config, &move |k| env.get(k).cloned(), Overrides::default())
        }
    }

    #[test]
    fn mode_0640_accepted() {
        let f = Fixture::new();
        let cfg = f.load().unwrap();
        assert_eq!(cfg.server.socket_path, f.dir.path().join("kms.sock"));
        assert_eq!(cfg.openbao.ca_cert_file, f.ca);
        fs::set_permissions(&f.config, fs::Permissions::from_mode(0o600)).unwrap();
        f.load().unwrap();
    }

    #[test]
    fn open_modes_rejected() {
        let f = Fixture::new();
        for mode in [0o644, 0o660, 0o650, 0o641, 0o604] {
            fs::set_permissions(&f.config, fs::Permissions::from_mode(mode)).unwrap();
            let e = f.load().unwrap_err();
            assert!(matches!(e, LoadError::File(_)), "{mode:o}");
            let shown = e.to_string();
            assert!(shown.contains(&format!("mode {mode:04o}")), "{shown}");
            assert!(shown.contains("root:openbao-kms") && shown.contains("0640"), "{shown}");
            assert!(shown.starts_with(&format!("{}: ", f.config.display())), "{shown}");
        }
    }

    #[test]
    fn symlink_rejected() {
        let f = Fixture::new();
        let link = f.dir.path().join("link.yaml");
        symlink(&f.config, &link).unwrap();
        let env = f.env();
        let e = load_with(&link, &move |k| env.get(k).cloned(), Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn relative_missing_and_directory_rejected() {
        let e = load(Path::new("config.yaml")).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let f = Fixture::new();
        let e = load_with(&f.dir.path().join("nope.yaml"), &|_| None, Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        let e = load_with(f.dir.path(), &|_| None, Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
    }

    #[test]
    fn ca_checks() {
        let f = Fixture::new();
        fs::remove_file(&f.ca).unwrap();
        let e = f.load().unwrap_err();
        assert_eq!(e.problems()[0].path, "openbao.caCertFile");
        assert!(e.to_string().contains("does not exist"), "{e}");

        fs::write(&f.ca, "not a certificate\n").unwrap();
        fs::set_permissions(&f.ca, fs::Permissions::from_mode(0o644)).unwrap();
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("no PEM CERTIFICATE"), "{e}");

        fs::write(&f.ca, CA_PEM).unwrap();
        fs::set_permissions(&f.ca, fs::Permissions::from_mode(0o664)).unwrap();
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("mode 0664"), "{e}");
    }

    #[test]
    fn socket_dir_needs_the_knob() {
        let f = Fixture::new();
        let e = f.load_env(HashMap::new()).unwrap_err();
        assert!(e.problems().iter().any(|p| p.path == "server.socketPath"), "{e}");
        let e = f
            .load_env(HashMap::from([(
                ALLOWED_SOCKET_DIR_ENV.to_owned(),
                "relative".to_owned(),
            )]))
            .unwrap_err();
        assert!(e.problems().iter().any(|p| p.path == ALLOWED_SOCKET_DIR_ENV), "{e}");
    }

    #[test]
    fn env_and_flags_override() {
        let f = Fixture::new();
        let mut env = f.env();
        env.insert("BAO_KMS_PROVIDER_LOG_LEVEL".into(), "debug".into());
        env.insert("BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS".into(), "127.0.0.1:9999".into());
        let cfg = f.load_env(env.clone()).unwrap();
        assert_eq!(cfg.logging.level, bao_kms_core::config::LogLevel::Debug);
        assert_eq!(cfg.server.health_address.as_deref(), Some("127.0.0.1:9999"));

        let flags = Overrides {
            log_level: Some(bao_kms_core::config::validate::Override {
                value: "warn".into(),
                origin: "--log-level".into(),
            }),
            ..Overrides::default()
        };
        let cfg = load_with(&f.config, &move |k| env.get(k).cloned(), flags).unwrap();
        assert_eq!(cfg.logging.level, bao_kms_core::config::LogLevel::Warn);
    }

    #[test]
    fn every_problem_on_its_own_line() {
        let f = Fixture::new();
        f.write_config("bogus: 1\nlogging: {level: loud}\n");
        let e = f.load().unwrap_err();
        let shown = e.to_string();
        assert_eq!(shown.lines().count(), 2, "{shown}");
        assert!(shown.lines().any(|l| l.starts_with("bogus: ")), "{shown}");
        assert!(shown.lines().any(|l| l.starts_with("logging.level: ")), "{shown}");
    }

    #[test]
    fn resolved_yaml_round_trips_and_shows_only_paths() {
        let f = Fixture::new();
        let cfg = f.load().unwrap();
        let out = resolved_yaml(&cfg);
        assert!(out.contains("tokenFile: /etc/openbao-kms/token"), "{out}");
        assert!(out.contains("socketGroup: '1234'"), "{out}");
        assert!(out.contains("maxConcurrentDecrypt: 1024"), "{out}");
        fs::write(&f.config, &out).unwrap();
        assert_eq!(f.load().unwrap(), cfg);
    }
}
