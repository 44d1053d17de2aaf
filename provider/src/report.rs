//! The two report shapes of the one-shot commands.
//!
//! Check reports (`doctor`, `verify-key`, `probe`):
//! `{"name", "checks": [{"id","title","status","message"?}]}` as 2-space JSON,
//! or text `[<status>] <id>: <title> - <message>`. Any `fail` means exit
//! code 4; `warn` does not fail.
//!
//! Field reports (`rotation-plan`, `verify-rotation`, `retire-versions`,
//! `restore-versions`, `benchmark`): one JSON object whose fields keep their
//! order, ending with `status`; text is one `key: value` line per field.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl CheckStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub status: CheckStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: &'static str,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            checks: Vec::new(),
        }
    }

    pub fn add(
        &mut self,
        id: &'static str,
        title: &'static str,
        status: CheckStatus,
        message: impl Into<Option<String>>,
    ) {
        self.checks.push(Check {
            id,
            title,
            status,
            message: message.into(),
        });
    }

    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == CheckStatus::Fail)
    }

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

    pub fn to_json(&self) -> String {
        // serde_json fails only on a map key that is neither a string nor a
        // number, or on a Serialize impl that errs; the report is derived structs
        // of strings and enums.
        let mut s = serde_json::to_string_pretty(self).expect("the check report serialises to JSON");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_shapes() {
        let mut r = Report::new("probe");
        r.add("kms.status", "KMS Status is healthy", CheckStatus::Pass, None);
        r.add(
            "kms.key_id",
            "Status and Encrypt agree on key_id",
            CheckStatus::Fail,
            Some("differs".to_owned()),
        );
        assert!(r.failed());
        assert_eq!(
            r.to_text(),
            "probe\n[pass] kms.status: KMS Status is healthy\n[fail] kms.key_id: Status and Encrypt agree on key_id - differs\n"
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["checks"][0]["status"], "pass");
        assert!(v["checks"][0].get("message").is_none());
    }
}

/// A field report and whether it passed (exit 4 otherwise).
#[derive(Debug, Clone)]
pub struct FieldReport {
    pub report: serde_json::Value,
    pub ok: bool,
}

impl FieldReport {
    /// Sets the final `status` field from `ok`.
    pub fn finish(mut report: serde_json::Value, ok: bool) -> Self {
        report["status"] = serde_json::json!(if ok { "pass" } else { "fail" });
        Self { report, ok }
    }

    /// `key: value` lines in report order; arrays as `  - item` lines,
    /// objects as `key: a=1, b=2`.
    pub fn to_text(&self) -> String {
        use serde_json::Value;
        let scalar = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        let mut out = String::new();
        for (k, v) in self.report.as_object().into_iter().flatten() {
            match v {
                Value::Array(items) => {
                    out.push_str(&format!("{k}:\n"));
                    for i in items {
                        out.push_str(&format!("  - {}\n", scalar(i)));
                    }
                }
                Value::Object(fields) => {
                    let joined: Vec<String> = fields.iter().map(|(f, v)| format!("{f}={}", scalar(v))).collect();
                    out.push_str(&format!("{k}: {}\n", joined.join(", ")));
                }
                other => out.push_str(&format!("{k}: {}\n", scalar(other))),
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        // The field report is a JSON value, whose maps have string keys.
        serde_json::to_string_pretty(&self.report).expect("the field report serialises to JSON")
    }
}
