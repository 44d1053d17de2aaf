//! The one check catalogue: every report the provider CLI (`doctor`,
//! `verify-key`, `probe`) and preflight (`node`, `cluster`, the agent's
//! Lease) prints is a [`Report`] of [`Check`]s whose ids and titles come
//! from [`catalogue`], and whose verdicts come from pure functions of
//! collected facts ([`node`] for the files, sockets and endpoints of a
//! node). The shells only collect facts (stat, read, HTTP, OpenBao) and
//! print.
//!
//! Shape: `{"name", "checks": [{"id","title","status","node"?,"message"?,"fix"?}]}`
//! as 2-space JSON or YAML; the provider prints text lines
//! `[<status>] <id>: <title> - <message>`, preflight an aligned table.
//! Any `fail` means exit code 4; `warn` and `skip` do not fail.
//!
//! Check ids are a stable interface: runbooks and automation match on them.

pub mod api_connect;
pub mod artifact;
pub mod catalogue;
pub mod converge;
pub mod hold;
pub mod node;
pub mod openbao;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

/// The verdict of one check.
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

    /// How bad: `pass` < `skip` < `warn` < `fail`.
    fn severity(self) -> u8 {
        match self {
            Self::Pass => 0,
            Self::Skip => 1,
            Self::Warn => 2,
            Self::Fail => 3,
        }
    }
}

/// A catalogue entry: a check's stable id and its one title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    pub id: &'static str,
    pub title: &'static str,
}

impl Def {
    pub const fn new(id: &'static str, title: &'static str) -> Self {
        Self { id, title }
    }

    /// A verdict of this check; an empty message or fix is left out.
    pub fn check(&self, status: CheckStatus, message: impl Into<String>) -> Check {
        let message = message.into();
        Check {
            id: self.id.to_owned(),
            title: self.title.to_owned(),
            status,
            node: None,
            message: (!message.is_empty()).then_some(message),
            fix: None,
        }
    }

    pub fn pass(&self, message: impl Into<String>) -> Check {
        self.check(CheckStatus::Pass, message)
    }

    pub fn warn(&self, message: impl Into<String>, fix: impl Into<String>) -> Check {
        self.check(CheckStatus::Warn, message).with_fix(fix)
    }

    pub fn fail(&self, message: impl Into<String>, fix: impl Into<String>) -> Check {
        self.check(CheckStatus::Fail, message).with_fix(fix)
    }

    pub fn skip(&self, message: impl Into<String>) -> Check {
        self.check(CheckStatus::Skip, message)
    }

    /// Skipped because the check `dep` did not pass.
    pub fn skipped_after(&self, dep: &Def) -> Check {
        self.skip(format!("skipped: {} did not pass", dep.id))
    }

    /// One verdict of this check from several: the worst status, the
    /// messages of the checks with that status joined with `; ` (all of
    /// them when everything passed), their fixes likewise.
    pub fn combine(&self, parts: &[Check]) -> Check {
        let worst = parts
            .iter()
            .map(|c| c.status)
            .max_by_key(|s| s.severity())
            .unwrap_or(CheckStatus::Pass);
        let chosen: Vec<&Check> = parts
            .iter()
            .filter(|c| worst == CheckStatus::Pass || c.status == worst)
            .collect();
        let join = |field: fn(&Check) -> Option<&String>| {
            chosen
                .iter()
                .filter_map(|c| field(c).cloned())
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.check(worst, join(|c| c.message.as_ref()))
            .with_fix(join(|c| c.fix.as_ref()))
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
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        let fix = fix.into();
        self.fix = (!fix.is_empty()).then_some(fix);
        self
    }

    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    /// True for this catalogue entry.
    pub fn is(&self, def: &Def) -> bool {
        self.id == def.id
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

    /// The provider CLI's text: the report name, then one
    /// `[<status>] <id>: <title> - <message>` line per check.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.name);
        for c in &self.checks {
            out.push_str(&format!("[{}] {}: {}", c.status.as_str(), c.id, c.title));
            if let Some(m) = &c.message {
                out.push_str(&format!(" - {m}"));
            }
            out.push('\n');
        }
        out
    }

    /// Preflight's text: a `CHECK STATUS MESSAGE` table (with `NODE` first
    /// when a check names one), then one `FIX` line per check that has a
    /// fix, then a summary line.
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
}

/// 2-space JSON with a trailing newline. `value` is one of the reports:
/// derived structs of strings, numbers and enums, maps keyed by strings.
pub fn to_json<T: Serialize>(value: &T) -> String {
    // serde_json fails only on a map key that is neither a string nor a number, or
    // on a Serialize impl that errs; the reports have neither.
    let mut s = serde_json::to_string_pretty(value).expect("a report serialises to JSON");
    s.push('\n');
    s
}

/// YAML of the same document as [`to_json`].
pub fn to_yaml<T: Serialize>(value: &T) -> String {
    // serde_yaml_ng fails only on a Serialize impl that errs, a map key that
    // is not a scalar, or a depth beyond its recursion limit; the reports
    // are shallow derived structs.
    serde_yaml_ng::to_string(value).expect("a report serialises to YAML")
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
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
