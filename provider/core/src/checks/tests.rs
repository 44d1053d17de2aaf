#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use super::catalogue::{ALL, KMS_KEY_ID, KMS_STATUS, SOCKET_DIRECTORY};
use super::*;

#[test]
fn catalogue_ids_are_unique_and_shaped() {
    let mut seen = HashSet::new();
    for d in ALL {
        assert!(seen.insert(d.id), "duplicate id {}", d.id);
        assert!(
            d.id.contains('.')
                && d.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_'),
            "{}",
            d.id
        );
        assert!(!d.title.is_empty() && !d.title.ends_with('.'), "{}", d.id);
    }
}

#[test]
fn provider_text_and_json_shapes() {
    let mut r = Report::new("probe");
    r.push(KMS_STATUS.pass(""));
    r.push(KMS_KEY_ID.fail("differs", ""));
    assert!(r.failed());
    assert_eq!(
        r.to_text(),
        "probe\n[pass] kms.status: KMS Status is healthy\n[fail] kms.key_id: Status and Encrypt agree on key_id - differs\n"
    );
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["checks"][0]["status"], "pass");
    assert!(v["checks"][0].get("message").is_none());
    assert!(v["checks"][1].get("fix").is_none());
}

#[test]
fn table_json_yaml() {
    let mut r = Report::new("node");
    r.push(catalogue::CONFIG_FILE.pass("mode 0640"));
    r.push(SOCKET_DIRECTORY.fail("mode 0750", "chmod 2750 /run/openbao-kms"));
    assert!(r.failed());
    assert_eq!(
        r.to_table(),
        "CHECK              STATUS   MESSAGE\n\
         config.file        pass     mode 0640\n\
         socket.directory   fail     mode 0750\n\
         \n\
         FIXES\n\
         socket.directory (fail): chmod 2750 /run/openbao-kms\n\
         \n\
         node: 1/2 checks passed, 1 failed\n"
    );
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["name"], "node");
    assert!(v["checks"][0].get("fix").is_none());
    assert_eq!(v["checks"][1]["fix"], "chmod 2750 /run/openbao-kms");
    let back: Report = serde_yaml_ng::from_str(&r.to_yaml()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn combine_takes_the_worst_and_its_messages() {
    let d = Def::new("x.y", "combined");
    let a = Def::new("a.a", "a");
    let all_pass = d.combine(&[a.pass("one"), a.pass("two")]);
    assert_eq!(all_pass.status, CheckStatus::Pass);
    assert_eq!(all_pass.message.as_deref(), Some("one; two"));
    let mixed = d.combine(&[
        a.pass("one"),
        a.warn("w", "fix w"),
        a.fail("f1", "fix 1"),
        a.fail("f2", ""),
    ]);
    assert_eq!(mixed.status, CheckStatus::Fail);
    assert_eq!(mixed.message.as_deref(), Some("f1; f2"));
    assert_eq!(mixed.fix.as_deref(), Some("fix 1"));
    assert_eq!(mixed.id, "x.y");
    assert_eq!(d.combine(&[]).status, CheckStatus::Pass);
    assert_eq!(
        d.skipped_after(&a).message.as_deref(),
        Some("skipped: a.a did not pass")
    );
}
