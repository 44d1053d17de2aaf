//! The OpenBao HTTP API as bytes: the request bodies the provider sends, the
//! parsers of every answer it reads, the classification of failed answers
//! into [`ErrorClass`], and the Transit ciphertext version rule
//! (`vault:v<N>:`). The shell (`provider/src/openbao.rs`) only moves these
//! bytes over TLS; every decision about them is here, on values, with
//! known-answer tests.
//!
//! Secrets: request bodies that carry plaintext and answers that carry
//! plaintext or a client token are returned in [`Zeroizing`] buffers. No
//! error message built here contains a body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::errors::ErrorClass;
use crate::transit::{KeyMetadata, parse_key_metadata};

mod health;
pub use health::{Health, HealthState, is_health_answer, parse_health};

/// What a request was for: the `operation` metric label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    TransitMetadataRead,
    TransitDisableUpsertRead,
    TransitEncrypt,
    TransitDecrypt,
    /// Transit decrypt with `batch_input`.
    TransitDecryptBatch,
    TokenLookupSelf,
    TokenRenewSelf,
    JwtLogin,
    AppRoleLogin,
    CertLogin,
    CapabilitiesSelf,
    OpenBaoHealth,
    MountRead,
}

impl Op {
    /// A login: its 400/401/403 answers are authentication failures.
    pub fn is_login(self) -> bool {
        matches!(self, Self::JwtLogin | Self::AppRoleLogin | Self::CertLogin)
    }

    /// Part of a login or renewal: bounded by `auth.loginTimeout` instead of
    /// `openbao.timeout` (the token file's login is a `lookup-self`).
    pub fn bounded_by_login_timeout(self) -> bool {
        self.is_login() || matches!(self, Self::TokenLookupSelf | Self::TokenRenewSelf)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TransitMetadataRead => "transit_metadata_read",
            Self::TransitDisableUpsertRead => "transit_disable_upsert_read",
            Self::TransitEncrypt => "transit_encrypt",
            Self::TransitDecrypt => "transit_decrypt",
            Self::TransitDecryptBatch => "transit_batch_decrypt",
            Self::TokenLookupSelf => "token_lookup_self",
            Self::TokenRenewSelf => "token_renew_self",
            Self::JwtLogin => "jwt_login",
            Self::AppRoleLogin => "approle_login",
            Self::CertLogin => "cert_login",
            Self::CapabilitiesSelf => "capabilities_self",
            Self::OpenBaoHealth => "openbao_health",
            Self::MountRead => "mount_read",
        }
    }
}

/// An answer that breaks what the API promises (or names the wrong kind of
/// mount): a class and a message without any body bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    pub class: ErrorClass,
    pub message: String,
}

impl WireError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::InvalidResponse,
            message: message.into(),
        }
    }
}

/// Caps on answer bodies read into memory.
pub const ERROR_BODY_LIMIT: usize = 64 * 1024;
pub const METADATA_BODY_LIMIT: usize = 4 * 1024 * 1024;
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// How many characters of OpenBao's own error text a message keeps.
const ERROR_TEXT_CHARS: usize = 300;

/// A path segment (the key name, a mount) escaped once.
pub fn escape_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `<mount>/<action>/<key>` relative to `/v1/`.
pub fn transit_path(mount_path: &str, action: &str, key_name: &str) -> String {
    format!("{}/{action}/{}", mount_path.trim_matches('/'), escape_segment(key_name))
}

/// `<mount>/config/keys`.
pub fn transit_config_path(mount_path: &str) -> String {
    format!("{}/config/keys", mount_path.trim_matches('/'))
}

/// `sys/internal/ui/mounts/<mount>`.
pub fn mount_path(mount_path: &str) -> String {
    format!("sys/internal/ui/mounts/{}", mount_path.trim_matches('/'))
}

/// `sys/health`, answered by standbys too.
pub const HEALTH_PATH: &str = "sys/health?standbyok=true&perfstandbyok=true";

/// Whether a request carries `X-Vault-Namespace`: `sys/health` lives in the
/// root namespace; everything else is namespace-relative.
pub fn namespaced(op: Op) -> bool {
    op != Op::OpenBaoHealth
}

/// The Transit encrypt body: base64 plaintext, base64 AAD as
/// `associated_data`, and the explicit `key_version` (never "latest").
pub fn encrypt_body(plaintext: &[u8], aad: &[u8], key_version: u64) -> Zeroizing<Vec<u8>> {
    let encoded = Zeroizing::new(STANDARD.encode(plaintext));
    let mut body = Vec::with_capacity(encoded.len() + aad.len() * 2 + 64);
    body.extend_from_slice(b"{\"plaintext\":\"");
    body.extend_from_slice(encoded.as_bytes());
    body.extend_from_slice(b"\",\"associated_data\":\"");
    body.extend_from_slice(STANDARD.encode(aad).as_bytes());
    body.extend_from_slice(format!("\",\"key_version\":{key_version}}}").as_bytes());
    Zeroizing::new(body)
}

/// The Transit decrypt body. `ciphertext` is a Transit ciphertext string
/// that passed [`ciphertext_version`] (so it needs no JSON escaping, but it
/// is escaped anyway by the encoder).
pub fn decrypt_body(ciphertext: &str, aad: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(ciphertext.len() + aad.len() * 2 + 48);
    body.extend_from_slice(b"{\"ciphertext\":");
    body.extend_from_slice(json_string(ciphertext).as_bytes());
    body.extend_from_slice(b",\"associated_data\":\"");
    body.extend_from_slice(STANDARD.encode(aad).as_bytes());
    body.extend_from_slice(b"\"}");
    body
}

/// The Transit decrypt body of a batch: one `batch_input` item per
/// ciphertext with its own `associated_data`, each item exactly the fields
/// [`decrypt_body`] sends for that ciphertext alone (no `context`, no
/// `nonce`), in order. The key is the one in the URL, so a batch never mixes
/// keys.
pub fn decrypt_batch_body<'a>(items: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut body = Vec::with_capacity(1024);
    body.extend_from_slice(b"{\"batch_input\":[");
    for (i, (ciphertext, aad)) in items.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&decrypt_body(ciphertext, aad));
    }
    body.extend_from_slice(b"]}");
    body
}

/// One item of a batch decrypt answer: the plaintext, or `None` when
/// Transit reported an error for that item (its own error is not used: the
/// caller asks for that item alone, so it gets exactly the single answer).
pub type BatchItem = Option<Zeroizing<Vec<u8>>>;

#[derive(serde::Deserialize)]
struct BatchAnswer {
    data: BatchData,
}

#[derive(serde::Deserialize)]
struct BatchData {
    batch_results: Vec<BatchResult>,
}

#[derive(serde::Deserialize)]
struct BatchResult {
    #[serde(default)]
    plaintext: Option<Zeroizing<String>>,
    #[serde(default)]
    error: Option<String>,
}

/// The Transit batch decrypt answer (HTTP 200, or 400 when some item
/// failed): `data.batch_results` in input order, exactly `expected` of
/// them. An item with an `error`, or without a base64 `plaintext`, is
/// `None`. Anything else (no `batch_results`, another count) is an
/// `invalid_response`: the caller falls back to single calls.
pub fn parse_decrypt_batch(body: &[u8], expected: usize) -> Result<Vec<BatchItem>, WireError> {
    let parsed: BatchAnswer =
        serde_json::from_slice(body).map_err(|_| WireError::invalid("data.batch_results missing"))?;
    if parsed.data.batch_results.len() != expected {
        return Err(WireError::invalid(format!(
            "data.batch_results has {} items for {expected} inputs",
            parsed.data.batch_results.len()
        )));
    }
    Ok(parsed
        .data
        .batch_results
        .into_iter()
        .map(|r| match (r.error.as_deref(), r.plaintext) {
            (None | Some(""), Some(p)) => STANDARD.decode(p.as_bytes()).ok().map(Zeroizing::new),
            _ => None,
        })
        .collect())
}

fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// The Transit version a ciphertext string names: `vault:v<N>:<base64>`
/// with N a positive decimal without leading zeros.
pub fn ciphertext_version(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("vault:v")?;
    let (digits, payload) = rest.split_once(':')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if payload.is_empty() {
        return None;
    }
    digits.parse().ok().filter(|v| *v > 0)
}

/// The Transit encrypt answer: the ciphertext string, which must carry the
/// requested version (in `data.key_version` when present, and in its
/// `vault:v<N>:` prefix).
pub fn parse_encrypt(body: &[u8], key_version: u64) -> Result<String, WireError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| WireError::invalid("response is not JSON"))?;
    let returned = v.pointer("/data/key_version").and_then(Value::as_u64).unwrap_or(0);
    if returned != 0 && returned != key_version {
        return Err(WireError::invalid(
            "Transit encrypted with a different key version than requested",
        ));
    }
    let ciphertext = v
        .pointer("/data/ciphertext")
        .and_then(Value::as_str)
        .ok_or_else(|| WireError::invalid("data.ciphertext missing"))?;
    if ciphertext_version(ciphertext) != Some(key_version) {
        return Err(WireError::invalid(
            "ciphertext does not carry the requested key version",
        ));
    }
    Ok(ciphertext.to_owned())
}

/// Transit decrypt answer; the plaintext is wiped when dropped.
#[derive(serde::Deserialize)]
struct DecryptAnswer {
    data: DecryptData,
}

#[derive(serde::Deserialize)]
struct DecryptData {
    plaintext: Zeroizing<String>,
}

/// The Transit decrypt answer: the plaintext bytes.
pub fn parse_decrypt(body: &[u8]) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let parsed: DecryptAnswer =
        serde_json::from_slice(body).map_err(|_| WireError::invalid("data.plaintext missing"))?;
    STANDARD
        .decode(parsed.data.plaintext.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| WireError::invalid("data.plaintext is not base64"))
}

fn json(body: &[u8]) -> Result<Value, WireError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|_| WireError::invalid("response is not JSON"))
}

/// The Transit key read answer.
pub fn parse_key_metadata_answer(body: &[u8]) -> Result<KeyMetadata, WireError> {
    let v = json(body)?;
    parse_key_metadata(v.get("data").unwrap_or(&Value::Null)).map_err(|e| WireError::invalid(e.to_string()))
}

/// `<mount>/config/keys` → `disable_upsert`.
pub fn parse_disable_upsert(body: &[u8]) -> Result<bool, WireError> {
    json(body)?
        .pointer("/data/disable_upsert")
        .and_then(Value::as_bool)
        .ok_or_else(|| WireError::invalid("data.disable_upsert missing"))
}

/// `sys/health` → the OpenBao `cluster_id` of a serving node.
pub fn parse_cluster_id(body: &[u8]) -> Result<String, WireError> {
    parse_health(body)?.cluster_id().map(str::to_owned)
}

/// The Transit mount's identity: what the registry pins at bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountIdentity {
    pub accessor: String,
    pub uuid: String,
}

/// `sys/internal/ui/mounts/<mount>` → accessor and uuid of a Transit mount.
pub fn parse_mount_identity(body: &[u8], mount_path: &str) -> Result<MountIdentity, WireError> {
    let v = json(body)?;
    let field = |name| v.pointer(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (accessor, uuid, kind) = (field("/data/accessor"), field("/data/uuid"), field("/data/type"));
    if accessor.is_empty() || kind != "transit" {
        return Err(WireError {
            class: ErrorClass::TransitKeyMissing,
            message: format!("mount {mount_path} is not a Transit mount"),
        });
    }
    Ok(MountIdentity { accessor, uuid })
}

/// Lease facts of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLease {
    /// Remaining lifetime; 0 means the token does not expire.
    pub ttl_secs: u64,
    pub renewable: bool,
}

/// Login answer; the client token is wiped when dropped.
#[derive(serde::Deserialize)]
struct LoginAnswer {
    auth: LoginAuth,
}

#[derive(serde::Deserialize)]
struct LoginAuth {
    client_token: Zeroizing<String>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

/// A login answer: the client token and its lease.
pub fn parse_login(body: &[u8]) -> Result<(Zeroizing<String>, TokenLease), WireError> {
    let answer: LoginAnswer =
        serde_json::from_slice(body).map_err(|_| WireError::invalid("login answer has no auth.client_token"))?;
    if answer.auth.client_token.is_empty() {
        return Err(WireError::invalid("login answer has an empty client token"));
    }
    let lease = TokenLease {
        ttl_secs: answer.auth.lease_duration,
        renewable: answer.auth.renewable,
    };
    Ok((answer.auth.client_token, lease))
}

/// `auth/token/lookup-self` → the token's remaining lease.
pub fn parse_token_lookup(body: &[u8]) -> Result<TokenLease, WireError> {
    let v = json(body)?;
    Ok(TokenLease {
        ttl_secs: v.pointer("/data/ttl").and_then(Value::as_u64).unwrap_or(0),
        renewable: v.pointer("/data/renewable").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The `auth/token/renew-self` body.
pub fn renew_body(increment_secs: u64) -> Vec<u8> {
    format!("{{\"increment\":\"{increment_secs}s\"}}").into_bytes()
}

/// `auth/token/renew-self` → the new lease.
pub fn parse_token_renew(body: &[u8]) -> Result<TokenLease, WireError> {
    let v = json(body)?;
    Ok(TokenLease {
        ttl_secs: v.pointer("/auth/lease_duration").and_then(Value::as_u64).unwrap_or(0),
        renewable: v.pointer("/auth/renewable").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The `sys/capabilities-self` body.
pub fn capabilities_body(paths: &[String]) -> Vec<u8> {
    json!({ "paths": paths }).to_string().into_bytes()
}

/// `sys/capabilities-self` → each path's capabilities, in the asked order.
pub fn parse_capabilities(body: &[u8], paths: &[String]) -> Result<Vec<(String, Vec<String>)>, WireError> {
    let v = json(body)?;
    let data = v.get("data").unwrap_or(&v);
    paths
        .iter()
        .map(|p| {
            let caps = data
                .get(p.as_str())
                .and_then(Value::as_array)
                .ok_or_else(|| WireError::invalid(format!("no answer for path {p}")))?;
            Ok((
                p.clone(),
                caps.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            ))
        })
        .collect()
}

/// Longest `request_id` kept: OpenBao's are UUIDs (36 characters).
const REQUEST_ID_MAX_CHARS: usize = 64;

/// The top-level `request_id` of an answer, the handle OpenBao's audit log
/// records for the same request. Only that field is decoded: every other
/// value (plaintext, a client token) is skipped without being copied. An id
/// longer than 64 characters or with anything but ASCII letters, digits,
/// `-` and `_` is ignored, so a log line never carries answer bytes.
pub fn request_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithRequestId {
        #[serde(default)]
        request_id: Option<String>,
    }
    let id = serde_json::from_slice::<WithRequestId>(body).ok()?.request_id?;
    let well_formed = !id.is_empty()
        && id.len() <= REQUEST_ID_MAX_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    well_formed.then_some(id)
}

/// OpenBao's error text of a failed answer (`errors`, joined, at most 300
/// characters), or `HTTP <status>` when it gave none.
pub fn error_text(http_status: u16, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let errors = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .unwrap_or_default();
    let message: String = errors.chars().take(ERROR_TEXT_CHARS).collect();
    if message.is_empty() {
        format!("HTTP {http_status}")
    } else {
        message
    }
}

/// The class of a failed answer, from the operation, the HTTP status and
/// OpenBao's error text.
pub fn classify_status(op: Op, http_status: u16, message: &str) -> ErrorClass {
    match http_status {
        400 | 401 | 403 if op.is_login() => ErrorClass::AuthFailed,
        400 if message.contains("message authentication failed") => ErrorClass::IntegrityFailed,
        // The key's state, not the request: Transit answers these with 400.
        400 if message.contains("encryption key not found") => ErrorClass::TransitKeyMissing,
        400 if message.contains("version is disallowed by policy") || message.contains("version is too new") => {
            ErrorClass::TransitKeyVersionRejected
        }
        400 => ErrorClass::TransitBadRequest,
        401 => ErrorClass::AuthFailed,
        403 if matches!(op, Op::TokenLookupSelf | Op::TokenRenewSelf) => ErrorClass::AuthFailed,
        403 => ErrorClass::TransitPolicyDenied,
        404 if matches!(
            op,
            Op::TransitMetadataRead | Op::TransitEncrypt | Op::TransitDecrypt | Op::TransitDecryptBatch | Op::MountRead
        ) =>
        {
            ErrorClass::TransitKeyMissing
        }
        429 => ErrorClass::OpenBaoRateLimited,
        503 if message.to_ascii_lowercase().contains("sealed") => ErrorClass::OpenBaoSealed,
        _ => ErrorClass::OpenBaoUnavailable,
    }
}

/// Whether a failed answer is still a batch answer: Transit answers a
/// batch in which some item failed with HTTP 400 (500 for internal item
/// errors) and the per-item results in the body.
pub fn is_batch_answer(op: Op, http_status: u16, body: &[u8]) -> bool {
    op == Op::TransitDecryptBatch
        && matches!(http_status, 400 | 500)
        && body.windows(15).any(|w| w == b"\"batch_results\"")
}

/// The `status` label of `openbao_kms_openbao_requests_total` for a class.
pub fn request_status_label(class: Option<ErrorClass>) -> &'static str {
    match class {
        None => "ok",
        Some(ErrorClass::OpenBaoTlsFailed) => "tls_failed",
        Some(ErrorClass::OpenBaoDnsFailed) => "dns_failed",
        Some(ErrorClass::OpenBaoConnectionFailed) => "connection_failed",
        Some(_) => "error",
    }
}

#[cfg(test)]
mod tests;
