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
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bao_kms_system_tests::net::free_port;
use bao_kms_system_tests::provider::{dev_setup, workspace_root};
use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, provision, wait};
use serde_yaml_ng::Value;

const RULES: &str = "openbao-kms.rules.yaml";
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

/// The `openbao_kms_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("openbao_kms_") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Family name -> type, from the `# TYPE` lines of an exposition.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// Whether `name`, as read by PromQL, is a sample name of an exported family.
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    let is = |family: &str, kind: &str| families.get(family).is_some_and(|k| k == kind);
    is(name, "gauge")
        || name.strip_suffix("_total").is_some_and(|f| is(f, "counter"))
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(|f| is(f, "histogram")))
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

#[test]
fn metric_names_are_found_whole_and_only_as_identifiers() {
    assert_eq!(
        metric_names("rate(openbao_kms_a_total{x=\"y\"}[5m]) / openbao_kms_b > 0 and my_openbao_kms_c"),
        ["openbao_kms_a_total", "openbao_kms_b"]
    );
    let families = BTreeMap::from([
        ("openbao_kms_c".to_owned(), "counter".to_owned()),
        ("openbao_kms_g".to_owned(), "gauge".to_owned()),
        ("openbao_kms_h".to_owned(), "histogram".to_owned()),
    ]);
    assert!(exported("openbao_kms_c_total", &families));
    assert!(!exported("openbao_kms_c", &families));
    assert!(exported("openbao_kms_g", &families));
    assert!(!exported("openbao_kms_g_total", &families));
    assert!(exported("openbao_kms_h_bucket", &families));
    assert!(!exported("openbao_kms_h", &families));
}

/// A Prometheus server with the shipped rules, scraping one target every
/// second as job `kms`; killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: kms\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules_dir().join(RULES).display()
            ),
        )?;
        let listen = format!("127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("prometheus: {e}; run `make deps` (Debian package prometheus)"))?;
        let prometheus = Self {
            child,
            url: format!("http://{listen}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        wait::until(Duration::from_secs(30), "Prometheus /-/ready", || async {
            match prometheus.http.get(format!("{}/-/ready", prometheus.url)).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        Ok(prometheus)
    }

    async fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let body: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        Ok(body["data"].clone())
    }

    /// Scrapes of the target so far.
    async fn scrapes(&self) -> Result<u64, String> {
        let data = self.api("query?query=count_over_time(up[1h])").await?;
        data["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| data.to_string())
    }

    /// Active alerts as (name, state, instance).
    async fn alerts(&self) -> Result<Vec<(String, String, String)>, String> {
        let data = self.api("alerts").await?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (
                    field(&a["labels"]["alertname"]),
                    field(&a["state"]),
                    field(&a["labels"]["instance"]),
                )
            })
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_raises_the_alerts_when_openbao_is_sealed() -> anyhow::Result<()> {
    let bao = OpenBao::start_raft().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::new(&bao, &p)?;
    let provider = Provider::start(&env).await?;
    provider.client().await?.prime().await?;
    let target = env
        .metrics_url()
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let prometheus = Prometheus::start(&target).await?;

    // The target is up and every rule has been evaluated on its samples
    // without error.
    let count = alerts()?.len();
    wait::until(
        Duration::from_secs(30),
        "every rule evaluated with health ok",
        || async {
            let data = prometheus.api("rules").await?;
            let rules: Vec<&serde_json::Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let ok = rules.iter().filter(|r| r["health"] == "ok").count();
            let scraped = prometheus.api("query?query=up").await?;
            let up = scraped["result"][0]["value"][1] == "1";
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
