//! kube-apiserver's KMS v2 limits, enforced by the provider before OpenBao
//! is called (kube-apiserver's KMS v2 limits): ciphertext and key_id at most 1 KiB,
//! annotations at most 32 KiB, a non-empty plaintext of at most 1 KiB, and a
//! 64 KiB cap on any gRPC message. Oversize input is refused and the
//! provider stays healthy.

use bao_kms_proto::v2::DecryptRequest;
use bao_kms_system_tests::provider::{ProviderEnvBuilder, dev_setup_with};
use bao_kms_system_tests::{KmsClient, Provider};
use tonic::Code;

const TRANSIT_REQUESTS: &str = "openbao_kms_openbao_requests_total";

/// Keep the deep probe's own Transit calls out of the test window.
fn no_deep_probe_during_test(b: ProviderEnvBuilder<'_>) -> ProviderEnvBuilder<'_> {
    b.deep_probe_interval("10m")
}

/// Transit encrypt + decrypt calls so far.
fn transit_calls(metrics: &str) -> f64 {
    ["transit_encrypt", "transit_decrypt"]
        .iter()
        .map(|op| bao_kms_system_tests::counter(metrics, TRANSIT_REQUESTS, &[("operation", op)]))
        .sum()
}

async fn assert_invalid_without_transit(
    provider: &Provider,
    case: &str,
    call: impl Future<Output = Result<(), tonic::Status>>,
) -> anyhow::Result<()> {
    let before = provider.metrics_text().await?;
    let result = call.await;
    let after = provider.metrics_text().await?;
    let Err(status) = result else {
        panic!("{case}: the call succeeded; it must be refused");
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    assert_eq!(
        transit_calls(&after) - transit_calls(&before),
        0.0,
        "{case}: Transit was called"
    );
    Ok(())
}

async fn decrypt(kms: &KmsClient, req: DecryptRequest) -> Result<(), tonic::Status> {
    kms.decrypt_raw(req).await.map(drop)
}

async fn encrypt(kms: &KmsClient, plaintext: Vec<u8>) -> Result<(), tonic::Status> {
    kms.encrypt(&plaintext).await.map(drop)
}

#[tokio::test]
async fn oversize_and_empty_inputs_are_refused_before_openbao() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup_with(no_deep_probe_during_test).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;

    let mut req = stored.decrypt_request();
    req.ciphertext = [b"vault:v1:".as_slice(), &[b'A'; 1016]].concat();
    assert_eq!(req.ciphertext.len(), 1025);
    assert_invalid_without_transit(&provider, "ciphertext of 1025 bytes", decrypt(&kms, req)).await?;

    let mut req = stored.decrypt_request();
    req.key_id = format!("{}{}", stored.key_id, "A".repeat(1025 - stored.key_id.len()));
    assert_eq!(req.key_id.len(), 1025);
    assert_invalid_without_transit(&provider, "key_id of 1025 bytes", decrypt(&kms, req)).await?;

    let mut req = stored.decrypt_request();
    let used: usize = req.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    let key = "padding.example.com";
    req.annotations
        .insert(key.into(), vec![b'x'; 32 * 1024 + 1 - used - key.len()]);
    assert_eq!(
        req.annotations.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
        32 * 1024 + 1
    );
    assert_invalid_without_transit(&provider, "annotations of 32 KiB + 1", decrypt(&kms, req)).await?;

    assert_invalid_without_transit(&provider, "empty plaintext", encrypt(&kms, Vec::new())).await?;
    assert_invalid_without_transit(&provider, "plaintext of 1025 bytes", encrypt(&kms, vec![7; 1025])).await?;

    kms.healthy_status().await?;
    kms.decrypt(&stored).await?;
    Ok(())
}

#[tokio::test]
async fn message_over_64_kib_is_refused_and_the_provider_stays_healthy() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup_with(no_deep_probe_during_test).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;

    let before = provider.metrics_text().await?;
    let encrypt_result = kms.encrypt(&vec![1; 70 * 1024]).await;
    let mut req = stored.decrypt_request();
    req.annotations
        .insert("padding.example.com".into(), vec![b'x'; 70 * 1024]);
    let decrypt_result = kms.decrypt_raw(req).await;
    let after = provider.metrics_text().await?;

    // tonic answers an oversize message with its own code (OutOfRange or
    // ResourceExhausted); any refusal is right, as long as nothing reached
    // OpenBao and the provider keeps serving.
    let encrypt_status = encrypt_result.expect_err("a 70 KiB Encrypt must be refused");
    let decrypt_status = decrypt_result.expect_err("a 70 KiB Decrypt must be refused");
    for status in [&encrypt_status, &decrypt_status] {
        assert_ne!(status.code(), Code::Ok);
        assert_ne!(
            status.code(),
            Code::Unavailable,
            "the connection must survive: {status:?}"
        );
    }
    assert_eq!(
        transit_calls(&after) - transit_calls(&before),
        0.0,
        "Transit was called"
    );

    kms.healthy_status().await?;
    kms.decrypt(&stored).await?;
    let (ready, body) = provider.ready().await?;
    assert_eq!(ready, 200, "/ready after oversize messages: {body}");
    Ok(())
}
