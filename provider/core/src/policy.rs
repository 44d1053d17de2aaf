//! `policy openbao`: the least-privilege OpenBao policy for a configuration.
//! It grants exactly what the provider calls and nothing that could change
//! the key: no create on encrypt (implicit key creation), no update on the
//! key (rotation), no delete, export, backup, restore, trim, rewrap or
//! config writes. `policy openbao` prints it, `init` writes it to
//! `openbao-policy.hcl`, and `doctor`'s `transit.capabilities` requires
//! exactly its [`grants`] and refuses the [`forbidden`] ones: one list for
//! all three.

use crate::config::{AuthMethod, Config};

/// How `doctor` (`transit.capabilities`) knows the token holds a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// `sys/capabilities-self` must list the capability on the path.
    Capability,
    /// OpenBao answers `sys/internal/ui/mounts/<mount>` for any token with
    /// a capability under the mount, granted or not, and serve needs only
    /// the answer: the read itself is judged (`openbao.identity`).
    ByTheRead,
    /// Doctor's own request: that it is answered is the proof.
    ByAsking,
    /// Renewal: without it the provider logs in again before expiry
    /// (`auth.loginBeforeTokenExpiry`); missing is reported, not failed.
    Optional,
}

/// One grant of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub path: String,
    pub capability: &'static str,
    /// The HCL comment: what the provider does with it.
    pub why: &'static str,
    pub judged: Judged,
}

/// A grant the provider's token must never hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub path: String,
    pub capability: &'static str,
    /// What the grant would let the token do (`rewrap ciphertexts`).
    pub what: &'static str,
}

/// Every grant of the least-privilege policy: what `policy openbao`
/// prints, `init` writes and `doctor` requires. `auth/token/lookup-self`
/// only for `auth.method: token`; `token_renewal` adds
/// `auth/token/renew-self`.
pub fn grants(cfg: &Config, token_renewal: bool) -> Vec<Grant> {
    let mount = cfg.transit.mount_path.trim_matches('/');
    let key = &cfg.transit.key_name;
    let grant = |path: String, capability, why, judged| Grant {
        path,
        capability,
        why,
        judged,
    };
    let mut out = vec![
        grant(
            format!("{mount}/keys/{key}"),
            "read",
            "key metadata: versions, creation times, profile",
            Judged::Capability,
        ),
        grant(
            format!("{mount}/encrypt/{key}"),
            "update",
            "encrypt with an explicit key_version (never create)",
            Judged::Capability,
        ),
        grant(
            format!("{mount}/decrypt/{key}"),
            "update",
            "decrypt",
            Judged::Capability,
        ),
        grant(
            format!("{mount}/config/keys"),
            "read",
            "the mount's disable_upsert setting",
            Judged::Capability,
        ),
        grant(
            format!("sys/internal/ui/mounts/{mount}"),
            "read",
            "the mount accessor pinned at bootstrap",
            Judged::ByTheRead,
        ),
        grant(
            "sys/capabilities-self".to_owned(),
            "update",
            "doctor's capability check",
            Judged::ByAsking,
        ),
    ];
    // Only the token method calls lookup-self (to check the token file's
    // token and read its lease); the others take the lease from the login
    // answer, and their roles set token_no_default_policy.
    if matches!(cfg.auth.method, AuthMethod::Token(_)) {
        out.push(grant(
            "auth/token/lookup-self".to_owned(),
            "read",
            "the token's remaining lease (auth.method token)",
            Judged::Capability,
        ));
    }
    if token_renewal {
        out.push(grant(
            "auth/token/renew-self".to_owned(),
            "update",
            "token renewal",
            Judged::Optional,
        ));
    }
    out
}

/// What the provider's token must never be able to do: change, rotate,
/// trim, delete, export, back up, restore or create the key, rewrap
/// ciphertexts, or change the mount's settings.
pub fn forbidden(cfg: &Config) -> Vec<Forbidden> {
    let mount = cfg.transit.mount_path.trim_matches('/');
    let key = &cfg.transit.key_name;
    let f = |path: String, capability, what| Forbidden { path, capability, what };
    vec![
        f(format!("{mount}/keys/{key}/rotate"), "update", "rotate the key"),
        f(
            format!("{mount}/keys/{key}/config"),
            "update",
            "change the key configuration",
        ),
        f(format!("{mount}/keys/{key}/trim"), "update", "trim key versions"),
        f(format!("{mount}/keys/{key}"), "delete", "delete the key"),
        f(format!("{mount}/keys/{key}"), "update", "create or re-create the key"),
        f(format!("{mount}/export/encryption-key/{key}"), "read", "export the key"),
        f(format!("{mount}/backup/{key}"), "read", "back up the key"),
        f(
            format!("{mount}/restore/{key}"),
            "update",
            "restore the key from a backup",
        ),
        f(format!("{mount}/restore"), "update", "restore keys from a backup"),
        f(format!("{mount}/rewrap/{key}"), "update", "rewrap ciphertexts"),
        f(
            format!("{mount}/encrypt/{key}"),
            "create",
            "create keys implicitly on encrypt",
        ),
        f(
            format!("{mount}/config/keys"),
            "update",
            "change the mount's key settings",
        ),
        f(
            format!("{mount}/cache-config"),
            "update",
            "change the mount's cache settings",
        ),
    ]
}

/// The policy in HCL. `token_renewal` adds `auth/token/renew-self`.
pub fn openbao_policy(cfg: &Config, token_renewal: bool) -> String {
    let mount = cfg.transit.mount_path.trim_matches('/');
    let key = &cfg.transit.key_name;
    let mut out = format!(
        "# bao-kms-provider policy for {mount}/{key} (provider {})\n",
        cfg.transit.key_id_scope.provider_name
    );
    for g in grants(cfg, token_renewal) {
        out.push_str(&format!(
            "\n# {}\npath \"{}\" {{\n  capabilities = [\"{}\"]\n}}\n",
            g.why, g.path, g.capability
        ));
    }
    out
}

/// What `sys/capabilities-self` answered, as the token holding
/// `capability` on `path`: the capability itself or `root`.
pub fn holds(answer: &[(String, Vec<String>)], path: &str, capability: &str) -> bool {
    answer
        .iter()
        .find(|(p, _)| p == path)
        .is_some_and(|(_, caps)| caps.iter().any(|c| c == capability || c == "root"))
}

/// The verdict of `transit.capabilities` from the paths the token was
/// asked about ([`capability_paths`]) and what it answered: `Ok(notes)`
/// (notes: an optional grant missing) or `Err(problems)` naming each
/// missing grant and each forbidden one held.
pub fn judge_capabilities(
    grants: &[Grant],
    forbidden: &[Forbidden],
    answer: &[(String, Vec<String>)],
) -> Result<Vec<String>, Vec<String>> {
    let missing = |judged: Judged| -> Vec<String> {
        grants
            .iter()
            .filter(|g| g.judged == judged && !holds(answer, &g.path, g.capability))
            .map(|g| format!("{} on {}", g.capability, g.path))
            .collect()
    };
    let excess: Vec<String> = forbidden
        .iter()
        .filter(|f| holds(answer, &f.path, f.capability))
        .map(|f| format!("{} ({} on {})", f.what, f.capability, f.path))
        .collect();
    let mut problems = Vec::new();
    let required = missing(Judged::Capability);
    if !required.is_empty() {
        problems.push(format!("missing: {}", required.join(", ")));
    }
    if !excess.is_empty() {
        problems.push(format!("the token can {}; remove those grants", excess.join(", ")));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(missing(Judged::Optional)
        .into_iter()
        .map(|m| format!("without {m} the provider logs in again before the token expires"))
        .collect())
}

/// The paths `transit.capabilities` asks `sys/capabilities-self` about:
/// every grant judged by capability (optional ones too) and every
/// forbidden path, sorted, once each.
pub fn capability_paths(grants: &[Grant], forbidden: &[Forbidden]) -> Vec<String> {
    let mut paths: Vec<String> = grants
        .iter()
        .filter(|g| matches!(g.judged, Judged::Capability | Judged::Optional))
        .map(|g| g.path.clone())
        .chain(forbidden.iter().map(|f| f.path.clone()))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::parse_yaml(CONFIG).unwrap()
    }

    const CONFIG: &str = r#"
configVersion: v1alpha1
server: {socketPath: /run/openbao-kms/kms.sock, socketGroup: "1234"}
openbao: {address: "https://bao.example:8200", caCertFile: /etc/openbao-kms/tls/ca.crt, tlsServerName: bao.example, instanceId: bao-a}
auth: {method: token, token: {tokenFile: /etc/openbao-kms/token}}
transit:
  mountPath: transit-k8s
  keyName: k8s-workload-a-etcd
  keyIdScope: {providerName: openbao-kms-workload-a, clusterId: workload-a, transitMountId: t, keyLineageId: l}
"#;

    #[test]
    fn grants_exactly_the_provider_calls() {
        let hcl = openbao_policy(&config(), true);
        for (path, cap) in [
            ("transit-k8s/keys/k8s-workload-a-etcd", "read"),
            ("transit-k8s/encrypt/k8s-workload-a-etcd", "update"),
            ("transit-k8s/decrypt/k8s-workload-a-etcd", "update"),
            ("transit-k8s/config/keys", "read"),
            ("sys/internal/ui/mounts/transit-k8s", "read"),
            ("sys/capabilities-self", "update"),
            ("auth/token/lookup-self", "read"),
            ("auth/token/renew-self", "update"),
        ] {
            assert!(
                hcl.contains(&format!("path \"{path}\" {{\n  capabilities = [\"{cap}\"]\n}}")),
                "{path}\n{hcl}"
            );
        }
        assert_eq!(hcl.matches("path \"").count(), 8);
        for never in [
            "\"create\"",
            "\"delete\"",
            "\"sudo\"",
            "\"list\"",
            "/rotate",
            "/export/",
            "/backup/",
            "/trim",
        ] {
            assert!(!hcl.contains(never), "{never} in\n{hcl}");
        }
        assert!(!openbao_policy(&config(), false).contains("renew-self"));
    }

    /// Only the token method reads lookup-self: the other methods' policy,
    /// and so doctor's capability check, go without it.
    #[test]
    fn lookup_self_only_for_the_token_method() {
        let token = "auth: {method: token, token: {tokenFile: /etc/openbao-kms/token}}";
        assert!(CONFIG.contains(token));
        let yaml = CONFIG.replace(
            token,
            "auth: {method: approle, approle: {mountPath: auth/approle, roleIdFile: /etc/openbao-kms/role-id, secretIdFile: /etc/openbao-kms/secret-id}}",
        );
        let cfg = crate::config::parse_yaml(&yaml).unwrap();
        let hcl = openbao_policy(&cfg, true);
        assert!(!hcl.contains("lookup-self"), "{hcl}");
        assert!(hcl.contains("auth/token/renew-self"));
        assert_eq!(hcl.matches("path \"").count(), 7);
        assert!(openbao_policy(&config(), true).contains("auth/token/lookup-self"));
    }

    /// No grant of the policy is a forbidden one.
    #[test]
    fn the_policy_holds_nothing_forbidden() {
        let cfg = config();
        let granted: Vec<(String, Vec<String>)> = grants(&cfg, true)
            .into_iter()
            .map(|g| (g.path, vec![g.capability.to_owned()]))
            .collect();
        assert_eq!(
            judge_capabilities(&grants(&cfg, true), &forbidden(&cfg), &granted),
            Ok(vec![])
        );
        let whats: Vec<&str> = forbidden(&cfg).iter().map(|f| f.what).collect();
        for word in [
            "rewrap",
            "restore",
            "rotate",
            "export",
            "back up",
            "delete",
            "configuration",
        ] {
            assert!(whats.iter().any(|w| w.contains(word)), "{word}");
        }
    }

    #[test]
    fn capabilities_are_judged_against_the_policy() {
        let cfg = config();
        let g = grants(&cfg, true);
        let f = forbidden(&cfg);
        let paths = capability_paths(&g, &f);
        assert!(!paths.iter().any(|p| p.starts_with("sys/")), "{paths:?}");
        assert!(paths.contains(&"auth/token/renew-self".to_owned()));
        let answer = |extra: &[(&str, &str)], without: &[&str]| -> Vec<(String, Vec<String>)> {
            let mut a: Vec<(String, Vec<String>)> = g
                .iter()
                .filter(|g| !without.contains(&g.path.as_str()))
                .map(|g| (g.path.clone(), vec![g.capability.to_owned()]))
                .collect();
            for (p, c) in extra {
                a.push(((*p).to_owned(), vec![(*c).to_owned()]));
            }
            a
        };
        // The mount read and capabilities-self are not judged by capability.
        let ok = judge_capabilities(
            &g,
            &f,
            &answer(&[], &["sys/internal/ui/mounts/transit-k8s", "sys/capabilities-self"]),
        );
        assert_eq!(ok, Ok(vec![]));
        // Renewal missing is a note.
        let notes = judge_capabilities(&g, &f, &answer(&[], &["auth/token/renew-self"])).unwrap();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("update on auth/token/renew-self"));
        let err = judge_capabilities(
            &g,
            &f,
            &answer(
                &[
                    ("transit-k8s/rewrap/k8s-workload-a-etcd", "update"),
                    ("transit-k8s/restore", "root"),
                ],
                &["transit-k8s/decrypt/k8s-workload-a-etcd"],
            ),
        )
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                "missing: update on transit-k8s/decrypt/k8s-workload-a-etcd".to_owned(),
                "the token can restore keys from a backup (update on transit-k8s/restore), rewrap ciphertexts (update on transit-k8s/rewrap/k8s-workload-a-etcd); remove those grants".to_owned(),
            ]
        );
        // sudo grants nothing by itself.
        assert!(!holds(&[("p".into(), vec!["sudo".into()])], "p", "read"));
    }
}
