//! OpenBao authentication: obtains the token every OpenBao call carries,
//! keeps it only in memory, renews it before it expires, and logs in again
//! when OpenBao rejects it.
//!
//! Methods (`auth.method`), each re-reading its material at every login so
//! externally rotated files take effect without a restart:
//! - `jwt`: `POST <mountPath>/login {role, jwt}`; the JWT file is read and its
//!   claims checked locally (`exp` window, `nbf`/`iat`, expected iss/aud/sub).
//! - `approle`: `POST <mountPath>/login {role_id, secret_id}` from two files.
//! - `cert`: `POST <mountPath>/login {name}` over mTLS with the client
//!   certificate; the key is a PEM file or stays in a PKCS#11 token.
//! - `token` (development): the token file, checked with `lookup-self`.
//!
//! Lifecycle: one login at a time (callers wait for the one in flight); a
//! failed login backs off (1 s doubling to 60 s, ±25 % jitter) and callers
//! get the last error meanwhile without calling OpenBao. [`Auth::maintain`]
//! runs before every background probe: inside `auth.loginBeforeTokenExpiry`
//! a renewable token is renewed with `auth.tokenRenewalIncrement`, otherwise
//! (or when renewal fails or is exhausted) a fresh login replaces it; the
//! still-valid token stays in use until then. A 403 from OpenBao drops the
//! token ([`Auth::invalidate`]) so the next caller logs in again.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bao_kms_core::config::{AuthConfig, AuthMethod, CertAuth, CertSource, JwtAuth, JwtSource};
use bao_kms_core::errors::ErrorClass;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::sync::{Mutex, RwLock};

mod cert;
mod error;
mod jwt_check;
pub mod oauth2;
pub mod pkcs11;

pub use cert::{
    expectations as certificate_expectations, identity as client_identity, identity_within as client_identity_within,
    read_chain,
};
pub use error::{AuthError, read_secret_file};
pub use jwt_check::check_jwt;

use crate::metrics::{Metrics, Status};
use crate::openbao::{Op, OpenBao, TokenLease};

/// What a login presents, per method.
enum Login {
    Token {
        file: PathBuf,
    },
    Jwt(JwtAuth),
    AppRole {
        mount: String,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
    Cert(CertAuth),
}

impl Login {
    /// The files a login reads; a change to any of them triggers a new login.
    fn material(&self) -> Vec<&Path> {
        match self {
            Self::Token { file } => vec![file],
            // The OAuth2 client secret is read at each grant; a new secret
            // alone is no reason to log in again.
            Self::Jwt(j) => j.jwt_file().into_iter().collect(),
            Self::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => vec![role_id_file, secret_id_file],
            Self::Cert(CertAuth {
                source:
                    CertSource::File {
                        certificate_file,
                        key_file,
                    },
                ..
            }) => vec![certificate_file, key_file],
            Self::Cert(CertAuth {
                source: CertSource::Pkcs11(p),
                ..
            }) => vec![&p.certificate_file, &p.pin_file],
        }
    }

    /// Identity of the material files now (inode, size, modification time).
    fn fingerprint(&self) -> Vec<Option<(u64, u64, i64, i64)>> {
        use std::os::unix::fs::MetadataExt;
        self.material()
            .into_iter()
            .map(|p| {
                fs::metadata(p)
                    .ok()
                    .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
            })
            .collect()
    }

    fn method(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::Jwt(_) => "jwt",
            Self::AppRole { .. } => "approle",
            Self::Cert(_) => "cert",
        }
    }
}

/// Failed-login backoff state.
#[derive(Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last: Option<AuthError>,
}

const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Backoff {
    fn delay(failures: u32) -> Duration {
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << failures.saturating_sub(1).min(6))
            .min(BACKOFF_MAX);
        exp.mul_f64(rand::rng().random_range(0.75..=1.25))
    }
}

pub struct Auth {
    bao: OpenBao,
    metrics: Arc<Metrics>,
    login: Login,
    /// `auth.loginTimeout` (effective): bounds one whole login attempt.
    login_timeout: Duration,
    current: RwLock<Option<Held>>,
    login_lock: Mutex<Backoff>,
    /// `notAfter` (Unix seconds) of the client certificate of the last
    /// successful cert login; 0 before one.
    cert_not_after: AtomicI64,
    /// The token endpoint of `auth.jwt.source: oauth2`.
    oauth2: Option<oauth2::TokenEndpoint>,
}

/// The token in use and its lease as last reported by OpenBao.
#[derive(Clone)]
struct Held {
    token: SecretString,
    lease: TokenLease,
    since: Instant,
    /// The login material as it was when this token was obtained.
    material: Vec<Option<(u64, u64, i64, i64)>>,
}

impl Held {
    /// Remaining lifetime now; `None` for a token that never expires.
    fn remaining(&self) -> Option<Duration> {
        (self.lease.ttl_secs > 0).then(|| Duration::from_secs(self.lease.ttl_secs).saturating_sub(self.since.elapsed()))
    }
}

impl Auth {
    pub fn new(auth: &AuthConfig, bao: OpenBao, metrics: Arc<Metrics>) -> Result<Self, AuthError> {
        let login = match &auth.method {
            AuthMethod::Token(t) => Login::Token {
                file: t.token_file.clone(),
            },
            AuthMethod::Jwt(j) => Login::Jwt(j.clone()),
            AuthMethod::AppRole(a) => Login::AppRole {
                mount: a.mount_path.clone(),
                role_id_file: a.role_id_file.clone(),
                secret_id_file: a.secret_id_file.clone(),
            },
            AuthMethod::Cert(c) => Login::Cert(c.clone()),
        };
        let oauth2 = match &auth.method {
            AuthMethod::Jwt(JwtAuth {
                source: JwtSource::OAuth2(o),
                ..
            }) => Some(oauth2::TokenEndpoint::new(o, auth.login_timeout)?),
            _ => None,
        };
        Ok(Self {
            oauth2,
            bao,
            metrics,
            login,
            login_timeout: auth.login_timeout,
            current: RwLock::new(None),
            login_lock: Mutex::new(Backoff::default()),
            cert_not_after: AtomicI64::new(0),
        })
    }

    /// The current token, logging in first if there is none. While a failed
    /// login backs off, returns its error without calling OpenBao.
    pub async fn token(&self) -> Result<SecretString, AuthError> {
        if let Some(h) = self.current.read().await.as_ref() {
            return Ok(h.token.clone());
        }
        let mut backoff = self.login_lock.lock().await;
        // Another caller may have logged in while we waited.
        if let Some(h) = self.current.read().await.as_ref() {
            return Ok(h.token.clone());
        }
        if let (Some(at), Some(last)) = (backoff.retry_at, backoff.last.as_ref()) {
            let now = Instant::now();
            if now < at {
                return Err(AuthError::BackingOff {
                    last: Box::new(last.clone()),
                    wait_ms: (at - now).as_millis() as u64,
                });
            }
        }
        Ok(self.login_recorded(&mut backoff).await?.token)
    }

    /// Logs in, records the metric, log line and backoff, and stores the
    /// new token. The caller holds `login_lock` (passed in as `backoff`).
    async fn login_recorded(&self, backoff: &mut Backoff) -> Result<Held, AuthError> {
        let method = self.login.method();
        // Everything one attempt does (reading files, PKCS#11, the OpenBao
        // request) shares one deadline; OpenBao's own request deadline for
        // login requests is the same value, not `openbao.timeout`.
        // Whichever of the two fires first, the failure names the setting.
        let result = match tokio::time::timeout(self.login_timeout, self.login()).await {
            Ok(Err(AuthError::Login(e))) if e.class == ErrorClass::Timeout => {
                Err(AuthError::Timeout(self.login_timeout))
            }
            Ok(done) => done,
            Err(_) => Err(AuthError::Timeout(self.login_timeout)),
        };
        let status = if result.is_ok() { "ok" } else { "error" };
        self.metrics.auth_login.get_or_create(&Status { status }).inc();
        match &result {
            Ok(h) => {
                *backoff = Backoff::default();
                tracing::info!(
                    message = "auth.login",
                    status,
                    auth_method = method,
                    ttl_secs = h.lease.ttl_secs
                );
            }
            Err(e) => {
                backoff.failures += 1;
                let delay = Backoff::delay(backoff.failures);
                backoff.retry_at = Some(Instant::now() + delay);
                backoff.last = Some(e.clone());
                tracing::warn!(
                    message = "auth.login",
                    status,
                    auth_method = method,
                    error_class = e.class().as_str(),
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64
                );
            }
        }
        let held = result?;
        *self.current.write().await = Some(held.clone());
        Ok(held)
    }

    async fn login(&self) -> Result<Held, AuthError> {
        let material = self.login.fingerprint();
        let (token, lease) = match &self.login {
            Login::Token { file } => {
                let token = read_secret_file(file)?;
                let lease = self.bao.token_lookup(token.expose_secret()).await.map_err(|mut e| {
                    if e.http_status == Some(403) {
                        e.message =
                            "OpenBao rejected the token (expired, revoked or lacking auth/token/lookup-self)".into();
                    }
                    AuthError::Login(e)
                })?;
                (token, lease)
            }
            Login::Jwt(j) => {
                let jwt = match (j.jwt_file(), &self.oauth2) {
                    (Some(file), _) => {
                        let jwt = read_secret_file(file)?;
                        check_jwt(jwt.expose_secret(), j, crate::now_unix())?;
                        jwt
                    }
                    (None, Some(endpoint)) => endpoint.jwt(j, crate::now_unix()).await?,
                    (None, None) => {
                        return Err(AuthError::OAuth2 {
                            reason: "client_build",
                            why: "no token endpoint client".into(),
                        });
                    }
                };
                let body = json!({"role": j.role, "jwt": jwt.expose_secret()});
                let result = self.bao.login(Op::JwtLogin, &j.mount_path, &body).await;
                if result.is_err()
                    && let Some(endpoint) = &self.oauth2
                {
                    // Refused or failed with this token: the next login asks
                    // the endpoint for a new one.
                    endpoint.discard();
                }
                result.map_err(AuthError::Login)?
            }
            Login::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let role_id = read_secret_file(role_id_file)?;
                let secret_id = read_secret_file(secret_id_file)?;
                let body = json!({"role_id": role_id.expose_secret(), "secret_id": secret_id.expose_secret()});
                self.bao
                    .login(Op::AppRoleLogin, mount, &body)
                    .await
                    .map_err(AuthError::Login)?
            }
            Login::Cert(c) => {
                // PKCS#11 calls block: off the async threads, so the login
                // deadline still fires when a token hangs.
                let cert_auth = c.clone();
                let wait = self.login_timeout;
                let (identity, not_after) =
                    tokio::task::spawn_blocking(move || cert::identity_within(&cert_auth, crate::now_unix(), wait))
                        .await
                        .map_err(|e| AuthError::Pkcs11(format!("the certificate task failed: {e}")))??;
                let material = match &c.source {
                    CertSource::File {
                        certificate_file,
                        key_file,
                    } => {
                        format!("{} with {}", certificate_file.display(), key_file.display())
                    }
                    CertSource::Pkcs11(p) => p.certificate_file.display().to_string(),
                };
                let client = self.bao.with_identity(identity).map_err(|e| AuthError::Certificate {
                    path: material,
                    why: e.to_string(),
                })?;
                let body = if c.name.is_empty() {
                    json!({})
                } else {
                    json!({"name": c.name})
                };
                let logged_in = client
                    .login(Op::CertLogin, &c.mount_path, &body)
                    .await
                    .map_err(AuthError::Login)?;
                self.cert_not_after.store(not_after, Ordering::Relaxed);
                self.publish_certificate_ttl();
                logged_in
            }
        };
        self.metrics
            .token_ttl_seconds
            .set(i64::try_from(lease.ttl_secs).unwrap_or(i64::MAX));
        Ok(Held {
            token,
            lease,
            since: Instant::now(),
            material,
        })
    }

    /// Sets `certificate_ttl_seconds` from the certificate of the last
    /// successful cert login (0 once expired, and without cert auth).
    fn publish_certificate_ttl(&self) {
        let not_after = self.cert_not_after.load(Ordering::Relaxed);
        if not_after != 0 {
            let left = not_after.saturating_sub(crate::now_unix()).max(0);
            self.metrics.certificate_ttl_seconds.set(left);
        }
    }

    /// Renews or replaces the token once its remaining lease is within
    /// `refresh_window`. Never drops a still-valid token because a renewal
    /// or login failed.
    pub async fn maintain(&self, refresh_window: Duration, increment: Duration) {
        self.publish_certificate_ttl();
        let Some(held) = self.current.read().await.clone() else {
            return;
        };
        if held.material != self.login.fingerprint() {
            self.relogin_after_material_change(&held).await;
            return;
        }
        let Some(remaining) = held.remaining() else {
            return;
        };
        self.metrics
            .token_ttl_seconds
            .set(i64::try_from(remaining.as_secs()).unwrap_or(i64::MAX));
        if remaining > refresh_window {
            return;
        }
        let mut backoff = self.login_lock.lock().await;
        // Someone replaced the token while we waited.
        let replaced = self
            .current
            .read()
            .await
            .as_ref()
            .is_none_or(|h| h.token.expose_secret() != held.token.expose_secret());
        if replaced {
            return;
        }
        // A cert-auth token may be bound to the client certificate, and
        // renew-self is sent without it: refresh such tokens by logging in.
        let renew = held.lease.renewable && !matches!(self.login, Login::Cert(_));
        if renew {
            let renewed = self.bao.token_renew(held.token.expose_secret(), increment).await;
            let status = match &renewed {
                Ok(lease) if lease.ttl_secs > refresh_window.as_secs() => "ok",
                Ok(_) => "exhausted",
                Err(_) => "error",
            };
            self.metrics.auth_renewal.get_or_create(&Status { status }).inc();
            match renewed {
                Ok(lease) if status == "ok" => {
                    tracing::info!(message = "auth.renewal", status, ttl_secs = lease.ttl_secs);
                    self.metrics
                        .token_ttl_seconds
                        .set(i64::try_from(lease.ttl_secs).unwrap_or(i64::MAX));
                    *self.current.write().await = Some(Held {
                        lease,
                        since: Instant::now(),
                        ..held
                    });
                    return;
                }
                Ok(lease) => tracing::warn!(
                    message = "auth.renewal",
                    status,
                    ttl_secs = lease.ttl_secs,
                    detail = "the token reached its maximum TTL; logging in again"
                ),
                Err(e) => tracing::warn!(
                    message = "auth.renewal",
                    status,
                    error_class = e.class.as_str(),
                    error = %e.message
                ),
            }
        }
        if backoff.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        if let Err(e) = self.login_recorded(&mut backoff).await {
            tracing::warn!(
                message = "auth.login",
                remaining_secs = remaining.as_secs(),
                error = %e,
                detail = "keeping the current token until it expires"
            );
        }
    }

    /// The JWT, certificate, PIN or secret files changed since `held` was
    /// obtained: log in with the new material, keeping `held` if that fails.
    async fn relogin_after_material_change(&self, held: &Held) {
        let mut backoff = self.login_lock.lock().await;
        let replaced = self
            .current
            .read()
            .await
            .as_ref()
            .is_none_or(|h| h.token.expose_secret() != held.token.expose_secret());
        if replaced || backoff.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        tracing::info!(message = "auth.material_changed", auth_method = self.login.method());
        if let Err(e) = self.login_recorded(&mut backoff).await {
            tracing::warn!(
                message = "auth.login",
                error = %e,
                detail = "the changed login material was refused; keeping the current token"
            );
        }
    }

    /// Drops `rejected` so the next caller logs in again (OpenBao answered
    /// 403: the token expired, was revoked, or the material was replaced).
    pub async fn invalidate(&self, rejected: &SecretString) {
        let mut current = self.current.write().await;
        if current
            .as_ref()
            .is_some_and(|h| h.token.expose_secret() == rejected.expose_secret())
        {
            *current = None;
        }
    }
}
