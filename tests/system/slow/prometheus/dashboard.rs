//! The Grafana dashboard in `manifests/grafana/`:
//!
//! - its layout is well formed: unique panel ids, panels inside the 24-column
//!   grid and not overlapping, every query on the `$datasource` variable, the
//!   `job` and `instance` variables defined;
//! - every metric a query reads is one the provider exports, with its type;
//! - against a real Prometheus scraping a real provider that has served
//!   Encrypt and Decrypt, every query (with the variables filled in as
//!   Grafana would) is valid PromQL, and returns data whenever the metrics it
//!   reads have samples.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bao_kms_system_tests::metrics::samples;
use bao_kms_system_tests::prometheus::{Prometheus, exported, families, metric_names};
use bao_kms_system_tests::provider::{dev_setup, workspace_root};
use bao_kms_system_tests::{Provider, wait};
use serde_json::Value;

const GRID_COLUMNS: u64 = 24;

fn dashboard() -> anyhow::Result<Value> {
    let path = workspace_root()
        .join("manifests")
        .join("grafana")
        .join("openbao-kms-overview.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    dashboard["panels"].as_array().into_iter().flatten().collect()
}

/// Every query of the dashboard as (panel title, expression).
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or_default().to_owned()))
        })
        .collect()
}

/// An expression as Grafana sends it for job `kms`, all instances.
fn as_grafana_sends_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", "kms")
        .replace("$instance", ".*")
}

#[test]
fn layout_is_well_formed() -> anyhow::Result<()> {
    let d = dashboard()?;
    assert_eq!(d["uid"], "openbao-kms-overview");
    let variables: BTreeSet<&str> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, BTreeSet::from(["datasource", "instance", "job"]));

    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut graphs = 0;
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(ids.insert(p["id"].as_u64()), "duplicate panel id in {title}");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap_or(u64::MAX),
            g["y"].as_u64().unwrap_or(u64::MAX),
            g["w"].as_u64().unwrap_or(0),
            g["h"].as_u64().unwrap_or(0),
        );
        assert!(w > 0 && h > 0 && x + w <= GRID_COLUMNS, "{title}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.to_owned()) {
                    panic!("{title} overlaps {other} at ({cx}, {cy})");
                }
            }
        }
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(expr.contains("job=\"$job\""), "{title}: not scoped to $job: {expr}");
        }
    }
    assert!(graphs >= 15, "only {graphs} panels");
    Ok(())
}

#[tokio::test]
async fn every_query_runs_on_a_real_prometheus_scraping_a_provider() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.decrypt(&kms.prime().await?).await?;
    let exposition = provider.metrics_text().await?;
    let families = families(&exposition);
    let sampled: BTreeSet<String> = samples(&exposition).into_iter().map(|s| s.name).collect();

    let prometheus = Prometheus::start(env.metrics_address(), None).await?;
    // Enough scrapes after the traffic for rate() over 1m to see it.
    wait::until(Duration::from_secs(30), "five scrapes", || async {
        match prometheus.scrapes().await {
            Ok(n) if n >= 5 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;

    let d = dashboard()?;
    let mut with_data = 0;
    for (title, expr) in queries(&d) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{title}: reads no provider metric: {expr}");
        for name in &names {
            assert!(
                exported(name, &families),
                "{title} reads {name}, which the provider does not export"
            );
        }
        let sent = as_grafana_sends_it(&expr);
        let result = prometheus
            .query(&sent)
            .await
            .map_err(|e| anyhow::anyhow!("{title}: {sent}: {e}"))?;
        if names.iter().any(|n| sampled.contains(n)) {
            assert!(!result.is_empty(), "{title}: no data for {sent}");
            with_data += 1;
        }
    }
    assert!(with_data >= 15, "only {with_data} queries had data to show");
    Ok(())
}
