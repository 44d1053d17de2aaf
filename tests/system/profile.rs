//! Transit profile findings fail closed: a key made exportable, or allowed
//! a plaintext backup, under a running provider turns Status unhealthy with
//! no key_id, `/ready` 503 and a `cryptographic_safety` finding, while
//! Encrypt is refused.

use std::time::Duration;

use bao_kms_system_tests::provider::dev_setup;
use bao_kms_system_tests::{Provider, wait};
use tonic::Code;

async fn fails_closed_after(setting: &str) -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.prime().await?;
    bao.bao(&["write", &format!("{}/keys/{}/config", p.mount, p.key), setting])?;

    let status = wait::until(
        Duration::from_secs(10),
        &format!("unhealthy Status after {setting}"),
        || async {
            match kms.status().await {
                Ok(status) if status.healthz != "ok" => Ok(status),
                Ok(status) => Err(format!("{status:?}")),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await?;
    assert!(status.key_id.is_empty(), "no key_id while unsafe: {status:?}");
    let (code, ready) = provider.ready().await?;
    assert_eq!(code, 503, "{ready}");
    assert!(ready["reasons"].to_string().contains("profile_invalid"), "{ready}");
    let status = provider.status_json().await?;
    assert!(
        status["reasons"].to_string().contains("blocking/cryptographic_safety"),
        "{status}"
    );
    let err = kms.encrypt(&[7u8; 32]).await.expect_err("encrypt must be refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    Ok(())
}

#[tokio::test]
async fn exportable_key_fails_closed() -> anyhow::Result<()> {
    fails_closed_after("exportable=true").await
}

#[tokio::test]
async fn plaintext_backup_key_fails_closed() -> anyhow::Result<()> {
    fails_closed_after("allow_plaintext_backup=true").await
}
