//! `rotation-plan` and `verify-rotation` against a real OpenBao: a rotation
//! observed by the running provider but not yet promoted is reported as
//! pending with the candidate's key_id hash; verify-rotation states its
//! limited confidence; a rotated key without a registry is refused with the
//! auto-bootstrap denial.

use std::time::Duration;

use bao_kms_core::hash::h;
use bao_kms_core::keyid::KeyId;
use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, run_json};
use bao_kms_system_tests::provider::{dev_setup, dev_setup_with};
use bao_kms_system_tests::{Provider, wait};

#[tokio::test]
async fn pending_rotation_is_reported_with_limited_confidence() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(|b| b.rotation(2, "1h")).await?;
    let provider = Provider::start(&env).await?;
    provider.client().await?.prime().await?;
    bao.rotate_key(&p)?;
    wait::until(Duration::from_secs(15), "rotationState pending", || async {
        match provider.status_json().await {
            Ok(s) if s["rotationState"] == "pending" => Ok(()),
            Ok(s) => Err(s.to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;

    let (code, plan) = run_json(&env, "rotation-plan", &[], &[])?;
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["rotationState"], "pending", "{plan:#}");
    assert_eq!(plan["activeTransitVersion"], 1);
    assert_eq!(plan["latestTransitVersion"], 2);
    assert_eq!(plan["stateCheckpointStatus"], "current");
    let created = bao.key_metadata(&p)?.created_unix(2)?;
    let v2 = KeyId::derive(&env.scope(), 2, created)?;
    assert_eq!(plan["pendingVersion"], 2, "{plan:#}");
    assert_eq!(plan["pendingKeyIdHash"], h(v2.as_str()), "{plan:#}");
    assert!(plan.get("confidence").is_none());

    let (code, verify) = run_json(&env, "verify-rotation", &[], &[])?;
    assert_eq!(code, 0, "{verify:#}");
    assert_eq!(verify["confidence"], "limited");
    let limits = verify["limitations"].to_string();
    assert!(
        limits.contains("etcd") && limits.contains("min_decryption_version"),
        "{limits}"
    );
    Ok(())
}

#[tokio::test]
async fn rotated_key_without_registry_is_refused_with_the_reason() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    bao.rotate_key(&p)?;
    let (code, plan) = run_json(&env, "rotation-plan", &[], &[])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{plan:#}");
    assert_eq!(plan["stateLoaded"], false);
    assert_eq!(plan["stateCheckpointStatus"], "absent");
    let reason = plan["bootstrapDecision"].as_str().unwrap_or_default();
    assert!(
        reason.contains("auto-bootstrap denied: latest_version=2 is not initial version 1"),
        "{plan:#}"
    );
    Ok(())
}
