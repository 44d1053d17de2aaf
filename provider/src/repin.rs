//! `repin`: accept the OpenBao identity this node sees now (after a
//! deliberate move to another OpenBao cluster, or a restore that changed
//! its `cluster_id` or re-created the Transit mount) instead of failing
//! with `identity_drift`.
//!
//! Without `--apply` it only reads (the registry and pins without the writer
//! lock, the live identity and Transit metadata after a login) and prints
//! the plan: the pinned and the live identity, what changes, and the
//! registry's `stateHash`. With `--apply --expected-state-hash H` it takes
//! the registry writer lock that `serve` holds (never waiting: a held lock
//! means the provider is running), re-reads everything under it, requires
//! the state hash to be `H`, re-plans against fresh OpenBao facts, writes
//! the pins file and appends the old and new identity to
//! `<state.path>.openbao-identity-history`. The registry state itself and
//! OpenBao are never changed. The rules are in
//! `bao_kms_core::registry::repin`: a live Transit key that no longer holds
//! the registry's versions as recorded is refused.

use bao_kms_core::checks::openbao::describe;
use bao_kms_core::config::Config;
use bao_kms_core::hash::h;
use bao_kms_core::registry::IdentityPins;
use bao_kms_core::registry::repin::{RepinRecord, plan_repin};
use serde_json::{Value, json};

/// What `repin` cannot see or do.
pub const LIMITATIONS: [&str; 3] = [
    "proves only that the live Transit key holds every version this registry retains with its recorded creation second; it cannot tell a restored OpenBao from one that copied those facts",
    "changes only this node's pins file; run it on every control-plane node",
    "never changes OpenBao or the key registry state",
];

/// The report and whether it passed (exit 4 otherwise).
pub type Outcome = crate::report::FieldReport;

/// Plans (and with `expected_hash`, applies) the re-pin.
pub async fn run(cfg: &Config, expected_hash: Option<&str>) -> Outcome {
    let mut r = json!({ "name": "repin", "applied": false });
    let fail = |mut r: Value, reasons: Vec<String>| {
        r["reasons"] = json!(reasons);
        finish(r, false)
    };
    let loaded = match crate::retire::load(
        cfg,
        expected_hash.is_some(),
        "repin accepts a new OpenBao identity for an existing registry; without one the first start pins the live identity",
    ) {
        Ok(l) => l,
        Err(e) => return fail(r, vec![e]),
    };
    let state = &loaded.state;
    r["stateGeneration"] = json!(state.generation);
    r["stateHash"] = json!(state.current_hash);
    r["activeTransitVersion"] = json!(state.active().transit_version);
    r["activeKeyIdHash"] = json!(h(&state.active().kubernetes_key_id));
    if let Some(expected) = expected_hash
        && expected != state.current_hash
    {
        return fail(
            r,
            vec![format!(
                "--expected-state-hash {expected} is not the current state hash {}: the registry changed since the plan was reviewed (or the wrong hash was given); nothing was written, plan and review again",
                state.current_hash
            )],
        );
    }
    let live = match crate::rotation_plan::live(cfg).await {
        Ok(l) => {
            r["transitMetadataStatus"] = json!("pass");
            r["latestTransitVersion"] = json!(l.meta.latest_version);
            l
        }
        Err(e) => {
            r["transitMetadataStatus"] = json!("fail");
            return fail(
                r,
                vec![format!(
                    "OpenBao identity or Transit key metadata could not be read: {e}"
                )],
            );
        }
    };
    // The verdict serve reaches now (pass, unpinned or fail with
    // identity_drift), before the re-pin.
    let drift = crate::rotation_plan::add_identity(&mut r, loaded.pins.as_ref(), &live.pins);
    if !drift.is_empty() {
        r["identityDrift"] = json!(drift);
    }
    let plan = match plan_repin(state, &live.meta, loaded.pins.as_ref(), &live.pins) {
        Ok(p) => p,
        Err(reasons) => return fail(r, reasons),
    };
    r["previousIdentity"] = json!(plan.previous.as_ref().map(pins_json));
    r["newIdentity"] = pins_json(&plan.next);
    r["changes"] = json!(plan.changes);
    if let Some(store) = &loaded.store
        && !plan.changes.is_empty()
    {
        if let Err(e) = store.save_pins(&plan.next) {
            return fail(
                r,
                vec![format!("identity pins save failed: {e}; the pins file is unchanged")],
            );
        }
        let record = RepinRecord::new(&plan, state, crate::now_unix());
        tracing::warn!(
            message = "registry.repinned",
            previous = plan.previous.as_ref().map(describe).unwrap_or_default(),
            current = %describe(&plan.next),
            state_hash = %state.current_hash
        );
        r["applied"] = json!(true);
        r["identityStatus"] = json!("pass");
        if let Err(e) = store.append_pins_history(&record.line()) {
            return fail(
                r,
                vec![format!(
                    "the new identity is pinned but its history record could not be written: {e}"
                )],
            );
        }
        r["historyFile"] = json!(store.paths.pins_history.display().to_string());
    }
    finish(r, true)
}

fn pins_json(p: &IdentityPins) -> Value {
    json!({
        "clusterId": p.cluster_id,
        "mountAccessor": p.mount_accessor,
        "mountUuid": p.mount_uuid,
    })
}

fn finish(mut r: Value, ok: bool) -> Outcome {
    r["limitations"] = json!(LIMITATIONS);
    Outcome::finish(r, ok)
}
