//! HTTPS client for OpenBao: Transit encrypt/decrypt/metadata, the identity
//! facts pinned at bootstrap, and token lookup.
//!
//! TLS is always on: the configured CA bundle is the only trust root, the
//! server certificate is verified against `openbao.tlsServerName`, TLS 1.2+.
//! Redirects are refused (HA must forward to the active node), bodies are
//! capped by reading one byte past the limit, and every request has the
//! `openbao.timeout` deadline. Errors carry a class and a message that never
//! contains a token, plaintext or ciphertext.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bao_kms_core::errors::ErrorClass;
use bao_kms_core::transit::{KeyMetadata, parse_key_metadata};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use secrecy::SecretString;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::metrics::{Metrics, Operation as OpLabel, OperationStatus};

/// Caps on OpenBao response bodies read into memory.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
const METADATA_BODY_LIMIT: usize = 4 * 1024 * 1024;
const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// What a request was for: the `operation` metric label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    TransitMetadataRead,
    TransitDisableUpsertRead,
    TransitEncrypt,
    TransitDecrypt,
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

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TransitMetadataRead => "transit_metadata_read",
            Self::TransitDisableUpsertRead => "transit_disable_upsert_read",
            Self::TransitEncrypt => "transit_encrypt",
            Self::TransitDecrypt => "transit_decrypt",
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

/// A failed OpenBao request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} failed ({class}): {message}", op = .op.as_str(), class = .class.as_str())]
pub struct BaoError {
    pub class: ErrorClass,
    pub op: Op,
    pub http_status: Option<u16>,
    pub message: String,
}

impl BaoError {
    /// OpenBao answered 200 with something that is not what the API promises.
    fn invalid_response(op: Op, message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::InvalidResponse,
            op,
            http_status: Some(200),
            message: message.into(),
        }
    }
}

/// Client construction failures (configuration problems).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("openbao.caCertFile {path}: {why}")]
    CaFile { path: String, why: String },
    #[error("openbao.tlsServerName {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("building the HTTPS client: {0}")]
    Build(String),
}

/// Verifies the server certificate against the configured name instead of
/// the URL host, so `openbao.address` may be an IP or a load balancer name.
#[derive(Debug)]
struct PinnedNameVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for PinnedNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _url_host: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Settings the client needs from the configuration.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub address: String,
    pub namespace: String,
    pub ca_cert_file: std::path::PathBuf,
    pub tls_server_name: String,
    pub timeout: Duration,
    pub mount_path: String,
    pub key_name: String,
}

impl ClientSettings {
    pub fn from_config(cfg: &bao_kms_core::config::Config) -> Self {
        Self {
            address: cfg.openbao.address.clone(),
            namespace: cfg.openbao.namespace.clone(),
            ca_cert_file: cfg.openbao.ca_cert_file.clone(),
            tls_server_name: cfg.openbao.tls_server_name.clone(),
            timeout: cfg.openbao.timeout,
            mount_path: cfg.transit.mount_path.clone(),
            key_name: cfg.transit.key_name.clone(),
        }
    }
}

/// Reads the PEM bundle into a root store; every certificate must parse.
pub fn load_roots(path: &Path) -> Result<RootCertStore, ClientError> {
    let err = |why: String| ClientError::CaFile {
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let mut count = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| err(format!("invalid PEM: {e}")))?;
        roots.add(cert).map_err(|e| err(format!("invalid certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(err("contains no CERTIFICATE block".into()));
    }
    Ok(roots)
}

/// The TLS client certificate a connection presents.
pub enum ClientIdentity {
    None,
    /// Certificate chain and a private key held in memory (file source).
    Key {
        chain: Vec<CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    },
    /// A resolver whose key signs elsewhere (PKCS#11).
    Resolver(Arc<dyn rustls::client::ResolvesClientCert>),
}

fn tls_config(settings: &ClientSettings, identity: ClientIdentity) -> Result<rustls::ClientConfig, ClientError> {
    let roots = load_roots(&settings.ca_cert_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))?;
    let name = ServerName::try_from(settings.tls_server_name.clone())
        .map_err(|_| ClientError::ServerName(settings.tls_server_name.clone()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Build(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedNameVerifier { inner, name }));
    let mut tls = match identity {
        ClientIdentity::None => builder.with_no_client_auth(),
        ClientIdentity::Key { chain, key } => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Build(format!("client certificate: {e}")))?,
        ClientIdentity::Resolver(r) => builder.with_client_cert_resolver(r),
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

fn http_client(settings: &ClientSettings, identity: ClientIdentity) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(settings, identity)?)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// The OpenBao client. Cheap to clone; connections are pooled and reused.
#[derive(Clone)]
pub struct OpenBao {
    http: reqwest::Client,
    base: String,
    settings: Arc<ClientSettings>,
    metrics: Arc<Metrics>,
}

/// Transit key path segment: the key name, escaped once.
fn escape_segment(s: &str) -> String {
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

impl OpenBao {
    pub fn new(settings: ClientSettings, metrics: Arc<Metrics>) -> Result<Self, ClientError> {
        let http = http_client(&settings, ClientIdentity::None)?;
        let base = format!("{}/v1/", settings.address.trim_end_matches('/'));
        Ok(Self {
            http,
            base,
            settings: Arc::new(settings),
            metrics,
        })
    }

    /// The same client presenting a TLS client certificate: for cert login
    /// over mTLS. Other requests keep using the plain client.
    pub fn with_identity(&self, identity: ClientIdentity) -> Result<Self, ClientError> {
        Ok(Self {
            http: http_client(&self.settings, identity)?,
            ..self.clone()
        })
    }

    fn transit_path(&self, action: &str) -> String {
        format!(
            "{}/{action}/{}",
            self.settings.mount_path.trim_matches('/'),
            escape_segment(&self.settings.key_name)
        )
    }

    /// One request: headers, deadline, body cap, classification, metrics.
    async fn call(
        &self,
        op: Op,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        limit: usize,
    ) -> Result<Zeroizing<Vec<u8>>, BaoError> {
        let started = Instant::now();
        let result = self.call_inner(op, method, path, token, body, limit).await;
        let status = match &result {
            Ok(_) => "ok",
            Err(e) => match e.class {
                ErrorClass::OpenBaoTlsFailed => "tls_failed",
                ErrorClass::OpenBaoDnsFailed => "dns_failed",
                ErrorClass::OpenBaoConnectionFailed => "connection_failed",
                _ => "error",
            },
        };
        let operation = op.as_str();
        self.metrics
            .openbao_requests
            .get_or_create(&OperationStatus { operation, status })
            .inc();
        self.metrics
            .openbao_duration
            .get_or_create(&OpLabel { operation })
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => tracing::debug!(
                message = "openbao.request",
                openbao_operation = operation,
                status,
                duration_ms = started.elapsed().as_millis() as u64
            ),
            Err(e) => {
                tracing::warn!(message = "openbao.request", openbao_operation = operation, status, error_class = e.class.as_str(), http_status = e.http_status, error = %e.message, duration_ms = started.elapsed().as_millis() as u64)
            }
        }
        result
    }

    async fn call_inner(
        &self,
        op: Op,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        limit: usize,
    ) -> Result<Zeroizing<Vec<u8>>, BaoError> {
        let fail = |class, http_status, message: String| BaoError {
            class,
            op,
            http_status,
            message,
        };
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        // sys/health lives in the root namespace; everything else is namespace-relative.
        if !self.settings.namespace.is_empty() && op != Op::OpenBaoHealth {
            req = req.header("X-Vault-Namespace", &self.settings.namespace);
        }
        req = req.header("X-Vault-Request", "true");
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| fail(classify_transport(&e), None, transport_message(&e)))?;
        let status = resp.status();
        let cap = if status.is_success() { limit } else { ERROR_BODY_LIMIT };
        let mut bytes = Zeroizing::new(Vec::new());
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > cap {
                        return Err(fail(
                            ErrorClass::OpenBaoUnavailable,
                            Some(status.as_u16()),
                            format!("response body exceeds {cap} bytes"),
                        ));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(fail(
                        classify_transport(&e),
                        Some(status.as_u16()),
                        transport_message(&e),
                    ));
                }
            }
        }
        if status.is_redirection() {
            return Err(fail(
                ErrorClass::OpenBaoUnavailable,
                Some(status.as_u16()),
                "redirect refused: route to the active node or enable request forwarding".into(),
            ));
        }
        if status.is_success() {
            return Ok(bytes);
        }
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        let errors = parsed
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
            .unwrap_or_default();
        let mut message: String = errors.chars().take(300).collect();
        if message.is_empty() {
            message = format!("HTTP {}", status.as_u16());
        }
        Err(fail(
            classify_status(op, status, &message),
            Some(status.as_u16()),
            message,
        ))
    }

    /// A request whose successful answer is JSON.
    async fn call_json(
        &self,
        op: Op,
        method: Method,
        path: &str,
        token: Option<&str>,
        limit: usize,
    ) -> Result<Value, BaoError> {
        let bytes = self.call(op, method, path, token, None, limit).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|_| BaoError::invalid_response(op, "response is not JSON"))
    }

    /// `GET <mount>/keys/<key>`.
    pub async fn key_metadata(&self, token: &str) -> Result<KeyMetadata, BaoError> {
        let path = self.transit_path("keys");
        let v = self
            .call_json(
                Op::TransitMetadataRead,
                Method::GET,
                &path,
                Some(token),
                METADATA_BODY_LIMIT,
            )
            .await?;
        parse_key_metadata(v.get("data").unwrap_or(&Value::Null))
            .map_err(|e| BaoError::invalid_response(Op::TransitMetadataRead, e.to_string()))
    }

    /// `GET <mount>/config/keys` → `disable_upsert`.
    pub async fn disable_upsert(&self, token: &str) -> Result<bool, BaoError> {
        let path = format!("{}/config/keys", self.settings.mount_path.trim_matches('/'));
        let v = self
            .call_json(
                Op::TransitDisableUpsertRead,
                Method::GET,
                &path,
                Some(token),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        v.pointer("/data/disable_upsert")
            .and_then(Value::as_bool)
            .ok_or_else(|| BaoError::invalid_response(Op::TransitDisableUpsertRead, "data.disable_upsert missing"))
    }

    /// `POST <mount>/encrypt/<key>` with an explicit `key_version`. Returns
    /// the Transit ciphertext string (`vault:vN:...`).
    pub async fn encrypt(
        &self,
        token: &str,
        plaintext: &[u8],
        aad: &[u8],
        key_version: u64,
    ) -> Result<String, BaoError> {
        let encoded = Zeroizing::new(STANDARD.encode(plaintext));
        let body = Zeroizing::new(
            serde_json::to_vec(&json!({
                "plaintext": encoded.as_str(),
                "associated_data": STANDARD.encode(aad),
                "key_version": key_version,
            }))
            .unwrap_or_default(),
        );
        let path = self.transit_path("encrypt");
        let bytes = self
            .call(
                Op::TransitEncrypt,
                Method::POST,
                &path,
                Some(token),
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let invalid = |m: &str| BaoError::invalid_response(Op::TransitEncrypt, m);
        let returned = v.pointer("/data/key_version").and_then(Value::as_u64).unwrap_or(0);
        if returned != 0 && returned != key_version {
            return Err(invalid("Transit encrypted with a different key version than requested"));
        }
        let ciphertext = v
            .pointer("/data/ciphertext")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("data.ciphertext missing"))?;
        if !ciphertext.starts_with(&format!("vault:v{key_version}:")) {
            return Err(invalid("ciphertext does not carry the requested key version"));
        }
        Ok(ciphertext.to_owned())
    }

    /// `POST <mount>/decrypt/<key>`.
    pub async fn decrypt(&self, token: &str, ciphertext: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, BaoError> {
        let body = serde_json::to_vec(&json!({"ciphertext": ciphertext, "associated_data": STANDARD.encode(aad)}))
            .unwrap_or_default();
        let path = self.transit_path("decrypt");
        let bytes = self
            .call(
                Op::TransitDecrypt,
                Method::POST,
                &path,
                Some(token),
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        let parsed: DecryptBody = serde_json::from_slice(&bytes)
            .map_err(|_| BaoError::invalid_response(Op::TransitDecrypt, "data.plaintext missing"))?;
        STANDARD
            .decode(parsed.data.plaintext.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| BaoError::invalid_response(Op::TransitDecrypt, "data.plaintext is not base64"))
    }

    /// `GET sys/health` (unauthenticated): the OpenBao `cluster_id`.
    pub async fn cluster_id(&self) -> Result<String, BaoError> {
        let v = self
            .call_json(
                Op::OpenBaoHealth,
                Method::GET,
                "sys/health?standbyok=true&perfstandbyok=true",
                None,
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        match v.get("cluster_id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(BaoError::invalid_response(
                Op::OpenBaoHealth,
                "sys/health has no cluster_id",
            )),
        }
    }

    /// `GET sys/internal/ui/mounts/<mount>`: the Transit mount's accessor and uuid.
    pub async fn mount_identity(&self, token: &str) -> Result<(String, String), BaoError> {
        let path = format!("sys/internal/ui/mounts/{}", self.settings.mount_path.trim_matches('/'));
        let v = self
            .call_json(Op::MountRead, Method::GET, &path, Some(token), DEFAULT_BODY_LIMIT)
            .await?;
        let field = |name| v.pointer(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (accessor, uuid) = (field("/data/accessor"), field("/data/uuid"));
        let kind = field("/data/type");
        if accessor.is_empty() || kind != "transit" {
            return Err(BaoError {
                class: ErrorClass::TransitKeyMissing,
                op: Op::MountRead,
                http_status: Some(200),
                message: format!("mount {} is not a Transit mount", self.settings.mount_path),
            });
        }
        Ok((accessor, uuid))
    }

    /// `POST <auth mount>/login` with `body`: the client token and its lease.
    /// The body (JWT, secret ID) and the answer are wiped after use.
    pub async fn login(&self, op: Op, mount_path: &str, body: &Value) -> Result<(SecretString, TokenInfo), BaoError> {
        let body = Zeroizing::new(serde_json::to_vec(body).unwrap_or_default());
        let path = format!("{}/login", mount_path.trim_matches('/'));
        let bytes = self
            .call(op, Method::POST, &path, None, Some(&body), DEFAULT_BODY_LIMIT)
            .await?;
        let answer: LoginBody = serde_json::from_slice(&bytes)
            .map_err(|_| BaoError::invalid_response(op, "login answer has no auth.client_token"))?;
        if answer.auth.client_token.is_empty() {
            return Err(BaoError::invalid_response(op, "login answer has an empty client token"));
        }
        let lease = TokenInfo {
            ttl_secs: answer.auth.lease_duration,
            renewable: answer.auth.renewable,
        };
        Ok((SecretString::from(answer.auth.client_token.as_str().to_owned()), lease))
    }

    /// `POST sys/capabilities-self`: the token's capabilities on each path.
    pub async fn capabilities(&self, token: &str, paths: &[String]) -> Result<Vec<(String, Vec<String>)>, BaoError> {
        let body = serde_json::to_vec(&json!({ "paths": paths })).unwrap_or_default();
        let bytes = self
            .call(
                Op::CapabilitiesSelf,
                Method::POST,
                "sys/capabilities-self",
                Some(token),
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let data = v.get("data").unwrap_or(&v);
        paths
            .iter()
            .map(|p| {
                let caps = data.get(p.as_str()).and_then(Value::as_array).ok_or_else(|| {
                    BaoError::invalid_response(Op::CapabilitiesSelf, format!("no answer for path {p}"))
                })?;
                Ok((
                    p.clone(),
                    caps.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                ))
            })
            .collect()
    }

    /// `GET auth/token/lookup-self`: remaining TTL and whether it renews.
    pub async fn token_lookup(&self, token: &str) -> Result<TokenInfo, BaoError> {
        let v = self
            .call_json(
                Op::TokenLookupSelf,
                Method::GET,
                "auth/token/lookup-self",
                Some(token),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        Ok(TokenInfo {
            ttl_secs: v.pointer("/data/ttl").and_then(Value::as_u64).unwrap_or(0),
            renewable: v.pointer("/data/renewable").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// `POST auth/token/renew-self` with `increment`: the new lease.
    pub async fn token_renew(&self, token: &str, increment: Duration) -> Result<TokenInfo, BaoError> {
        let body = serde_json::to_vec(&json!({"increment": format!("{}s", increment.as_secs())})).unwrap_or_default();
        let bytes = self
            .call(
                Op::TokenRenewSelf,
                Method::POST,
                "auth/token/renew-self",
                Some(token),
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(TokenInfo {
            ttl_secs: v.pointer("/auth/lease_duration").and_then(Value::as_u64).unwrap_or(0),
            renewable: v.pointer("/auth/renewable").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

/// Lease facts of the current token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    /// Remaining lifetime; 0 means the token does not expire.
    pub ttl_secs: u64,
    pub renewable: bool,
}

/// Login answer; the client token is wiped when dropped.
#[derive(serde::Deserialize)]
struct LoginBody {
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

/// Transit decrypt answer; the plaintext is wiped when dropped.
#[derive(serde::Deserialize)]
struct DecryptBody {
    data: DecryptData,
}

#[derive(serde::Deserialize)]
struct DecryptData {
    plaintext: Zeroizing<String>,
}

fn classify_status(op: Op, status: StatusCode, message: &str) -> ErrorClass {
    match status.as_u16() {
        400 | 401 | 403 if op.is_login() => ErrorClass::AuthFailed,
        400 if message.contains("message authentication failed") => ErrorClass::IntegrityFailed,
        400 => ErrorClass::TransitBadRequest,
        401 => ErrorClass::AuthFailed,
        403 if matches!(op, Op::TokenLookupSelf | Op::TokenRenewSelf) => ErrorClass::AuthFailed,
        403 => ErrorClass::TransitPolicyDenied,
        404 if matches!(
            op,
            Op::TransitMetadataRead | Op::TransitEncrypt | Op::TransitDecrypt | Op::MountRead
        ) =>
        {
            ErrorClass::TransitKeyMissing
        }
        429 => ErrorClass::OpenBaoRateLimited,
        503 if message.to_ascii_lowercase().contains("sealed") => ErrorClass::OpenBaoSealed,
        _ => ErrorClass::OpenBaoUnavailable,
    }
}

fn error_chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// How rustls' errors describe themselves (its `Display` prefixes).
const RUSTLS_ERROR_TEXTS: [&str; 5] = [
    "invalid peer certificate",
    "received fatal alert",
    "peer is incompatible",
    "peer misbehaved",
    "no server certificate chain resolved",
];

fn classify_transport(e: &reqwest::Error) -> ErrorClass {
    if e.is_timeout() {
        return ErrorClass::Timeout;
    }
    for cause in error_chain(e) {
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return ErrorClass::OpenBaoTlsFailed;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return ErrorClass::OpenBaoTlsFailed;
            }
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ) {
                return ErrorClass::OpenBaoConnectionFailed;
            }
        }
        let text = cause.to_string();
        if text.contains("dns error") {
            return ErrorClass::OpenBaoDnsFailed;
        }
        // The TLS connector may wrap rustls' error in an io::Error that is
        // not reachable through `source()`; its text is rustls' own.
        if RUSTLS_ERROR_TEXTS.iter().any(|t| text.contains(t)) {
            return ErrorClass::OpenBaoTlsFailed;
        }
    }
    if e.is_connect() {
        ErrorClass::OpenBaoConnectionFailed
    } else {
        ErrorClass::OpenBaoUnavailable
    }
}

/// The transport error's causes, without the request URL (which is not
/// secret, but makes messages noisy).
fn transport_message(e: &reqwest::Error) -> String {
    let causes: Vec<String> = error_chain(e).skip(1).map(ToString::to_string).collect();
    if causes.is_empty() {
        e.without_url_ref().to_string()
    } else {
        causes.join(": ")
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url() {
            s = s.replace(url.as_str(), "<openbao>");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_escaped_once() {
        assert_eq!(escape_segment("k8s-workload-a.etcd_1"), "k8s-workload-a.etcd_1");
        assert_eq!(escape_segment("a b/c%"), "a%20b%2Fc%25");
    }

    #[test]
    fn http_statuses_map_to_classes() {
        let cases = [
            (
                Op::TransitDecrypt,
                400,
                "cipher: message authentication failed",
                ErrorClass::IntegrityFailed,
            ),
            (
                Op::TransitDecrypt,
                400,
                "invalid ciphertext",
                ErrorClass::TransitBadRequest,
            ),
            (Op::TransitMetadataRead, 404, "", ErrorClass::TransitKeyMissing),
            (
                Op::TransitEncrypt,
                403,
                "permission denied",
                ErrorClass::TransitPolicyDenied,
            ),
            (Op::TokenLookupSelf, 403, "permission denied", ErrorClass::AuthFailed),
            (Op::TokenRenewSelf, 403, "permission denied", ErrorClass::AuthFailed),
            (
                Op::JwtLogin,
                400,
                "error validating token: token is expired",
                ErrorClass::AuthFailed,
            ),
            (Op::CertLogin, 403, "permission denied", ErrorClass::AuthFailed),
            (Op::TransitEncrypt, 503, "Vault is sealed", ErrorClass::OpenBaoSealed),
            (Op::TransitEncrypt, 429, "", ErrorClass::OpenBaoRateLimited),
            (Op::TransitEncrypt, 502, "", ErrorClass::OpenBaoUnavailable),
        ];
        for (op, code, message, want) in cases {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(classify_status(op, status, message), want, "{op:?} {code} {message:?}");
        }
    }
}
