//! The registry held against Transit's key metadata: every version the
//! registry retains must still be reported by Transit with the creation
//! second it recorded, and Transit's `latest_version` must not fall below
//! one of them. The rotation machine applies this to every observation
//! before deciding anything; `doctor` and the retire/restore plans apply it
//! with rollbacks always rejected.

use super::{SnapshotRecord, StateFile};
use crate::reason::{IDENTITY_DRIFT, METADATA_UNVERIFIED, Reason, VERSION_ROLLBACK};
use crate::transit::KeyMetadata;

impl StateFile {
    /// The checks of every rotation observation (and of `doctor`): the metadata
    /// is self-consistent, `latest_version` is not below a retained version
    /// (unless `reject_version_rollback` is false), and every retained version
    /// (active, pending, retired) is still reported with its creation second.
    pub fn verify_metadata(&self, meta: &KeyMetadata, reject_version_rollback: bool) -> Vec<Reason> {
        let mut problems = Vec::new();
        let latest = meta.latest_version;
        if let Some((&v, _)) = meta.versions.range(latest.saturating_add(1)..).next() {
            problems.push(Reason::new(
                METADATA_UNVERIFIED,
                format!("Transit metadata is inconsistent: version {v} is listed above latest_version={latest}"),
            ));
        }
        let retained: Vec<&SnapshotRecord> = self.snapshots.iter().filter(|r| r.state.decrypts()).collect();
        let newest = retained.iter().map(|r| r.transit_version).max().unwrap_or(0);
        let reject = reject_version_rollback;
        if latest < newest && reject {
            problems.push(Reason::new(
                VERSION_ROLLBACK,
                format!(
                    "Transit latest_version={latest} is below version {newest}, which the registry retains; the key was rolled back or replaced"
                ),
            ));
        }
        for r in retained {
            let v = r.transit_version;
            match meta.versions.get(&v) {
                None if reject && v > latest => {}
                None => problems.push(Reason::new(
                    METADATA_UNVERIFIED,
                    format!(
                        "Transit no longer reports version {v} ({}), which the registry references",
                        r.state.as_str()
                    ),
                )),
                Some(&created) if created != r.transit_version_created_at_unix => problems.push(Reason::new(
                    IDENTITY_DRIFT,
                    format!(
                        "Transit version {v} creation time changed from {} to {created} (key deleted and re-created, or metadata restored or imported)",
                        r.transit_version_created_at_unix
                    ),
                )),
                Some(_) => {}
            }
        }
        problems
    }

    /// Compares every retained version with live Transit metadata: each must
    /// still exist with the same creation second (identity drift otherwise),
    /// and `latest_version` must not be below a retained version. The rule
    /// the rotation machine applies to every observation
    /// ([`StateFile::verify_metadata`], rollbacks rejected), as
    /// `<code>: <detail>` lines.
    pub fn drift_against(&self, meta: &KeyMetadata) -> Vec<String> {
        self.verify_metadata(meta, true)
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}
