//! The policy `bao-kms-provider policy openbao` prints is sufficient and
//! exact: a token holding only it runs the provider, and doctor's
//! capability check (required grants present, key-changing grants absent)
//! passes. Doctor judges a token as serve does: a grant that lets the token
//! rewrap or restore fails naming it, and a policy without the mount read
//! (which OpenBao answers for any token with access to the mount) passes
//! and serves.

use std::process::Command;

use bao_kms_system_tests::Provider;
use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, assert_fails, check, run_doctor};
use bao_kms_system_tests::provider::{ALLOWED_SOCKET_DIR_ENV, dev_setup, provider_binary};
use bao_kms_system_tests::{OpenBao, ProviderEnv};

/// What `policy openbao` prints for the env's configuration.
fn printed_policy(env: &ProviderEnv) -> anyhow::Result<String> {
    let out = Command::new(provider_binary())
        .args(["policy", "openbao", "--config"])
        .arg(env.config_path())
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// Writes `hcl` as policy `name`.
fn write_policy(bao: &OpenBao, env: &ProviderEnv, name: &str, hcl: &str) -> anyhow::Result<()> {
    let file = env.dir().join(format!("{name}.hcl"));
    std::fs::write(&file, hcl)?;
    bao.bao(&["policy", "write", name, &file.display().to_string()])?;
    Ok(())
}

/// Writes `hcl` as policy `name` and gives the env a token holding only it.
fn token_with_policy(bao: &OpenBao, env: &ProviderEnv, name: &str, hcl: &str) -> anyhow::Result<()> {
    write_policy(bao, env, name, hcl)?;
    let token = bao.bao(&[
        "token",
        "create",
        "-no-default-policy",
        &format!("-policy={name}"),
        "-field=token",
    ])?;
    env.write_token(token.trim())
}

/// Doctor's capability check passes, doctor exits 0, and the provider
/// serves an Encrypt and a Decrypt with the env's credentials.
async fn doctor_passes_and_the_provider_serves(env: &ProviderEnv) -> anyhow::Result<()> {
    let (code, checks) = run_doctor(env, &[])?;
    assert_eq!(check(&checks, "transit.capabilities")["status"], "pass", "{checks:#?}");
    assert_eq!(code, 0, "{checks:#?}");
    let provider = Provider::start(env).await?;
    let kms = provider.client().await?;
    kms.decrypt(&kms.prime().await?).await?;
    Ok(())
}

#[tokio::test]
async fn generated_policy_runs_the_provider_and_nothing_more() -> anyhow::Result<()> {
    let (bao, _p, env) = dev_setup().await?;
    token_with_policy(&bao, &env, "bao-kms-generated", &printed_policy(&env)?)?;
    doctor_passes_and_the_provider_serves(&env).await
}

#[tokio::test]
async fn rewrap_or_restore_grants_fail_and_a_policy_without_the_mount_read_serves() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    let printed = printed_policy(&env)?;
    for (name, extra, named) in [
        (
            "with-rewrap",
            format!(
                "path \"{}/rewrap/{}\" {{ capabilities = [\"update\"] }}\n",
                p.mount, p.key
            ),
            "rewrap ciphertexts",
        ),
        (
            "with-restore",
            format!("path \"{}/restore/*\" {{ capabilities = [\"update\"] }}\n", p.mount),
            "restore the key from a backup",
        ),
    ] {
        token_with_policy(&bao, &env, name, &format!("{printed}\n{extra}"))?;
        let (code, checks) = run_doctor(&env, &[])?;
        assert_eq!(code, EXIT_DIAGNOSTIC, "{name}: {checks:#?}");
        assert_fails(&checks, "transit.capabilities", named);
        assert_eq!(check(&checks, "transit.probe")["status"], "pass", "{name}: {checks:#?}");
    }

    // Without the sys/internal/ui/mounts read: OpenBao still answers it for
    // a token with access to the mount, serve starts and serves, and doctor
    // agrees.
    let mount_read = format!("path \"sys/internal/ui/mounts/{}\"", p.mount);
    assert!(printed.contains(&mount_read), "{printed}");
    let without: String = printed
        .split("\n\n")
        .filter(|block| !block.contains(&mount_read))
        .collect::<Vec<_>>()
        .join("\n\n");
    token_with_policy(&bao, &env, "without-mount-read", &without)?;
    let (code, checks) = run_doctor(&env, &[])?;
    assert_eq!(check(&checks, "transit.capabilities")["status"], "pass", "{checks:#?}");
    assert_eq!(check(&checks, "openbao.identity")["status"], "pass", "{checks:#?}");
    assert_eq!(code, 0, "{checks:#?}");
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.decrypt(&kms.prime().await?).await?;
    provider.terminate().await?;
    Ok(())
}

/// Only the token method reads `auth/token/lookup-self`: for approle (as for
/// jwt and cert) the printed policy goes without it, and a token holding
/// exactly that policy (no default policy) passes doctor and serves.
#[tokio::test]
async fn a_login_method_policy_without_lookup_self_passes_doctor_and_serves() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    crate::auth_methods::use_approle(&bao, &p, &env)?;
    let printed = printed_policy(&env)?;
    assert!(!printed.contains("auth/token/lookup-self"), "{printed}");
    // The approle role's token holds exactly this policy.
    write_policy(&bao, &env, &p.policy_name, &printed)?;
    doctor_passes_and_the_provider_serves(&env).await
}
