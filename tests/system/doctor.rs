//! `bao-kms-provider doctor` against a real OpenBao: every check passes on a
//! healthy setup (exit 0), and each broken layer fails its own check with a
//! one-line reason (exit 4) while earlier layers still pass.

use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, assert_fails, check, run_doctor, run_report, run_report_with};
use bao_kms_system_tests::net::free_port;
use bao_kms_system_tests::provider::dev_setup;
use bao_kms_system_tests::{Provider, ProviderEnv};
use rcgen::{CertificateParams, KeyPair};
use serde_json::Value;

fn doctor(env: &ProviderEnv) -> anyhow::Result<(i32, Vec<Value>)> {
    run_doctor(env, &[])
}

#[tokio::test]
async fn healthy_setup_passes_every_check() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let mut provider = Provider::start(&env).await?;
    let (code, checks) = doctor(&env)?;
    assert_eq!(code, 0, "{checks:#?}");
    for id in [
        "config.load",
        "config.validate",
        "socket.group",
        "auth.token.local",
        "openbao.tls",
        "openbao.health",
        "openbao.auth",
        "transit.capabilities",
        "transit.metadata",
        "registry.state",
        "transit.profile",
        "transit.disable_upsert",
        "transit.probe",
        "key_id.deterministic",
        "kms.status_encrypt",
    ] {
        assert_eq!(check(&checks, id)["status"], "pass", "{id}: {checks:#?}");
    }
    let status = provider.status_json().await?;
    let hash = status["keyIDHash"].as_str().unwrap_or_default().to_owned();
    for id in ["key_id.deterministic", "kms.status_encrypt"] {
        assert!(
            check(&checks, id)["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&hash),
            "{id}: {checks:#?}"
        );
    }
    provider.terminate().await?;
    Ok(())
}

#[tokio::test]
async fn each_broken_layer_is_named() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;

    // A revoked token: local material is fine, OpenBao refuses the login.
    bao.bao(&["token", "revoke", &p.token])?;
    let (code, checks) = doctor(&env)?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_eq!(check(&checks, "openbao.tls")["status"], "pass");
    assert_fails(&checks, "openbao.auth", "rejected the token");

    // A token that may rotate the key and the mount allowing implicit key
    // creation: both named.
    let wide = format!("{}-wide", p.policy_name);
    let hcl = env.dir().join("wide.hcl");
    std::fs::write(
        &hcl,
        format!(
            "{}\npath \"{m}/keys/{k}/rotate\" {{ capabilities = [\"update\"] }}\n",
            bao.bao(&["policy", "read", &p.policy_name])?,
            m = p.mount,
            k = p.key
        ),
    )?;
    bao.bao(&["policy", "write", &wide, &hcl.display().to_string()])?;
    let token = bao.bao(&[
        "token",
        "create",
        "-no-default-policy",
        &format!("-policy={wide}"),
        "-field=token",
    ])?;
    env.write_token(token.trim())?;
    bao.bao(&["write", &format!("{}/config/keys", p.mount), "disable_upsert=false"])?;
    let (code, checks) = doctor(&env)?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_eq!(check(&checks, "openbao.auth")["status"], "pass");
    assert_fails(&checks, "transit.capabilities", "can rotate the key");
    assert_fails(&checks, "transit.disable_upsert", "disable_upsert is false");

    // A rotated key and no registry: auto-bootstrap is denied, with the field.
    bao.bao(&["write", &format!("{}/config/keys", p.mount), "disable_upsert=true"])?;
    bao.rotate_key(&p)?;
    let (code, checks) = doctor(&env)?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_fails(&checks, "registry.state", "latest_version=2 is not initial version 1");
    Ok(())
}

#[tokio::test]
async fn verify_key_checks_the_key_alone_and_names_version_restrictions() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    let mut provider = Provider::start(&env).await?;
    provider.client().await?.prime().await?;
    provider.terminate().await?;

    let (code, checks) = run_report(&env, "verify-key", &[])?;
    assert_eq!(code, 0, "{checks:#?}");
    for id in [
        "transit.metadata",
        "registry.state",
        "transit.profile",
        "transit.version_restrictions",
        "key_id.deterministic",
    ] {
        assert_eq!(check(&checks, id)["status"], "pass", "{id}: {checks:#?}");
    }
    for absent in ["socket.group", "transit.probe"] {
        assert!(
            checks.iter().all(|c| c["id"] != absent),
            "verify-key must not run {absent}"
        );
    }

    // Version 1 is still referenced by the registry; raising
    // min_decryption_version above it is named, nothing else fails.
    bao.rotate_key(&p)?;
    bao.bao(&[
        "write",
        &format!("{}/keys/{}/config", p.mount, p.key),
        "min_decryption_version=2",
    ])?;
    let (code, checks) = run_report(&env, "verify-key", &[])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{checks:#?}");
    assert_fails(
        &checks,
        "transit.version_restrictions",
        "min_decryption_version=2 excludes version 1",
    );
    assert_eq!(check(&checks, "transit.profile")["status"], "pass", "{checks:#?}");
    Ok(())
}

/// An EncryptionConfiguration for `secrets` with `providers` in this order.
fn encryption_config(providers: &[String]) -> String {
    let mut text = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n",
    );
    for p in providers {
        text.push_str(&format!("      - {p}\n"));
    }
    text
}

fn kms(name: &str, endpoint: &str, api_version: &str) -> String {
    format!("kms: {{apiVersion: {api_version}, name: {name}, endpoint: \"{endpoint}\", timeout: 3s}}")
}

#[tokio::test]
async fn encryption_config_is_cross_checked() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let mut provider = Provider::start(&env).await?;
    let name = env.settings().provider_name.clone();
    let endpoint = format!("unix://{}", env.socket_path().display());
    let file = env.dir().join("encryption-config.yaml");
    let run = |text: String| -> anyhow::Result<(i32, Vec<Value>)> {
        std::fs::write(&file, text)?;
        run_report_with(
            &env,
            "doctor",
            &["--encryption-config", &file.display().to_string()],
            &[],
        )
    };

    // After the migration: our provider alone.
    let (code, checks) = run(encryption_config(&[kms(&name, &endpoint, "v2")]))?;
    assert_eq!(code, 0, "{checks:#?}");
    let c = check(&checks, "kubernetes.encryption_config");
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        c["message"].as_str().unwrap_or_default().contains("writes secrets"),
        "{c}"
    );
    // The check sits after the local checks and before OpenBao's.
    let ids: Vec<&str> = checks.iter().filter_map(|c| c["id"].as_str()).collect();
    let at = |id: &str| ids.iter().position(|i| *i == id).unwrap_or(usize::MAX);
    assert!(at("auth.token.local") < at("kubernetes.encryption_config"), "{ids:?}");
    assert!(at("kubernetes.encryption_config") < at("openbao.tls"), "{ids:?}");

    // Phase 2 (identity remains as a read fallback) and phase 1 (identity
    // still writes): accepted with a warning, exit 0.
    let (code, checks) = run(encryption_config(&[kms(&name, &endpoint, "v2"), "identity: {}".into()]))?;
    assert_eq!(code, 0, "{checks:#?}");
    let c = check(&checks, "kubernetes.encryption_config");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        c["message"].as_str().unwrap_or_default().contains("identity remains"),
        "{c}"
    );
    let (code, checks) = run(encryption_config(&["identity: {}".into(), kms(&name, &endpoint, "v2")]))?;
    assert_eq!(code, 0, "{checks:#?}");
    assert_eq!(check(&checks, "kubernetes.encryption_config")["status"], "warn");

    // Another socket, another name, KMS v1: each fails and is named.
    let (code, checks) = run(encryption_config(&[kms(&name, "unix:///run/other/kms.sock", "v2")]))?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_fails(&checks, "kubernetes.encryption_config", &endpoint);
    let (code, checks) = run(encryption_config(&[kms("someone-else", &endpoint, "v2")]))?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_fails(&checks, "kubernetes.encryption_config", &name);
    let (code, checks) = run(encryption_config(&[kms(&name, &endpoint, "v1")]))?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_fails(&checks, "kubernetes.encryption_config", "v2");

    // An inline key never reaches the report, even when the file is refused.
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC0zMi1ieXRlcy1sb25nIQ==";
    let (code, checks) = run(format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc: {{keys: [{{name: k1, secret: {secret}}}], bogus: 1}}\n"
    ))?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    let c = check(&checks, "kubernetes.encryption_config");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(!c.to_string().contains(secret), "secret leaked: {c}");

    // A missing file fails the check, not the command.
    std::fs::remove_file(&file)?;
    let (code, checks) = run_report_with(
        &env,
        "doctor",
        &["--encryption-config", &file.display().to_string()],
        &[],
    )?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_fails(&checks, "kubernetes.encryption_config", "encryption-config.yaml");

    // Without the flag there is no such check.
    let (_, checks) = doctor(&env)?;
    assert!(checks.iter().all(|c| c["id"] != "kubernetes.encryption_config"));
    provider.terminate().await?;
    Ok(())
}

/// The status of every check but the named ones must not be `fail`.
fn only_these_fail(checks: &[Value], failing: &[&str]) {
    for c in checks {
        let id = c["id"].as_str().unwrap_or_default();
        if !failing.contains(&id) {
            assert_ne!(c["status"], "fail", "{id} should not fail: {checks:#?}");
        }
    }
}

/// Asserts that check `id` was skipped naming `why`.
fn assert_skipped(checks: &[Value], id: &str, why: &str) {
    let c = check(checks, id);
    assert_eq!(c["status"], "skip", "{id} in {checks:#?}");
    let message = c["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{id}: {message:?} should name {why:?}");
}

/// The config line starting with `key:` replaced by `key: value`.
fn with_field(yaml: &str, key: &str, value: &str) -> String {
    yaml.lines()
        .map(|l| {
            if l.trim_start().starts_with(&format!("{key}:")) {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}{key}: {value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[tokio::test]
async fn untrusted_unreachable_and_sealed_openbao_are_named_and_local_checks_still_run() -> anyhow::Result<()> {
    let (bao, _p, env) = dev_setup().await?;
    // A registry and identity pins from a first start.
    let mut provider = Provider::start(&env).await?;
    provider.terminate().await?;
    let yaml = env.config_yaml();
    let local_checks_run = |checks: &[Value], why: &str| {
        for id in [
            "config.validate",
            "socket.group",
            "auth.token.local",
            "key_id.deterministic",
        ] {
            assert_eq!(check(checks, id)["status"], "pass", "{id}: {checks:#?}");
        }
        let registry = check(checks, "registry.state");
        assert_eq!(registry["status"], "pass", "{checks:#?}");
        assert!(
            registry["message"].as_str().unwrap_or_default().contains(why),
            "{registry}"
        );
        assert_skipped(checks, "openbao.identity", "pinned: cluster_id");
        for id in [
            "openbao.auth",
            "transit.capabilities",
            "transit.metadata",
            "transit.profile",
            "transit.disable_upsert",
            "transit.probe",
        ] {
            assert_skipped(checks, id, why);
        }
    };

    // A CA that did not sign OpenBao's certificate.
    let stranger = CertificateParams::new(vec!["localhost".to_owned()])?.self_signed(&KeyPair::generate()?)?;
    let other_ca = env.dir().join("other-ca.pem");
    std::fs::write(&other_ca, stranger.pem())?;
    env.write_config_text(&with_field(&yaml, "caCertFile", &other_ca.display().to_string()))?;
    let (code, checks) = doctor(&env)?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_fails(&checks, "openbao.tls", "unusable over TLS");
    assert_fails(&checks, "openbao.tls", "UnknownIssuer");
    assert_skipped(&checks, "openbao.health", "openbao.tls");
    local_checks_run(&checks, "OpenBao is unusable over TLS (openbao.tls)");
    only_these_fail(&checks, &["openbao.tls"]);

    // Nothing listens at the address.
    let closed = format!("https://127.0.0.1:{}", free_port()?);
    env.write_config_text(&with_field(&yaml, "address", &closed))?;
    let (code, checks) = doctor(&env)?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_fails(&checks, "openbao.tls", "unreachable");
    assert!(
        check(&checks, "openbao.tls")["fix"]
            .as_str()
            .unwrap_or_default()
            .contains(&closed),
        "{checks:#?}"
    );
    local_checks_run(&checks, "OpenBao is unreachable (openbao.tls)");
    only_these_fail(&checks, &["openbao.tls"]);

    // The right OpenBao, sealed: TLS works, the state is named.
    env.write_config_text(&yaml)?;
    bao.seal().await?;
    let (code, checks) = doctor(&env)?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_eq!(check(&checks, "openbao.tls")["status"], "pass", "{checks:#?}");
    assert_fails(&checks, "openbao.health", "openbao_sealed: OpenBao is sealed");
    assert!(
        check(&checks, "openbao.health")["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("bao operator unseal"),
        "{checks:#?}"
    );
    local_checks_run(&checks, "OpenBao is sealed (openbao.health)");
    only_these_fail(&checks, &["openbao.health"]);

    // serve, against the same sealed OpenBao, leads with the same cause.
    let (code, stderr) = Provider::spawn(&env)?
        .wait_exit_without_socket(std::time::Duration::from_secs(30))
        .await?;
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("probe_failed: openbao_sealed: "), "{stderr}");
    assert!(!stderr.contains("auth_failed: "), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn status_encrypt_runs_serve_in_process_and_writes_nothing() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    // No registry yet: the in-process provider bootstraps in its own copy.
    let (code, checks) = doctor(&env)?;
    assert_eq!(code, 0, "{checks:#?}");
    assert_eq!(check(&checks, "registry.state")["status"], "warn", "{checks:#?}");
    let c = check(&checks, "kms.status_encrypt");
    assert_eq!(c["status"], "pass", "{checks:#?}");
    let message = c["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("healthz ok, version v2, key_id hash "), "{message}");
    let key_id = bao_kms_system_tests::provider::expected_key_id(&bao, &p, &env, 1)?;
    assert!(message.contains(&bao_kms_core::hash::h(&key_id)), "{message}");
    let state_dir = env
        .state_path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let left: Vec<_> = std::fs::read_dir(&state_dir)?.collect::<Result<_, _>>()?;
    assert!(left.is_empty(), "doctor wrote into the state directory: {left:?}");

    // Serve would refuse this mount: so does the in-process Status.
    bao.bao(&["write", &format!("{}/config/keys", p.mount), "disable_upsert=false"])?;
    let (code, checks) = doctor(&env)?;
    assert_eq!(code, EXIT_DIAGNOSTIC);
    assert_fails(&checks, "kms.status_encrypt", "upsert_allowed");
    Ok(())
}
