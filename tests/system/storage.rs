//! `bao-kms-preflight storage` against a real etcd (TLS, client
//! certificates required) holding values in the exact format
//! kube-apiserver writes: `k8s:enc:kms:v2:<provider name>:` followed by the
//! protobuf `EncryptedObject` whose key_id, encrypted DEK seed and
//! annotations come from our provider's Encrypt over its socket (a real
//! OpenBao behind it, before and after a rotation), next to identity
//! values and an aescbc leftover. Counts are asserted exactly, over more
//! objects than one page; gates pass and fail; the provider's
//! `verify-rotation` and `retire-versions` take the report as evidence.
//! An unreachable etcd and refused certificates exit 5 naming the cause.
//!
//! `encryptedData` (the object sealed with the DEK derived from the seed)
//! is random bytes of a realistic length: `storage` never reads it, and the
//! test asserts that no value byte reaches the output.

use std::process::Command;

use bao_kms_core::hash::h;
use bao_kms_proto::v2::{EncryptedDekSourceType, EncryptedObject};
use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, run_json};
use bao_kms_system_tests::etcd::Etcd;
use bao_kms_system_tests::net::free_port;
use bao_kms_system_tests::provider::{dev_setup_with, fast_rotation, preflight_binary, rotate_and_promote};
use bao_kms_system_tests::{EncryptedSeed, Provider};
use prost::Message as _;
use rand::RngCore as _;
use serde_json::Value;

const EXIT_RUNTIME: i32 = 5;

/// The value kube-apiserver stores for an object sealed under `seed`.
fn kms_v2_value(provider: &str, seed: &EncryptedSeed) -> Vec<u8> {
    let mut data = vec![0u8; 32 + 12 + 300 + 16];
    rand::rng().fill_bytes(&mut data);
    let obj = EncryptedObject {
        encrypted_data: data,
        key_id: seed.key_id.clone(),
        encrypted_dek_source: seed.ciphertext.clone(),
        annotations: seed.annotations.clone(),
        encrypted_dek_source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32,
    };
    [format!("k8s:enc:kms:v2:{provider}:").into_bytes(), obj.encode_to_vec()].concat()
}

/// A Secret as the identity provider stores it (protobuf with the magic).
fn identity_secret(name: &str) -> Vec<u8> {
    [
        b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret\x12".to_vec(),
        name.as_bytes().to_vec(),
    ]
    .concat()
}

/// Runs `bao-kms-preflight storage <args>`; (exit code, stdout, stderr).
fn storage(args: &[String]) -> anyhow::Result<(i32, String, String)> {
    let out = Command::new(preflight_binary()).arg("storage").args(args).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

fn storage_json(args: &[String]) -> anyhow::Result<(i32, Value)> {
    let mut all = args.to_vec();
    all.extend(["-o".into(), "json".into()]);
    let (code, stdout, stderr) = storage(&all)?;
    let v = serde_json::from_str(&stdout).map_err(|e| anyhow::anyhow!("{e}: {stdout}{stderr}"))?;
    Ok((code, v))
}

/// `(resource, encryption, name, keyIdHash) -> (objects, transitVersion)`.
fn counts(report: &Value) -> Vec<(String, String, String, String, u64, Option<u64>)> {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let mut out = Vec::new();
    for r in report["resources"].as_array().into_iter().flatten() {
        for c in r["counts"].as_array().into_iter().flatten() {
            out.push((
                s(&r["resource"]),
                s(&c["encryption"]),
                s(&c["name"]),
                s(&c["keyIdHash"]),
                c["objects"].as_u64().unwrap_or(0),
                c["transitVersion"].as_u64(),
            ));
        }
    }
    out.sort();
    out
}

fn check(report: &Value, id: &str) -> (String, String) {
    let c = report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == id))
        .cloned()
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn storage_counts_mixed_key_ids_and_leftovers_and_gates_the_rotation() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let (bao, p, env) = dev_setup_with(fast_rotation).await?;
    let provider_name = env.settings().provider_name.clone();
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let v1 = kms.prime().await?;
    let k2 = rotate_and_promote(&bao, &p, &env, &provider, 2).await?;
    let v2 = kms.prime().await?;
    assert_eq!(v2.key_id, k2);
    let (h1, h2) = (h(&v1.key_id), h(&v2.key_id));

    // 6 secrets under v1, 9 under v2, 2 identity, 1 aescbc; 3 configmaps
    // under v2; 2 pods (JSON, identity). 23 objects, page size 4.
    for i in 0..6 {
        etcd.put(
            &format!("/registry/secrets/ns-a/old-{i}"),
            &kms_v2_value(&provider_name, &v1),
        )
        .await?;
    }
    for i in 0..9 {
        etcd.put(
            &format!("/registry/secrets/ns-b/new-{i}"),
            &kms_v2_value(&provider_name, &v2),
        )
        .await?;
    }
    for i in 0..2 {
        etcd.put(
            &format!("/registry/secrets/kube-system/plain-{i}"),
            &identity_secret("plain"),
        )
        .await?;
    }
    let mut aescbc = b"k8s:enc:aescbc:v1:key1:".to_vec();
    aescbc.extend_from_slice(&[7u8; 64]);
    etcd.put("/registry/secrets/legacy/cbc", &aescbc).await?;
    for i in 0..3 {
        etcd.put(
            &format!("/registry/configmaps/ns-b/cm-{i}"),
            &kms_v2_value(&provider_name, &v2),
        )
        .await?;
    }
    for i in 0..2 {
        etcd.put(
            &format!("/registry/pods/default/pod-{i}"),
            br#"{"kind":"Pod","apiVersion":"v1"}"#,
        )
        .await?;
    }
    // Outside the store prefix: never counted.
    etcd.put("/other/secrets/x", b"k8s:enc:aescbc:v1:key9:zz").await?;

    let mut args = etcd.storage_flags();
    args.extend([
        "--page-size".into(),
        "4".into(),
        "--config".into(),
        env.config_path().display().to_string(),
        "--allowed-socket-dir".into(),
        env.socket_dir().display().to_string(),
    ]);
    let (code, report) = storage_json(&args)?;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["schemaVersion"], "storagereport.openbao-kms/v1");
    assert_eq!(report["objects"], 23, "{report:#}");
    assert_eq!(report["complete"], true);
    assert_eq!(report["etcd"]["prefix"], "/registry/");
    assert!(report["etcd"]["revision"].as_i64().unwrap_or(0) > 0);
    assert_eq!(report["registry"]["providerName"], provider_name.as_str());
    let n = provider_name.as_str();
    let row = |res: &str, enc: &str, name: &str, hash: &str, objects: u64, version: Option<u64>| {
        (
            res.to_owned(),
            enc.to_owned(),
            name.to_owned(),
            hash.to_owned(),
            objects,
            version,
        )
    };
    let mut want = vec![
        row("configmaps", "kms-v2", n, &h2, 3, Some(2)),
        row("pods", "identity", "-", "-", 2, None),
        row("secrets", "aescbc", "key1", "-", 1, None),
        row("secrets", "identity", "-", "-", 2, None),
        row("secrets", "kms-v2", n, &h1, 6, Some(1)),
        row("secrets", "kms-v2", n, &h2, 9, Some(2)),
    ];
    want.sort();
    assert_eq!(counts(&report), want, "{report:#}");
    // Nothing of a value is printed: not the key_ids, not the Transit ciphertexts.
    let text = report.to_string();
    assert!(!text.contains(&v1.key_id) && !text.contains(&v2.key_id), "{text}");
    assert!(!text.contains("vault:v"), "{text}");

    // The table an operator reads (the same counts).
    let (code, table, _) = storage(&args)?;
    assert_eq!(code, 0, "{table}");
    println!("{table}");
    assert!(table.starts_with("RESOURCE"), "{table}");
    assert!(
        table.contains(&format!("secrets      kms-v2       {n}   {h1}   1         6")),
        "{table}"
    );
    assert!(table.contains("23 objects in 3 resources under /registry/"), "{table}");

    // Gates: the rewrite is not done (v1 secrets and the aescbc leftover).
    let mut gate = args.clone();
    gate.extend([
        "--require-key-id-hash".into(),
        h2.clone(),
        "--forbid-version-below".into(),
        "2".into(),
    ]);
    let (code, report) = storage_json(&gate)?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{report:#}");
    let (status, message) = check(&report, "storage.key_id_hash");
    assert_eq!(status, "fail");
    assert!(
        message.starts_with(&format!("7 of 19 encrypted objects do not use key_id hash {h2}")),
        "{message}"
    );
    let (status, message) = check(&report, "storage.min_version");
    assert_eq!(status, "fail");
    assert!(
        message.contains(&format!("secrets: 6 kms-v2 {n} {h1} (v1)")),
        "{message}"
    );
    let mut low = args.clone();
    low.extend(["--forbid-version-below".into(), "1".into()]);
    let (code, report) = storage_json(&low)?;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(check(&report, "storage.min_version").0, "pass");

    // --forbid-version-below needs the registry: a usage error without --config.
    let mut no_config = etcd.storage_flags();
    no_config.extend(["--forbid-version-below".into(), "2".into()]);
    assert_eq!(storage(&no_config)?.0, 2);

    // One resource only: counted, but not evidence for the store.
    let mut narrow = args.clone();
    narrow.extend(["--resource".into(), "configmaps".into()]);
    let (code, report) = storage_json(&narrow)?;
    assert_eq!(code, 0);
    assert_eq!(report["objects"], 3);
    assert_eq!(report["complete"], false);

    // The provider takes the report as evidence: every object decryptable,
    // 6 still on v1, so retiring v1 is refused; verify-rotation is complete.
    let report_file = env.dir().join("storage-report.json");
    let (_, stdout, _) = storage(&[args.clone(), vec!["-o".into(), "json".into()]].concat())?;
    std::fs::write(&report_file, &stdout)?;
    let evidence = ["--storage-report", report_file.to_str().unwrap_or_default()];
    let (code, verify) = run_json(&env, "verify-rotation", &evidence, &[])?;
    assert_eq!(code, 0, "{verify:#}");
    assert_eq!(verify["confidence"], "complete", "{verify:#}");
    assert_eq!(verify["rewriteComplete"], false);
    assert_eq!(verify["storageObjects"], 18);
    assert_eq!(verify["storageObjectsOnActiveKey"], 12);
    assert_eq!(
        verify["storageObjectsByVersion"],
        serde_json::json!({"v1": 6, "v2": 12})
    );
    assert!(!verify["limitations"].to_string().contains("etcd"), "{verify:#}");
    let retire = [&["--before-version", "2"][..], &evidence[..]].concat();
    let (code, plan) = run_json(&env, "retire-versions", &retire, &[])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{plan:#}");
    assert_eq!(plan["confidence"], "limited");
    assert!(
        plan["reasons"]
            .to_string()
            .contains("secrets: 6 objects still use version 1"),
        "{plan:#}"
    );
    let (code, plan) = run_json(&env, "retire-versions", &["--before-version", "2"], &[])?;
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["confidence"], "limited", "without evidence");

    // "Rewrite" the v1 secrets as kube-apiserver would with the v2 DEK.
    for i in 0..6 {
        etcd.put(
            &format!("/registry/secrets/ns-a/old-{i}"),
            &kms_v2_value(&provider_name, &v2),
        )
        .await?;
    }
    let (code, report) = storage_json(&gate)?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{report:#}");
    // Only the aescbc leftover is still not under the new key.
    let (_, message) = check(&report, "storage.key_id_hash");
    assert!(message.starts_with("1 of 19 "), "{message}");
    assert!(message.contains("secrets: 1 aescbc key1"), "{message}");
    assert_eq!(check(&report, "storage.min_version").0, "pass");

    // Now retiring v1 is proven safe for the live store.
    let (_, stdout, _) = storage(&[args.clone(), vec!["-o".into(), "json".into()]].concat())?;
    std::fs::write(&report_file, &stdout)?;
    let (code, plan) = run_json(&env, "retire-versions", &retire, &[])?;
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["confidence"], "complete", "{plan:#}");
    assert_eq!(plan["removedVersions"], serde_json::json!([1]));
    assert!(
        plan["limitations"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("the storage report proves"),
        "{plan:#}"
    );
    let (code, verify) = run_json(&env, "verify-rotation", &evidence, &[])?;
    assert_eq!(code, 0, "{verify:#}");
    assert_eq!(verify["rewriteComplete"], true, "{verify:#}");

    // A report that is not one fails with the reason.
    std::fs::write(&report_file, "{}")?;
    let (code, verify) = run_json(&env, "verify-rotation", &evidence, &[])?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{verify:#}");
    assert_eq!(verify["confidence"], "limited");
    assert!(
        verify["storageFindings"]
            .to_string()
            .contains("is not a `bao-kms-preflight storage -o json` report"),
        "{verify:#}"
    );
    Ok(())
}

#[tokio::test]
async fn unreachable_etcd_and_refused_certificates_exit_5_naming_the_cause() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    etcd.put("/registry/secrets/a/b", b"k8s\x00x").await?;

    // Nothing listens on the port.
    let mut args = etcd.storage_flags();
    args[1] = format!("https://127.0.0.1:{}", free_port()?);
    args.extend(["--timeout".into(), "3s".into()]);
    let (code, out, err) = storage(&args)?;
    assert_eq!(code, EXIT_RUNTIME, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("cannot connect to etcd at {}", args[1])) && err.contains("nothing listens there"),
        "{err}"
    );

    // A client certificate from a CA etcd does not trust.
    let args = etcd.flags_with(&etcd.ca, &etcd.foreign_client);
    let (code, out, err) = storage(&args)?;
    assert_eq!(code, EXIT_RUNTIME, "{out}{err}");
    assert!(err.contains("etcd rejected the client certificate"), "{err}");

    // etcd's serving certificate checked against the wrong CA.
    let args = etcd.flags_with(&etcd.foreign_ca, &etcd.client);
    let (code, out, err) = storage(&args)?;
    assert_eq!(code, EXIT_RUNTIME, "{out}{err}");
    assert!(
        err.contains("etcd's serving certificate is not signed by --etcd-cafile"),
        "{err}"
    );

    // A missing key file is named.
    let mut args = etcd.storage_flags();
    args[7] = "/nonexistent/client.key".into();
    let (code, _, err) = storage(&args)?;
    assert_eq!(code, EXIT_RUNTIME);
    assert!(
        err.contains("cannot read --etcd-keyfile /nonexistent/client.key"),
        "{err}"
    );

    // The good pair reads.
    let (code, report) = storage_json(&etcd.storage_flags())?;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["objects"], 1);
    Ok(())
}
