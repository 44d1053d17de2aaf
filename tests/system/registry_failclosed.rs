//! The key registry fails closed (docs/registry.md): when the state file is missing
//! beside its checkpoint, rolled back, or replaced, and when the Transit key
//! is not an unrotated initial key at first start, `serve` exits with code 5
//! and the reason, never creates the socket, and never rewrites the state.
//! An older state file is caught by either anchor (the checkpoint, the
//! rollback anchor in the identity pins file) when the other was deleted;
//! restoring the whole backup set is accepted.

use std::fs;
use std::path::Path;
use std::time::Duration;

use bao_kms_core::hash::h;
use bao_kms_system_tests::provider::{dev_setup, dev_setup_with, fast_rotation, read_json, rotate_and_promote};
use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, provision};
use serde_json::Value;

/// `serve` exit code for a runtime (fail-closed) failure.
const EXIT_RUNTIME: i32 = 5;
/// A fail-closed decision is immediate; this only bounds a hung process.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// One healthy run that leaves a state file and checkpoint behind.
async fn run_once(env: &ProviderEnv) -> anyhow::Result<()> {
    let mut provider = Provider::start(env).await?;
    provider.client().await?.prime().await?;
    let code = provider.terminate().await?;
    anyhow::ensure!(code == 0, "clean shutdown exited {code}: {}", provider.stderr());
    Ok(())
}

/// Starts `serve`, which must exit without ever creating its socket.
async fn refused_start(env: &ProviderEnv) -> anyhow::Result<(i32, String)> {
    Provider::spawn(env)?.wait_exit_without_socket(EXIT_TIMEOUT).await
}

fn write_json(path: &Path, doc: &Value) -> anyhow::Result<()> {
    Ok(fs::write(path, serde_json::to_vec_pretty(doc)?)?)
}

#[tokio::test]
async fn missing_state_beside_its_checkpoint_fails_closed() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    run_once(&env).await?;
    fs::remove_file(env.state_path())?;
    let checkpoint = fs::read(env.checkpoint_path())?;

    let (code, stderr) = refused_start(&env).await?;
    assert_eq!(code, EXIT_RUNTIME, "stderr:\n{stderr}");
    assert!(
        stderr.contains("checkpoint"),
        "the reason must name the checkpoint; stderr:\n{stderr}"
    );
    assert!(!env.state_path().exists(), "the state file must not be recreated");
    assert_eq!(
        fs::read(env.checkpoint_path())?,
        checkpoint,
        "the checkpoint must be left untouched"
    );
    Ok(())
}

#[tokio::test]
async fn state_older_than_its_checkpoint_fails_closed() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    run_once(&env).await?;
    // The checkpoint says a newer generation was written than the state
    // file holds: the state was restored from an older copy.
    let state = fs::read(env.state_path())?;
    let generation = read_json(env.state_path())?["generation"].as_u64().unwrap_or_default();
    assert!(generation >= 1, "state generation {generation}");
    let mut checkpoint = read_json(&env.checkpoint_path())?;
    checkpoint["generation"] = Value::from(generation + 1);
    write_json(&env.checkpoint_path(), &checkpoint)?;

    let (code, stderr) = refused_start(&env).await?;
    assert_eq!(code, EXIT_RUNTIME, "stderr:\n{stderr}");
    assert!(
        stderr.contains("rolled back") || stderr.contains("rollback"),
        "the reason must say the state was rolled back; stderr:\n{stderr}"
    );
    assert_eq!(
        fs::read(env.state_path())?,
        state,
        "the state file must be left untouched"
    );
    Ok(())
}

#[tokio::test]
async fn state_replaced_at_the_same_generation_fails_closed() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    run_once(&env).await?;
    let state = fs::read(env.state_path())?;
    let mut checkpoint = read_json(&env.checkpoint_path())?;
    // Same generation, well-formed hash of some other state.
    checkpoint["currentHash"] = Value::from(format!("krs1.{}", h("a different state file")));
    write_json(&env.checkpoint_path(), &checkpoint)?;

    let (code, stderr) = refused_start(&env).await?;
    assert_eq!(code, EXIT_RUNTIME, "stderr:\n{stderr}");
    assert!(
        stderr.contains("rolled back") || stderr.contains("rollback") || stderr.contains("replaced"),
        "the reason must say the state was rolled back or replaced; stderr:\n{stderr}"
    );
    assert_eq!(
        fs::read(env.state_path())?,
        state,
        "the state file must be left untouched"
    );
    Ok(())
}

#[tokio::test]
async fn rotated_key_without_state_is_not_auto_bootstrapped() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    // A brownfield key: rotated before this provider ever ran, so data may
    // exist under version 1 that a fresh registry would not know about.
    bao.rotate_key(&p)?;
    assert_eq!(bao.key_metadata(&p)?.latest_version, 2);
    let env = ProviderEnv::new(&bao, &p)?;

    let (code, stderr) = refused_start(&env).await?;
    assert_eq!(code, EXIT_RUNTIME, "stderr:\n{stderr}");
    assert!(
        stderr.contains("auto-bootstrap"),
        "the reason must name auto-bootstrap; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("denied"),
        "auto-bootstrap must be reported as denied; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("latest_version=2"),
        "the reason must cite latest_version=2; stderr:\n{stderr}"
    );
    assert!(!env.state_path().exists(), "no state file may be written");
    assert!(!env.checkpoint_path().exists(), "no checkpoint may be written");
    Ok(())
}

fn pins_path(env: &ProviderEnv) -> std::path::PathBuf {
    let mut s = env.state_path().as_os_str().to_owned();
    s.push(".openbao-identity");
    s.into()
}

/// Writes a registry file as the provider does (0640).
fn restore_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, bytes)?;
    Ok(fs::set_permissions(path, fs::Permissions::from_mode(0o640))?)
}

/// The files of one backup set: state, checkpoint, pins.
fn backup(env: &ProviderEnv) -> anyhow::Result<[Vec<u8>; 3]> {
    Ok([
        fs::read(env.state_path())?,
        fs::read(env.checkpoint_path())?,
        fs::read(pins_path(env))?,
    ])
}

#[tokio::test]
async fn an_older_state_is_refused_when_either_anchor_was_deleted() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(fast_rotation).await?;
    let mut provider = Provider::start(&env).await?;
    rotate_and_promote(&bao, &p, &env, &provider, 2).await?;
    let at_v2 = backup(&env)?;
    let pins = read_json(&pins_path(&env))?;
    assert_eq!(
        pins["rollbackAnchor"]["highestActiveVersion"], 2,
        "the pins file carries the anchor: {pins}"
    );
    rotate_and_promote(&bao, &p, &env, &provider, 3).await?;
    assert_eq!(provider.terminate().await?, 0);
    let at_v3 = backup(&env)?;
    let anchor = read_json(&pins_path(&env))?["rollbackAnchor"].clone();
    assert_eq!(anchor["highestActiveVersion"], 3, "{anchor}");
    assert_eq!(
        anchor["highestGeneration"],
        read_json(env.state_path())?["generation"],
        "{anchor}"
    );

    // The version-2 state back, its (newer) checkpoint deleted: the pins
    // anchor refuses it.
    restore_file(env.state_path(), &at_v2[0])?;
    fs::remove_file(env.checkpoint_path())?;
    let (code, stderr) = refused_start(&env).await?;
    assert_eq!(code, EXIT_RUNTIME, "stderr:\n{stderr}");
    assert!(
        stderr.contains("version_rollback") && stderr.contains("identity pins file"),
        "stderr:\n{stderr}"
    );
    assert_eq!(fs::read(env.state_path())?, at_v2[0], "the state is left untouched");
    assert!(!env.checkpoint_path().exists(), "no checkpoint is written for it");
    let mut record_path = env.state_path().as_os_str().to_owned();
    record_path.push(".last-exit");
    let record_path = std::path::PathBuf::from(record_path);
    let record = read_json(&record_path)?;
    assert_eq!(record["reason"], "version_rollback", "{record}");
    assert_eq!(record["exitCode"], EXIT_RUNTIME, "{record}");

    // The same with the pins file deleted instead: the checkpoint refuses it.
    restore_file(&env.checkpoint_path(), &at_v3[1])?;
    fs::remove_file(pins_path(&env))?;
    let (code, stderr) = refused_start(&env).await?;
    assert_eq!(code, EXIT_RUNTIME, "stderr:\n{stderr}");
    assert!(stderr.contains("rolled back"), "stderr:\n{stderr}");
    assert!(!pins_path(&env).exists(), "no pins file is written for it");

    // Restoring the whole version-2 backup set is the supported restore.
    for (path, bytes) in [env.state_path().to_path_buf(), env.checkpoint_path(), pins_path(&env)]
        .iter()
        .zip(&at_v2)
    {
        restore_file(path, bytes)?;
    }
    let provider = Provider::start(&env).await?;
    let status = provider.status_json().await?;
    assert_eq!(
        status["generation"],
        read_json(env.state_path())?["generation"],
        "{status}"
    );
    // The start publishes the last fail-closed exit (the checkpoint refusal,
    // whose message names no reason code).
    let record = read_json(&record_path)?;
    let m = provider.metrics_text().await?;
    assert_eq!(
        bao_kms_system_tests::metric(&m, "openbao_kms_last_exit_info", &[("reason", "fail_closed")]),
        Some(1.0),
        "{record}"
    );
    assert_eq!(
        bao_kms_system_tests::metric(&m, "openbao_kms_last_exit_timestamp_seconds", &[]),
        record["exitedAtUnix"].as_f64()
    );
    assert!(provider.stderr().contains("serve.last_exit"));
    Ok(())
}
