//! Auth failures and the one way auth material is read from disk.

use std::fs;
use std::path::Path;

use bao_kms_core::errors::ErrorClass;
use bao_kms_core::jwt;
use secrecy::SecretString;

use crate::openbao::BaoError;

/// Auth failures. Messages name files and classes, never secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("auth material {path}: {why}")]
    Material { path: String, why: String },
    #[error("login failed: {0}")]
    Login(BaoError),
    #[error("{0}")]
    Jwt(jwt::JwtProblem),
    #[error("client certificate {path}: {why}")]
    Certificate { path: String, why: String },
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    /// The OAuth2 token endpoint (`auth.jwt.source: oauth2`); `reason` is
    /// `oauth2_unavailable`, `oauth2_rejected`, `oauth2_invalid_response`,
    /// `ca_unusable` or `client_build`.
    #[error("OAuth2 token endpoint: {reason}: {why}")]
    OAuth2 { reason: &'static str, why: String },
    #[error("PKCS#11: {0}")]
    KeyMismatch(String),
    #[error(
        "login did not finish within auth.loginTimeout ({}s): OpenBao, the token endpoint or the PKCS#11 token did not answer in time",
        .0.as_secs_f64()
    )]
    Timeout(std::time::Duration),
    #[error("{last} (next login attempt in {wait_ms} ms)")]
    BackingOff { last: Box<AuthError>, wait_ms: u64 },
}

impl AuthError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Login(e) if e.class != ErrorClass::TransitPolicyDenied => e.class,
            Self::BackingOff { last, .. } => last.class(),
            Self::Timeout(_) => ErrorClass::Timeout,
            _ => ErrorClass::AuthFailed,
        }
    }
}

/// Reads a one-line secret file: regular, not a symlink, no group write,
/// no execute, no world access; surrounding whitespace trimmed.
pub fn read_secret_file(path: &Path) -> Result<SecretString, AuthError> {
    let err = |why: String| AuthError::Material {
        path: path.display().to_string(),
        why,
    };
    crate::fsutil::credential_file(path).map_err(err)?;
    let text = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.contains(['\n', '\r']) {
        return Err(err("must hold exactly one non-empty line".into()));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}
