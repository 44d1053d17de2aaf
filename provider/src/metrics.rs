//! The Prometheus metric catalog: metric names, label sets and histogram
//! buckets are a stable interface for dashboards and alert rules (see
//! docs/operations.md). Labels only ever carry bounded, fixed vocabularies:
//! never key_ids (only their hash), paths, key names, UIDs or error text.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodStatus {
    pub method: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Method {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationStatus {
    pub operation: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Status {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabel {
    pub hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthMethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateSource {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
    pub build_date: &'static str,
    pub dirty: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 1 ms doubling to 2.048 s, 12 buckets.
    Histogram::new(exponential_buckets(0.001, 2.0, 12))
}

/// Every metric the provider exports.
pub struct Metrics {
    registry: Registry,
    pub grpc_requests: Family<MethodStatus, Counter>,
    pub grpc_duration: Family<Method, Histogram, fn() -> Histogram>,
    pub grpc_in_flight: Family<Method, Gauge>,
    pub grpc_concurrency_rejections: Family<Method, Counter>,
    pub openbao_requests: Family<OperationStatus, Counter>,
    pub openbao_duration: Family<Operation, Histogram, fn() -> Histogram>,
    pub auth_login: Family<Status, Counter>,
    pub auth_renewal: Family<Status, Counter>,
    pub auth_method_info: Family<AuthMethodLabel, Gauge>,
    pub token_ttl_seconds: Gauge,
    pub certificate_source_info: Family<CertificateSource, Gauge>,
    pub certificate_ttl_seconds: Gauge,
    pub status_key_id_hash: Family<HashLabel, Gauge>,
    pub key_version: Gauge,
    pub status_cache_age_seconds: FloatGauge,
    pub transit_metadata_observation: Family<Status, Counter>,
    pub rotation_state: Family<State, Gauge>,
    pub rotation_persistence_degraded: Gauge,
    pub rotation_promotions: Counter,
    pub aad_validation_errors: Family<Reason, Counter>,
    pub decrypt_key_id_errors: Family<Reason, Counter>,
    pub socket_restarts: Counter,
    pub build_info: Family<BuildInfo, Gauge>,
}

pub const KMS_METHODS: [&str; 3] = ["status", "encrypt", "decrypt"];
pub const ROTATION_STATES: [&str; 3] = ["active", "pending", "unknown"];

impl Metrics {
    /// This build's metrics for the configured auth method.
    pub fn for_auth(method: &bao_kms_core::config::AuthMethod) -> Self {
        Self::new(crate::build::current(), method.name(), method.certificate_source())
    }

    /// `auth_method` is the `auth.method` value, `certificate_source` the
    /// client certificate's source (`pkcs11`, `file`, or `none`).
    pub fn new(build: crate::build::Build, auth_method: &'static str, certificate_source: &'static str) -> Self {
        let mut registry = Registry::with_prefix("openbao_kms");
        let m = Self {
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(latency_histogram),
            grpc_in_flight: Family::default(),
            grpc_concurrency_rejections: Family::default(),
            openbao_requests: Family::default(),
            openbao_duration: Family::new_with_constructor(latency_histogram),
            auth_login: Family::default(),
            auth_renewal: Family::default(),
            auth_method_info: Family::default(),
            token_ttl_seconds: Gauge::default(),
            certificate_source_info: Family::default(),
            certificate_ttl_seconds: Gauge::default(),
            status_key_id_hash: Family::default(),
            key_version: Gauge::default(),
            status_cache_age_seconds: FloatGauge::default(),
            transit_metadata_observation: Family::default(),
            rotation_state: Family::default(),
            rotation_persistence_degraded: Gauge::default(),
            rotation_promotions: Counter::default(),
            aad_validation_errors: Family::default(),
            decrypt_key_id_errors: Family::default(),
            socket_restarts: Counter::default(),
            build_info: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "grpc_requests",
            "KMS gRPC requests by method and status",
            m.grpc_requests.clone(),
        );
        r.register(
            "grpc_duration_seconds",
            "KMS gRPC request latency",
            m.grpc_duration.clone(),
        );
        r.register(
            "grpc_in_flight",
            "KMS gRPC requests in flight",
            m.grpc_in_flight.clone(),
        );
        r.register(
            "grpc_concurrency_rejections",
            "KMS gRPC requests rejected by the concurrency limit",
            m.grpc_concurrency_rejections.clone(),
        );
        r.register(
            "openbao_requests",
            "OpenBao requests by operation and status",
            m.openbao_requests.clone(),
        );
        r.register(
            "openbao_duration_seconds",
            "OpenBao request latency",
            m.openbao_duration.clone(),
        );
        r.register("auth_login", "OpenBao logins by status", m.auth_login.clone());
        r.register(
            "auth_renewal",
            "OpenBao token renewals by status",
            m.auth_renewal.clone(),
        );
        r.register(
            "auth_method_info",
            "Configured OpenBao auth method",
            m.auth_method_info.clone(),
        );
        r.register(
            "token_ttl_seconds",
            "Remaining TTL of the OpenBao token",
            m.token_ttl_seconds.clone(),
        );
        r.register(
            "certificate_source_info",
            "Source of the client certificate for cert auth (none without cert auth)",
            m.certificate_source_info.clone(),
        );
        r.register(
            "certificate_ttl_seconds",
            "Seconds until the client certificate of the last cert login expires (0 without cert auth or once expired)",
            m.certificate_ttl_seconds.clone(),
        );
        r.register(
            "status_key_id_hash",
            "Hash of the active key_id (1 for the active hash; absent without an active key)",
            m.status_key_id_hash.clone(),
        );
        r.register("key_version", "Active Transit key version", m.key_version.clone());
        r.register(
            "status_cache_age_seconds",
            "Age of the status snapshot Status is answered from",
            m.status_cache_age_seconds.clone(),
        );
        r.register(
            "transit_metadata_observation",
            "Transit key metadata observations by status",
            m.transit_metadata_observation.clone(),
        );
        r.register(
            "rotation_state",
            "Rotation state (1 for the current state)",
            m.rotation_state.clone(),
        );
        r.register(
            "rotation_persistence_degraded",
            "1 while a rotation observation could not be saved and is deferred",
            m.rotation_persistence_degraded.clone(),
        );
        r.register(
            "rotation_promotions",
            "Rotation promotions persisted by this process (a new active Transit version)",
            m.rotation_promotions.clone(),
        );
        r.register(
            "aad_validation_errors",
            "Decrypt requests refused by annotation/AAD checks",
            m.aad_validation_errors.clone(),
        );
        r.register(
            "decrypt_key_id_errors",
            "Decrypt requests refused by key_id checks",
            m.decrypt_key_id_errors.clone(),
        );
        r.register(
            "socket_restarts",
            "Verified-dead stale sockets removed before bind",
            m.socket_restarts.clone(),
        );
        r.register("build_info", "Build information (always 1)", m.build_info.clone());
        for method in KMS_METHODS {
            m.grpc_in_flight.get_or_create(&Method { method }).set(0);
        }
        for state in ROTATION_STATES {
            m.rotation_state.get_or_create(&State { state }).set(0);
        }
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
        Self { registry, ..m }
    }

    /// Publishes the active key_id hash (or none) and the rotation state.
    pub fn set_key_state(&self, key_id_hash: Option<&str>, version: u64, rotation_state: &str) {
        self.status_key_id_hash.clear();
        if let Some(hash) = key_id_hash {
            self.status_key_id_hash
                .get_or_create(&HashLabel { hash: hash.to_owned() })
                .set(1);
        }
        self.key_version.set(i64::try_from(version).unwrap_or(i64::MAX));
        for state in ROTATION_STATES {
            self.rotation_state
                .get_or_create(&State { state })
                .set(i64::from(state == rotation_state));
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(
            crate::build::Build {
                version: "v0",
                commit: "c",
                build_date: "d",
                dirty: "false",
            },
            "token",
            "none",
        )
    }

    #[test]
    fn names_match_the_published_catalog() {
        let m = metrics();
        m.grpc_requests
            .get_or_create(&MethodStatus {
                method: "status",
                status: "ok",
            })
            .inc();
        m.set_key_state(Some("abc"), 3, "active");
        let text = m.encode();
        for needle in [
            "openbao_kms_grpc_requests_total{method=\"status\",status=\"ok\"} 1",
            "openbao_kms_grpc_in_flight{method=\"decrypt\"} 0",
            "openbao_kms_status_key_id_hash{hash=\"abc\"} 1",
            "openbao_kms_key_version 3",
            "openbao_kms_rotation_state{state=\"active\"} 1",
            "openbao_kms_rotation_state{state=\"unknown\"} 0",
            "openbao_kms_auth_method_info{method=\"token\"} 1",
            "openbao_kms_socket_restarts_total 0",
            "openbao_kms_status_cache_age_seconds 0",
            "openbao_kms_rotation_persistence_degraded 0",
            "openbao_kms_rotation_promotions_total 0",
            "openbao_kms_certificate_source_info{source=\"none\"} 1",
            "openbao_kms_certificate_ttl_seconds 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        m.set_key_state(None, 0, "unknown");
        let text = m.encode();
        assert!(!text.contains("openbao_kms_status_key_id_hash{"), "{text}");
    }
}
