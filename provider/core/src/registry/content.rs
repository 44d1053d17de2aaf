//! The registry content digest: what a node can decrypt and encrypts with,
//! independent of how it learned it.
//!
//! Two nodes that saw different observation sequences (one learned a
//! version through unknown-key_id discovery, another through its probe; two
//! rotations seconds apart) end on different generations and observation
//! counters, yet hold the same keys. The digest covers only that content:
//!
//! ```text
//! rcd1. + H( "active " + H(active key_id) + "\n"
//!            + for each record Decrypt may use (active, pending, retired),
//!              sorted by H(key_id):  H(key_id) + " " + state + "\n" )
//! ```
//!
//! Generation, hashes of the chain, observation counts and every timestamp
//! are left out: they legitimately differ per node. Removed records are
//! left out too (they no longer decrypt), so retiring a version changes the
//! digest.

use crate::hash::{h, sha256_b64url};

use super::{SnapshotState, StateFile};

/// Prefix of every content digest.
pub const CONTENT_DIGEST_PREFIX: &str = "rcd1.";

/// The digest of an active key_id hash and the `(key_id hash, state)` pairs
/// Decrypt may use. Order of `records` does not matter; records whose state
/// does not decrypt are ignored.
pub fn content_digest(active_key_id_hash: &str, records: &[(String, SnapshotState)]) -> String {
    let mut rows: Vec<(&str, SnapshotState)> = records
        .iter()
        .filter(|(_, s)| s.decrypts())
        .map(|(k, s)| (k.as_str(), *s))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(b.0).then(a.1.as_str().cmp(b.1.as_str())));
    rows.dedup();
    let mut text = format!("active {active_key_id_hash}\n");
    for (hash, state) in rows {
        text.push_str(hash);
        text.push(' ');
        text.push_str(state.as_str());
        text.push('\n');
    }
    format!("{CONTENT_DIGEST_PREFIX}{}", sha256_b64url(text.as_bytes()))
}

impl StateFile {
    /// The registry content digest (see the module documentation).
    pub fn content_digest(&self) -> String {
        let records: Vec<(String, SnapshotState)> = self
            .snapshots
            .iter()
            .map(|r| (h(&r.kubernetes_key_id), r.state))
            .collect();
        content_digest(&h(&self.active_key_id), &records)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    /// Known answers: the format is published (status, Lease, docs).
    #[test]
    fn known_answers() {
        // printf 'active A\nA active\n' | sha256sum, in base64url.
        assert_eq!(
            content_digest("A", &[(s("A"), SnapshotState::Active)]),
            "rcd1.rSI5wACgyC80XfhsF24hsEGluM2fPKi6BLg6WRI_tp8"
        );
        assert_eq!(
            content_digest(
                "B",
                &[
                    (s("B"), SnapshotState::Active),
                    (s("A"), SnapshotState::Retired),
                    (s("C"), SnapshotState::Pending),
                    (s("D"), SnapshotState::Removed),
                ]
            ),
            // printf 'active B\nA retired\nB active\nC pending\n' | sha256sum
            "rcd1.5Jluc_3RhBXW3IR3oYPHvYqiQFxk3rGnQpHgXU7oPEE"
        );
    }

    #[test]
    fn order_and_removed_records_do_not_matter_states_do() {
        let a = content_digest(
            "B",
            &[(s("A"), SnapshotState::Retired), (s("B"), SnapshotState::Active)],
        );
        let b = content_digest(
            "B",
            &[
                (s("B"), SnapshotState::Active),
                (s("Z"), SnapshotState::Removed),
                (s("A"), SnapshotState::Retired),
            ],
        );
        assert_eq!(a, b);
        let pending = content_digest(
            "B",
            &[(s("A"), SnapshotState::Pending), (s("B"), SnapshotState::Active)],
        );
        assert_ne!(a, pending);
        let other_active = content_digest(
            "A",
            &[(s("A"), SnapshotState::Retired), (s("B"), SnapshotState::Active)],
        );
        assert_ne!(a, other_active);
    }
}
