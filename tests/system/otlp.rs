//! OTLP export (`telemetry.otlp`) against a real OTLP/gRPC receiver built
//! on the official protobuf definitions (`otlp_receiver`): a span per KMS
//! call with the method, gRPC code, error class and key_id hash, a child
//! span per OpenBao request carrying OpenBao's request id (the one its
//! audit log records), the metric catalogue under today's names, the
//! configured header on every export, and no secret (plaintext, ciphertext,
//! token, header value) in any exported attribute or in the logs. A
//! collector that refuses connections or never answers costs dropped spans
//! (counted), never a failed KMS call.

use std::collections::BTreeSet;
use std::time::Duration;

use bao_kms_core::hash::h;
use bao_kms_proto::v2::DecryptRequest;
use bao_kms_system_tests::otlp_receiver::{OtlpReceiver, ReceivedSpan, ServerTls};
use bao_kms_system_tests::provider::dev_setup;
use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, counter, provision, wait};
use base64::Engine as _;
use serde_json::Value;

const KMS_ENCRYPT: &str = "v2.KeyManagementService/Encrypt";
const KMS_DECRYPT: &str = "v2.KeyManagementService/Decrypt";

/// Writes the config with a `telemetry.otlp` section of `fields` (YAML
/// lines under `otlp:`, indented by four spaces).
fn with_otlp(env: &ProviderEnv, fields: &str) -> anyhow::Result<()> {
    env.write_config_text(&format!("{}telemetry:\n  otlp:\n{fields}", env.config_yaml()))
}

/// The forms a secret could take in an attribute: as text, base64, hex.
fn forms(secret: &[u8]) -> Vec<String> {
    let mut out = vec![
        base64::engine::general_purpose::STANDARD.encode(secret),
        secret.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    if let Ok(text) = std::str::from_utf8(secret) {
        out.push(text.to_owned());
    }
    out
}

fn span<'a>(spans: &'a [ReceivedSpan], name: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.name == name)
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

fn attr<'a>(s: &'a ReceivedSpan, key: &str) -> &'a Value {
    s.attributes.get(key).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn kms_calls_export_spans_with_openbao_request_ids_and_metrics_without_secrets() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev_audited().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::new(&bao, &p)?;
    let receiver = OtlpReceiver::start().await?;
    let credential = "Bearer otlp-credential-7f3a9c";
    let header_file = env.dir().join("otlp-authorization");
    std::fs::write(&header_file, format!("{credential}\n"))?;
    std::fs::set_permissions(&header_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    with_otlp(
        &env,
        &format!(
            "    endpoint: {}\n    exportInterval: 1s\n    timeout: 1s\n    headerFiles:\n      authorization: {}\n",
            receiver.endpoint(),
            header_file.display()
        ),
    )?;

    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;
    // A caller's W3C trace context: the KMS span joins the caller's trace.
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let other = kms.prime().await?;
    kms.decrypt_with_metadata(
        other.decrypt_request(),
        &[("traceparent", &format!("00-{caller_trace}-{caller_span}-01"))],
    )
    .await?;
    // A call that fails: its span names the error class and gRPC code.
    let unknown = kms
        .decrypt_raw(DecryptRequest {
            key_id: "no-such-key-id".into(),
            ..stored.decrypt_request()
        })
        .await
        .expect_err("a Decrypt under an unknown key_id fails");

    let spans = wait::until(Duration::from_secs(20), "the KMS spans at the receiver", || async {
        let spans = receiver.spans();
        let decrypts = spans.iter().filter(|s| s.name == KMS_DECRYPT).count();
        let points = receiver.points();
        let metric = points.iter().any(|p| {
            p.metric == "openbao_kms_grpc_requests" && p.attributes.get("method") == Some(&Value::from("decrypt"))
        });
        if span(&spans, KMS_ENCRYPT).is_some() && decrypts >= 3 && metric {
            Ok(spans)
        } else {
            Err(format!("{} spans, {} points", spans.len(), points.len()))
        }
    })
    .await?;

    let key_id_hash = h(&stored.key_id);
    let audited: BTreeSet<String> = std::fs::read_to_string(bao.audit_log())?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["request"]["id"].as_str().map(str::to_owned))
        .collect();
    // Encrypt: a server span with a client child per Transit request.
    let encrypt = span(&spans, KMS_ENCRYPT).expect("Encrypt span");
    assert_eq!(encrypt.kind, 2, "server span: {encrypt:?}");
    assert_eq!(encrypt.parent_span_id, "", "a root span: {encrypt:?}");
    assert_eq!(attr(encrypt, "rpc.system"), "grpc");
    assert_eq!(attr(encrypt, "rpc.method"), "Encrypt");
    assert_eq!(attr(encrypt, "kms.operation"), "encrypt");
    assert_eq!(attr(encrypt, "kms.key_id_hash"), key_id_hash.as_str());
    assert_eq!(attr(encrypt, "rpc.grpc.status_code"), 0);
    assert_eq!(
        encrypt.resource.get("service.name"),
        Some(&Value::from("bao-kms-provider"))
    );
    for (kms_span, operations) in [
        (encrypt, &["openbao transit_encrypt"][..]),
        (
            spans
                .iter()
                .find(|s| s.name == KMS_DECRYPT && s.status_code != 2)
                .expect("a successful Decrypt span"),
            &["openbao transit_decrypt", "openbao transit_batch_decrypt"][..],
        ),
    ] {
        let kids = children(&spans, kms_span);
        let child = kids
            .iter()
            .find(|c| operations.contains(&c.name.as_str()))
            .unwrap_or_else(|| panic!("no {operations:?} child of {kms_span:?}; children {kids:?}"));
        assert_eq!(child.kind, 3, "client span: {child:?}");
        assert_eq!(attr(child, "openbao.status"), "ok");
        let id = attr(child, "openbao.request_id").as_str().expect("openbao.request_id");
        assert!(audited.contains(id), "{id} is not in OpenBao's audit log");
    }
    let joined = spans
        .iter()
        .find(|s| s.name == KMS_DECRYPT && s.trace_id == caller_trace)
        .expect("the Decrypt span in the caller's trace");
    assert_eq!(joined.parent_span_id, caller_span, "{joined:?}");
    assert!(
        spans
            .iter()
            .any(|s| s.parent_span_id == joined.span_id && s.trace_id == caller_trace),
        "the OpenBao request of the caller's Decrypt is in its trace"
    );
    let decrypt_ok = spans
        .iter()
        .find(|s| s.name == KMS_DECRYPT && s.status_code != 2)
        .expect("Decrypt span");
    assert_eq!(attr(decrypt_ok, "kms.key_id_hash"), key_id_hash.as_str());
    let failed = spans
        .iter()
        .find(|s| s.name == KMS_DECRYPT && s.status_code == 2)
        .expect("the failed Decrypt's span");
    assert_eq!(attr(failed, "rpc.grpc.status_code"), unknown.code() as i64);
    let class = attr(failed, "kms.error_class").as_str().expect("kms.error_class");
    assert!(unknown.message().starts_with(class), "{class} vs {unknown:?}");
    assert_eq!(failed.status_message, class);
    assert_eq!(attr(failed, "kms.key_id_hash"), h("no-such-key-id").as_str());

    // Metrics: today's names, labels and buckets.
    let points = receiver.points();
    let names: BTreeSet<&str> = points.iter().map(|p| p.metric.as_str()).collect();
    for name in [
        "openbao_kms_grpc_requests",
        "openbao_kms_grpc_duration_seconds",
        "openbao_kms_openbao_requests",
        "openbao_kms_status_key_id_hash",
        "openbao_kms_build_info",
        "openbao_kms_otlp_spans_exported",
    ] {
        assert!(names.contains(name), "{name} not exported; got {names:?}");
    }
    let duration = points
        .iter()
        .find(|p| p.metric == "openbao_kms_grpc_duration_seconds")
        .expect("duration histogram");
    assert_eq!(duration.kind, "histogram");
    assert_eq!(duration.bounds.first(), Some(&0.001));
    assert_eq!(duration.bounds.len(), 12);
    assert!(
        points.iter().any(|p| p.metric == "openbao_kms_status_key_id_hash"
            && p.attributes.get("hash") == Some(&Value::from(key_id_hash.as_str()))),
        "key_id hash gauge"
    );

    // Every export carried the header; its value is not logged.
    let headers = receiver.headers();
    assert!(!headers.is_empty());
    for h in &headers {
        assert_eq!(h.get("authorization").map(String::as_str), Some(credential), "{h:?}");
    }

    // No secret in any exported attribute or resource, nor in the logs.
    let mut exported = String::new();
    for s in &spans {
        exported.push_str(&format!(
            "{} {:?} {:?} {}\n",
            s.name, s.attributes, s.resource, s.status_message
        ));
    }
    for p in &points {
        exported.push_str(&format!("{} {:?}\n", p.metric, p.attributes));
    }
    let secrets: [(&str, &[u8]); 4] = [
        ("plaintext", &stored.seed),
        ("ciphertext", &stored.ciphertext),
        ("token", p.token.as_bytes()),
        ("header value", credential.as_bytes()),
    ];
    provider.terminate().await?;
    let logs = format!("{}{}", provider.stdout(), provider.stderr());
    for (what, secret) in secrets {
        for form in forms(secret) {
            assert!(!exported.contains(&form), "the {what} appears in an exported attribute");
            assert!(!logs.contains(&form), "the {what} appears in the provider's log");
        }
    }
    Ok(())
}

/// Exports to `endpoint` while 40 Encrypt/Decrypt pairs run: every call
/// succeeds; the provider's /metrics counts the dropped spans by `reason`.
async fn calls_succeed_while_export_fails(endpoint: &str, queue: u32) -> anyhow::Result<(f64, f64, f64)> {
    let (_bao, _p, env) = dev_setup().await?;
    with_otlp(
        &env,
        &format!("    endpoint: {endpoint}\n    exportInterval: 1s\n    timeout: 1s\n    maxQueueSize: {queue}\n"),
    )?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    for _ in 0..40 {
        let stored = kms.prime().await?;
        kms.decrypt(&stored).await?;
    }
    let counts = wait::until(
        Duration::from_secs(20),
        "dropped spans and a failed metric push",
        || async {
            let text = provider.metrics_text().await.map_err(|e| e.to_string())?;
            let full = counter(
                &text,
                "openbao_kms_otlp_spans_dropped_total",
                &[("reason", "queue_full")],
            );
            let failed = counter(
                &text,
                "openbao_kms_otlp_spans_dropped_total",
                &[("reason", "export_failed")],
            );
            let pushes = counter(&text, "openbao_kms_otlp_metric_export_failures_total", &[]);
            if failed > 0.0 && pushes > 0.0 {
                Ok((full, failed, pushes))
            } else {
                Err(format!(
                    "queue_full {full}, export_failed {failed}, metric pushes failed {pushes}"
                ))
            }
        },
    )
    .await?;
    let text = provider.metrics_text().await?;
    assert_eq!(counter(&text, "openbao_kms_otlp_spans_exported_total", &[]), 0.0);
    assert!(
        counter(
            &text,
            "openbao_kms_grpc_requests_total",
            &[("method", "decrypt"), ("status", "ok")]
        ) >= 40.0,
        "every Decrypt succeeded"
    );
    Ok(counts)
}

#[tokio::test]
async fn a_collector_that_is_down_or_silent_drops_spans_and_never_fails_a_kms_call() -> anyhow::Result<()> {
    // Down: nothing listens on the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (_, failed, pushes) = calls_succeed_while_export_fails(&format!("http://127.0.0.1:{port}"), 2048).await?;
    println!("collector down: {failed} spans dropped (export_failed), {pushes} metric pushes failed");

    // Silent: connections are accepted and never answered; with a queue of
    // 4 the spans made while an export waits for its deadline are dropped.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", silent.local_addr()?);
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let (full, failed, pushes) = calls_succeed_while_export_fails(&endpoint, 4).await?;
    hold.abort();
    println!(
        "collector silent: {full} spans dropped (queue_full), {failed} (export_failed), {pushes} metric pushes failed"
    );
    assert!(full > 0.0, "a queue of 4 overflows while exports wait");
    Ok(())
}

/// A CA, and a certificate for `localhost` and 127.0.0.1 it signed (PEM
/// certificate, PEM key).
fn pki(name: &str) -> anyhow::Result<(rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, String, String)> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse()?));
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca)?;
    Ok((ca, cert.pem(), key.serialize_pem()))
}

#[tokio::test]
async fn https_export_presents_the_client_certificate_and_trusts_only_the_ca_file() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let (server_ca, server_cert, server_key) = pki("otel-collector")?;
    let (client_ca, client_cert, client_key) = pki("bao-kms-provider")?;
    let receiver = OtlpReceiver::start_with(Some(ServerTls {
        cert: server_cert.into_bytes(),
        key: server_key.into_bytes(),
        client_ca: Some(client_ca.pem().into_bytes()),
    }))
    .await?;
    let dir = env.dir();
    let write = |name: &str, pem: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, pem)?;
        Ok(path)
    };
    let ca_file = write("otlp-ca.pem", &server_ca.pem())?;
    let cert_file = write("otlp-client.pem", &client_cert)?;
    let key_file = write("otlp-client.key", &client_key)?;
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let fields = |ca: &std::path::Path| {
        format!(
            "    endpoint: https://localhost:{}\n    caFile: {}\n    clientCertFile: {}\n    clientKeyFile: {}\n    exportInterval: 1s\n    timeout: 1s\n",
            receiver.addr().port(),
            ca.display(),
            cert_file.display(),
            key_file.display()
        )
    };
    with_otlp(&env, &fields(&ca_file))?;
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;
    wait::until(Duration::from_secs(20), "the Decrypt span over TLS", || async {
        let spans = receiver.spans();
        span(&spans, KMS_DECRYPT)
            .map(|_| ())
            .ok_or(format!("{} spans", spans.len()))
    })
    .await?;
    provider.terminate().await?;

    // A caFile that did not sign the collector's certificate: nothing
    // arrives, the calls still succeed and the failed exports are counted.
    let before = receiver.spans().len();
    let wrong_ca = write("otlp-wrong-ca.pem", &client_ca.pem())?;
    with_otlp(&env, &fields(&wrong_ca))?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;
    wait::until(
        Duration::from_secs(20),
        "failed exports to an untrusted collector",
        || async {
            let text = provider.metrics_text().await.map_err(|e| e.to_string())?;
            let failed = counter(
                &text,
                "openbao_kms_otlp_spans_dropped_total",
                &[("reason", "export_failed")],
            );
            if failed > 0.0 {
                Ok(())
            } else {
                Err(format!("export_failed {failed}"))
            }
        },
    )
    .await?;
    assert_eq!(
        receiver.spans().len(),
        before,
        "a span crossed an untrusted TLS connection"
    );
    Ok(())
}
