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

/// Objects listed by name in a failing message before "and N more".
const LISTED: usize = 5;

/// One gate's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub id: &'static str,
    pub title: &'static str,
    pub pass: bool,
    pub message: String,
    /// What to do when it fails (empty when it passes).
    pub fix: String,
}

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
pub fn require_key_id_hash(report: &StorageReport, want: &str) -> Verdict {
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
    let id = "storage.key_id_hash";
    let title = "Every encrypted object uses the required key_id hash";
    if off == 0 {
        return Verdict {
            id,
            title,
            pass: true,
            message: format!("all {encrypted} encrypted objects use key_id hash {want}"),
            fix: String::new(),
        };
    }
    Verdict {
        id,
        title,
        pass: false,
        message: format!(
            "{off} of {encrypted} encrypted objects do not use key_id hash {want}: {}",
            listing(&items)
        ),
        fix: "once every kube-apiserver encrypts with the new key_id (cluster --phase after-rotation), rewrite these resources (bao-kms-preflight rewrite --encryption-config FILE), then run storage again".to_owned(),
    }
}

/// `--forbid-version-below`; `report.registry` must be set (the command
/// requires `--config`).
pub fn forbid_version_below(report: &StorageReport, min_version: u64) -> Verdict {
    let id = "storage.min_version";
    let title = "No object needs a Transit version below the minimum";
    let Some(registry) = &report.registry else {
        return Verdict {
            id,
            title,
            pass: false,
            message: "no key registry was read: key_ids do not encode a Transit version".to_owned(),
            fix: "pass --config with the provider configuration whose registry maps key_id hashes to versions"
                .to_owned(),
        };
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
        return Verdict {
            id,
            title,
            pass: true,
            message: format!("all {ours} kms-v2 objects of {provider} use Transit version {min_version} or later"),
            fix: String::new(),
        };
    }
    let fix = if unknown {
        "a key_id this registry does not know: check that --config is this cluster's provider configuration (and that the node has observed every version), or rewrite these objects"
    } else {
        "rewrite these resources (bao-kms-preflight rewrite --encryption-config FILE), then run storage again"
    };
    Verdict {
        id,
        title,
        pass: false,
        message: format!(
            "objects of {provider} below Transit version {min_version}: {}",
            listing(&items)
        ),
        fix: fix.to_owned(),
    }
}
