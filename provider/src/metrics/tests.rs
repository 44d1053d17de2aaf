use super::*;

fn metrics() -> Metrics {
    metrics_for("token")
}

fn metrics_for(auth_method: &'static str) -> Metrics {
    Metrics::new(
        crate::build::Build {
            version: "v0",
            commit: "c",
            build_date: "d",
            dirty: "false",
        },
        auth_method,
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

/// The exposition written by the `prometheus-client` implementation this
/// one replaced, for the same recordings (series within a family sorted by
/// label values): names, types, help texts, label order and buckets are
/// unchanged, so dashboards and alert rules keep working. Families added
/// since (the queue's, batching's) are in it too.
const GOLDEN: &str = r#"# HELP openbao_kms_grpc_requests KMS gRPC requests by method and status.
# TYPE openbao_kms_grpc_requests counter
openbao_kms_grpc_requests_total{method="encrypt",status="ok"} 1
# HELP openbao_kms_grpc_duration_seconds KMS gRPC request latency.
# TYPE openbao_kms_grpc_duration_seconds histogram
openbao_kms_grpc_duration_seconds_sum{method="encrypt"} 0.003
openbao_kms_grpc_duration_seconds_count{method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="0.001",method="encrypt"} 0
openbao_kms_grpc_duration_seconds_bucket{le="0.002",method="encrypt"} 0
openbao_kms_grpc_duration_seconds_bucket{le="0.004",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="0.008",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="0.016",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="0.032",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="0.064",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="0.128",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="0.256",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="0.512",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="1.024",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="2.048",method="encrypt"} 1
openbao_kms_grpc_duration_seconds_bucket{le="+Inf",method="encrypt"} 1
# HELP openbao_kms_grpc_in_flight KMS gRPC requests in flight.
# TYPE openbao_kms_grpc_in_flight gauge
openbao_kms_grpc_in_flight{method="decrypt"} 0
openbao_kms_grpc_in_flight{method="encrypt"} 0
openbao_kms_grpc_in_flight{method="status"} 0
# HELP openbao_kms_grpc_concurrency_rejections KMS gRPC requests rejected by the concurrency limit.
# TYPE openbao_kms_grpc_concurrency_rejections counter
openbao_kms_grpc_concurrency_rejections_total{method="decrypt"} 1
# HELP openbao_kms_grpc_queued KMS gRPC requests waiting for a free slot of their method.
# TYPE openbao_kms_grpc_queued gauge
openbao_kms_grpc_queued{method="decrypt"} 0
openbao_kms_grpc_queued{method="encrypt"} 0
openbao_kms_grpc_queued{method="status"} 0
# HELP openbao_kms_grpc_queue_wait_seconds Time KMS gRPC requests waited for a free slot (only requests that waited).
# TYPE openbao_kms_grpc_queue_wait_seconds histogram
# HELP openbao_kms_grpc_deadline_rejections KMS gRPC requests refused because their deadline could not cover the queue wait and the call.
# TYPE openbao_kms_grpc_deadline_rejections counter
# HELP openbao_kms_transit_decrypt_batch_size Distinct Decrypts carried by one Transit decrypt call (1: a single call).
# TYPE openbao_kms_transit_decrypt_batch_size histogram
# HELP openbao_kms_transit_decrypt_batch_fallbacks Transit batch decrypt calls refused or answered unusably, whose items were then decrypted one by one.
# TYPE openbao_kms_transit_decrypt_batch_fallbacks counter
openbao_kms_transit_decrypt_batch_fallbacks_total 0
# HELP openbao_kms_openbao_requests OpenBao requests by operation and status.
# TYPE openbao_kms_openbao_requests counter
openbao_kms_openbao_requests_total{operation="transit_encrypt",status="ok"} 1
# HELP openbao_kms_openbao_duration_seconds OpenBao request latency.
# TYPE openbao_kms_openbao_duration_seconds histogram
openbao_kms_openbao_duration_seconds_sum{operation="transit_encrypt"} 2.5
openbao_kms_openbao_duration_seconds_count{operation="transit_encrypt"} 1
openbao_kms_openbao_duration_seconds_bucket{le="0.001",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="0.002",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="0.004",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="0.008",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="0.016",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="0.032",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="0.064",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="0.128",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="0.256",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="0.512",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="1.024",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="2.048",operation="transit_encrypt"} 0
openbao_kms_openbao_duration_seconds_bucket{le="+Inf",operation="transit_encrypt"} 1
# HELP openbao_kms_auth_login OpenBao logins by status.
# TYPE openbao_kms_auth_login counter
openbao_kms_auth_login_total{status="ok"} 1
# HELP openbao_kms_auth_renewal OpenBao token renewals by status.
# TYPE openbao_kms_auth_renewal counter
openbao_kms_auth_renewal_total{status="ok"} 1
# HELP openbao_kms_auth_method_info Configured OpenBao auth method.
# TYPE openbao_kms_auth_method_info gauge
openbao_kms_auth_method_info{method="jwt"} 1
# HELP openbao_kms_token_ttl_seconds Remaining TTL of the OpenBao token.
# TYPE openbao_kms_token_ttl_seconds gauge
openbao_kms_token_ttl_seconds 1800
# HELP openbao_kms_certificate_source_info Source of the client certificate for cert auth (none without cert auth).
# TYPE openbao_kms_certificate_source_info gauge
openbao_kms_certificate_source_info{source="none"} 1
# HELP openbao_kms_certificate_ttl_seconds Seconds until the client certificate of the last cert login expires (0 without cert auth or once expired).
# TYPE openbao_kms_certificate_ttl_seconds gauge
openbao_kms_certificate_ttl_seconds 77
# HELP openbao_kms_status_key_id_hash Hash of the active key_id (1 for the active hash; absent without an active key).
# TYPE openbao_kms_status_key_id_hash gauge
openbao_kms_status_key_id_hash{hash="abc"} 1
# HELP openbao_kms_key_version Active Transit key version.
# TYPE openbao_kms_key_version gauge
openbao_kms_key_version 7
# HELP openbao_kms_status_cache_age_seconds Age of the status snapshot Status is answered from.
# TYPE openbao_kms_status_cache_age_seconds gauge
openbao_kms_status_cache_age_seconds 1.25
# HELP openbao_kms_transit_metadata_observation Transit key metadata observations by status.
# TYPE openbao_kms_transit_metadata_observation counter
openbao_kms_transit_metadata_observation_total{status="ok"} 1
# HELP openbao_kms_rotation_state Rotation state (1 for the current state).
# TYPE openbao_kms_rotation_state gauge
openbao_kms_rotation_state{state="active"} 0
openbao_kms_rotation_state{state="pending"} 1
openbao_kms_rotation_state{state="unknown"} 0
# HELP openbao_kms_rotation_persistence_degraded 1 while the state directory refuses writes (a registry save or the writability check failed).
# TYPE openbao_kms_rotation_persistence_degraded gauge
openbao_kms_rotation_persistence_degraded 1
# HELP openbao_kms_rotation_promotions Rotation promotions persisted by this process (a new active Transit version).
# TYPE openbao_kms_rotation_promotions counter
openbao_kms_rotation_promotions_total 1
# HELP openbao_kms_aad_validation_errors Decrypt requests refused by annotation/AAD checks.
# TYPE openbao_kms_aad_validation_errors counter
openbao_kms_aad_validation_errors_total{reason="aad_missing"} 1
# HELP openbao_kms_decrypt_key_id_errors Decrypt requests refused by key_id checks.
# TYPE openbao_kms_decrypt_key_id_errors counter
openbao_kms_decrypt_key_id_errors_total{reason="key_id_unknown"} 1
# HELP openbao_kms_socket_restarts Verified-dead stale sockets removed before bind.
# TYPE openbao_kms_socket_restarts counter
openbao_kms_socket_restarts_total 1
# HELP openbao_kms_panic_recoveries KMS requests whose handler panicked; the panic was caught and the call failed with Internal.
# TYPE openbao_kms_panic_recoveries counter
openbao_kms_panic_recoveries_total{method="decrypt"} 1
openbao_kms_panic_recoveries_total{method="encrypt"} 0
openbao_kms_panic_recoveries_total{method="status"} 0
# HELP openbao_kms_accept_errors Failed accepts by listener and cause; the listener waits (bounded backoff) before the next one.
# TYPE openbao_kms_accept_errors counter
# HELP openbao_kms_log_lines_suppressed Warning lines not written because their event and error class used up the log budget of the window (logging.requestLogBurst per logging.requestLogWindow; a listener's accept failures: one line per 10s).
# TYPE openbao_kms_log_lines_suppressed counter
openbao_kms_log_lines_suppressed_total{event="kms.request"} 0
openbao_kms_log_lines_suppressed_total{event="listener.accept_failed"} 0
openbao_kms_log_lines_suppressed_total{event="openbao.request"} 0
# HELP openbao_kms_connections_refused Connections closed at accept because the listener held its maximum.
# TYPE openbao_kms_connections_refused counter
openbao_kms_connections_refused_total{listener="health"} 0
openbao_kms_connections_refused_total{listener="kms"} 0
openbao_kms_connections_refused_total{listener="metrics"} 0
# HELP openbao_kms_connections_timed_out Connections closed by the header-read timeout (HTTP) or the idle timeout (KMS).
# TYPE openbao_kms_connections_timed_out counter
openbao_kms_connections_timed_out_total{listener="health"} 0
openbao_kms_connections_timed_out_total{listener="kms"} 0
openbao_kms_connections_timed_out_total{listener="metrics"} 0
# HELP openbao_kms_connections_open Connections a listener holds open now.
# TYPE openbao_kms_connections_open gauge
openbao_kms_connections_open{listener="health"} 0
openbao_kms_connections_open{listener="kms"} 0
openbao_kms_connections_open{listener="metrics"} 0
# HELP openbao_kms_last_exit_info Reason code of the last fail-closed exit, from <state.path>.last-exit (1; absent when none was recorded).
# TYPE openbao_kms_last_exit_info gauge
# HELP openbao_kms_last_exit_timestamp_seconds Unix time of the last fail-closed exit (absent when none was recorded).
# TYPE openbao_kms_last_exit_timestamp_seconds gauge
# HELP openbao_kms_build_info Build information (always 1).
# TYPE openbao_kms_build_info gauge
openbao_kms_build_info{version="v0",commit="c",build_date="d",dirty="false"} 1
# EOF
"#;

#[test]
fn exposition_is_the_published_one_byte_for_byte() {
    let m = metrics_for("jwt");
    let rec = |status| Status { status };
    m.grpc_requests
        .get_or_create(&MethodStatus {
            method: "encrypt",
            status: "ok",
        })
        .inc();
    m.grpc_duration
        .get_or_create(&Method { method: "encrypt" })
        .observe(0.003);
    m.grpc_concurrency_rejections
        .get_or_create(&Method { method: "decrypt" })
        .inc();
    m.openbao_requests
        .get_or_create(&OperationStatus {
            operation: "transit_encrypt",
            status: "ok",
        })
        .inc();
    m.openbao_duration
        .get_or_create(&Operation {
            operation: "transit_encrypt",
        })
        .observe(2.5);
    m.auth_login.get_or_create(&rec("ok")).inc();
    m.auth_renewal.get_or_create(&rec("ok")).inc();
    m.token_ttl_seconds.set(1800);
    m.certificate_ttl_seconds.set(77);
    m.status_cache_age_seconds.set(1.25);
    m.transit_metadata_observation.get_or_create(&rec("ok")).inc();
    m.rotation_persistence_degraded.set(1);
    m.rotation_promotions.inc();
    m.aad_validation_errors
        .get_or_create(&Reason { reason: "aad_missing" })
        .inc();
    m.decrypt_key_id_errors
        .get_or_create(&Reason {
            reason: "key_id_unknown",
        })
        .inc();
    m.socket_restarts.inc();
    m.panic_recoveries.get_or_create(&Method { method: "decrypt" }).inc();
    m.set_key_state(Some("abc"), 7, "pending");
    // The process families (values of this test process) follow the
    // provider's own and are checked by `process_metrics_describe_this_process`.
    let text = m.encode();
    let (own, process) = text.split_at(text.find("# HELP process_").expect("process families"));
    assert_eq!(format!("{own}# EOF\n"), GOLDEN);
    assert!(process.ends_with("# EOF\n"), "{process}");
}

#[test]
fn in_flight_goes_up_and_down_and_families_without_series_keep_their_header() {
    let m = metrics();
    let text = m.encode();
    assert!(
        text.contains("# TYPE openbao_kms_decrypt_key_id_errors counter\n"),
        "{text}"
    );
    assert!(!text.contains("openbao_kms_decrypt_key_id_errors_total"), "{text}");
    let in_flight = m.grpc_in_flight.get_or_create(&Method { method: "encrypt" });
    in_flight.inc();
    in_flight.clone().inc();
    assert!(
        m.encode()
            .contains("openbao_kms_grpc_in_flight{method=\"encrypt\"} 2\n")
    );
    in_flight.dec();
    in_flight.dec();
    assert!(
        m.encode()
            .contains("openbao_kms_grpc_in_flight{method=\"encrypt\"} 0\n")
    );
}

#[test]
fn no_opentelemetry_scope_or_target_labels_and_nothing_outside_the_catalogue() {
    let m = metrics();
    m.grpc_duration
        .get_or_create(&Method { method: "status" })
        .observe(0.01);
    let text = m.encode();
    for noise in ["otel_scope", "target_info", "service_name", "telemetry_sdk"] {
        assert!(!text.contains(noise), "{noise} in\n{text}");
    }
    let names: Vec<String> = m.registry.gather().iter().map(|f| f.name().to_owned()).collect();
    assert!(!names.is_empty());
    for name in names {
        let counter_family = |s: &Spec| s.kind == Kind::Counter && name.strip_suffix("_total") == Some(s.name);
        assert!(
            CATALOGUE.iter().any(|s| s.name == name || counter_family(s)),
            "{name} is not in the catalogue"
        );
    }
}

#[test]
fn latency_buckets_are_1ms_doubling_to_2048ms() {
    let b = latency_buckets();
    assert_eq!(b.len(), 12);
    assert_eq!(b[0], 0.001);
    assert_eq!(b[11], 2.048);
}

/// The standard process collector's families, from /proc/self of this test.
#[test]
fn process_metrics_describe_this_process() {
    let text = metrics().encode();
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(text.contains("# TYPE process_cpu_seconds counter\n"), "{text}");
    assert!(value("process_cpu_seconds_total") >= 0.0);
    assert!(value("process_resident_memory_bytes") > 1024.0 * 1024.0);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    let open = value("process_open_fds");
    assert!(open >= 3.0, "stdin, stdout, stderr at least: {open}");
    assert!(value("process_max_fds") >= open);
    assert!(value("process_threads") >= 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(started <= now && started > now - 24.0 * 3600.0, "{started} vs {now}");
}

#[tokio::test]
async fn the_exposition_gains_the_otlp_counters_only_with_otlp() {
    use crate::telemetry::Otlp;
    use std::time::Duration;
    let build = crate::build::current();
    let off = Metrics::new(build, "token", "none").encode();
    assert!(!off.contains("otlp"));
    let mut otlp = Otlp::start(&crate::telemetry::tests::config("http://127.0.0.1:9")).unwrap();
    let on = Metrics::with_otlp(build, "token", "none", Some(&mut otlp));
    assert!(on.tracer.is_some());
    let text = on.encode();
    for spec in OTLP_CATALOGUE {
        assert!(text.contains(&format!("# TYPE {} counter", spec.name)), "{}", spec.name);
    }
    assert!(
        text.contains("openbao_kms_otlp_spans_dropped_total{reason=\"queue_full\"} 0"),
        "{text}"
    );
    // Without OTLP: exactly the catalogue's families.
    let families = off.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(families, CATALOGUE.len());
    otlp.shutdown().await;
    on.shutdown_export(Duration::from_secs(3)).await;
}
