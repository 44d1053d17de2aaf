//! `bao-kms-provider probe --socket S`: the live Status -> Encrypt -> Decrypt
//! round trip through a running provider's socket, with no configuration or
//! credentials. Exit 0 only when every step passed; 4 otherwise.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, report_check};
use bao_kms_system_tests::provider::{dev_setup, provider_binary};
use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, provision};
use serde_json::Value;

fn probe(socket: &Path, extra: &[&str]) -> anyhow::Result<(i32, Value, Output)> {
    let cwd = tempfile::tempdir()?;
    let out = Command::new(provider_binary())
        .args(["probe", "--output", "json", "--timeout", "5s", "--socket"])
        .arg(socket)
        .args(extra)
        .current_dir(cwd.path())
        // Nothing of the provider's configuration reaches the probe.
        .env_clear()
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("no JSON report ({e}): {}", String::from_utf8_lossy(&out.stdout)))?;
    assert_eq!(report["name"], "probe");
    assert_eq!(std::fs::read_dir(cwd.path())?.count(), 0, "probe must not write files");
    Ok((out.status.code().unwrap_or(-1), report, out))
}

#[tokio::test]
async fn a_healthy_provider_passes_the_round_trip() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    let key_id = provider.client().await?.status().await?.key_id;

    let (code, report, _) = probe(env.socket_path(), &[])?;
    assert_eq!(code, 0, "{report:#}");
    for id in ["kms.socket", "kms.status", "kms.encrypt", "kms.decrypt", "kms.key_id"] {
        assert_eq!(report_check(&report, id)["status"], "pass", "{id}: {report:#}");
    }
    assert!(
        report_check(&report, "kms.key_id")["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&key_id),
        "{report:#}"
    );
    // Root connects whatever the socket's group and mode: said, not failed.
    if nix::unistd::geteuid().is_root() {
        let caller = report_check(&report, "kms.caller");
        assert_eq!(caller["status"], "warn", "{caller}");
        assert!(caller["message"].as_str().unwrap_or_default().contains("root"));
    }

    let (code, report, _) = probe(env.socket_path(), &["--expected-key-id", &key_id])?;
    assert_eq!(code, 0, "{report:#}");
    let (code, report, _) = probe(env.socket_path(), &["--expected-key-id", "obk2.someone-else"])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{report:#}");
    assert_eq!(report_check(&report, "kms.key_id")["status"], "fail");

    // The text form: the report name, then one line per check.
    let out = Command::new(provider_binary())
        .args(["probe", "--socket"])
        .arg(env.socket_path())
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("probe"));
    assert!(text.contains("[pass] kms.decrypt: Decrypt returns the seed"), "{text}");
    Ok(())
}

#[tokio::test]
async fn anything_but_the_socket_itself_is_refused() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let _provider = Provider::start(&env).await?;
    let dir = tempfile::tempdir()?;

    let link = dir.path().join("kms.sock");
    std::os::unix::fs::symlink(env.socket_path(), &link)?;
    let regular = dir.path().join("file.sock");
    std::fs::write(&regular, b"")?;
    for (path, needle) in [
        (link.as_path(), "is a symlink"),
        (regular.as_path(), "is not a socket"),
        (Path::new("/nonexistent/kms.sock"), "No such file"),
        // Relative: taken from the working directory (empty here).
        (Path::new("relative/kms.sock"), "/relative/kms.sock: No such file"),
    ] {
        let (code, report, _) = probe(path, &[])?;
        assert_eq!(code, EXIT_DIAGNOSTIC, "{report:#}");
        let c = report_check(&report, "kms.socket");
        assert_eq!(c["status"], "fail");
        assert!(c["message"].as_str().unwrap_or_default().contains(needle), "{c}");
        // Nothing after a failed prerequisite.
        assert_eq!(report["checks"].as_array().map(Vec::len), Some(1), "{report:#}");
    }
    Ok(())
}

#[tokio::test]
async fn an_unhealthy_provider_fails_at_status() -> anyhow::Result<()> {
    let mut bao = OpenBao::start_raft().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::builder(&bao, &p).probe_interval("500ms").build()?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    bao.stop().await?;
    bao_kms_system_tests::wait::until(Duration::from_secs(10), "Status unhealthy", || async {
        match kms.status().await {
            Ok(s) if s.healthz != "ok" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    let (code, report, _) = probe(env.socket_path(), &[])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{report:#}");
    let status = report_check(&report, "kms.status");
    assert_eq!(status["status"], "fail", "{status}");
    assert!(
        status["message"].as_str().unwrap_or_default().contains("healthz"),
        "{status}"
    );
    assert!(
        report["checks"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["id"] != "kms.encrypt")),
        "no Encrypt after an unhealthy Status: {report:#}"
    );
    Ok(())
}
