//! What the provider's logs carry for an operator correlating them with
//! OpenBao: the `request_id` of every OpenBao answer on the
//! `openbao.request` line (`logging.logOpenBaoRequestIDs`), matched against
//! OpenBao's own audit log, and nothing of it when switched off; and the
//! time-boxed debug correlation (`logging.debugCorrelation`) tying a KMS
//! request to its OpenBao calls until its TTL ends.

use std::collections::BTreeSet;

use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, provision};
use serde_json::Value;

/// The provider's JSON log lines.
pub fn log_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The `openbao.request` lines of one OpenBao operation.
fn request_lines<'a>(lines: &'a [Value], operation: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["message"] == "openbao.request" && l["openbao_operation"] == operation)
        .collect()
}

#[tokio::test]
async fn openbao_request_ids_match_the_audit_log_and_can_be_switched_off() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev_audited().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::new(&bao, &p)?;
    let audit = bao.audit_log();

    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;
    provider.terminate().await?;

    let lines = log_lines(&provider.stderr());
    let audited: BTreeSet<String> = std::fs::read_to_string(&audit)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["request"]["id"].as_str().map(str::to_owned))
        .collect();
    for operation in [
        "transit_encrypt",
        "transit_decrypt",
        "transit_metadata_read",
        "token_lookup_self",
    ] {
        let found = request_lines(&lines, operation);
        assert!(!found.is_empty(), "no openbao.request line for {operation}");
        for line in found {
            let id = line["openbao_request_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no openbao_request_id on {line}"));
            assert!(
                audited.contains(id),
                "{id} of {operation} is not in OpenBao's audit log"
            );
        }
    }

    // Switched off: the same lines without the field.
    env.write_config_text(&format!("{}  logOpenBaoRequestIDs: false\n", env.config_yaml()))?;
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.decrypt(&stored).await?;
    provider.terminate().await?;
    let lines = log_lines(&provider.stderr());
    let decrypts = request_lines(&lines, "transit_decrypt");
    assert!(!decrypts.is_empty(), "no openbao.request line for transit_decrypt");
    assert!(
        lines.iter().all(|l| l.get("openbao_request_id").is_none()),
        "openbao_request_id logged although logOpenBaoRequestIDs is false"
    );
    Ok(())
}

/// The value of a string field of a log line.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line.get(name).and_then(Value::as_str)
}

#[tokio::test]
async fn debug_correlation_tags_a_request_and_its_openbao_calls_until_the_ttl() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev_audited().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::new(&bao, &p)?;
    let audit = bao.audit_log();
    env.write_config_text(&format!(
        "{}  debugCorrelation:\n    enabled: true\n    ttl: 8s\n    incidentId: INC-2041\n",
        env.config_yaml()
    ))?;
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    let request = stored.decrypt_request();
    let uid_hash = bao_kms_core::hash::h(&request.uid);
    kms.decrypt_raw(request).await?;

    let lines = log_lines(&provider.stderr());
    let opened = lines
        .iter()
        .find(|l| l["message"] == "debug_correlation.enabled")
        .expect("debug_correlation.enabled is logged at start");
    assert_eq!(field(opened, "debug_correlation_incident"), Some("INC-2041"));
    let expires_at = field(opened, "debug_correlation_expires_at").expect("expiry");
    let decrypt = lines
        .iter()
        .find(|l| l["message"] == "kms.request" && l["operation"] == "kms.decrypt")
        .expect("a kms.request line for the decrypt");
    assert_eq!(field(decrypt, "request_uid_hash"), Some(uid_hash.as_str()));
    assert_eq!(field(decrypt, "debug_correlation_incident"), Some("INC-2041"));
    assert_eq!(field(decrypt, "debug_correlation_expires_at"), Some(expires_at));
    // The OpenBao call made for that request: same uid hash, and its
    // request id is in OpenBao's audit log.
    let transit = request_lines(&lines, "transit_decrypt");
    let call = transit
        .iter()
        .find(|l| field(l, "request_uid_hash") == Some(uid_hash.as_str()))
        .unwrap_or_else(|| panic!("no transit_decrypt line with the request's uid hash: {transit:?}"));
    assert_eq!(field(call, "debug_correlation_incident"), Some("INC-2041"));
    let id = field(call, "openbao_request_id").expect("openbao_request_id");
    assert!(
        std::fs::read_to_string(&audit)?.contains(id),
        "{id} not in the audit log"
    );
    // Background calls serve no KMS request: no uid hash.
    assert!(
        request_lines(&lines, "transit_metadata_read")
            .iter()
            .all(|l| l.get("request_uid_hash").is_none())
    );

    // The window closes by itself; later requests carry nothing of it.
    bao_kms_system_tests::wait::until(
        std::time::Duration::from_secs(20),
        "debug_correlation.expired",
        || async {
            log_lines(&provider.stderr())
                .iter()
                .any(|l| l["message"] == "debug_correlation.expired")
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        },
    )
    .await?;
    let late = stored.decrypt_request();
    let late_hash = bao_kms_core::hash::h(&late.uid);
    kms.decrypt_raw(late).await?;
    provider.terminate().await?;
    let stderr = provider.stderr();
    assert!(!stderr.contains(&late_hash), "a request after the TTL is still tagged");
    let decrypts = log_lines(&stderr)
        .into_iter()
        .filter(|l| l["message"] == "kms.request" && l["operation"] == "kms.decrypt")
        .count();
    assert_eq!(decrypts, 2, "the late decrypt is still logged, untagged");
    Ok(())
}

/// The `kms.request` warn lines of one error class.
fn failure_lines(lines: &[Value], error_class: &str) -> usize {
    lines
        .iter()
        .filter(|l| l["message"] == "kms.request" && l["error_class"] == error_class)
        .count()
}

/// The `suppressed` counts of the `log.suppressed` lines of one class.
fn summed_suppressed(lines: &[Value], error_class: &str) -> u64 {
    lines
        .iter()
        .filter(|l| l["message"] == "log.suppressed" && l["error_class"] == error_class)
        .map(|l| l["suppressed"].as_u64().expect("suppressed is a number"))
        .sum()
}

#[tokio::test]
async fn rejected_requests_log_within_the_budget_and_count_the_rest() -> anyhow::Result<()> {
    const BURST: usize = 5;
    const UNKNOWN: usize = 200;
    const MALFORMED: usize = 30;
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::new(&bao, &p)?;
    // One window longer than the test: every line past the burst is
    // suppressed until serve stops and reports the open counts.
    env.write_config_text(&format!(
        "{}  requestLogBurst: {BURST}\n  requestLogWindow: 1h\n",
        env.config_yaml()
    ))?;
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    let before = provider.metrics_text().await?;

    let unknown = bao_kms_core::keyid::KeyId::derive(&env.scope(), 99, bao.key_metadata(&p)?.created_unix(1)?)?;
    for _ in 0..UNKNOWN {
        let mut req = stored.decrypt_request();
        req.key_id = unknown.as_str().to_owned();
        let e = kms.decrypt_raw(req).await.expect_err("an unknown key_id is refused");
        assert_eq!(e.code(), tonic::Code::NotFound);
    }
    for _ in 0..MALFORMED {
        let mut req = stored.decrypt_request();
        req.key_id = "1".to_owned();
        let e = kms.decrypt_raw(req).await.expect_err("a malformed key_id is refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
    // A success is never limited.
    kms.decrypt(&stored).await?;

    let after = provider.metrics_text().await?;
    let suppressed = bao_kms_system_tests::increase(
        &before,
        &after,
        "openbao_kms_log_lines_suppressed_total",
        &[("event", "kms.request")],
    );
    assert_eq!(suppressed as usize, UNKNOWN + MALFORMED - 2 * BURST);
    // Every request still counts in the gRPC metrics.
    let refused = bao_kms_system_tests::increase(
        &before,
        &after,
        "openbao_kms_grpc_requests_total",
        &[("method", "decrypt"), ("status", "not_found")],
    );
    assert_eq!(refused as usize, UNKNOWN);

    provider.terminate().await?;
    let lines = log_lines(&provider.stderr());
    // The interface's stable fields: ts, a lower-case level, kms.<method>,
    // status ok/error and the gRPC code beside it.
    let refused_line = lines
        .iter()
        .find(|l| l["message"] == "kms.request" && l["error_class"] == "key_id_unknown")
        .expect("a key_id_unknown line");
    assert_eq!(refused_line["level"], "warn", "{refused_line}");
    assert_eq!(refused_line["operation"], "kms.decrypt", "{refused_line}");
    assert_eq!(refused_line["status"], "error", "{refused_line}");
    assert_eq!(refused_line["grpc_code"], "not_found", "{refused_line}");
    assert!(
        refused_line["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')),
        "{refused_line}"
    );
    for (class, sent) in [("key_id_unknown", UNKNOWN), ("key_id_malformed", MALFORMED)] {
        let logged = failure_lines(&lines, class);
        assert_eq!(logged, BURST, "{class}: the burst is written");
        let summed = summed_suppressed(&lines, class);
        assert_eq!(
            logged as u64 + summed,
            sent as u64,
            "{class}: every refusal is either logged or summed in log.suppressed"
        );
    }
    Ok(())
}
