//! Evidence from etcd: what `bao-kms-preflight storage` found in the
//! objects kube-apiserver stores, and the rules that judge it
//! (docs/preflight.md, docs/rotation.md).
//!
//! - [`value`]: the prefix of one stored value (`k8s:enc:kms:v2:<name>:`,
//!   `aescbc`, `identity`, ...) and the resource of its key.
//! - [`Tally`] counts objects per resource by class, provider (or key) name
//!   and key_id hash as the scan goes; nothing of a value is kept but its
//!   prefix name and `H(key_id)`.
//! - [`StorageReport`] is the document `storage -o json` prints and the
//!   provider's `verify-rotation` / `retire-versions --storage-report FILE`
//!   read (schema [`REPORT_SCHEMA`]).
//! - [`map_registry`] puts Transit versions on the key_id hashes from a
//!   key registry (key_ids do not encode a version: the registry is the
//!   only map); [`gates`] holds `--require-key-id-hash` and
//!   `--forbid-version-below`; [`evidence`] is what the provider concludes
//!   from a report against its own registry.

pub mod evidence;
pub mod gates;
pub mod value;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use value::Class;

use crate::registry::StateFile;

/// Schema of [`StorageReport`].
pub const REPORT_SCHEMA: &str = "storagereport.openbao-kms/v1";

/// Where the objects were read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSource {
    pub endpoints: Vec<String>,
    /// Key prefix scanned (kube-apiserver's `--etcd-prefix` plus `/`, and a
    /// resource when the scan was narrowed).
    pub prefix: String,
    /// The etcd revision every page was read at: one consistent snapshot.
    pub revision: i64,
}

/// The registry the key_id hashes were mapped with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySource {
    pub state_path: String,
    pub provider_name: String,
    pub generation: u64,
    pub state_hash: String,
}

/// Objects of one resource with the same encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Count {
    pub encryption: Class,
    /// Provider name (KMS) or key name (aescbc, aesgcm, secretbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `H(key_id)` of a KMS v2 envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id_hash: Option<String>,
    /// From the registry, when one was given and knows the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transit_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_state: Option<String>,
    pub objects: u64,
}

/// Every object of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceCounts {
    pub resource: String,
    pub objects: u64,
    pub counts: Vec<Count>,
}

/// The report of one scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageReport {
    pub schema_version: String,
    pub generated_at_unix: i64,
    pub etcd: EtcdSource,
    /// True when the whole store prefix was scanned (no `--resource`): only
    /// then is the report evidence for the store.
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySource>,
    pub objects: u64,
    pub resources: Vec<ResourceCounts>,
}

/// The grouping key of a [`Count`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub class: Class,
    pub name: Option<String>,
    pub key_id_hash: Option<String>,
}

impl Entry {
    pub fn identity() -> Self {
        Self::of(Class::Identity, None, None)
    }

    pub fn of(class: Class, name: Option<&str>, key_id_hash: Option<String>) -> Self {
        Self {
            class,
            name: name.map(str::to_owned),
            key_id_hash,
        }
    }
}

/// Counts as the scan goes: memory grows with the number of distinct
/// (resource, entry) pairs, never with the number of objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    resources: BTreeMap<String, BTreeMap<Entry, u64>>,
    objects: u64,
}

impl Tally {
    pub fn add(&mut self, resource: &str, entry: Entry) {
        *self
            .resources
            .entry(resource.to_owned())
            .or_default()
            .entry(entry)
            .or_default() += 1;
        self.objects += 1;
    }

    pub fn objects(&self) -> u64 {
        self.objects
    }

    /// The report of this tally (resources by name, counts by class, name, hash).
    pub fn into_report(self, etcd: EtcdSource, complete: bool, generated_at_unix: i64) -> StorageReport {
        StorageReport {
            schema_version: REPORT_SCHEMA.to_owned(),
            generated_at_unix,
            etcd,
            complete,
            registry: None,
            objects: self.objects,
            resources: self
                .resources
                .into_iter()
                .map(|(resource, entries)| ResourceCounts {
                    resource,
                    objects: entries.values().sum(),
                    counts: entries
                        .into_iter()
                        .map(|(e, objects)| Count {
                            encryption: e.class,
                            name: e.name,
                            key_id_hash: e.key_id_hash,
                            transit_version: None,
                            registry_state: None,
                            objects,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl StorageReport {
    /// Every count with its resource.
    pub fn counts(&self) -> impl Iterator<Item = (&str, &Count)> {
        self.resources
            .iter()
            .flat_map(|r| r.counts.iter().map(move |c| (r.resource.as_str(), c)))
    }

    /// Objects per (provider name, key_id hash) over every resource.
    pub fn key_ids(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for (_, c) in self.counts() {
            if let (Class::KmsV2, Some(name), Some(hash)) = (c.encryption, &c.name, &c.key_id_hash) {
                *out.entry((name.clone(), hash.clone())).or_default() += c.objects;
            }
        }
        out
    }
}

/// The registry record a KMS v2 count of `provider_name` refers to, by
/// key_id hash: `(version, state)`.
pub fn registry_version(state: &StateFile, key_id_hash: &str) -> Option<(u64, &'static str)> {
    state
        .snapshots
        .iter()
        .find(|r| crate::hash::h(&r.kubernetes_key_id) == key_id_hash)
        .map(|r| (r.transit_version, r.state.as_str()))
}

/// Puts the Transit version and registry state on every KMS v2 count of
/// the registry's provider whose key_id hash the registry knows. Key_ids
/// are one-way hashes of (identity, version, creation second): the
/// registry is the only map from a key_id to a Transit version.
pub fn map_registry(report: &mut StorageReport, state: &StateFile, state_path: &str) {
    let provider = state.active().provider_name.clone();
    for r in &mut report.resources {
        for c in &mut r.counts {
            if c.encryption != Class::KmsV2 || c.name.as_deref() != Some(provider.as_str()) {
                continue;
            }
            if let Some((version, st)) = c.key_id_hash.as_deref().and_then(|h| registry_version(state, h)) {
                c.transit_version = Some(version);
                c.registry_state = Some(st.to_owned());
            }
        }
    }
    report.registry = Some(RegistrySource {
        state_path: state_path.to_owned(),
        provider_name: provider,
        generation: state.generation,
        state_hash: state.current_hash.clone(),
    });
}

#[cfg(test)]
pub(crate) mod tests;
