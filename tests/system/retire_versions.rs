//! `retire-versions` and `restore-versions` against a real OpenBao and the
//! real provider binary: after a rotation is promoted, the plan changes no
//! file; `--apply` refuses a wrong hash and a running provider without
//! touching the registry; with the reviewed hash it writes the next
//! generation and checkpoint, and the restarted provider refuses data under
//! the removed version with a clear reason while newer data decrypts.
//! `restore-versions` brings the version back. Refusals: N = 1, N above the
//! active version, a pending rotation.

use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use bao_kms_core::hash::h;
use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, run_json};
use bao_kms_system_tests::provider::{
    ALLOWED_SOCKET_DIR_ENV, dev_setup_with, fast_rotation, provider_binary, read_json, registry_record,
    rotate_and_promote,
};
use bao_kms_system_tests::{Provider, ProviderEnv, wait};
use serde_json::Value;
use tonic::Code;

const EXIT_USAGE: i32 = 2;
/// Bound on a promotion once the rotation is in Transit (a few fast probes).
const CHANGE_WITHIN: Duration = Duration::from_secs(15);

/// Runs `bao-kms-provider <args> --output json --config <env>`.
/// `<command> <selection> --apply --expected-state-hash <hash>`.
fn apply(env: &ProviderEnv, command: &str, selection: &[&str], hash: &str) -> anyhow::Result<(i32, Value)> {
    let args = [selection, &["--apply", "--expected-state-hash", hash]].concat();
    run_json(env, command, &args, &[])
}

/// The `currentHash` of the state file.
fn current_hash(env: &ProviderEnv) -> anyhow::Result<String> {
    Ok(read_json(env.state_path())?["currentHash"]
        .as_str()
        .context("currentHash")?
        .to_owned())
}

/// The registry files' bytes (state, checkpoint).
fn files(env: &ProviderEnv) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    Ok((fs::read(env.state_path())?, fs::read(env.checkpoint_path())?))
}

fn record_state(state: &Value, version: u64) -> Option<String> {
    registry_record(state, version)?["state"].as_str().map(str::to_owned)
}

fn reasons(report: &Value) -> String {
    report["reasons"].to_string()
}

#[tokio::test]
async fn retire_then_restore_version_1() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(fast_rotation).await?;
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let seed_v1 = kms.prime().await?;
    let k2 = rotate_and_promote(&bao, &p, &env, &provider, 2).await?;
    let seed_v2 = kms.prime().await?;
    assert_eq!(seed_v2.key_id, k2);
    assert_eq!(provider.terminate().await?, 0);

    // Plan: read-only, prints the hash to review.
    let before = files(&env)?;
    let state = read_json(env.state_path())?;
    let generation = state["generation"].as_u64().context("generation")?;
    let hash = state["currentHash"].as_str().context("currentHash")?.to_owned();
    let (code, plan) = run_json(&env, "retire-versions", &["--before-version", "2"], &[])?;
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["name"], "retire-versions");
    assert_eq!(plan["applied"], false);
    assert_eq!(plan["beforeVersion"], 2);
    assert_eq!(plan["stateHash"], hash.as_str());
    assert_eq!(plan["nextGeneration"], generation + 1);
    assert_eq!(plan["removedVersions"], serde_json::json!([1]), "{plan:#}");
    assert_eq!(plan["activeKeyIdHash"], h(&k2));
    assert!(
        plan["nextStateHash"]
            .as_str()
            .is_some_and(|s| s.starts_with("krs1.") && s != hash)
    );
    assert!(
        plan["limitations"].to_string().contains("every control-plane node"),
        "{plan:#}"
    );
    assert_eq!(files(&env)?, before, "the plan must not write");

    // Text output carries the hash to review.
    let text = Command::new(provider_binary())
        .args(["retire-versions", "--before-version", "2", "--config"])
        .arg(env.config_path())
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .output()?;
    assert_eq!(text.status.code(), Some(0));
    let text = String::from_utf8(text.stdout)?;
    assert!(text.starts_with("name: retire-versions\n"), "{text}");
    assert!(text.contains(&format!("stateHash: {hash}\n")), "{text}");

    // --apply needs the reviewed hash (a usage error without it).
    let (code, _) = run_raw(&env, &["retire-versions", "--before-version", "2", "--apply"])?;
    assert_eq!(code, EXIT_USAGE);

    // A wrong hash: refused, nothing written.
    let wrong = "krs1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (code, r) = apply(&env, "retire-versions", &["--before-version", "2"], wrong)?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{r:#}");
    assert_eq!(r["applied"], false);
    assert!(reasons(&r).contains("is not the current state hash"), "{r:#}");
    assert_eq!(files(&env)?, before);

    // The provider running: the lock is held, nothing written.
    let mut provider = Provider::start(&env).await?;
    let running = files(&env)?;
    let (code, r) = apply(&env, "retire-versions", &["--before-version", "2"], &hash)?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{r:#}");
    assert_eq!(r["applied"], false);
    assert!(reasons(&r).contains("provider is running (lock held)"), "{r:#}");
    assert_eq!(files(&env)?, running);
    assert_eq!(provider.terminate().await?, 0);
    assert_eq!(files(&env)?, before, "an unchanged key writes nothing");

    // The reviewed hash with the provider stopped: applied.
    let (code, r) = apply(&env, "retire-versions", &["--before-version", "2"], &hash)?;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["applied"], true);
    assert_eq!(r["removedVersions"], serde_json::json!([1]));
    let state = read_json(env.state_path())?;
    let checkpoint = read_json(&env.checkpoint_path())?;
    assert_eq!(state["generation"], generation + 1);
    assert_eq!(state["previousHash"], hash.as_str());
    assert_eq!(state["currentHash"], r["nextStateHash"]);
    assert_eq!(checkpoint["generation"], state["generation"]);
    assert_eq!(checkpoint["currentHash"], state["currentHash"]);
    assert_eq!(state["activeKeyId"], k2.as_str());
    assert_eq!(record_state(&state, 1).as_deref(), Some("removed"));
    assert_eq!(record_state(&state, 2).as_deref(), Some("active"));
    let retired_hash = state["currentHash"].as_str().context("currentHash")?.to_owned();

    // Restarted: v1 data fails with a clear reason, v2 data decrypts.
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let err = kms
        .decrypt_raw(seed_v1.decrypt_request())
        .await
        .expect_err("a removed version must not decrypt");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains("retire-versions"), "{err}");
    kms.decrypt(&seed_v2).await?;
    assert_eq!(provider.terminate().await?, 0);
    let state = read_json(env.state_path())?;
    assert_eq!(
        record_state(&state, 1).as_deref(),
        Some("removed"),
        "never revived by the running provider"
    );
    assert_eq!(state["currentHash"], retired_hash.as_str());

    // Restore version 1: plan, then apply with the reviewed hash.
    let before = files(&env)?;
    let (code, plan) = run_json(&env, "restore-versions", &["--versions", "1"], &[])?;
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["operation"], "restore");
    assert_eq!(plan["restoredVersions"], serde_json::json!([1]), "{plan:#}");
    assert_eq!(plan["removedVersions"], serde_json::json!([]), "{plan:#}");
    assert_eq!(plan["stateHash"], retired_hash.as_str());
    assert_eq!(files(&env)?, before);
    let (code, r) = apply(&env, "restore-versions", &["--versions", "1"], &retired_hash)?;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["applied"], true);
    let state = read_json(env.state_path())?;
    assert_eq!(state["generation"], generation + 2);
    assert_eq!(state["previousHash"], retired_hash.as_str());
    assert_eq!(record_state(&state, 1).as_deref(), Some("retired"));
    assert_eq!(state["activeKeyId"], k2.as_str());
    assert_eq!(read_json(&env.checkpoint_path())?["currentHash"], state["currentHash"]);

    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.decrypt(&seed_v1).await?;
    kms.decrypt(&seed_v2).await?;
    // Restoring a version that is not removed is refused.
    let (code, r) = run_json(&env, "restore-versions", &["--versions", "1"], &[])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{r:#}");
    assert!(reasons(&r).contains("not removed"), "{r:#}");
    assert_eq!(provider.terminate().await?, 0);
    Ok(())
}

/// Like [`run_json`], for invocations that fail before printing a report.
fn run_raw(env: &ProviderEnv, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new(provider_binary())
        .args(args)
        .arg("--config")
        .arg(env.config_path())
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn refusals_leave_the_registry_unchanged() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(fast_rotation).await?;
    let mut provider = Provider::start(&env).await?;
    rotate_and_promote(&bao, &p, &env, &provider, 2).await?;
    assert_eq!(provider.terminate().await?, 0);
    let before = files(&env)?;
    let hash = current_hash(&env)?;

    for (n, why) in [("1", "greater than 1"), ("3", "above the active version 2")] {
        let (code, r) = apply(&env, "retire-versions", &["--before-version", n], &hash)?;
        assert_eq!(code, EXIT_DIAGNOSTIC, "N={n}: {r:#}");
        assert_eq!(r["applied"], false);
        assert!(reasons(&r).contains(why), "N={n}: {r:#}");
        assert!(r.get("nextStateHash").is_none(), "{r:#}");
        assert_eq!(files(&env)?, before, "N={n}");
    }

    // A pending rotation: version 3 observed, its promotion held back.
    let yaml = env
        .config_yaml()
        .replace("activationDelay: 500ms", "activationDelay: 1h");
    anyhow::ensure!(yaml != env.config_yaml(), "activationDelay not found in the config");
    env.write_config_text(&yaml)?;
    let mut provider = Provider::start(&env).await?;
    bao.rotate_key(&p)?;
    wait::until(CHANGE_WITHIN, "version 3 pending", || async {
        match provider.status_json().await {
            Ok(s) if s["pendingVersion"] == 3 => Ok(()),
            Ok(s) => Err(s.to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    assert_eq!(provider.terminate().await?, 0);
    let before = files(&env)?;
    let hash = current_hash(&env)?;
    let (code, r) = apply(&env, "retire-versions", &["--before-version", "2"], &hash)?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{r:#}");
    assert!(reasons(&r).contains("rotation is pending (version 3"), "{r:#}");
    assert_eq!(files(&env)?, before);
    Ok(())
}
