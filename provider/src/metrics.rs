//! The metric catalogue: metric names, label sets, help texts and histogram
//! buckets are a stable interface for dashboards and alert rules (see
//! docs/operations.md). Labels only ever carry bounded, fixed vocabularies:
//! never key_ids (only their hash), paths, key names, UIDs or error text.
//!
//! Every value is recorded through the OpenTelemetry metrics API into one
//! SDK meter provider, read by the `opentelemetry-prometheus` exporter that
//! `/metrics` serves ([`exposition`] writes the text). The call sites keep
//! the shape of a labelled family:
//! `metrics.grpc_requests.get_or_create(&MethodStatus { .. }).inc()`.

mod exposition;
mod spec;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _, ObservableGauge};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::request_log::RequestLog;

pub use exposition::CONTENT_TYPE;
pub use spec::{Kind, Spec};

const fn spec(name: &'static str, kind: Kind, labels: &'static [&'static str], help: &'static str) -> Spec {
    Spec {
        name,
        help,
        kind,
        labels,
        unit: "",
    }
}

const fn seconds(s: Spec) -> Spec {
    Spec { unit: "s", ..s }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};

pub const GRPC_REQUESTS: Spec = spec(
    "openbao_kms_grpc_requests",
    C,
    &["method", "status"],
    "KMS gRPC requests by method and status",
);
pub const GRPC_DURATION: Spec = seconds(spec(
    "openbao_kms_grpc_duration_seconds",
    H,
    &["method"],
    "KMS gRPC request latency",
));
pub const GRPC_IN_FLIGHT: Spec = spec(
    "openbao_kms_grpc_in_flight",
    G,
    &["method"],
    "KMS gRPC requests in flight",
);
pub const GRPC_CONCURRENCY_REJECTIONS: Spec = spec(
    "openbao_kms_grpc_concurrency_rejections",
    C,
    &["method"],
    "KMS gRPC requests rejected by the concurrency limit",
);
pub const GRPC_QUEUED: Spec = spec(
    "openbao_kms_grpc_queued",
    G,
    &["method"],
    "KMS gRPC requests waiting for a free slot of their method",
);
pub const GRPC_QUEUE_WAIT: Spec = seconds(spec(
    "openbao_kms_grpc_queue_wait_seconds",
    H,
    &["method"],
    "Time KMS gRPC requests waited for a free slot (only requests that waited)",
));
pub const GRPC_DEADLINE_REJECTIONS: Spec = spec(
    "openbao_kms_grpc_deadline_rejections",
    C,
    &["method"],
    "KMS gRPC requests refused because their deadline could not cover the queue wait and the call",
);
pub const TRANSIT_DECRYPT_BATCH_SIZE: Spec = spec(
    "openbao_kms_transit_decrypt_batch_size",
    H,
    &[],
    "Distinct Decrypts carried by one Transit decrypt call (1: a single call)",
);
pub const TRANSIT_DECRYPT_BATCH_FALLBACKS: Spec = spec(
    "openbao_kms_transit_decrypt_batch_fallbacks",
    C,
    &[],
    "Transit batch decrypt calls refused or answered unusably, whose items were then decrypted one by one",
);
pub const OPENBAO_REQUESTS: Spec = spec(
    "openbao_kms_openbao_requests",
    C,
    &["operation", "status"],
    "OpenBao requests by operation and status",
);
pub const OPENBAO_DURATION: Spec = seconds(spec(
    "openbao_kms_openbao_duration_seconds",
    H,
    &["operation"],
    "OpenBao request latency",
));
pub const AUTH_LOGIN: Spec = spec("openbao_kms_auth_login", C, &["status"], "OpenBao logins by status");
pub const AUTH_RENEWAL: Spec = spec(
    "openbao_kms_auth_renewal",
    C,
    &["status"],
    "OpenBao token renewals by status",
);
pub const AUTH_METHOD_INFO: Spec = spec(
    "openbao_kms_auth_method_info",
    G,
    &["method"],
    "Configured OpenBao auth method",
);
pub const TOKEN_TTL_SECONDS: Spec = seconds(spec(
    "openbao_kms_token_ttl_seconds",
    G,
    &[],
    "Remaining TTL of the OpenBao token",
));
pub const CERTIFICATE_SOURCE_INFO: Spec = spec(
    "openbao_kms_certificate_source_info",
    G,
    &["source"],
    "Source of the client certificate for cert auth (none without cert auth)",
);
pub const CERTIFICATE_TTL_SECONDS: Spec = seconds(spec(
    "openbao_kms_certificate_ttl_seconds",
    G,
    &[],
    "Seconds until the client certificate of the last cert login expires (0 without cert auth or once expired)",
));
pub const STATUS_KEY_ID_HASH: Spec = spec(
    "openbao_kms_status_key_id_hash",
    G,
    &["hash"],
    "Hash of the active key_id (1 for the active hash; absent without an active key)",
);
pub const KEY_VERSION: Spec = spec("openbao_kms_key_version", G, &[], "Active Transit key version");
pub const STATUS_CACHE_AGE_SECONDS: Spec = seconds(spec(
    "openbao_kms_status_cache_age_seconds",
    G,
    &[],
    "Age of the status snapshot Status is answered from",
));
pub const TRANSIT_METADATA_OBSERVATION: Spec = spec(
    "openbao_kms_transit_metadata_observation",
    C,
    &["status"],
    "Transit key metadata observations by status",
);
pub const ROTATION_STATE: Spec = spec(
    "openbao_kms_rotation_state",
    G,
    &["state"],
    "Rotation state (1 for the current state)",
);
pub const ROTATION_PERSISTENCE_DEGRADED: Spec = spec(
    "openbao_kms_rotation_persistence_degraded",
    G,
    &[],
    "1 while the state directory refuses writes (a registry save or the writability check failed)",
);
pub const ROTATION_PROMOTIONS: Spec = spec(
    "openbao_kms_rotation_promotions",
    C,
    &[],
    "Rotation promotions persisted by this process (a new active Transit version)",
);
pub const AAD_VALIDATION_ERRORS: Spec = spec(
    "openbao_kms_aad_validation_errors",
    C,
    &["reason"],
    "Decrypt requests refused by annotation/AAD checks",
);
pub const DECRYPT_KEY_ID_ERRORS: Spec = spec(
    "openbao_kms_decrypt_key_id_errors",
    C,
    &["reason"],
    "Decrypt requests refused by key_id checks",
);
pub const SOCKET_RESTARTS: Spec = spec(
    "openbao_kms_socket_restarts",
    C,
    &[],
    "Verified-dead stale sockets removed before bind",
);
pub const PANIC_RECOVERIES: Spec = spec(
    "openbao_kms_panic_recoveries",
    C,
    &["method"],
    "KMS requests whose handler panicked; the panic was caught and the call failed with Internal",
);
pub const ACCEPT_ERRORS: Spec = spec(
    "openbao_kms_accept_errors",
    C,
    &["listener", "kind"],
    "Failed accepts by listener and cause; the listener waits (bounded backoff) before the next one",
);
pub const LOG_LINES_SUPPRESSED: Spec = spec(
    "openbao_kms_log_lines_suppressed",
    C,
    &["event"],
    "Warning lines not written because their event and error class used up the log budget of the window (logging.requestLogBurst per logging.requestLogWindow; a listener's accept failures: one line per 10s)",
);
pub const CONNECTIONS_REFUSED: Spec = spec(
    "openbao_kms_connections_refused",
    C,
    &["listener"],
    "Connections closed at accept because the listener held its maximum",
);
pub const CONNECTIONS_TIMED_OUT: Spec = spec(
    "openbao_kms_connections_timed_out",
    C,
    &["listener"],
    "Connections closed by the header-read timeout (HTTP) or the idle timeout (KMS)",
);
pub const CONNECTIONS_OPEN: Spec = spec(
    "openbao_kms_connections_open",
    G,
    &["listener"],
    "Connections a listener holds open now",
);
pub const LAST_EXIT_INFO: Spec = spec(
    "openbao_kms_last_exit_info",
    G,
    &["reason"],
    "Reason code of the last fail-closed exit, from <state.path>.last-exit (1; absent when none was recorded)",
);
pub const LAST_EXIT_TIMESTAMP: Spec = spec(
    "openbao_kms_last_exit_timestamp_seconds",
    G,
    &[],
    "Unix time of the last fail-closed exit (absent when none was recorded)",
);
pub const BUILD_INFO: Spec = spec(
    "openbao_kms_build_info",
    G,
    &["version", "commit", "build_date", "dirty"],
    "Build information (always 1)",
);

// The process collector's families (the `prometheus` crate's, read from
// /proc/self at every scrape; the names of Prometheus' standard process
// collector). CPU time is counted in whole seconds.
pub const PROCESS_CPU_SECONDS: Spec = spec(
    "process_cpu_seconds",
    C,
    &[],
    "Total user and system CPU time spent in seconds",
);
pub const PROCESS_OPEN_FDS: Spec = spec("process_open_fds", G, &[], "Number of open file descriptors");
pub const PROCESS_MAX_FDS: Spec = spec(
    "process_max_fds",
    G,
    &[],
    "Maximum number of open file descriptors (soft limit)",
);
pub const PROCESS_VIRTUAL_MEMORY_BYTES: Spec =
    spec("process_virtual_memory_bytes", G, &[], "Virtual memory size in bytes");
pub const PROCESS_RESIDENT_MEMORY_BYTES: Spec =
    spec("process_resident_memory_bytes", G, &[], "Resident memory size in bytes");
pub const PROCESS_START_TIME_SECONDS: Spec = spec(
    "process_start_time_seconds",
    G,
    &[],
    "Start time of the process since unix epoch in seconds",
);
pub const PROCESS_THREADS: Spec = spec("process_threads", G, &[], "Number of OS threads in the process");

/// Every family, in exposition order.
pub const CATALOGUE: [Spec; 43] = [
    GRPC_REQUESTS,
    GRPC_DURATION,
    GRPC_IN_FLIGHT,
    GRPC_CONCURRENCY_REJECTIONS,
    GRPC_QUEUED,
    GRPC_QUEUE_WAIT,
    GRPC_DEADLINE_REJECTIONS,
    TRANSIT_DECRYPT_BATCH_SIZE,
    TRANSIT_DECRYPT_BATCH_FALLBACKS,
    OPENBAO_REQUESTS,
    OPENBAO_DURATION,
    AUTH_LOGIN,
    AUTH_RENEWAL,
    AUTH_METHOD_INFO,
    TOKEN_TTL_SECONDS,
    CERTIFICATE_SOURCE_INFO,
    CERTIFICATE_TTL_SECONDS,
    STATUS_KEY_ID_HASH,
    KEY_VERSION,
    STATUS_CACHE_AGE_SECONDS,
    TRANSIT_METADATA_OBSERVATION,
    ROTATION_STATE,
    ROTATION_PERSISTENCE_DEGRADED,
    ROTATION_PROMOTIONS,
    AAD_VALIDATION_ERRORS,
    DECRYPT_KEY_ID_ERRORS,
    SOCKET_RESTARTS,
    PANIC_RECOVERIES,
    ACCEPT_ERRORS,
    LOG_LINES_SUPPRESSED,
    CONNECTIONS_REFUSED,
    CONNECTIONS_TIMED_OUT,
    CONNECTIONS_OPEN,
    LAST_EXIT_INFO,
    LAST_EXIT_TIMESTAMP,
    BUILD_INFO,
    PROCESS_CPU_SECONDS,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_VIRTUAL_MEMORY_BYTES,
    PROCESS_RESIDENT_MEMORY_BYTES,
    PROCESS_START_TIME_SECONDS,
    PROCESS_THREADS,
];

pub const OTLP_SPANS_EXPORTED: Spec = spec(
    "openbao_kms_otlp_spans_exported",
    C,
    &[],
    "Spans exported over OTLP (only with telemetry.otlp)",
);
pub const OTLP_SPANS_DROPPED: Spec = spec(
    "openbao_kms_otlp_spans_dropped",
    C,
    &["reason"],
    "Spans not exported over OTLP: queue_full (the export queue was full) or export_failed (the collector refused, failed or did not answer in time) (only with telemetry.otlp)",
);
pub const OTLP_METRIC_EXPORT_FAILURES: Spec = spec(
    "openbao_kms_otlp_metric_export_failures",
    C,
    &[],
    "OTLP metric pushes that failed (only with telemetry.otlp)",
);

/// Families written after [`CATALOGUE`] when `telemetry.otlp` is on; a
/// provider without OTLP exposes exactly [`CATALOGUE`].
pub const OTLP_CATALOGUE: [Spec; 3] = [OTLP_SPANS_EXPORTED, OTLP_SPANS_DROPPED, OTLP_METRIC_EXPORT_FAILURES];

/// Latency buckets: 1 ms doubling to 2.048 s, 12 buckets.
pub fn latency_buckets() -> Vec<f64> {
    std::iter::successors(Some(0.001_f64), |b| Some(b * 2.0))
        .take(12)
        .collect()
}

/// Batch size buckets: 1 doubling to 256, 9 buckets.
pub fn batch_size_buckets() -> Vec<f64> {
    std::iter::successors(Some(1.0_f64), |b| Some(b * 2.0))
        .take(9)
        .collect()
}

/// A label struct as OpenTelemetry attributes.
pub trait LabelSet {
    fn attributes(&self) -> Vec<KeyValue>;
}

macro_rules! label_sets {
    ($($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),+ })+) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug, Hash, PartialEq, Eq)]
        pub struct $name {
            $(pub $field: $ty,)+
        }

        impl LabelSet for $name {
            fn attributes(&self) -> Vec<KeyValue> {
                vec![$(KeyValue::new(stringify!($field), self.$field.clone()),)+]
            }
        }
    )+};
}

label_sets! {
    MethodStatus { method: &'static str, status: &'static str }
    Method { method: &'static str }
    OperationStatus { operation: &'static str, status: &'static str }
    Operation { operation: &'static str }
    Status { status: &'static str }
    Reason { reason: &'static str }
    HashLabel { hash: String }
    State { state: &'static str }
    AuthMethodLabel { method: &'static str }
    CertificateSource { source: &'static str }
    Listener { listener: &'static str }
    ListenerKind { listener: &'static str, kind: &'static str }
    Event { event: &'static str }
    BuildInfo { version: &'static str, commit: &'static str, build_date: &'static str, dirty: &'static str }
}

/// A monotonic count (`_total` in the exposition).
#[derive(Clone)]
pub struct Counter {
    inner: opentelemetry::metrics::Counter<u64>,
    attributes: Vec<KeyValue>,
}

impl Counter {
    pub fn inc(&self) {
        self.inner.add(1, &self.attributes);
    }
}

/// An integer gauge that is set.
#[derive(Clone)]
pub struct Gauge {
    inner: opentelemetry::metrics::Gauge<i64>,
    attributes: Vec<KeyValue>,
}

impl Gauge {
    pub fn set(&self, value: i64) {
        self.inner.record(value, &self.attributes);
    }
}

/// A floating-point gauge that is set.
#[derive(Clone)]
pub struct FloatGauge {
    inner: opentelemetry::metrics::Gauge<f64>,
}

impl FloatGauge {
    pub fn set(&self, value: f64) {
        self.inner.record(value, &[]);
    }
}

/// A gauge moved up and down by concurrent callers (an OpenTelemetry
/// up-down counter, exposed as a gauge).
#[derive(Clone)]
pub struct UpDown {
    inner: opentelemetry::metrics::UpDownCounter<i64>,
    attributes: Vec<KeyValue>,
}

impl UpDown {
    pub fn inc(&self) {
        self.inner.add(1, &self.attributes);
    }

    pub fn dec(&self) {
        self.inner.add(-1, &self.attributes);
    }
}

/// A latency histogram with the catalogue's buckets.
#[derive(Clone)]
pub struct Histogram {
    inner: opentelemetry::metrics::Histogram<f64>,
    attributes: Vec<KeyValue>,
}

impl Histogram {
    pub fn observe(&self, value: f64) {
        self.inner.record(value, &self.attributes);
    }
}

/// An instrument that can be bound to a label set.
pub trait Instrument: Clone {
    type Bound;
    fn bind(&self, attributes: Vec<KeyValue>) -> Self::Bound;
}

macro_rules! instruments {
    ($($bound:ident($inner:ty)),+) => {$(
        impl Instrument for $inner {
            type Bound = $bound;
            fn bind(&self, attributes: Vec<KeyValue>) -> $bound {
                $bound { inner: self.clone(), attributes }
            }
        }
    )+};
}

instruments!(
    Counter(opentelemetry::metrics::Counter<u64>),
    Gauge(opentelemetry::metrics::Gauge<i64>),
    UpDown(opentelemetry::metrics::UpDownCounter<i64>),
    Histogram(opentelemetry::metrics::Histogram<f64>)
);

/// One instrument and the label struct its series are keyed by.
pub struct Family<L, I> {
    instrument: I,
    labels: PhantomData<fn(&L)>,
}

impl<L: LabelSet, I: Instrument> Family<L, I> {
    fn new(instrument: I) -> Self {
        Self {
            instrument,
            labels: PhantomData,
        }
    }

    /// The series for `labels` (created on its first value).
    pub fn get_or_create(&self, labels: &L) -> I::Bound {
        self.instrument.bind(labels.attributes())
    }
}

/// Every metric the provider exports.
pub struct Metrics {
    /// Owns the readers; dropping it shuts them down.
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    active_key_id_hash: Arc<Mutex<Option<String>>>,
    _status_key_id_hash: ObservableGauge<i64>,
    pub grpc_requests: Family<MethodStatus, opentelemetry::metrics::Counter<u64>>,
    pub grpc_duration: Family<Method, opentelemetry::metrics::Histogram<f64>>,
    pub grpc_in_flight: Family<Method, opentelemetry::metrics::UpDownCounter<i64>>,
    pub grpc_concurrency_rejections: Family<Method, opentelemetry::metrics::Counter<u64>>,
    pub grpc_queued: Family<Method, opentelemetry::metrics::UpDownCounter<i64>>,
    pub grpc_queue_wait: Family<Method, opentelemetry::metrics::Histogram<f64>>,
    pub grpc_deadline_rejections: Family<Method, opentelemetry::metrics::Counter<u64>>,
    pub transit_decrypt_batch_size: Histogram,
    pub transit_decrypt_batch_fallbacks: Counter,
    pub openbao_requests: Family<OperationStatus, opentelemetry::metrics::Counter<u64>>,
    pub openbao_duration: Family<Operation, opentelemetry::metrics::Histogram<f64>>,
    pub auth_login: Family<Status, opentelemetry::metrics::Counter<u64>>,
    pub auth_renewal: Family<Status, opentelemetry::metrics::Counter<u64>>,
    pub auth_method_info: Family<AuthMethodLabel, opentelemetry::metrics::Gauge<i64>>,
    pub token_ttl_seconds: Gauge,
    pub certificate_source_info: Family<CertificateSource, opentelemetry::metrics::Gauge<i64>>,
    pub certificate_ttl_seconds: Gauge,
    pub key_version: Gauge,
    pub status_cache_age_seconds: FloatGauge,
    pub transit_metadata_observation: Family<Status, opentelemetry::metrics::Counter<u64>>,
    pub rotation_state: Family<State, opentelemetry::metrics::Gauge<i64>>,
    pub rotation_persistence_degraded: Gauge,
    pub rotation_promotions: Counter,
    pub aad_validation_errors: Family<Reason, opentelemetry::metrics::Counter<u64>>,
    pub decrypt_key_id_errors: Family<Reason, opentelemetry::metrics::Counter<u64>>,
    pub socket_restarts: Counter,
    pub panic_recoveries: Family<Method, opentelemetry::metrics::Counter<u64>>,
    pub accept_errors: Family<ListenerKind, opentelemetry::metrics::Counter<u64>>,
    /// The per-request warning line budget; it counts what it suppresses.
    pub request_log: RequestLog,
    pub connections_refused: Family<Listener, opentelemetry::metrics::Counter<u64>>,
    pub connections_timed_out: Family<Listener, opentelemetry::metrics::Counter<u64>>,
    pub connections_open: Family<Listener, opentelemetry::metrics::UpDownCounter<i64>>,
    pub build_info: Family<BuildInfo, opentelemetry::metrics::Gauge<i64>>,
    pub last_exit_info: Family<Reason, opentelemetry::metrics::Gauge<i64>>,
    pub last_exit_timestamp: Gauge,
    /// The tracer of `telemetry.otlp` (traces on); `None` builds no span.
    pub tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    /// The OTLP counters' instruments, alive while the provider is.
    _otlp: Vec<opentelemetry::metrics::ObservableCounter<u64>>,
}

pub const KMS_METHODS: [&str; 3] = ["status", "encrypt", "decrypt"];
pub const ROTATION_STATES: [&str; 3] = ["active", "pending", "unknown"];
/// The `listener` label's values.
pub const LISTENERS: [&str; 3] = ["kms", "health", "metrics"];

/// Name of the instrumentation scope (OTLP only; the exposition has no scope labels).
pub const SCOPE: &str = "bao-kms-provider";

fn counter(meter: &Meter, s: Spec) -> opentelemetry::metrics::Counter<u64> {
    meter
        .u64_counter(s.name)
        .with_description(s.help)
        .with_unit(s.unit)
        .build()
}

fn gauge(meter: &Meter, s: Spec) -> opentelemetry::metrics::Gauge<i64> {
    meter
        .i64_gauge(s.name)
        .with_description(s.help)
        .with_unit(s.unit)
        .build()
}

fn histogram(meter: &Meter, s: Spec) -> opentelemetry::metrics::Histogram<f64> {
    meter
        .f64_histogram(s.name)
        .with_description(s.help)
        .with_unit(s.unit)
        .with_boundaries(latency_buckets())
        .build()
}

/// The OTLP export counters, read from `stats` at each collection.
fn otlp_counters(
    meter: &Meter,
    stats: &Arc<crate::telemetry::OtlpStats>,
) -> Vec<opentelemetry::metrics::ObservableCounter<u64>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    type Read = fn(&crate::telemetry::OtlpStats) -> &AtomicU64;
    type Series = (Spec, &'static [(&'static str, &'static str)], Read);
    let series: [Series; 4] = [
        (OTLP_SPANS_EXPORTED, &[], |s| &s.spans_exported),
        (OTLP_SPANS_DROPPED, &[("reason", "queue_full")], |s| {
            &s.spans_dropped_queue_full
        }),
        (OTLP_SPANS_DROPPED, &[("reason", "export_failed")], |s| {
            &s.spans_dropped_export_failed
        }),
        (OTLP_METRIC_EXPORT_FAILURES, &[], |s| &s.metric_export_failures),
    ];
    // One instrument per family, observing each of its series.
    let mut out = Vec::new();
    for spec in OTLP_CATALOGUE {
        let mine: Vec<(Vec<KeyValue>, Read)> = series
            .iter()
            .filter(|(s, _, _)| s.name == spec.name)
            .map(|(_, labels, read)| {
                let attributes = labels.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect();
                (attributes, *read)
            })
            .collect();
        let stats = stats.clone();
        out.push(
            meter
                .u64_observable_counter(spec.name)
                .with_description(spec.help)
                .with_callback(move |observer| {
                    for (attributes, read) in &mine {
                        observer.observe(read(&stats).load(Ordering::Relaxed), attributes);
                    }
                })
                .build(),
        );
    }
    out
}

impl Metrics {
    /// This build's metrics for the configured auth method.
    pub fn for_auth(method: &bao_kms_core::config::AuthMethod) -> Self {
        Self::new(crate::build::current(), method.name(), method.certificate_source())
    }

    /// `auth_method` is the `auth.method` value, `certificate_source` the
    /// client certificate's source (`pkcs11`, `file`, or `none`).
    pub fn new(build: crate::build::Build, auth_method: &'static str, certificate_source: &'static str) -> Self {
        Self::with_otlp(build, auth_method, certificate_source, None)
    }

    /// The metrics of `serve`: with `otlp`, its reader pushes the catalogue,
    /// its tracer makes the spans and its counters join the exposition.
    pub fn for_serve(method: &bao_kms_core::config::AuthMethod, otlp: Option<&mut crate::telemetry::Otlp>) -> Self {
        Self::with_otlp(
            crate::build::current(),
            method.name(),
            method.certificate_source(),
            otlp,
        )
    }

    pub(crate) fn with_otlp(
        build: crate::build::Build,
        auth_method: &'static str,
        certificate_source: &'static str,
        otlp: Option<&mut crate::telemetry::Otlp>,
    ) -> Self {
        let registry = prometheus::Registry::new();
        let prometheus_reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_counter_suffixes()
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            // Registering a collector only fails for a duplicate collector
            // id; the registry is new and holds nothing else.
            .expect("a new registry accepts the OpenTelemetry collector");
        // Registering fails only for a duplicate collector id or a
        // descriptor clash; the process collector's `process_*` names are
        // its own in this registry.
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("a new registry accepts the process collector");
        let mut builder = SdkMeterProvider::builder().with_reader(prometheus_reader);
        let (mut tracer, mut stats) = (None, None);
        if let Some(otlp) = otlp {
            if let Some(reader) = otlp.metric_reader.take() {
                builder = builder.with_reader(reader);
            }
            tracer = otlp.tracer.clone();
            stats = Some(otlp.stats.clone());
        }
        let provider = builder.build();
        let meter = provider.meter(SCOPE);
        let otlp_counters = stats.map_or_else(Vec::new, |stats| otlp_counters(&meter, &stats));

        let active_key_id_hash: Arc<Mutex<Option<String>>> = Arc::default();
        let observed = active_key_id_hash.clone();
        let status_key_id_hash = meter
            .i64_observable_gauge(STATUS_KEY_ID_HASH.name)
            .with_description(STATUS_KEY_ID_HASH.help)
            .with_callback(move |observer| {
                // A poisoned lock only means a writer panicked; the value is still a whole Option.
                let hash = observed.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(hash) = hash {
                    observer.observe(1, &HashLabel { hash }.attributes());
                }
            })
            .build();
        let unlabelled_gauge = |s| Gauge {
            inner: gauge(&meter, s),
            attributes: Vec::new(),
        };
        let unlabelled_counter = |s| Counter {
            inner: counter(&meter, s),
            attributes: Vec::new(),
        };
        let m = Self {
            grpc_requests: Family::new(counter(&meter, GRPC_REQUESTS)),
            grpc_duration: Family::new(histogram(&meter, GRPC_DURATION)),
            grpc_in_flight: Family::new(
                meter
                    .i64_up_down_counter(GRPC_IN_FLIGHT.name)
                    .with_description(GRPC_IN_FLIGHT.help)
                    .build(),
            ),
            grpc_concurrency_rejections: Family::new(counter(&meter, GRPC_CONCURRENCY_REJECTIONS)),
            grpc_queued: Family::new(
                meter
                    .i64_up_down_counter(GRPC_QUEUED.name)
                    .with_description(GRPC_QUEUED.help)
                    .build(),
            ),
            grpc_queue_wait: Family::new(histogram(&meter, GRPC_QUEUE_WAIT)),
            grpc_deadline_rejections: Family::new(counter(&meter, GRPC_DEADLINE_REJECTIONS)),
            transit_decrypt_batch_size: Histogram {
                inner: meter
                    .f64_histogram(TRANSIT_DECRYPT_BATCH_SIZE.name)
                    .with_description(TRANSIT_DECRYPT_BATCH_SIZE.help)
                    .with_boundaries(batch_size_buckets())
                    .build(),
                attributes: Vec::new(),
            },
            transit_decrypt_batch_fallbacks: unlabelled_counter(TRANSIT_DECRYPT_BATCH_FALLBACKS),
            openbao_requests: Family::new(counter(&meter, OPENBAO_REQUESTS)),
            openbao_duration: Family::new(histogram(&meter, OPENBAO_DURATION)),
            auth_login: Family::new(counter(&meter, AUTH_LOGIN)),
            auth_renewal: Family::new(counter(&meter, AUTH_RENEWAL)),
            auth_method_info: Family::new(gauge(&meter, AUTH_METHOD_INFO)),
            token_ttl_seconds: unlabelled_gauge(TOKEN_TTL_SECONDS),
            certificate_source_info: Family::new(gauge(&meter, CERTIFICATE_SOURCE_INFO)),
            certificate_ttl_seconds: unlabelled_gauge(CERTIFICATE_TTL_SECONDS),
            key_version: unlabelled_gauge(KEY_VERSION),
            status_cache_age_seconds: FloatGauge {
                inner: meter
                    .f64_gauge(STATUS_CACHE_AGE_SECONDS.name)
                    .with_description(STATUS_CACHE_AGE_SECONDS.help)
                    .with_unit(STATUS_CACHE_AGE_SECONDS.unit)
                    .build(),
            },
            transit_metadata_observation: Family::new(counter(&meter, TRANSIT_METADATA_OBSERVATION)),
            rotation_state: Family::new(gauge(&meter, ROTATION_STATE)),
            rotation_persistence_degraded: unlabelled_gauge(ROTATION_PERSISTENCE_DEGRADED),
            rotation_promotions: unlabelled_counter(ROTATION_PROMOTIONS),
            aad_validation_errors: Family::new(counter(&meter, AAD_VALIDATION_ERRORS)),
            decrypt_key_id_errors: Family::new(counter(&meter, DECRYPT_KEY_ID_ERRORS)),
            socket_restarts: unlabelled_counter(SOCKET_RESTARTS),
            panic_recoveries: Family::new(counter(&meter, PANIC_RECOVERIES)),
            accept_errors: Family::new(counter(&meter, ACCEPT_ERRORS)),
            request_log: {
                let suppressed: Family<Event, _> = Family::new(counter(&meter, LOG_LINES_SUPPRESSED));
                for event in crate::request_log::EVENTS {
                    suppressed.instrument.add(0, &Event { event }.attributes());
                }
                RequestLog::new(Box::new(move |event| suppressed.get_or_create(&Event { event }).inc()))
            },
            connections_refused: Family::new(counter(&meter, CONNECTIONS_REFUSED)),
            connections_timed_out: Family::new(counter(&meter, CONNECTIONS_TIMED_OUT)),
            connections_open: Family::new(
                meter
                    .i64_up_down_counter(CONNECTIONS_OPEN.name)
                    .with_description(CONNECTIONS_OPEN.help)
                    .build(),
            ),
            build_info: Family::new(gauge(&meter, BUILD_INFO)),
            last_exit_info: Family::new(gauge(&meter, LAST_EXIT_INFO)),
            last_exit_timestamp: unlabelled_gauge(LAST_EXIT_TIMESTAMP),
            active_key_id_hash,
            _status_key_id_hash: status_key_id_hash,
            registry,
            provider,
            tracer,
            _otlp: otlp_counters,
        };
        // Series present from the start, as the catalogue documents them.
        for method in KMS_METHODS {
            m.grpc_in_flight.instrument.add(0, &Method { method }.attributes());
            m.panic_recoveries.instrument.add(0, &Method { method }.attributes());
            m.grpc_queued.instrument.add(0, &Method { method }.attributes());
        }
        for listener in LISTENERS {
            let l = Listener { listener }.attributes();
            m.connections_refused.instrument.add(0, &l);
            m.connections_timed_out.instrument.add(0, &l);
            m.connections_open.instrument.add(0, &l);
        }
        for state in ROTATION_STATES {
            m.rotation_state.get_or_create(&State { state }).set(0);
        }
        for gauge in [
            &m.token_ttl_seconds,
            &m.certificate_ttl_seconds,
            &m.key_version,
            &m.rotation_persistence_degraded,
        ] {
            gauge.set(0);
        }
        m.status_cache_age_seconds.set(0.0);
        m.rotation_promotions.inner.add(0, &[]);
        m.socket_restarts.inner.add(0, &[]);
        m.transit_decrypt_batch_fallbacks.inner.add(0, &[]);
        m.auth_method_info
            .get_or_create(&AuthMethodLabel { method: auth_method })
            .set(1);
        m.certificate_source_info
            .get_or_create(&CertificateSource {
                source: certificate_source,
            })
            .set(1);
        let build = BuildInfo {
            version: build.version,
            commit: build.commit,
            build_date: build.build_date,
            dirty: build.dirty,
        };
        m.build_info.get_or_create(&build).set(1);
        m
    }

    /// Publishes the active key_id hash (or none) and the rotation state.
    pub fn set_key_state(&self, key_id_hash: Option<&str>, version: u64, rotation_state: &str) {
        *self.active_key_id_hash.lock().unwrap_or_else(|p| p.into_inner()) = key_id_hash.map(str::to_owned);
        self.key_version.set(i64::try_from(version).unwrap_or(i64::MAX));
        for state in ROTATION_STATES {
            self.rotation_state
                .get_or_create(&State { state })
                .set(i64::from(state == rotation_state));
        }
    }

    /// With OTLP metrics: the last push and the reader's stop, on a
    /// blocking thread (the SDK waits for its export thread) and within
    /// `limit`. `/metrics` stops changing after it; serve calls it last.
    pub async fn shutdown_export(&self, limit: std::time::Duration) {
        if self._otlp.is_empty() {
            return;
        }
        let provider = self.provider.clone();
        let _ = tokio::time::timeout(limit, tokio::task::spawn_blocking(move || provider.shutdown())).await;
    }

    /// OpenMetrics text exposition of the catalogue (and of the OTLP
    /// counters, when OTLP export is on).
    pub fn encode(&self) -> String {
        if self._otlp.is_empty() {
            exposition::encode(&CATALOGUE, self.registry.gather())
        } else {
            let all: Vec<Spec> = CATALOGUE.iter().chain(&OTLP_CATALOGUE).copied().collect();
            exposition::encode(&all, self.registry.gather())
        }
    }
}

#[cfg(test)]
mod tests;
