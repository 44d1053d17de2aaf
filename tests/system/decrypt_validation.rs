//! Decrypt refuses what it cannot vouch for before calling OpenBao
//! (docs/key-id-and-aad.md): a key_id that is malformed or unknown, and annotations that
//! are missing, malformed or do not match the key snapshot the key_id
//! selects. Each refusal has its gRPC code and increments its reason
//! counter by exactly one, and `transit_decrypt` does not move.

use std::collections::HashMap;

use bao_kms_core::hash::h;
use bao_kms_core::keyid::KeyId;
use bao_kms_proto::v2::DecryptRequest;
use bao_kms_system_tests::provider::{ProviderEnvBuilder, dev_setup_with};
use bao_kms_system_tests::{EncryptedSeed, KmsClient, Provider, increase};
use tonic::Code;

const TRANSIT_REQUESTS: &str = "openbao_kms_openbao_requests_total";
const AAD_ERRORS: &str = "openbao_kms_aad_validation_errors_total";
const KEY_ID_ERRORS: &str = "openbao_kms_decrypt_key_id_errors_total";
const TRANSIT_DECRYPT: [(&str, &str); 1] = [("operation", "transit_decrypt")];

const VERSION: &str = "transit-key-version.kms.openbao.org";
const KEY_ID_HASH: &str = "key-id-hash.kms.openbao.org";
const MOUNT_HASH: &str = "transit-mount-hash.kms.openbao.org";

/// The deep probe decrypts through Transit on its own schedule; push it
/// out of the test window so `transit_decrypt` moves only for our calls.
fn no_deep_probe_during_test(b: ProviderEnvBuilder<'_>) -> ProviderEnvBuilder<'_> {
    b.deep_probe_interval("10m")
}

/// Sends `req`, expects `code`, and checks that the `reason` counter of
/// `metric` grew by exactly one while Transit decrypt was not called.
async fn assert_refused_before_transit(
    provider: &Provider,
    kms: &KmsClient,
    case: &str,
    req: DecryptRequest,
    code: Code,
    metric: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let before = provider.metrics_text().await?;
    let result = kms.decrypt_raw(req).await;
    let after = provider.metrics_text().await?;

    let Err(status) = result else {
        panic!("{case}: Decrypt succeeded; it must be refused with {code:?}");
    };
    assert_eq!(status.code(), code, "{case}: {status:?}");
    assert_eq!(
        increase(&before, &after, TRANSIT_REQUESTS, &TRANSIT_DECRYPT),
        0.0,
        "{case}: Transit decrypt was called"
    );
    assert_eq!(
        increase(&before, &after, metric, &[("reason", reason)]),
        1.0,
        "{case}: {metric}{{reason={reason:?}}}"
    );
    Ok(())
}

/// A real Decrypt still works and is counted, so "did not move" above
/// means something.
async fn assert_real_decrypt_calls_transit(
    provider: &Provider,
    kms: &KmsClient,
    stored: &EncryptedSeed,
) -> anyhow::Result<()> {
    let before = provider.metrics_text().await?;
    kms.decrypt(stored).await?;
    let after = provider.metrics_text().await?;
    assert!(
        increase(&before, &after, TRANSIT_REQUESTS, &TRANSIT_DECRYPT) >= 1.0,
        "a real Decrypt is not counted"
    );
    Ok(())
}

fn with_annotations(stored: &EncryptedSeed, edit: impl FnOnce(&mut HashMap<String, Vec<u8>>)) -> DecryptRequest {
    let mut req = stored.decrypt_request();
    edit(&mut req.annotations);
    req
}

#[tokio::test]
async fn tampered_annotations_are_refused_without_a_transit_call() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(no_deep_probe_during_test).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    let other_key_id = KeyId::derive(&env.scope(), 2, bao.key_metadata(&p)?.created_unix(1)? + 1)?;

    let cases = [
        (
            "transit-key-version changed to 2",
            with_annotations(&stored, |a| {
                a.insert(VERSION.into(), b"2".to_vec());
            }),
            "aad_mismatch",
        ),
        (
            "key-id-hash of another key_id",
            with_annotations(&stored, |a| {
                a.insert(KEY_ID_HASH.into(), other_key_id.hash().into_bytes());
            }),
            "aad_mismatch",
        ),
        (
            "transit-mount-hash dropped",
            with_annotations(&stored, |a| {
                a.remove(MOUNT_HASH);
            }),
            "aad_missing",
        ),
        (
            "key-id-hash not a hash",
            with_annotations(&stored, |a| {
                a.insert(KEY_ID_HASH.into(), b"not-a-hash".to_vec());
            }),
            "annotation_invalid",
        ),
    ];
    for (case, req, reason) in cases {
        assert_refused_before_transit(&provider, &kms, case, req, Code::InvalidArgument, AAD_ERRORS, reason).await?;
    }
    assert_ne!(other_key_id.hash(), h(&stored.key_id));
    assert_real_decrypt_calls_transit(&provider, &kms, &stored).await
}

#[tokio::test]
async fn unknown_key_id_is_not_found_without_a_transit_call() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(no_deep_probe_during_test).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;

    // Well formed, same identity, but a version this key never had.
    let unknown = KeyId::derive(&env.scope(), 99, bao.key_metadata(&p)?.created_unix(1)?)?;
    let mut req = stored.decrypt_request();
    req.key_id = unknown.as_str().to_owned();
    assert_refused_before_transit(
        &provider,
        &kms,
        "key_id of version 99",
        req,
        Code::NotFound,
        KEY_ID_ERRORS,
        "key_id_unknown",
    )
    .await?;
    assert_real_decrypt_calls_transit(&provider, &kms, &stored).await
}

#[tokio::test]
async fn malformed_key_id_is_invalid_without_a_transit_call() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup_with(no_deep_probe_during_test).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;

    let truncated = stored.key_id[..stored.key_id.len() - 1].to_owned();
    for (case, key_id) in [("not a key_id", "1".to_owned()), ("truncated key_id", truncated)] {
        let mut req = stored.decrypt_request();
        req.key_id = key_id;
        assert_refused_before_transit(
            &provider,
            &kms,
            case,
            req,
            Code::InvalidArgument,
            KEY_ID_ERRORS,
            "key_id_malformed",
        )
        .await?;
    }
    assert_real_decrypt_calls_transit(&provider, &kms, &stored).await
}
