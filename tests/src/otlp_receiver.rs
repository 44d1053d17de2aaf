//! An OTLP/gRPC receiver built on the official protobuf definitions
//! (`opentelemetry-proto`): the trace and metrics collector services on a
//! free loopback port, keeping every export it is sent (spans with their
//! attributes and parents, metric names with their data points, and the
//! request metadata) for the tests to read. Plain gRPC (the provider allows
//! `http://` to loopback only) or TLS with a given server certificate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// One received span.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP `SpanKind` (2 server, 3 client).
    pub kind: i32,
    pub attributes: BTreeMap<String, Value>,
    /// OTLP status code (1 ok, 2 error) and message.
    pub status_code: i32,
    pub status_message: String,
    /// The resource's attributes (`service.name`, ...).
    pub resource: BTreeMap<String, Value>,
}

/// One received metric data point (sums and gauges: `value`; histograms:
/// `count`, `sum` and the bounds).
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    pub metric: String,
    pub kind: &'static str,
    pub attributes: BTreeMap<String, Value>,
    pub value: Option<f64>,
    pub count: Option<u64>,
    pub bounds: Vec<f64>,
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    points: Vec<ReceivedPoint>,
    /// Metadata of every export request (lower-case names).
    headers: Vec<BTreeMap<String, String>>,
    trace_exports: usize,
    metric_exports: usize,
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Received>>);

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn headers<T>(&self, request: &tonic::Request<T>) {
        let headers = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        self.lock().headers.push(headers);
    }
}

fn any(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::BytesValue(b)) => json!(hex(b)),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(|v| any(Some(v))).collect()),
        Some(other) => json!(format!("{other:?}")),
        None => Value::Null,
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter().map(|kv| (kv.key.clone(), any(kv.value.as_ref()))).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.headers(&request);
        let mut spans = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = attributes(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let (status_code, status_message) = s
                        .status
                        .as_ref()
                        .map_or((0, String::new()), |st| (st.code, st.message.clone()));
                    spans.push(ReceivedSpan {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        kind: s.kind,
                        attributes: attributes(&s.attributes),
                        status_code,
                        status_message,
                        resource: resource.clone(),
                    });
                }
            }
        }
        let mut r = self.lock();
        r.trace_exports += 1;
        r.spans.extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
        self.headers(&request);
        let number = |v: Option<&N>| match v {
            Some(N::AsDouble(d)) => Some(*d),
            Some(N::AsInt(i)) => Some(*i as f64),
            None => None,
        };
        let mut points = Vec::new();
        for rm in request.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let name = m.name.clone();
                    match m.data {
                        Some(Data::Sum(s)) => points.extend(s.data_points.iter().map(|p| ReceivedPoint {
                            metric: name.clone(),
                            kind: "sum",
                            attributes: attributes(&p.attributes),
                            value: number(p.value.as_ref()),
                            count: None,
                            bounds: Vec::new(),
                        })),
                        Some(Data::Gauge(g)) => points.extend(g.data_points.iter().map(|p| ReceivedPoint {
                            metric: name.clone(),
                            kind: "gauge",
                            attributes: attributes(&p.attributes),
                            value: number(p.value.as_ref()),
                            count: None,
                            bounds: Vec::new(),
                        })),
                        Some(Data::Histogram(h)) => points.extend(h.data_points.iter().map(|p| ReceivedPoint {
                            metric: name.clone(),
                            kind: "histogram",
                            attributes: attributes(&p.attributes),
                            value: p.sum,
                            count: Some(p.count),
                            bounds: p.explicit_bounds.clone(),
                        })),
                        _ => {}
                    }
                }
            }
        }
        let mut r = self.lock();
        r.metric_exports += 1;
        r.points.extend(points);
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver's TLS: its certificate and key, and the CA its clients'
/// certificates must be signed by (none: no client certificate asked).
pub struct ServerTls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: Store,
    _stop: oneshot::Sender<()>,
}

impl OtlpReceiver {
    /// Serves plain gRPC on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// Serves on a free loopback port; with `tls`, over TLS with that
    /// server certificate and key (PEM), requiring a client certificate
    /// signed by the client CA (PEM) when one is given.
    pub async fn start_with(tls: Option<ServerTls>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Store::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            let identity = tonic::transport::Identity::from_pem(tls.cert, tls.key);
            let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
            if let Some(ca) = tls.client_ca {
                config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            server = server.tls_config(config)?;
        }
        let router = server
            .add_service(TraceServiceServer::new(store.clone()))
            .add_service(MetricsServiceServer::new(store.clone()));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            store,
            _stop: stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.lock().spans.clone()
    }

    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.store.lock().points.clone()
    }

    pub fn headers(&self) -> Vec<BTreeMap<String, String>> {
        self.store.lock().headers.clone()
    }

    /// Export calls received: (traces, metrics).
    pub fn exports(&self) -> (usize, usize) {
        let r = self.store.lock();
        (r.trace_exports, r.metric_exports)
    }
}
