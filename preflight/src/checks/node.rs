//! Node checks. The verdicts on files, the socket, the
//! EncryptionConfiguration and the local provider's answers are the core
//! check catalogue's ([`bao_kms_core::checks::node`], shared with the
//! provider's `doctor`); the static pod manifest checks live here because
//! they judge Kubernetes Pod objects.

use std::path::{Component, Path, PathBuf};

use bao_kms_core::checks::catalogue::{
    CONFIG_VALIDATE, MANIFEST_GROUPS, MANIFEST_IMAGE, MANIFEST_MOUNTS, MANIFEST_PARSE, MANIFEST_SECURITY, SOCKET_GROUP,
};
use bao_kms_core::config::Config;
use k8s_openapi::api::core::v1::{Container, Pod};

pub use bao_kms_core::checks::node::*;

use crate::report::Check;

/// Name of the provider container in the static pod.
pub const PROVIDER_CONTAINER: &str = "bao-kms-provider";

// ---------------------------------------------------------------------------
// Static pod manifest

/// What the manifest checks found, for the agent's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestFacts {
    /// The provider container's image reference.
    pub image: Option<String>,
    /// `sha256:<hex>` when the image is pinned.
    pub digest: Option<String>,
}

pub use bao_kms_core::init::is_digest;

/// The digest an image reference is pinned by (`repo@sha256:...`).
pub fn image_digest(image: &str) -> Option<&str> {
    image.rsplit_once('@').map(|(_, d)| d).filter(|d| is_digest(d))
}

fn provider_container(pod: &Pod) -> Option<&Container> {
    let containers = &pod.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == PROVIDER_CONTAINER)
        .or_else(|| {
            containers
                .iter()
                .find(|c| c.image.as_deref().is_some_and(|i| i.contains(PROVIDER_CONTAINER)))
        })
        .or_else(|| containers.first())
}

/// The `--config` value in the container's command and args.
fn container_config_arg(c: &Container) -> Option<String> {
    let words: Vec<&String> = c.command.iter().flatten().chain(c.args.iter().flatten()).collect();
    for (k, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix("--config=") {
            return Some(v.to_owned());
        }
        if w.as_str() == "--config" {
            return words.get(k + 1).map(|s| (*s).clone());
        }
    }
    None
}

/// True when `prefix` is `path` or one of its ancestors (component-wise).
fn covers(prefix: &Path, path: &Path) -> bool {
    path.starts_with(prefix)
}

fn normalize(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// One path the provider needs inside its container.
struct Need {
    what: &'static str,
    path: PathBuf,
    writable: bool,
}

fn needs(cfg: &Config, config_path: &Path) -> Vec<Need> {
    use bao_kms_core::config::{AuthMethod, CertSource, JwtSource};
    let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let mut out = vec![
        Need {
            what: "socket directory",
            path: parent(&cfg.server.socket_path),
            writable: true,
        },
        Need {
            what: "configuration file",
            path: config_path.to_path_buf(),
            writable: false,
        },
        Need {
            what: "state directory",
            path: parent(&cfg.state.path),
            writable: true,
        },
        Need {
            what: "OpenBao CA bundle",
            path: cfg.openbao.ca_cert_file.clone(),
            writable: false,
        },
    ];
    let mut cred = |what: &'static str, p: &Path| {
        out.push(Need {
            what,
            path: p.to_path_buf(),
            writable: false,
        })
    };
    match &cfg.auth.method {
        AuthMethod::Jwt(j) => match &j.source {
            JwtSource::File { jwt_file } => cred("JWT file", jwt_file),
            JwtSource::OAuth2(o) => {
                cred("OAuth2 client secret file", &o.client_secret_file);
                if let Some(ca) = &o.ca_cert_file {
                    cred("OAuth2 token endpoint CA file", ca);
                }
            }
        },
        AuthMethod::Token(t) => cred("token file", &t.token_file),
        AuthMethod::AppRole(a) => {
            cred("AppRole role ID file", &a.role_id_file);
            cred("AppRole secret ID file", &a.secret_id_file);
        }
        AuthMethod::Cert(c) => match &c.source {
            CertSource::File {
                certificate_file,
                key_file,
            } => {
                cred("client certificate", certificate_file);
                cred("client key", key_file);
            }
            CertSource::Pkcs11(p) => {
                cred("client certificate", &p.certificate_file);
                cred("PKCS#11 module", &p.module_path);
                cred("PKCS#11 PIN file", &p.pin_file);
            }
        },
    }
    out
}

/// The manifest checks: parse, image pin, supplementalGroups, hostPath
/// mounts, security context. `gid` is the resolved socket GID (`None` when
/// it could not be resolved); `cfg` the valid configuration, if any.
pub fn manifest(
    path: &Path,
    text: Result<&str, &str>,
    cfg: Option<&Config>,
    config_path: &Path,
    gid: Option<u32>,
    expected_digest: Option<&str>,
) -> (Vec<Check>, ManifestFacts) {
    let shown = path.display();
    let mut facts = ManifestFacts::default();
    let skip_rest = |dep: &bao_kms_core::checks::Def| {
        vec![
            MANIFEST_IMAGE.skipped_after(dep),
            MANIFEST_GROUPS.skipped_after(dep),
            MANIFEST_MOUNTS.skipped_after(dep),
            MANIFEST_SECURITY.skipped_after(dep),
        ]
    };
    let parsed = text
        .map_err(str::to_owned)
        .and_then(|t| serde_yaml_ng::from_str::<Pod>(t).map_err(|e| format!("{shown} is not a v1 Pod: {e}")));
    let pod = match parsed {
        Ok(pod) => pod,
        Err(e) => {
            let mut out = vec![MANIFEST_PARSE.fail(
                e,
                "pass the provider's static pod manifest (e.g. /etc/kubernetes/manifests/bao-kms-provider.yaml)",
            )];
            out.extend(skip_rest(&MANIFEST_PARSE));
            return (out, facts);
        }
    };
    let Some(container) = provider_container(&pod) else {
        let mut out = vec![MANIFEST_PARSE.fail(
            format!("{shown} has no containers"),
            "add the bao-kms-provider container",
        )];
        out.extend(skip_rest(&MANIFEST_PARSE));
        return (out, facts);
    };
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let mut out = vec![MANIFEST_PARSE.pass(format!("pod {pod_name}, container {}", container.name))];
    // Already checked: a Pod always has a spec here.
    let spec = pod.spec.clone().unwrap_or_default();

    // Image pin.
    let image = container.image.clone().unwrap_or_default();
    facts.image = (!image.is_empty()).then(|| image.clone());
    facts.digest = image_digest(&image).map(str::to_owned);
    out.push(match (&facts.digest, expected_digest) {
        (None, _) => MANIFEST_IMAGE.fail(
            format!("image {image:?} is not pinned by @sha256: digest"),
            "use image: <repository>@sha256:<digest> (bao-kms-provider init --image), preloaded on the node",
        ),
        (Some(d), Some(want)) if d != want => MANIFEST_IMAGE.fail(
            format!("image digest {d} differs from the expected {want}"),
            "roll the static pod manifest to the release's digest, or pass the right --expected-digest",
        ),
        (Some(d), Some(_)) => MANIFEST_IMAGE.pass(format!("{image} (expected digest {d})")),
        (Some(_), None) => MANIFEST_IMAGE.pass(image.clone()),
    });

    // supplementalGroups.
    let groups: Vec<i64> = spec
        .security_context
        .as_ref()
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default();
    out.push(match gid {
        None => MANIFEST_GROUPS.skipped_after(&SOCKET_GROUP),
        Some(gid) if groups.contains(&i64::from(gid)) => {
            MANIFEST_GROUPS.pass(format!("supplementalGroups {groups:?} contains the socket GID {gid}"))
        }
        Some(gid) => MANIFEST_GROUPS.fail(
            format!("supplementalGroups {groups:?} does not contain the socket GID {gid}"),
            format!("set spec.securityContext.supplementalGroups: [{gid}] (the GID server.socketGroup resolves to)"),
        ),
    });

    // hostPath mounts.
    out.push(match cfg {
        None => MANIFEST_MOUNTS.skipped_after(&CONFIG_VALIDATE),
        Some(cfg) => {
            let in_container = container_config_arg(container).map(PathBuf::from);
            let config_in_pod = in_container.as_deref().unwrap_or(config_path);
            mounts_check(
                &spec.volumes.clone().unwrap_or_default(),
                container,
                &needs(cfg, config_in_pod),
            )
        }
    });

    // Security context.
    out.push(security_check(&spec, container, cfg));
    (out, facts)
}

fn mounts_check(volumes: &[k8s_openapi::api::core::v1::Volume], c: &Container, needs: &[Need]) -> Check {
    let d = MANIFEST_MOUNTS;
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for need in needs {
        let want = normalize(&need.path);
        let best = mounts
            .iter()
            .filter(|m| covers(&normalize(Path::new(&m.mount_path)), &want))
            .max_by_key(|m| m.mount_path.len());
        let Some(m) = best else {
            problems.push(format!("{} {} is not mounted", need.what, want.display()));
            fixes.push(format!(
                "add a hostPath volume {} mounted at the same path{}",
                want.display(),
                if need.writable { "" } else { " (readOnly: true)" }
            ));
            continue;
        };
        let Some(host) = volumes
            .iter()
            .find(|v| v.name == m.name)
            .and_then(|v| v.host_path.as_ref())
        else {
            problems.push(format!(
                "{} {} is mounted from volume {:?}, which is not a hostPath volume",
                need.what,
                want.display(),
                m.name
            ));
            fixes.push(format!("make volume {:?} a hostPath volume", m.name));
            continue;
        };
        let mount_path = normalize(Path::new(&m.mount_path));
        let rest = want.strip_prefix(&mount_path).unwrap_or(Path::new(""));
        let host_path = normalize(&Path::new(&host.path).join(rest));
        if host_path != want {
            problems.push(format!(
                "{} {} is mounted from host path {}",
                need.what,
                want.display(),
                host_path.display()
            ));
            fixes.push(format!(
                "mount host path {} at {} (the same path on both sides, as kube-apiserver and preflight see it)",
                mount_path.display(),
                mount_path.display()
            ));
        }
        if need.writable && m.read_only == Some(true) {
            problems.push(format!("{} {} is mounted read-only", need.what, want.display()));
            fixes.push(format!("set readOnly: false on volume mount {:?}", m.name));
        }
    }
    if problems.is_empty() {
        d.pass(format!(
            "{} paths covered ({})",
            needs.len(),
            needs.iter().map(|n| n.what).collect::<Vec<_>>().join(", ")
        ))
    } else {
        d.fail(problems.join("; "), fixes.join("; "))
    }
}

fn security_check(spec: &k8s_openapi::api::core::v1::PodSpec, c: &Container, cfg: Option<&Config>) -> Check {
    let d = MANIFEST_SECURITY;
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.or(pod_sc.run_as_user);
    let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root);
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    match (run_as_user, non_root) {
        (Some(0), _) => failures.push("runAsUser is 0 (root)".to_owned()),
        (None, Some(true)) | (Some(_), _) => {}
        (None, _) => failures.push("neither runAsNonRoot: true nor a non-zero runAsUser is set".to_owned()),
    }
    if sc.allow_privilege_escalation != Some(false) {
        failures.push("allowPrivilegeEscalation is not false".to_owned());
    }
    if sc.privileged == Some(true) {
        failures.push("the container is privileged".to_owned());
    }
    if sc.read_only_root_filesystem != Some(true) {
        warnings.push("readOnlyRootFilesystem is not true".to_owned());
    }
    let drops_all = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|d| d.iter().any(|x| x == "ALL"));
    if !drops_all {
        warnings.push("capabilities.drop does not contain ALL".to_owned());
    }
    let loopback_health = cfg
        .and_then(|c| c.server.health_address.as_deref())
        .is_some_and(|a| a.starts_with("127.") || a.starts_with("localhost:") || a.starts_with("[::1]"));
    if loopback_health && spec.host_network != Some(true) {
        warnings
            .push("hostNetwork is not true, so the loopback health address is not reachable from the node".to_owned());
    }
    let fix = "set runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities.drop: [ALL], hostNetwork: true";
    if !failures.is_empty() {
        failures.extend(warnings);
        d.fail(failures.join("; "), fix)
    } else if !warnings.is_empty() {
        d.warn(warnings.join("; "), fix)
    } else {
        d.pass(format!(
            "runAsUser {}, no privilege escalation, read-only root, all capabilities dropped",
            run_as_user.map(|u| u.to_string()).unwrap_or_else(|| "non-root".into())
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(is_digest(&d));
        assert!(!is_digest("sha256:abc"));
        assert_eq!(image_digest(&format!("ghcr.io/x/y@{d}")), Some(d.as_str()));
        assert_eq!(image_digest("ghcr.io/x/y:1.0"), None);
    }
}
