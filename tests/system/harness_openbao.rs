//! The harness's OpenBao servers, and the documented least-privilege policy
//! checked against the real server: the provider's token can read its key
//! and encrypt/decrypt with it, and can do nothing that changes or reveals
//! key material (rotate, export, backup, key or mount config writes).

use bao_kms_system_tests::openbao::CliOutput;
use bao_kms_system_tests::{OpenBao, Provisioned, provision};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

const MOUNT: &str = "transit";
const KEY: &str = "k8s-workload-a-etcd";

/// Transit encrypt with AAD and an explicit version, as the provider calls it.
fn encrypt_as(bao: &OpenBao, p: &Provisioned, plaintext: &[u8], aad: &[u8]) -> anyhow::Result<String> {
    let out = bao.bao_as(
        &p.token,
        &[
            "write",
            "-field=ciphertext",
            &format!("{}/encrypt/{}", p.mount, p.key),
            &format!("plaintext={}", B64.encode(plaintext)),
            &format!("associated_data={}", B64.encode(aad)),
            "key_version=1",
        ],
    )?;
    anyhow::ensure!(out.success, "encrypt failed: {}", out.stderr);
    Ok(out.stdout.trim().to_owned())
}

fn decrypt_as(bao: &OpenBao, p: &Provisioned, ciphertext: &str, aad: &[u8]) -> anyhow::Result<CliOutput> {
    bao.bao_as(
        &p.token,
        &[
            "write",
            "-field=plaintext",
            &format!("{}/decrypt/{}", p.mount, p.key),
            &format!("ciphertext={ciphertext}"),
            &format!("associated_data={}", B64.encode(aad)),
        ],
    )
}

fn assert_forbidden(out: &CliOutput, what: &str) {
    assert!(
        !out.success,
        "{what}: the provider's token must not be allowed, but it was: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("Code: 403"),
        "{what}: expected 403 Forbidden, got: {}",
        out.stderr
    );
}

#[tokio::test]
async fn provisioned_key_has_the_expected_profile() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, MOUNT, KEY)?;

    let meta = bao.key_metadata(&p)?;
    assert_eq!(meta.key_type, "aes256-gcm96");
    assert_eq!(meta.latest_version, 1);
    assert_eq!(meta.min_decryption_version, 1);
    assert!(
        meta.created_unix(1)? > 1_600_000_000,
        "creation second of version 1: {meta:?}"
    );

    let config = bao.read_json(&format!("{MOUNT}/config/keys"))?;
    assert_eq!(config.get("disable_upsert"), Some(&Value::Bool(true)));

    bao.rotate_key(&p)?;
    let rotated = bao.key_metadata(&p)?;
    assert_eq!(rotated.latest_version, 2);
    assert_eq!(rotated.created_unix(1)?, meta.created_unix(1)?);
    Ok(())
}

#[tokio::test]
async fn policy_token_uses_the_key_and_nothing_more() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, MOUNT, KEY)?;
    let key_path = format!("{MOUNT}/keys/{KEY}");

    // Allowed: exactly what the provider does.
    let aad = br#"{"aad_version":"v1"}"#;
    let ciphertext = encrypt_as(&bao, &p, b"0123456789abcdef0123456789abcdef", aad)?;
    assert!(ciphertext.starts_with("vault:v1:"), "{ciphertext}");
    let plain = decrypt_as(&bao, &p, &ciphertext, aad)?;
    assert!(plain.success, "decrypt: {}", plain.stderr);
    assert_eq!(B64.decode(plain.stdout.trim())?, b"0123456789abcdef0123456789abcdef");
    let wrong_aad = decrypt_as(&bao, &p, &ciphertext, b"other")?;
    assert!(
        !wrong_aad.success && wrong_aad.stderr.contains("message authentication failed"),
        "{wrong_aad:?}"
    );

    for args in [
        vec!["read", key_path.as_str()],
        vec!["read", "transit/config/keys"],
        vec!["read", "sys/internal/ui/mounts/transit"],
        vec!["token", "lookup"],
        vec!["token", "renew"],
    ] {
        let out = bao.bao_as(&p.token, &args)?;
        assert!(out.success, "{args:?} must be allowed: {}", out.stderr);
    }
    let caps = bao.bao_as(&p.token, &["token", "capabilities", &format!("{MOUNT}/encrypt/{KEY}")])?;
    assert!(
        caps.success && caps.stdout.trim() == "update",
        "capabilities-self: {caps:?}"
    );
    let caps = bao.bao_as(&p.token, &["token", "capabilities", &format!("{key_path}/rotate")])?;
    assert!(
        caps.success && caps.stdout.trim() == "deny",
        "capabilities-self on rotate: {caps:?}"
    );

    // Denied: anything that changes, reveals or widens key material.
    let rotate = format!("{key_path}/rotate");
    let export = format!("{MOUNT}/export/encryption-key/{KEY}");
    let export_version = format!("{MOUNT}/export/encryption-key/{KEY}/1");
    let backup = format!("{MOUNT}/backup/{KEY}");
    let key_config = format!("{key_path}/config");
    let trim = format!("{key_path}/trim");
    let other_key = format!("{MOUNT}/keys/other-key");
    let other_encrypt = format!("{MOUNT}/encrypt/other-key");
    let rewrap = format!("{MOUNT}/rewrap/{KEY}");
    let datakey = format!("{MOUNT}/datakey/plaintext/{KEY}");
    let denied: Vec<Vec<&str>> = vec![
        vec!["write", "-f", &rotate],
        vec!["read", &export],
        vec!["read", &export_version],
        vec!["read", &backup],
        vec!["write", &key_config, "deletion_allowed=true"],
        vec!["write", &key_config, "min_decryption_version=1"],
        vec!["write", &trim, "min_available_version=1"],
        vec!["delete", &key_path],
        vec!["write", "transit/config/keys", "disable_upsert=false"],
        vec!["write", "-f", &other_key],
        vec!["write", &other_encrypt, "plaintext=aGk="],
        vec!["write", &rewrap, "ciphertext=vault:v1:AAAA"],
        vec!["write", "-f", &datakey],
        vec!["read", "sys/internal/ui/mounts/secret"],
        vec!["write", "sys/mounts/transit/tune", "default_lease_ttl=1h"],
        vec!["secrets", "disable", "transit"],
        vec!["token", "create"],
        vec!["policy", "read", &p.policy_name],
    ];
    for args in denied {
        let out = bao.bao_as(&p.token, &args)?;
        assert_forbidden(&out, &args.join(" "));
    }
    Ok(())
}

#[tokio::test]
async fn two_dev_servers_run_side_by_side() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(OpenBao::start_dev(), OpenBao::start_dev())?;
    assert_ne!(a.address(), b.address());
    provision(&a, MOUNT, KEY)?;
    provision(&b, MOUNT, KEY)?;
    Ok(())
}

#[tokio::test]
async fn raft_server_keeps_keys_and_tokens_across_restart_and_seal() -> anyhow::Result<()> {
    let mut bao = OpenBao::start_raft().await?;
    let p = provision(&bao, MOUNT, KEY)?;
    let before = bao.key_metadata(&p)?;
    let aad = b"aad";
    let ciphertext = encrypt_as(&bao, &p, b"persisted seed", aad)?;

    bao.stop().await?;
    assert_eq!(bao.health_code().await, None, "stopped server still answers");

    bao.start_again().await?;
    assert_eq!(bao.health_code().await, Some(200));
    assert_eq!(bao.key_metadata(&p)?, before);
    let out = decrypt_as(&bao, &p, &ciphertext, aad)?;
    assert!(out.success, "decrypt after restart: {}", out.stderr);
    assert_eq!(B64.decode(out.stdout.trim())?, b"persisted seed");

    bao.seal().await?;
    assert_eq!(bao.health_code().await, Some(503));
    let sealed = decrypt_as(&bao, &p, &ciphertext, aad)?;
    assert!(!sealed.success, "decrypt while sealed must fail");

    bao.unseal().await?;
    let out = decrypt_as(&bao, &p, &ciphertext, aad)?;
    assert!(out.success, "decrypt after unseal: {}", out.stderr);
    Ok(())
}
