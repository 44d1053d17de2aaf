//! `bao-kms-provider key-snapshots` (the AAD-mismatch aid) against a
//! registry the real provider wrote through a rotation: for every record,
//! the annotations it prints are exactly those Encrypt returned over the
//! socket under that key_id, and the AAD hash is the hash of the canonical
//! AAD derived independently from the configuration. Unknown and malformed
//! key_ids are refused with the reason Decrypt would give.

use bao_kms_core::aad;
use bao_kms_core::hash::{h, sha256_b64url};
use bao_kms_core::keyid::KeyId;
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, run_json};
use bao_kms_system_tests::provider::{
    ALLOWED_SOCKET_DIR_ENV, dev_setup_with, fast_rotation, provider_binary, rotate_and_promote,
};
use bao_kms_system_tests::{EncryptedSeed, Provider};
use serde_json::Value;

fn annotations_of(seed: &EncryptedSeed) -> Value {
    Value::Object(
        seed.annotations
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(String::from_utf8_lossy(v).into_owned())))
            .collect(),
    )
}

#[tokio::test]
async fn key_snapshots_print_what_decrypt_expects_for_each_key_id() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(fast_rotation).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let v1 = kms.prime().await?;
    rotate_and_promote(&bao, &p, &env, &provider, 2).await?;
    let v2 = kms.prime().await?;
    let meta = bao.key_metadata(&p)?;

    let (code, report) = run_json(&env, "key-snapshots", &[], &[])?;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["activeKeyIdHash"], h(&v2.key_id));
    let snaps = report["snapshots"].as_array().cloned().unwrap_or_default();
    assert_eq!(snaps.len(), 2, "{report:#}");
    for (seed, version, state) in [(&v2, 2u64, "active"), (&v1, 1, "retired")] {
        let snap = snaps
            .iter()
            .find(|s| s["transitVersion"] == version)
            .unwrap_or_else(|| panic!("no version {version} in {report:#}"));
        assert_eq!(snap["state"], state);
        assert_eq!(snap["keyId"], seed.key_id.as_str());
        assert_eq!(snap["keyIdHash"], h(&seed.key_id));
        assert_eq!(snap["annotations"], annotations_of(seed), "{snap:#}");
        let expected = KeySnapshot {
            version,
            created_unix: meta.created_unix(version)?,
            key_id: KeyId::parse(&seed.key_id)?,
        };
        let canonical = aad::canonical(&env.scope(), &expected);
        assert_eq!(snap["aadHash"], sha256_b64url(&canonical), "{snap:#}");
        assert_eq!(snap["aad"], String::from_utf8(canonical)?);
    }

    // One key_id, by value and by hash.
    let (code, one) = run_json(&env, "key-snapshots", &["--key-id", &v1.key_id], &[])?;
    assert_eq!(code, 0, "{one:#}");
    assert_eq!(one["snapshots"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["snapshots"][0]["transitVersion"], 1);
    let (code, one) = run_json(&env, "key-snapshots", &["--key-id-hash", &h(&v2.key_id)], &[])?;
    assert_eq!(code, 0, "{one:#}");
    assert_eq!(one["snapshots"][0]["state"], "active");

    // Unknown and malformed key_ids: refused with Decrypt's reason.
    let unknown = KeyId::derive(&env.scope(), 9, 1_700_000_000)?;
    let (code, r) = run_json(&env, "key-snapshots", &["--key-id", unknown.as_str()], &[])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{r:#}");
    assert!(r["reasons"].to_string().contains("key_id_unknown"), "{r:#}");
    let (code, r) = run_json(&env, "key-snapshots", &["--key-id", "not-a-key-id"], &[])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{r:#}");
    assert!(r["reasons"].to_string().contains("key_id_malformed"), "{r:#}");

    // Text: one block per version, annotations one per line.
    let out = std::process::Command::new(provider_binary())
        .args(["key-snapshots", "--config"])
        .arg(env.config_path())
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("\nversion 2 (active)\n"), "{text}");
    assert!(text.contains("\nversion 1 (retired)\n"), "{text}");
    assert!(
        text.contains(&format!("    key-id-hash.kms.openbao.org: {}\n", h(&v1.key_id))),
        "{text}"
    );
    assert!(text.contains("(any non-empty value; not compared)"), "{text}");
    Ok(())
}
