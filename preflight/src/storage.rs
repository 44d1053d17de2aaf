//! `bao-kms-preflight storage`: how every object kube-apiserver stored in
//! etcd is encrypted, counted per resource by provider name and key_id
//! hash, with optional gates (docs/preflight.md).
//!
//! Flow: [`crate::etcd`] pages through the store prefix at one revision ->
//! each value's prefix ([`bao_kms_core::storage::value`]) and, for KMS v2,
//! its `EncryptedObject` key_id, kept only as `H(key_id)` -> the core
//! [`Tally`] -> with `--config`, Transit versions from the provider's
//! registry (read-only) -> gates -> table, JSON or YAML. No value, key or
//! key_id is printed or kept; the report holds counts, names from the
//! prefixes and hashes.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use bao_kms_core::config::ValidationContext;
use bao_kms_core::hash::h;
use bao_kms_core::registry::StateFile;
use bao_kms_core::storage::gates;
use bao_kms_core::storage::value::{self, Prefix};
use bao_kms_core::storage::{Class, Entry, EtcdSource, StorageReport, Tally, map_registry};
use bao_kms_proto::v2::EncryptedObject;
use prost::Message as _;
use serde::Serialize;

use crate::collect;
use crate::etcd::{self, EtcdOptions, Scanner};
use crate::report::{Check, OutputFormat, Report, align, to_json, to_yaml};

/// What `storage` reads and judges, from the command line.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    pub etcd: EtcdOptions,
    /// kube-apiserver's `--etcd-prefix` (default `/registry`).
    pub etcd_prefix: String,
    /// Narrow the scan to one resource directory (then the report is not
    /// evidence for the whole store).
    pub resource: Option<String>,
    pub page_size: u32,
    /// Provider configuration: its registry maps key_id hashes to versions.
    pub config: Option<PathBuf>,
    /// Extra directory the configured socket may live in (as `node`).
    pub allowed_socket_dir: Option<PathBuf>,
    pub require_key_id_hash: Option<String>,
    pub forbid_version_below: Option<u64>,
    /// Progress on stderr even when it is not a terminal.
    pub progress: bool,
}

/// What `storage` prints: the report and its gate checks.
#[derive(Debug, Clone, Serialize)]
pub struct StorageOutput {
    #[serde(flatten)]
    pub report: StorageReport,
    pub checks: Vec<Check>,
}

impl StorageOutput {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == crate::report::CheckStatus::Fail)
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Table => self.to_table(),
            OutputFormat::Json => to_json(self),
            OutputFormat::Yaml => to_yaml(self),
        }
    }

    /// `RESOURCE ENCRYPTION NAME KEY_ID_HASH VERSION OBJECTS`, a summary,
    /// then the gate checks (if any) as the other commands print them.
    pub fn to_table(&self) -> String {
        let r = &self.report;
        let dash = || "-".to_owned();
        let mut rows = vec![
            ["RESOURCE", "ENCRYPTION", "NAME", "KEY_ID_HASH", "VERSION", "OBJECTS"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        ];
        for (resource, c) in r.counts() {
            rows.push(vec![
                resource.to_owned(),
                c.encryption.as_str().to_owned(),
                c.name.clone().unwrap_or_else(dash),
                c.key_id_hash.clone().unwrap_or_else(dash),
                c.transit_version.map_or_else(dash, |v| v.to_string()),
                c.objects.to_string(),
            ]);
        }
        let mut out = align(&rows);
        let mut by_class = std::collections::BTreeMap::<Class, u64>::new();
        for (_, c) in r.counts() {
            *by_class.entry(c.encryption).or_default() += c.objects;
        }
        let classes: Vec<String> = by_class.iter().map(|(c, n)| format!("{} {n}", c.as_str())).collect();
        out.push_str(&format!(
            "\n{} objects in {} resources under {} at etcd revision {}{}{}\n",
            r.objects,
            r.resources.len(),
            r.etcd.prefix,
            r.etcd.revision,
            if classes.is_empty() {
                String::new()
            } else {
                format!(": {}", classes.join(", "))
            },
            if r.complete {
                ""
            } else {
                " (one resource only: not evidence for the whole store)"
            },
        ));
        if let Some(reg) = &r.registry {
            out.push_str(&format!(
                "versions from the registry {} (generation {}, provider {})\n",
                reg.state_path, reg.generation, reg.provider_name
            ));
        }
        if !self.checks.is_empty() {
            let report = Report {
                name: "storage".to_owned(),
                checks: self.checks.clone(),
            };
            out.push('\n');
            out.push_str(&report.to_table());
        }
        out
    }
}

/// Why `storage` could not produce a report (exit 5).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Etcd(#[from] etcd::EtcdError),
    #[error("{0}")]
    Registry(String),
}

/// The class, name and key_id hash of one stored value.
pub fn classify(stored: &[u8]) -> Entry {
    match value::parse(stored) {
        Prefix::KmsV2 { provider, envelope } => match EncryptedObject::decode(envelope) {
            Ok(obj) if !obj.key_id.is_empty() => Entry::of(Class::KmsV2, Some(provider), Some(h(&obj.key_id))),
            _ => Entry::of(Class::KmsV2Malformed, Some(provider), None),
        },
        Prefix::Other { class, name } => Entry::of(class, Some(name), None),
        Prefix::Identity => Entry::identity(),
        Prefix::Unknown => Entry::of(Class::Unknown, None, None),
    }
}

/// The provider's registry, read without the writer lock, checked against
/// the configuration's identity.
fn load_registry(opts: &StorageOptions, config: &std::path::Path) -> Result<(StateFile, String), StorageError> {
    let text = collect::read_text(config).map_err(StorageError::Registry)?;
    let ctx = ValidationContext {
        extra_socket_dirs: opts.allowed_socket_dir.iter().cloned().collect(),
        ..ValidationContext::default()
    };
    let cfg = bao_kms_core::config::parse_yaml_with(&text, &ctx)
        .map_err(|e| StorageError::Registry(format!("--config {}: {e}", config.display())))?;
    let path = cfg.state.path.clone();
    let bytes = std::fs::read(&path)
        .map_err(|e| StorageError::Registry(format!("cannot read the key registry {}: {e}", path.display())))?;
    let state = StateFile::decode(&bytes)
        .map_err(|e| StorageError::Registry(format!("key registry {}: {e}", path.display())))?;
    state
        .check_scope(&cfg.identity_scope())
        .map_err(|e| StorageError::Registry(format!("key registry {}: {e}", path.display())))?;
    Ok((state, path.display().to_string()))
}

/// Progress on stderr: rewritten in place on a terminal, one line per page
/// otherwise (only with `--progress`).
struct Progress {
    enabled: bool,
    tty: bool,
    total: Option<i64>,
}

impl Progress {
    fn new(forced: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            enabled: forced || tty,
            tty,
            total: None,
        }
    }

    fn show(&self, scanned: u64) {
        if !self.enabled {
            return;
        }
        let total = self.total.map(|t| format!("/{t}")).unwrap_or_default();
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\rstorage: scanned {scanned}{total} objects")
        } else {
            writeln!(err, "storage: scanned {scanned}{total} objects")
        };
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.enabled && self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// Scans, maps, judges.
pub async fn run(opts: &StorageOptions, now_unix: i64) -> Result<StorageOutput, StorageError> {
    // Read the registry first: a wrong --config fails before any etcd read.
    let registry = match &opts.config {
        Some(path) => Some(load_registry(opts, path)?),
        None => None,
    };
    let base = format!("{}/", opts.etcd_prefix.trim_end_matches('/'));
    let prefix = match &opts.resource {
        Some(r) => format!("{base}{}/", r.trim_matches('/')),
        None => base.clone(),
    };
    let (client, endpoint) = etcd::connect(&opts.etcd).await?;
    let mut scanner = Scanner::new(client, endpoint, prefix.as_bytes(), opts.page_size);
    let mut tally = Tally::default();
    let mut progress = Progress::new(opts.progress);
    let mut first = true;
    while let Some(page) = scanner.next_page().await? {
        let read = page.len() as u64;
        for kv in page {
            tally.add(&value::resource_of(&kv.key, base.as_bytes()), classify(&kv.value));
        }
        if first && progress.enabled {
            first = false;
            progress.total = Some(scanner.count().await? + read as i64);
        }
        progress.show(tally.objects());
    }
    progress.finish();
    let source = EtcdSource {
        endpoints: opts.etcd.endpoints.clone(),
        prefix,
        revision: scanner.revision(),
    };
    let mut report = tally.into_report(source, opts.resource.is_none(), now_unix);
    if let Some((state, path)) = &registry {
        map_registry(&mut report, state, path);
    }
    let mut checks = Vec::new();
    if let Some(want) = &opts.require_key_id_hash {
        checks.push(gates::require_key_id_hash(&report, want));
    }
    if let Some(n) = opts.forbid_version_below {
        checks.push(gates::forbid_version_below(&report, n));
    }
    Ok(StorageOutput { report, checks })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_classified_by_their_key_id_hash_only() {
        let obj = EncryptedObject {
            encrypted_data: vec![1, 2, 3],
            key_id: "obk2.test".into(),
            encrypted_dek_source: b"vault:v1:abc".to_vec(),
            annotations: Default::default(),
            encrypted_dek_source_type: 1,
        };
        let value = [b"k8s:enc:kms:v2:p:".to_vec(), obj.encode_to_vec()].concat();
        assert_eq!(
            classify(&value),
            Entry::of(Class::KmsV2, Some("p"), Some(h("obk2.test")))
        );
        assert_eq!(
            classify(b"k8s:enc:kms:v2:p:\xff\xff"),
            Entry::of(Class::KmsV2Malformed, Some("p"), None)
        );
        // An envelope without a key_id is not proven to use any key.
        let empty = [
            b"k8s:enc:kms:v2:p:".to_vec(),
            EncryptedObject::default().encode_to_vec(),
        ]
        .concat();
        assert_eq!(classify(&empty).class, Class::KmsV2Malformed);
        assert_eq!(
            classify(b"k8s:enc:aescbc:v1:k1:xyz"),
            Entry::of(Class::Aescbc, Some("k1"), None)
        );
        assert_eq!(classify(b"k8s\x00\x0a"), Entry::identity());
        assert_eq!(classify(b"garbage").class, Class::Unknown);
    }
}
