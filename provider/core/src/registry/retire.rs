//! Operator retirement and restoration of old key versions
//! (`retire-versions`, `restore-versions`): pure planning over the current
//! registry and live Transit metadata.
//!
//! Retiring marks every `retired` record below `--before-version N` as
//! `removed`: the record stays in the file, never decrypts again, is never
//! revived by an observation or a discovery, and is no longer checked
//! against Transit (so `min_decryption_version` may be raised past it
//! afterwards). Restoring turns chosen `removed` records back into
//! `retired` ones while Transit can still decrypt them. Neither changes the
//! active key; both write the next generation of the hash chain.
//!
//! Preconditions (every one refused with its own reason):
//! - retire: `1 < N <= active version`; no pending rotation; Transit
//!   `latest_version` equals the active version (a lower one is a
//!   rollback); at least one retained version below N.
//! - restore: each version is a `removed` record that Transit still
//!   reports with the recorded creation second and does not exclude with
//!   `min_decryption_version` or `min_available_version`.
//! - both: the metadata is self-consistent, and every version that stays
//!   (or becomes) decryptable is still reported with its creation second and
//!   is not excluded by `min_decryption_version` / `min_available_version`.

use std::collections::BTreeSet;

use super::{SnapshotState, StateFile};
use crate::transit::KeyMetadata;

/// Which operation a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Retire,
    Restore,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retire => "retire",
            Self::Restore => "restore",
        }
    }
}

/// An accepted plan: the next registry generation and what it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionPlan {
    pub operation: Operation,
    /// Retire: the versions this plan removes. Restore: the versions that
    /// stay removed after it.
    pub removed_versions: Vec<u64>,
    /// Restore: the versions this plan makes decryptable again.
    pub restored_versions: Vec<u64>,
    /// The state to write (generation + 1, `previousHash` = current hash).
    pub next: StateFile,
}

/// Plans `retire-versions --before-version N`. `Err` lists every reason the
/// plan is refused.
pub fn plan_retire(state: &StateFile, meta: &KeyMetadata, before_version: u64) -> Result<VersionPlan, Vec<String>> {
    let mut reasons = Vec::new();
    let active = state.active().transit_version;
    if before_version <= 1 {
        reasons.push(format!(
            "--before-version must be greater than 1 (got {before_version}): versions below it are removed, and there is no version 0"
        ));
    }
    if before_version > active {
        reasons.push(format!(
            "--before-version {before_version} is above the active version {active}: the active version is never retired"
        ));
    }
    if let Some(p) = state.snapshots.iter().find(|r| r.state == SnapshotState::Pending) {
        reasons.push(format!(
            "a rotation is pending (version {} observed, not promoted): wait until it is promoted and Transit latest_version equals the active version",
            p.transit_version
        ));
    }
    if meta.latest_version < active {
        reasons.push(format!(
            "Transit latest_version={} is below the active version {active}: the key was rolled back or replaced",
            meta.latest_version
        ));
    } else if meta.latest_version > active {
        reasons.push(format!(
            "Transit latest_version={} is newer than the active version {active}: let the provider observe and promote it first",
            meta.latest_version
        ));
    }
    let removing: Vec<u64> = state
        .snapshots
        .iter()
        .filter(|r| r.transit_version < before_version && r.state == SnapshotState::Retired)
        .map(|r| r.transit_version)
        .collect();
    if reasons.is_empty() && removing.is_empty() {
        reasons.push(format!(
            "no decryptable version below {before_version} is left to retire"
        ));
    }
    // Versions being removed need not be decryptable any more, but one that
    // Transit still reports must keep its creation second: a change means
    // the key was replaced, and nothing should be decided on that metadata.
    for r in state.snapshots.iter().filter(|r| removing.contains(&r.transit_version)) {
        if let Some(&created) = meta.versions.get(&r.transit_version)
            && created != r.transit_version_created_at_unix
        {
            reasons.push(format!(
                "identity_drift: Transit version {} creation time changed from {} to {created}",
                r.transit_version, r.transit_version_created_at_unix
            ));
        }
    }
    finish(state, meta, reasons, Operation::Retire, |s| {
        for r in &mut s.snapshots {
            if removing.contains(&r.transit_version) {
                r.state = SnapshotState::Removed;
            }
        }
    })
}

/// Plans `restore-versions --versions v1,v2`. `Err` lists every reason the
/// plan is refused.
pub fn plan_restore(state: &StateFile, meta: &KeyMetadata, versions: &[u64]) -> Result<VersionPlan, Vec<String>> {
    let mut reasons = Vec::new();
    let wanted: BTreeSet<u64> = versions.iter().copied().collect();
    if wanted.is_empty() {
        reasons.push("no version to restore was given".to_owned());
    }
    for &v in &wanted {
        let Some(r) = state.snapshots.iter().find(|r| r.transit_version == v) else {
            reasons.push(format!(
                "version {v} is not in the key registry; only removed records can be restored"
            ));
            continue;
        };
        if r.state != SnapshotState::Removed {
            reasons.push(format!(
                "version {v} is {}, not removed; only removed records can be restored",
                r.state.as_str()
            ));
            continue;
        }
        match meta.versions.get(&v) {
            None => reasons.push(format!(
                "Transit no longer reports version {v}: it cannot decrypt with it (restore the OpenBao key first)"
            )),
            Some(&created) if created != r.transit_version_created_at_unix => reasons.push(format!(
                "identity_drift: Transit version {v} creation time changed from {} to {created}",
                r.transit_version_created_at_unix
            )),
            Some(_) => {}
        }
    }
    finish(state, meta, reasons, Operation::Restore, |s| {
        for r in &mut s.snapshots {
            if wanted.contains(&r.transit_version) && r.state == SnapshotState::Removed {
                r.state = SnapshotState::Retired;
            }
        }
    })
}

/// The shared tail: build the successor, check that everything it keeps
/// decryptable is decryptable per Transit, and report.
fn finish(
    state: &StateFile,
    meta: &KeyMetadata,
    mut reasons: Vec<String>,
    operation: Operation,
    edit: impl FnOnce(&mut StateFile),
) -> Result<VersionPlan, Vec<String>> {
    let next = match state.successor(edit) {
        Ok(next) => next,
        Err(e) => {
            reasons.push(format!("the next registry generation would be inconsistent: {e}"));
            return Err(reasons);
        }
    };
    reasons.extend(decryptability(&next, meta));
    if !reasons.is_empty() {
        return Err(reasons);
    }
    let changed = |from: SnapshotState, to: SnapshotState| -> Vec<u64> {
        let mut versions: Vec<u64> = next
            .snapshots
            .iter()
            .filter(|r| r.state == to)
            .filter(|r| {
                state
                    .snapshots
                    .iter()
                    .any(|o| o.transit_version == r.transit_version && o.state == from)
            })
            .map(|r| r.transit_version)
            .collect();
        versions.sort_unstable();
        versions
    };
    let (removed_versions, restored_versions) = match operation {
        Operation::Retire => (changed(SnapshotState::Retired, SnapshotState::Removed), Vec::new()),
        Operation::Restore => {
            let mut still_removed: Vec<u64> = next
                .snapshots
                .iter()
                .filter(|r| r.state == SnapshotState::Removed)
                .map(|r| r.transit_version)
                .collect();
            still_removed.sort_unstable();
            (still_removed, changed(SnapshotState::Removed, SnapshotState::Retired))
        }
    };
    Ok(VersionPlan {
        operation,
        removed_versions,
        restored_versions,
        next,
    })
}

/// Every version `next` can decrypt with must be decryptable per Transit:
/// self-consistent metadata, no rollback below a retained version, the
/// recorded creation second, and not excluded by `min_decryption_version`
/// or `min_available_version`.
fn decryptability(next: &StateFile, meta: &KeyMetadata) -> Vec<String> {
    let mut out: Vec<String> = next
        .verify_metadata(meta, true)
        .iter()
        .map(ToString::to_string)
        .collect();
    for v in next.retained_versions() {
        if v < meta.min_decryption_version {
            out.push(format!(
                "Transit min_decryption_version={} excludes version {v}, which stays decryptable in the registry",
                meta.min_decryption_version
            ));
        }
        if meta.min_available_version > 0 && v < meta.min_available_version {
            out.push(format!(
                "Transit min_available_version={} excludes version {v}, which stays decryptable in the registry",
                meta.min_available_version
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
