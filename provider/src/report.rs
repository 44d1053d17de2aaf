//! The two report shapes of the one-shot commands.
//!
//! Check reports (`doctor`, `verify-key`, `probe`) are the core check
//! catalogue's [`Report`]: `{"name", "checks": [{"id","title","status","message"?}]}`
//! as 2-space JSON, or text `[<status>] <id>: <title> - <message>`. Any
//! `fail` means exit code 4; `warn` does not fail.
//!
//! Field reports (`rotation-plan`, `verify-rotation`, `retire-versions`,
//! `restore-versions`, `benchmark`): one JSON object whose fields keep their
//! order, ending with `status`; text is one `key: value` line per field.

pub use bao_kms_core::checks::{Check, CheckStatus, Report};

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
