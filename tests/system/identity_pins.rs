//! The identity pins in every pre-start check, against a real OpenBao: once
//! the pinned `cluster_id` no longer matches the live one, `doctor`,
//! `verify-key`, `rotation-plan` and `verify-rotation` fail naming
//! `identity_drift`, exactly when `serve` refuses to start with it; `repin`
//! plans the change, refuses while the provider runs or the registry moved
//! since the review, and `repin --apply` makes serve start again.

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

#[tokio::test]
async fn repin_apply_after_a_drift_makes_serve_start() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup_with(|b| b.grace_timeout("1s")).await?;
    let mut provider = Provider::start(&env).await?;
    let live = pin_other_cluster(&env)?;
    let fake = read_json(&pins_path(&env))?["clusterId"].clone();

    // The plan, beside the running provider: reads only.
    let (code, plan) = run_json(&env, "repin", &[], &[])?;
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["applied"], false);
    assert_eq!(plan["identityStatus"], "fail", "{plan:#}");
    assert!(plan["identityDrift"].to_string().contains("identity_drift"), "{plan:#}");
    assert_eq!(plan["previousIdentity"]["clusterId"], fake, "{plan:#}");
    assert_eq!(plan["newIdentity"]["clusterId"], live.as_str(), "{plan:#}");
    assert!(plan["changes"].to_string().contains("cluster_id"), "{plan:#}");
    let hash = plan["stateHash"].as_str().unwrap_or_default().to_owned();
    assert!(hash.starts_with("krs1."), "{plan:#}");

    // Refused while the provider holds the writer lock.
    let (code, refused) = run_json(&env, "repin", &["--apply", "--expected-state-hash", &hash], &[])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{refused:#}");
    assert!(
        refused["reasons"].to_string().contains("provider is running"),
        "{refused:#}"
    );
    provider.terminate().await?;

    assert_every_check_names_drift(&env).await?;

    // A hash other than the reviewed one writes nothing.
    let (code, refused) = run_json(
        &env,
        "repin",
        &["--apply", "--expected-state-hash", "krs1.not-the-reviewed-one"],
        &[],
    )?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{refused:#}");
    assert!(
        refused["reasons"].to_string().contains("expected-state-hash"),
        "{refused:#}"
    );
    assert_eq!(read_json(&pins_path(&env))?["clusterId"], fake);

    let (code, applied) = run_json(&env, "repin", &["--apply", "--expected-state-hash", &hash], &[])?;
    assert_eq!(code, 0, "{applied:#}");
    assert_eq!(applied["applied"], true, "{applied:#}");
    assert_eq!(read_json(&pins_path(&env))?["clusterId"], live.as_str());
    let mut history = pins_path(&env).into_os_string();
    history.push("-history");
    let text = std::fs::read_to_string(&history)?;
    let record: serde_json::Value = serde_json::from_str(text.trim_end())?;
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(record["previous"]["clusterId"], fake, "{record:#}");
    assert_eq!(record["current"]["clusterId"], live.as_str(), "{record:#}");
    assert_eq!(record["stateHash"], hash.as_str(), "{record:#}");

    // Every pre-start check and serve agree again.
    let (code, checks) = run_report(&env, "doctor", &[])?;
    assert_eq!(code, 0, "{checks:#?}");
    assert_eq!(check(&checks, "openbao.identity")["status"], "pass");
    let (code, again) = run_json(&env, "repin", &[], &[])?;
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(again["changes"], serde_json::json!([]), "{again:#}");
    let mut serve = Provider::start(&env).await?;
    serve.client().await?.prime().await?;
    serve.terminate().await?;
    Ok(())
}
