//! `bao-kms-provider benchmark`: round trips against Transit with the
//! provider's configuration, and through a running provider's socket. The
//! test checks the report (counts, percentiles present and ordered,
//! no errors) and the failure exits, never the timings themselves.

use std::process::Command;

use bao_kms_system_tests::doctor::EXIT_DIAGNOSTIC;
use bao_kms_system_tests::provider::{ALLOWED_SOCKET_DIR_ENV, dev_setup, provider_binary};
use bao_kms_system_tests::{Provider, ProviderEnv};
use serde_json::Value;

fn benchmark(env: &ProviderEnv, args: &[&str]) -> anyhow::Result<(i32, Value)> {
    let out = Command::new(provider_binary())
        .args(["benchmark", "--output", "json"])
        .args(args)
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "no JSON report ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    assert_eq!(report["name"], "benchmark");
    Ok((out.status.code().unwrap_or(-1), report))
}

fn assert_latencies(report: &Value, count: u64) {
    for op in ["encrypt", "decrypt"] {
        let l = &report[op];
        assert_eq!(l["count"], count, "{op}: {report:#}");
        let get = |k: &str| l[k].as_f64().unwrap_or_else(|| panic!("{op}.{k}: {report:#}"));
        assert!(get("p50Ms") > 0.0, "{report:#}");
        assert!(get("p50Ms") <= get("p90Ms") && get("p90Ms") <= get("p99Ms") && get("p99Ms") <= get("maxMs"));
    }
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["status"], "pass");
}

#[tokio::test]
async fn transit_and_socket_round_trips_are_measured() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let config = env.config_path().display().to_string();

    // Before the provider ran there is no registry: the active version is unknown.
    let (code, report) = benchmark(&env, &["--config", &config])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{report:#}");
    assert!(
        report["firstError"]
            .as_str()
            .unwrap_or_default()
            .contains("no registry state")
    );

    let mut provider = Provider::start(&env).await?;
    let (code, report) = benchmark(&env, &["--config", &config, "--iterations", "20", "--concurrency", "3"])?;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["mode"], "transit");
    assert_latencies(&report, 20);

    let socket = env.socket_path().display().to_string();
    let (code, report) = benchmark(&env, &["--socket", &socket, "--iterations", "20", "--concurrency", "4"])?;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["mode"], "socket");
    assert_latencies(&report, 20);

    // A stopped provider: every round trip fails, the run fails.
    provider.terminate().await?;
    let (code, report) = benchmark(&env, &["--socket", &socket, "--iterations", "3"])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{report:#}");
    assert_eq!(report["status"], "fail");
    Ok(())
}
