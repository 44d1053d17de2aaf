//! HTTPS client for OpenBao: Transit encrypt/decrypt/metadata, the identity
//! facts pinned at bootstrap, and token lookup.
//!
//! TLS is always on: the configured CA bundle is the only trust root, the
//! server certificate is verified against `openbao.tlsServerName`, TLS 1.2+.
//! Redirects are refused (HA must forward to the active node), bodies are
//! capped by reading one byte past the limit, and every request has the
//! `openbao.timeout` deadline (logins and renewals: `auth.loginTimeout`).
//! Errors carry a class and a message that never
//! contains a token, plaintext or ciphertext.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bao_kms_core::errors::ErrorClass;
use bao_kms_core::transit::KeyMetadata;
use bao_kms_core::transit_wire::{self as wire, DEFAULT_BODY_LIMIT, ERROR_BODY_LIMIT, METADATA_BODY_LIMIT, WireError};
pub use bao_kms_core::transit_wire::{MountIdentity, Op, TokenLease};
use reqwest::Method;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use secrecy::SecretString;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::metrics::{Counter, Histogram, Metrics, Operation as OpLabel, OperationStatus};

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
    /// OpenBao answered 200 with something the API does not promise.
    fn from_wire(op: Op, e: WireError) -> Self {
        Self {
            class: e.class,
            op,
            http_status: Some(200),
            message: e.message,
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
    /// `logging.logOpenBaoRequestIDs`: put OpenBao's `request_id` on the
    /// `openbao.request` log line.
    pub log_request_ids: bool,
    /// `auth.loginTimeout` (effective): the deadline of login and renewal
    /// requests.
    pub login_timeout: Duration,
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
            log_request_ids: cfg.logging.log_openbao_request_ids,
            login_timeout: cfg.auth.login_timeout,
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

/// The HTTP version a client speaks to OpenBao, negotiated by TLS ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1 over a pool of keep-alive connections.
    Http1,
    /// HTTP/2, many requests multiplexed on one connection.
    Http2,
}

impl HttpVersion {
    /// The ALPN protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http/1.1",
            Self::Http2 => "h2",
        }
    }
}

fn tls_config(
    settings: &ClientSettings,
    identity: ClientIdentity,
    version: Option<HttpVersion>,
) -> Result<rustls::ClientConfig, ClientError> {
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
    // Without a fixed version both are offered and the server picks (h2 first).
    tls.alpn_protocols = match version {
        Some(v) => vec![v.as_str().as_bytes().to_vec()],
        None => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(tls)
}

/// An HTTPS client with the configured trust, server name, deadlines and
/// no redirects, speaking `version` only.
pub fn https_client(settings: &ClientSettings, version: HttpVersion) -> Result<reqwest::Client, ClientError> {
    http_client(settings, ClientIdentity::None, Some(version))
}

fn http_client(
    settings: &ClientSettings,
    identity: ClientIdentity,
    version: Option<HttpVersion>,
) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder();
    let builder = match version {
        Some(HttpVersion::Http1) => builder.http1_only(),
        _ => builder,
    };
    builder
        .use_preconfigured_tls(tls_config(settings, identity, version)?)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        // The whole-request deadline above includes connecting; login
        // requests get `auth.loginTimeout` instead, and connecting (TLS
        // included) must not end them earlier.
        .connect_timeout(settings.timeout.max(settings.login_timeout))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// What the provider speaks to OpenBao.
pub const TRANSPORT: HttpVersion = HttpVersion::Http1;

/// The OpenBao client. Cheap to clone; connections are pooled and reused.
#[derive(Clone)]
pub struct OpenBao {
    http: reqwest::Client,
    base: String,
    /// The Transit encrypt and decrypt URLs, parsed once: every KMS
    /// Encrypt and Decrypt calls one of them.
    transit_urls: Arc<TransitUrls>,
    /// The metric series of the Transit calls KMS requests make, bound once.
    transit_series: Arc<[OpSeries; 3]>,
    settings: Arc<ClientSettings>,
    metrics: Arc<Metrics>,
}

/// One operation's success count and duration series.
struct OpSeries {
    op: Op,
    ok: Counter,
    duration: Histogram,
}

impl OpSeries {
    fn new(op: Op, metrics: &Metrics) -> Self {
        let operation = op.as_str();
        Self {
            op,
            ok: metrics.openbao_requests.get_or_create(&OperationStatus {
                operation,
                status: wire::request_status_label(None),
            }),
            duration: metrics.openbao_duration.get_or_create(&OpLabel { operation }),
        }
    }
}

/// The per-request Transit URLs; `None` when the address does not parse,
/// so the request reports it as any other path would.
struct TransitUrls {
    encrypt: Option<reqwest::Url>,
    decrypt: Option<reqwest::Url>,
}

/// Where a request goes: a path under `<address>/v1/`, or a URL parsed once.
enum Target<'a> {
    Path(&'a str),
    Url(&'a reqwest::Url),
}

impl OpenBao {
    pub fn new(settings: ClientSettings, metrics: Arc<Metrics>) -> Result<Self, ClientError> {
        // HTTP/1.1 over a keep-alive pool, by measurement (`make bench`, its
        // direct rows): per-call Transit on one OpenBao is ~1.6x faster at 1
        // in flight and ~1.35x at 16 than HTTP/2 multiplexed on one connection.
        let http = http_client(&settings, ClientIdentity::None, Some(TRANSPORT))?;
        let base = format!("{}/v1/", settings.address.trim_end_matches('/'));
        let url = |action| {
            let path = wire::transit_path(&settings.mount_path, action, &settings.key_name);
            reqwest::Url::parse(&format!("{base}{path}")).ok()
        };
        let transit_urls = Arc::new(TransitUrls {
            encrypt: url("encrypt"),
            decrypt: url("decrypt"),
        });
        let transit_series = Arc::new(
            [Op::TransitEncrypt, Op::TransitDecrypt, Op::TransitDecryptBatch].map(|op| OpSeries::new(op, &metrics)),
        );
        Ok(Self {
            http,
            base,
            transit_urls,
            transit_series,
            settings: Arc::new(settings),
            metrics,
        })
    }

    /// The same client presenting a TLS client certificate: for cert login
    /// over mTLS. Other requests keep using the plain client.
    pub fn with_identity(&self, identity: ClientIdentity) -> Result<Self, ClientError> {
        Ok(Self {
            http: http_client(&self.settings, identity, Some(TRANSPORT))?,
            ..self.clone()
        })
    }

    fn transit_path(&self, action: &str) -> String {
        wire::transit_path(&self.settings.mount_path, action, &self.settings.key_name)
    }

    /// A Transit request's target: its URL parsed once, else its path.
    fn transit_target<'a>(&self, url: &'a Option<reqwest::Url>, path: &'a mut String, action: &str) -> Target<'a> {
        match url {
            Some(url) => Target::Url(url),
            None => {
                *path = self.transit_path(action);
                Target::Path(path)
            }
        }
    }

    /// One request: headers, deadline, body cap, classification, metrics.
    async fn call(
        &self,
        op: Op,
        method: Method,
        target: Target<'_>,
        token: Option<&str>,
        body: Option<&[u8]>,
        limit: usize,
    ) -> Result<Zeroizing<Vec<u8>>, BaoError> {
        let started = Instant::now();
        // With OTLP traces only: a child of the KMS call's span, if any.
        let span = self
            .metrics
            .tracer
            .as_ref()
            .map(|t| crate::telemetry::openbao_span(t, op.as_str()));
        let result = self.call_inner(op, method, target, token, body, limit).await;
        // A health answer of a node that serves nothing (sealed, say) is
        // read as an answer, and counted as the failure it stands for.
        let class = match &result {
            Err(e) => Some(e.class),
            Ok(body) if op == Op::OpenBaoHealth => wire::parse_health(body).ok().and_then(|h| h.state.failure_class()),
            Ok(_) => None,
        };
        let status = wire::request_status_label(class);
        let operation = op.as_str();
        // The KMS request this call serves, inside a debug-correlation window.
        let tag = crate::correlation::current();
        let elapsed = started.elapsed().as_secs_f64();
        match self.transit_series.iter().find(|s| s.op == op) {
            Some(series) => {
                if class.is_none() {
                    series.ok.inc();
                } else {
                    self.metrics
                        .openbao_requests
                        .get_or_create(&OperationStatus { operation, status })
                        .inc();
                }
                series.duration.observe(elapsed);
            }
            None => {
                self.metrics
                    .openbao_requests
                    .get_or_create(&OperationStatus { operation, status })
                    .inc();
                self.metrics
                    .openbao_duration
                    .get_or_create(&OpLabel { operation })
                    .observe(elapsed);
            }
        }
        if let Some(mut span) = span {
            use opentelemetry::KeyValue;
            use opentelemetry::trace::{Span as _, Status};
            span.set_attribute(KeyValue::new("openbao.status", status));
            match &result {
                Ok(body) => {
                    if let Some(id) = self.settings.log_request_ids.then(|| wire::request_id(body)).flatten() {
                        span.set_attribute(KeyValue::new("openbao.request_id", id));
                    }
                }
                Err(e) => {
                    span.set_attribute(KeyValue::new("error.type", e.class.as_str()));
                    if let Some(code) = e.http_status {
                        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
                    }
                }
            }
            match class {
                Some(class) => span.set_status(Status::error(class.as_str())),
                None => span.set_status(Status::Ok),
            }
            span.end();
        }
        match &result {
            // The line is debug level: without it the answer is not parsed
            // a second time for its request_id.
            Ok(body) if tracing::enabled!(tracing::Level::DEBUG) => {
                // OpenBao's audit log records the same id for this request.
                let request_id = self.settings.log_request_ids.then(|| wire::request_id(body)).flatten();
                tracing::debug!(
                    message = "openbao.request",
                    openbao_operation = operation,
                    status,
                    duration_ms = started.elapsed().as_millis() as u64,
                    openbao_request_id = request_id.as_deref(),
                    request_uid_hash = tag.as_ref().map(|t| t.request_uid_hash.as_str()),
                    debug_correlation_incident = tag.as_ref().map(|t| &*t.incident)
                )
            }
            Ok(_) => {}
            Err(e) if self.metrics.request_log.admit("openbao.request", e.class.as_str()) => {
                tracing::warn!(message = "openbao.request", openbao_operation = operation, status, error_class = e.class.as_str(), http_status = e.http_status, error = %e.message, duration_ms = started.elapsed().as_millis() as u64, request_uid_hash = tag.as_ref().map(|t| t.request_uid_hash.as_str()), debug_correlation_incident = tag.as_ref().map(|t| &*t.incident))
            }
            Err(_) => {}
        }
        result
    }

    async fn call_inner(
        &self,
        op: Op,
        method: Method,
        target: Target<'_>,
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
        let mut req = match target {
            Target::Url(url) => self.http.request(method, url.clone()),
            Target::Path(path) => self.http.request(method, format!("{}{path}", self.base)),
        };
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        if !self.settings.namespace.is_empty() && wire::namespaced(op) {
            req = req.header("X-Vault-Namespace", &self.settings.namespace);
        }
        req = req.header("X-Vault-Request", "true");
        if op.bounded_by_login_timeout() {
            req = req.timeout(self.settings.login_timeout);
        }
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
        let cap = if status.is_success() || op == Op::TransitDecryptBatch {
            limit
        } else {
            ERROR_BODY_LIMIT
        };
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
        if status.is_success()
            || wire::is_batch_answer(op, status.as_u16(), &bytes)
            || wire::is_health_answer(op, status.as_u16(), &bytes)
        {
            return Ok(bytes);
        }
        let message = wire::error_text(status.as_u16(), &bytes);
        Err(fail(
            wire::classify_status(op, status.as_u16(), &message),
            Some(status.as_u16()),
            message,
        ))
    }

    /// `GET <mount>/keys/<key>`.
    pub async fn key_metadata(&self, token: &str) -> Result<KeyMetadata, BaoError> {
        let op = Op::TransitMetadataRead;
        let bytes = self
            .call(
                op,
                Method::GET,
                Target::Path(&self.transit_path("keys")),
                Some(token),
                None,
                METADATA_BODY_LIMIT,
            )
            .await?;
        wire::parse_key_metadata_answer(&bytes).map_err(|e| BaoError::from_wire(op, e))
    }

    /// `GET <mount>/config/keys` → `disable_upsert`.
    pub async fn disable_upsert(&self, token: &str) -> Result<bool, BaoError> {
        let op = Op::TransitDisableUpsertRead;
        let path = wire::transit_config_path(&self.settings.mount_path);
        let bytes = self
            .call(
                op,
                Method::GET,
                Target::Path(&path),
                Some(token),
                None,
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        wire::parse_disable_upsert(&bytes).map_err(|e| BaoError::from_wire(op, e))
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
        let op = Op::TransitEncrypt;
        let body = wire::encrypt_body(plaintext, aad, key_version);
        let mut path = String::new();
        let bytes = self
            .call(
                op,
                Method::POST,
                self.transit_target(&self.transit_urls.encrypt, &mut path, "encrypt"),
                Some(token),
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        wire::parse_encrypt(&bytes, key_version).map_err(|e| BaoError::from_wire(op, e))
    }

    /// `POST <mount>/decrypt/<key>`.
    pub async fn decrypt(&self, token: &str, ciphertext: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, BaoError> {
        let op = Op::TransitDecrypt;
        let body = wire::decrypt_body(ciphertext, aad);
        let mut path = String::new();
        let bytes = self
            .call(
                op,
                Method::POST,
                self.transit_target(&self.transit_urls.decrypt, &mut path, "decrypt"),
                Some(token),
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        wire::parse_decrypt(&bytes).map_err(|e| BaoError::from_wire(op, e))
    }

    /// `POST <mount>/decrypt/<key>` with `batch_input`: each item's
    /// plaintext, or `None` for an item Transit refused (asked alone by the
    /// caller). Every item carries its own `associated_data`.
    pub async fn decrypt_batch(&self, token: &str, items: &[(&str, &[u8])]) -> Result<Vec<wire::BatchItem>, BaoError> {
        let op = Op::TransitDecryptBatch;
        let body = wire::decrypt_batch_body(items.iter().copied());
        let mut path = String::new();
        let bytes = self
            .call(
                op,
                Method::POST,
                self.transit_target(&self.transit_urls.decrypt, &mut path, "decrypt"),
                Some(token),
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        wire::parse_decrypt_batch(&bytes, items.len()).map_err(|e| BaoError::from_wire(op, e))
    }

    /// `GET sys/health` (unauthenticated): the state of the node that
    /// answers, sealed and uninitialised included.
    pub async fn health(&self) -> Result<wire::Health, BaoError> {
        let op = Op::OpenBaoHealth;
        let bytes = self
            .call(
                op,
                Method::GET,
                Target::Path(wire::HEALTH_PATH),
                None,
                None,
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        wire::parse_health(&bytes).map_err(|e| BaoError::from_wire(op, e))
    }

    /// The OpenBao `cluster_id`; a node that serves nothing fails with its
    /// state (`openbao_sealed` for a sealed one).
    pub async fn cluster_id(&self) -> Result<String, BaoError> {
        let health = self.health().await?;
        health.cluster_id().map(str::to_owned).map_err(|e| BaoError {
            class: e.class,
            op: Op::OpenBaoHealth,
            http_status: None,
            message: e.message,
        })
    }

    /// `GET sys/internal/ui/mounts/<mount>`: the Transit mount's accessor and uuid.
    pub async fn mount_identity(&self, token: &str) -> Result<MountIdentity, BaoError> {
        let op = Op::MountRead;
        let path = wire::mount_path(&self.settings.mount_path);
        let bytes = self
            .call(
                op,
                Method::GET,
                Target::Path(&path),
                Some(token),
                None,
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        wire::parse_mount_identity(&bytes, &self.settings.mount_path).map_err(|e| BaoError::from_wire(op, e))
    }

    /// `POST <auth mount>/login` with `body`: the client token and its lease.
    /// The body (JWT, secret ID) and the answer are wiped after use.
    pub async fn login(&self, op: Op, mount_path: &str, body: &Value) -> Result<(SecretString, TokenLease), BaoError> {
        let body = Zeroizing::new(body.to_string().into_bytes());
        let path = format!("{}/login", mount_path.trim_matches('/'));
        let bytes = self
            .call(
                op,
                Method::POST,
                Target::Path(&path),
                None,
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        let (token, lease) = wire::parse_login(&bytes).map_err(|e| BaoError::from_wire(op, e))?;
        Ok((SecretString::from(token.as_str().to_owned()), lease))
    }

    /// `POST sys/capabilities-self`: the token's capabilities on each path.
    pub async fn capabilities(&self, token: &str, paths: &[String]) -> Result<Vec<(String, Vec<String>)>, BaoError> {
        let op = Op::CapabilitiesSelf;
        let body = wire::capabilities_body(paths);
        let bytes = self
            .call(
                op,
                Method::POST,
                Target::Path("sys/capabilities-self"),
                Some(token),
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        wire::parse_capabilities(&bytes, paths).map_err(|e| BaoError::from_wire(op, e))
    }

    /// `GET auth/token/lookup-self`: remaining TTL and whether it renews.
    pub async fn token_lookup(&self, token: &str) -> Result<TokenLease, BaoError> {
        let op = Op::TokenLookupSelf;
        let bytes = self
            .call(
                op,
                Method::GET,
                Target::Path("auth/token/lookup-self"),
                Some(token),
                None,
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        wire::parse_token_lookup(&bytes).map_err(|e| BaoError::from_wire(op, e))
    }

    /// `POST auth/token/renew-self` with `increment`: the new lease.
    pub async fn token_renew(&self, token: &str, increment: Duration) -> Result<TokenLease, BaoError> {
        let op = Op::TokenRenewSelf;
        let body = wire::renew_body(increment.as_secs());
        let bytes = self
            .call(
                op,
                Method::POST,
                Target::Path("auth/token/renew-self"),
                Some(token),
                Some(&body),
                DEFAULT_BODY_LIMIT,
            )
            .await?;
        wire::parse_token_renew(&bytes).map_err(|e| BaoError::from_wire(op, e))
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
