//! `--storage-report FILE` of `verify-rotation` and `retire-versions`: a
//! report written by `bao-kms-preflight storage -o json`, judged against
//! this node's registry by [`bao_kms_core::storage::evidence`].
//!
//! Without a report both commands state limited confidence (they cannot see
//! etcd). With one, confidence is `complete` only when the report covers
//! the whole store and every KMS v2 object of this provider uses a key_id
//! this registry decrypts (and, for a retire plan, none uses a version the
//! plan removes); otherwise the command fails with each reason.

use std::path::Path;

use bao_kms_core::registry::StateFile;
use bao_kms_core::storage::StorageReport;
use bao_kms_core::storage::evidence::{Evidence, evaluate};
use serde_json::{Value, json};

/// Largest report file read.
pub const MAX_REPORT_BYTES: u64 = 16 << 20;

/// Reads and parses the report; the error names the file and the problem.
pub fn load(path: &Path) -> Result<StorageReport, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("storage report {}: {e}", path.display()))?;
    if meta.len() > MAX_REPORT_BYTES {
        return Err(format!(
            "storage report {} is larger than {MAX_REPORT_BYTES} bytes",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("storage report {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "storage report {} is not a `bao-kms-preflight storage -o json` report: {e}",
            path.display()
        )
    })
}

/// Adds the evidence fields to `r` and returns the evidence, or the load
/// error as its only finding.
pub fn add_evidence(
    r: &mut Value,
    path: &Path,
    state: &StateFile,
    retire_before: Option<u64>,
    now_unix: i64,
) -> Evidence {
    r["storageReport"] = json!(path.display().to_string());
    let report = match load(path) {
        Ok(report) => report,
        Err(e) => {
            let ev = Evidence {
                findings: vec![e],
                ..Evidence::default()
            };
            r["storageFindings"] = json!(ev.findings);
            return ev;
        }
    };
    r["storageReportRevision"] = json!(report.etcd.revision);
    r["storageReportAgeSeconds"] = json!((now_unix - report.generated_at_unix).max(0));
    let ev = evaluate(&report, state, retire_before);
    r["storageObjects"] = json!(ev.objects);
    r["storageObjectsOnActiveKey"] = json!(ev.on_active);
    let by_version: serde_json::Map<String, Value> = ev
        .objects_by_version
        .iter()
        .map(|(v, n)| (format!("v{v}"), json!(n)))
        .collect();
    r["storageObjectsByVersion"] = Value::Object(by_version);
    if !ev.findings.is_empty() {
        r["storageFindings"] = json!(ev.findings);
    }
    ev
}

/// `complete` with complete evidence, else `limited`.
pub fn confidence(evidence: Option<&Evidence>) -> &'static str {
    match evidence {
        Some(ev) if ev.complete() => "complete",
        _ => "limited",
    }
}
