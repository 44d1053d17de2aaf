//! `bao-kms-preflight node` against a real provider serving on its socket
//! with a real OpenBao behind it (the files `make demo` writes, in a temp
//! directory): everything passes; a wrong socket group or a broken
//! EncryptionConfiguration fails with the finding that names it.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use bao_kms_system_tests::Provider;
use bao_kms_system_tests::doctor::{report_check, run_preflight_node};
use bao_kms_system_tests::provider::dev_setup;
use serde_json::Value;

#[tokio::test]
async fn node_checks_pass_against_a_serving_provider_and_name_each_break() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    // A node's socket directory: setgid, so the socket inherits the group.
    fs::set_permissions(env.socket_dir(), fs::Permissions::from_mode(0o2750))?;
    let _provider = Provider::start(&env).await?;
    let name = env.settings().provider_name.clone();
    let endpoint = format!("unix://{}", env.socket_path().display());
    let ec_path = env.dir().join("encryption-config.yaml");
    let write_ec = |name: &str| {
        fs::write(
            &ec_path,
            format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: {name}\n          endpoint: {endpoint}\n          timeout: 3s\n      - identity: {{}}\n"
            ),
        )
    };
    write_ec(&name)?;
    let args = vec![
        "--config".to_owned(),
        env.config_path().display().to_string(),
        "--encryption-config".to_owned(),
        ec_path.display().to_string(),
        "--allowed-socket-dir".to_owned(),
        env.socket_dir().display().to_string(),
    ];

    let (code, report) = run_preflight_node(&args)?;
    assert_eq!(code, 0, "{report:#}");
    for id in ["socket.directory", "socket.file", "provider.ready", "provider.status"] {
        assert_eq!(report_check(&report, id)["status"], "pass", "{id}: {report:#}");
    }
    let status: Value = reqwest::get(env.health_url("/status")).await?.json().await?;
    let hash = status["keyIDHash"].as_str().unwrap_or_default();
    assert!(!hash.is_empty());
    assert!(
        report_check(&report, "provider.status")["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("keyIDHash {hash}, generation "))),
        "{report:#}"
    );

    // A broken EncryptionConfiguration: the provider's name misspelt.
    write_ec("openbao-kms-typo")?;
    let (code, report) = run_preflight_node(&args)?;
    assert_eq!(code, 4);
    let c = report_check(&report, "encryption_config.provider");
    assert_eq!(c["status"], "fail");
    assert_eq!(
        c["message"],
        format!(
            "resources: no kms provider is named \"{name}\" (transit.keyIdScope.providerName); listed kms providers: \"openbao-kms-typo\"; add `kms: {{apiVersion: v2, name: {name}, endpoint: {endpoint}, timeout: 3s}}`"
        )
    );
    write_ec(&name)?;

    // A socket group the directory and the socket do not have.
    let gid = nix::unistd::getgid().as_raw();
    let wrong = gid + 4242;
    let yaml = env.config_yaml();
    let broken = yaml.replace(&format!("socketGroup: \"{gid}\""), &format!("socketGroup: \"{wrong}\""));
    assert_ne!(broken, yaml);
    env.write_config_text(&broken)?;
    let (code, report) = run_preflight_node(&args)?;
    assert_eq!(code, 4);
    let dir = env.socket_dir();
    assert_eq!(
        report_check(&report, "socket.directory")["message"],
        format!("{}: group {gid}, want the socket group {wrong}", dir.display())
    );
    assert_eq!(
        report_check(&report, "socket.file")["message"],
        format!(
            "{}: group {gid}, want the socket group {wrong}",
            env.socket_path().display()
        )
    );
    Ok(())
}
