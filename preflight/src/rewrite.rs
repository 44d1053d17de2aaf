//! `bao-kms-preflight rewrite`: re-encrypt, through the Kubernetes API,
//! every object of the resources an EncryptionConfiguration encrypts
//! (docs/preflight.md, docs/rotation.md).
//!
//! For each resource: list a page (`limit` + `continue`), then replace each
//! object unchanged, carrying the `resourceVersion` it was read at.
//! kube-apiserver reads the stored value, sees it was encrypted with a key
//! that is not its current write key (a stale transformer), and writes the
//! object again with the current one: the documented
//! `kubectl get secrets -A -o json | kubectl replace -f -`, one object at a
//! time, with a rate limit.
//!
//! A conflict (someone updated the object since it was listed) is retried
//! by reading the object again and replacing that: never forced (the
//! request always carries a resourceVersion), at most
//! [`MAX_CONFLICT_RETRIES`] times, then the object is reported failed. An
//! object deleted in between is counted `gone`. After each page the
//! continue token is printed on stderr, so an interrupted run resumes with
//! `--resource R --continue TOKEN` (replaying part of a page is harmless:
//! each replace is a no-op for the object).

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use bao_kms_core::encryption_config::{self, EncryptionConfiguration};
use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::{self, ApiCapabilities, ApiResource, verbs};
use serde::Serialize;

use crate::collect;
use crate::kube_api::KubeApi;
use crate::report::{OutputFormat, align, to_json, to_yaml};

/// Reads and replaces of one object before it is reported failed.
pub const MAX_CONFLICT_RETRIES: u32 = 5;
/// Failures listed per resource in the summary.
pub const LISTED_FAILURES: usize = 20;
/// The field manager of every replace.
pub const FIELD_MANAGER: &str = "bao-kms-preflight";

/// What `rewrite` does, from the command line.
#[derive(Debug, Clone)]
pub struct RewriteOptions {
    pub encryption_config: PathBuf,
    /// Only these resources (each must be encrypted by the configuration).
    pub resources: Vec<String>,
    pub dry_run: bool,
    /// Replaces per second.
    pub rate: u32,
    pub page_size: u32,
    /// Resume the (single) resource from this continue token.
    pub continue_token: Option<String>,
    pub progress: bool,
}

/// One object that could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    pub error: String,
}

/// What happened to one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSummary {
    pub resource: String,
    /// `group/version` (`v1` for the core group).
    pub api_version: String,
    pub listed: u64,
    pub rewritten: u64,
    pub gone: u64,
    pub conflicts_retried: u64,
    pub failed: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
    /// Set when the run stopped in this resource: resume from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_continue: Option<String>,
}

/// A resource of the configuration not rewritten, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub resource: String,
    pub reason: String,
}

/// The summary `rewrite` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RewriteSummary {
    pub name: String,
    pub dry_run: bool,
    pub resources: Vec<ResourceSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// Why the run stopped before the end (exit 5), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RewriteSummary {
    pub fn failed(&self) -> bool {
        self.resources.iter().any(|r| r.failed > 0)
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Table => self.to_table(),
            OutputFormat::Json => to_json(self),
            OutputFormat::Yaml => to_yaml(self),
        }
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![
            ["RESOURCE", "API", "LISTED", "REWRITTEN", "GONE", "CONFLICTS", "FAILED"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        ];
        for r in &self.resources {
            rows.push(vec![
                r.resource.clone(),
                r.api_version.clone(),
                r.listed.to_string(),
                r.rewritten.to_string(),
                r.gone.to_string(),
                r.conflicts_retried.to_string(),
                r.failed.to_string(),
            ]);
        }
        let mut out = align(&rows);
        for r in &self.resources {
            for f in &r.failures {
                let ns = if f.namespace.is_empty() {
                    String::new()
                } else {
                    format!("{}/", f.namespace)
                };
                out.push_str(&format!("failed: {} {ns}{}: {}\n", r.resource, f.name, f.error));
            }
            if let Some(token) = &r.resume_continue {
                out.push_str(&format!(
                    "resume: bao-kms-preflight rewrite ... --resource {} --continue {token}\n",
                    r.resource
                ));
            }
        }
        for s in &self.skipped {
            out.push_str(&format!("skipped: {}: {}\n", s.resource, s.reason));
        }
        let listed: u64 = self.resources.iter().map(|r| r.listed).sum();
        let rewritten: u64 = self.resources.iter().map(|r| r.rewritten).sum();
        let failed: u64 = self.resources.iter().map(|r| r.failed).sum();
        out.push_str(&if self.dry_run {
            format!(
                "\nrewrite (dry run): {listed} objects in {} resources would be rewritten; nothing was written\n",
                self.resources.len()
            )
        } else {
            format!(
                "\nrewrite: {rewritten}/{listed} objects rewritten in {} resources, {failed} failed\n",
                self.resources.len()
            )
        });
        if let Some(e) = &self.error {
            out.push_str(&format!("stopped: {e}\n"));
        }
        out
    }
}

/// Why `rewrite` could not start (exit 5, or 2 for a usage problem).
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Setup(String),
}

/// The resources `cfg` encrypts: each resource named in an entry whose
/// first (write) provider is not `identity` and that serves it (the first
/// entry naming a resource wins, as in kube-apiserver). Wildcards
/// (`*.*`, `*.group`) are returned apart: they name no resource to list.
pub fn encrypted_resources(cfg: &EncryptionConfiguration) -> (Vec<String>, Vec<String>) {
    let mut exact = Vec::new();
    let mut wildcards = Vec::new();
    for (i, entry) in cfg.resources.iter().enumerate() {
        let writes = entry.providers.first().is_some_and(|p| p.identity.is_none());
        for r in &entry.resources {
            if r.starts_with('*') {
                if writes && !wildcards.contains(r) {
                    wildcards.push(r.clone());
                }
                continue;
            }
            if writes && encryption_config::serving_entry(cfg, r) == Some(i) && !exact.contains(r) {
                exact.push(r.clone());
            }
        }
    }
    (exact, wildcards)
}

/// The resources to rewrite: the configuration's, narrowed by
/// `--resource` (each of which must be encrypted by the entry that serves
/// it, as kube-apiserver picks it: exact name, then `*.group`, then `*.*`).
pub fn plan(cfg: &EncryptionConfiguration, only: &[String]) -> Result<(Vec<String>, Vec<Skipped>), RewriteError> {
    let (exact, wildcards) = encrypted_resources(cfg);
    if only.is_empty() {
        let skipped = wildcards
            .into_iter()
            .map(|w| Skipped {
                resource: w,
                reason: "a wildcard names no resource to list: pass --resource <plural>[.<group>] for each resource it covers".to_owned(),
            })
            .collect();
        return Ok((exact, skipped));
    }
    for r in only {
        let writes = encryption_config::serving_entry(cfg, r)
            .and_then(|i| cfg.resources[i].providers.first())
            .is_some_and(|p| p.identity.is_none());
        if !writes {
            return Err(RewriteError::Usage(format!(
                "--resource {r}: the EncryptionConfiguration does not encrypt it (encrypted: {})",
                [exact.clone(), wildcards.clone()].concat().join(", ")
            )));
        }
    }
    Ok((only.to_vec(), Vec::new()))
}

/// `plural` or `plural.group` -> the API resource, through discovery.
async fn resolve(api: &KubeApi, resource: &str) -> Result<(ApiResource, ApiCapabilities), String> {
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let g = discovery::group(&api.client, group)
        .await
        .map_err(|e| api.error(&format!("API discovery of group {group:?}"), &e).with_fix())?;
    g.recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.plural == plural)
        .ok_or_else(|| format!("the API server serves no resource {plural} in group {group:?}"))
}

/// Why one replace failed.
enum Replace {
    Done { conflicts: u64 },
    Gone { conflicts: u64 },
    Failed { conflicts: u64, error: String },
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Replaces `obj` unchanged; on a conflict reads it again and retries.
/// A transport error is returned as `Err` (the run stops, resumable).
async fn replace_unchanged(api: &Api<DynamicObject>, mut obj: DynamicObject) -> Result<Replace, String> {
    let name = obj.name_any();
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let mut conflicts = 0;
    loop {
        match api.replace(&name, &pp, &obj).await {
            Ok(_) => return Ok(Replace::Done { conflicts }),
            Err(e) if api_code(&e) == Some(404) => return Ok(Replace::Gone { conflicts }),
            Err(e) if api_code(&e) == Some(409) => {
                conflicts += 1;
                if conflicts > u64::from(MAX_CONFLICT_RETRIES) {
                    return Ok(Replace::Failed {
                        conflicts,
                        error: format!("still conflicting after {MAX_CONFLICT_RETRIES} re-reads: {e}"),
                    });
                }
                match api.get_opt(&name).await {
                    Ok(Some(fresh)) => obj = fresh,
                    Ok(None) => return Ok(Replace::Gone { conflicts }),
                    Err(e) if api_code(&e).is_some() => {
                        return Ok(Replace::Failed {
                            conflicts,
                            error: format!("re-reading after a conflict: {e}"),
                        });
                    }
                    Err(e) => return Err(format!("re-reading {name}: {}", collect::error_chain(&e))),
                }
            }
            Err(e) if api_code(&e).is_some() => {
                return Ok(Replace::Failed {
                    conflicts,
                    error: e.to_string(),
                });
            }
            Err(e) => return Err(format!("replacing {name}: {}", collect::error_chain(&e))),
        }
    }
}

fn progress_line(enabled: bool, text: &str) {
    if enabled {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
        let _ = err.flush();
    }
}

/// Lists and rewrites one resource into `s`; `Err` stops the run.
async fn rewrite_resource(
    api: &KubeApi,
    ar: &ApiResource,
    opts: &RewriteOptions,
    s: &mut ResourceSummary,
    tick: &mut tokio::time::Interval,
    progress: bool,
) -> Result<(), String> {
    let client = &api.client;
    let all: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let mut token = opts.continue_token.clone();
    loop {
        let mut lp = ListParams::default().limit(opts.page_size);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = match all.list(&lp).await {
            Ok(p) => p,
            Err(e) => {
                s.resume_continue = token.clone();
                return Err(match api_code(&e) {
                    Some(410) => format!(
                        "listing {}: the continue token expired ({e}): run the resource again without --continue (replacing again is harmless)",
                        s.resource
                    ),
                    _ => api.error(&format!("listing {}", s.resource), &e).with_fix(),
                });
            }
        };
        let next = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        for obj in page.items {
            s.listed += 1;
            if opts.dry_run {
                continue;
            }
            tick.tick().await;
            let namespace = obj.namespace().unwrap_or_default();
            let name = obj.name_any();
            let api: Api<DynamicObject> = if namespace.is_empty() {
                Api::all_with(client.clone(), ar)
            } else {
                Api::namespaced_with(client.clone(), &namespace, ar)
            };
            match replace_unchanged(&api, obj).await {
                Ok(Replace::Done { conflicts }) => {
                    s.rewritten += 1;
                    s.conflicts_retried += conflicts;
                }
                Ok(Replace::Gone { conflicts }) => {
                    s.gone += 1;
                    s.conflicts_retried += conflicts;
                }
                Ok(Replace::Failed { conflicts, error }) => {
                    s.failed += 1;
                    s.conflicts_retried += conflicts;
                    if s.failures.len() < LISTED_FAILURES {
                        s.failures.push(Failure { namespace, name, error });
                    }
                }
                Err(e) => {
                    // Resume from this page: its replaces are no-ops.
                    s.resume_continue = token.clone();
                    return Err(e);
                }
            }
        }
        match next {
            Some(t) => {
                progress_line(
                    progress,
                    &format!(
                        "rewrite: {}: {} listed, {} rewritten; resume with --resource {} --continue {t}",
                        s.resource, s.listed, s.rewritten, s.resource
                    ),
                );
                token = Some(t);
            }
            None => {
                progress_line(
                    progress,
                    &format!(
                        "rewrite: {}: done, {} listed, {} rewritten",
                        s.resource, s.listed, s.rewritten
                    ),
                );
                return Ok(());
            }
        }
    }
}

/// Reads the configuration, resolves the resources, rewrites them in order.
pub async fn run(api: &KubeApi, opts: &RewriteOptions) -> Result<RewriteSummary, RewriteError> {
    let text = collect::read_text(&opts.encryption_config).map_err(RewriteError::Setup)?;
    let cfg = encryption_config::decode(&text).map_err(|f| {
        RewriteError::Setup(format!(
            "--encryption-config {}: {}",
            opts.encryption_config.display(),
            f.message
        ))
    })?;
    let (resources, skipped) = plan(&cfg, &opts.resources)?;
    if opts.continue_token.is_some() && resources.len() != 1 {
        return Err(RewriteError::Usage(
            "--continue resumes one resource: pass exactly one --resource with it".to_owned(),
        ));
    }
    let progress = opts.progress || std::io::stderr().is_terminal();
    let period = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut summary = RewriteSummary {
        name: "rewrite".to_owned(),
        dry_run: opts.dry_run,
        skipped,
        ..RewriteSummary::default()
    };
    let mut resolved = BTreeMap::new();
    for r in &resources {
        let (ar, caps) = resolve(api, r).await.map_err(RewriteError::Setup)?;
        if !caps.supports_operation(verbs::LIST) || !caps.supports_operation(verbs::UPDATE) {
            return Err(RewriteError::Setup(format!(
                "{r}: the API server does not offer list and update on it"
            )));
        }
        resolved.insert(r.clone(), ar);
    }
    for r in &resources {
        let ar = &resolved[r];
        let mut s = ResourceSummary {
            resource: r.clone(),
            api_version: ar.api_version.clone(),
            ..ResourceSummary::default()
        };
        let outcome = rewrite_resource(api, ar, opts, &mut s, &mut tick, progress).await;
        summary.resources.push(s);
        if let Err(e) = outcome {
            summary.error = Some(e);
            break;
        }
    }
    Ok(summary)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> EncryptionConfiguration {
        encryption_config::decode(text).unwrap()
    }

    const CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets, configmaps]\n    providers:\n      - kms: {apiVersion: v2, name: p, endpoint: unix:///run/openbao-kms/kms.sock}\n      - identity: {}\n  - resources: [events]\n    providers:\n      - identity: {}\n  - resources: ['*.apps']\n    providers:\n      - kms: {apiVersion: v2, name: p, endpoint: unix:///run/openbao-kms/kms.sock}\n  - resources: [secrets]\n    providers:\n      - aescbc: {keys: [{name: k, secret: c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=}]}\n";

    #[test]
    fn resources_the_configuration_encrypts() {
        let c = cfg(CONFIG);
        let (exact, wild) = encrypted_resources(&c);
        assert_eq!(exact, ["secrets", "configmaps"]);
        assert_eq!(wild, ["*.apps"]);
        let (all, skipped) = plan(&c, &[]).unwrap();
        assert_eq!(all, ["secrets", "configmaps"]);
        assert_eq!(skipped[0].resource, "*.apps");
        let (one, _) = plan(&c, &["deployments.apps".into()]).unwrap();
        assert_eq!(one, ["deployments.apps"]);
        let err = plan(&c, &["events".into()]).unwrap_err().to_string();
        assert!(err.contains("does not encrypt it"), "{err}");
        assert!(plan(&c, &["pods".into()]).is_err());
    }
}
