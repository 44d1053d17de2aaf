//! A local OAuth2 token endpoint (RFC 6749 section 4.4, client
//! credentials) over HTTPS, for the provider's `auth.jwt.source: oauth2`.
//!
//! Built on hyper, tokio-rustls and rcgen (no OAuth2 server crate fits a
//! test that needs to see every request and fail on demand): a self-signed
//! certificate for `localhost` and 127.0.0.1, one route (`POST /token`),
//! client authentication by `client_secret_basic` or `client_secret_post`
//! exactly as configured, and an answer `{access_token, token_type:
//! "Bearer", expires_in}` whose access token the test's `mint` makes. Every
//! request is recorded (form parameters and how the client authenticated;
//! the secret itself is only compared), and the next answers can be forced
//! to an HTTP status.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How the endpoint expects the client to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Form parameters in order (`client_secret` replaced by `***`).
    pub params: Vec<(String, String)>,
    /// How the client authenticated (`basic`, `post` or `none`).
    pub client_auth: &'static str,
    /// Whether the client id and secret matched.
    pub authenticated: bool,
}

impl Grant {
    pub fn param(&self, name: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Mint = Arc<dyn Fn() -> String + Send + Sync>;

struct State {
    client_id: String,
    secret: Mutex<String>,
    auth: ClientAuth,
    expires_in: Option<i64>,
    mint: Mint,
    grants: Mutex<Vec<Grant>>,
    forced: Mutex<VecDeque<u16>>,
}

pub struct TokenEndpoint {
    state: Arc<State>,
    addr: SocketAddr,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenEndpoint {
    /// Starts the endpoint on a free loopback port.
    pub async fn start(
        client_id: &str,
        secret: &str,
        auth: ClientAuth,
        expires_in: Option<i64>,
        mint: impl Fn() -> String + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        let ca_pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
            .map_err(|e| anyhow::anyhow!("key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)?;
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            client_id: client_id.to_owned(),
            secret: Mutex::new(secret.to_owned()),
            auth,
            expires_in,
            mint: Arc::new(mint),
            grants: Mutex::default(),
            forced: Mutex::default(),
        });
        let served = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Self {
            state,
            addr,
            ca_pem,
            task,
        })
    }

    /// `https://127.0.0.1:<port>/token` (with `query` appended when given).
    pub fn url(&self, query: &str) -> String {
        format!("https://127.0.0.1:{}/token{query}", self.addr.port())
    }

    /// PEM of the endpoint's self-signed certificate (its own CA).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn grants(&self) -> Vec<Grant> {
        self.state.grants.lock().expect("grants lock").clone()
    }

    /// The next `n` requests are answered with HTTP `status`.
    pub fn force(&self, status: u16, n: usize) {
        self.state
            .forced
            .lock()
            .expect("forced lock")
            .extend(std::iter::repeat_n(status, n));
    }

    /// The client secret the endpoint accepts from now on.
    pub fn rotate_secret(&self, secret: &str) {
        *self.state.secret.lock().expect("secret lock") = secret.to_owned();
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn answer(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::POST || req.uri().path() != "/token" {
        return json(StatusCode::NOT_FOUND, serde_json::json!({"error": "not_found"}));
    }
    let basic = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "invalid_request"})),
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let secret = state.secret.lock().expect("secret lock").clone();
    let (client_auth, authenticated) = match (basic, get("client_secret")) {
        (Some(pair), None) => {
            // RFC 6749 2.3.1: id and secret form-encoded before Basic.
            let decoded: Vec<String> = pair
                .splitn(2, ':')
                .map(|p| {
                    form_urlencoded::parse(format!("x={p}").as_bytes())
                        .map(|(_, v)| v.into_owned())
                        .collect()
                })
                .collect();
            let ok = state.auth == ClientAuth::Basic
                && decoded.len() == 2
                && decoded[0] == state.client_id
                && decoded[1] == secret;
            ("basic", ok)
        }
        (None, Some(s)) => {
            let ok =
                state.auth == ClientAuth::Post && get("client_id").as_deref() == Some(&state.client_id) && s == secret;
            ("post", ok)
        }
        _ => ("none", false),
    };
    let recorded = params
        .iter()
        .map(|(k, v)| {
            let v = if k == "client_secret" {
                "***".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    state.grants.lock().expect("grants lock").push(Grant {
        params: recorded,
        client_auth,
        authenticated,
    });
    if let Some(status) = state.forced.lock().expect("forced lock").pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json(
            status,
            serde_json::json!({"error": "forced", "error_description": "forced by the test"}),
        );
    }
    if get("grant_type").as_deref() != Some("client_credentials") {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "unsupported_grant_type"}),
        );
    }
    if !authenticated {
        return json(StatusCode::UNAUTHORIZED, serde_json::json!({"error": "invalid_client"}));
    }
    let mut body = serde_json::json!({"access_token": (state.mint)(), "token_type": "Bearer"});
    if let Some(s) = state.expires_in {
        body["expires_in"] = s.into();
    }
    json(StatusCode::OK, body)
}
