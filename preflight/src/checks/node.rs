//! Node checks: pure functions from collected facts to [`Check`]s. Each
//! failing check says what is wrong (with numeric modes and GIDs) and how to
//! fix it. Configuration and EncryptionConfiguration rules are the
//! provider core's ([`bao_kms_core::config`], [`bao_kms_core::encryption_config`]).

use std::path::{Component, Path, PathBuf};

use bao_kms_core::config::{Config, SocketGroup, ValidationContext, parse_yaml_with};
use bao_kms_core::encryption_config::{self as ec, Finding, ProviderExpectation, Severity, ValidateOptions};
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::collect::{FileFacts, FileKind, HttpAnswer, ProviderStatus};
use crate::report::{Check, CheckStatus};

/// Permission bits the configuration file must not have (the provider's own
/// rule): group write or execute, any world access.
pub const CONFIG_FORBIDDEN_MODE: u32 = 0o037;
/// Mode of the socket directory: setgid so the socket inherits the group,
/// group may enter but not create.
pub const SOCKET_DIR_MODE: u32 = 0o2750;
/// Mode of the socket: owner and group read/write (kube-apiserver connects
/// through the group).
pub const SOCKET_MODE: u32 = 0o660;
/// Name of the provider container in the static pod.
pub const PROVIDER_CONTAINER: &str = "bao-kms-provider";

pub mod id {
    pub const CONFIG_FILE: &str = "config.file";
    pub const CONFIG_VALIDATE: &str = "config.validate";
    pub const SOCKET_GROUP: &str = "socket.group";
    pub const SOCKET_DIRECTORY: &str = "socket.directory";
    pub const SOCKET_FILE: &str = "socket.file";
    pub const EC_PARSE: &str = "encryption_config.parse";
    pub const EC_RULES: &str = "encryption_config.rules";
    pub const EC_PROVIDER: &str = "encryption_config.provider";
    pub const MANIFEST_PARSE: &str = "manifest.parse";
    pub const MANIFEST_IMAGE: &str = "manifest.image";
    pub const MANIFEST_GROUPS: &str = "manifest.supplemental_groups";
    pub const MANIFEST_MOUNTS: &str = "manifest.mounts";
    pub const MANIFEST_SECURITY: &str = "manifest.security";
    pub const PROVIDER_READY: &str = "provider.ready";
    pub const PROVIDER_STATUS: &str = "provider.status";
}

const T_CONFIG_FILE: &str = "Configuration file is a private regular file";
const T_CONFIG_VALIDATE: &str = "Configuration is valid";
const T_SOCKET_GROUP: &str = "server.socketGroup resolves to a numeric GID";
const T_SOCKET_DIRECTORY: &str = "Socket directory has mode 2750 and the socket group";
const T_SOCKET_FILE: &str = "Socket is a Unix socket with mode 0660 and the socket group";
const T_EC_PARSE: &str = "EncryptionConfiguration decodes strictly";
const T_EC_RULES: &str = "EncryptionConfiguration passes kube-apiserver's validation";
const T_EC_PROVIDER: &str = "EncryptionConfiguration lists this provider as kms v2 on its socket";
const T_MANIFEST_PARSE: &str = "Static pod manifest is a Pod with the provider container";
const T_MANIFEST_IMAGE: &str = "Provider image is pinned by digest";
const T_MANIFEST_GROUPS: &str = "Pod supplementalGroups contains the socket GID";
const T_MANIFEST_MOUNTS: &str = "hostPath mounts cover the socket, configuration, credential and state paths";
const T_MANIFEST_SECURITY: &str = "Provider container runs as non-root without privilege escalation";
const T_PROVIDER_READY: &str = "Local provider /ready answers ok";
const T_PROVIDER_STATUS: &str = "Local provider /status is healthy and matches the configuration";

/// A check skipped because `dep` did not pass.
pub fn skipped(check_id: &str, title: &str, dep: &str) -> Check {
    Check::skip(check_id, title, format!("skipped: {dep} did not pass"))
}

/// Titles by id, for skipping a check by id.
pub fn title(check_id: &str) -> &'static str {
    match check_id {
        id::CONFIG_FILE => T_CONFIG_FILE,
        id::CONFIG_VALIDATE => T_CONFIG_VALIDATE,
        id::SOCKET_GROUP => T_SOCKET_GROUP,
        id::SOCKET_DIRECTORY => T_SOCKET_DIRECTORY,
        id::SOCKET_FILE => T_SOCKET_FILE,
        id::EC_PARSE => T_EC_PARSE,
        id::EC_RULES => T_EC_RULES,
        id::EC_PROVIDER => T_EC_PROVIDER,
        id::MANIFEST_PARSE => T_MANIFEST_PARSE,
        id::MANIFEST_IMAGE => T_MANIFEST_IMAGE,
        id::MANIFEST_GROUPS => T_MANIFEST_GROUPS,
        id::MANIFEST_MOUNTS => T_MANIFEST_MOUNTS,
        id::MANIFEST_SECURITY => T_MANIFEST_SECURITY,
        id::PROVIDER_READY => T_PROVIDER_READY,
        id::PROVIDER_STATUS => T_PROVIDER_STATUS,
        _ => "",
    }
}

// ---------------------------------------------------------------------------
// Configuration

/// The configuration file itself: a regular file (not a symlink) whose mode
/// does not intersect [`CONFIG_FORBIDDEN_MODE`], as the provider requires.
pub fn config_file(f: &FileFacts) -> Check {
    let shown = f.path.display();
    let (t, i) = (T_CONFIG_FILE, id::CONFIG_FILE);
    if let Some(e) = &f.error {
        return Check::fail(i, t, format!("{shown}: {e}"), "make the file readable by this user");
    }
    match f.kind {
        FileKind::Regular => {}
        FileKind::Missing => {
            return Check::fail(
                i,
                t,
                format!("{shown} does not exist"),
                "install the provider configuration (bao-kms-provider init) or pass --config",
            );
        }
        FileKind::Symlink => {
            return Check::fail(
                i,
                t,
                format!("{shown} is a symlink; the provider refuses it"),
                "point --config (and the provider's --config) at the real file",
            );
        }
        other => {
            return Check::fail(
                i,
                t,
                format!("{shown} is {}, not a regular file", other.describe()),
                "point --config at the configuration file",
            );
        }
    }
    if f.mode & CONFIG_FORBIDDEN_MODE != 0 {
        return Check::fail(
            i,
            t,
            format!(
                "{shown} has mode {:04o}, which the provider refuses (no group write or execute, no world access)",
                f.mode
            ),
            format!("chown root:<provider group> {shown} && chmod 0640 {shown}"),
        );
    }
    Check::pass(i, t, format!("{shown}: mode {:04o}, owner {}:{}", f.mode, f.uid, f.gid))
}

/// Parses and validates the configuration with the provider's own rules.
pub fn config_validate(text: Result<&str, &str>, ctx: &ValidationContext) -> (Check, Option<Config>) {
    let (t, i) = (T_CONFIG_VALIDATE, id::CONFIG_VALIDATE);
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            return (
                Check::fail(i, t, e, "make the configuration file readable by this user"),
                None,
            );
        }
    };
    match parse_yaml_with(text, ctx) {
        Ok(cfg) => {
            let msg = format!(
                "provider {}, socket {}",
                cfg.transit.key_id_scope.provider_name,
                cfg.server.socket_path.display()
            );
            (Check::pass(i, t, msg), Some(cfg))
        }
        Err(errors) => {
            let msg = errors.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            (
                Check::fail(
                    i,
                    t,
                    msg,
                    "correct the fields named (bao-kms-provider config schema prints the schema)",
                ),
                None,
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Socket group, directory and socket

/// Looks a group name up in `/etc/group`-format text.
pub fn lookup_group(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|line| {
        let mut fields = line.split(':');
        let n = fields.next()?;
        let _password = fields.next()?;
        let gid = fields.next()?;
        (n == name).then(|| gid.parse().ok()).flatten()
    })
}

/// Resolves `server.socketGroup` to a GID: numeric as is, a name through
/// the group file.
pub fn socket_group(cfg: &Config, group_file: &Path, group_text: Result<&str, &str>) -> (Check, Option<u32>) {
    let (t, i) = (T_SOCKET_GROUP, id::SOCKET_GROUP);
    match &cfg.server.socket_group {
        SocketGroup::Gid(gid) => (
            Check::pass(i, t, format!("GID {gid} (numeric in the configuration)")),
            Some(*gid),
        ),
        SocketGroup::Name(name) => {
            let text = match group_text {
                Ok(text) => text,
                Err(e) => {
                    return (
                        Check::fail(
                            i,
                            t,
                            format!("cannot resolve group {name:?}: {e}"),
                            "pass --group-file, or set server.socketGroup to the numeric GID",
                        ),
                        None,
                    );
                }
            };
            match lookup_group(text, name) {
                Some(gid) => (
                    Check::pass(i, t, format!("{name} = GID {gid} ({})", group_file.display())),
                    Some(gid),
                ),
                None => (
                    Check::fail(
                        i,
                        t,
                        format!("group {name:?} is not in {}", group_file.display()),
                        format!("groupadd --system {name}, or set server.socketGroup to a numeric GID"),
                    ),
                    None,
                ),
            }
        }
    }
}

/// The socket directory: a real directory, mode 2750 (setgid), group = GID.
pub fn socket_directory(f: &FileFacts, gid: u32) -> Check {
    let (t, i) = (T_SOCKET_DIRECTORY, id::SOCKET_DIRECTORY);
    let shown = f.path.display();
    let fix = format!("chgrp {gid} {shown} && chmod 2750 {shown} (tmpfiles.d: d {shown} 2750 <provider uid> {gid})");
    if let Some(e) = &f.error {
        return Check::fail(
            i,
            t,
            format!("{shown}: {e}"),
            "run preflight as a user that may enter the directory",
        );
    }
    if f.kind != FileKind::Directory {
        return Check::fail(i, t, format!("{shown} is {}, not a directory", f.kind.describe()), fix);
    }
    let mut problems = Vec::new();
    if f.mode != SOCKET_DIR_MODE {
        let setgid = if f.mode & 0o2000 == 0 {
            " (setgid bit missing)"
        } else {
            ""
        };
        problems.push(format!("mode {:04o}, want 2750{setgid}", f.mode));
    }
    if f.gid != gid {
        problems.push(format!("group {}, want the socket group {gid}", f.gid));
    }
    if problems.is_empty() {
        Check::pass(i, t, format!("{shown}: mode 2750, owner {}:{}", f.uid, f.gid))
    } else {
        Check::fail(i, t, format!("{shown}: {}", problems.join(", ")), fix)
    }
}

/// The socket: a Unix socket (not a symlink), mode 0660, group = GID.
pub fn socket_file(f: &FileFacts, gid: u32) -> Check {
    let (t, i) = (T_SOCKET_FILE, id::SOCKET_FILE);
    let shown = f.path.display();
    if let Some(e) = &f.error {
        return Check::fail(
            i,
            t,
            format!("{shown}: {e}"),
            "run preflight as a user that may enter the socket directory",
        );
    }
    match f.kind {
        FileKind::Socket => {}
        FileKind::Missing => {
            return Check::fail(
                i,
                t,
                format!("{shown} does not exist: the provider is not serving"),
                "start the provider (static pod or systemd unit) and check its log; use --no-live before it runs",
            );
        }
        other => {
            return Check::fail(
                i,
                t,
                format!("{shown} is {}, not a Unix socket", other.describe()),
                format!("remove {shown}; the provider creates the socket itself"),
            );
        }
    }
    let mut problems = Vec::new();
    if f.mode & 0o7777 != SOCKET_MODE {
        problems.push(format!("mode {:04o}, want 0660", f.mode));
    }
    if f.gid != gid {
        problems.push(format!("group {}, want the socket group {gid}", f.gid));
    }
    if problems.is_empty() {
        Check::pass(i, t, format!("{shown}: mode 0660, owner {}:{}", f.uid, f.gid))
    } else {
        Check::fail(
            i,
            t,
            format!("{shown}: {}", problems.join(", ")),
            format!(
                "set server.socketMode \"0660\" and server.socketGroup \"{gid}\", keep the directory at mode 2750, restart the provider"
            ),
        )
    }
}

// ---------------------------------------------------------------------------
// EncryptionConfiguration

fn join_findings(findings: &[&Finding]) -> String {
    findings.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; ")
}

fn findings_check(check_id: &str, title: &str, findings: &[Finding], pass: String, fix: &str) -> Check {
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Error).collect();
    let warnings: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Warning).collect();
    if !errors.is_empty() {
        Check::fail(check_id, title, join_findings(&errors), fix)
    } else if !warnings.is_empty() {
        Check::new(check_id, title, CheckStatus::Warn, join_findings(&warnings))
    } else {
        Check::pass(check_id, title, pass)
    }
}

/// The three EncryptionConfiguration checks: strict decoding, kube-apiserver's
/// rules, the cross-check with the provider configuration (skipped when
/// the configuration is not valid).
pub fn encryption_config(path: &Path, text: Result<&str, &str>, cfg: Option<&Config>) -> Vec<Check> {
    let shown = path.display();
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            return vec![
                Check::fail(
                    id::EC_PARSE,
                    T_EC_PARSE,
                    e,
                    "pass the file kube-apiserver loads (--encryption-provider-config)",
                ),
                skipped(id::EC_RULES, T_EC_RULES, id::EC_PARSE),
                skipped(id::EC_PROVIDER, T_EC_PROVIDER, id::EC_PARSE),
            ];
        }
    };
    let doc = match ec::decode(text) {
        Ok(doc) => doc,
        Err(f) => {
            return vec![
                Check::fail(
                    id::EC_PARSE,
                    T_EC_PARSE,
                    format!("{shown}: {f}"),
                    "write apiVersion: apiserver.config.k8s.io/v1, kind: EncryptionConfiguration and only known fields",
                ),
                skipped(id::EC_RULES, T_EC_RULES, id::EC_PARSE),
                skipped(id::EC_PROVIDER, T_EC_PROVIDER, id::EC_PARSE),
            ];
        }
    };
    let mut out = vec![Check::pass(id::EC_PARSE, T_EC_PARSE, shown.to_string())];
    let rules = ec::validate(&doc, &ValidateOptions::default());
    out.push(findings_check(
        id::EC_RULES,
        T_EC_RULES,
        &rules,
        format!("{} resources entries", doc.resources.len()),
        "kube-apiserver refuses to start with this file: correct the fields named",
    ));
    match cfg {
        None => out.push(skipped(id::EC_PROVIDER, T_EC_PROVIDER, id::CONFIG_VALIDATE)),
        Some(cfg) => {
            let expected = ProviderExpectation::from_config(cfg);
            let (findings, phase) = ec::cross_check(&doc, &expected);
            let phase = match phase {
                Some(ec::RolloutPhase::Writer) => "writes",
                Some(ec::RolloutPhase::Reader) => "reads only",
                None => "",
            };
            let mut c = findings_check(
                id::EC_PROVIDER,
                T_EC_PROVIDER,
                &findings,
                format!(
                    "kms {:?} v2 on {} {phase} {}",
                    expected.name,
                    expected.endpoint,
                    expected.resources.join(",")
                ),
                "make the kms entry match the provider configuration (name = transit.keyIdScope.providerName, endpoint = unix:// + server.socketPath, apiVersion: v2, no cachesize)",
            );
            if c.status == CheckStatus::Warn {
                c = c.with_fix("expected during a two-phase rollout; see docs/preflight.md");
            }
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Static pod manifest

/// What the manifest checks found, for the agent's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestFacts {
    /// The provider container's image reference.
    pub image: Option<String>,
    /// `sha256:<hex>` when the image is pinned.
    pub digest: Option<String>,
}

pub use bao_kms_core::init::is_digest;

/// The digest an image reference is pinned by (`repo@sha256:...`).
pub fn image_digest(image: &str) -> Option<&str> {
    image.rsplit_once('@').map(|(_, d)| d).filter(|d| is_digest(d))
}

fn provider_container(pod: &Pod) -> Option<&Container> {
    let containers = &pod.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == PROVIDER_CONTAINER)
        .or_else(|| {
            containers
                .iter()
                .find(|c| c.image.as_deref().is_some_and(|i| i.contains(PROVIDER_CONTAINER)))
        })
        .or_else(|| containers.first())
}

/// The `--config` value in the container's command and args.
fn container_config_arg(c: &Container) -> Option<String> {
    let words: Vec<&String> = c.command.iter().flatten().chain(c.args.iter().flatten()).collect();
    for (k, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix("--config=") {
            return Some(v.to_owned());
        }
        if w.as_str() == "--config" {
            return words.get(k + 1).map(|s| (*s).clone());
        }
    }
    None
}

/// True when `prefix` is `path` or one of its ancestors (component-wise).
fn covers(prefix: &Path, path: &Path) -> bool {
    path.starts_with(prefix)
}

fn normalize(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// One path the provider needs inside its container.
struct Need {
    what: &'static str,
    path: PathBuf,
    writable: bool,
}

fn needs(cfg: &Config, config_path: &Path) -> Vec<Need> {
    use bao_kms_core::config::{AuthMethod, CertSource};
    let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let mut out = vec![
        Need {
            what: "socket directory",
            path: parent(&cfg.server.socket_path),
            writable: true,
        },
        Need {
            what: "configuration file",
            path: config_path.to_path_buf(),
            writable: false,
        },
        Need {
            what: "state directory",
            path: parent(&cfg.state.path),
            writable: true,
        },
        Need {
            what: "OpenBao CA bundle",
            path: cfg.openbao.ca_cert_file.clone(),
            writable: false,
        },
    ];
    let mut cred = |what: &'static str, p: &Path| {
        out.push(Need {
            what,
            path: p.to_path_buf(),
            writable: false,
        })
    };
    match &cfg.auth.method {
        AuthMethod::Jwt(j) => cred("JWT file", &j.jwt_file),
        AuthMethod::Token(t) => cred("token file", &t.token_file),
        AuthMethod::AppRole(a) => {
            cred("AppRole role ID file", &a.role_id_file);
            cred("AppRole secret ID file", &a.secret_id_file);
        }
        AuthMethod::Cert(c) => match &c.source {
            CertSource::File {
                certificate_file,
                key_file,
            } => {
                cred("client certificate", certificate_file);
                cred("client key", key_file);
            }
            CertSource::Pkcs11(p) => {
                cred("client certificate", &p.certificate_file);
                cred("PKCS#11 module", &p.module_path);
                cred("PKCS#11 PIN file", &p.pin_file);
            }
        },
    }
    out
}

/// The manifest checks: parse, image pin, supplementalGroups, hostPath
/// mounts, security context. `gid` is the resolved socket GID (`None` when
/// it could not be resolved); `cfg` the valid configuration, if any.
pub fn manifest(
    path: &Path,
    text: Result<&str, &str>,
    cfg: Option<&Config>,
    config_path: &Path,
    gid: Option<u32>,
    expected_digest: Option<&str>,
) -> (Vec<Check>, ManifestFacts) {
    let shown = path.display();
    let mut facts = ManifestFacts::default();
    let skip_rest = |dep: &str| {
        vec![
            skipped(id::MANIFEST_IMAGE, T_MANIFEST_IMAGE, dep),
            skipped(id::MANIFEST_GROUPS, T_MANIFEST_GROUPS, dep),
            skipped(id::MANIFEST_MOUNTS, T_MANIFEST_MOUNTS, dep),
            skipped(id::MANIFEST_SECURITY, T_MANIFEST_SECURITY, dep),
        ]
    };
    let parsed = text
        .map_err(str::to_owned)
        .and_then(|t| serde_yaml_ng::from_str::<Pod>(t).map_err(|e| format!("{shown} is not a v1 Pod: {e}")));
    let pod = match parsed {
        Ok(pod) => pod,
        Err(e) => {
            let mut out = vec![Check::fail(
                id::MANIFEST_PARSE,
                T_MANIFEST_PARSE,
                e,
                "pass the provider's static pod manifest (e.g. /etc/kubernetes/manifests/bao-kms-provider.yaml)",
            )];
            out.extend(skip_rest(id::MANIFEST_PARSE));
            return (out, facts);
        }
    };
    let Some(container) = provider_container(&pod) else {
        let mut out = vec![Check::fail(
            id::MANIFEST_PARSE,
            T_MANIFEST_PARSE,
            format!("{shown} has no containers"),
            "add the bao-kms-provider container",
        )];
        out.extend(skip_rest(id::MANIFEST_PARSE));
        return (out, facts);
    };
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let mut out = vec![Check::pass(
        id::MANIFEST_PARSE,
        T_MANIFEST_PARSE,
        format!("pod {pod_name}, container {}", container.name),
    )];
    // Already checked: a Pod always has a spec here.
    let spec = pod.spec.clone().unwrap_or_default();

    // Image pin.
    let image = container.image.clone().unwrap_or_default();
    facts.image = (!image.is_empty()).then(|| image.clone());
    facts.digest = image_digest(&image).map(str::to_owned);
    out.push(match (&facts.digest, expected_digest) {
        (None, _) => Check::fail(
            id::MANIFEST_IMAGE,
            T_MANIFEST_IMAGE,
            format!("image {image:?} is not pinned by @sha256: digest"),
            "use image: <repository>@sha256:<digest> (bao-kms-provider init --image), preloaded on the node",
        ),
        (Some(d), Some(want)) if d != want => Check::fail(
            id::MANIFEST_IMAGE,
            T_MANIFEST_IMAGE,
            format!("image digest {d} differs from the expected {want}"),
            "roll the static pod manifest to the release's digest, or pass the right --expected-digest",
        ),
        (Some(d), Some(_)) => Check::pass(
            id::MANIFEST_IMAGE,
            T_MANIFEST_IMAGE,
            format!("{image} (expected digest {d})"),
        ),
        (Some(_), None) => Check::pass(id::MANIFEST_IMAGE, T_MANIFEST_IMAGE, image.clone()),
    });

    // supplementalGroups.
    let groups: Vec<i64> = spec
        .security_context
        .as_ref()
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default();
    out.push(match gid {
        None => skipped(id::MANIFEST_GROUPS, T_MANIFEST_GROUPS, id::SOCKET_GROUP),
        Some(gid) if groups.contains(&i64::from(gid)) => Check::pass(
            id::MANIFEST_GROUPS,
            T_MANIFEST_GROUPS,
            format!("supplementalGroups {groups:?} contains the socket GID {gid}"),
        ),
        Some(gid) => Check::fail(
            id::MANIFEST_GROUPS,
            T_MANIFEST_GROUPS,
            format!("supplementalGroups {groups:?} does not contain the socket GID {gid}"),
            format!("set spec.securityContext.supplementalGroups: [{gid}] (the GID server.socketGroup resolves to)"),
        ),
    });

    // hostPath mounts.
    out.push(match cfg {
        None => skipped(id::MANIFEST_MOUNTS, T_MANIFEST_MOUNTS, id::CONFIG_VALIDATE),
        Some(cfg) => {
            let in_container = container_config_arg(container).map(PathBuf::from);
            let config_in_pod = in_container.as_deref().unwrap_or(config_path);
            mounts_check(
                &spec.volumes.clone().unwrap_or_default(),
                container,
                &needs(cfg, config_in_pod),
            )
        }
    });

    // Security context.
    out.push(security_check(&spec, container, cfg));
    (out, facts)
}

fn mounts_check(volumes: &[k8s_openapi::api::core::v1::Volume], c: &Container, needs: &[Need]) -> Check {
    let (t, i) = (T_MANIFEST_MOUNTS, id::MANIFEST_MOUNTS);
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for need in needs {
        let want = normalize(&need.path);
        let best = mounts
            .iter()
            .filter(|m| covers(&normalize(Path::new(&m.mount_path)), &want))
            .max_by_key(|m| m.mount_path.len());
        let Some(m) = best else {
            problems.push(format!("{} {} is not mounted", need.what, want.display()));
            fixes.push(format!(
                "add a hostPath volume {} mounted at the same path{}",
                want.display(),
                if need.writable { "" } else { " (readOnly: true)" }
            ));
            continue;
        };
        let Some(host) = volumes
            .iter()
            .find(|v| v.name == m.name)
            .and_then(|v| v.host_path.as_ref())
        else {
            problems.push(format!(
                "{} {} is mounted from volume {:?}, which is not a hostPath volume",
                need.what,
                want.display(),
                m.name
            ));
            fixes.push(format!("make volume {:?} a hostPath volume", m.name));
            continue;
        };
        let mount_path = normalize(Path::new(&m.mount_path));
        let rest = want.strip_prefix(&mount_path).unwrap_or(Path::new(""));
        let host_path = normalize(&Path::new(&host.path).join(rest));
        if host_path != want {
            problems.push(format!(
                "{} {} is mounted from host path {}",
                need.what,
                want.display(),
                host_path.display()
            ));
            fixes.push(format!(
                "mount host path {} at {} (the same path on both sides, as kube-apiserver and preflight see it)",
                mount_path.display(),
                mount_path.display()
            ));
        }
        if need.writable && m.read_only == Some(true) {
            problems.push(format!("{} {} is mounted read-only", need.what, want.display()));
            fixes.push(format!("set readOnly: false on volume mount {:?}", m.name));
        }
    }
    if problems.is_empty() {
        Check::pass(
            i,
            t,
            format!(
                "{} paths covered ({})",
                needs.len(),
                needs.iter().map(|n| n.what).collect::<Vec<_>>().join(", ")
            ),
        )
    } else {
        Check::fail(i, t, problems.join("; "), fixes.join("; "))
    }
}

fn security_check(spec: &k8s_openapi::api::core::v1::PodSpec, c: &Container, cfg: Option<&Config>) -> Check {
    let (t, i) = (T_MANIFEST_SECURITY, id::MANIFEST_SECURITY);
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.or(pod_sc.run_as_user);
    let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root);
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    match (run_as_user, non_root) {
        (Some(0), _) => failures.push("runAsUser is 0 (root)".to_owned()),
        (None, Some(true)) | (Some(_), _) => {}
        (None, _) => failures.push("neither runAsNonRoot: true nor a non-zero runAsUser is set".to_owned()),
    }
    if sc.allow_privilege_escalation != Some(false) {
        failures.push("allowPrivilegeEscalation is not false".to_owned());
    }
    if sc.privileged == Some(true) {
        failures.push("the container is privileged".to_owned());
    }
    if sc.read_only_root_filesystem != Some(true) {
        warnings.push("readOnlyRootFilesystem is not true".to_owned());
    }
    let drops_all = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|d| d.iter().any(|x| x == "ALL"));
    if !drops_all {
        warnings.push("capabilities.drop does not contain ALL".to_owned());
    }
    let loopback_health = cfg
        .and_then(|c| c.server.health_address.as_deref())
        .is_some_and(|a| a.starts_with("127.") || a.starts_with("localhost:") || a.starts_with("[::1]"));
    if loopback_health && spec.host_network != Some(true) {
        warnings
            .push("hostNetwork is not true, so the loopback health address is not reachable from the node".to_owned());
    }
    let fix = "set runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities.drop: [ALL], hostNetwork: true";
    if !failures.is_empty() {
        failures.extend(warnings);
        Check::fail(i, t, failures.join("; "), fix)
    } else if !warnings.is_empty() {
        Check::warn(i, t, warnings.join("; "), fix)
    } else {
        Check::pass(
            i,
            t,
            format!(
                "runAsUser {}, no privilege escalation, read-only root, all capabilities dropped",
                run_as_user.map(|u| u.to_string()).unwrap_or_else(|| "non-root".into())
            ),
        )
    }
}

// ---------------------------------------------------------------------------
// Live provider

/// `host:port` to reach the health listener from this node: wildcard
/// listen addresses become loopback.
pub fn health_target(address: &str) -> String {
    if let Some(port) = address.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = address.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        address.to_owned()
    }
}

/// `/ready`: HTTP 200 with `"status": "ok"`.
pub fn provider_ready(answer: Result<&HttpAnswer, &str>) -> Check {
    let (t, i) = (T_PROVIDER_READY, id::PROVIDER_READY);
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            return Check::fail(
                i,
                t,
                e,
                "start the provider; check server.healthAddress and the provider log",
            );
        }
    };
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    let reasons = body["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    if a.status == 200 && body["status"] == "ok" {
        Check::pass(
            i,
            t,
            format!("ready, rotation {}", body["rotation_state"].as_str().unwrap_or("?")),
        )
    } else {
        Check::fail(
            i,
            t,
            format!("HTTP {}, reasons [{reasons}]", a.status),
            "see docs/operations.md for each readiness reason; bao-kms-provider doctor --config names the failing step",
        )
    }
}

/// `/status`: healthy, a key_id hash, and the same provider name and
/// identity fingerprint as the configuration preflight read.
pub fn provider_status(answer: Result<&HttpAnswer, &str>, cfg: &Config) -> (Check, Option<ProviderStatus>) {
    let (t, i) = (T_PROVIDER_STATUS, id::PROVIDER_STATUS);
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            return (
                Check::fail(
                    i,
                    t,
                    e,
                    "start the provider; check server.healthAddress and the provider log",
                ),
                None,
            );
        }
    };
    if a.status != 200 {
        return (
            Check::fail(
                i,
                t,
                format!("HTTP {}", a.status),
                "upgrade the provider to a version serving /status",
            ),
            None,
        );
    }
    let s: ProviderStatus = match serde_json::from_str(&a.body) {
        Ok(s) => s,
        Err(e) => {
            return (
                Check::fail(
                    i,
                    t,
                    format!("/status is not the provider's JSON: {e}"),
                    "check server.healthAddress points at the provider",
                ),
                None,
            );
        }
    };
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    let want_name = &cfg.transit.key_id_scope.provider_name;
    if !s.provider_name.is_empty() && &s.provider_name != want_name {
        problems.push(format!(
            "serves provider {:?}, the configuration says {want_name:?}",
            s.provider_name
        ));
        fixes.push("restart the provider with this configuration".to_owned());
    }
    let want_fp = cfg.identity_scope().fingerprint();
    if !s.identity_fingerprint.is_empty() && s.identity_fingerprint != want_fp {
        problems.push(format!(
            "identity fingerprint {} differs from the configuration's {want_fp}",
            s.identity_fingerprint
        ));
        fixes.push("restart the provider with this configuration".to_owned());
    }
    if s.key_id_hash.is_empty() {
        problems.push("no active key_id".to_owned());
    }
    if !s.healthy {
        problems.push(format!("unhealthy: {}", s.reasons.join(", ")));
        fixes.push("see the provider log and docs/operations.md for each reason".to_owned());
    }
    let summary = format!(
        "keyIDHash {}, generation {}, rotation {}, Transit version {}, provider {}",
        if s.key_id_hash.is_empty() { "-" } else { &s.key_id_hash },
        s.generation,
        s.rotation_state,
        s.active_version,
        s.version
    );
    let check = if problems.is_empty() {
        Check::pass(i, t, summary)
    } else {
        Check::fail(i, t, format!("{}; {summary}", problems.join("; ")), fixes.join("; "))
    };
    (check, Some(s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn group_lookup_and_digests() {
        let g = "root:x:0:\nopenbao-kms-socket:x:1234:openbao-kms\nbroken\n";
        assert_eq!(lookup_group(g, "openbao-kms-socket"), Some(1234));
        assert_eq!(lookup_group(g, "root"), Some(0));
        assert_eq!(lookup_group(g, "nobody"), None);
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(is_digest(&d));
        assert!(!is_digest("sha256:abc"));
        assert_eq!(image_digest(&format!("ghcr.io/x/y@{d}")), Some(d.as_str()));
        assert_eq!(image_digest("ghcr.io/x/y:1.0"), None);
        assert_eq!(health_target("0.0.0.0:8082"), "127.0.0.1:8082");
        assert_eq!(health_target("127.0.0.1:8082"), "127.0.0.1:8082");
    }

    #[test]
    fn socket_directory_rules() {
        let mut f = FileFacts::missing(Path::new("/run/openbao-kms"));
        f.kind = FileKind::Directory;
        f.mode = 0o2750;
        f.gid = 1234;
        assert_eq!(socket_directory(&f, 1234).status, CheckStatus::Pass);
        f.mode = 0o750;
        let c = socket_directory(&f, 1234);
        assert_eq!(
            c.message.as_deref(),
            Some("/run/openbao-kms: mode 0750, want 2750 (setgid bit missing)")
        );
        f.mode = 0o2750;
        f.gid = 0;
        assert_eq!(
            socket_directory(&f, 1234).message.as_deref(),
            Some("/run/openbao-kms: group 0, want the socket group 1234")
        );
    }
}
