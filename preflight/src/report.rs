//! The check report every preflight command prints: the provider CLI's
//! report shape `{"name", "checks": [{"id","title","status","message"?}]}`
//! plus an optional `node` and `fix` per check, rendered as a kubectl-style
//! aligned table, JSON (2-space) or YAML. Any `fail` means exit code 4;
//! `warn` and `skip` do not fail.

use serde::{Deserialize, Serialize};

/// `-o table|json|yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skip => "skip",
        }
    }
}

/// One check result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub status: CheckStatus,
    /// The node a cluster check is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What to do about a `fail` or `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn new(id: &str, title: &str, status: CheckStatus, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            id: id.to_owned(),
            title: title.to_owned(),
            status,
            node: None,
            message: (!message.is_empty()).then_some(message),
            fix: None,
        }
    }

    pub fn pass(id: &str, title: &str, message: impl Into<String>) -> Self {
        Self::new(id, title, CheckStatus::Pass, message)
    }

    pub fn warn(id: &str, title: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(id, title, CheckStatus::Warn, message).with_fix(fix)
    }

    pub fn fail(id: &str, title: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(id, title, CheckStatus::Fail, message).with_fix(fix)
    }

    pub fn skip(id: &str, title: &str, message: impl Into<String>) -> Self {
        Self::new(id, title, CheckStatus::Skip, message)
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        let fix = fix.into();
        self.fix = (!fix.is_empty()).then_some(fix);
        self
    }

    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }
}

/// A named list of checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            checks: Vec::new(),
        }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == CheckStatus::Fail)
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// `pass` count, `fail` count and total, for summaries.
    pub fn counts(&self) -> (usize, usize, usize) {
        let pass = self.checks.iter().filter(|c| c.status == CheckStatus::Pass).count();
        let fail = self.checks.iter().filter(|c| c.status == CheckStatus::Fail).count();
        (pass, fail, self.checks.len())
    }

    /// `CHECK STATUS MESSAGE` table, then one `FIX` line per failing or
    /// warning check, then a summary line.
    pub fn to_table(&self) -> String {
        let with_node = self.checks.iter().any(|c| c.node.is_some());
        let mut rows = Vec::new();
        let mut header = Vec::new();
        if with_node {
            header.push("NODE");
        }
        header.extend(["CHECK", "STATUS", "MESSAGE"]);
        rows.push(header.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        for c in &self.checks {
            let mut row = Vec::new();
            if with_node {
                row.push(c.node.clone().unwrap_or_else(|| "-".to_owned()));
            }
            row.push(c.id.clone());
            row.push(c.status.as_str().to_owned());
            row.push(c.message.clone().unwrap_or_default());
            rows.push(row);
        }
        let mut out = align(&rows);
        let fixes: Vec<&Check> = self.checks.iter().filter(|c| c.fix.is_some()).collect();
        if !fixes.is_empty() {
            out.push_str("\nFIXES\n");
            for c in fixes {
                let node = c.node.as_deref().map(|n| format!("{n}: ")).unwrap_or_default();
                out.push_str(&format!(
                    "{node}{} ({}): {}\n",
                    c.id,
                    c.status.as_str(),
                    c.fix.as_deref().unwrap_or_default()
                ));
            }
        }
        let (pass, fail, total) = self.counts();
        out.push_str(&format!(
            "\n{}: {pass}/{total} checks passed, {fail} failed\n",
            self.name
        ));
        out
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }

    pub fn to_yaml(&self) -> String {
        to_yaml(self)
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Table => self.to_table(),
            OutputFormat::Json => self.to_json(),
            OutputFormat::Yaml => self.to_yaml(),
        }
    }
}

/// 2-space JSON with a trailing newline. `value` is one of preflight's
/// reports: derived structs of strings, numbers and enums, maps keyed by
/// strings.
pub fn to_json<T: Serialize>(value: &T) -> String {
    // serde_json fails only on a map key that is neither a string nor a number, or
    // on a Serialize impl that errs; the reports have neither.
    let mut s = serde_json::to_string_pretty(value).expect("a preflight report serialises to JSON");
    s.push('\n');
    s
}

/// YAML of the same document as [`to_json`].
pub fn to_yaml<T: Serialize>(value: &T) -> String {
    // serde_yaml_ng fails only on a Serialize impl that errs, a map key that
    // is not a scalar, or a depth beyond its recursion limit; the reports
    // are shallow derived structs.
    serde_yaml_ng::to_string(value).expect("a preflight report serialises to YAML")
}

/// Left-aligned columns separated by three spaces, like kubectl; the last
/// column is not padded.
pub fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_json_yaml() {
        let mut r = Report::new("node");
        r.push(Check::pass("config.file", "Config file", "mode 0640"));
        r.push(Check::fail(
            "socket.directory",
            "Socket dir",
            "mode 0750",
            "chmod 2750 /run/openbao-kms",
        ));
        assert!(r.failed());
        assert_eq!(
            r.to_table(),
            "CHECK              STATUS   MESSAGE\n\
             config.file        pass     mode 0640\n\
             socket.directory   fail     mode 0750\n\
             \n\
             FIXES\n\
             socket.directory (fail): chmod 2750 /run/openbao-kms\n\
             \n\
             node: 1/2 checks passed, 1 failed\n"
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["name"], "node");
        assert_eq!(v["checks"][0]["status"], "pass");
        assert!(v["checks"][0].get("fix").is_none());
        assert_eq!(v["checks"][1]["fix"], "chmod 2750 /run/openbao-kms");
        let back: Report = serde_yaml_ng::from_str(&r.to_yaml()).unwrap();
        assert_eq!(back, r);
    }
}
