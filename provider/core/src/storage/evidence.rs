//! What a storage report proves to one node's provider
//! (`verify-rotation --storage-report`, `retire-versions --storage-report`).
//!
//! The provider maps the report's key_id hashes with its own registry (the
//! report's `registry` section may come from another node). The report is
//! complete evidence only when:
//! - it has the known schema and scanned the whole store prefix;
//! - every KMS v2 object of this provider uses a key_id that this registry
//!   can decrypt (active, pending or retired; not unknown, not removed),
//!   and no envelope of this provider is malformed;
//! - for a retire plan, no object uses a version the plan removes.

use std::collections::BTreeMap;

use super::{Class, REPORT_SCHEMA, StorageReport, registry_version};
use crate::registry::StateFile;

/// The conclusion, with every reason it is not complete.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evidence {
    /// Why the report is not complete evidence; empty when it is.
    pub findings: Vec<String>,
    /// KMS v2 objects of this provider per Transit version.
    pub objects_by_version: BTreeMap<u64, u64>,
    /// KMS v2 objects of this provider.
    pub objects: u64,
    /// Of those, under the active key_id.
    pub on_active: u64,
}

impl Evidence {
    pub fn complete(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Judges `report` against `state`; `retire_before` is the retire plan's
/// `--before-version` (versions below it must hold no object).
pub fn evaluate(report: &StorageReport, state: &StateFile, retire_before: Option<u64>) -> Evidence {
    let mut ev = Evidence::default();
    if report.schema_version != REPORT_SCHEMA {
        ev.findings.push(format!(
            "storage report schema {:?} is not {REPORT_SCHEMA}",
            report.schema_version
        ));
        return ev;
    }
    if !report.complete {
        ev.findings.push(format!(
            "the storage report covers only {} (scanned with --resource): run storage over the whole store",
            report.etcd.prefix
        ));
    }
    let provider = state.active().provider_name.as_str();
    let active_hash = crate::hash::h(&state.active_key_id);
    for (resource, c) in report.counts() {
        if c.name.as_deref() != Some(provider) {
            continue;
        }
        if c.encryption == Class::KmsV2Malformed {
            ev.findings.push(format!(
                "{resource}: {} objects of {provider} carry an envelope that does not decode",
                c.objects
            ));
            continue;
        }
        if c.encryption != Class::KmsV2 {
            continue;
        }
        ev.objects += c.objects;
        let hash = c.key_id_hash.as_deref().unwrap_or_default();
        if hash == active_hash {
            ev.on_active += c.objects;
        }
        match registry_version(state, hash) {
            None => ev.findings.push(format!(
                "{resource}: {} objects use key_id hash {hash}, which this registry does not know: this node cannot decrypt them",
                c.objects
            )),
            Some((version, "removed")) => ev.findings.push(format!(
                "{resource}: {} objects use key_id hash {hash} of removed version {version}: this node cannot decrypt them (restore-versions --versions {version})",
                c.objects
            )),
            Some((version, _)) => {
                *ev.objects_by_version.entry(version).or_default() += c.objects;
                if retire_before.is_some_and(|n| version < n) {
                    ev.findings.push(format!(
                        "{resource}: {} objects still use version {version} (key_id hash {hash}), which this plan removes: rewrite them (bao-kms-preflight rewrite), then take a new storage report",
                        c.objects
                    ));
                }
            }
        }
    }
    ev
}
