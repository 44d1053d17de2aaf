#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;

fn dir(mode: u32, gid: u32) -> FileFacts {
    let mut f = FileFacts::missing(Path::new("/run/openbao-kms"));
    f.kind = FileKind::Directory;
    f.mode = mode;
    f.gid = gid;
    f
}

fn sock(mode: u32, gid: u32) -> FileFacts {
    let mut f = FileFacts::missing(Path::new("/run/openbao-kms/kms.sock"));
    f.kind = FileKind::Socket;
    f.mode = mode;
    f.uid = 65532;
    f.gid = gid;
    f
}

#[test]
fn group_lookup() {
    let g = "root:x:0:\nopenbao-kms-socket:x:1234:openbao-kms\nbroken\n";
    assert_eq!(lookup_group(g, "openbao-kms-socket"), Some(1234));
    assert_eq!(lookup_group(g, "root"), Some(0));
    assert_eq!(lookup_group(g, "nobody"), None);
    assert_eq!(lookup_group(g, "broken"), None);
    assert_eq!(health_target("0.0.0.0:8082"), "127.0.0.1:8082");
    assert_eq!(health_target("[::]:8082"), "[::1]:8082");
    assert_eq!(health_target("127.0.0.1:8082"), "127.0.0.1:8082");
}

#[test]
fn socket_directory_rules() {
    assert_eq!(socket_directory(&dir(0o2750, 1234), 1234).status, CheckStatus::Pass);
    let c = socket_directory(&dir(0o750, 1234), 1234);
    assert_eq!(c.status, CheckStatus::Warn);
    assert_eq!(
        c.message.as_deref(),
        Some("/run/openbao-kms: mode 0750, want 2750 (setgid bit missing)")
    );
    assert_eq!(
        socket_directory(&dir(0o2750, 0), 1234).message.as_deref(),
        Some("/run/openbao-kms: group 0, want the socket group 1234")
    );
    // What the provider refuses, and what kube-apiserver cannot enter, fail.
    let c = socket_directory(&dir(0o2770, 1234), 1234);
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.message.unwrap().contains("group- or world-writable"));
    let c = socket_directory(&dir(0o2700, 1234), 1234);
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.message.unwrap().contains("may not enter"));
    let mut f = dir(0o2750, 1234);
    f.kind = FileKind::Symlink;
    assert_eq!(socket_directory(&f, 1234).status, CheckStatus::Fail);
}

/// One rule for the socket: exactly the configured mode and the group; a
/// configured mode without group read/write warns; a missing socket fails
/// only where the provider must be serving.
#[test]
fn socket_file_rule() {
    assert_eq!(socket_file(&sock(0o660, 7), 7, 0o660, true).status, CheckStatus::Pass);
    let c = socket_file(&sock(0o600, 7), 7, 0o660, true);
    assert_eq!(c.status, CheckStatus::Fail);
    assert_eq!(
        c.message.as_deref(),
        Some("/run/openbao-kms/kms.sock: mode 0600, server.socketMode is 0660")
    );
    // A stricter configured mode is what the provider set: it passes the
    // mode comparison but warns that the group cannot connect.
    let c = socket_file(&sock(0o600, 7), 7, 0o600, true);
    assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
    assert!(
        c.message
            .unwrap()
            .contains("kube-apiserver connects only as the owner or root")
    );
    let c = socket_file(&sock(0o660, 8), 7, 0o660, true);
    assert_eq!(
        c.message.as_deref(),
        Some("/run/openbao-kms/kms.sock: group 8, want the socket group 7")
    );
    let missing = FileFacts::missing(Path::new("/run/openbao-kms/kms.sock"));
    assert_eq!(socket_file(&missing, 7, 0o660, true).status, CheckStatus::Fail);
    assert_eq!(socket_file(&missing, 7, 0o660, false).status, CheckStatus::Warn);
    let mut regular = sock(0o660, 7);
    regular.kind = FileKind::Regular;
    assert_eq!(socket_file(&regular, 7, 0o660, false).status, CheckStatus::Fail);
}

#[test]
fn config_file_rule_is_the_private_file_rule() {
    let mut f = FileFacts::missing(Path::new("/etc/openbao-kms/config.yaml"));
    f.kind = FileKind::Regular;
    for (mode, ok) in [
        (0o640, true),
        (0o600, true),
        (0o400, true),
        (0o660, false),
        (0o644, false),
        (0o650, false),
    ] {
        f.mode = mode;
        assert_eq!(config_file(&f).status == CheckStatus::Pass, ok, "{mode:o}");
    }
    f.kind = FileKind::Symlink;
    f.mode = 0o640;
    assert_eq!(config_file(&f).status, CheckStatus::Fail);
}

fn ready(status: u16, body: &str) -> Check {
    provider_ready(Ok(&HttpAnswer {
        status,
        body: body.to_owned(),
    }))
}

#[test]
fn ready_document_verdicts() {
    let ok = r#"{"status":"ok","healthz":"ok","cache_age_ms":1,"stale":false,"rotation_state":"active","reasons":[],"metadata_error_class":"","persistence_degraded":false}"#;
    assert_eq!(ready(200, ok).message.as_deref(), Some("ready, rotation active"));
    let down = r#"{"status":"unavailable","healthz":"unhealthy","cache_age_ms":1,"stale":true,"rotation_state":"active","reasons":["openbao_unreachable","stale"],"metadata_error_class":"unavailable","persistence_degraded":false}"#;
    let c = ready(503, down);
    assert_eq!(c.status, CheckStatus::Fail);
    assert_eq!(
        c.message.as_deref(),
        Some("HTTP 503, reasons [openbao_unreachable,stale]")
    );
    let c = ready(200, "hello");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.message.unwrap().contains("not the provider's /ready document"));
    assert_eq!(
        provider_ready(Err("GET http://x/ready: connection refused")).status,
        CheckStatus::Fail
    );
}

#[test]
fn encryption_config_checks_and_doctor_summary_agree() {
    let cfg = crate::config::parse_yaml(crate::config::validate::tests::MINIMAL).unwrap();
    let endpoint = format!("unix://{}", cfg.server.socket_path.display());
    let good = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms:\n      apiVersion: v2\n      name: {}\n      endpoint: {endpoint}\n      timeout: 3s\n  - identity: {{}}\n",
        cfg.transit.key_id_scope.provider_name
    );
    let path = Path::new("/etc/kubernetes/enc.yaml");
    let three = encryption_config(path, Ok(&good), Some(&cfg));
    let ids: Vec<&str> = three.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "encryption_config.parse",
            "encryption_config.rules",
            "encryption_config.provider"
        ]
    );
    let one = encryption_config_summary(path, Ok(&good), &cfg);
    assert_eq!(one.id, "kubernetes.encryption_config");
    let worst = three.iter().map(|c| c.status).max_by_key(|s| s.severity()).unwrap();
    assert_eq!(one.status, worst);

    let wrong = good.replace("apiVersion: v2", "apiVersion: v1");
    let three = encryption_config(path, Ok(&wrong), Some(&cfg));
    let one = encryption_config_summary(path, Ok(&wrong), &cfg);
    assert_eq!(one.status, CheckStatus::Fail);
    let failing: Vec<&str> = three
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .filter_map(|c| c.message.as_deref())
        .collect();
    assert_eq!(one.message.as_deref(), Some(failing.join("; ").as_str()));

    let c = encryption_config_summary(path, Ok("kind: Nope\n"), &cfg);
    assert_eq!(c.status, CheckStatus::Fail);
}
