//! TLS to OpenBao fails closed with a clear reason: a CA bundle that does
//! not sign OpenBao's certificate, and a `tlsServerName` the certificate
//! does not cover, each stop startup (exit 5) naming the class and the
//! certificate problem.

use std::time::Duration;

use bao_kms_system_tests::Provider;
use bao_kms_system_tests::provider::dev_setup_with;
use rcgen::{CertificateParams, KeyPair};

const EXIT_RUNTIME: i32 = 5;

async fn refused(edit: impl Fn(String) -> String) -> anyhow::Result<String> {
    let (_bao, _p, env) = dev_setup_with(|b| b.grace_timeout("2s")).await?;
    env.write_config_text(&edit(env.config_yaml()))?;
    let (code, stderr) = Provider::spawn(&env)?
        .wait_exit_without_socket(Duration::from_secs(20))
        .await?;
    assert_eq!(code, EXIT_RUNTIME, "{stderr}");
    assert!(stderr.contains("openbao_tls_failed"), "{stderr}");
    Ok(stderr)
}

#[tokio::test]
async fn untrusted_server_certificate_is_named() -> anyhow::Result<()> {
    let stranger = CertificateParams::new(vec!["localhost".to_owned()])?.self_signed(&KeyPair::generate()?)?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, stranger.pem())?;
    let ca = ca.display().to_string();
    let stderr = refused(|yaml| {
        let line = yaml
            .lines()
            .find(|l| l.trim_start().starts_with("caCertFile:"))
            .unwrap_or_default()
            .to_owned();
        yaml.replace(&line, &format!("  caCertFile: {ca}"))
    })
    .await?;
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn mismatched_server_name_is_named() -> anyhow::Result<()> {
    let stderr = refused(|yaml| yaml.replace("tlsServerName: localhost", "tlsServerName: bao.wrong.example")).await?;
    assert!(stderr.contains("not valid for name \"bao.wrong.example\""), "{stderr}");
    Ok(())
}
