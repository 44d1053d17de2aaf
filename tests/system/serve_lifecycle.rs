//! `serve` as a process: a bad config is refused before anything binds,
//! with every problem listed by its path; the socket is a resource with a
//! lifecycle (removed on SIGTERM/SIGINT, a stale one left by a crash is
//! replaced, a non-socket file in its place is never deleted).

use std::fs;
use std::time::Duration;

use bao_kms_system_tests::Provider;
use bao_kms_system_tests::provider::dev_setup;
use nix::sys::signal::Signal;

/// `serve` exit code for an invalid configuration.
const EXIT_CONFIG: i32 = 3;
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn invalid_config_is_refused_with_every_problem_by_path() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    // Two independent problems: a world-accessible socket mode, and a probe
    // interval that is not shorter than the staleness bound.
    let yaml = env.config_yaml();
    let bad = yaml
        .replace("socketMode: \"0660\"", "socketMode: \"0777\"")
        .replace("probeInterval: 1s", "probeInterval: 5s");
    assert_ne!(bad, yaml);
    env.write_config_text(&bad)?;

    let (code, stderr) = Provider::spawn(&env)?.wait_exit_without_socket(EXIT_TIMEOUT).await?;
    assert_eq!(code, EXIT_CONFIG, "stderr:\n{stderr}");
    assert!(stderr.contains("server.socketMode"), "stderr:\n{stderr}");
    assert!(stderr.contains("status.probeInterval"), "stderr:\n{stderr}");
    assert!(
        !env.state_path().exists(),
        "no state may be written for an invalid config"
    );
    Ok(())
}

#[tokio::test]
async fn sigint_drains_and_removes_the_socket() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let mut provider = Provider::start(&env).await?;
    provider.client().await?.prime().await?;
    assert!(env.socket_path().exists());

    provider.signal(Signal::SIGINT)?;
    let (code, stderr) = provider.wait_exit(EXIT_TIMEOUT).await?;
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(!env.socket_path().exists(), "the socket must be removed on SIGINT");
    Ok(())
}

#[tokio::test]
async fn stale_socket_left_by_a_crash_is_replaced() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let mut crashed = Provider::start(&env).await?;
    let stored = crashed.client().await?.prime().await?;
    crashed.signal(Signal::SIGKILL)?;
    crashed.wait_exit(EXIT_TIMEOUT).await?;
    assert!(
        env.socket_path().exists(),
        "a killed provider leaves its socket file behind"
    );

    let restarted = Provider::start(&env).await?;
    let kms = restarted.client().await?;
    assert_eq!(kms.healthy_status().await?.key_id, stored.key_id);
    kms.decrypt(&stored).await?;
    Ok(())
}

#[tokio::test]
async fn non_socket_file_at_the_socket_path_is_never_deleted() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let precious = b"not a socket: someone's file\n";
    fs::write(env.socket_path(), precious)?;

    let mut provider = Provider::spawn(&env)?;
    let (code, stderr) = provider.wait_exit(EXIT_TIMEOUT).await?;
    assert_ne!(code, 0, "the provider must refuse to start; stderr:\n{stderr}");
    assert_eq!(
        fs::read(env.socket_path())?,
        precious,
        "the file at the socket path was changed"
    );
    Ok(())
}
