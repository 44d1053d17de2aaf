//! OpenBao authentication: obtains the token every OpenBao call carries,
//! keeps it only in memory, and replaces it when OpenBao rejects it.
//!
//! `token` (development): the token is read from `auth.token.tokenFile`,
//! validated with `lookup-self`, and re-read when OpenBao answers 403, so a
//! replaced file takes effect without a restart. Logins are single-flight:
//! concurrent callers wait for the one login in progress.
//!
//! Lifecycle: [`Auth::maintain`] runs before every background probe. Once
//! the remaining lease is inside `auth.loginBeforeTokenExpiry`, a renewable
//! token is renewed with `auth.tokenRenewalIncrement`; a token that cannot
//! renew (or whose renewal fails or no longer extends past the window) is
//! replaced by a fresh login. Until then, and while a login fails, the
//! still-valid token stays in use.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bao_kms_core::config::AuthMethod;
use bao_kms_core::errors::ErrorClass;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, RwLock};

use crate::metrics::{Metrics, Status};
use crate::openbao::{BaoError, Op, OpenBao, TokenInfo};

/// Auth failures. Messages name files and classes, never secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("auth material {path}: {why}")]
    Material { path: String, why: String },
    #[error("login failed: {0}")]
    Login(BaoError),
    #[error("auth.method {0} is not available in this release")]
    Unsupported(&'static str),
}

impl AuthError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Login(e) if e.class != ErrorClass::TransitPolicyDenied => e.class,
            _ => ErrorClass::AuthFailed,
        }
    }
}

/// Checks the configured method can run in this release.
pub fn check_supported(method: &AuthMethod) -> Result<(), AuthError> {
    match method {
        AuthMethod::Token(_) => Ok(()),
        other => Err(AuthError::Unsupported(other.name())),
    }
}

/// Reads a one-line secret file: regular, not a symlink, no group write,
/// no execute, no world access; surrounding whitespace trimmed.
pub fn read_secret_file(path: &Path) -> Result<SecretString, AuthError> {
    let err = |why: String| AuthError::Material {
        path: path.display().to_string(),
        why,
    };
    let meta = crate::fsutil::regular_file(path, 0o037, "0640 or stricter")
        .map_err(err)?
        .ok_or_else(|| err("does not exist".into()))?;
    if meta.len() > 64 * 1024 {
        return Err(err("is larger than 64 KiB".into()));
    }
    let text = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.contains(['\n', '\r']) {
        return Err(err("must hold exactly one non-empty line".into()));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

pub struct Auth {
    bao: OpenBao,
    metrics: Arc<Metrics>,
    token_file: PathBuf,
    current: RwLock<Option<Held>>,
    login_lock: Mutex<()>,
}

/// The token in use and its lease as last reported by OpenBao.
#[derive(Clone)]
struct Held {
    token: SecretString,
    lease: TokenInfo,
    since: Instant,
}

impl Held {
    /// Remaining lifetime now; `None` for a token that never expires.
    fn remaining(&self) -> Option<Duration> {
        (self.lease.ttl_secs > 0).then(|| Duration::from_secs(self.lease.ttl_secs).saturating_sub(self.since.elapsed()))
    }
}

impl Auth {
    pub fn new(method: &AuthMethod, bao: OpenBao, metrics: Arc<Metrics>) -> Result<Self, AuthError> {
        let AuthMethod::Token(token) = method else {
            return Err(AuthError::Unsupported(method.name()));
        };
        Ok(Self {
            bao,
            metrics,
            token_file: token.token_file.clone(),
            current: RwLock::new(None),
            login_lock: Mutex::new(()),
        })
    }

    /// The current token, logging in first if there is none.
    pub async fn token(&self) -> Result<SecretString, AuthError> {
        if let Some(h) = self.current.read().await.as_ref() {
            return Ok(h.token.clone());
        }
        let _guard = self.login_lock.lock().await;
        // Another caller may have logged in while we waited.
        if let Some(h) = self.current.read().await.as_ref() {
            return Ok(h.token.clone());
        }
        Ok(self.login_recorded().await?.token)
    }

    /// Logs in, records the metric and log line, and stores the new token.
    /// Callers hold `login_lock`.
    async fn login_recorded(&self) -> Result<Held, AuthError> {
        let result = self.login().await;
        let status = if result.is_ok() { "ok" } else { "error" };
        self.metrics.auth_login.get_or_create(&Status { status }).inc();
        match &result {
            Ok(h) => tracing::info!(
                message = "auth.login",
                status,
                auth_method = "token",
                ttl_secs = h.lease.ttl_secs
            ),
            Err(e) => tracing::warn!(
                message = "auth.login",
                status,
                auth_method = "token",
                error_class = e.class().as_str(),
                error = %e
            ),
        }
        let held = result?;
        *self.current.write().await = Some(held.clone());
        Ok(held)
    }

    async fn login(&self) -> Result<Held, AuthError> {
        let token = read_secret_file(&self.token_file)?;
        let lease = self.bao.token_lookup(token.expose_secret()).await.map_err(|mut e| {
            if e.op == Op::TokenLookupSelf && e.http_status == Some(403) {
                e.message = "OpenBao rejected the token (expired, revoked or lacking auth/token/lookup-self)".into();
            }
            AuthError::Login(e)
        })?;
        self.metrics
            .token_ttl_seconds
            .set(i64::try_from(lease.ttl_secs).unwrap_or(i64::MAX));
        Ok(Held {
            token,
            lease,
            since: Instant::now(),
        })
    }

    /// Renews or replaces the token once its remaining lease is within
    /// `refresh_window`. Never drops a still-valid token because a renewal
    /// or login failed.
    pub async fn maintain(&self, refresh_window: Duration, increment: Duration) {
        let Some(held) = self.current.read().await.clone() else {
            return;
        };
        let Some(remaining) = held.remaining() else {
            return;
        };
        self.metrics
            .token_ttl_seconds
            .set(i64::try_from(remaining.as_secs()).unwrap_or(i64::MAX));
        if remaining > refresh_window {
            return;
        }
        let _guard = self.login_lock.lock().await;
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
        if held.lease.renewable {
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
                        token: held.token,
                        lease,
                        since: Instant::now(),
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
        if let Err(e) = self.login_recorded().await {
            tracing::warn!(
                message = "auth.login",
                remaining_secs = remaining.as_secs(),
                error = %e,
                detail = "keeping the current token until it expires"
            );
        }
    }

    /// Drops `rejected` so the next caller logs in again (OpenBao answered
    /// 403: the token expired, was revoked, or the file was replaced).
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
