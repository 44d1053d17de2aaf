//! The policy `bao-kms-provider policy openbao` prints is sufficient and
//! exact: a token holding only it runs the provider, and doctor's
//! capability check (required grants present, key-changing grants absent)
//! passes.

use std::process::Command;

use bao_kms_system_tests::Provider;
use bao_kms_system_tests::doctor::{check, run_doctor};
use bao_kms_system_tests::provider::{ALLOWED_SOCKET_DIR_ENV, dev_setup, provider_binary};

#[tokio::test]
async fn generated_policy_runs_the_provider_and_nothing_more() -> anyhow::Result<()> {
    let (bao, _p, env) = dev_setup().await?;
    let out = Command::new(provider_binary())
        .args(["policy", "openbao", "--config"])
        .arg(env.config_path())
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hcl = env.dir().join("generated.hcl");
    std::fs::write(&hcl, &out.stdout)?;
    bao.bao(&["policy", "write", "bao-kms-generated", &hcl.display().to_string()])?;
    let token = bao.bao(&[
        "token",
        "create",
        "-no-default-policy",
        "-policy=bao-kms-generated",
        "-field=token",
    ])?;
    env.write_token(token.trim())?;

    let (code, checks) = run_doctor(&env, &[])?;
    assert_eq!(check(&checks, "transit.capabilities")["status"], "pass", "{checks:#?}");
    assert_eq!(code, 0, "{checks:#?}");

    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.decrypt(&kms.prime().await?).await?;
    Ok(())
}
