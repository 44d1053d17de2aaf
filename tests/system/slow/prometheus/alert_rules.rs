//! The shipped Prometheus alert rules in `manifests/prometheus/`:
//!
//! - `promtool check rules` accepts them and `promtool test rules` runs
//!   their unit tests (alerts fire, and stay quiet, on series shaped like
//!   the provider's);
//! - every metric an expression reads is one a running provider exports,
//!   with a matching type (a counter read as `_total`, a histogram as
//!   `_bucket`/`_sum`/`_count`), so a renamed metric cannot leave an alert
//!   that silently never fires;
//! - every alert has a severity and a summary, and is documented in
//!   docs/operations.md;
//! - a real Prometheus scraping a real provider evaluates every rule without
//!   error, raises nothing while the provider is healthy, and, once
//!   OpenBao is sealed, raises `OpenBaoKMSMetadataProbeFailing` and starts
//!   `OpenBaoKMSNoActiveKey` (pending for its `for: 2m`) for that provider.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bao_kms_system_tests::prometheus::{Prometheus, exported, families, metric_names};
use bao_kms_system_tests::provider::{dev_setup, workspace_root};
use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, provision, wait};
use serde_yaml_ng::Value;

const RULES: &str = "openbao-kms.rules.yaml";
/// Alerts on metrics the provider cannot export because it is not running:
/// kube-state-metrics' container restarts of the static pod.
const EXTERNAL_ONLY: &[&str] = &["OpenBaoKMSContainerRestarting"];
const RULE_TESTS: &str = "openbao-kms.rules.test.yaml";

fn rules_dir() -> PathBuf {
    workspace_root().join("manifests").join("prometheus")
}

fn promtool(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .map_err(|e| anyhow::anyhow!("promtool: {e}; run `make deps` (Debian package prometheus)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

/// Every alerting rule: name -> the rule's YAML mapping.
fn alerts() -> anyhow::Result<BTreeMap<String, Value>> {
    let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(rules_dir().join(RULES))?)?;
    let mut alerts = BTreeMap::new();
    for group in doc["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            if let Some(name) = rule["alert"].as_str() {
                anyhow::ensure!(
                    alerts.insert(name.to_owned(), rule.clone()).is_none(),
                    "alert {name} defined twice"
                );
            }
        }
    }
    anyhow::ensure!(!alerts.is_empty(), "no alerting rules in {RULES}");
    Ok(alerts)
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() -> anyhow::Result<()> {
    let checked = promtool(&["check", "rules", RULES])?;
    let count = alerts()?.len();
    assert!(checked.contains(&format!("SUCCESS: {count} rules found")), "{checked}");
    let tested = promtool(&["test", "rules", RULE_TESTS])?;
    assert!(tested.contains("SUCCESS"), "{tested}");
    Ok(())
}

#[test]
fn every_alert_has_a_severity_a_summary_and_an_operations_entry() -> anyhow::Result<()> {
    let docs = std::fs::read_to_string(workspace_root().join("docs").join("operations.md"))?;
    for (name, rule) in alerts()? {
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        assert!(rule["annotations"]["summary"].as_str().is_some(), "{name}: no summary");
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} is not documented in docs/operations.md"
        );
    }
    Ok(())
}

#[tokio::test]
async fn every_metric_the_rules_read_is_exported_by_the_provider() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    provider.client().await?.prime().await?;
    let families = families(&provider.metrics_text().await?);
    assert!(families.len() > 10, "{families:?}");

    let mut read = 0;
    for (name, rule) in alerts()? {
        let expr = rule["expr"].as_str().unwrap_or_default();
        let names = metric_names(expr);
        if EXTERNAL_ONLY.contains(&name.as_str()) {
            assert!(names.is_empty(), "{name}: reads a provider metric: {expr}");
            continue;
        }
        assert!(!names.is_empty(), "{name}: reads no provider metric: {expr}");
        for metric in names {
            assert!(
                exported(&metric, &families),
                "{name} reads {metric}, which the provider does not export (families: {:?})",
                families.keys().collect::<Vec<_>>()
            );
            read += 1;
        }
    }
    assert!(read >= 15, "only {read} metric references checked");
    Ok(())
}

#[tokio::test]
async fn a_real_prometheus_raises_the_alerts_when_openbao_is_sealed() -> anyhow::Result<()> {
    let bao = OpenBao::start_raft().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::new(&bao, &p)?;
    let provider = Provider::start(&env).await?;
    provider.client().await?.prime().await?;
    let target = env.metrics_address().to_owned();
    let prometheus = Prometheus::start(&target, Some(&rules_dir().join(RULES))).await?;

    // The target is up and every rule has been evaluated on its samples
    // without error.
    let count = alerts()?.len();
    wait::until(
        Duration::from_secs(30),
        "every rule evaluated with health ok",
        || async {
            let data = prometheus.api("rules", &[]).await?;
            let rules: Vec<&serde_json::Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let ok = rules.iter().filter(|r| r["health"] == "ok").count();
            let up = prometheus
                .query("up")
                .await?
                .first()
                .is_some_and(|r| r["value"][1] == "1");
            if rules.len() == count && ok == count && up {
                Ok(())
            } else {
                Err(format!(
                    "{ok}/{} rules ok of {count}, target up: {up}: {data}",
                    rules.len()
                ))
            }
        },
    )
    .await?;
    // A few more evaluations with the healthy provider: nothing is raised.
    let before = prometheus.scrapes().await.map_err(anyhow::Error::msg)?;
    wait::until(Duration::from_secs(30), "three more scrapes", || async {
        let now = prometheus.scrapes().await?;
        if now >= before + 3 {
            Ok(())
        } else {
            Err(format!("{now} scrapes, {before} before"))
        }
    })
    .await?;
    let active = prometheus.alerts().await.map_err(anyhow::Error::msg)?;
    assert!(active.is_empty(), "alerts while healthy: {active:?}");

    // OpenBao sealed: the provider withdraws its key_id and its probes fail.
    bao.seal().await?;
    let raised = wait::until(
        Duration::from_secs(60),
        "OpenBaoKMSNoActiveKey pending and OpenBaoKMSMetadataProbeFailing firing",
        || async {
            let active = prometheus.alerts().await?;
            let has = |name: &str, state: &str| active.iter().any(|(n, s, i)| n == name && s == state && i == &target);
            if has("OpenBaoKMSNoActiveKey", "pending") && has("OpenBaoKMSMetadataProbeFailing", "firing") {
                Ok(active)
            } else {
                Err(format!("{active:?}"))
            }
        },
    )
    .await?;
    assert!(
        raised.iter().all(|(n, _, _)| n != "OpenBaoKMSKeyIDHashDiverged"),
        "one provider cannot diverge from itself: {raised:?}"
    );
    Ok(())
}
