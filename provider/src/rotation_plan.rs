//! `rotation-plan` and `verify-rotation`: read-only views of the rotation,
//! from the local registry (read without the writer lock) and live Transit
//! metadata and identity, evaluated with the same rules the running
//! provider applies (an `identity_drift` fails them as it stops serve).
//! Field names are a stable interface: runbooks and automation match on
//! them.
//!
//! `verify-rotation` adds an explicit confidence statement: limited on its
//! own (it cannot see etcd, Kubernetes objects or backups), complete for
//! the live store only with a storage report (`--storage-report`,
//! [`crate::storage_report`]); it never recommends raising
//! `min_decryption_version`.

use std::sync::Arc;

use bao_kms_core::config::Config;
use bao_kms_core::hash::h;
use bao_kms_core::reason::ReasonCode;
use bao_kms_core::registry::{
    CheckpointStatus, IdentityPins, PinsVerdict, SnapshotState, StateFile, checkpoint_status, pins_verdict,
};
use bao_kms_core::rotation::{Rotation, RotationState};
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_core::storage::evidence::Evidence;
use bao_kms_core::transit::{BootstrapDecision, KeyMetadata, bootstrap_decision};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::openbao::{ClientSettings, OpenBao};
use crate::state::{RegistryPaths, read_pins_unlocked, read_unlocked};

/// What `verify-rotation` cannot prove without a storage report; with a
/// complete one, only the last two remain.
pub const LIMITATIONS: [&str; 4] = [
    "does not enumerate Kubernetes resources or prove that every targeted object was rewritten",
    "does not inspect etcd or etcd snapshots",
    "does not evaluate retained backups, which may still need old Transit versions",
    "never recommends raising min_decryption_version; that remains an operator decision",
];

/// The report and whether it passed.
pub type Plan = crate::report::FieldReport;

/// What OpenBao reports now: the key's Transit metadata and the live
/// identity the pins are judged against.
pub(crate) struct Live {
    pub meta: KeyMetadata,
    pub pins: IdentityPins,
}

/// Logs in and reads the configured key's Transit metadata and OpenBao's
/// live identity (`cluster_id`, the mount's accessor and uuid), as serve
/// reads them (errors redacted).
pub(crate) async fn live(cfg: &Config) -> Result<Live, String> {
    let metrics = Arc::new(Metrics::for_auth(&cfg.auth.method));
    let bao = OpenBao::new(ClientSettings::from_config(cfg), metrics.clone()).map_err(|e| e.to_string())?;
    let token = Auth::new(&cfg.auth, bao.clone(), metrics)
        .map_err(|e| e.to_string())?
        .token()
        .await
        .map_err(|e| e.to_string())?;
    let t = token.expose_secret();
    let meta = bao.key_metadata(t).await.map_err(|e| e.to_string())?;
    let cluster_id = bao.cluster_id().await.map_err(|e| e.to_string())?;
    let mount = bao.mount_identity(t).await.map_err(|e| e.to_string())?;
    Ok(Live {
        meta,
        pins: IdentityPins::new(cluster_id, mount.accessor, mount.uuid),
    })
}

/// Adds the identity verdict to a field report (`identityStatus`,
/// `identityPinned`, `identityLive`); on a drift returns the
/// `identity_drift` reasons, as serve reports them.
pub(crate) fn add_identity(r: &mut Value, stored: Option<&IdentityPins>, live: &IdentityPins) -> Vec<String> {
    use bao_kms_core::checks::openbao::describe;
    r["identityLive"] = json!(describe(live));
    if let Some(p) = stored {
        r["identityPinned"] = json!(describe(p));
    }
    match pins_verdict(stored, live) {
        PinsVerdict::Match => {
            r["identityStatus"] = json!("pass");
            Vec::new()
        }
        PinsVerdict::FirstPin => {
            r["identityStatus"] = json!("unpinned");
            Vec::new()
        }
        PinsVerdict::Drift(lines) => {
            r["identityStatus"] = json!("fail");
            r["identityFix"] = json!(bao_kms_core::checks::openbao::DRIFT_FIX);
            lines
                .into_iter()
                .map(|l| format!("{}: {l}", ReasonCode::IdentityDrift))
                .collect()
        }
    }
}

/// Builds the plan; `verify` adds the confidence statement.
pub async fn run(cfg: &Config, verify: bool) -> Plan {
    run_with(cfg, verify, None).await
}

/// [`run`] with `verify-rotation --storage-report`: the report's evidence
/// against this registry (objects per version, whether the rewrite is
/// done); a report that is not complete evidence fails the command.
pub async fn run_with(cfg: &Config, verify: bool, storage_report: Option<&std::path::Path>) -> Plan {
    let name = if verify { "verify-rotation" } else { "rotation-plan" };
    let mut r = json!({ "name": name });
    let mut ok = true;
    let paths = RegistryPaths::new(&cfg.state.path);
    let (state, checkpoint) = match read_unlocked(&paths) {
        Ok(x) => x,
        Err(e) => {
            r["stateLoaded"] = json!(false);
            r["stateError"] = json!(e);
            (None, None)
        }
    };
    if r.get("stateError").is_some() {
        ok = false;
    }
    r["stateLoaded"] = json!(state.is_some());
    if let Some(s) = &state {
        r["stateGeneration"] = json!(s.generation);
        r["stateHash"] = json!(s.current_hash);
    }
    r["stateCheckpointLoaded"] = json!(checkpoint.is_some());
    if let Some(c) = &checkpoint {
        r["stateCheckpointGeneration"] = json!(c.generation);
        r["stateCheckpointHash"] = json!(c.current_hash);
    }
    match checkpoint_status(state.as_ref(), checkpoint.as_ref()) {
        Ok(status) => {
            r["stateCheckpointStatus"] = json!(status.as_str());
            if status == CheckpointStatus::Missing {
                r["stateCheckpointWarning"] = json!("state without checkpoint: rollback detection is unanchored");
            }
        }
        Err(e) => {
            r["stateCheckpointStatus"] = json!("conflict");
            r["stateError"] = json!(e);
            ok = false;
        }
    }
    let pins = match read_pins_unlocked(&paths) {
        Ok(p) => p,
        Err(e) => {
            r["identityStatus"] = json!("fail");
            r["stateError"] = json!(e);
            return finish(r, false, verify);
        }
    };
    let (meta, drift) = match live(cfg).await {
        Ok(l) => {
            r["transitMetadataStatus"] = json!("pass");
            r["latestTransitVersion"] = json!(l.meta.latest_version);
            let drift = add_identity(&mut r, pins.as_ref(), &l.pins);
            (l.meta, drift)
        }
        Err(e) => {
            r["transitMetadataStatus"] = json!("fail");
            r["transitMetadataError"] = json!(e);
            return finish(r, false, verify);
        }
    };
    let scope = cfg.identity_scope();
    let state = match state {
        Some(s) => s,
        None if ok => match bootstrap_decision(&meta) {
            BootstrapDecision::Allowed { created_unix } => match KeySnapshot::new(&scope, 1, created_unix) {
                Ok(snap) => {
                    r["bootstrapDecision"] = json!(bootstrap_decision(&meta).describe());
                    r["synthesizedInitialState"] = json!(true);
                    StateFile::bootstrap(&scope, &snap, crate::now_unix())
                }
                Err(e) => {
                    r["bootstrapDecision"] = json!(e.to_string());
                    return finish(r, false, verify);
                }
            },
            d @ BootstrapDecision::Denied { .. } => {
                r["bootstrapDecision"] = json!(d.describe());
                return finish(r, false, verify);
            }
        },
        None => return finish(r, false, verify),
    };
    if let Err(e) = state.check_scope(&scope) {
        r["stateError"] = json!(e.to_string());
        return finish(r, false, verify);
    }
    let active = state.active();
    r["activeTransitVersion"] = json!(active.transit_version);
    r["activeKeyIdHash"] = json!(h(&active.kubernetes_key_id));
    if let Some(p) = state.snapshots.iter().find(|s| s.state == SnapshotState::Pending) {
        r["pendingVersion"] = json!(p.transit_version);
        r["pendingKeyIdHash"] = json!(h(&p.kubernetes_key_id));
        r["pendingStableCount"] = json!(p.stable_observation_count);
    }
    // As in serve: metadata from another OpenBao or a re-created mount
    // drives no rotation decision.
    if !drift.is_empty() {
        r["rotationState"] = json!(RotationState::Unknown.as_str());
        r["reasons"] = json!(drift);
        return finish(r, false, verify);
    }
    let step = Rotation {
        scope: &scope,
        policy: &cfg.rotation,
    }
    .step(&state, &meta, crate::now_unix(), None);
    r["rotationState"] = json!(step.rotation_state.as_str());
    if let Some(hold) = cfg.rotation.hold_at_version {
        r["holdAtVersion"] = json!(hold);
    }
    if let Some(p) = step.progress {
        r["pendingObservations"] = json!(p.observations);
        r["pendingRequiredObservations"] = json!(p.required);
        r["pendingHeld"] = json!(p.held_at.is_some());
        r["pendingPromotesAfter"] = json!(if let Some(hold) = p.held_at {
            format!(
                "never while rotation.holdAtVersion={hold} holds it: remove the setting and restart the provider to release it, then {}",
                if p.stable {
                    "rotation.activationDelay".to_owned()
                } else {
                    format!(
                        "{} more stable observation(s) and rotation.activationDelay",
                        p.required.saturating_sub(p.observations)
                    )
                }
            )
        } else if p.stable {
            format!(
                "rotation.activationDelay ({}s) after the running provider confirms the stable state",
                cfg.rotation.activation_delay.as_secs()
            )
        } else {
            format!(
                "{} more stable observation(s), then rotation.activationDelay",
                p.required.saturating_sub(p.observations)
            )
        });
    }
    let retained: Vec<u64> = state.retained_versions();
    r["retainedVersions"] = json!(retained);
    if !step.reasons.is_empty() {
        r["reasons"] = json!(step.reasons.iter().map(ToString::to_string).collect::<Vec<_>>());
        ok = false;
    }
    let evidence = storage_report.map(|path| {
        let ev = crate::storage_report::add_evidence(&mut r, path, &state, None, crate::now_unix());
        r["rewriteComplete"] = json!(ev.complete() && ev.objects == ev.on_active);
        ev
    });
    if evidence.as_ref().is_some_and(|ev| !ev.complete()) {
        ok = false;
    }
    finish_with(r, ok, verify, evidence.as_ref())
}

fn finish(r: Value, ok: bool, verify: bool) -> Plan {
    finish_with(r, ok, verify, None)
}

fn finish_with(mut r: Value, ok: bool, verify: bool, evidence: Option<&Evidence>) -> Plan {
    if verify {
        let confidence = crate::storage_report::confidence(evidence);
        r["confidence"] = json!(confidence);
        r["limitations"] = json!(if confidence == "complete" {
            &LIMITATIONS[2..]
        } else {
            &LIMITATIONS[..]
        });
    }
    Plan::finish(r, ok)
}
