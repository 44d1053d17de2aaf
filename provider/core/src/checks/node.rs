//! Node verdicts: pure functions from the facts of one node (file
//! metadata, file contents, the local provider's answers) to [`Check`]s.
//! `doctor` (provider) and `node` (preflight) both judge with these, so a
//! fact has one rule. Each failing check says what is wrong (with numeric
//! modes and GIDs) and how to fix it.
//!
//! The socket rules:
//! - the directory is a real directory the provider accepts (not group- or
//!   world-writable) that the socket group may enter; anything else than
//!   the documented 2750 warns;
//! - the socket is a Unix socket (not a symlink) with exactly the
//!   configured `server.socketMode` (what the provider sets at bind) and the
//!   socket group; a configured mode without group read and write warns,
//!   because kube-apiserver then connects only as the owner or root.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::config::{
    Config, PRIVATE_FILE_FORBIDDEN_MODE, SOCKET_MODE_GROUP_RW, SocketGroup, ValidationContext, parse_yaml_with,
};
use crate::encryption_config::{self as ec, Finding, ProviderExpectation, Severity, ValidateOptions};
use crate::status::{ReadyDocument, StatusDocument};

use super::catalogue::{
    CONFIG_FILE, CONFIG_VALIDATE, EC_PARSE, EC_PROVIDER, EC_RULES, KUBERNETES_ENCRYPTION_CONFIG, PROVIDER_READY,
    PROVIDER_STATUS, SOCKET_DIRECTORY, SOCKET_FILE, SOCKET_GROUP,
};
use super::{Check, CheckStatus, Def};

/// Mode of the socket directory.
pub const SOCKET_DIR_MODE: u32 = 0o2750;

#[cfg(test)]
mod tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Missing,
    Regular,
    Directory,
    Socket,
    Symlink,
    Other,
}

impl FileKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Regular => "a regular file",
            Self::Directory => "a directory",
            Self::Socket => "a Unix socket",
            Self::Symlink => "a symlink",
            Self::Other => "a special file",
        }
    }
}

/// What `lstat` says about a path (symlinks are not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub path: PathBuf,
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Why the path could not be inspected (other than not existing).
    pub error: Option<String>,
}

impl FileFacts {
    /// Facts of a path that does not exist (or was not inspected).
    pub fn missing(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            kind: FileKind::Missing,
            mode: 0,
            uid: 0,
            gid: 0,
            error: None,
        }
    }

    /// The facts in the answer of `std::fs::symlink_metadata(path)`.
    pub fn from_lstat(path: &Path, lstat: std::io::Result<Metadata>) -> Self {
        let mut facts = Self::missing(path);
        match lstat {
            Ok(meta) => {
                let ft = meta.file_type();
                facts.kind = if ft.is_symlink() {
                    FileKind::Symlink
                } else if ft.is_dir() {
                    FileKind::Directory
                } else if ft.is_file() {
                    FileKind::Regular
                } else if ft.is_socket() {
                    FileKind::Socket
                } else {
                    FileKind::Other
                };
                facts.mode = meta.mode() & 0o7777;
                facts.uid = meta.uid();
                facts.gid = meta.gid();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => facts.error = Some(e.to_string()),
        }
        facts
    }
}

/// The answer of one local HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

// ---------------------------------------------------------------------------
// Configuration

/// The configuration file itself: a regular file (not a symlink) whose mode
/// does not intersect [`PRIVATE_FILE_FORBIDDEN_MODE`], as the provider requires.
pub fn config_file(f: &FileFacts) -> Check {
    let shown = f.path.display();
    let d = CONFIG_FILE;
    if let Some(e) = &f.error {
        return d.fail(format!("{shown}: {e}"), "make the file readable by this user");
    }
    match f.kind {
        FileKind::Regular => {}
        FileKind::Missing => {
            return d.fail(
                format!("{shown} does not exist"),
                "install the provider configuration (bao-kms-provider init) or pass --config",
            );
        }
        FileKind::Symlink => {
            return d.fail(
                format!("{shown} is a symlink; the provider refuses it"),
                "point --config (and the provider's --config) at the real file",
            );
        }
        other => {
            return d.fail(
                format!("{shown} is {}, not a regular file", other.describe()),
                "point --config at the configuration file",
            );
        }
    }
    if f.mode & PRIVATE_FILE_FORBIDDEN_MODE != 0 {
        return d.fail(
            format!(
                "{shown} has mode {:04o}, which the provider refuses (no group write or execute, no world access)",
                f.mode
            ),
            format!("chown root:<provider group> {shown} && chmod 0640 {shown}"),
        );
    }
    d.pass(format!("{shown}: mode {:04o}, owner {}:{}", f.mode, f.uid, f.gid))
}

/// Parses and validates the configuration with the provider's own rules.
pub fn config_validate(text: Result<&str, &str>, ctx: &ValidationContext) -> (Check, Option<Config>) {
    let d = CONFIG_VALIDATE;
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            return (d.fail(e, "make the configuration file readable by this user"), None);
        }
    };
    match parse_yaml_with(text, ctx) {
        Ok(cfg) => {
            let msg = format!(
                "provider {}, socket {}",
                cfg.transit.key_id_scope.provider_name,
                cfg.server.socket_path.display()
            );
            (d.pass(msg), Some(cfg))
        }
        Err(errors) => {
            let msg = errors.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            (
                d.fail(
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
    let d = SOCKET_GROUP;
    match &cfg.server.socket_group {
        SocketGroup::Gid(gid) => (d.pass(format!("GID {gid} (numeric in the configuration)")), Some(*gid)),
        SocketGroup::Name(name) => {
            let text = match group_text {
                Ok(text) => text,
                Err(e) => {
                    return (
                        d.fail(
                            format!("cannot resolve group {name:?}: {e}"),
                            "pass --group-file, or set server.socketGroup to the numeric GID",
                        ),
                        None,
                    );
                }
            };
            match lookup_group(text, name) {
                Some(gid) => (
                    d.pass(format!("{name} = GID {gid} ({})", group_file.display())),
                    Some(gid),
                ),
                None => (
                    d.fail(
                        format!("group {name:?} is not in {}", group_file.display()),
                        format!("groupadd --system {name}, or set server.socketGroup to a numeric GID"),
                    ),
                    None,
                ),
            }
        }
    }
}

/// The socket directory. Fails where the provider refuses to bind (a
/// symlink or not a directory; group- or world-writable) or where
/// kube-apiserver, reaching the socket through the socket group, cannot
/// enter (another group, or no group search bit); warns when it works but
/// differs from the documented 2750 (e.g. no setgid bit: the provider sets
/// the socket's group itself, so that is cosmetic). The owner is not judged
/// here: only the provider knows its own UID (it refuses a directory it
/// does not own).
pub fn socket_directory(f: &FileFacts, gid: u32) -> Check {
    let d = SOCKET_DIRECTORY;
    let shown = f.path.display();
    let fix = format!("chgrp {gid} {shown} && chmod 2750 {shown} (tmpfiles.d: d {shown} 2750 <provider uid> {gid})");
    if let Some(e) = &f.error {
        return d.fail(
            format!("{shown}: {e}"),
            "run the check as a user that may enter the directory",
        );
    }
    if f.kind != FileKind::Directory {
        return d.fail(format!("{shown} is {}, not a directory", f.kind.describe()), fix);
    }
    let mut refused = Vec::new();
    if f.mode & 0o022 != 0 {
        refused.push(format!(
            "mode {:04o} is group- or world-writable (the provider refuses it)",
            f.mode
        ));
    }
    if f.gid != gid {
        refused.push(format!("group {}, want the socket group {gid}", f.gid));
    } else if f.mode & 0o010 == 0 {
        refused.push(format!(
            "mode {:04o}: the socket group may not enter the directory",
            f.mode
        ));
    }
    if !refused.is_empty() {
        return d.fail(format!("{shown}: {}", refused.join(", ")), fix);
    }
    if f.mode != SOCKET_DIR_MODE {
        let setgid = if f.mode & 0o2000 == 0 {
            " (setgid bit missing)"
        } else {
            ""
        };
        return d.warn(format!("{shown}: mode {:04o}, want 2750{setgid}", f.mode), fix);
    }
    d.pass(format!("{shown}: mode 2750, owner {}:{}", f.uid, f.gid))
}

/// The socket: a Unix socket (not a symlink) with exactly the configured
/// `server.socketMode` and group = GID. A missing socket fails when the
/// provider is expected to serve (`expect_serving`: preflight's live checks)
/// and warns otherwise (`doctor`, which also runs before the first start).
pub fn socket_file(f: &FileFacts, gid: u32, configured_mode: u32, expect_serving: bool) -> Check {
    let d = SOCKET_FILE;
    let shown = f.path.display();
    if let Some(e) = &f.error {
        return d.fail(
            format!("{shown}: {e}"),
            "run the check as a user that may enter the socket directory",
        );
    }
    match f.kind {
        FileKind::Socket => {}
        FileKind::Missing if expect_serving => {
            return d.fail(
                format!("{shown} does not exist: the provider is not serving"),
                "start the provider (static pod or systemd unit) and check its log; use --no-live before it runs",
            );
        }
        FileKind::Missing => {
            return d.warn(
                format!("{shown} does not exist (provider not running?)"),
                "start the provider; it creates the socket",
            );
        }
        other => {
            return d.fail(
                format!("{shown} is {}, not a Unix socket", other.describe()),
                format!("remove {shown}; the provider creates the socket itself"),
            );
        }
    }
    let mut problems = Vec::new();
    if f.mode & 0o7777 != configured_mode {
        problems.push(format!(
            "mode {:04o}, server.socketMode is {configured_mode:04o}",
            f.mode & 0o7777
        ));
    }
    if f.gid != gid {
        problems.push(format!("group {}, want the socket group {gid}", f.gid));
    }
    if !problems.is_empty() {
        return d.fail(
            format!("{shown}: {}", problems.join(", ")),
            format!(
                "restart the provider so it sets the socket's mode and group (server.socketMode {configured_mode:04o}, server.socketGroup {gid}); keep the directory at mode 2750"
            ),
        );
    }
    let summary = format!("{shown}: mode {configured_mode:04o}, owner {}:{}", f.uid, f.gid);
    if configured_mode & SOCKET_MODE_GROUP_RW != SOCKET_MODE_GROUP_RW {
        return d.warn(
            format!("{summary}; the socket group may not read and write, so kube-apiserver connects only as the owner or root"),
            "set server.socketMode \"0660\"",
        );
    }
    d.pass(summary)
}

// ---------------------------------------------------------------------------
// EncryptionConfiguration

fn join_findings(findings: &[&Finding]) -> String {
    findings.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; ")
}

fn findings_check(d: Def, findings: &[Finding], pass: String, fix: &str) -> Check {
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Error).collect();
    let warnings: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Warning).collect();
    if !errors.is_empty() {
        d.fail(join_findings(&errors), fix)
    } else if !warnings.is_empty() {
        d.check(CheckStatus::Warn, join_findings(&warnings))
    } else {
        d.pass(pass)
    }
}

/// The three EncryptionConfiguration checks: strict decoding (inline keys
/// never reach a message: the decoder masks them), kube-apiserver's rules,
/// the cross-check with the provider configuration (skipped when the
/// configuration is not valid). Migration files (other providers beside
/// ours, `identity` still present) warn.
pub fn encryption_config(path: &Path, text: Result<&str, &str>, cfg: Option<&Config>) -> Vec<Check> {
    let shown = path.display();
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            return vec![
                EC_PARSE.fail(e, "pass the file kube-apiserver loads (--encryption-provider-config)"),
                EC_RULES.skipped_after(&EC_PARSE),
                EC_PROVIDER.skipped_after(&EC_PARSE),
            ];
        }
    };
    let doc = match ec::decode(text) {
        Ok(doc) => doc,
        Err(f) => {
            return vec![
                EC_PARSE.fail(
                    format!("{shown}: {f}"),
                    "write apiVersion: apiserver.config.k8s.io/v1, kind: EncryptionConfiguration and only known fields",
                ),
                EC_RULES.skipped_after(&EC_PARSE),
                EC_PROVIDER.skipped_after(&EC_PARSE),
            ];
        }
    };
    let mut out = vec![EC_PARSE.pass(shown.to_string())];
    let rules = ec::validate(&doc, &ValidateOptions::default());
    out.push(findings_check(
        EC_RULES,
        &rules,
        format!("{} resources entries", doc.resources.len()),
        "kube-apiserver refuses to start with this file: correct the fields named",
    ));
    match cfg {
        None => out.push(EC_PROVIDER.skipped_after(&CONFIG_VALIDATE)),
        Some(cfg) => {
            let expected = ProviderExpectation::from_config(cfg);
            let (findings, phase) = ec::cross_check(&doc, &expected);
            let phase = match phase {
                Some(ec::RolloutPhase::Writer) => "writes",
                Some(ec::RolloutPhase::Reader) => "reads only",
                None => "",
            };
            let mut c = findings_check(
                EC_PROVIDER,
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

/// `doctor`'s one EncryptionConfiguration check: the three checks of
/// [`encryption_config`] combined (the worst verdict, its messages).
pub fn encryption_config_summary(path: &Path, text: Result<&str, &str>, cfg: &Config) -> Check {
    let parts: Vec<Check> = encryption_config(path, text, Some(cfg))
        .into_iter()
        .filter(|c| c.status != CheckStatus::Skip)
        .collect();
    KUBERNETES_ENCRYPTION_CONFIG.combine(&parts)
}

// ---------------------------------------------------------------------------
// The local provider

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
    let d = PROVIDER_READY;
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            return d.fail(e, "start the provider; check server.healthAddress and the provider log");
        }
    };
    match serde_json::from_str::<ReadyDocument>(&a.body) {
        Ok(r) if a.status == 200 && r.is_ready() => d.pass(format!("ready, rotation {}", r.rotation_state)),
        Ok(r) => d.fail(
            format!("HTTP {}, reasons [{}]", a.status, r.reasons.join(",")),
            "see docs/operations.md for each readiness reason; bao-kms-provider doctor --config names the failing step",
        ),
        Err(e) => d.fail(
            format!(
                "HTTP {}, the answer is not the provider's /ready document: {e}",
                a.status
            ),
            "check server.healthAddress points at the provider",
        ),
    }
}

/// `/status`: healthy, a key_id hash, and the same provider name and
/// identity fingerprint as the configuration preflight read.
pub fn provider_status(answer: Result<&HttpAnswer, &str>, cfg: &Config) -> (Check, Option<StatusDocument>) {
    let d = PROVIDER_STATUS;
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            return (
                d.fail(e, "start the provider; check server.healthAddress and the provider log"),
                None,
            );
        }
    };
    if a.status != 200 {
        return (
            d.fail(
                format!("HTTP {}", a.status),
                "upgrade the provider to a version serving /status",
            ),
            None,
        );
    }
    let s: StatusDocument = match serde_json::from_str(&a.body) {
        Ok(s) => s,
        Err(e) => {
            return (
                d.fail(
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
        d.pass(summary)
    } else {
        d.fail(format!("{}; {summary}", problems.join("; ")), fixes.join("; "))
    };
    (check, Some(s))
}
