//! Each refusal with its class, in the documented order, and the Transit
//! call an admitted request makes.

use super::*;
use crate::identity::tests::sample_scope;

fn snapshot(version: u64) -> KeySnapshot {
    KeySnapshot::new(&sample_scope(), version, 1_700_000_000 + version as i64).unwrap()
}

fn stored_annotations(snap: &KeySnapshot) -> HashMap<String, Vec<u8>> {
    annotations::build(&sample_scope(), snap, "0.1.0").into_iter().collect()
}

fn request<'a>(ciphertext: &'a [u8], key_id: &'a str, ann: &'a HashMap<String, Vec<u8>>) -> DecryptRequest<'a> {
    DecryptRequest {
        ciphertext,
        uid: "uid-1",
        key_id,
        annotations: ann,
    }
}

#[test]
fn an_admitted_decrypt_calls_transit_with_the_snapshot_aad() {
    let snap = snapshot(3);
    let ann = stored_annotations(&snap);
    let req = request(b"vault:v3:AAAA", snap.key_id.as_str(), &ann);
    assert_eq!(decrypt_key_id(&req).unwrap(), snap.key_id);
    let call = decrypt_call(&req, &sample_scope(), &snap).unwrap();
    assert_eq!(call.ciphertext, "vault:v3:AAAA");
    assert_eq!(call.aad, aad::canonical(&sample_scope(), &snap));
}

#[test]
fn sizes_are_checked_before_the_key_id() {
    let ann = HashMap::new();
    let big = vec![b'x'; limits::MAX_CIPHERTEXT_BYTES + 1];
    let e = decrypt_key_id(&request(&big, "not-a-key-id", &ann)).unwrap_err();
    assert_eq!(e.class, ErrorClass::ProtocolLimit);
    let e = decrypt_key_id(&request(b"vault:v1:AAAA", "not-a-key-id", &ann)).unwrap_err();
    assert_eq!(e.class, ErrorClass::KeyIdMalformed);
    let e = decrypt_key_id(&request(b"vault:v1:AAAA", "", &ann)).unwrap_err();
    assert_eq!(e.class, ErrorClass::ProtocolLimit);
}

#[test]
fn annotations_and_the_ciphertext_version_must_match_the_snapshot() {
    let (v3, v4) = (snapshot(3), snapshot(4));
    let scope = sample_scope();
    // Annotations of another version of the same key.
    let other = stored_annotations(&v4);
    let e = decrypt_call(&request(b"vault:v3:AAAA", v3.key_id.as_str(), &other), &scope, &v3).unwrap_err();
    assert_eq!(e.class, ErrorClass::AadMismatch);
    // A ciphertext of another version under this key_id.
    let ann = stored_annotations(&v3);
    for bad in [&b"vault:v4:AAAA"[..], b"vault:v3:", b"vault:v03:AAAA", b"\xff\xfe"] {
        let e = decrypt_call(&request(bad, v3.key_id.as_str(), &ann), &scope, &v3).unwrap_err();
        assert_eq!(e.class, ErrorClass::AadMismatch, "{bad:?}");
        assert_eq!(e.message, "ciphertext is not a Transit version 3 ciphertext");
    }
    let mut missing = ann.clone();
    missing.retain(|k, _| !k.starts_with("key-id-hash"));
    let e = decrypt_call(&request(b"vault:v3:AAAA", v3.key_id.as_str(), &missing), &scope, &v3).unwrap_err();
    assert_eq!(e.class, ErrorClass::AadMissing);
    let mut odd = ann.clone();
    odd.insert("NotAnFqdn".into(), b"x".to_vec());
    let e = decrypt_call(&request(b"vault:v3:AAAA", v3.key_id.as_str(), &odd), &scope, &v3).unwrap_err();
    assert_eq!(e.class, ErrorClass::AnnotationInvalid);
}

#[test]
fn unknown_and_removed_key_ids_are_not_found() {
    assert_eq!(key_id_unknown().class, ErrorClass::KeyIdUnknown);
    let removed = key_id_removed(2);
    assert_eq!(removed.class, ErrorClass::KeyIdUnknown);
    assert!(removed.message.contains("Transit version 2"));
    let refresh = key_metadata_refresh_failed("timeout");
    assert_eq!(refresh.class, ErrorClass::KeyMetadataRefreshFailed);
    assert!(refresh.message.ends_with("read failed: timeout"));
}

#[test]
fn encrypt_uses_the_explicit_active_version_and_checks_the_answer() {
    let scope = sample_scope();
    let active = snapshot(5);
    assert_eq!(
        encrypt_call(&scope, &active),
        EncryptCall {
            aad: aad::canonical(&scope, &active),
            key_version: 5
        }
    );
    let answer = encrypt_answer("vault:v5:AAAA".into(), &scope, &active, "0.1.0").unwrap();
    assert_eq!(answer.key_id, active.key_id);
    assert_eq!(answer.ciphertext, b"vault:v5:AAAA");
    assert_eq!(answer.annotations, annotations::build(&scope, &active, "0.1.0"));
    let oversize = format!("vault:v5:{}", "A".repeat(limits::MAX_CIPHERTEXT_BYTES));
    let e = encrypt_answer(oversize, &scope, &active, "0.1.0").unwrap_err();
    assert_eq!(e.class, ErrorClass::InvalidResponse);
    assert_eq!(
        check_encrypt_request(&[], "u").unwrap_err().class,
        ErrorClass::ProtocolLimit
    );
}

#[test]
fn encrypt_refusals_name_the_reasons() {
    let stale = encrypt_refused(true, &["status_stale"]);
    assert_eq!(stale.class, ErrorClass::StatusStale);
    let unhealthy = encrypt_refused(false, &["metadata_read_failed", "deep_probe_failed"]);
    assert_eq!(unhealthy.class, ErrorClass::StatusUnhealthy);
    assert_eq!(
        unhealthy.message,
        "provider is not healthy (metadata_read_failed, deep_probe_failed); refusing to encrypt"
    );
}
