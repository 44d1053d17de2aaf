//! `bao-kms-provider init`: every install file for one node model, rendered
//! from one values file (the configuration file format) and the templates in
//! `manifests/`, without contacting OpenBao or touching the host.
//!
//! [`render`] is pure: values and flags in, a list of (file name, mode,
//! contents) out. The provider crate checks the output directory and writes
//! the files. Order of the rules:
//! 1. Flags (exit 2): model-specific flags, a pinned image, the socket GID,
//!    the policy name, `--new-key` against a values file that has a lineage.
//! 2. Values (exit 3): omitted host paths and the socket group are filled in,
//!    then the result is validated exactly like `serve` validates its file
//!    (environment overrides are not applied), then the rules that only
//!    `init` needs: the auth method's own (JWT issuer, audience and subject,
//!    a cert role name, no PKCS#11 in the static pod; see [`auth`]),
//!    `loginBeforeTokenExpiry` below the role's 30m token TTL,
//!    a fixed health port, host directories that are neither broad (`/`,
//!    `/etc`, ...) nor shared between credentials and the provider's
//!    writable state and socket directories.
//! 3. Rendering; both EncryptionConfiguration files must pass the
//!    EncryptionConfiguration analysis for the rendered configuration, and the
//!    rendered `config.yaml` must validate back to the same configuration.

mod auth;
pub mod template;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::config::raw::RawConfig;
use crate::config::{
    Config, ConfigError, DEFAULT_CONFIG_PATH, SocketGroup, ValidationContext, format_duration, parse_yaml_with,
};
use crate::encryption_config::{self as ec, ProviderExpectation, Severity, ValidateOptions};
use auth::AuthPlan;
pub use auth::{DEFAULT_JWT_FILE, ROLE_TOKEN_TTL};
use template::{TemplateError, sh_str, yaml_str};
use values::{problem, section, set_if_absent};

const STATIC_POD_TMPL: &str = include_str!("../../../../manifests/static-pod/bao-kms-provider.yaml.tmpl");
const EC_READERS_TMPL: &str =
    include_str!("../../../../manifests/encryption-config/encryption-config-readers.yaml.tmpl");
const EC_WRITERS_TMPL: &str = include_str!("../../../../manifests/encryption-config/encryption-config.yaml.tmpl");
const NODE_SETUP_TMPL: &str = include_str!("../../../../manifests/scripts/node-setup.sh.tmpl");
const OPENBAO_SETUP_TMPL: &str = include_str!("../../../../manifests/scripts/openbao-setup.sh.tmpl");

/// Filled in when `openbao.caCertFile` is omitted.
pub const DEFAULT_CA_CERT_FILE: &str = "/etc/openbao-kms/tls/ca.crt";
/// Filled in when `server.socketGroup` is omitted (systemd model).
pub const DEFAULT_SOCKET_GROUP: &str = "openbao-kms-socket";
/// The provider's user and group on a systemd host.
pub const SERVICE_USER: &str = "openbao-kms";
/// UID and GID of the provider in the static pod (the image's non-root user).
pub const STATIC_POD_ID: u32 = 65532;
/// Where node-setup.sh places the EncryptionConfiguration files.
pub const ENCRYPTION_CONFIG_DIR: &str = "/etc/kubernetes/openbao-kms";
/// Where node-setup.sh places the static pod manifest.
pub const STATIC_POD_MANIFEST: &str = "/etc/kubernetes/manifests/bao-kms-provider.yaml";
/// Host directories never mounted or re-permissioned as a whole.
pub const BROAD_DIRECTORIES: &[&str] = &[
    "/",
    "/etc",
    "/etc/kubernetes",
    "/var",
    "/var/lib",
    "/run",
    "/var/run",
    "/usr",
    "/usr/local",
    "/home",
    "/root",
    "/tmp",
    "/dev",
    "/proc",
    "/sys",
    "/boot",
];
/// Policy names OpenBao reserves.
const RESERVED_POLICY_NAMES: [&str; 2] = ["root", "default"];

/// How the provider runs on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    Systemd,
    StaticPod,
}

impl Model {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Systemd => "systemd",
            Self::StaticPod => "static-pod",
        }
    }
}

/// The static pod's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Air-gapped: the image is preloaded; kubelet never pulls.
    Never,
    IfNotPresent,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "Never",
            Self::IfNotPresent => "IfNotPresent",
        }
    }
}

/// Who generated the files (recorded in `installation.json` and headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generator {
    pub version: String,
    pub commit: String,
}

/// Everything `init` renders from.
#[derive(Debug, Clone)]
pub struct InitRequest {
    /// The values file's text.
    pub values: String,
    pub model: Model,
    /// `--new-key`: the freshly generated `keyLineageId`.
    pub new_key_lineage_id: Option<String>,
    /// `--policy-name`.
    pub policy_name: Option<String>,
    /// `--image` (static pod).
    pub image: Option<String>,
    /// `--image-pull-policy` (static pod); `None` means `Never`.
    pub image_pull_policy: Option<PullPolicy>,
    /// `--socket-gid` (static pod), as typed.
    pub socket_gid: Option<String>,
    /// Socket-directory allow-list extension (the same test knob `serve`
    /// honours); no environment overrides.
    pub context: ValidationContext,
    pub generator: Generator,
}

/// Why nothing was rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// A flag is missing, malformed or not allowed here (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The values are invalid (exit 3): one `path: message` per problem.
    #[error("{}", lines(.0))]
    Values(Vec<ConfigError>),
    /// A template and its renderer disagree (a product bug).
    #[error(transparent)]
    Template(#[from] TemplateError),
}

fn lines(problems: &[ConfigError]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub name: &'static str,
    pub mode: u32,
    pub contents: String,
}

/// The rendered files and what they were rendered for.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub files: Vec<OutputFile>,
    pub config: Config,
    pub policy_name: String,
}

/// `sha256:` and 64 lowercase hex digits: an image digest.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// `REF@sha256:<64 hex>` with a non-empty, space-free reference.
pub fn image_problem(image: &str) -> Option<String> {
    let Some((name, digest)) = image.rsplit_once('@') else {
        return Some(format!(
            "--image {image:?} is not pinned: use <repository>@sha256:<64 hex digits> (tags can move)"
        ));
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
        return Some(format!(
            "--image {image:?}: the repository part before '@' is empty or malformed"
        ));
    }
    if !is_digest(digest) {
        return Some(format!(
            "--image {image:?} is not pinned: the digest must be sha256: followed by 64 lowercase hex digits"
        ));
    }
    None
}

/// OpenBao policy name rules: ASCII letters, digits, `_`, `.`, `-`;
/// starts with a letter, digit or `_`; not `root` or `default`.
pub fn policy_name_problem(name: &str) -> Option<String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Some(format!(
            "policy name {name:?} must use ASCII letters, digits, '_', '.', '-' and start with a letter, digit or '_'"
        ));
    }
    if RESERVED_POLICY_NAMES.contains(&name) {
        return Some(format!("policy name {name:?} is reserved by OpenBao"));
    }
    None
}

fn parse_socket_gid(s: &str) -> Result<u32, String> {
    let gid: u32 = s
        .parse()
        .ok()
        .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("--socket-gid {s:?} must be a decimal GID"))?;
    if gid == 0 {
        return Err("--socket-gid 0 is root's group; use a dedicated group for the socket".into());
    }
    Ok(gid)
}

/// The flag rules (exit 2). Returns the socket GID for the static pod.
fn check_flags(req: &InitRequest) -> Result<Option<u32>, InitError> {
    let usage = |m: String| Err(InitError::Usage(m));
    if let Some(name) = &req.policy_name
        && let Some(p) = policy_name_problem(name)
    {
        return usage(format!("--policy-name: {p}"));
    }
    match req.model {
        Model::Systemd => {
            for (flag, set) in [
                ("--image", req.image.is_some()),
                ("--image-pull-policy", req.image_pull_policy.is_some()),
                ("--socket-gid", req.socket_gid.is_some()),
            ] {
                if set {
                    return usage(format!(
                        "{flag} is only for --model static-pod; the systemd model takes server.socketGroup from the values"
                    ));
                }
            }
            Ok(None)
        }
        Model::StaticPod => {
            let Some(image) = &req.image else {
                return usage("--model static-pod needs --image <repository>@sha256:<digest>".into());
            };
            if let Some(p) = image_problem(image) {
                return usage(p);
            }
            let Some(gid) = &req.socket_gid else {
                return usage(
                    "--model static-pod needs --socket-gid <GID>: the host group kube-apiserver reaches the socket through"
                        .into(),
                );
            };
            parse_socket_gid(gid).map(Some).map_err(InitError::Usage)
        }
    }
}

/// Fills the defaults `init` owns into the values document.
fn fill_values(doc: &mut Mapping, req: &InitRequest, socket_gid: Option<u32>) -> Result<(), InitError> {
    if let Some(openbao) = section(doc, "openbao") {
        set_if_absent(openbao, "caCertFile", DEFAULT_CA_CERT_FILE);
    }
    if let Some(auth) = section(doc, "auth") {
        auth::fill_defaults(auth);
    }
    if let Some(server) = section(doc, "server") {
        match socket_gid {
            Some(gid) => {
                server.insert(Yaml::String("socketGroup".into()), Yaml::String(gid.to_string()));
            }
            None => set_if_absent(server, "socketGroup", DEFAULT_SOCKET_GROUP),
        }
    }
    if let Some(id) = &req.new_key_lineage_id {
        let scope = section(doc, "transit").and_then(|t| section(t, "keyIdScope"));
        if let Some(scope) = scope {
            if scope.contains_key(Yaml::String("keyLineageId".into())) {
                return Err(InitError::Usage(
                    "--new-key generates transit.keyIdScope.keyLineageId, but the values already have one; \
                     drop --new-key to keep it (an existing key), or remove it from the values for a new key"
                        .into(),
                ));
            }
            scope.insert(Yaml::String("keyLineageId".into()), Yaml::String(id.clone()));
        }
    }
    Ok(())
}

/// Parses the values, fills defaults and validates like `serve`.
fn resolve_config(req: &InitRequest, socket_gid: Option<u32>) -> Result<Config, InitError> {
    let mut doc: Yaml = serde_yaml_ng::from_str(&req.values)
        .map_err(|e| InitError::Values(vec![problem("", format!("the values file is not valid YAML: {e}"))]))?;
    if doc.is_null() {
        doc = Yaml::Mapping(Mapping::new());
    }
    let text = match doc.as_mapping_mut() {
        Some(m) => {
            fill_values(m, req, socket_gid)?;
            serde_yaml_ng::to_string(&doc)
                .map_err(|e| InitError::Values(vec![problem("", format!("cannot re-encode the values: {e}"))]))?
        }
        None => req.values.clone(),
    };
    parse_yaml_with(&text, &req.context).map_err(|errors| {
        InitError::Values(
            errors
                .0
                .into_iter()
                .map(|mut e| {
                    if e.path == "transit.keyIdScope.keyLineageId" && req.new_key_lineage_id.is_none() {
                        e.message.push_str(" (pass --new-key to generate one for a new key)");
                    }
                    e
                })
                .collect(),
        )
    })
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Characters that would need escaping in tmpfiles.d lines or that shells
/// and YAML treat specially; host paths `init` writes must not have them.
fn plain_path(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        !s.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '\\' | '$' | '`' | '%' | '*' | '?')
        })
    })
}

/// The rules only `init` needs, on the validated configuration, and the
/// auth method's plan.
fn init_rules(cfg: &Config, policy_name: &str, model: Model) -> Result<AuthPlan, InitError> {
    let (plan, mut problems) = match auth::plan(cfg, policy_name, model == Model::StaticPod) {
        Ok(plan) => (Some(plan), Vec::new()),
        Err(problems) => (None, problems),
    };
    if cfg.auth.login_before_token_expiry >= ROLE_TOKEN_TTL {
        problems.push(problem(
            "auth.loginBeforeTokenExpiry",
            format!(
                "{} must be less than {}, the TTL of the tokens the generated role issues",
                format_duration(cfg.auth.login_before_token_expiry),
                format_duration(ROLE_TOKEN_TTL)
            ),
        ));
    }
    match cfg.server.health_address.as_deref().map(health_endpoint) {
        None => problems.push(problem(
            "server.healthAddress",
            "must be set: the static pod probes and node-setup.sh start wait for /ready on it",
        )),
        Some(Err(m)) => problems.push(problem("server.healthAddress", m)),
        Some(Ok(_)) => {}
    }

    let socket_dir = parent(&cfg.server.socket_path);
    let state_dir = parent(&cfg.state.path);
    let credentials = plan.as_ref().map(|p| p.credentials.as_slice()).unwrap_or_default();
    let mut host_paths: Vec<(&str, &Path)> = vec![
        ("openbao.caCertFile", &cfg.openbao.ca_cert_file),
        ("server.socketPath", &cfg.server.socket_path),
        ("state.path", &cfg.state.path),
        ("configuration", Path::new(DEFAULT_CONFIG_PATH)),
    ];
    host_paths.extend(credentials.iter().map(|c| (c.field, c.path.as_path())));
    for (field, path) in host_paths {
        if !plain_path(path) {
            problems.push(problem(
                field,
                format!(
                    "{} must not contain whitespace, quotes, '\\', '$', '`', '%', '*' or '?' (it is written into tmpfiles.d and shell scripts)",
                    path.display()
                ),
            ));
        }
        let dir = parent(path);
        if BROAD_DIRECTORIES.iter().any(|b| dir == Path::new(b)) {
            problems.push(problem(
                field,
                format!(
                    "{} is in {}, which would be mounted into the pod and re-permissioned by node-setup.sh as a whole; \
                     use a dedicated directory (e.g. /etc/openbao-kms/tls, /var/lib/openbao-kms/credentials, \
                     /run/openbao-kms, /var/lib/openbao-kms/state)",
                    path.display(),
                    dir.display()
                ),
            ));
        }
    }
    let mut private: Vec<(&str, &Path, &str)> = credentials
        .iter()
        .map(|c| (c.field, c.path.as_path(), "credentials"))
        .collect();
    private.push(("openbao.caCertFile", &cfg.openbao.ca_cert_file, "CA"));
    for (field, path, what) in private {
        let dir = parent(path);
        for (other, name) in [(&state_dir, "state"), (&socket_dir, "socket")] {
            if overlaps(&dir, other) {
                problems.push(problem(
                    field,
                    format!(
                        "the {what} directory {} overlaps the {name} directory {}: the provider writes there{}; \
                         keep {what} in a directory of their own",
                        dir.display(),
                        other.display(),
                        if name == "socket" {
                            " and the socket group may enter it"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
    }
    match plan {
        Some(plan) if problems.is_empty() => Ok(plan),
        _ => Err(InitError::Values(problems)),
    }
}

/// Probe host (no brackets), port and `/ready` URL from `server.healthAddress`.
struct HealthEndpoint {
    host: String,
    port: u16,
    ready_url: String,
}

fn health_endpoint(address: &str) -> Result<HealthEndpoint, String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("{address:?} has no numeric port"))?;
    if port == 0 {
        return Err("port 0 (ephemeral) cannot be probed; choose a fixed port such as 8082".into());
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        h => h,
    }
    .to_owned();
    let url_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok(HealthEndpoint {
        ready_url: format!("http://{url_host}:{port}/ready"),
        host,
        port,
    })
}

fn port_of(address: &str) -> Option<u16> {
    address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .filter(|p| *p != 0)
}

/// Renders every file for `req`.
pub fn render(req: &InitRequest) -> Result<Rendered, InitError> {
    let socket_gid = check_flags(req)?;
    let cfg = resolve_config(req, socket_gid)?;
    let policy_name = match &req.policy_name {
        Some(n) => n.clone(),
        None => {
            let name = format!("openbao-kms-{}", cfg.transit.key_id_scope.cluster_id);
            if let Some(p) = policy_name_problem(&name) {
                return Err(InitError::Values(vec![problem(
                    "transit.keyIdScope.clusterId",
                    format!("the default {p}; pass --policy-name"),
                )]));
            }
            name
        }
    };
    let auth = init_rules(&cfg, &policy_name, req.model)?;
    let r = Renderer {
        req,
        cfg: &cfg,
        auth: &auth,
        policy_name: &policy_name,
        socket_gid,
        fingerprint: cfg.identity_scope().fingerprint(),
        health: health_endpoint(cfg.server.health_address.as_deref().unwrap_or_default()).map_err(|m| {
            // Unreachable: init_rules checked it.
            InitError::Values(vec![problem("server.healthAddress", m)])
        })?,
    };
    let files = r.files()?;
    Ok(Rendered {
        files,
        config: cfg,
        policy_name,
    })
}

struct Renderer<'a> {
    req: &'a InitRequest,
    cfg: &'a Config,
    /// The auth method's credentials and OpenBao setup.
    auth: &'a AuthPlan,
    policy_name: &'a str,
    socket_gid: Option<u32>,
    fingerprint: String,
    health: HealthEndpoint,
}

type Values = BTreeMap<&'static str, String>;

impl Renderer<'_> {
    fn files(&self) -> Result<Vec<OutputFile>, InitError> {
        let mut files = vec![
            OutputFile {
                name: "config.yaml",
                mode: 0o640,
                contents: self.config_yaml()?,
            },
            OutputFile {
                name: "encryption-config-readers.yaml",
                mode: 0o644,
                contents: self.encryption_config("encryption-config-readers.yaml", EC_READERS_TMPL)?,
            },
            OutputFile {
                name: "encryption-config.yaml",
                mode: 0o644,
                contents: self.encryption_config("encryption-config.yaml", EC_WRITERS_TMPL)?,
            },
            OutputFile {
                name: "openbao-policy.hcl",
                mode: 0o644,
                contents: crate::policy::openbao_policy(self.cfg, true),
            },
            OutputFile {
                name: "openbao-setup.sh",
                mode: 0o755,
                contents: self.openbao_setup()?,
            },
        ];
        if self.req.model == Model::StaticPod {
            files.push(OutputFile {
                name: "bao-kms-provider.yaml",
                mode: 0o644,
                contents: self.static_pod()?,
            });
        }
        files.push(OutputFile {
            name: "node-setup.sh",
            mode: 0o755,
            contents: self.node_setup()?,
        });
        let mut listed: Vec<FileEntry> = files
            .iter()
            .map(|f| FileEntry {
                name: f.name,
                mode: format!("{:04o}", f.mode),
            })
            .collect();
        listed.push(FileEntry {
            name: "installation.json",
            mode: "0644".into(),
        });
        files.push(OutputFile {
            name: "installation.json",
            mode: 0o644,
            contents: self.installation_json(listed),
        });
        Ok(files)
    }

    fn version(&self) -> String {
        self.req.generator.version.clone()
    }

    fn config_yaml(&self) -> Result<String, InitError> {
        let body = serde_yaml_ng::to_string(&RawConfig::from_config(self.cfg))
            .map_err(|e| InitError::Values(vec![problem("", format!("cannot encode the configuration: {e}"))]))?;
        let text = format!(
            "# bao-kms-provider configuration ({} model), written by `bao-kms-provider init` {}.\n\
             # Identity fingerprint: {}\n\
             # transit.*, openbao.instanceId and openbao.namespace are identity-bearing: never change\n\
             # them once data is encrypted; keep a copy of this file with the OpenBao backup.\n{body}",
            self.req.model.as_str(),
            self.version(),
            self.fingerprint
        );
        // The file must load back to exactly what was validated.
        match parse_yaml_with(&text, &self.req.context) {
            Ok(back) if &back == self.cfg => Ok(text),
            Ok(_) => Err(InitError::Values(vec![problem(
                "",
                "the rendered configuration does not load back to the validated values",
            )])),
            Err(e) => Err(InitError::Values(e.0)),
        }
    }

    fn encryption_config(&self, name: &str, template_text: &str) -> Result<String, InitError> {
        let provider = &self.cfg.transit.key_id_scope.provider_name;
        let expected = ProviderExpectation::from_config(self.cfg);
        let values: Values = BTreeMap::from([
            ("generator_version", self.version()),
            ("provider_name", yaml_str(provider)),
            ("provider_name_comment", provider.replace(['\n', '\r'], " ")),
            ("endpoint", yaml_str(&expected.endpoint)),
        ]);
        let text = template::render(name, template_text, &values)?;
        let errors: Vec<ConfigError> = ec::analyze(&text, &expected, &ValidateOptions::default())
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| problem("transit.keyIdScope.providerName", format!("{name}: {f}")))
            .collect();
        if errors.is_empty() {
            Ok(text)
        } else {
            Err(InitError::Values(errors))
        }
    }

    fn openbao_setup(&self) -> Result<String, InitError> {
        let t = &self.cfg.transit;
        let values: Values = BTreeMap::from([
            ("generator_version", self.version()),
            ("fingerprint", self.fingerprint.clone()),
            ("transit_mount", sh_str(&t.mount_path)),
            ("transit_mount_comment", t.mount_path.clone()),
            ("key_name", sh_str(&t.key_name)),
            ("key_name_comment", t.key_name.clone()),
            ("policy_name", sh_str(self.policy_name)),
            ("policy_name_comment", self.policy_name.to_owned()),
            ("auth_label", self.auth.label.clone()),
            ("auth_header", self.auth.setup_header.clone()),
            ("auth_setup", self.auth.setup.clone()),
            ("openbao_namespace", sh_str(&self.cfg.openbao.namespace)),
        ]);
        Ok(template::render("openbao-setup.sh", OPENBAO_SETUP_TMPL, &values)?)
    }

    /// The credential files' directories, each once, in plan order.
    fn credential_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for c in &self.auth.credentials {
            let d = parent(&c.path);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        dirs
    }

    fn volumes(&self) -> Vec<Volume> {
        let mut out: Vec<Volume> = Vec::new();
        let mut add = |name: String, path: PathBuf, kind: &'static str, read_only: bool| {
            if !out.iter().any(|v| v.path == path) {
                out.push(Volume {
                    name,
                    path,
                    kind,
                    read_only,
                });
            }
        };
        add("config".into(), PathBuf::from(DEFAULT_CONFIG_PATH), "File", true);
        add(
            "openbao-ca".into(),
            parent(&self.cfg.openbao.ca_cert_file),
            "Directory",
            true,
        );
        for (i, dir) in self.credential_dirs().into_iter().enumerate() {
            let name = match i {
                0 => "credentials".to_owned(),
                n => format!("credentials-{}", n + 1),
            };
            add(name, dir, "Directory", true);
        }
        add(
            "socket".into(),
            parent(&self.cfg.server.socket_path),
            "Directory",
            false,
        );
        add("state".into(), parent(&self.cfg.state.path), "Directory", false);
        out
    }

    fn static_pod(&self) -> Result<String, InitError> {
        let volumes = self.volumes();
        let mounts = volumes
            .iter()
            .map(|v| {
                format!(
                    "        - name: {}\n          mountPath: {}\n          readOnly: {}",
                    v.name,
                    yaml_str(&v.path.display().to_string()),
                    v.read_only
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let host_volumes = volumes
            .iter()
            .map(|v| {
                format!(
                    "    - name: {}\n      hostPath:\n        path: {}\n        type: {}",
                    v.name,
                    yaml_str(&v.path.display().to_string()),
                    v.kind
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut ports = Vec::new();
        if let Some(p) = self.cfg.server.metrics_address.as_deref().and_then(port_of) {
            ports.push(("metrics", p));
        }
        ports.push(("health", self.health.port));
        let ports = format!(
            "      ports:\n{}",
            ports
                .iter()
                .map(|(n, p)| format!("        - name: {n}\n          containerPort: {p}\n          protocol: TCP"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let grace = self.cfg.bootstrap.grace_timeout.as_secs() + 60;
        let values: Values = BTreeMap::from([
            ("generator_version", self.version()),
            ("fingerprint", self.fingerprint.clone()),
            ("runtime_uid", STATIC_POD_ID.to_string()),
            ("runtime_gid", STATIC_POD_ID.to_string()),
            ("socket_gid", self.socket_gid.unwrap_or_default().to_string()),
            ("image", yaml_str(self.req.image.as_deref().unwrap_or_default())),
            (
                "image_pull_policy",
                self.req
                    .image_pull_policy
                    .unwrap_or(PullPolicy::Never)
                    .as_str()
                    .to_owned(),
            ),
            ("config_arg", yaml_str(&format!("--config={DEFAULT_CONFIG_PATH}"))),
            ("ports", ports),
            ("health_host", yaml_str(&self.health.host)),
            ("health_port", self.health.port.to_string()),
            ("startup_failure_threshold", grace.div_ceil(5).to_string()),
            ("volume_mounts", mounts),
            ("volumes", host_volumes),
        ]);
        Ok(template::render("bao-kms-provider.yaml", STATIC_POD_TMPL, &values)?)
    }

    /// (user, group, socket group) as node-setup.sh names them.
    fn owners(&self) -> (String, String, String) {
        match self.req.model {
            Model::Systemd => {
                let socket = match &self.cfg.server.socket_group {
                    SocketGroup::Name(n) => n.clone(),
                    SocketGroup::Gid(g) => g.to_string(),
                };
                (SERVICE_USER.into(), SERVICE_USER.into(), socket)
            }
            Model::StaticPod => (
                STATIC_POD_ID.to_string(),
                STATIC_POD_ID.to_string(),
                self.socket_gid.unwrap_or_default().to_string(),
            ),
        }
    }

    fn node_setup(&self) -> Result<String, InitError> {
        let (user, group, socket_group) = self.owners();
        let config_dir = parent(Path::new(DEFAULT_CONFIG_PATH));
        let ca_dir = parent(&self.cfg.openbao.ca_cert_file);
        let cred_dirs = self.credential_dirs();
        let state_dir = parent(&self.cfg.state.path);
        let var_lib = PathBuf::from("/var/lib/openbao-kms");
        // (path, owner, group, mode): parents before children, first wins.
        let mut dirs: Vec<(PathBuf, &str, &str, &str)> = vec![(config_dir, "root", "\"$RUN_GROUP\"", "0750")];
        dirs.push((ca_dir, "root", "root", "0755"));
        if (state_dir.starts_with(&var_lib) || cred_dirs.iter().any(|d| d.starts_with(&var_lib)))
            && state_dir != var_lib
        {
            dirs.push((var_lib, "\"$RUN_USER\"", "\"$RUN_GROUP\"", "0750"));
        }
        for dir in cred_dirs {
            dirs.push((dir, "root", "\"$RUN_GROUP\"", "0750"));
        }
        dirs.push((state_dir, "\"$RUN_USER\"", "\"$RUN_GROUP\"", "0750"));
        dirs.push((PathBuf::from(ENCRYPTION_CONFIG_DIR), "root", "root", "0755"));
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut prepare_dirs = Vec::new();
        for (path, owner, grp, mode) in dirs {
            if seen.contains(&path) {
                continue;
            }
            prepare_dirs.push(format!(
                "    ensure_dir \"$R\"{} {owner} {grp} {mode}",
                sh_str(&path.display().to_string())
            ));
            seen.push(path);
        }
        let (identities, as_user, start, tmpfiles) = match self.req.model {
            Model::Systemd => {
                let mut ids = vec![
                    "    getent group \"$RUN_GROUP\" >/dev/null || groupadd --system \"$RUN_GROUP\"".to_owned(),
                ];
                if matches!(self.cfg.server.socket_group, SocketGroup::Name(_)) {
                    ids.push(
                        "    getent group \"$SOCKET_GROUP\" >/dev/null || groupadd --system \"$SOCKET_GROUP\"".into(),
                    );
                }
                ids.push(
                    "    id -u \"$RUN_USER\" >/dev/null 2>&1 || useradd --system --gid \"$RUN_GROUP\" \
                     --home-dir /var/lib/openbao-kms --no-create-home --shell /usr/sbin/nologin \
                     --comment 'OpenBao Kubernetes KMS provider' \"$RUN_USER\""
                        .into(),
                );
                ids.push("    usermod -a -G \"$SOCKET_GROUP\" \"$RUN_USER\"".into());
                ids.push("    say \"user $RUN_USER in groups $RUN_GROUP and $SOCKET_GROUP\"".into());
                (
                    ids.join("\n"),
                    "    setpriv --reuid=\"$RUN_USER\" --regid=\"$RUN_GROUP\" --init-groups -- \"$@\"",
                    "    systemctl daemon-reload\n    systemctl enable --now \"$SERVICE\"\n    say \"enabled and started $SERVICE\"",
                    "/etc/tmpfiles.d/openbao-kms.conf",
                )
            }
            Model::StaticPod => (
                "    say \"numeric owners: provider $RUN_USER:$RUN_GROUP, socket group $SOCKET_GROUP (no host accounts)\""
                    .to_owned(),
                "    setpriv --reuid=\"$RUN_USER\" --regid=\"$RUN_GROUP\" --groups=\"$SOCKET_GROUP\" -- \"$@\"",
                "    [ -d \"$R$STATIC_POD_DIR\" ] || die \"$R$STATIC_POD_DIR does not exist: is this a kubeadm control-plane node?\"\n    place \"$HERE/bao-kms-provider.yaml\" \"$R$STATIC_POD_DIR/bao-kms-provider.yaml\" root root 0600",
                "/etc/tmpfiles.d/openbao-kms-static-pod.conf",
            ),
        };
        let path_str = |p: &Path| sh_str(&p.display().to_string());
        let install = self.install_phase();
        let values: Values = BTreeMap::from([
            ("generator_version", self.version()),
            ("model", self.req.model.as_str().to_owned()),
            ("fingerprint", self.fingerprint.clone()),
            ("config_path", sh_str(DEFAULT_CONFIG_PATH)),
            ("config_dir", path_str(&parent(Path::new(DEFAULT_CONFIG_PATH)))),
            ("ca_file", path_str(&self.cfg.openbao.ca_cert_file)),
            ("install_usage", self.install_usage()),
            ("install_parse", install.parse),
            ("install_check", install.check),
            ("install_place", install.place),
            ("socket_dir", path_str(&parent(&self.cfg.server.socket_path))),
            ("health_url", sh_str(&self.health.ready_url)),
            ("run_user", sh_str(&user)),
            ("run_group", sh_str(&group)),
            ("socket_group", sh_str(&socket_group)),
            ("encryption_config_dir", sh_str(ENCRYPTION_CONFIG_DIR)),
            ("tmpfiles_conf", sh_str(tmpfiles)),
            ("prepare_identities", identities),
            ("prepare_dirs", prepare_dirs.join("\n")),
            ("as_service_user", as_user.to_owned()),
            ("start_provider", start.to_owned()),
        ]);
        Ok(template::render("node-setup.sh", NODE_SETUP_TMPL, &values)?)
    }

    /// `install --ca <...> --flag <...>...` as the usage lines name it.
    fn install_usage(&self) -> String {
        let mut usage = "install --ca <OpenBao CA PEM>".to_owned();
        for c in &self.auth.credentials {
            usage.push_str(&format!(" {} {}", c.flag, c.what));
        }
        usage
    }

    /// The method-specific parts of `node-setup.sh install`: one flag per
    /// credential file, each required, checked and placed atomically.
    fn install_phase(&self) -> InstallPhase {
        let mut parse = Vec::new();
        let mut check = Vec::new();
        let mut place = Vec::new();
        let mut init = vec!["ca=''".to_owned()];
        let mut needs = vec!["--ca <file>".to_owned()];
        for c in &self.auth.credentials {
            let var = c.flag.trim_start_matches('-').replace('-', "_");
            init.push(format!("{var}=''"));
            needs.push(format!("{} <file>", c.flag));
            parse.push(format!(
                "            {flag}) [ $# -ge 2 ] || die \"{flag} needs a file\" 2; {var}=$2; shift 2 ;;",
                flag = c.flag
            ));
            check.push(format!(
                "    [ -f \"${var}\" ] || die \"{flag} ${var} is not a file\" 2",
                flag = c.flag
            ));
            if let Some(pem) = c.pem {
                check.push(format!(
                    "    grep -q -- {} \"${var}\" || die \"${var} contains no PEM {}\" 2",
                    sh_str(&format!("{pem}-----")),
                    pem.to_lowercase()
                ));
            }
            place.push(format!(
                "    place \"${var}\" \"$R\"{} root \"$RUN_GROUP\" {}",
                sh_str(&c.path.display().to_string()),
                c.mode
            ));
        }
        let all_set = std::iter::once("ca".to_owned())
            .chain(
                self.auth
                    .credentials
                    .iter()
                    .map(|c| c.flag.trim_start_matches('-').replace('-', "_")),
            )
            .map(|v| format!("[ -n \"${v}\" ]"))
            .collect::<Vec<_>>()
            .join(" && ");
        check.insert(
            0,
            format!("    {all_set} || die \"install needs {}\" 2", needs.join(" and ")),
        );
        InstallPhase {
            parse: format!(
                "    {}\n    while [ $# -gt 0 ]; do\n        case \"$1\" in\n            --ca) [ $# -ge 2 ] || die \"--ca needs a file\" 2; ca=$2; shift 2 ;;\n{}",
                init.join(" "),
                parse.join("\n")
            ),
            check: check.join("\n"),
            place: place.join("\n"),
        }
    }

    fn installation_json(&self, files: Vec<FileEntry>) -> String {
        let (user, group, socket_group) = self.owners();
        let static_pod = self.req.model == Model::StaticPod;
        let mut remaining = vec![self.auth.operator_action.clone()];
        if static_pod {
            remaining.push(format!(
                "Each control-plane node: preload the image {} (crictl pull, or ctr -n k8s.io images import) and install the host binary for the check phase",
                self.req.image.as_deref().unwrap_or_default()
            ));
        } else {
            remaining.push(
                "Each control-plane node: install the bao-kms-provider package (binary and bao-kms-provider.service)"
                    .to_owned(),
            );
        }
        remaining.extend([
            "Each control-plane node, as root: node-setup.sh prepare".to_owned(),
            format!(
                "node-setup.sh {}; replace a credential before it expires by an atomic rename in its directory",
                self.install_usage()
            ),
            "node-setup.sh check, then node-setup.sh start within 1 h".to_owned(),
            format!(
                "kube-apiserver: --encryption-provider-config={ENCRYPTION_CONFIG_DIR}/encryption-config-readers.yaml on every control-plane node, one node at a time"
            ),
            format!(
                "Then {ENCRYPTION_CONFIG_DIR}/encryption-config.yaml on every node, and rewrite Secrets: kubectl get secrets -A -o json | kubectl replace -f -"
            ),
            "Keep the identity fingerprint, keyLineageId and config.yaml with the OpenBao backup; never change identity values".to_owned(),
        ]);
        let doc = Installation {
            generator: GeneratorInfo {
                name: "bao-kms-provider init",
                version: &self.req.generator.version,
                commit: &self.req.generator.commit,
            },
            identity_fingerprint: &self.fingerprint,
            key_lineage_id: &self.cfg.transit.key_id_scope.key_lineage_id,
            key_lineage_id_generated: self.req.new_key_lineage_id.is_some(),
            model: self.req.model.as_str(),
            image: self.req.image.as_deref(),
            image_pull_policy: static_pod.then(|| self.req.image_pull_policy.unwrap_or(PullPolicy::Never).as_str()),
            runtime: Runtime {
                user: (!static_pod).then_some(user.clone()),
                uid: static_pod.then_some(STATIC_POD_ID),
                group: (!static_pod).then_some(group.clone()),
                gid: static_pod.then_some(STATIC_POD_ID),
                socket_group: socket_group.clone(),
                socket_gid: self.socket_gid,
            },
            openbao: OpenBaoInfo {
                transit_mount: &self.cfg.transit.mount_path,
                key_name: &self.cfg.transit.key_name,
                policy_name: self.policy_name,
                auth_method: &self.auth.label,
                auth_mount: &self.auth.mount,
                role: &self.auth.role,
            },
            host_paths: HostPaths {
                config: DEFAULT_CONFIG_PATH.into(),
                ca_cert_file: self.cfg.openbao.ca_cert_file.display().to_string(),
                credential_files: self
                    .auth
                    .credentials
                    .iter()
                    .map(|c| CredentialPath {
                        field: c.field,
                        path: c.path.display().to_string(),
                    })
                    .collect(),
                socket_path: self.cfg.server.socket_path.display().to_string(),
                state_path: self.cfg.state.path.display().to_string(),
                encryption_config_dir: ENCRYPTION_CONFIG_DIR.into(),
                static_pod_manifest: static_pod.then(|| STATIC_POD_MANIFEST.to_owned()),
            },
            files,
            remaining_actions: remaining,
        };
        // serde_json fails only on a map key that is neither a string nor a
        // number, or on a Serialize impl that errs; the installation document is
        // derived structs of strings, lists and options.
        let mut text = serde_json::to_string_pretty(&doc).expect("the installation document serialises to JSON");
        text.push('\n');
        text
    }
}

struct InstallPhase {
    parse: String,
    check: String,
    place: String,
}

#[derive(Serialize)]
struct CredentialPath {
    field: &'static str,
    path: String,
}

struct Volume {
    name: String,
    path: PathBuf,
    kind: &'static str,
    read_only: bool,
}

#[derive(Serialize)]
struct FileEntry {
    name: &'static str,
    mode: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Installation<'a> {
    generator: GeneratorInfo<'a>,
    identity_fingerprint: &'a str,
    key_lineage_id: &'a str,
    key_lineage_id_generated: bool,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_pull_policy: Option<&'a str>,
    runtime: Runtime,
    openbao: OpenBaoInfo<'a>,
    host_paths: HostPaths,
    files: Vec<FileEntry>,
    remaining_actions: Vec<String>,
}

#[derive(Serialize)]
struct GeneratorInfo<'a> {
    name: &'a str,
    version: &'a str,
    commit: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Runtime {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    socket_group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_gid: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OpenBaoInfo<'a> {
    transit_mount: &'a str,
    key_name: &'a str,
    policy_name: &'a str,
    auth_method: &'a str,
    auth_mount: &'a str,
    role: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HostPaths {
    config: String,
    ca_cert_file: String,
    credential_files: Vec<CredentialPath>,
    socket_path: String,
    state_path: String,
    encryption_config_dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    static_pod_manifest: Option<String>,
}
