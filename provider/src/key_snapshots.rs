//! `key-snapshots`: what Decrypt expects for each key_id, to compare with
//! an object's stored annotations when Decrypt refuses it (`aad_mismatch`,
//! `annotation_invalid`, `aad_missing`; docs/operations.md).
//!
//! For one key_id (`--key-id`, `--key-id-hash`) or every registry record:
//! its Transit version, registry state, key_id hash, the annotations this
//! build's Encrypt returns under it (Decrypt requires them, except
//! `plugin-version`, which it only requires to be present), the canonical
//! AAD sent to Transit and its hash. Pure computation over the
//! configuration and the registry, read without the writer lock: no
//! OpenBao call, nothing written.

use bao_kms_core::config::Config;
use bao_kms_core::hash::{h, sha256_b64url};
use bao_kms_core::keyid::KeyId;
use bao_kms_core::registry::{SnapshotRecord, StateFile, checkpoint_status};
use bao_kms_core::{aad, annotations};
use serde_json::{Value, json};

use crate::report::FieldReport;
use crate::state::{RegistryPaths, read_unlocked};

/// Which records to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    KeyId(String),
    KeyIdHash(String),
}

fn record_fields(cfg: &Config, r: &SnapshotRecord) -> Value {
    let scope = cfg.identity_scope();
    let mut v = json!({
        "transitVersion": r.transit_version,
        "state": r.state.as_str(),
        "keyId": r.kubernetes_key_id,
        "keyIdHash": h(&r.kubernetes_key_id),
        "createdAtUnix": r.transit_version_created_at_unix,
    });
    // StateFile::decode accepts only records whose key_id it re-derived.
    if let Some(snap) = r.snapshot() {
        let ann: serde_json::Map<String, Value> = annotations::build(&scope, &snap, crate::VERSION)
            .into_iter()
            .map(|(k, val)| (k, json!(String::from_utf8_lossy(&val))))
            .collect();
        v["annotations"] = Value::Object(ann);
        v["annotationsNotCompared"] = json!([annotations::PLUGIN_VERSION]);
        let bytes = aad::canonical(&scope, &snap);
        v["aadHash"] = json!(sha256_b64url(&bytes));
        v["aad"] = json!(String::from_utf8_lossy(&bytes));
    }
    v
}

fn select<'a>(state: &'a StateFile, selector: &Selector) -> Result<Vec<&'a SnapshotRecord>, String> {
    let found = |pred: &dyn Fn(&SnapshotRecord) -> bool, what: String| {
        let hits: Vec<_> = state.snapshots.iter().filter(|r| pred(r)).collect();
        if hits.is_empty() {
            Err(format!(
                "{what} is not in this registry (generation {}): Decrypt refuses it as key_id_unknown; if another node promoted a newer version, this node learns it by discovery on its next Decrypt",
                state.generation
            ))
        } else {
            Ok(hits)
        }
    };
    match selector {
        Selector::All => Ok(state.snapshots.iter().collect()),
        Selector::KeyId(k) => {
            KeyId::parse(k)
                .map_err(|e| format!("--key-id is malformed ({e}): Decrypt refuses it as key_id_malformed"))?;
            found(&|r| r.kubernetes_key_id == *k, format!("key_id with hash {}", h(k)))
        }
        Selector::KeyIdHash(want) => found(&|r| h(&r.kubernetes_key_id) == *want, format!("key_id hash {want}")),
    }
}

/// Builds the report.
pub fn run(cfg: &Config, selector: &Selector) -> FieldReport {
    let mut r = json!({ "name": "key-snapshots" });
    let fail = |mut r: Value, reason: String| {
        r["reasons"] = json!([reason]);
        FieldReport::finish(r, false)
    };
    let (state, checkpoint) = match read_unlocked(&RegistryPaths::new(&cfg.state.path)) {
        Ok(x) => x,
        Err(e) => return fail(r, e),
    };
    let Some(state) = state else {
        return fail(r, format!("no key registry state at {}", cfg.state.path.display()));
    };
    r["statePath"] = json!(cfg.state.path.display().to_string());
    r["stateGeneration"] = json!(state.generation);
    r["stateHash"] = json!(state.current_hash);
    let mut ok = true;
    if let Err(e) = checkpoint_status(Some(&state), checkpoint.as_ref()) {
        // Still shown: the records are what a diagnosis needs; the provider
        // itself fails closed on this state.
        r["stateCheckpointStatus"] = json!("conflict");
        r["stateError"] = json!(e.to_string());
        ok = false;
    }
    if let Err(e) = state.check_scope(&cfg.identity_scope()) {
        return fail(r, format!("registry fails closed: {e}"));
    }
    r["activeKeyIdHash"] = json!(h(&state.active_key_id));
    let records = match select(&state, selector) {
        Ok(records) => records,
        Err(e) => return fail(r, e),
    };
    r["snapshots"] = Value::Array(records.into_iter().map(|rec| record_fields(cfg, rec)).collect());
    FieldReport::finish(r, ok)
}

/// The text form: one block per record, annotations one per line.
pub fn to_text(report: &FieldReport) -> String {
    let r = &report.report;
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut out = String::new();
    for key in [
        "name",
        "statePath",
        "stateGeneration",
        "stateHash",
        "stateCheckpointStatus",
        "stateError",
        "activeKeyIdHash",
    ] {
        if let Some(v) = r.get(key) {
            out.push_str(&format!("{key}: {}\n", s(v)));
        }
    }
    for snap in r["snapshots"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nversion {} ({})\n",
            s(&snap["transitVersion"]),
            s(&snap["state"])
        ));
        for key in ["keyId", "keyIdHash", "createdAtUnix", "aadHash", "aad"] {
            if let Some(v) = snap.get(key) {
                out.push_str(&format!("  {key}: {}\n", s(v)));
            }
        }
        if let Some(ann) = snap["annotations"].as_object() {
            out.push_str("  annotations:\n");
            for (k, v) in ann {
                let note = if k == annotations::PLUGIN_VERSION {
                    "   (any non-empty value; not compared)"
                } else {
                    ""
                };
                out.push_str(&format!("    {k}: {}{note}\n", s(v)));
            }
        }
    }
    if let Some(reasons) = r["reasons"].as_array() {
        out.push_str("reasons:\n");
        for reason in reasons {
            out.push_str(&format!("  - {}\n", s(reason)));
        }
    }
    out.push_str(&format!("status: {}\n", s(&r["status"])));
    out
}
