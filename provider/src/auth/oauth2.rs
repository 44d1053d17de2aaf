//! The JWT of a `jwt` login from an OAuth2 client-credentials grant
//! (`auth.jwt.source: oauth2`, RFC 6749 section 4.4).
//!
//! One `POST` of `grant_type=client_credentials` (with `scope`, `audience`
//! and repeated RFC 8707 `resource` parameters when configured) to the
//! `https://` token endpoint, the client authenticated by
//! `client_secret_basic` (HTTP Basic over the form-encoded id and secret)
//! or `client_secret_post` (both in the body), never falling back from one
//! to the other. The secret file is re-read before every grant, so a secret
//! rotated by an atomic rename takes effect without a restart. No redirects
//! are followed, nothing is retried here (the login backoff applies).
//!
//! The answer must be HTTP 200 JSON with `access_token` and a Bearer
//! `token_type`; the access token must be a compact JWT with `exp` that
//! passes the same local checks as a JWT file (`expectedIssuer`,
//! `expectedAudience`, `minRemainingTtl`, ...). Its lifetime is the shorter
//! of `exp` and `expires_in`. 429 and 5xx answers and transport failures
//! are `oauth2_unavailable`, other answers `oauth2_rejected`, an answer
//! that breaks the rules `oauth2_invalid_response`.
//!
//! The token is cached and reused for later logins until its remaining
//! lifetime falls to `minRemainingTtl` plus [`REUSE_MARGIN`]; a login that
//! OpenBao refuses discards it, so the next login asks for a new one.
//!
//! Plain `reqwest` rather than the `oauth2` crate: the grant is one form
//! POST; the crate would add its own HTTP client plumbing and would still
//! not check the JWT claims, parse `expires_in` against `exp` or classify
//! 429/5xx the way the login backoff needs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bao_kms_core::config::{ClientAuthMethod, JwtAuth, OAuth2Source};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::RootCertStore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::{AuthError, read_secret_file};
use super::jwt_check::check_jwt;

/// Reuse stops this long before the token reaches `minRemainingTtl`.
pub const REUSE_MARGIN: Duration = Duration::from_secs(30);

/// At most this much of an error answer is read for its `error` fields.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

fn failure(reason: &'static str, why: impl Into<String>) -> AuthError {
    AuthError::OAuth2 {
        reason,
        why: why.into(),
    }
}

struct Cached {
    token: SecretString,
    /// Unix seconds when the token stops being usable (shorter of `exp`
    /// and `expires_in`).
    expires_unix: i64,
}

pub struct TokenEndpoint {
    src: OAuth2Source,
    http: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
}

/// An error and its sources, joined (reqwest's own text omits the cause).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// A short printable excerpt of a field the endpoint sent.
fn excerpt(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

impl TokenEndpoint {
    /// The client for `src`: its CA bundle (or the system's roots) is read
    /// now, so a change to the endpoint or CA needs a restart.
    pub fn new(src: &OAuth2Source, timeout: Duration) -> Result<Self, AuthError> {
        let roots = match &src.ca_cert_file {
            Some(path) => crate::openbao::load_roots(path).map_err(|e| failure("ca_unusable", e.to_string()))?,
            None => {
                let mut roots = RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    // A system certificate rustls cannot use is skipped, as
                    // every TLS client does.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(failure(
                        "ca_unusable",
                        "no system CA certificates found; set auth.jwt.oauth2.caCertFile",
                    ));
                }
                roots
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| failure("client_build", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| failure("client_build", e.to_string()))?;
        Ok(Self {
            src: src.clone(),
            http,
            cached: Mutex::new(None),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // A poisoned lock only means a caller panicked; the Option is whole.
        self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A JWT for the next login: the cached one while it has more than
    /// `minRemainingTtl` + [`REUSE_MARGIN`] left, else a new grant.
    pub async fn jwt(&self, cfg: &JwtAuth, now_unix: i64) -> Result<SecretString, AuthError> {
        let keep = i64::try_from((cfg.min_remaining_ttl + REUSE_MARGIN).as_secs()).unwrap_or(i64::MAX);
        if let Some(c) = self.cache().as_ref()
            && c.expires_unix - now_unix > keep
        {
            return Ok(c.token.clone());
        }
        let (token, expires_unix) = self.grant(cfg, now_unix).await?;
        *self.cache() = Some(Cached {
            token: token.clone(),
            expires_unix,
        });
        Ok(token)
    }

    /// Forgets the cached token (OpenBao refused a login with it).
    pub fn discard(&self) {
        *self.cache() = None;
    }

    async fn grant(&self, cfg: &JwtAuth, now_unix: i64) -> Result<(SecretString, i64), AuthError> {
        let secret = read_secret_file(&self.src.client_secret_file)?;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        let scope = self.src.scopes.join(" ");
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        if let Some(audience) = &self.src.audience {
            form.push(("audience", audience));
        }
        for resource in &self.src.resources {
            form.push(("resource", resource));
        }
        let mut request = self.http.post(&self.src.token_url);
        match self.src.auth_method {
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.src.client_id));
                form.push(("client_secret", secret.expose_secret()));
            }
            ClientAuthMethod::ClientSecretBasic => {
                // RFC 6749 section 2.3.1: both parts form-encoded first.
                let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair =
                    zeroize::Zeroizing::new(format!("{}:{}", enc(&self.src.client_id), enc(secret.expose_secret())));
                let header = zeroize::Zeroizing::new(format!("Basic {}", STANDARD.encode(pair.as_bytes())));
                request = request.header(reqwest::header::AUTHORIZATION, header.as_str());
            }
        }
        let body = zeroize::Zeroizing::new(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&form)
                .finish(),
        );
        drop(form);
        let response = request
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                let what = if e.is_timeout() { "timed out" } else { "request failed" };
                failure("oauth2_unavailable", format!("{what}: {}", chain(&e)))
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| failure("oauth2_unavailable", format!("reading the answer: {e}")))?;
        if status != reqwest::StatusCode::OK {
            let detail = serde_json::from_slice::<ErrorAnswer>(&bytes[..bytes.len().min(MAX_ANSWER_BYTES)])
                .ok()
                .map(|a| {
                    let mut d = a.error.map(|e| excerpt(&e)).unwrap_or_default();
                    if let Some(desc) = a.error_description {
                        d = format!("{d} ({})", excerpt(&desc));
                    }
                    d
                })
                .filter(|d| !d.is_empty())
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            let reason = if status.as_u16() == 429 || status.is_server_error() {
                "oauth2_unavailable"
            } else {
                "oauth2_rejected"
            };
            let redirect = if status.is_redirection() {
                " (redirects are not followed; set tokenUrl to the final endpoint)"
            } else {
                ""
            };
            return Err(failure(reason, format!("HTTP {}{detail}{redirect}", status.as_u16())));
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| failure("oauth2_invalid_response", format!("not a JSON token answer: {e}")))?;
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .map(SecretString::from)
            .ok_or_else(|| failure("oauth2_invalid_response", "no access_token"))?;
        match answer.token_type.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("bearer") => {}
            Some(t) => {
                return Err(failure(
                    "oauth2_invalid_response",
                    format!("token_type {:?} is not Bearer", excerpt(t)),
                ));
            }
            None => return Err(failure("oauth2_invalid_response", "no token_type")),
        }
        let expires_in = match &answer.expires_in {
            None => None,
            Some(v) => Some(
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|s| *s > 0)
                    .ok_or_else(|| failure("oauth2_invalid_response", "expires_in is not a positive number"))?,
            ),
        };
        let claims = check_jwt(token.expose_secret(), cfg, now_unix).map_err(|e| match e {
            AuthError::Material { why, .. } => failure("oauth2_invalid_response", format!("access_token {why}")),
            other => failure("oauth2_invalid_response", format!("access_token: {other}")),
        })?;
        let exp = claims
            .exp
            .ok_or_else(|| failure("oauth2_invalid_response", "access_token has no exp claim"))?;
        let expires_unix = expires_in.map_or(exp, |s| exp.min(now_unix.saturating_add(s)));
        if expires_unix - now_unix <= i64::try_from(cfg.min_remaining_ttl.as_secs()).unwrap_or(i64::MAX) {
            return Err(failure(
                "oauth2_invalid_response",
                format!(
                    "the token endpoint's token expires in {}s (expires_in), not more than auth.jwt.minRemainingTtl",
                    expires_unix - now_unix
                ),
            ));
        }
        Ok((token, expires_unix))
    }
}
