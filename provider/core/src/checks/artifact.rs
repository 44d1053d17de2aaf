//! What each node runs, per deployment model: a static pod runs an image
//! pinned by digest (from its manifest), a systemd unit runs a binary on
//! the host (the SHA-256 of the file its `ExecStart=` names). The cluster
//! compares the artifact within each model only, so a cluster migrating
//! from one model to the other passes while every node of a model runs the
//! same thing; the provider version (`/status`) is compared across all.

use super::catalogue::{ARTIFACT_CONVERGED, ARTIFACT_REPORTED};
use super::converge::converged;
use super::{Check, CheckStatus};

/// How the provider is deployed on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Model {
    StaticPod,
    Systemd,
}

impl Model {
    /// The name in reports and Lease annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StaticPod => "static-pod",
            Self::Systemd => "systemd",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "static-pod" => Some(Self::StaticPod),
            "systemd" => Some(Self::Systemd),
            _ => None,
        }
    }

    /// The artifact's name in messages.
    fn artifact(self) -> &'static str {
        match self {
            Self::StaticPod => "static pod image",
            Self::Systemd => "systemd binary",
        }
    }
}

/// The program `ExecStart=` runs, from the unit file and its drop-ins in
/// the order systemd reads them (`[Service]` only; an empty `ExecStart=`
/// resets the list; a line ending in `\` continues; the prefixes `@`, `-`,
/// `:`, `+`, `!` are dropped; one level of quotes is removed). The path
/// must be absolute. `files` are (name, text) pairs; errors name the file.
pub fn exec_start_binary(files: &[(&str, &str)]) -> Result<String, String> {
    let mut found: Option<(String, String)> = None;
    for (name, text) in files {
        let mut section = String::new();
        let mut logical = String::new();
        for raw in text.lines() {
            let line = raw.trim();
            if let Some(rest) = line.strip_suffix('\\') {
                logical.push_str(rest);
                logical.push(' ');
                continue;
            }
            logical.push_str(line);
            let full = std::mem::take(&mut logical);
            let full = full.trim();
            if full.starts_with('#') || full.starts_with(';') || full.is_empty() {
                continue;
            }
            if full.starts_with('[') && full.ends_with(']') {
                section = full.to_owned();
                continue;
            }
            if section != "[Service]" {
                continue;
            }
            let Some((key, value)) = full.split_once('=') else {
                continue;
            };
            if key.trim() != "ExecStart" {
                continue;
            }
            let value = value.trim();
            found = if value.is_empty() {
                None
            } else {
                Some(((*name).to_owned(), value.to_owned()))
            };
        }
    }
    let Some((name, value)) = found else {
        return Err(format!(
            "no ExecStart= in the [Service] section of {}",
            files.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ));
    };
    let command = value.trim_start_matches(['@', '-', ':', '+', '!']);
    let program = match command.chars().next() {
        Some(q @ ('"' | '\'')) => command[1..].split(q).next().unwrap_or_default(),
        _ => command.split_whitespace().next().unwrap_or_default(),
    };
    if program.starts_with('/') {
        Ok(program.to_owned())
    } else {
        Err(format!(
            "{name}: ExecStart={value} does not name the program by absolute path"
        ))
    }
}

/// The node check `unit.binary`: `program` is what the unit's `ExecStart=`
/// names (or the error reading or parsing the unit), `hashed` the file read
/// (the program itself, or `--provider-binary` where the agent sees it)
/// with its digest or the read error.
pub fn unit_binary_check(program: &Result<String, String>, hashed: &str, digest: &Result<String, String>) -> Check {
    use super::catalogue::UNIT_BINARY;
    let where_ = if program.as_deref().is_ok_and(|p| p == hashed) {
        String::new()
    } else {
        format!(" (read at {hashed})")
    };
    match (program, digest) {
        (Err(e), _) => UNIT_BINARY.fail(
            e.clone(),
            "pass --unit the installed unit and its drop-ins (systemctl show -p FragmentPath,DropInPaths bao-kms-provider names them), or name the binary with --provider-binary",
        ),
        (Ok(p), Err(e)) => UNIT_BINARY.fail(
            format!("{p}{where_}: {e}"),
            "make the binary readable by the agent (the chart mounts host.providerBinary), or name where it is visible with --provider-binary",
        ),
        (Ok(p), Ok(d)) => UNIT_BINARY.pass(format!("{p}{where_} {d}")),
    }
}

/// What one node's report names about its deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeArtifact<'a> {
    pub node: &'a str,
    /// `None` when the agent was given neither a manifest nor a unit.
    pub model: Option<Model>,
    /// The image reference (static pod) or the binary's path (systemd).
    pub what: &'a str,
    /// `sha256:<hex>` of the image or binary; empty when unknown.
    pub digest: &'a str,
}

/// Digests the operator expects (`cluster --expected-image-digest`,
/// `--expected-binary-digest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub image_digest: Option<String>,
    pub binary_digest: Option<String>,
}

/// `sha256:` and the first 12 hex digits.
pub fn short_digest(d: &str) -> String {
    match d.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", hex.chars().take(12).collect::<String>()),
        None if d.is_empty() => "<none>".to_owned(),
        None => d.to_owned(),
    }
}

fn missing(a: &NodeArtifact<'_>) -> Option<(String, String)> {
    let node = a.node;
    let what = if a.what.is_empty() { "<none>" } else { a.what };
    match (a.model, a.digest.is_empty()) {
        (None, _) => Some((
            "the report names no deployment model: the agent has neither --manifest (static pod) nor --unit (systemd)"
                .to_owned(),
            format!(
                "run the agent on {node} with --manifest <the provider's static pod manifest> or --unit <bao-kms-provider.service> (chart values host.manifest / host.unit)"
            ),
        )),
        (Some(Model::StaticPod), true) => Some((
            format!("the static pod's image {what} is not pinned by digest"),
            format!("pin the provider image by @sha256: in the static pod manifest on {node}"),
        )),
        (Some(Model::Systemd), true) => Some((
            format!("the provider binary {what} of the systemd unit was not hashed"),
            format!("run bao-kms-preflight node --unit <unit> on {node}: its check unit.binary names why"),
        )),
        (Some(_), false) => None,
    }
}

/// `artifact.reported` for every node without its model's artifact, and
/// `artifact.converged` per model: every node of the model on the expected
/// digest when one is given, else on the most common one. A node is never
/// compared with nodes of the other model.
pub fn evaluate(nodes: &[NodeArtifact<'_>], expected: &Expected) -> Vec<Check> {
    let mut out = Vec::new();
    for a in nodes {
        if let Some((msg, fix)) = missing(a) {
            out.push(ARTIFACT_REPORTED.fail(msg, fix).on_node(a.node));
        }
    }
    if out.is_empty() && !nodes.is_empty() {
        let count = |m: Model| nodes.iter().filter(|a| a.model == Some(m)).count();
        out.push(ARTIFACT_REPORTED.pass(format!(
            "{} static pod, {} systemd",
            count(Model::StaticPod),
            count(Model::Systemd)
        )));
    }
    let mut compared = false;
    for model in [Model::StaticPod, Model::Systemd] {
        let values: Vec<(&str, String)> = nodes
            .iter()
            .filter(|a| a.model == Some(model) && !a.digest.is_empty())
            .map(|a| (a.node, a.digest.to_owned()))
            .collect();
        if values.is_empty() {
            continue;
        }
        compared = true;
        let (want, flag, fix) = match model {
            Model::StaticPod => (
                expected.image_digest.as_deref(),
                "--expected-image-digest",
                "pin every static pod manifest to the one release image digest (the release's image-digest.txt); the kubelet restarts the pod",
            ),
            Model::Systemd => (
                expected.binary_digest.as_deref(),
                "--expected-binary-digest",
                "install the one release on every systemd node (the same bao-kms-provider .deb: sha256sum of the unit's ExecStart binary must match), then systemctl restart bao-kms-provider",
            ),
        };
        match want {
            Some(want) => {
                let before = out.len();
                for (node, d) in &values {
                    if d != want {
                        out.push(
                            ARTIFACT_CONVERGED
                                .fail(
                                    format!(
                                        "{} {} is not the expected {} ({flag})",
                                        model.artifact(),
                                        short_digest(d),
                                        short_digest(want)
                                    ),
                                    fix,
                                )
                                .on_node(node),
                        );
                    }
                }
                if out.len() == before {
                    out.push(ARTIFACT_CONVERGED.pass(format!(
                        "{} nodes run the expected {} {}",
                        values.len(),
                        model.artifact(),
                        short_digest(want)
                    )));
                }
            }
            None => converged(
                &mut out,
                &ARTIFACT_CONVERGED,
                model.artifact(),
                &values,
                short_digest,
                fix,
            ),
        }
    }
    if !compared {
        out.push(ARTIFACT_CONVERGED.skip("no node reports an artifact digest"));
    }
    // One pass line per check id is enough when nothing failed.
    let passes: Vec<String> = out
        .iter()
        .filter(|c| c.id == ARTIFACT_CONVERGED.id && c.status == CheckStatus::Pass)
        .filter_map(|c| c.message.clone())
        .collect();
    if passes.len() > 1 {
        out.retain(|c| !(c.id == ARTIFACT_CONVERGED.id && c.status == CheckStatus::Pass));
        out.push(ARTIFACT_CONVERGED.pass(passes.join("; ")));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const IMG_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const IMG_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const BIN_C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const BIN_D: &str = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

    fn pod<'a>(node: &'a str, digest: &'a str) -> NodeArtifact<'a> {
        NodeArtifact {
            node,
            model: Some(Model::StaticPod),
            what: "registry.example/bao-kms-provider@sha256:aa",
            digest,
        }
    }

    fn unit<'a>(node: &'a str, digest: &'a str) -> NodeArtifact<'a> {
        NodeArtifact {
            node,
            model: Some(Model::Systemd),
            what: "/usr/bin/bao-kms-provider",
            digest,
        }
    }

    /// (node, id, status, message) of every check.
    fn verdicts(checks: &[Check]) -> Vec<(String, String, CheckStatus, String)> {
        checks
            .iter()
            .map(|c| {
                (
                    c.node.clone().unwrap_or_default(),
                    c.id.clone(),
                    c.status,
                    c.message.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn failures(checks: &[Check]) -> Vec<(String, String, String)> {
        verdicts(checks)
            .into_iter()
            .filter(|v| v.2 == CheckStatus::Fail)
            .map(|(n, id, _, m)| (n, id, m))
            .collect()
    }

    fn f(node: &str, id: &str, msg: &str) -> (String, String, String) {
        (node.into(), id.into(), msg.into())
    }

    #[test]
    fn all_static_pod() {
        let c = evaluate(
            &[pod("a", IMG_A), pod("b", IMG_A), pod("c", IMG_A)],
            &Expected::default(),
        );
        assert_eq!(
            verdicts(&c),
            [
                (
                    String::new(),
                    "artifact.reported".into(),
                    CheckStatus::Pass,
                    "3 static pod, 0 systemd".into()
                ),
                (
                    String::new(),
                    "artifact.converged".into(),
                    CheckStatus::Pass,
                    "3 nodes report static pod image sha256:aaaaaaaaaaaa".into()
                ),
            ]
        );
    }

    #[test]
    fn all_systemd() {
        let c = evaluate(&[unit("a", BIN_C), unit("b", BIN_C)], &Expected::default());
        assert!(failures(&c).is_empty(), "{c:?}");
        assert_eq!(
            c.last().unwrap().message.as_deref(),
            Some("2 nodes report systemd binary sha256:cccccccccccc")
        );
    }

    /// During a migration: no node fails for lacking the other model's
    /// artifact, and each model is compared within itself.
    #[test]
    fn mixed_models_pass_together() {
        let nodes = [pod("a", IMG_A), unit("b", BIN_C), pod("c", IMG_A)];
        let c = evaluate(&nodes, &Expected::default());
        assert!(failures(&c).is_empty(), "{c:?}");
        assert_eq!(
            c.last().unwrap().message.as_deref(),
            Some(
                "2 nodes report static pod image sha256:aaaaaaaaaaaa; 1 nodes report systemd binary sha256:cccccccccccc"
            )
        );
        assert_eq!(c[0].message.as_deref(), Some("2 static pod, 1 systemd"));
        // A different image on the static pods does not involve the systemd node.
        let c = evaluate(
            &[pod("a", IMG_A), unit("b", BIN_C), pod("c", IMG_A), pod("d", IMG_B)],
            &Expected::default(),
        );
        assert_eq!(
            failures(&c),
            [f(
                "d",
                "artifact.converged",
                "static pod image sha256:bbbbbbbbbbbb differs from sha256:aaaaaaaaaaaa on 2 of 3 nodes"
            )]
        );
    }

    #[test]
    fn wrong_binary_digest_fails_the_node() {
        let c = evaluate(
            &[unit("a", BIN_C), unit("b", BIN_D), unit("c", BIN_C), pod("d", IMG_A)],
            &Expected::default(),
        );
        assert_eq!(
            failures(&c),
            [f(
                "b",
                "artifact.converged",
                "systemd binary sha256:dddddddddddd differs from sha256:cccccccccccc on 2 of 3 nodes"
            )]
        );
        assert!(c.iter().any(|c| {
            c.fix
                .as_deref()
                .is_some_and(|f| f.contains("systemctl restart bao-kms-provider"))
        }));
        // With an expected digest, every node off it fails, even a majority.
        let expected = Expected {
            binary_digest: Some(BIN_D.into()),
            ..Expected::default()
        };
        let c = evaluate(&[unit("a", BIN_C), unit("b", BIN_D), unit("c", BIN_C)], &expected);
        assert_eq!(
            failures(&c),
            [
                f(
                    "a",
                    "artifact.converged",
                    "systemd binary sha256:cccccccccccc is not the expected sha256:dddddddddddd (--expected-binary-digest)"
                ),
                f(
                    "c",
                    "artifact.converged",
                    "systemd binary sha256:cccccccccccc is not the expected sha256:dddddddddddd (--expected-binary-digest)"
                ),
            ]
        );
    }

    #[test]
    fn missing_artifact_fails_only_that_node() {
        let none = NodeArtifact {
            node: "x",
            model: None,
            what: "",
            digest: "",
        };
        let c = evaluate(
            &[
                pod("a", IMG_A),
                pod("p", ""),
                unit("u", ""),
                none.clone(),
                unit("b", BIN_C),
            ],
            &Expected::default(),
        );
        assert_eq!(
            failures(&c),
            [
                f(
                    "p",
                    "artifact.reported",
                    "the static pod's image registry.example/bao-kms-provider@sha256:aa is not pinned by digest"
                ),
                f(
                    "u",
                    "artifact.reported",
                    "the provider binary /usr/bin/bao-kms-provider of the systemd unit was not hashed"
                ),
                f(
                    "x",
                    "artifact.reported",
                    "the report names no deployment model: the agent has neither --manifest (static pod) nor --unit (systemd)"
                ),
            ]
        );
        // The nodes with an artifact are still compared (and agree).
        assert!(
            c.iter()
                .any(|c| c.id == "artifact.converged" && c.status == CheckStatus::Pass)
        );
        let c = evaluate(&[none], &Expected::default());
        assert_eq!(c.last().unwrap().status, CheckStatus::Skip);
    }

    #[test]
    fn unit_binary_verdicts() {
        let p: Result<String, String> = Ok("/usr/bin/bao-kms-provider".into());
        let c = unit_binary_check(&p, "/usr/bin/bao-kms-provider", &Ok(BIN_C.into()));
        assert_eq!(c.status, CheckStatus::Pass);
        assert_eq!(c.message.unwrap(), format!("/usr/bin/bao-kms-provider {BIN_C}"));
        let c = unit_binary_check(&p, "/host/bin/p", &Err("No such file or directory (os error 2)".into()));
        assert_eq!(
            c.message.unwrap(),
            "/usr/bin/bao-kms-provider (read at /host/bin/p): No such file or directory (os error 2)"
        );
        let c = unit_binary_check(&Err("no ExecStart= in u".into()), "", &Err(String::new()));
        assert_eq!(
            (c.status, c.message.unwrap().as_str()),
            (CheckStatus::Fail, "no ExecStart= in u")
        );
    }

    #[test]
    fn exec_start_is_parsed_like_systemd() {
        let unit = "[Unit]\nDescription=x\nExecStart=/not/service\n\n[Service]\nType=notify\n# ExecStart=/commented\nExecStart=/usr/bin/bao-kms-provider serve --config /etc/openbao-kms/config.yaml\n";
        assert_eq!(
            exec_start_binary(&[("bao-kms-provider.service", unit)]).unwrap(),
            "/usr/bin/bao-kms-provider"
        );
        // A drop-in resets and replaces it; prefixes, quotes, continuations.
        let dropin =
            "[Service]\nExecStart=\nExecStart=-@\"/opt/bao kms/bin/provider\" serve \\\n  --config /etc/x.yaml\n";
        assert_eq!(
            exec_start_binary(&[("u", unit), ("override.conf", dropin)]).unwrap(),
            "/opt/bao kms/bin/provider"
        );
        let reset = "[Service]\nExecStart=\n";
        assert_eq!(
            exec_start_binary(&[("u", unit), ("r.conf", reset)]).unwrap_err(),
            "no ExecStart= in the [Service] section of u, r.conf"
        );
        assert_eq!(
            exec_start_binary(&[("u", "[Service]\nExecStart=bao-kms-provider serve\n")]).unwrap_err(),
            "u: ExecStart=bao-kms-provider serve does not name the program by absolute path"
        );
    }
}
