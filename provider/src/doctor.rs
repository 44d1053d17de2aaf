//! `doctor`: one line per check of everything the provider depends on,
//! in dependency order: configuration, socket directory and socket, local
//! auth material, OpenBao TLS and the node's state (`openbao.health`:
//! sealed, not initialised, DR secondary, standby, performance standby,
//! from one `sys/health` request), login, token capabilities, Transit key
//! metadata, the identity pins (`identity_drift`, as serve judges them),
//! profile and upsert setting, the registry (checkpoint rules, identity,
//! drift, auto-bootstrap decision), a Transit encrypt/decrypt with the
//! active version and AAD, and key_id determinism. Check IDs are a stable
//! interface: runbooks and automation match on them.
//!
//! Every check runs that does not need what failed: with OpenBao sealed,
//! unreachable or refusing TLS, the registry, pins file and key_id are
//! still judged from the local files, and each check that needs OpenBao is
//! skipped naming the failed prerequisite.
//!
//! It runs beside a live provider: the registry is read without taking the
//! writer lock, and nothing is written.

use std::path::Path;
use std::sync::Arc;

use bao_kms_core::checks::Def;
use bao_kms_core::checks::catalogue::*;
use bao_kms_core::checks::node::{self as verdict, FileFacts};
use bao_kms_core::checks::openbao::HealthProbe;
use bao_kms_core::config::{AuthMethod, CertSource, Config, JwtAuth, JwtSource, OAuth2Source};
use bao_kms_core::keyid::KeyId;
use bao_kms_core::policy;
use bao_kms_core::registry::{IdentityPins, StateFile, checkpoint_status};
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_core::transit::{BootstrapDecision, KeyMetadata, bootstrap_decision, profile_findings};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::{Auth, AuthError, check_jwt, read_secret_file};
use crate::metrics::Metrics;
use crate::openbao::{ClientSettings, OpenBao};
use crate::report::{CheckStatus, Report};
use crate::runtime::Engine;
use crate::service::{KMS_API_VERSION, KmsService};
use crate::state::RegistryPaths;
use crate::transit::{OpenBaoTransit, Transit as _};
use bao_kms_core::checks::Check;
use bao_kms_proto::v2::key_management_service_server::KeyManagementService as _;
use bao_kms_proto::v2::{EncryptRequest, StatusRequest};

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
        check_paths(&mut r, &cfg);
    }
    let local_auth_ok = check_local_auth(&mut r, &cfg).await;
    if let Some(path) = encryption_config {
        check_encryption_config(&mut r, &cfg, path);
    }

    // The registry files and the pins, read once without the writer lock;
    // judged on their own when OpenBao cannot be asked.
    let paths = RegistryPaths::new(&cfg.state.path);
    let local = crate::state::read_unlocked(&paths);
    let pins = crate::state::read_pins_unlocked(&paths);

    let metrics = Arc::new(Metrics::for_auth(&cfg.auth.method));
    let metrics_for_kms = metrics.clone();
    let (bao, blocker) = connect(&mut r, &cfg, metrics.clone()).await;
    let session = match (&bao, blocker) {
        (Some((bao, _)), None) => login(&mut r, &cfg, bao, metrics, local_auth_ok).await,
        (_, Some(why)) => {
            r.push(OPENBAO_AUTH.skip(format!("skipped: {why}")));
            Err(why)
        }
        (None, None) => Err("no OpenBao client".to_owned()),
    };
    let meta = match (&bao, &session) {
        (Some((bao, _)), Ok((_, token))) => {
            let t = token.expose_secret();
            check_capabilities(&mut r, &cfg, bao, t).await;
            match bao.key_metadata(t).await {
                Ok(m) => {
                    r.push(TRANSIT_METADATA.pass(format!("latest_version={} type={}", m.latest_version, m.key_type)));
                    Ok(m)
                }
                Err(e) => {
                    r.push(TRANSIT_METADATA.check(CheckStatus::Fail, e.to_string()));
                    Err(format!("Transit key metadata unreadable ({})", TRANSIT_METADATA.id))
                }
            }
        }
        _ => {
            let why = why_of(&session);
            r.push(TRANSIT_CAPABILITIES.skip(format!("skipped: {why}")));
            r.push(TRANSIT_METADATA.skip(format!("skipped: {why}")));
            Err(why)
        }
    };
    match (&bao, &session) {
        (Some((bao, Some(cluster_id))), Ok((_, token))) => {
            check_identity(&mut r, bao, pins, cluster_id.clone(), token.expose_secret()).await
        }
        _ => r.push(identity_offline(pins, &why_of(&session))),
    }
    let registry = check_registry(&mut r, &cfg, local, meta.as_ref());
    let retained = registry
        .as_ref()
        .map(StateFile::retained_versions)
        .unwrap_or_else(|| vec![1]);
    let active_version = registry.as_ref().map(|s| s.active().transit_version);
    match &meta {
        Ok(meta) => {
            let findings = profile_findings(meta, &retained, active_version);
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
        }
        Err(why) => {
            r.push(TRANSIT_PROFILE.skip(format!("skipped: {why}")));
            if mode == Mode::VerifyKey {
                r.push(TRANSIT_VERSION_RESTRICTIONS.skip(format!("skipped: {why}")));
            }
        }
    }
    match (&bao, &session) {
        (Some((bao, _)), Ok((_, token))) => match bao.disable_upsert(token.expose_secret()).await {
            Ok(true) => r.push(TRANSIT_DISABLE_UPSERT.check(CheckStatus::Pass, "")),
            Ok(false) => r.push(TRANSIT_DISABLE_UPSERT.check(
                CheckStatus::Fail,
                "disable_upsert is false: set it with `bao write <mount>/config/keys disable_upsert=true`",
            )),
            Err(e) => r.push(TRANSIT_DISABLE_UPSERT.check(CheckStatus::Fail, e.to_string())),
        },
        _ => r.push(TRANSIT_DISABLE_UPSERT.skip(format!("skipped: {}", why_of(&session)))),
    }

    // The snapshot the provider encrypts with: the registry's active one, or
    // version 1 when auto-bootstrap would create the registry.
    let scope = cfg.identity_scope();
    let active = match (&registry, &meta) {
        (Some(state), _) => state
            .active()
            .snapshot()
            .ok_or_else(|| "the registry's active snapshot is malformed".to_owned()),
        (None, Ok(meta)) => match bootstrap_decision(meta) {
            BootstrapDecision::Allowed { created_unix } => {
                KeySnapshot::new(&scope, 1, created_unix).map_err(|e| e.to_string())
            }
            d @ BootstrapDecision::Denied { .. } => Err(format!("no active key snapshot: {}", d.describe())),
        },
        (None, Err(why)) => Err(format!("no registry, and {why}")),
    };
    if mode == Mode::Doctor {
        match (&session, &active) {
            // The runtime's own deep probe: the same AAD, explicit version and
            // ciphertext limit serve checks at startup and on every probe.
            (Ok((transit, token)), Ok(active)) => {
                match crate::runtime::deep_probe(transit, &scope, token, active).await {
                    Ok(()) => r.push(TRANSIT_PROBE.check(CheckStatus::Pass, format!("version {}", active.version))),
                    Err(e) => r.push(TRANSIT_PROBE.check(CheckStatus::Fail, e.message)),
                }
            }
            (Err(why), _) | (_, Err(why)) => r.push(TRANSIT_PROBE.skip(format!("skipped: {why}"))),
        }
    }
    match &active {
        Ok(active) => {
            let again = KeyId::derive(&scope, active.version, active.created_unix);
            if again.as_ref() == Ok(&active.key_id) {
                r.push(KEY_ID_DETERMINISTIC.check(CheckStatus::Pass, format!("key_id hash {}", active.key_id.hash())));
            } else {
                r.push(KEY_ID_DETERMINISTIC.check(
                    CheckStatus::Fail,
                    "the registry's active key_id does not derive from the configured identity",
                ));
            }
        }
        Err(why) => r.push(KEY_ID_DETERMINISTIC.skip(format!("skipped: {why}"))),
    }
    if mode == Mode::Doctor {
        match (session, &active) {
            (Ok((transit, _)), Ok(_)) => r.push(status_encrypt(&cfg, transit, metrics_for_kms).await),
            (Err(why), _) => r.push(KMS_STATUS_ENCRYPT.skip(format!("skipped: {why}"))),
            (_, Err(why)) => r.push(KMS_STATUS_ENCRYPT.skip(format!("skipped: {why}"))),
        }
    }
    r
}

/// `kms.status_encrypt`: serve's own startup (registry, pins, identity,
/// profile and upsert checks, rotation rules, the deep probe) and its KMS
/// service, in process: Status must answer `healthz: ok`, version `v2` and
/// a key_id, and an Encrypt of a 32-byte seed must return the same key_id.
/// The engine runs on a private copy of the registry files, so nothing of
/// the real state directory is locked or written (a bootstrap or first pin
/// lands in the copy).
async fn status_encrypt(cfg: &Config, transit: OpenBaoTransit, metrics: Arc<Metrics>) -> Check {
    let copy = match copy_registry(&cfg.state.path) {
        Ok(c) => c,
        Err(e) => {
            return KMS_STATUS_ENCRYPT.fail(format!("copying the registry for the in-process provider: {e}"), "");
        }
    };
    let mut private = cfg.clone();
    private.state.path = copy.path().join(STATE_FILE);
    // One startup attempt: doctor reports, it does not wait out
    // bootstrap.graceTimeout.
    private.bootstrap.grace_timeout = std::time::Duration::ZERO;
    let engine =
        match Engine::start_with(Arc::new(private), metrics, crate::VERSION.to_owned(), Arc::new(transit)).await {
            Ok(e) => e,
            Err(e) => {
                return KMS_STATUS_ENCRYPT.fail(
                    format!("serve's startup would fail: {e}"),
                    "the failing check above names the cause; serve exits 5 with the same reason",
                );
            }
        };
    let kms = KmsService::new(engine);
    let status = match kms.status(tonic::Request::new(StatusRequest {})).await {
        Ok(s) => s.into_inner(),
        Err(e) => return KMS_STATUS_ENCRYPT.fail(format!("Status failed: {}", e.message()), ""),
    };
    let hash = |k: &str| bao_kms_core::hash::h(k);
    if status.healthz != "ok" || status.version != KMS_API_VERSION || status.key_id.is_empty() {
        return KMS_STATUS_ENCRYPT.fail(
            format!(
                "Status answered healthz {:?}, version {:?}, key_id hash {}",
                status.healthz,
                status.version,
                if status.key_id.is_empty() {
                    "<none>".to_owned()
                } else {
                    hash(&status.key_id)
                }
            ),
            "",
        );
    }
    let mut seed = zeroize::Zeroizing::new(vec![0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rng(), seed.as_mut_slice());
    let request = EncryptRequest {
        plaintext: seed.to_vec(),
        uid: "doctor-status-encrypt".to_owned(),
    };
    match kms.encrypt(tonic::Request::new(request)).await {
        Ok(answer) if answer.get_ref().key_id == status.key_id => KMS_STATUS_ENCRYPT.pass(format!(
            "healthz ok, version {}, key_id hash {}; Encrypt returned the same key_id",
            status.version,
            hash(&status.key_id)
        )),
        Ok(answer) => KMS_STATUS_ENCRYPT.fail(
            format!(
                "Encrypt returned key_id hash {} but Status reports {}: kube-apiserver would discard the result",
                hash(&answer.get_ref().key_id),
                hash(&status.key_id)
            ),
            "",
        ),
        Err(e) => KMS_STATUS_ENCRYPT.fail(format!("Encrypt failed ({:?}): {}", e.code(), e.message()), ""),
    }
}

/// The state file's name in the private copy.
const STATE_FILE: &str = "key-registry.json";

/// A private directory holding a copy of the registry files that exist:
/// the checkpoint first, then the state (a state one generation ahead of
/// its checkpoint is accepted; the other way round fails closed), then
/// the pins.
fn copy_registry(state_path: &Path) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("bao-kms-doctor-").tempdir()?;
    let from = RegistryPaths::new(state_path);
    let to = RegistryPaths::new(&dir.path().join(STATE_FILE));
    for (src, dst) in [
        (&from.checkpoint, &to.checkpoint),
        (&from.state, &to.state),
        (&from.pins, &to.pins),
    ] {
        match std::fs::copy(src, dst) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", src.display()))),
        }
    }
    Ok(dir)
}

/// Why the checks after the login are skipped.
fn why_of<T>(session: &Result<T, String>) -> String {
    match session {
        Ok(_) => String::new(),
        Err(why) => why.clone(),
    }
}

/// `openbao.tls` and `openbao.health` from one `sys/health` request: the
/// client and, for a serving node, its `cluster_id`; or why the checks
/// that need OpenBao are skipped.
async fn connect(
    r: &mut Report,
    cfg: &Config,
    metrics: Arc<Metrics>,
) -> (Option<(OpenBao, Option<String>)>, Option<String>) {
    let bao = match OpenBao::new(ClientSettings::from_config(cfg), metrics) {
        Ok(b) => b,
        Err(e) => {
            r.push(OPENBAO_TLS.fail(e.to_string(), "fix openbao.caCertFile or openbao.tlsServerName"));
            r.push(OPENBAO_HEALTH.skipped_after(&OPENBAO_TLS));
            return (None, Some(format!("no TLS client ({})", OPENBAO_TLS.id)));
        }
    };
    let health = bao.health().await;
    let probe = match &health {
        Ok(h) => HealthProbe::Answer(h),
        Err(e) => HealthProbe::Failed {
            class: e.class,
            http_status: e.http_status,
            message: &e.message,
        },
    };
    let verdict = bao_kms_core::checks::openbao::connection(&cfg.openbao.address, probe);
    r.push(verdict.tls);
    r.push(verdict.health);
    let cluster_id = health.ok().and_then(|h| h.cluster_id().ok().map(str::to_owned));
    (Some((bao, cluster_id)), verdict.blocker)
}

/// `openbao.auth`: a real login with the configured method.
async fn login(
    r: &mut Report,
    cfg: &Config,
    bao: &OpenBao,
    metrics: Arc<Metrics>,
    local_auth_ok: bool,
) -> Result<(OpenBaoTransit, SecretString), String> {
    let failed = || format!("login failed ({})", OPENBAO_AUTH.id);
    if !local_auth_ok {
        r.push(OPENBAO_AUTH.skip("skipped: the local auth material failed"));
        return Err("the local auth material failed".to_owned());
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
            return Err(failed());
        }
    };
    match transit.token().await {
        Ok(t) => {
            r.push(OPENBAO_AUTH.check(CheckStatus::Pass, format!("auth.method {}", cfg.auth.method.name())));
            Ok((transit, t))
        }
        Err(e) => {
            r.push(OPENBAO_AUTH.check(CheckStatus::Fail, e.to_string()));
            Err(failed())
        }
    }
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

/// `paths.trusted`: serve's ancestor and state-owner rule. Doctor usually
/// runs as root, so the service user is the state directory's owner (the
/// user serve must run as).
fn check_paths(r: &mut Report, cfg: &Config) {
    let dir = cfg.state.path.parent().unwrap_or(Path::new("/"));
    let service_uid = std::fs::metadata(dir)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or_else(|_| nix::unistd::geteuid().as_raw());
    let problems = crate::fsutil::check_trusted_paths(cfg, service_uid);
    if problems.is_empty() {
        r.push(PATHS_TRUSTED.pass(format!("service uid {service_uid}")));
    } else {
        r.push(PATHS_TRUSTED.fail(
            problems.join("; "),
            "configure real paths owned by root or the service user, not group- or world-writable (docs/security.md)",
        ));
    }
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

/// `auth.jwt.source: oauth2`: `oauth2.local` (the client secret file and
/// the endpoint's CA bundle, as the login reads them) and `oauth2.acquire`
/// (a client-credentials grant at the token endpoint whose access token
/// passes the local JWT checks, as before every login). True when a login
/// may be attempted.
async fn check_oauth2(r: &mut Report, j: &JwtAuth, o: &OAuth2Source, timeout: std::time::Duration, now: i64) -> bool {
    let endpoint =
        read_secret_file(&o.client_secret_file).and_then(|_| crate::auth::oauth2::TokenEndpoint::new(o, timeout));
    let endpoint = match endpoint {
        Ok(e) => {
            r.push(OAUTH2_LOCAL.pass(format!(
                "client {} at {}, client secret file {}",
                o.client_id,
                o.token_url,
                o.client_secret_file.display()
            )));
            e
        }
        Err(e) => {
            r.push(OAUTH2_LOCAL.fail(
                e.to_string(),
                "fix auth.jwt.oauth2.clientSecretFile (one line, mode 0640 or stricter) or auth.jwt.oauth2.caCertFile",
            ));
            r.push(OAUTH2_ACQUIRE.skipped_after(&OAUTH2_LOCAL));
            return false;
        }
    };
    match endpoint.jwt(j, now).await {
        Ok(token) => {
            let expires = check_jwt(token.expose_secret(), j, now)
                .ok()
                .and_then(|c| c.exp)
                .map(|exp| format!(", expires in {}s", exp - now))
                .unwrap_or_default();
            r.push(OAUTH2_ACQUIRE.pass(format!(
                "the endpoint granted an access token that passes the JWT checks{expires}"
            )));
            true
        }
        Err(e) => {
            r.push(OAUTH2_ACQUIRE.fail(
                e.to_string(),
                "oauth2_rejected: fix the client ID, secret or authMethod at the identity provider; oauth2_unavailable: the endpoint's reachability; a JWT message: the token's claims against auth.jwt.expected*",
            ));
            false
        }
    }
}

/// Checks the material the configured method logs in with; true when a
/// login may be attempted.
async fn check_local_auth(r: &mut Report, cfg: &Config) -> bool {
    let now = crate::now_unix();
    match &cfg.auth.method {
        AuthMethod::Jwt(j) => {
            let jwt_file = match &j.source {
                JwtSource::File { jwt_file } => jwt_file,
                JwtSource::OAuth2(o) => return check_oauth2(r, j, o, cfg.auth.login_timeout, now).await,
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

/// `transit.capabilities`: the token holds every grant of the policy
/// `policy openbao` prints (the same list, `core::policy::grants`) and
/// none of the forbidden ones. The mount read serve makes is judged by the
/// read itself (`openbao.identity`): OpenBao answers it for any token with
/// access to the mount.
async fn check_capabilities(r: &mut Report, cfg: &Config, bao: &OpenBao, token: &str) {
    let grants = policy::grants(cfg, true);
    let forbidden = policy::forbidden(cfg);
    let paths = policy::capability_paths(&grants, &forbidden);
    let answer = match bao.capabilities(token, &paths).await {
        Ok(a) => a,
        Err(e) => {
            r.push(TRANSIT_CAPABILITIES.fail(
                e.to_string(),
                "the check asks sys/capabilities-self: grant update on it (it is in `bao-kms-provider policy openbao`)",
            ));
            return;
        }
    };
    match policy::judge_capabilities(&grants, &forbidden, &answer) {
        Ok(notes) => r.push(TRANSIT_CAPABILITIES.pass(notes.join("; "))),
        Err(problems) => r.push(TRANSIT_CAPABILITIES.fail(
            problems.join("; "),
            "give the token exactly the policy `bao-kms-provider policy openbao` prints",
        )),
    }
}

/// `openbao.identity`: the pins file against the live identity, judged by
/// the rule serve applies at startup and on every probe.
async fn check_identity(
    r: &mut Report,
    bao: &OpenBao,
    pins: Result<Option<IdentityPins>, String>,
    cluster_id: String,
    token: &str,
) {
    let stored = match pins {
        Ok(p) => p,
        Err(e) => {
            r.push(OPENBAO_IDENTITY.fail(e, PINS_UNREADABLE_FIX));
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

const PINS_UNREADABLE_FIX: &str = "restore the pins file from backup, or review `bao-kms-provider repin`";

/// `openbao.identity` without a live OpenBao: an unreadable pins file
/// fails; otherwise skipped with `why`, naming what is pinned.
fn identity_offline(pins: Result<Option<IdentityPins>, String>, why: &str) -> bao_kms_core::checks::Check {
    match pins {
        Err(e) => OPENBAO_IDENTITY.fail(e, PINS_UNREADABLE_FIX),
        Ok(Some(p)) => OPENBAO_IDENTITY.skip(format!(
            "skipped: {why}; pinned: {}",
            bao_kms_core::checks::openbao::describe(&p)
        )),
        Ok(None) => OPENBAO_IDENTITY.skip(format!("skipped: {why}; no identity pins yet")),
    }
}

/// Registry files, checkpoint rules, identity and drift; returns the state
/// when it is usable. Without Transit metadata (`meta` holds why) the
/// local rules are judged and drift and the auto-bootstrap decision are
/// named as not checked.
fn check_registry(
    r: &mut Report,
    cfg: &Config,
    loaded: Result<(Option<StateFile>, Option<bao_kms_core::registry::Checkpoint>), String>,
    meta: Result<&KeyMetadata, &String>,
) -> Option<StateFile> {
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
        match meta.map(bootstrap_decision) {
            Ok(d @ BootstrapDecision::Allowed { .. }) => {
                r.push(REGISTRY_STATE.check(CheckStatus::Warn, format!("no registry yet; {}", d.describe())))
            }
            Ok(d @ BootstrapDecision::Denied { .. }) => {
                r.push(REGISTRY_STATE.check(CheckStatus::Fail, format!("no registry; {}", d.describe())))
            }
            Err(why) => r.push(REGISTRY_STATE.skip(format!(
                "no registry yet; whether the first start may bootstrap it needs the Transit key metadata: skipped: {why}"
            ))),
        }
        return None;
    };
    if let Err(e) = state.check_scope(&cfg.identity_scope()) {
        r.push(REGISTRY_STATE.check(CheckStatus::Fail, e.to_string()));
        return None;
    }
    let not_checked = match meta {
        Ok(meta) => {
            let drift = state.drift_against(meta);
            if !drift.is_empty() {
                r.push(REGISTRY_STATE.check(CheckStatus::Fail, drift.join("; ")));
                return Some(state);
            }
            String::new()
        }
        Err(why) => format!("; drift against Transit not checked: {why}"),
    };
    let summary = format!(
        "generation {}, checkpoint {}, active version {}, key_id hash {}{not_checked}",
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
