//! A real Prometheus for the monitoring tests, and reading the provider's
//! metric names out of PromQL and of a text exposition.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::net::free_port;
use crate::process::KillOnDrop;
use crate::wait;

/// The `openbao_kms_*` identifiers in a PromQL expression.
pub fn metric_names(expr: &str) -> Vec<String> {
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
pub fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// Whether `name`, as read by PromQL, is a sample name of an exported family.
pub fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    let is = |family: &str, kind: &str| families.get(family).is_some_and(|k| k == kind);
    is(name, "gauge")
        || name.strip_suffix("_total").is_some_and(|f| is(f, "counter"))
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(|f| is(f, "histogram")))
}

/// A real Prometheus server scraping one target every second as job
/// `kms`, evaluating `rules` (if any) every second; killed on drop.
pub struct Prometheus {
    // Declared first: killed before its directory is removed.
    _child: KillOnDrop,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub async fn start(target: &str, rules: Option<&Path>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [{rules}]\n\
                 scrape_configs:\n  - job_name: kms\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.map(|r| format!("'{}'", r.display())).unwrap_or_default()
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
            _child: KillOnDrop(child),
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

    /// `GET /api/v1/<path>?<params>`: the `data` of a `success` answer,
    /// else the body.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<serde_json::Value, String> {
        let body: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
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

    /// An instant query: the `result` array.
    pub async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let data = self.api("query", &[("query", expr)]).await?;
        data["result"].as_array().cloned().ok_or_else(|| data.to_string())
    }

    /// Scrapes of the target so far.
    pub async fn scrapes(&self) -> Result<u64, String> {
        let result = self.query("count_over_time(up[1h])").await?;
        result
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{result:?}"))
    }

    /// Active alerts as (name, state, instance).
    pub async fn alerts(&self) -> Result<Vec<(String, String, String)>, String> {
        let data = self.api("alerts", &[]).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
