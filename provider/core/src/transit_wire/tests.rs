//! Known-answer vectors for every body the provider sends and every answer
//! it parses, and the classification table.

use super::*;

const AAD: &[u8] = br#"{"aad":"v1"}"#;

fn plaintext() -> Vec<u8> {
    (0u8..32).collect()
}

#[test]
fn encrypt_body_is_byte_exact() {
    let body = encrypt_body(&plaintext(), AAD, 3);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"plaintext":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","associated_data":"eyJhYWQiOiJ2MSJ9","key_version":3}"#
    );
    // The same bytes a JSON encoder writes for the same object.
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["key_version"], 3);
}

#[test]
fn decrypt_body_is_byte_exact() {
    assert_eq!(
        String::from_utf8(decrypt_body("vault:v3:AAAA", AAD)).unwrap(),
        r#"{"ciphertext":"vault:v3:AAAA","associated_data":"eyJhYWQiOiJ2MSJ9"}"#
    );
    // Anything unusual in the string is escaped, never spliced.
    let odd = String::from_utf8(decrypt_body("a\"b\\c", b"")).unwrap();
    let v: Value = serde_json::from_str(&odd).unwrap();
    assert_eq!(v["ciphertext"], "a\"b\\c");
}

#[test]
fn other_bodies_are_byte_exact() {
    assert_eq!(renew_body(3600), br#"{"increment":"3600s"}"#);
    assert_eq!(
        capabilities_body(&["transit/encrypt/k".to_owned(), "sys/x".to_owned()]),
        br#"{"paths":["transit/encrypt/k","sys/x"]}"#
    );
}

#[test]
fn paths_escape_the_key_name_once() {
    assert_eq!(escape_segment("k8s-workload-a.etcd_1"), "k8s-workload-a.etcd_1");
    assert_eq!(escape_segment("a b/c%"), "a%20b%2Fc%25");
    assert_eq!(transit_path("/transit/", "encrypt", "a b"), "transit/encrypt/a%20b");
    assert_eq!(transit_config_path("transit/"), "transit/config/keys");
    assert_eq!(mount_path("kv/transit"), "sys/internal/ui/mounts/kv/transit");
    assert!(!namespaced(Op::OpenBaoHealth));
    assert!(namespaced(Op::TransitDecrypt));
}

#[test]
fn the_ciphertext_version_rule() {
    assert_eq!(ciphertext_version("vault:v1:AAAA"), Some(1));
    assert_eq!(ciphertext_version("vault:v12:x"), Some(12));
    for bad in [
        "vault:v0:AAAA",
        "vault:v01:AAAA",
        "vault:v:AAAA",
        "vault:v1:",
        "vault:v1",
        "vault:vx:AAAA",
        "vault:v+1:AAAA",
        "vault:v-1:AAAA",
        "Vault:v1:AAAA",
        "vault:v99999999999999999999999:AAAA",
        "",
    ] {
        assert_eq!(ciphertext_version(bad), None, "{bad:?}");
    }
}

#[test]
fn encrypt_answers() {
    let ok = br#"{"data":{"ciphertext":"vault:v3:abc","key_version":3}}"#;
    assert_eq!(parse_encrypt(ok, 3).unwrap(), "vault:v3:abc");
    // Older servers omit key_version: the prefix alone decides.
    assert_eq!(
        parse_encrypt(br#"{"data":{"ciphertext":"vault:v3:abc"}}"#, 3).unwrap(),
        "vault:v3:abc"
    );
    let cases: [(&[u8], &str); 4] = [
        (
            br#"{"data":{"ciphertext":"vault:v3:abc","key_version":4}}"#,
            "different key version",
        ),
        (br#"{"data":{"ciphertext":"vault:v4:abc"}}"#, "does not carry"),
        (br#"{"data":{}}"#, "data.ciphertext missing"),
        (b"not json", "not JSON"),
    ];
    for (body, want) in cases {
        let e = parse_encrypt(body, 3).unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidResponse);
        assert!(e.message.contains(want), "{e}");
    }
}

#[test]
fn decrypt_answers() {
    let body = br#"{"data":{"plaintext":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}"#;
    assert_eq!(parse_decrypt(body).unwrap().as_slice(), plaintext().as_slice());
    assert!(parse_decrypt(br#"{"data":{"plaintext":"%%"}}"#).is_err());
    assert!(parse_decrypt(br#"{"data":{}}"#).is_err());
    assert!(parse_decrypt(b"").is_err());
}

#[test]
fn identity_answers() {
    assert_eq!(parse_cluster_id(br#"{"cluster_id":"c-1"}"#).unwrap(), "c-1");
    assert!(parse_cluster_id(br#"{"cluster_id":""}"#).is_err());
    assert!(parse_cluster_id(b"{}").is_err());
    let mount = br#"{"data":{"accessor":"transit_1","uuid":"u-1","type":"transit"}}"#;
    assert_eq!(
        parse_mount_identity(mount, "transit").unwrap(),
        MountIdentity {
            accessor: "transit_1".into(),
            uuid: "u-1".into()
        }
    );
    let kv = br#"{"data":{"accessor":"kv_1","uuid":"u-2","type":"kv"}}"#;
    let e = parse_mount_identity(kv, "transit").unwrap_err();
    assert_eq!(e.class, ErrorClass::TransitKeyMissing);
    assert_eq!(e.message, "mount transit is not a Transit mount");
    assert!(parse_disable_upsert(br#"{"data":{"disable_upsert":true}}"#).unwrap());
    assert!(!parse_disable_upsert(br#"{"data":{"disable_upsert":false}}"#).unwrap());
    assert!(parse_disable_upsert(br#"{"data":{}}"#).is_err());
}

#[test]
fn token_answers() {
    let (token, lease) =
        parse_login(br#"{"auth":{"client_token":"s.abc","lease_duration":60,"renewable":true}}"#).unwrap();
    assert_eq!(token.as_str(), "s.abc");
    assert_eq!(
        lease,
        TokenLease {
            ttl_secs: 60,
            renewable: true
        }
    );
    for bad in [&br#"{"auth":{"client_token":""}}"#[..], b"{}", b"x"] {
        let e = parse_login(bad).unwrap_err();
        // Never echo the body: it may hold a token.
        assert!(!e.message.contains("s.abc"));
    }
    assert_eq!(
        parse_token_lookup(br#"{"data":{"ttl":30,"renewable":false}}"#).unwrap(),
        TokenLease {
            ttl_secs: 30,
            renewable: false
        }
    );
    assert_eq!(
        parse_token_renew(br#"{"auth":{"lease_duration":90,"renewable":true}}"#).unwrap(),
        TokenLease {
            ttl_secs: 90,
            renewable: true
        }
    );
}

#[test]
fn capability_answers_follow_the_asked_paths() {
    let paths = ["a/b".to_owned(), "c".to_owned()];
    let body = br#"{"data":{"c":["read"],"a/b":["update","read"]}}"#;
    assert_eq!(
        parse_capabilities(body, &paths).unwrap(),
        vec![
            ("a/b".to_owned(), vec!["update".to_owned(), "read".to_owned()]),
            ("c".to_owned(), vec!["read".to_owned()])
        ]
    );
    assert!(parse_capabilities(br#"{"c":["read"]}"#, &paths).is_err());
}

#[test]
fn metadata_answers() {
    let body = serde_json::to_vec(&json!({"data": crate::transit::tests::fresh_key_json()})).unwrap();
    let meta = parse_key_metadata_answer(&body).unwrap();
    assert_eq!(meta.latest_version, 1);
    assert!(parse_key_metadata_answer(b"{}").is_err());
    assert!(parse_key_metadata_answer(b"<html>").is_err());
}

#[test]
fn error_text_keeps_openbao_errors_and_caps_them() {
    assert_eq!(error_text(503, br#"{"errors":["Vault is sealed"]}"#), "Vault is sealed");
    assert_eq!(error_text(400, br#"{"errors":["a","b"]}"#), "a; b");
    assert_eq!(error_text(502, b"<html>bad gateway</html>"), "HTTP 502");
    let long = format!(r#"{{"errors":["{}"]}}"#, "x".repeat(1000));
    assert_eq!(error_text(400, long.as_bytes()).len(), 300);
}

#[test]
fn http_statuses_map_to_classes() {
    let cases = [
        (
            Op::TransitDecrypt,
            400,
            "cipher: message authentication failed",
            ErrorClass::IntegrityFailed,
        ),
        (
            Op::TransitDecrypt,
            400,
            "invalid ciphertext",
            ErrorClass::TransitBadRequest,
        ),
        (Op::TransitMetadataRead, 404, "", ErrorClass::TransitKeyMissing),
        // OpenBao 2.7's texts for a deleted key, a key deleted and created
        // again, and a raised min_decryption_version.
        (
            Op::TransitDecrypt,
            400,
            "encryption key not found",
            ErrorClass::TransitKeyMissing,
        ),
        (
            Op::TransitEncrypt,
            400,
            "encryption key not found",
            ErrorClass::TransitKeyMissing,
        ),
        (
            Op::TransitDecrypt,
            400,
            "invalid ciphertext: version is too new",
            ErrorClass::TransitKeyVersionRejected,
        ),
        (
            Op::TransitDecrypt,
            400,
            "ciphertext or signature version is disallowed by policy (too old)",
            ErrorClass::TransitKeyVersionRejected,
        ),
        (
            Op::TransitEncrypt,
            403,
            "permission denied",
            ErrorClass::TransitPolicyDenied,
        ),
        (Op::TokenLookupSelf, 403, "permission denied", ErrorClass::AuthFailed),
        (Op::TokenRenewSelf, 403, "permission denied", ErrorClass::AuthFailed),
        (
            Op::JwtLogin,
            400,
            "error validating token: token is expired",
            ErrorClass::AuthFailed,
        ),
        (Op::CertLogin, 403, "permission denied", ErrorClass::AuthFailed),
        (Op::TransitEncrypt, 503, "Vault is sealed", ErrorClass::OpenBaoSealed),
        (Op::TransitEncrypt, 429, "", ErrorClass::OpenBaoRateLimited),
        (Op::TransitEncrypt, 502, "", ErrorClass::OpenBaoUnavailable),
        (Op::OpenBaoHealth, 404, "", ErrorClass::OpenBaoUnavailable),
    ];
    for (op, code, message, want) in cases {
        assert_eq!(classify_status(op, code, message), want, "{op:?} {code} {message:?}");
    }
    assert_eq!(request_status_label(None), "ok");
    assert_eq!(request_status_label(Some(ErrorClass::OpenBaoTlsFailed)), "tls_failed");
    assert_eq!(request_status_label(Some(ErrorClass::TransitBadRequest)), "error");
}

#[test]
fn request_ids_are_read_without_the_rest_of_the_answer() {
    let decrypt =
        br#"{"request_id":"0b5b4f3c-7d0e-4a36-9e4d-2c1f1f9a6b21","lease_id":"","data":{"plaintext":"c2VjcmV0"}}"#;
    assert_eq!(
        request_id(decrypt).as_deref(),
        Some("0b5b4f3c-7d0e-4a36-9e4d-2c1f1f9a6b21")
    );
    let login = br#"{"auth":{"client_token":"s.abc"},"request_id":"r-1"}"#;
    assert_eq!(request_id(login).as_deref(), Some("r-1"));
    // Absent, empty, not a string, too long or with other characters: none.
    for body in [
        &br#"{"data":{}}"#[..],
        br#"{"request_id":""}"#,
        br#"{"request_id":7}"#,
        br#"{"request_id":null}"#,
        br#"{"request_id":"a b"}"#,
        br#"{"request_id":"x
y"}"#,
        br#"not json"#,
        b"",
    ] {
        assert_eq!(request_id(body), None, "{}", String::from_utf8_lossy(body));
    }
    let long = format!(r#"{{"request_id":"{}"}}"#, "a".repeat(65));
    assert_eq!(request_id(long.as_bytes()), None);
    let max = format!(r#"{{"request_id":"{}"}}"#, "a".repeat(64));
    assert_eq!(request_id(max.as_bytes()).map(|s| s.len()), Some(64));
}

#[test]
fn logins_and_renewals_are_bounded_by_the_login_timeout() {
    use Op::*;
    for op in [JwtLogin, AppRoleLogin, CertLogin, TokenLookupSelf, TokenRenewSelf] {
        assert!(op.bounded_by_login_timeout(), "{}", op.as_str());
    }
    for op in [
        TransitMetadataRead,
        TransitDisableUpsertRead,
        TransitEncrypt,
        TransitDecrypt,
        CapabilitiesSelf,
        OpenBaoHealth,
        MountRead,
    ] {
        assert!(!op.bounded_by_login_timeout(), "{}", op.as_str());
    }
}

#[test]
fn decrypt_batch_body_is_byte_exact_with_each_item_as_sent_alone() {
    let body = decrypt_batch_body([("vault:v3:AAAA", AAD), ("vault:v1:BBBB", b"x".as_slice())]);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"batch_input":[{"ciphertext":"vault:v3:AAAA","associated_data":"eyJhYWQiOiJ2MSJ9"},{"ciphertext":"vault:v1:BBBB","associated_data":"eA=="}]}"#
    );
    assert_eq!(decrypt_batch_body([]), br#"{"batch_input":[]}"#);
}

#[test]
fn decrypt_batch_answer_keeps_order_and_isolates_item_errors() {
    // What OpenBao 2.7 answers (HTTP 400) when the second item fails.
    let body = br#"{"request_id":"r","data":{"batch_results":[{"plaintext":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","reference":""},{"plaintext":"","error":"cipher: message authentication failed","reference":""},{"plaintext":"eA==","reference":""}]}}"#;
    let items = parse_decrypt_batch(body, 3).unwrap();
    assert_eq!(items[0].as_deref().map(Vec::as_slice), Some(plaintext().as_slice()));
    assert!(items[1].is_none());
    assert_eq!(items[2].as_deref().map(Vec::as_slice), Some(b"x".as_slice()));
    // A plaintext that is not base64 is an item to ask alone.
    let bad = br#"{"data":{"batch_results":[{"plaintext":"%%"}]}}"#;
    assert!(parse_decrypt_batch(bad, 1).unwrap()[0].is_none());
    // The wrong count, or no batch_results at all (OpenBao refused the
    // batch), is an invalid answer: the caller falls back to single calls.
    assert_eq!(
        parse_decrypt_batch(body, 2).unwrap_err().message,
        "data.batch_results has 3 items for 2 inputs"
    );
    assert!(parse_decrypt_batch(br#"{"errors":["batch disabled"]}"#, 1).is_err());
    assert!(parse_decrypt_batch(b"", 1).is_err());
}

#[test]
fn operation_labels_are_the_catalogue_values() {
    // The interface catalogue's `operation` values, then the additions
    // documented in docs/operations.md.
    let labels = [
        (Op::JwtLogin, "jwt_login"),
        (Op::CertLogin, "cert_login"),
        (Op::TokenRenewSelf, "token_renew_self"),
        (Op::TransitMetadataRead, "transit_metadata_read"),
        (Op::TransitDisableUpsertRead, "transit_disable_upsert_read"),
        (Op::TransitEncrypt, "transit_encrypt"),
        (Op::TransitDecrypt, "transit_decrypt"),
        (Op::TransitDecryptBatch, "transit_batch_decrypt"),
        (Op::CapabilitiesSelf, "capabilities_self"),
        (Op::AppRoleLogin, "approle_login"),
        (Op::TokenLookupSelf, "token_lookup_self"),
        (Op::OpenBaoHealth, "openbao_health"),
        (Op::MountRead, "mount_read"),
    ];
    for (op, label) in labels {
        assert_eq!(op.as_str(), label, "{op:?}");
    }
}
