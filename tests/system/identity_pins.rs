//! The identity pins in every pre-start check, against a real OpenBao: once
//! the pinned `cluster_id` no longer matches the live one, `doctor`,
//! `verify-key`, `rotation-plan` and `verify-rotation` fail naming
//! `identity_drift`, exactly when `serve` refuses to start with it.

use std::path::PathBuf;
use std::time::Duration;

use bao_kms_system_tests::Provider;
use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, assert_fails, check, run_json, run_report};
use bao_kms_system_tests::provider::{ProviderEnv, dev_setup_with, read_json};

/// serve's exit code for a fail-closed startup.
const EXIT_FAIL_CLOSED: i32 = 5;

fn pins_path(env: &ProviderEnv) -> PathBuf {
    let mut s = env.state_path().as_os_str().to_owned();
    s.push(".openbao-identity");
    PathBuf::from(s)
}

/// Pins a `cluster_id` OpenBao does not report: what a restored or moved
/// OpenBao looks like to a node.
fn pin_other_cluster(env: &ProviderEnv) -> anyhow::Result<String> {
    let path = pins_path(env);
    let mut pins = read_json(&path)?;
    let live = pins["clusterId"].as_str().unwrap_or_default().to_owned();
    pins["clusterId"] = "0b6c2f1e-0000-4000-8000-000000000000".into();
    std::fs::write(&path, serde_json::to_vec_pretty(&pins)?)?;
    Ok(live)
}

/// Every pre-start check fails with `identity_drift`; serve exits with it.
async fn assert_every_check_names_drift(env: &ProviderEnv) -> anyhow::Result<()> {
    for command in ["doctor", "verify-key"] {
        let (code, checks) = run_report(env, command, &[])?;
        assert_eq!(code, EXIT_DIAGNOSTIC, "{command}: {checks:#?}");
        assert_fails(&checks, "openbao.identity", "identity_drift");
        assert!(
            check(&checks, "openbao.identity")["fix"]
                .as_str()
                .unwrap_or_default()
                .contains("repin"),
            "{command}: {checks:#?}"
        );
    }
    for command in ["rotation-plan", "verify-rotation"] {
        let (code, plan) = run_json(env, command, &[], &[])?;
        assert_eq!(code, EXIT_DIAGNOSTIC, "{command}: {plan:#}");
        assert_eq!(plan["identityStatus"], "fail", "{command}: {plan:#}");
        assert_eq!(plan["rotationState"], "unknown", "{command}: {plan:#}");
        assert!(
            plan["reasons"].to_string().contains("identity_drift"),
            "{command}: {plan:#}"
        );
    }
    let mut serve = Provider::spawn(env)?;
    let (code, stderr) = serve.wait_exit(Duration::from_secs(30)).await?;
    assert_eq!(code, EXIT_FAIL_CLOSED, "stderr:\n{stderr}");
    assert!(stderr.contains("identity_drift"), "stderr:\n{stderr}");
    Ok(())
}

#[tokio::test]
async fn changed_cluster_id_fails_every_pre_start_check_like_serve() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup_with(|b| b.grace_timeout("1s")).await?;
    let mut provider = Provider::start(&env).await?;
    provider.terminate().await?;

    // The pins match: every pre-start check passes them.
    let (code, checks) = run_report(&env, "doctor", &[])?;
    assert_eq!(code, 0, "{checks:#?}");
    assert_eq!(check(&checks, "openbao.identity")["status"], "pass");
    let (code, plan) = run_json(&env, "rotation-plan", &[], &[])?;
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["identityStatus"], "pass", "{plan:#}");

    pin_other_cluster(&env)?;
    assert_every_check_names_drift(&env).await
}
