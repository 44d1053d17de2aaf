//! `doctor`: one line per check of everything the provider depends on,
//! in dependency order (a failed prerequisite skips what needs it):
//! configuration, socket directory and socket, local auth material, OpenBao
//! TLS, login, token capabilities, Transit key metadata, profile and upsert
//! setting, the registry (checkpoint rules, identity, drift, auto-bootstrap
//! decision), a Transit encrypt/decrypt with the active version and AAD, and
//! key_id determinism. Check IDs are a stable interface: runbooks and
//! automation match on them.
//!
//! It runs beside a live provider: the registry is read without taking the
//! writer lock, and nothing is written.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use bao_kms_core::aad;
use bao_kms_core::config::{AuthMethod, CertSource, Config};
use bao_kms_core::encryption_config as ec;
use bao_kms_core::keyid::KeyId;
use bao_kms_core::registry::{StateFile, checkpoint_status};
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_core::transit::{BootstrapDecision, KeyMetadata, bootstrap_decision, profile_findings};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::auth::{Auth, AuthError, check_jwt, read_secret_file};
use crate::metrics::Metrics;
use crate::openbao::{ClientSettings, OpenBao};
use crate::report::{CheckStatus, Report};
use crate::state::RegistryPaths;

/// Which report to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything the provider depends on.
    Doctor,
    /// Key-only checks: no socket checks and no encrypt/decrypt; the
    /// version restrictions get their own check (`transit.version_restrictions`).
    VerifyKey,
}

/// Runs every check, plus the EncryptionConfiguration cross-check when
/// `encryption_config` is given; the report fails (exit 4) when any check fails.
pub async fn run(config_path: &Path, encryption_config: Option<&Path>) -> Report {
    run_checks(config_path, Mode::Doctor, encryption_config).await
}

/// Runs the checks of `mode`.
pub async fn run_mode(config_path: &Path, mode: Mode) -> Report {
    run_checks(config_path, mode, None).await
}

async fn run_checks(config_path: &Path, mode: Mode, encryption_config: Option<&Path>) -> Report {
    let mut r = Report::new(match mode {
        Mode::Doctor => "doctor",
        Mode::VerifyKey => "verify-key",
    });
    let cfg = match crate::config_file::load(config_path) {
        Ok(cfg) => {
            r.add(
                "config.load",
                "configuration file loads",
                CheckStatus::Pass,
                Some(config_path.display().to_string()),
            );
            r.add(
                "config.validate",
                "configuration is valid",
                CheckStatus::Pass,
                Some(format!("identity fingerprint {}", cfg.identity_scope().fingerprint())),
            );
            cfg
        }
        Err(e) => {
            let status = match e {
                crate::config_file::LoadError::File(_) => "config.load",
                crate::config_file::LoadError::Invalid(_) => "config.validate",
            };
            let one_line = e.to_string().replace('\n', "; ");
            r.add(
                if status == "config.load" {
                    "config.load"
                } else {
                    "config.validate"
                },
                "configuration",
                CheckStatus::Fail,
                Some(one_line),
            );
            return r;
        }
    };
    if mode == Mode::Doctor {
        check_socket(&mut r, &cfg);
    }
    let local_auth_ok = check_local_auth(&mut r, &cfg);
    if let Some(path) = encryption_config {
        check_encryption_config(&mut r, &cfg, path);
    }

    let metrics = Arc::new(Metrics::for_auth(&cfg.auth.method));
    let settings = ClientSettings::from_config(&cfg);
    let bao = match OpenBao::new(settings, metrics.clone()) {
        Ok(b) => b,
        Err(e) => {
            r.add(
                "openbao.tls",
                "TLS connection to OpenBao",
                CheckStatus::Fail,
                Some(e.to_string()),
            );
            return r;
        }
    };
    match bao.cluster_id().await {
        Ok(id) => r.add(
            "openbao.tls",
            "TLS connection to OpenBao",
            CheckStatus::Pass,
            Some(format!("cluster_id {id}")),
        ),
        Err(e) => {
            r.add(
                "openbao.tls",
                "TLS connection to OpenBao",
                CheckStatus::Fail,
                Some(e.to_string()),
            );
            return r;
        }
    }
    if !local_auth_ok {
        r.add(
            "openbao.auth",
            "login to OpenBao",
            CheckStatus::Skip,
            Some("local auth material failed".into()),
        );
        return r;
    }
    let token = match login(&cfg, &bao, metrics).await {
        Ok(t) => {
            r.add(
                "openbao.auth",
                "login to OpenBao",
                CheckStatus::Pass,
                Some(format!("auth.method {}", cfg.auth.method.name())),
            );
            t
        }
        Err(e) => {
            r.add(
                "openbao.auth",
                "login to OpenBao",
                CheckStatus::Fail,
                Some(e.to_string()),
            );
            return r;
        }
    };
    let t = token.expose_secret();
    check_capabilities(&mut r, &cfg, &bao, t).await;

    let meta = match bao.key_metadata(t).await {
        Ok(m) => {
            r.add(
                "transit.metadata",
                "Transit key metadata is readable",
                CheckStatus::Pass,
                Some(format!("latest_version={} type={}", m.latest_version, m.key_type)),
            );
            m
        }
        Err(e) => {
            r.add(
                "transit.metadata",
                "Transit key metadata is readable",
                CheckStatus::Fail,
                Some(e.to_string()),
            );
            return r;
        }
    };
    let registry = check_registry(&mut r, &cfg, &meta);
    let retained = registry
        .as_ref()
        .map(StateFile::retained_versions)
        .unwrap_or_else(|| vec![1]);
    let active_version = registry.as_ref().map(|s| s.active().transit_version);
    let findings = profile_findings(&meta, &retained, active_version);
    // verify-key reports the version restrictions (min_decryption_version,
    // min_available_version against retained versions) on their own.
    let is_restriction = |code: &str| mode == Mode::VerifyKey && code.starts_with("min_");
    let (restrictions, profile): (Vec<_>, Vec<_>) = findings.into_iter().partition(|f| is_restriction(f.code));
    let report_findings =
        |r: &mut Report, id: &'static str, title: &'static str, found: &[bao_kms_core::transit::Finding]| {
            if found.is_empty() {
                r.add(id, title, CheckStatus::Pass, None);
            } else {
                let text = found.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                r.add(id, title, CheckStatus::Fail, Some(text));
            }
        };
    report_findings(&mut r, "transit.profile", "Transit key profile is safe", &profile);
    if mode == Mode::VerifyKey {
        report_findings(
            &mut r,
            "transit.version_restrictions",
            "every retained version is still available and decryptable",
            &restrictions,
        );
    }
    match bao.disable_upsert(t).await {
        Ok(true) => r.add(
            "transit.disable_upsert",
            "mount refuses implicit key creation",
            CheckStatus::Pass,
            None,
        ),
        Ok(false) => r.add(
            "transit.disable_upsert",
            "mount refuses implicit key creation",
            CheckStatus::Fail,
            Some("disable_upsert is false: set it with `bao write <mount>/config/keys disable_upsert=true`".into()),
        ),
        Err(e) => r.add(
            "transit.disable_upsert",
            "mount refuses implicit key creation",
            CheckStatus::Fail,
            Some(e.to_string()),
        ),
    }

    // The snapshot the provider encrypts with: the registry's active one, or
    // version 1 when auto-bootstrap would create the registry.
    let scope = cfg.identity_scope();
    let active = match &registry {
        Some(state) => state.active().snapshot(),
        None => match bootstrap_decision(&meta) {
            BootstrapDecision::Allowed { created_unix } => KeySnapshot::new(&scope, 1, created_unix).ok(),
            BootstrapDecision::Denied { .. } => None,
        },
    };
    let Some(active) = active else {
        r.add(
            "transit.probe",
            "encrypt and decrypt with the active version",
            CheckStatus::Skip,
            Some("no active key snapshot".into()),
        );
        return r;
    };
    if mode == Mode::Doctor {
        match round_trip(&bao, t, &scope, &active).await {
            Ok(()) => r.add(
                "transit.probe",
                "encrypt and decrypt with the active version",
                CheckStatus::Pass,
                Some(format!("version {}", active.version)),
            ),
            Err(e) => r.add(
                "transit.probe",
                "encrypt and decrypt with the active version",
                CheckStatus::Fail,
                Some(e),
            ),
        }
    }
    let again = KeyId::derive(&scope, active.version, active.created_unix);
    if again.as_ref() == Ok(&active.key_id) {
        r.add(
            "key_id.deterministic",
            "key_id derives the same from configuration and metadata",
            CheckStatus::Pass,
            Some(format!("key_id hash {}", active.key_id.hash())),
        );
    } else {
        r.add(
            "key_id.deterministic",
            "key_id derives the same from configuration and metadata",
            CheckStatus::Fail,
            Some("the registry's active key_id does not derive from the configured identity".into()),
        );
    }
    r
}

fn check_socket(r: &mut Report, cfg: &Config) {
    let gid = match crate::socket::resolve_group(&cfg.server.socket_group) {
        Ok(g) => g,
        Err(e) => {
            r.add(
                "socket.group",
                "socket directory, socket and group",
                CheckStatus::Fail,
                Some(e.to_string()),
            );
            return;
        }
    };
    let socket = &cfg.server.socket_path;
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let mut problems = Vec::new();
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if let Err(why) = crate::fsutil::check_private_dir(dir, "2750") {
                problems.push(format!("{}: {why}", dir.display()));
            }
            if meta.gid() != gid {
                problems.push(format!(
                    "{} has group {} but server.socketGroup is GID {gid}",
                    dir.display(),
                    meta.gid()
                ));
            }
        }
        Err(e) => problems.push(format!("{}: {e}", dir.display())),
    }
    let mut present = false;
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        present = true;
        let mode = meta.permissions().mode() & 0o7777;
        if !meta.file_type().is_socket() {
            problems.push(format!("{} is not a socket", socket.display()));
        }
        if mode != cfg.server.socket_mode {
            problems.push(format!(
                "{} has mode {mode:04o}, configured {:04o}",
                socket.display(),
                cfg.server.socket_mode
            ));
        }
        if meta.gid() != gid {
            problems.push(format!(
                "{} has group {} but server.socketGroup is GID {gid}",
                socket.display(),
                meta.gid()
            ));
        }
    }
    let (status, message) = match (problems.is_empty(), present) {
        (false, _) => (CheckStatus::Fail, problems.join("; ")),
        (true, true) => (CheckStatus::Pass, format!("GID {gid}, socket {}", socket.display())),
        (true, false) => (
            CheckStatus::Warn,
            format!("GID {gid}; {} does not exist (provider not running?)", socket.display()),
        ),
    };
    r.add(
        "socket.group",
        "socket directory, socket and group",
        status,
        Some(message),
    );
}

/// `kubernetes.encryption_config`: the file kube-apiserver loads passes
/// kube-apiserver's own rules and lists this provider as `kms` v2 with the
/// configured name and endpoint for every required resource. Migration
/// files (other providers beside ours, `identity` still present) warn.
/// Inline keys never reach the message: the decoder masks them.
fn check_encryption_config(r: &mut Report, cfg: &Config, path: &Path) {
    const ID: &str = "kubernetes.encryption_config";
    const TITLE: &str = "EncryptionConfiguration uses this provider";
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            r.add(ID, TITLE, CheckStatus::Fail, Some(format!("{}: {e}", path.display())));
            return;
        }
    };
    let doc = match ec::decode(&text) {
        Ok(doc) => doc,
        Err(f) => {
            r.add(ID, TITLE, CheckStatus::Fail, Some(format!("{}: {f}", path.display())));
            return;
        }
    };
    let expected = ec::ProviderExpectation::from_config(cfg);
    let mut findings = ec::validate(&doc, &ec::ValidateOptions::default());
    let (cross, phase) = ec::cross_check(&doc, &expected);
    findings.extend(cross);
    let joined = |severity: ec::Severity| {
        findings
            .iter()
            .filter(|f| f.severity == severity)
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if ec::has_errors(&findings) {
        r.add(ID, TITLE, CheckStatus::Fail, Some(joined(ec::Severity::Error)));
    } else if !findings.is_empty() {
        r.add(ID, TITLE, CheckStatus::Warn, Some(joined(ec::Severity::Warning)));
    } else {
        let role = match phase {
            Some(ec::RolloutPhase::Writer) => "writes",
            Some(ec::RolloutPhase::Reader) | None => "reads",
        };
        r.add(
            ID,
            TITLE,
            CheckStatus::Pass,
            Some(format!(
                "kms {:?} apiVersion v2 at {} {role} {}",
                expected.name,
                expected.endpoint,
                expected.resources.join(",")
            )),
        );
    }
}

/// Checks the material the configured method logs in with; true when a
/// login may be attempted.
fn check_local_auth(r: &mut Report, cfg: &Config) -> bool {
    let now = crate::now_unix();
    match &cfg.auth.method {
        AuthMethod::Jwt(j) => {
            let result = read_secret_file(&j.jwt_file).and_then(|jwt| check_jwt(jwt.expose_secret(), j, now));
            match result {
                Ok(c) => {
                    let aud = c.aud.as_ref().map(|a| a.values().join(",")).unwrap_or_default();
                    let left = c.exp.unwrap_or(now) - now;
                    r.add(
                        "jwt.local",
                        "JWT file is readable, unexpired and matches expectations",
                        CheckStatus::Pass,
                        Some(format!(
                            "iss={} aud={aud} sub={} expires in {left}s",
                            c.iss.unwrap_or_default(),
                            c.sub.unwrap_or_default()
                        )),
                    );
                    true
                }
                Err(e) => {
                    r.add(
                        "jwt.local",
                        "JWT file is readable, unexpired and matches expectations",
                        CheckStatus::Fail,
                        Some(e.to_string()),
                    );
                    false
                }
            }
        }
        AuthMethod::Cert(c) => {
            let file = match &c.source {
                CertSource::File { certificate_file, .. } => certificate_file,
                CertSource::Pkcs11(p) => &p.certificate_file,
            };
            if let Err(e) = crate::auth::read_chain(file, &crate::auth::certificate_expectations(c), now) {
                r.add(
                    "auth.cert.local",
                    "client certificate is valid for client auth",
                    CheckStatus::Fail,
                    Some(e.to_string()),
                );
                return false;
            }
            r.add(
                "auth.cert.local",
                "client certificate is valid for client auth",
                CheckStatus::Pass,
                None,
            );
            match crate::auth::client_identity(c, now) {
                Ok(_) => {
                    if matches!(c.source, CertSource::Pkcs11(_)) {
                        r.add(
                            "auth.cert.pkcs11",
                            "PKCS#11 token, PIN and key",
                            CheckStatus::Pass,
                            None,
                        );
                        r.add(
                            "auth.cert.signer",
                            "token key matches the certificate",
                            CheckStatus::Pass,
                            None,
                        );
                    }
                    true
                }
                Err(e @ AuthError::KeyMismatch(_)) => {
                    r.add(
                        "auth.cert.pkcs11",
                        "PKCS#11 token, PIN and key",
                        CheckStatus::Pass,
                        None,
                    );
                    r.add(
                        "auth.cert.signer",
                        "token key matches the certificate",
                        CheckStatus::Fail,
                        Some(e.to_string()),
                    );
                    false
                }
                Err(e) => {
                    let id = if matches!(c.source, CertSource::Pkcs11(_)) {
                        "auth.cert.pkcs11"
                    } else {
                        "auth.cert.local"
                    };
                    r.add(id, "client key is usable", CheckStatus::Fail, Some(e.to_string()));
                    false
                }
            }
        }
        AuthMethod::AppRole(a) => {
            match read_secret_file(&a.role_id_file).and_then(|_| read_secret_file(&a.secret_id_file)) {
                Ok(_) => {
                    r.add(
                        "auth.approle.local",
                        "role ID and secret ID files are readable",
                        CheckStatus::Pass,
                        None,
                    );
                    true
                }
                Err(e) => {
                    r.add(
                        "auth.approle.local",
                        "role ID and secret ID files are readable",
                        CheckStatus::Fail,
                        Some(e.to_string()),
                    );
                    false
                }
            }
        }
        AuthMethod::Token(t) => match read_secret_file(&t.token_file) {
            Ok(_) => {
                r.add("auth.token.local", "token file is readable", CheckStatus::Pass, None);
                true
            }
            Err(e) => {
                r.add(
                    "auth.token.local",
                    "token file is readable",
                    CheckStatus::Fail,
                    Some(e.to_string()),
                );
                false
            }
        },
    }
}

async fn login(cfg: &Config, bao: &OpenBao, metrics: Arc<Metrics>) -> Result<SecretString, AuthError> {
    Auth::new(&cfg.auth, bao.clone(), metrics)?.token().await
}

async fn check_capabilities(r: &mut Report, cfg: &Config, bao: &OpenBao, token: &str) {
    let mount = cfg.transit.mount_path.trim_matches('/');
    let key = &cfg.transit.key_name;
    let required = [
        (format!("{mount}/keys/{key}"), "read"),
        (format!("{mount}/encrypt/{key}"), "update"),
        (format!("{mount}/decrypt/{key}"), "update"),
        (format!("{mount}/config/keys"), "read"),
        (format!("sys/internal/ui/mounts/{mount}"), "read"),
    ];
    // What the provider's token must never be able to do.
    let forbidden = [
        (format!("{mount}/keys/{key}/rotate"), "update", "rotate the key"),
        (
            format!("{mount}/keys/{key}/config"),
            "update",
            "change the key configuration",
        ),
        (format!("{mount}/keys/{key}/trim"), "update", "trim key versions"),
        (format!("{mount}/keys/{key}"), "delete", "delete the key"),
        (format!("{mount}/export/encryption-key/{key}"), "read", "export the key"),
        (format!("{mount}/backup/{key}"), "read", "back up the key"),
        (
            format!("{mount}/encrypt/{key}"),
            "create",
            "create keys implicitly on encrypt",
        ),
        (
            format!("{mount}/config/keys"),
            "update",
            "change the mount's key settings",
        ),
    ];
    let mut paths: Vec<String> = required.iter().map(|(p, _)| p.clone()).collect();
    paths.extend(forbidden.iter().map(|(p, _, _)| p.clone()));
    paths.sort();
    paths.dedup();
    let answer = match bao.capabilities(token, &paths).await {
        Ok(a) => a,
        Err(e) => {
            r.add(
                "transit.capabilities",
                "token holds exactly the provider's capabilities",
                CheckStatus::Fail,
                Some(e.to_string()),
            );
            return;
        }
    };
    let has = |path: &str, cap: &str| {
        answer.iter().find(|(p, _)| p == path).is_some_and(|(_, caps)| {
            caps.iter()
                .any(|c| c == cap || c == "root" || c == "sudo" && cap != "deny")
        })
    };
    let missing: Vec<String> = required
        .iter()
        .filter(|(p, c)| !has(p, c))
        .map(|(p, c)| format!("{c} on {p}"))
        .collect();
    let excess: Vec<String> = forbidden
        .iter()
        .filter(|(p, c, _)| has(p, c))
        .map(|(p, c, what)| format!("{what} ({c} on {p})"))
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing: {}", missing.join(", ")));
    }
    if !excess.is_empty() {
        problems.push(format!("the token can {}; remove those grants", excess.join(", ")));
    }
    if problems.is_empty() {
        r.add(
            "transit.capabilities",
            "token holds exactly the provider's capabilities",
            CheckStatus::Pass,
            None,
        );
    } else {
        r.add(
            "transit.capabilities",
            "token holds exactly the provider's capabilities",
            CheckStatus::Fail,
            Some(problems.join("; ")),
        );
    }
}

/// Registry files, checkpoint rules, identity and drift; returns the state
/// when it is usable.
fn check_registry(r: &mut Report, cfg: &Config, meta: &KeyMetadata) -> Option<StateFile> {
    let title = "key registry state and checkpoint";
    let paths = RegistryPaths::new(&cfg.state.path);
    let loaded = crate::state::read_unlocked(&paths);
    let (state, checkpoint) = match loaded {
        Ok(x) => x,
        Err(e) => {
            r.add("registry.state", title, CheckStatus::Fail, Some(e));
            return None;
        }
    };
    let status = match checkpoint_status(state.as_ref(), checkpoint.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            r.add("registry.state", title, CheckStatus::Fail, Some(e));
            return None;
        }
    };
    let Some(state) = state else {
        match bootstrap_decision(meta) {
            d @ BootstrapDecision::Allowed { .. } => r.add(
                "registry.state",
                title,
                CheckStatus::Warn,
                Some(format!("no registry yet; {}", d.describe())),
            ),
            d @ BootstrapDecision::Denied { .. } => r.add(
                "registry.state",
                title,
                CheckStatus::Fail,
                Some(format!("no registry; {}", d.describe())),
            ),
        }
        return None;
    };
    if let Err(e) = state.check_scope(&cfg.identity_scope()) {
        r.add("registry.state", title, CheckStatus::Fail, Some(e.to_string()));
        return None;
    }
    let drift = state.drift_against(meta);
    if !drift.is_empty() {
        r.add("registry.state", title, CheckStatus::Fail, Some(drift.join("; ")));
        return Some(state);
    }
    let summary = format!(
        "generation {}, checkpoint {}, active version {}, key_id hash {}",
        state.generation,
        status.as_str(),
        state.active().transit_version,
        bao_kms_core::hash::h(&state.active_key_id)
    );
    let level = if matches!(status, bao_kms_core::registry::CheckpointStatus::Current) {
        CheckStatus::Pass
    } else {
        CheckStatus::Warn
    };
    r.add("registry.state", title, level, Some(summary));
    Some(state)
}

async fn round_trip(
    bao: &OpenBao,
    token: &str,
    scope: &bao_kms_core::identity::IdentityScope,
    snap: &KeySnapshot,
) -> Result<(), String> {
    let mut sample = [0u8; 32];
    rand::rng().fill_bytes(&mut sample);
    let aad = aad::canonical(scope, snap);
    let ct = bao
        .encrypt(token, &sample, &aad, snap.version)
        .await
        .map_err(|e| e.to_string())?;
    let pt = bao.decrypt(token, &ct, &aad).await.map_err(|e| e.to_string())?;
    if pt.as_slice() == sample {
        Ok(())
    } else {
        Err("decrypt returned different bytes".into())
    }
}
