//! OpenBao authentication: obtains the token every OpenBao call carries,
//! keeps it only in memory, and replaces it when OpenBao rejects it.
//!
//! `token` (development): the token is read from `auth.token.tokenFile`,
//! validated with `lookup-self`, and re-read when OpenBao answers 403, so a
//! replaced file takes effect without a restart. Logins are single-flight:
//! concurrent callers wait for the one login in progress.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bao_kms_core::config::AuthMethod;
use bao_kms_core::errors::ErrorClass;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, RwLock};

use crate::metrics::{Metrics, Status};
use crate::openbao::{BaoError, Op, OpenBao};

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
    let meta = fs::symlink_metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(err("is a symlink".into()));
    }
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o037 != 0 {
        return Err(err(format!("mode {mode:04o} is unsafe; use 0640 or stricter")));
    }
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
    current: RwLock<Option<SecretString>>,
    login_lock: Mutex<()>,
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
        if let Some(t) = self.current.read().await.as_ref() {
            return Ok(t.clone());
        }
        let _guard = self.login_lock.lock().await;
        // Another caller may have logged in while we waited.
        if let Some(t) = self.current.read().await.as_ref() {
            return Ok(t.clone());
        }
        let result = self.login().await;
        let status = if result.is_ok() { "ok" } else { "error" };
        self.metrics.auth_login.get_or_create(&Status { status }).inc();
        match &result {
            Ok(_) => tracing::info!(message = "auth.login", status, auth_method = "token"),
            Err(e) => {
                tracing::warn!(message = "auth.login", status, auth_method = "token", error_class = e.class().as_str(), error = %e)
            }
        }
        let token = result?;
        *self.current.write().await = Some(token.clone());
        Ok(token)
    }

    async fn login(&self) -> Result<SecretString, AuthError> {
        let token = read_secret_file(&self.token_file)?;
        let ttl = self.bao.token_ttl(token.expose_secret()).await.map_err(|mut e| {
            if e.op == Op::TokenLookupSelf && e.http_status == Some(403) {
                e.message = "OpenBao rejected the token (expired, revoked or lacking auth/token/lookup-self)".into();
            }
            AuthError::Login(e)
        })?;
        self.metrics
            .token_ttl_seconds
            .set(i64::try_from(ttl).unwrap_or(i64::MAX));
        Ok(token)
    }

    /// Drops `rejected` so the next caller logs in again (OpenBao answered
    /// 403: the token expired, was revoked, or the file was replaced).
    pub async fn invalidate(&self, rejected: &SecretString) {
        let mut current = self.current.write().await;
        if current
            .as_ref()
            .is_some_and(|t| t.expose_secret() == rejected.expose_secret())
        {
            *current = None;
        }
    }
}
