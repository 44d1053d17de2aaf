//! The KMS v2 gRPC service kube-apiserver calls over the Unix socket.
//! Each method: concurrency limit (excess fails fast with
//! ResourceExhausted, no queue), metrics, one debug log line, and the single
//! mapping from error class to gRPC code in [`to_status`].
//!
//! A panic inside a handler is caught ([`guarded`]): the call fails with
//! `Internal` ("kms request failed"), `openbao_kms_panic_recoveries_total`
//! counts it, and the socket keeps serving; without the catch the panic
//! would end the connection's task and kube-apiserver would see a reset
//! HTTP/2 stream instead of a status.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use bao_kms_core::errors::{ErrorClass, KmsCode, KmsError};
use bao_kms_proto::v2::key_management_service_server::KeyManagementService;
use bao_kms_proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use futures_util::FutureExt as _;
use tokio::sync::Semaphore;
use tonic::{Code, Request, Response, Status};

use crate::correlation::{self, Correlation, Tag};
use crate::metrics::{Method, MethodStatus, Metrics};
use crate::runtime::Engine;

/// The KMS API version reported by Status; must never change.
pub const KMS_API_VERSION: &str = "v2";

pub struct KmsService {
    engine: Arc<Engine>,
    status_slots: Semaphore,
    encrypt_slots: Semaphore,
    decrypt_slots: Semaphore,
    /// `logging.debugCorrelation`, its window opened when the service is made.
    correlation: Option<Arc<Correlation>>,
}

/// The one mapping from an error class to what kube-apiserver sees.
pub fn to_status(e: &KmsError) -> Status {
    let code = match e.class.code() {
        KmsCode::InvalidArgument => Code::InvalidArgument,
        KmsCode::NotFound => Code::NotFound,
        KmsCode::FailedPrecondition => Code::FailedPrecondition,
        KmsCode::Unavailable => Code::Unavailable,
        KmsCode::PermissionDenied => Code::PermissionDenied,
        KmsCode::Unauthenticated => Code::Unauthenticated,
        KmsCode::ResourceExhausted => Code::ResourceExhausted,
        KmsCode::DeadlineExceeded => Code::DeadlineExceeded,
        KmsCode::Cancelled => Code::Cancelled,
        KmsCode::Internal => Code::Internal,
    };
    Status::new(code, format!("{}: {}", e.class.as_str(), e.message))
}

/// The message of a call that failed by a caught panic; the panic's own
/// text stays out of the reply (it may name internals).
pub const PANIC_MESSAGE: &str = "kms request failed";

/// The kind of a panic payload, for the `panic_type` log field (the
/// payload itself is not logged).
fn panic_type(payload: &(dyn Any + Send)) -> &'static str {
    if payload.is::<&'static str>() {
        "str"
    } else if payload.is::<String>() {
        "string"
    } else {
        "unknown"
    }
}

/// Runs one handler, turning a panic inside it into a failed call with
/// class `panic` and counting it. The handler's state is dropped with the
/// unwind: every lock the runtime takes recovers from poisoning, and
/// shared Decrypt calls hand over to a waiting caller.
pub async fn guarded<T, F>(metrics: &Metrics, method: &'static str, f: F) -> Result<T, KmsError>
where
    F: Future<Output = Result<T, KmsError>>,
{
    match AssertUnwindSafe(f).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => {
            metrics.panic_recoveries.get_or_create(&Method { method }).inc();
            tracing::error!(
                message = "kms.request",
                operation = method,
                status = "error",
                error_class = ErrorClass::Panic.as_str(),
                panic_recovered = true,
                panic_type = panic_type(payload.as_ref()),
            );
            Err(KmsError::new(ErrorClass::Panic, PANIC_MESSAGE))
        }
    }
}

impl KmsService {
    pub fn new(engine: Arc<Engine>) -> Self {
        let server = &engine.config().server;
        let slots = |n: u32| Semaphore::new(n as usize);
        let correlation = engine.config().logging.debug_correlation.as_ref().map(|c| {
            Arc::new(Correlation::new(
                c,
                tokio::time::Instant::now(),
                std::time::SystemTime::now(),
            ))
        });
        Self {
            correlation,
            status_slots: slots(server.max_concurrent_status),
            encrypt_slots: slots(server.max_concurrent_encrypt),
            decrypt_slots: slots(server.max_concurrent_decrypt),
            engine,
        }
    }

    /// The debug-correlation window, when configured (for its log lines).
    pub fn correlation(&self) -> Option<&Arc<Correlation>> {
        self.correlation.as_ref()
    }

    /// The correlation tag of a request with `uid`, while the window is open.
    fn tag(&self, uid: &str) -> Option<Tag> {
        self.correlation.as_ref()?.tag(uid, tokio::time::Instant::now())
    }

    /// Runs one request under its method's limit and records it.
    async fn observe<T, F>(
        &self,
        method: &'static str,
        slots: &Semaphore,
        key_id_hash: Option<String>,
        tag: Option<Tag>,
        f: F,
    ) -> Result<T, Status>
    where
        F: Future<Output = Result<T, KmsError>>,
    {
        let metrics = self.engine.metrics();
        let Ok(_permit) = slots.try_acquire() else {
            metrics
                .grpc_concurrency_rejections
                .get_or_create(&Method { method })
                .inc();
            metrics
                .grpc_requests
                .get_or_create(&MethodStatus {
                    method,
                    status: "resource_exhausted",
                })
                .inc();
            let e = KmsError::new(
                ErrorClass::ConcurrencyLimit,
                format!("too many concurrent {method} requests"),
            );
            return Err(to_status(&e));
        };
        let started = Instant::now();
        let in_flight = metrics.grpc_in_flight.get_or_create(&Method { method }).clone();
        in_flight.inc();
        let result = guarded(metrics, method, correlation::scope(tag.clone(), f)).await;
        in_flight.dec();
        let elapsed = started.elapsed();
        metrics
            .grpc_duration
            .get_or_create(&Method { method })
            .observe(elapsed.as_secs_f64());
        let (status, class) = match &result {
            Ok(_) => ("ok", None),
            Err(e) => (e.class.code().as_str(), Some(e.class.as_str())),
        };
        metrics
            .grpc_requests
            .get_or_create(&MethodStatus { method, status })
            .inc();
        let uid_hash = tag.as_ref().map(|t| t.request_uid_hash.as_str());
        let incident = tag.as_ref().map(|t| &*t.incident);
        let expires_at = tag.as_ref().map(|t| &*t.expires_at);
        match class {
            None => tracing::debug!(
                message = "kms.request",
                operation = method,
                status,
                duration_ms = elapsed.as_millis() as u64,
                key_id_hash = key_id_hash.as_deref(),
                request_uid_hash = uid_hash,
                debug_correlation_incident = incident,
                debug_correlation_expires_at = expires_at
            ),
            Some(class) => tracing::warn!(
                message = "kms.request",
                operation = method,
                status,
                error_class = class,
                duration_ms = elapsed.as_millis() as u64,
                key_id_hash = key_id_hash.as_deref(),
                request_uid_hash = uid_hash,
                debug_correlation_incident = incident,
                debug_correlation_expires_at = expires_at
            ),
        }
        result.map_err(|e| to_status(&e))
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsService {
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let view = self.engine.view();
        let response = match view.key_id() {
            Some(key_id) => StatusResponse {
                version: KMS_API_VERSION.into(),
                healthz: "ok".into(),
                key_id: key_id.to_string(),
            },
            // The healthz text shows up in kube-apiserver's /healthz: codes only.
            None => StatusResponse {
                version: KMS_API_VERSION.into(),
                healthz: "unhealthy".into(),
                key_id: String::new(),
            },
        };
        self.observe("status", &self.status_slots, None, None, async {
            Ok(Response::new(response))
        })
        .await
    }

    async fn encrypt(&self, request: Request<EncryptRequest>) -> Result<Response<EncryptResponse>, Status> {
        let req = request.into_inner();
        let plaintext = zeroize::Zeroizing::new(req.plaintext);
        let tag = self.tag(&req.uid);
        self.observe("encrypt", &self.encrypt_slots, None, tag, async {
            let answer = self.engine.encrypt(&plaintext, &req.uid).await?;
            Ok(Response::new(EncryptResponse {
                ciphertext: answer.ciphertext,
                key_id: answer.key_id.to_string(),
                annotations: answer.annotations.into_iter().collect(),
            }))
        })
        .await
    }

    async fn decrypt(&self, request: Request<DecryptRequest>) -> Result<Response<DecryptResponse>, Status> {
        let req = request.into_inner();
        let hash = (req.key_id.len() <= 1024).then(|| bao_kms_core::hash::h(&req.key_id));
        let tag = self.tag(&req.uid);
        self.observe("decrypt", &self.decrypt_slots, hash, tag, async {
            let plaintext = self
                .engine
                .decrypt(&req.ciphertext, &req.uid, &req.key_id, &req.annotations)
                .await?;
            Ok(Response::new(DecryptResponse {
                plaintext: plaintext.to_vec(),
            }))
        })
        .await
    }
}
