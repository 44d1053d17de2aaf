//! The gRPC code of a failure names its cause: a request the server cannot
//! decode is `INVALID_ARGUMENT`, a plaintext whose ciphertext would break
//! the 1 KiB limit is refused before Transit, and the Transit key's state
//! (deleted, deleted and created again, `min_decryption_version` raised)
//! is never counted as a bad request.

use bao_kms_system_tests::provider::{ProviderEnvBuilder, dev_setup_with, expected_key_id};
use bao_kms_system_tests::{Provider, counter};
use tonic::Code;

use crate::rotation::wait_key_id;

/// rotation's probe cadence, promotion after one observation, and no deep
/// probe's Transit calls in the counted window.
fn fast(b: ProviderEnvBuilder<'_>) -> ProviderEnvBuilder<'_> {
    crate::rotation::fast(b).rotation(1, "500ms").deep_probe_interval("10m")
}

fn requests(metrics: &str, method: &str, status: &str) -> f64 {
    counter(
        metrics,
        "openbao_kms_grpc_requests_total",
        &[("method", method), ("status", status)],
    )
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup_with(|b| b.deep_probe_interval("10m")).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    let before = provider.metrics_text().await?;
    // Field 1 (bytes), length 200, but only 2 bytes follow: truncated.
    let truncated = vec![0x0a, 200, 1, 2];
    // Field 2 of DecryptRequest (uid, a string) holding invalid UTF-8.
    let bad_utf8 = vec![0x12, 2, 0xff, 0xfe];
    for (method, body) in [
        ("Decrypt", truncated.clone()),
        ("Encrypt", truncated),
        ("Decrypt", bad_utf8),
    ] {
        let err = kms
            .call_bytes(method, body)
            .await
            .expect_err("a malformed message must be refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{method}: {err:?}");
        assert!(err.message().starts_with("malformed request: "), "{method}: {err:?}");
    }
    let after = provider.metrics_text().await?;
    assert_eq!(
        requests(&after, "decrypt", "internal") - requests(&before, "decrypt", "internal"),
        0.0
    );
    kms.healthy_status().await?;
    kms.decrypt(&stored).await?;
    Ok(())
}

#[tokio::test]
async fn a_plaintext_over_the_ciphertext_limit_is_refused_before_transit() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup_with(|b| b.deep_probe_interval("10m")).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.prime().await?;
    let calls = |m: &str| {
        counter(
            m,
            "openbao_kms_openbao_requests_total",
            &[("operation", "transit_encrypt")],
        )
    };

    // 731 bytes under version 1: Transit's answer is exactly 1021 bytes.
    let fits = kms.encrypt(&[7; 731]).await?;
    assert_eq!(fits.ciphertext.len(), 1021);

    let before = provider.metrics_text().await?;
    for len in [732, 1024] {
        let err = kms.encrypt(&vec![7; len]).await.expect_err("over the limit");
        assert_eq!(err.code(), Code::InvalidArgument, "{len}: {err:?}");
        assert!(err.message().starts_with("protocol_limit: "), "{len}: {err:?}");
        assert!(err.message().contains("exceeds the max size of 1024"), "{len}: {err:?}");
    }
    let after = provider.metrics_text().await?;
    assert_eq!(calls(&after) - calls(&before), 0.0, "Transit was called");
    kms.healthy_status().await?;
    Ok(())
}

#[tokio::test]
async fn transit_key_state_is_a_precondition_or_an_outage_never_a_bad_request() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(fast).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let seed_v1 = kms.prime().await?;
    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &env, 2)?;
    wait_key_id(&provider, &k2).await?;
    let seed_v2 = kms.prime().await?;
    let before = provider.metrics_text().await?;

    // min_decryption_version above the ciphertext's version.
    let config = format!("{}/keys/{}/config", p.mount, p.key);
    bao.bao(&["write", &config, "min_decryption_version=2"])?;
    let err = kms.decrypt_raw(seed_v1.decrypt_request()).await.expect_err("too old");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().starts_with("transit_key_version_rejected: "), "{err:?}");
    kms.decrypt(&seed_v2).await?;

    // The key deleted.
    let path = format!("{}/keys/{}", p.mount, p.key);
    bao.bao(&["write", &config, "deletion_allowed=true"])?;
    bao.bao(&["delete", &path])?;
    let err = kms.decrypt_raw(seed_v2.decrypt_request()).await.expect_err("deleted");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().starts_with("transit_key_missing: "), "{err:?}");

    // Created again: version 2 of the old key is "too new" for it.
    bao.bao(&["write", "-f", &path, "type=aes256-gcm96"])?;
    let err = kms.decrypt_raw(seed_v2.decrypt_request()).await.expect_err("too new");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().starts_with("transit_key_version_rejected: "), "{err:?}");

    let after = provider.metrics_text().await?;
    assert_eq!(
        requests(&after, "decrypt", "invalid_argument") - requests(&before, "decrypt", "invalid_argument"),
        0.0,
        "a key state counted as a bad request"
    );
    assert!(
        requests(&after, "decrypt", "failed_precondition") - requests(&before, "decrypt", "failed_precondition") >= 2.0
    );
    Ok(())
}
