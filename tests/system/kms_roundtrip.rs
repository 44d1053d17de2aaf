//! kube-apiserver's view of a healthy provider: Status, Encrypt of a DEK
//! seed, Decrypt with the stored annotations; the key_id it reports is the
//! one derived independently from the config and OpenBao's key metadata; a
//! restarted provider with the same state reads old data under the same key_id.

use bao_kms_core::hash::h;
use bao_kms_core::keyid::KeyId;
use bao_kms_system_tests::provider::dev_setup;
use bao_kms_system_tests::{Provider, metric};

#[tokio::test]
async fn round_trip_reports_the_independently_derived_key_id() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;

    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;

    // key_id = derive(identity scope from the config, version 1, creation
    // second of version 1 as OpenBao reports it).
    let created = bao.key_metadata(&p)?.created_unix(1)?;
    let expected = KeyId::derive(&env.scope(), 1, created)?;
    assert_eq!(stored.key_id, expected.as_str());
    assert_eq!(kms.healthy_status().await?.key_id, expected.as_str());

    let status = provider.status_json().await?;
    assert_eq!(status["keyID"], expected.as_str(), "/status: {status}");
    assert_eq!(status["keyIDHash"], h(expected.as_str()), "/status: {status}");
    assert_eq!(status["activeVersion"], 1, "/status: {status}");
    assert_eq!(status["healthy"], true, "/status: {status}");
    assert_eq!(status["rotationState"], "active", "/status: {status}");
    assert_eq!(status["reasons"].as_array().map(Vec::len), Some(0), "/status: {status}");
    assert_eq!(status["generation"], 1, "/status: {status}");
    assert!(
        status["version"].as_str().is_some_and(|v| !v.is_empty()),
        "/status: {status}"
    );
    let cache_age = status["cacheAgeSeconds"].as_f64();
    assert!(
        cache_age.is_some_and(|age| (0.0..=3.0).contains(&age)),
        "/status cache age: {status}"
    );

    let (ready, body) = provider.ready().await?;
    assert_eq!(ready, 200, "/ready: {body}");
    let (live, body) = provider.health_get("/live").await?;
    assert_eq!(live, 200, "/live: {body}");

    let metrics = provider.metrics_text().await?;
    let hash = h(expected.as_str());
    assert_eq!(
        metric(&metrics, "openbao_kms_status_key_id_hash", &[("hash", &hash)]),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "openbao_kms_rotation_state", &[("state", "active")]),
        Some(1.0)
    );
    // The process collector describes the provider's own process.
    let pid = provider.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let soft_nofile: f64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("soft RLIMIT_NOFILE of the provider");
    assert_eq!(metric(&metrics, "process_max_fds", &[]), Some(soft_nofile));
    let open_fds = metric(&metrics, "process_open_fds", &[]).expect("process_open_fds");
    assert!(open_fds >= 4.0, "stdio and the socket at least: {open_fds}");
    assert!(metric(&metrics, "process_resident_memory_bytes", &[]).is_some_and(|b| b > 1e6));
    assert!(metric(&metrics, "process_cpu_seconds_total", &[]).is_some());
    let started = metric(&metrics, "process_start_time_seconds", &[]).expect("start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    assert!(started <= now && now - started < 600.0, "started {started}, now {now}");
    assert_eq!(
        metric(&metrics, "openbao_kms_panic_recoveries_total", &[("method", "decrypt")]),
        Some(0.0)
    );

    // Logs never carry the token.
    assert!(
        !provider.stderr().contains(&p.token),
        "the OpenBao token appears in the provider's log"
    );
    Ok(())
}

#[tokio::test]
async fn encrypt_answer_names_the_transit_version_it_used() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    let stored = provider.client().await?.prime().await?;

    assert_eq!(
        stored.annotation("transit-key-version.kms.openbao.org").as_deref(),
        Some("1")
    );
    assert_eq!(
        stored.annotation("key-id-hash.kms.openbao.org"),
        Some(h(&stored.key_id))
    );
    assert!(
        stored.ciphertext.starts_with(b"vault:v1:"),
        "ciphertext does not start with vault:v1: ({} bytes)",
        stored.ciphertext.len()
    );
    Ok(())
}

#[tokio::test]
async fn restarted_provider_reads_old_data_under_the_same_key_id() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;

    let mut first = Provider::start(&env).await?;
    let stored = first.client().await?.prime().await?;
    let code = first.terminate().await?;
    assert_eq!(code, 0, "SIGTERM must drain and exit 0; stderr:\n{}", first.stderr());
    assert!(!env.socket_path().exists(), "the socket must be removed on shutdown");
    assert!(env.state_path().is_file(), "state file missing after a clean run");
    assert!(env.checkpoint_path().is_file(), "checkpoint missing after a clean run");

    let second = Provider::start(&env).await?;
    let kms = second.client().await?;
    assert_eq!(kms.healthy_status().await?.key_id, stored.key_id);
    kms.decrypt(&stored).await?;
    assert_eq!(kms.prime().await?.key_id, stored.key_id);
    Ok(())
}
