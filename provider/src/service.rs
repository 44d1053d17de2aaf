//! The KMS v2 gRPC service kube-apiserver calls over the Unix socket.
//! Each method: a concurrency limit with a bounded, deadline-aware wait
//! queue in front of it ([`Lane`]; the decisions are in
//! `bao_kms_core::admission::queue`), metrics, one log line (debug for a
//! success; a failure's warn line within the per-class budget of
//! [`crate::request_log`]), and the single mapping from error class to
//! gRPC code in [`to_status`].
//!
//! A panic inside a handler is caught ([`guarded`]): the call fails with
//! `Internal` ("kms request failed"), `openbao_kms_panic_recoveries_total`
//! counts it, and the socket keeps serving; without the catch the panic
//! would end the connection's task and kube-apiserver would see a reset
//! HTTP/2 stream instead of a status.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bao_kms_core::admission::queue::{self, Ewma, QueueLimits, Queued};
use bao_kms_core::errors::{ErrorClass, KmsCode, KmsError};
use bao_kms_proto::v2::key_management_service_server::KeyManagementService;
use bao_kms_proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use futures_util::FutureExt as _;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};

use crate::correlation::{self, Correlation, Tag};
use crate::metrics::{Counter, Histogram, Method, MethodStatus, Metrics, UpDown};
use crate::runtime::Engine;
use crate::telemetry;
use opentelemetry::context::FutureExt as _;

/// The KMS API version reported by Status; must never change.
pub const KMS_API_VERSION: &str = "v2";

pub struct KmsService {
    engine: Arc<Engine>,
    status: Lane,
    encrypt: Lane,
    decrypt: Lane,
    /// `logging.debugCorrelation`, its window opened when the service is made.
    correlation: Option<Arc<Correlation>>,
}

/// One method's slots (`server.maxConcurrent*`), the calls waiting for one
/// (at most `server.maxQueued*`), the mean call duration the expected wait
/// is estimated from, and the method's metric series.
struct Lane {
    method: &'static str,
    slots: Semaphore,
    limits: QueueLimits,
    waiting: AtomicU32,
    mean_call: AtomicU64,
    in_flight: UpDown,
    queued: UpDown,
    duration: Histogram,
    queue_wait: Histogram,
    /// `openbao_kms_grpc_requests_total{status="ok"}`, bound once.
    ok: Counter,
}

/// Gives back a queue place (and the queued gauge) when the wait ends,
/// however it ends (slot, refusal, or the caller going away).
struct QueuePlace<'a> {
    lane: &'a Lane,
    counted: bool,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.lane.waiting.fetch_sub(1, Ordering::AcqRel);
        if self.counted {
            self.lane.queued.dec();
        }
    }
}

impl Lane {
    fn new(method: &'static str, concurrent: u32, queued: u32, max_wait: Duration, metrics: &Metrics) -> Self {
        let label = Method { method };
        Self {
            method,
            slots: Semaphore::new(concurrent as usize),
            limits: QueueLimits {
                concurrent,
                queued,
                max_wait,
            },
            waiting: AtomicU32::new(0),
            mean_call: AtomicU64::new(0),
            in_flight: metrics.grpc_in_flight.get_or_create(&label),
            queued: metrics.grpc_queued.get_or_create(&label),
            duration: metrics.grpc_duration.get_or_create(&label),
            queue_wait: metrics.grpc_queue_wait.get_or_create(&label),
            ok: metrics
                .grpc_requests
                .get_or_create(&MethodStatus { method, status: "ok" }),
        }
    }

    /// A slot now, or after a wait in the queue, or the refusal.
    async fn slot(&self, metrics: &Metrics, remaining: Option<Duration>) -> Result<SemaphorePermit<'_>, KmsError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        let mut place = QueuePlace {
            lane: self,
            counted: false,
        };
        let mean = Ewma(self.mean_call.load(Ordering::Relaxed)).mean();
        let label = Method { method: self.method };
        let bound = match queue::admit(self.method, self.limits, waiting, mean, remaining) {
            Queued::Wait(bound) => bound,
            Queued::Reject(e) => {
                let family = if e.class == ErrorClass::ConcurrencyLimit {
                    &metrics.grpc_concurrency_rejections
                } else {
                    &metrics.grpc_deadline_rejections
                };
                family.get_or_create(&label).inc();
                return Err(e);
            }
        };
        self.queued.inc();
        place.counted = true;
        let started = Instant::now();
        match tokio::time::timeout(bound, self.slots.acquire()).await {
            Ok(Ok(permit)) => {
                self.queue_wait.observe(started.elapsed().as_secs_f64());
                Ok(permit)
            }
            // The semaphore is never closed; a closed one would mean shutdown.
            Ok(Err(_)) => Err(KmsError::new(ErrorClass::Canceled, "the provider is shutting down")),
            Err(_) => {
                self.queue_wait.observe(started.elapsed().as_secs_f64());
                metrics.grpc_deadline_rejections.get_or_create(&label).inc();
                Err(queue::wait_expired(self.method, started.elapsed()))
            }
        }
    }

    fn record_call(&self, elapsed: Duration) {
        let old = Ewma(self.mean_call.load(Ordering::Relaxed));
        self.mean_call.store(old.update(elapsed).0, Ordering::Relaxed);
    }
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
                operation = log_operation(method),
                status = "error",
                grpc_code = ErrorClass::Panic.code().as_str(),
                error_class = ErrorClass::Panic.as_str(),
                panic_recovered = true,
                panic_type = panic_type(payload.as_ref()),
            );
            Err(KmsError::new(ErrorClass::Panic, PANIC_MESSAGE))
        }
    }
}

/// The `operation` of a `kms.request` line: `kms.` and the method, as the
/// interface's log fields name it (the metric label is the bare method).
fn log_operation(method: &str) -> &'static str {
    match method {
        "status" => "kms.status",
        "encrypt" => "kms.encrypt",
        "decrypt" => "kms.decrypt",
        _ => "kms.unknown",
    }
}

/// The hash a log line shows for a request's key_id; computed only when
/// a line is written (an oversized key_id is not hashed).
fn key_id_hash(key_id: Option<&str>) -> Option<String> {
    key_id.filter(|k| k.len() <= 1024).map(bao_kms_core::hash::h)
}

/// Runs `call` in the caller's trace context, when it sent one: the KMS
/// span becomes a child of the caller's span.
async fn under<T>(parent: Option<opentelemetry::Context>, call: impl Future<Output = T>) -> T {
    match parent {
        Some(cx) => call.with_context(cx).await,
        None => call.await,
    }
}

/// The caller's remaining deadline (`grpc-timeout`), if it sent one.
fn remaining_deadline<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    queue::parse_grpc_timeout(value)
}

impl KmsService {
    pub fn new(engine: Arc<Engine>) -> Self {
        let server = &engine.config().server;
        let metrics = engine.metrics();
        let wait = server.max_queue_wait;
        let correlation = engine.config().logging.debug_correlation.as_ref().map(|c| {
            Arc::new(Correlation::new(
                c,
                tokio::time::Instant::now(),
                std::time::SystemTime::now(),
            ))
        });
        Self {
            correlation,
            status: Lane::new(
                "status",
                server.max_concurrent_status,
                server.max_queued_status,
                wait,
                metrics,
            ),
            encrypt: Lane::new(
                "encrypt",
                server.max_concurrent_encrypt,
                server.max_queued_encrypt,
                wait,
                metrics,
            ),
            decrypt: Lane::new(
                "decrypt",
                server.max_concurrent_decrypt,
                server.max_queued_decrypt,
                wait,
                metrics,
            ),
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

    /// The caller's W3C trace context (`traceparent`), with OTLP traces on.
    fn remote_parent<T>(&self, request: &Request<T>) -> Option<opentelemetry::Context> {
        self.engine.metrics().tracer.as_ref()?;
        telemetry::remote_parent(request.metadata())
    }

    /// Runs one request under its method's limit and records it.
    async fn observe<T, F>(
        &self,
        lane: &Lane,
        remaining: Option<Duration>,
        key_id: Option<&str>,
        tag: Option<Tag>,
        f: F,
    ) -> Result<T, Status>
    where
        F: Future<Output = Result<T, KmsError>>,
    {
        let method = lane.method;
        let metrics = self.engine.metrics();
        // With OTLP traces only: the call's span covers the queue wait too.
        let span = metrics
            .tracer
            .as_ref()
            .map(|t| telemetry::kms_span(t, method, key_id_hash(key_id).as_deref()));
        let _permit = match lane.slot(metrics, remaining).await {
            Ok(permit) => permit,
            Err(e) => {
                if let Some(cx) = &span {
                    telemetry::end_kms_span(cx, Some((&e, to_status(&e).code() as i64)));
                }
                let status = e.class.code().as_str();
                metrics
                    .grpc_requests
                    .get_or_create(&MethodStatus { method, status })
                    .inc();
                if metrics.request_log.admit("kms.request", e.class.as_str()) {
                    tracing::warn!(
                        message = "kms.request",
                        operation = log_operation(method),
                        status = "error",
                        grpc_code = status,
                        error_class = e.class.as_str(),
                        error = %e.message,
                        key_id_hash = key_id_hash(key_id).as_deref()
                    );
                }
                return Err(to_status(&e));
            }
        };
        let started = Instant::now();
        lane.in_flight.inc();
        let call = correlation::scope(tag.clone(), f);
        let result = match &span {
            None => guarded(metrics, method, call).await,
            Some(cx) => guarded(metrics, method, call.with_context(cx.clone())).await,
        };
        if let Some(cx) = &span {
            let error = result.as_ref().err().map(|e| (e, to_status(e).code() as i64));
            telemetry::end_kms_span(cx, error);
        }
        lane.in_flight.dec();
        let elapsed = started.elapsed();
        lane.duration.observe(elapsed.as_secs_f64());
        lane.record_call(elapsed);
        let (status, class) = match &result {
            Ok(_) => ("ok", None),
            Err(e) => (e.class.code().as_str(), Some(e.class.as_str())),
        };
        if class.is_none() {
            lane.ok.inc();
        } else {
            metrics
                .grpc_requests
                .get_or_create(&MethodStatus { method, status })
                .inc();
        }
        let uid_hash = tag.as_ref().map(|t| t.request_uid_hash.as_str());
        let incident = tag.as_ref().map(|t| &*t.incident);
        let expires_at = tag.as_ref().map(|t| &*t.expires_at);
        match class {
            None => tracing::debug!(
                message = "kms.request",
                operation = log_operation(method),
                status,
                duration_ms = elapsed.as_millis() as u64,
                key_id_hash = key_id_hash(key_id).as_deref(),
                request_uid_hash = uid_hash,
                debug_correlation_incident = incident,
                debug_correlation_expires_at = expires_at
            ),
            // A panic logged its own error line; the budget covers the rest.
            Some(class) if metrics.request_log.admit("kms.request", class) => tracing::warn!(
                message = "kms.request",
                operation = log_operation(method),
                status = "error",
                grpc_code = status,
                error_class = class,
                duration_ms = elapsed.as_millis() as u64,
                key_id_hash = key_id_hash(key_id).as_deref(),
                request_uid_hash = uid_hash,
                debug_correlation_incident = incident,
                debug_correlation_expires_at = expires_at
            ),
            Some(_) => {}
        }
        result.map_err(|e| to_status(&e))
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsService {
    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let remaining = remaining_deadline(&request);
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
        let traced = self.engine.metrics().tracer.is_some();
        let parent = self.remote_parent(&request);
        let call = self.observe(&self.status, remaining, None, None, async {
            if traced && !response.key_id.is_empty() {
                telemetry::record_key_id_hash(bao_kms_core::hash::h(&response.key_id));
            }
            Ok(Response::new(response))
        });
        under(parent, call).await
    }

    async fn encrypt(&self, request: Request<EncryptRequest>) -> Result<Response<EncryptResponse>, Status> {
        let remaining = remaining_deadline(&request);
        let parent = self.remote_parent(&request);
        let req = request.into_inner();
        let plaintext = zeroize::Zeroizing::new(req.plaintext);
        let tag = self.tag(&req.uid);
        let traced = self.engine.metrics().tracer.is_some();
        let call = self.observe(&self.encrypt, remaining, None, tag, async {
            let answer = self.engine.encrypt(&plaintext, &req.uid).await?;
            if traced {
                telemetry::record_key_id_hash(answer.key_id.hash());
            }
            Ok(Response::new(EncryptResponse {
                ciphertext: answer.ciphertext,
                key_id: answer.key_id.to_string(),
                annotations: answer.annotations.into_iter().collect(),
            }))
        });
        under(parent, call).await
    }

    async fn decrypt(&self, request: Request<DecryptRequest>) -> Result<Response<DecryptResponse>, Status> {
        let remaining = remaining_deadline(&request);
        let parent = self.remote_parent(&request);
        let req = request.into_inner();
        let tag = self.tag(&req.uid);
        let call = self.observe(&self.decrypt, remaining, Some(&req.key_id), tag, async {
            let plaintext = self
                .engine
                .decrypt(&req.ciphertext, &req.uid, &req.key_id, &req.annotations)
                .await?;
            Ok(Response::new(DecryptResponse {
                plaintext: plaintext.to_vec(),
            }))
        });
        under(parent, call).await
    }
}
