//! Optional OTLP/gRPC export (`telemetry.otlp`) of the metric catalogue and
//! of traces: a span per KMS call ([`crate::service`]) with child spans per
//! OpenBao request ([`crate::openbao`]).
//!
//! Off by default, and then nothing here exists: no tracer, no reader, no
//! span is built on the request path (`Metrics::tracer` is `None`).
//!
//! On, the request path only hands a finished span to a bounded queue
//! ([`QueueProcessor::on_end`], a `try_send`); one task exports the queue in
//! batches with the configured deadline. A full queue or a failed export
//! drops spans and counts them (`openbao_kms_otlp_spans_dropped_total{reason}`);
//! nothing waits for the collector. Metrics are pushed by the SDK's periodic
//! reader on its own thread; failed pushes are counted
//! (`openbao_kms_otlp_metric_export_failures_total`).
//!
//! Header values come from files, are read once at start and never logged.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bao_kms_core::config::OtlpConfig;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, Temporality};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Most spans in one export call.
pub const MAX_EXPORT_BATCH: usize = 512;
/// How long the exporter waits for more spans after the first of a batch.
pub const BATCH_LINGER: Duration = Duration::from_millis(500);
/// The instrumentation scope and `service.name` of everything exported.
pub const SERVICE_NAME: &str = "bao-kms-provider";

/// A setting the exporters cannot be built from; names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.otlp: cannot read {field} {path}: {why}")]
    File {
        field: &'static str,
        path: String,
        why: String,
    },
    #[error("telemetry.otlp.headerFiles.{name}: the value in {path} is not a valid header value (printable ASCII)")]
    HeaderValue { name: String, path: String },
    #[error("telemetry.otlp: {0}")]
    Build(String),
}

/// What export dropped or failed, read by the `openbao_kms_otlp_*` counters.
#[derive(Debug, Default)]
pub struct OtlpStats {
    pub spans_exported: AtomicU64,
    pub spans_dropped_queue_full: AtomicU64,
    pub spans_dropped_export_failed: AtomicU64,
    pub metric_export_failures: AtomicU64,
}

/// The running exporters.
pub struct Otlp {
    /// `Some` when traces are exported.
    pub tracer: Option<SdkTracer>,
    tracer_provider: Option<SdkTracerProvider>,
    /// Taken by the meter provider when metrics are exported.
    pub metric_reader: Option<PeriodicReader<CountingMetricExporter>>,
    pub stats: Arc<OtlpStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    timeout: Duration,
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TelemetryError> {
    std::fs::read(path).map_err(|e| TelemetryError::File {
        field,
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// A credential (a header value, the client key): a regular file, not a
/// symlink, no group write, no execute, no world access, at most 64 KiB,
/// as every other credential file of the provider.
fn read_private(field: &'static str, path: &Path) -> Result<Vec<u8>, TelemetryError> {
    let err = |why: String| TelemetryError::File {
        field,
        path: path.display().to_string(),
        why,
    };
    crate::fsutil::credential_file(path).map_err(err)?;
    read(field, path)
}

/// gRPC metadata from `headerFiles`: each file's content, one trailing
/// newline (`\n` or `\r\n`) removed.
pub fn headers(cfg: &OtlpConfig) -> Result<MetadataMap, TelemetryError> {
    let mut map = MetadataMap::new();
    for (name, path) in &cfg.header_files {
        let raw = zeroize::Zeroizing::new(read_private("headerFiles", path)?);
        let mut value: &[u8] = &raw;
        value = value.strip_suffix(b"\n").unwrap_or(value);
        value = value.strip_suffix(b"\r").unwrap_or(value);
        let bad = || TelemetryError::HeaderValue {
            name: name.clone(),
            path: path.display().to_string(),
        };
        let key = MetadataKey::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let value = MetadataValue::try_from(value).map_err(|_| bad())?;
        map.insert(key, value);
    }
    Ok(map)
}

fn tls(cfg: &OtlpConfig) -> Result<Option<ClientTlsConfig>, TelemetryError> {
    let Some(ca) = &cfg.ca_file else {
        return Ok(None);
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("caFile", ca)?));
    if let (Some(cert), Some(key)) = (&cfg.client_cert_file, &cfg.client_key_file) {
        let key = zeroize::Zeroizing::new(read_private("clientKeyFile", key)?);
        tls = tls.identity(Identity::from_pem(read("clientCertFile", cert)?, &*key));
    }
    Ok(Some(tls))
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name(SERVICE_NAME)
        .with_attribute(opentelemetry::KeyValue::new("service.version", crate::VERSION))
        .build()
}

impl Otlp {
    /// Builds the exporters (inside the runtime: the gRPC channel's worker
    /// is a task of it) and starts the span export task. Nothing connects
    /// yet; a collector that is down shows up as dropped spans and failed
    /// pushes, never as a start failure.
    pub fn start(cfg: &OtlpConfig) -> Result<Self, TelemetryError> {
        let stats = Arc::new(OtlpStats::default());
        let metadata = headers(cfg)?;
        let tls = tls(cfg)?;
        let resource = resource();
        let build_err = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Build(e.to_string());

        let metric_reader = if cfg.metrics {
            let mut builder = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(cfg.endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_metadata(metadata.clone());
            if let Some(tls) = &tls {
                builder = builder.with_tls_config(tls.clone());
            }
            let exporter = builder
                .with_temporality(Temporality::Cumulative)
                .build()
                .map_err(build_err)?;
            let counting = CountingMetricExporter {
                inner: exporter,
                stats: stats.clone(),
            };
            Some(
                PeriodicReader::builder(counting)
                    .with_interval(cfg.export_interval)
                    .build(),
            )
        } else {
            None
        };

        let (mut tracer, mut tracer_provider, mut stop, mut task) = (None, None, None, None);
        if cfg.traces {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(cfg.endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_metadata(metadata);
            if let Some(tls) = tls {
                builder = builder.with_tls_config(tls);
            }
            let mut exporter = builder.build().map_err(build_err)?;
            exporter.set_resource(&resource);
            let (tx, rx) = mpsc::channel(cfg.max_queue_size as usize);
            let (stop_tx, stop_rx) = oneshot::channel();
            let batch = MAX_EXPORT_BATCH.min(cfg.max_queue_size as usize);
            task = Some(tokio::spawn(export_spans(
                rx,
                stop_rx,
                exporter,
                (batch, cfg.timeout),
                stats.clone(),
            )));
            stop = Some(stop_tx);
            let provider = SdkTracerProvider::builder()
                .with_span_processor(QueueProcessor {
                    tx,
                    stats: stats.clone(),
                })
                .with_resource(resource)
                .build();
            tracer = Some(provider.tracer(SERVICE_NAME));
            tracer_provider = Some(provider);
        }
        Ok(Self {
            tracer,
            tracer_provider,
            metric_reader,
            stats,
            stop,
            task,
            timeout: cfg.timeout,
        })
    }

    /// The deadline of one export call.
    pub fn export_timeout(&self) -> Duration {
        self.timeout
    }

    /// Exports the spans still queued (within one export deadline) and
    /// stops the export task. Metrics are pushed a last time when the
    /// meter provider is dropped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(self.timeout + Duration::from_secs(1), task).await;
        }
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Hands finished spans to the export task without waiting: a full queue
/// drops the span and counts it.
#[derive(Debug)]
struct QueueProcessor {
    tx: mpsc::Sender<SpanData>,
    stats: Arc<OtlpStats>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.stats.spans_dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: batches of up to `max_batch` spans (the smaller of
/// [`MAX_EXPORT_BATCH`] and the queue size, so at most twice the queue
/// size is held), each export bounded by `timeout`; a failed or late export
/// drops its spans (counted). On stop, what is queued is exported once more.
async fn export_spans(
    mut rx: mpsc::Receiver<SpanData>,
    mut stop: oneshot::Receiver<()>,
    exporter: opentelemetry_otlp::SpanExporter,
    (max_batch, timeout): (usize, Duration),
    stats: Arc<OtlpStats>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                n = rx.recv_many(&mut batch, max_batch) => if n == 0 { stopping = true; },
                _ = &mut stop => stopping = true,
            }
        }
        if stopping {
            rx.close();
            loop {
                let room = max_batch - batch.len();
                if room == 0 || rx.recv_many(&mut batch, room).await == 0 {
                    break;
                }
            }
        } else {
            let linger = tokio::time::Instant::now() + BATCH_LINGER;
            while batch.len() < max_batch {
                let room = max_batch - batch.len();
                let more = tokio::time::timeout_at(linger, rx.recv_many(&mut batch, room));
                if !matches!(more.await, Ok(n) if n > 0) {
                    break;
                }
            }
        }
        if batch.is_empty() {
            if stopping {
                break;
            }
            continue;
        }
        let count = batch.len() as u64;
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(max_batch));
        match tokio::time::timeout(timeout, exporter.export(spans)).await {
            Ok(Ok(())) => stats.spans_exported.fetch_add(count, Ordering::Relaxed),
            _ => stats.spans_dropped_export_failed.fetch_add(count, Ordering::Relaxed),
        };
    }
    let _ = exporter.shutdown();
}

/// The OTLP metric exporter, counting failed pushes.
pub struct CountingMetricExporter {
    inner: opentelemetry_otlp::MetricExporter,
    stats: Arc<OtlpStats>,
}

impl PushMetricExporter for CountingMetricExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if result.is_err() {
            self.stats.metric_export_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// The gRPC service name of the KMS v2 API, as spans name it.
pub const KMS_SERVICE: &str = "v2.KeyManagementService";

/// The gRPC method name of a KMS lane (`status` -> `Status`).
fn rpc_method(method: &str) -> &'static str {
    match method {
        "status" => "Status",
        "encrypt" => "Encrypt",
        "decrypt" => "Decrypt",
        _ => "Unknown",
    }
}

/// Reads a W3C `traceparent` (and `tracestate`) from a call's gRPC
/// metadata; `None` without a valid one.
pub fn remote_parent(metadata: &tonic::metadata::MetadataMap) -> Option<opentelemetry::Context> {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    struct Metadata<'a>(&'a tonic::metadata::MetadataMap);
    impl opentelemetry::propagation::Extractor for Metadata<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0
                .keys()
                .filter_map(|k| match k {
                    tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                    tonic::metadata::KeyRef::Binary(_) => None,
                })
                .collect()
        }
    }
    metadata.get("traceparent")?;
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Metadata(metadata));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Starts the server span of one KMS call (`v2.KeyManagementService/Decrypt`),
/// a child of the caller's span when the call runs in its context
/// ([`remote_parent`]), and returns the context the call runs in. Attributes: the RPC's names,
/// `kms.operation` and, when known, `kms.key_id_hash` (the key_id's hash,
/// never the key_id, plaintext, ciphertext or a token).
pub fn kms_span(tracer: &SdkTracer, method: &'static str, key_id_hash: Option<&str>) -> opentelemetry::Context {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
    let rpc = rpc_method(method);
    let mut attributes = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", KMS_SERVICE),
        KeyValue::new("rpc.method", rpc),
        KeyValue::new("kms.operation", method),
    ];
    if let Some(hash) = key_id_hash {
        attributes.push(KeyValue::new("kms.key_id_hash", hash.to_owned()));
    }
    let span = tracer
        .span_builder(format!("{KMS_SERVICE}/{rpc}"))
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start(tracer);
    opentelemetry::Context::current_with_span(span)
}

/// Ends the KMS span of `cx` with the call's gRPC code and, on failure,
/// the error class (`kms.error_class`, also the span status' description);
/// `error` is the failure and the gRPC code it was answered with.
pub fn end_kms_span(cx: &opentelemetry::Context, error: Option<(&bao_kms_core::errors::KmsError, i64)>) {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Status, TraceContextExt as _};
    let span = cx.span();
    match error {
        None => {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", 0_i64));
            span.set_status(Status::Ok);
        }
        Some((e, code)) => {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
            span.set_attribute(KeyValue::new("kms.error_class", e.class.as_str()));
            span.set_attribute(KeyValue::new("error.type", e.class.as_str()));
            span.set_status(Status::error(e.class.as_str()));
        }
    }
    span.end();
}

/// Puts the key_id's hash on the KMS span the current task runs in (a
/// no-op without one).
pub fn record_key_id_hash(hash: String) {
    opentelemetry::trace::get_active_span(|span| {
        span.set_attribute(opentelemetry::KeyValue::new("kms.key_id_hash", hash));
    });
}

/// Starts the client span of one OpenBao request (`openbao transit_decrypt`),
/// a child of the KMS call it serves when there is one.
pub fn openbao_span(tracer: &SdkTracer, operation: &'static str) -> opentelemetry_sdk::trace::Span {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanKind, Tracer as _};
    tracer
        .span_builder(format!("openbao {operation}"))
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("openbao.operation", operation)])
        .start(tracer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config(endpoint: &str) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            header_files: Vec::new(),
            export_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            max_queue_size: 8,
            traces: true,
            metrics: true,
        }
    }

    fn private(path: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_header_file_readable_by_everyone_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::write(&open, "Bearer abc").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cfg = config("http://127.0.0.1:4317");
        cfg.header_files = vec![("authorization".into(), open)];
        let e = headers(&cfg).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("0640 or stricter"), "{e}");
        assert!(!e.contains("Bearer"), "{e}");
    }

    #[test]
    fn header_values_come_from_files_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "Bearer abc\n").unwrap();
        std::fs::write(&b, "tenant-1\r\n").unwrap();
        private(&a);
        private(&b);
        let mut cfg = config("http://127.0.0.1:4317");
        cfg.header_files = vec![("authorization".into(), a), ("x-tenant".into(), b)];
        let map = headers(&cfg).unwrap();
        assert_eq!(map.get("authorization").unwrap(), "Bearer abc");
        assert_eq!(map.get("x-tenant").unwrap(), "tenant-1");
    }

    #[test]
    fn a_bad_header_file_names_the_file_and_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "secret-\u{1}-value").unwrap();
        private(&bad);
        let mut cfg = config("http://127.0.0.1:4317");
        cfg.header_files = vec![("authorization".into(), bad.clone())];
        let e = headers(&cfg).unwrap_err().to_string();
        assert!(
            e.contains(&bad.display().to_string()) && e.contains("headerFiles.authorization"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        cfg.header_files = vec![("authorization".into(), dir.path().join("missing"))];
        let e = headers(&cfg).unwrap_err().to_string();
        assert!(e.contains("cannot read headerFiles") && e.contains("missing"), "{e}");
    }

    #[test]
    fn a_caller_trace_context_is_read_only_when_valid() {
        use opentelemetry::trace::TraceContextExt as _;
        let md = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("traceparent", v.parse().unwrap());
            m
        };
        let cx = remote_parent(&md("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).unwrap();
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(cx.span().span_context().is_remote());
        assert!(remote_parent(&md("00-00000000000000000000000000000000-00f067aa0ba902b7-01")).is_none());
        assert!(remote_parent(&md("garbage")).is_none());
        assert!(remote_parent(&MetadataMap::new()).is_none());
    }
}
