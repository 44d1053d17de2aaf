//! The gates of `bao-kms-preflight storage`: pure verdicts over a report.
//!
//! - `--require-key-id-hash H`: every encrypted object (any class but
//!   `identity`) is a KMS v2 envelope whose key_id hash is `H`: the
//!   rewrite after a rotation is done.
//! - `--forbid-version-below N`: every KMS v2 object of the registry's
//!   provider uses a key_id that the registry maps to Transit version N or
//!   later; a hash the registry does not know cannot be proven and fails.
//!   Objects of other providers and other classes never need a Transit
//!   version and are not judged here (the table shows them).

use super::{Class, Count, StorageReport};
use crate::checks::Check;
use crate::checks::catalogue::{STORAGE_KEY_ID_HASH, STORAGE_MIN_VERSION};

/// Objects listed by name in a failing message before "and N more".
const LISTED: usize = 5;

/// `resource: N <class> [name] [hash] [vN]` for a failing message.
fn describe(resource: &str, c: &Count) -> String {
    let mut s = format!("{resource}: {} {}", c.objects, c.encryption.as_str());
    if let Some(n) = &c.name {
        s.push_str(&format!(" {n}"));
    }
    if let Some(h) = &c.key_id_hash {
        s.push_str(&format!(" {h}"));
    }
    if let Some(v) = c.transit_version {
        s.push_str(&format!(" (v{v})"));
    }
    s
}

fn listing(items: &[String]) -> String {
    let mut out = items.iter().take(LISTED).cloned().collect::<Vec<_>>().join("; ");
    if items.len() > LISTED {
        out.push_str(&format!("; and {} more", items.len() - LISTED));
    }
    out
}

/// `--require-key-id-hash`.
pub fn require_key_id_hash(report: &StorageReport, want: &str) -> Check {
    let mut encrypted = 0u64;
    let mut off = 0u64;
    let mut items = Vec::new();
    for (resource, c) in report.counts() {
        if !c.encryption.encrypted() {
            continue;
        }
        encrypted += c.objects;
        if c.encryption == Class::KmsV2 && c.key_id_hash.as_deref() == Some(want) {
            continue;
        }
        off += c.objects;
        items.push(describe(resource, c));
    }
    if off == 0 {
        return STORAGE_KEY_ID_HASH.pass(format!("all {encrypted} encrypted objects use key_id hash {want}"));
    }
    STORAGE_KEY_ID_HASH.fail(format!(
            "{off} of {encrypted} encrypted objects do not use key_id hash {want}: {}",
            listing(&items)
        ), "once every kube-apiserver encrypts with the new key_id (cluster --phase after-rotation), rewrite these resources (bao-kms-preflight rewrite --encryption-config FILE), then run storage again".to_owned())
}

/// `--forbid-version-below`; `report.registry` must be set (the command
/// requires `--config`).
pub fn forbid_version_below(report: &StorageReport, min_version: u64) -> Check {
    let Some(registry) = &report.registry else {
        return STORAGE_MIN_VERSION.fail(
            "no key registry was read: key_ids do not encode a Transit version".to_owned(),
            "pass --config with the provider configuration whose registry maps key_id hashes to versions".to_owned(),
        );
    };
    let provider = registry.provider_name.as_str();
    let mut ours = 0u64;
    let mut items = Vec::new();
    let mut unknown = false;
    for (resource, c) in report.counts() {
        if c.name.as_deref() != Some(provider) || !matches!(c.encryption, Class::KmsV2 | Class::KmsV2Malformed) {
            continue;
        }
        ours += c.objects;
        match c.transit_version {
            Some(v) if v >= min_version => {}
            Some(_) => items.push(describe(resource, c)),
            None => {
                unknown = true;
                items.push(format!(
                    "{} (not in the registry: version unknown)",
                    describe(resource, c)
                ));
            }
        }
    }
    if items.is_empty() {
        return STORAGE_MIN_VERSION.pass(format!(
            "all {ours} kms-v2 objects of {provider} use Transit version {min_version} or later"
        ));
    }
    let fix = if unknown {
        "a key_id this registry does not know: check that --config is this cluster's provider configuration (and that the node has observed every version), or rewrite these objects"
    } else {
        "rewrite these resources (bao-kms-preflight rewrite --encryption-config FILE), then run storage again"
    };
    STORAGE_MIN_VERSION.fail(
        format!(
            "objects of {provider} below Transit version {min_version}: {}",
            listing(&items)
        ),
        fix.to_owned(),
    )
}
