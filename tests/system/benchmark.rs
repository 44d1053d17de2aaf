//! `bao-kms-provider benchmark`: round trips against Transit with the
//! provider's configuration, through a running provider's socket, and the
//! two compared side by side (per-call rows, the restart burst, start to
//! ready, RSS). The tests check the reports (counts, percentiles present
//! and ordered, ratios where a direct side exists, no errors) and the
//! failure exits, never the timings themselves.

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

fn positive(v: &Value, what: &str) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x > 0.0, "{what} = {x}");
    x
}

#[tokio::test]
async fn comparison_reports_every_row_the_burst_and_start_to_ready() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let _provider = Provider::start(&env).await?;
    let config = env.config_path().display().to_string();
    let socket = env.socket_path().display().to_string();
    let (code, report) = benchmark(
        &env,
        &[
            "--config",
            &config,
            "--socket",
            &socket,
            "--iterations",
            "6",
            "--rounds",
            "2",
            "--concurrency",
            "1,3",
            "--burst-connections",
            "2",
            "--burst-distinct",
            "5",
            "--burst-identical",
            "4",
            "--startup-runs",
            "1",
        ],
    )?;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["mode"], "compare");
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["status"], "pass");

    let calls = report["calls"].as_array().expect("calls");
    let rows: Vec<(String, u64)> = calls
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or_default().to_owned(),
                r["inFlight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [1, 3]
        .into_iter()
        .flat_map(|c| ["status", "encrypt", "decrypt"].map(|m| (m.to_owned(), c)))
        .collect();
    assert_eq!(rows, want);
    for row in calls {
        let sides: &[&str] = if row["method"] == "status" {
            assert!(row["ratio"].is_null(), "Status has no Transit counterpart: {row:#}");
            assert!(row.get("directHttp1").is_none());
            &["provider"]
        } else {
            positive(&row["ratio"], "ratio");
            &["provider", "directHttp1", "directHttp2"]
        };
        for side in sides {
            let s = &row[*side];
            // Two rounds of six calls each.
            assert_eq!(s["count"], 12, "{side}: {row:#}");
            assert_eq!(s["errors"], 0, "{side}: {row:#}");
            assert_eq!(s["perSecondRounds"].as_array().map(Vec::len), Some(2), "{row:#}");
            positive(&s["perSecond"], "perSecond");
            let p50 = positive(&s["p50Ms"], "p50Ms");
            assert!(p50 <= positive(&s["p99Ms"], "p99Ms"), "{row:#}");
        }
    }

    let burst = &report["burst"];
    assert_eq!(burst["rounds"], 2);
    let provider = &burst["provider"];
    assert_eq!(provider["distinctOk"], 20, "two rounds of 2 x 5: {burst:#}");
    assert_eq!(provider["identicalOk"], 8, "{burst:#}");
    assert_eq!(provider["errors"], serde_json::json!({}), "{burst:#}");
    positive(&provider["totalMs"], "burst total");
    positive(&burst["directBatched"]["http1TotalMs"], "batched HTTP/1.1");
    positive(&burst["directBatched"]["http2TotalMs"], "batched HTTP/2");
    positive(&burst["ratio"], "burst ratio");

    let startup = &report["startup"];
    for kind in ["cold", "warm"] {
        assert_eq!(startup[kind]["runs"], 1, "{startup:#}");
        positive(&startup[kind]["p50Ms"], "start to ready");
    }
    positive(&startup["rssAtReadyMiB"], "RSS at ready");
    positive(&report["rss"]["idleMiB"], "idle RSS");
    positive(&report["rss"]["afterBurstMiB"], "RSS after the burst");

    // A single mode takes one --concurrency.
    let out = Command::new(provider_binary())
        .args(["benchmark", "--socket", &socket, "--concurrency", "1,2"])
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
