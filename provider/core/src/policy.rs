//! `policy openbao`: the least-privilege OpenBao policy for a configuration.
//! It grants exactly what the provider calls and nothing that could change
//! the key: no create on encrypt (implicit key creation), no update on the
//! key (rotation), no delete, export, backup, restore, trim, rewrap or
//! config writes. `policy openbao` prints it and `init` writes it to
//! `openbao-policy.hcl`: one text for both.

use crate::config::Config;

/// The policy in HCL. `token_renewal` adds `auth/token/renew-self`.
pub fn openbao_policy(cfg: &Config, token_renewal: bool) -> String {
    let mount = cfg.transit.mount_path.trim_matches('/');
    let key = &cfg.transit.key_name;
    let mut rules: Vec<(String, &str, &str)> = vec![
        (
            format!("{mount}/keys/{key}"),
            "read",
            "key metadata: versions, creation times, profile",
        ),
        (
            format!("{mount}/encrypt/{key}"),
            "update",
            "encrypt with an explicit key_version (never create)",
        ),
        (format!("{mount}/decrypt/{key}"), "update", "decrypt"),
        (
            format!("{mount}/config/keys"),
            "read",
            "the mount's disable_upsert setting",
        ),
        (
            format!("sys/internal/ui/mounts/{mount}"),
            "read",
            "the mount accessor pinned at bootstrap",
        ),
        (
            "sys/capabilities-self".to_owned(),
            "update",
            "doctor's capability check",
        ),
        (
            "auth/token/lookup-self".to_owned(),
            "read",
            "the token's remaining lease",
        ),
    ];
    if token_renewal {
        rules.push(("auth/token/renew-self".to_owned(), "update", "token renewal"));
    }
    let mut out = format!(
        "# bao-kms-provider policy for {mount}/{key} (provider {})\n",
        cfg.transit.key_id_scope.provider_name
    );
    for (path, cap, why) in rules {
        out.push_str(&format!(
            "\n# {why}\npath \"{path}\" {{\n  capabilities = [\"{cap}\"]\n}}\n"
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> Config {
        let yaml = r#"
configVersion: v1alpha1
server: {socketPath: /run/openbao-kms/kms.sock, socketGroup: "1234"}
openbao: {address: "https://bao.example:8200", caCertFile: /etc/openbao-kms/tls/ca.crt, tlsServerName: bao.example, instanceId: bao-a}
auth: {method: token, token: {tokenFile: /etc/openbao-kms/token}}
transit:
  mountPath: transit-k8s
  keyName: k8s-workload-a-etcd
  keyIdScope: {providerName: openbao-kms-workload-a, clusterId: workload-a, transitMountId: t, keyLineageId: l}
"#;
        crate::config::parse_yaml(yaml).unwrap()
    }

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
}
