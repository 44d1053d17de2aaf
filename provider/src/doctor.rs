//! `doctor`: one line per check of everything the provider depends on,
//! in dependency order (a failed prerequisite skips what needs it):
//! configuration, socket directory and socket, local auth material, OpenBao
//! TLS, login, token capabilities, Transit key metadata, the identity pins
//! (`identity_drift`, as serve judges them), profile and upsert
//! setting, the registry (checkpoint rules, identity, drift, auto-bootstrap
//! decision), a Transit encrypt/decrypt with the active version and AAD, and
//! key_id determinism. Check IDs are a stable interface: runbooks and
//! automation match on them.
//!
//! It runs beside a live provider: the registry is read without taking the
//! writer lock, and nothing is written.

use std::path::Path;
use std::sync::Arc;

use bao_kms_core::checks::Def;
use bao_kms_core::checks::catalogue::*;
use bao_kms_core::checks::node::{self as verdict, FileFacts};
use bao_kms_core::config::{AuthMethod, CertSource, Config};
use bao_kms_core::keyid::KeyId;
use bao_kms_core::registry::{IdentityPins, StateFile, checkpoint_status};
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_core::transit::{BootstrapDecision, KeyMetadata, bootstrap_decision, profile_findings};
use secrecy::ExposeSecret;

use crate::auth::{Auth, AuthError, check_jwt, read_secret_file};
use crate::metrics::Metrics;
use crate::openbao::{ClientSettings, OpenBao};
use crate::report::{CheckStatus, Report};
use crate::state::RegistryPaths;
use crate::transit::{OpenBaoTransit, Transit as _};

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
            r.push(CONFIG_LOAD.check(CheckStatus::Pass, config_path.display().to_string()));
            r.push(CONFIG_VALIDATE.check(
                CheckStatus::Pass,
                format!("identity fingerprint {}", cfg.identity_scope().fingerprint()),
            ));
            cfg
        }
        Err(e) => {
            let failed = match e {
                crate::config_file::LoadError::File(_) => CONFIG_LOAD,
                crate::config_file::LoadError::Invalid(_) => CONFIG_VALIDATE,
            };
            r.push(failed.check(CheckStatus::Fail, e.to_string().replace('\n', "; ")));
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
            r.push(OPENBAO_TLS.check(CheckStatus::Fail, e.to_string()));
            return r;
        }
    };
    let cluster_id = match bao.cluster_id().await {
        Ok(id) => {
            r.push(OPENBAO_TLS.check(CheckStatus::Pass, format!("cluster_id {id}")));
            id
        }
        Err(e) => {
            r.push(OPENBAO_TLS.check(CheckStatus::Fail, e.to_string()));
            return r;
        }
    };
    if !local_auth_ok {
        r.push(OPENBAO_AUTH.check(CheckStatus::Skip, "local auth material failed"));
        return r;
    }
    let transit = match Auth::new(&cfg.auth, bao.clone(), metrics) {
        Ok(auth) => OpenBaoTransit::new(
            bao.clone(),
            auth,
            cfg.auth.login_before_token_expiry,
            cfg.auth.token_renewal_increment,
        ),
        Err(e) => {
            r.push(OPENBAO_AUTH.check(CheckStatus::Fail, e.to_string()));
            return r;
        }
    };
    let token = match transit.token().await {
        Ok(t) => {
            r.push(OPENBAO_AUTH.check(CheckStatus::Pass, format!("auth.method {}", cfg.auth.method.name())));
            t
        }
        Err(e) => {
            r.push(OPENBAO_AUTH.check(CheckStatus::Fail, e.to_string()));
            return r;
        }
    };
    let t = token.expose_secret();
    check_capabilities(&mut r, &cfg, &bao, t).await;

    let meta = match bao.key_metadata(t).await {
        Ok(m) => {
            r.push(TRANSIT_METADATA.check(
                CheckStatus::Pass,
                format!("latest_version={} type={}", m.latest_version, m.key_type),
            ));
            m
        }
        Err(e) => {
            r.push(TRANSIT_METADATA.check(CheckStatus::Fail, e.to_string()));
            return r;
        }
    };
    check_identity(&mut r, &cfg, &bao, cluster_id, t).await;
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
    let report_findings = |r: &mut Report, d: Def, found: &[bao_kms_core::transit::Finding]| {
        let text = found.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        r.push(d.check(
            if found.is_empty() {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            text,
        ));
    };
    report_findings(&mut r, TRANSIT_PROFILE, &profile);
    if mode == Mode::VerifyKey {
        report_findings(&mut r, TRANSIT_VERSION_RESTRICTIONS, &restrictions);
    }
    match bao.disable_upsert(t).await {
        Ok(true) => r.push(TRANSIT_DISABLE_UPSERT.check(CheckStatus::Pass, "")),
        Ok(false) => r.push(TRANSIT_DISABLE_UPSERT.check(
            CheckStatus::Fail,
            "disable_upsert is false: set it with `bao write <mount>/config/keys disable_upsert=true`",
        )),
        Err(e) => r.push(TRANSIT_DISABLE_UPSERT.check(CheckStatus::Fail, e.to_string())),
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
        r.push(TRANSIT_PROBE.check(CheckStatus::Skip, "no active key snapshot"));
        return r;
    };
    if mode == Mode::Doctor {
        // The runtime's own deep probe: the same AAD, explicit version and
        // ciphertext limit serve checks at startup and on every probe.
        match crate::runtime::deep_probe(&transit, &scope, &token, &active).await {
            Ok(()) => r.push(TRANSIT_PROBE.check(CheckStatus::Pass, format!("version {}", active.version))),
            Err(e) => r.push(TRANSIT_PROBE.check(CheckStatus::Fail, e.message)),
        }
    }
    let again = KeyId::derive(&scope, active.version, active.created_unix);
    if again.as_ref() == Ok(&active.key_id) {
        r.push(KEY_ID_DETERMINISTIC.check(CheckStatus::Pass, format!("key_id hash {}", active.key_id.hash())));
    } else {
        r.push(KEY_ID_DETERMINISTIC.check(
            CheckStatus::Fail,
            "the registry's active key_id does not derive from the configured identity",
        ));
    }
    r
}

/// `socket.group`, `socket.directory` and `socket.file`, judged by the
/// same rules as preflight's node checks; a missing socket only warns
/// (doctor also runs before the first start).
fn check_socket(r: &mut Report, cfg: &Config) {
    let gid = match crate::socket::resolve_group(&cfg.server.socket_group) {
        Ok(gid) => {
            r.push(SOCKET_GROUP.pass(format!("GID {gid}")));
            gid
        }
        Err(e) => {
            r.push(SOCKET_GROUP.fail(
                e.to_string(),
                "create the group, or set server.socketGroup to a numeric GID",
            ));
            r.push(SOCKET_DIRECTORY.skipped_after(&SOCKET_GROUP));
            r.push(SOCKET_FILE.skipped_after(&SOCKET_GROUP));
            return;
        }
    };
    let socket = &cfg.server.socket_path;
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let lstat = |p: &Path| FileFacts::from_lstat(p, std::fs::symlink_metadata(p));
    r.push(verdict::socket_directory(&lstat(dir), gid));
    r.push(verdict::socket_file(&lstat(socket), gid, cfg.server.socket_mode, false));
}

/// `kubernetes.encryption_config`: preflight's three EncryptionConfiguration
/// checks (strict decoding, kube-apiserver's rules, this provider as `kms`
/// v2 on its socket) as one verdict.
fn check_encryption_config(r: &mut Report, cfg: &Config, path: &Path) {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    r.push(verdict::encryption_config_summary(
        path,
        text.as_deref().map_err(String::as_str),
        cfg,
    ));
}

/// Checks the material the configured method logs in with; true when a
/// login may be attempted.
fn check_local_auth(r: &mut Report, cfg: &Config) -> bool {
    let now = crate::now_unix();
    match &cfg.auth.method {
        AuthMethod::Jwt(j) => {
            let Some(jwt_file) = j.jwt_file() else {
                // oauth2: the token endpoint is asked, and its token checked
                // like a JWT file, by the login of `openbao.auth`.
                r.push(JWT_LOCAL.check(
                    CheckStatus::Skip,
                    "auth.jwt.source is oauth2: the token is acquired and checked at the login (openbao.auth)",
                ));
                return true;
            };
            let result = read_secret_file(jwt_file).and_then(|jwt| check_jwt(jwt.expose_secret(), j, now));
            match result {
                Ok(c) => {
                    let aud = c.aud.as_ref().map(|a| a.values().join(",")).unwrap_or_default();
                    let left = c.exp.unwrap_or(now) - now;
                    r.push(JWT_LOCAL.check(
                        CheckStatus::Pass,
                        format!(
                            "iss={} aud={aud} sub={} expires in {left}s",
                            c.iss.unwrap_or_default(),
                            c.sub.unwrap_or_default()
                        ),
                    ));
                    true
                }
                Err(e) => {
                    r.push(JWT_LOCAL.check(CheckStatus::Fail, e.to_string()));
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
                r.push(AUTH_CERT_LOCAL.check(CheckStatus::Fail, e.to_string()));
                return false;
            }
            r.push(AUTH_CERT_LOCAL.check(CheckStatus::Pass, ""));
            match crate::auth::client_identity(c, now) {
                Ok(_) => {
                    if matches!(c.source, CertSource::Pkcs11(_)) {
                        r.push(AUTH_CERT_PKCS11.check(CheckStatus::Pass, ""));
                        r.push(AUTH_CERT_SIGNER.check(CheckStatus::Pass, ""));
                    }
                    true
                }
                Err(e @ AuthError::KeyMismatch(_)) => {
                    r.push(AUTH_CERT_PKCS11.check(CheckStatus::Pass, ""));
                    r.push(AUTH_CERT_SIGNER.check(CheckStatus::Fail, e.to_string()));
                    false
                }
                Err(e) => {
                    let id = if matches!(c.source, CertSource::Pkcs11(_)) {
                        AUTH_CERT_PKCS11
                    } else {
                        AUTH_CERT_LOCAL
                    };
                    r.push(id.fail(e.to_string(), ""));
                    false
                }
            }
        }
        AuthMethod::AppRole(a) => {
            match read_secret_file(&a.role_id_file).and_then(|_| read_secret_file(&a.secret_id_file)) {
                Ok(_) => {
                    r.push(AUTH_APPROLE_LOCAL.check(CheckStatus::Pass, ""));
                    true
                }
                Err(e) => {
                    r.push(AUTH_APPROLE_LOCAL.check(CheckStatus::Fail, e.to_string()));
                    false
                }
            }
        }
        AuthMethod::Token(t) => match read_secret_file(&t.token_file) {
            Ok(_) => {
                r.push(AUTH_TOKEN_LOCAL.check(CheckStatus::Pass, ""));
                true
            }
            Err(e) => {
                r.push(AUTH_TOKEN_LOCAL.check(CheckStatus::Fail, e.to_string()));
                false
            }
        },
    }
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
            r.push(TRANSIT_CAPABILITIES.check(CheckStatus::Fail, e.to_string()));
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
        r.push(TRANSIT_CAPABILITIES.check(CheckStatus::Pass, ""));
    } else {
        r.push(TRANSIT_CAPABILITIES.check(CheckStatus::Fail, problems.join("; ")));
    }
}

/// `openbao.identity`: the pins file against the live identity, judged by
/// the rule serve applies at startup and on every probe.
async fn check_identity(r: &mut Report, cfg: &Config, bao: &OpenBao, cluster_id: String, token: &str) {
    let stored = match crate::state::read_pins_unlocked(&RegistryPaths::new(&cfg.state.path)) {
        Ok(p) => p,
        Err(e) => {
            r.push(OPENBAO_IDENTITY.fail(
                e,
                "restore the pins file from backup, or review `bao-kms-provider repin`",
            ));
            return;
        }
    };
    match bao.mount_identity(token).await {
        Ok(mount) => r.push(bao_kms_core::checks::openbao::identity(
            stored.as_ref(),
            &IdentityPins::new(cluster_id, mount.accessor, mount.uuid),
        )),
        Err(e) => r.push(OPENBAO_IDENTITY.fail(
            format!("Transit mount identity unreadable: {e}"),
            "serve reads it at startup: allow read on sys/internal/ui/mounts/<mount> (see `policy openbao`)",
        )),
    }
}

/// Registry files, checkpoint rules, identity and drift; returns the state
/// when it is usable.
fn check_registry(r: &mut Report, cfg: &Config, meta: &KeyMetadata) -> Option<StateFile> {
    let paths = RegistryPaths::new(&cfg.state.path);
    let loaded = crate::state::read_unlocked(&paths);
    let (state, checkpoint) = match loaded {
        Ok(x) => x,
        Err(e) => {
            r.push(REGISTRY_STATE.check(CheckStatus::Fail, e));
            return None;
        }
    };
    let status = match checkpoint_status(state.as_ref(), checkpoint.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            r.push(REGISTRY_STATE.check(CheckStatus::Fail, e));
            return None;
        }
    };
    let Some(state) = state else {
        match bootstrap_decision(meta) {
            d @ BootstrapDecision::Allowed { .. } => {
                r.push(REGISTRY_STATE.check(CheckStatus::Warn, format!("no registry yet; {}", d.describe())))
            }
            d @ BootstrapDecision::Denied { .. } => {
                r.push(REGISTRY_STATE.check(CheckStatus::Fail, format!("no registry; {}", d.describe())))
            }
        }
        return None;
    };
    if let Err(e) = state.check_scope(&cfg.identity_scope()) {
        r.push(REGISTRY_STATE.check(CheckStatus::Fail, e.to_string()));
        return None;
    }
    let drift = state.drift_against(meta);
    if !drift.is_empty() {
        r.push(REGISTRY_STATE.check(CheckStatus::Fail, drift.join("; ")));
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
    r.push(REGISTRY_STATE.check(level, summary));
    Some(state)
}
