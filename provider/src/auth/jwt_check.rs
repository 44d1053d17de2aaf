//! The local checks of a JWT before a `jwt` login, for a JWT from a file
//! and for one from the OAuth2 token endpoint alike.

use bao_kms_core::config::{JwtAuth, JwtSource};
use bao_kms_core::jwt;

use super::error::AuthError;

/// Decodes the JWT's claims (no signature check: OpenBao verifies it) and
/// applies the local checks.
pub fn check_jwt(token: &str, cfg: &JwtAuth, now_unix: i64) -> Result<jwt::Claims, AuthError> {
    let data = jsonwebtoken::dangerous::insecure_decode::<jwt::Claims>(token).map_err(|e| AuthError::Material {
        path: match &cfg.source {
            JwtSource::File { jwt_file } => jwt_file.display().to_string(),
            JwtSource::OAuth2(o) => format!("access token from {}", o.token_url),
        },
        why: format!("is not a compact JWT with readable claims ({e})"),
    })?;
    let expectations = jwt::Expectations {
        min_remaining_ttl_secs: cfg.min_remaining_ttl.as_secs() as i64,
        clock_skew_leeway_secs: cfg.clock_skew_leeway.as_secs() as i64,
        issuer: cfg.expected_issuer.clone(),
        audience: cfg.expected_audience.clone(),
        subject: cfg.expected_subject.clone(),
    };
    jwt::check(&data.claims, &expectations, now_unix).map_err(AuthError::Jwt)?;
    Ok(data.claims)
}
