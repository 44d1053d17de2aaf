//! `retire-versions` and `restore-versions`: operator removal of old key
//! versions from this node's local decryption, and its only undo.
//!
//! Without `--apply` both commands only read (the registry without the
//! writer lock, Transit metadata after a login) and print the plan with the
//! current `stateHash` to review. With `--apply --expected-state-hash H`
//! they take the registry writer lock that `serve` holds (never waiting: a
//! held lock means the provider is running), re-read the registry under
//! it, require its hash to be `H`, re-plan against fresh metadata and write
//! the next generation through the same save path as `serve` (state file,
//! then checkpoint). Nothing is ever written to OpenBao. The rules are in
//! `bao_kms_core::registry::retire`.

use bao_kms_core::config::Config;
use bao_kms_core::hash::h;
use bao_kms_core::registry::retire::{VersionPlan, plan_restore, plan_retire};
use bao_kms_core::registry::{Checkpoint, IdentityPins, StateFile, checkpoint_status};
use serde_json::{Value, json};

use crate::state::{RegistryPaths, RegistryStore, StoreError, read_pins_unlocked, read_unlocked};

/// What these commands cannot see or do.
/// The first one, for a retire plan with complete storage evidence, is
/// [`LIMITATION_WITH_EVIDENCE`].
pub const LIMITATIONS: [&str; 4] = [
    "does not prove that no Kubernetes object, etcd snapshot or backup still needs a removed version; data still encrypted under one can no longer be decrypted by this node",
    "changes only this node's key registry; run it on every control-plane node",
    "never changes OpenBao: Transit keeps every version until an operator raises min_decryption_version or trims the key",
    "there is no undo other than restore-versions, and only while Transit can still decrypt the version",
];

/// What stays unproven with a complete storage report.
pub const LIMITATION_WITH_EVIDENCE: &str = "the storage report proves that no object in the live store needs a removed version; etcd snapshots and backups taken before the rewrite may still need one";

/// Which command, with its operands.
#[derive(Debug, Clone)]
pub enum Request {
    /// `storage_report`: a `bao-kms-preflight storage -o json` file, the
    /// evidence that no object needs a removed version.
    Retire {
        before_version: u64,
        storage_report: Option<std::path::PathBuf>,
    },
    Restore {
        versions: Vec<u64>,
    },
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Self::Retire { .. } => "retire-versions",
            Self::Restore { .. } => "restore-versions",
        }
    }

    fn plan(&self, state: &StateFile, meta: &bao_kms_core::transit::KeyMetadata) -> Result<VersionPlan, Vec<String>> {
        match self {
            Self::Retire { before_version, .. } => plan_retire(state, meta, *before_version),
            Self::Restore { versions } => plan_restore(state, meta, versions),
        }
    }
}

/// The report and whether it passed (exit 4 otherwise).
pub type Outcome = crate::report::FieldReport;

/// The registry as a registry-editing command (retire, restore, repin)
/// sees it: read without the lock for a plan, under the held writer lock
/// for `--apply`.
pub(crate) struct Loaded {
    pub(crate) state: StateFile,
    pub(crate) checkpoint: Option<Checkpoint>,
    pub(crate) pins: Option<IdentityPins>,
    pub(crate) store: Option<RegistryStore>,
}

/// Reads the registry for a plan (`apply` false) or under the writer lock;
/// it fails closed on checkpoint or scope problems, and `no_state` says
/// why a missing registry stops this command.
pub(crate) fn load(cfg: &Config, apply: bool, no_state: &str) -> Result<Loaded, String> {
    let (state, checkpoint, pins, store) = if apply {
        let store = RegistryStore::open(&cfg.state.path).map_err(|e| match e {
            StoreError::Locked { path } => format!(
                "provider is running (lock held): {path} is locked by another process; stop the provider on this node before --apply"
            ),
            other => other.to_string(),
        })?;
        let disk = store.read().map_err(|e| format!("registry unreadable: {e}"))?;
        (disk.state, disk.checkpoint, disk.pins, Some(store))
    } else {
        let paths = RegistryPaths::new(&cfg.state.path);
        let (state, checkpoint) = read_unlocked(&paths)?;
        (state, checkpoint, read_pins_unlocked(&paths)?, None)
    };
    checkpoint_status(state.as_ref(), checkpoint.as_ref()).map_err(|e| format!("registry fails closed: {e}"))?;
    let state = state.ok_or_else(|| format!("no key registry state at {}: {no_state}", cfg.state.path.display()))?;
    state
        .check_scope(&cfg.identity_scope())
        .map_err(|e| format!("registry fails closed: {e}"))?;
    Ok(Loaded {
        state,
        checkpoint,
        pins,
        store,
    })
}

/// Plans (and with `expected_hash`, applies) `request`.
pub async fn run(cfg: &Config, request: &Request, expected_hash: Option<&str>) -> Outcome {
    let mut r = json!({ "name": request.name() });
    r["applied"] = json!(false);
    match request {
        Request::Retire { before_version, .. } => {
            r["beforeVersion"] = json!(before_version);
            r["confidence"] = json!("limited");
        }
        Request::Restore { versions } => {
            r["operation"] = json!("restore");
            r["requestedVersions"] = json!(versions);
        }
    }
    let fail = |mut r: Value, reasons: Vec<String>| {
        r["reasons"] = json!(reasons);
        finish(r, false)
    };
    let loaded = match load(
        cfg,
        expected_hash.is_some(),
        "these commands need the existing state of this node",
    ) {
        Ok(l) => l,
        Err(e) => return fail(r, vec![e]),
    };
    let state = &loaded.state;
    r["stateGeneration"] = json!(state.generation);
    r["stateHash"] = json!(state.current_hash);
    r["stateCheckpointStatus"] = json!(
        checkpoint_status(Some(state), loaded.checkpoint.as_ref())
            .map(|s| s.as_str())
            .unwrap_or("conflict")
    );
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
    let meta = match crate::rotation_plan::live(cfg).await {
        Ok(l) => {
            r["transitMetadataStatus"] = json!("pass");
            r["latestTransitVersion"] = json!(l.meta.latest_version);
            let drift = crate::rotation_plan::add_identity(&mut r, loaded.pins.as_ref(), &l.pins);
            if !drift.is_empty() {
                return fail(r, drift);
            }
            l.meta
        }
        Err(e) => {
            r["transitMetadataStatus"] = json!("fail");
            return fail(r, vec![format!("Transit key metadata could not be read: {e}")]);
        }
    };
    let plan = match request.plan(state, &meta) {
        Ok(plan) => plan,
        Err(reasons) => return fail(r, reasons),
    };
    r["nextStateHash"] = json!(plan.next.current_hash);
    r["nextGeneration"] = json!(plan.next.generation);
    r["removedVersions"] = json!(plan.removed_versions);
    if matches!(request, Request::Restore { .. }) {
        r["restoredVersions"] = json!(plan.restored_versions);
    }
    if let Request::Retire {
        before_version,
        storage_report: Some(path),
    } = request
    {
        let ev = crate::storage_report::add_evidence(&mut r, path, state, Some(*before_version), crate::now_unix());
        if !ev.complete() {
            return fail(r, ev.findings);
        }
        r["confidence"] = json!(crate::storage_report::confidence(Some(&ev)));
    }
    if let Some(store) = &loaded.store {
        if let Err(e) = store.save_transition(&plan.next) {
            let unchanged = if e.files_unchanged {
                "the registry files are unchanged"
            } else {
                "the state file may already be the new generation; the provider accepts it as the successor of the checkpoint"
            };
            return fail(r, vec![format!("registry save failed: {e}; {unchanged}")]);
        }
        r["applied"] = json!(true);
    }
    finish(r, true)
}

fn finish(mut r: Value, ok: bool) -> Outcome {
    let mut limitations = LIMITATIONS;
    if r["confidence"] == "complete" {
        limitations[0] = LIMITATION_WITH_EVIDENCE;
    }
    r["limitations"] = json!(limitations);
    Outcome::finish(r, ok)
}
