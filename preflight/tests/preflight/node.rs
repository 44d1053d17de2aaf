//! `bao-kms-preflight node` on fixture trees: the good tree passes; each
//! kind of broken file, mode, group or manifest fails with its exact finding.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use serde_json::Value;

fn node(tree: &NodeTree) -> (i32, Value) {
    let (code, out, err) = run(&tree.node_args(), &[]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

#[test]
fn good_tree_passes() {
    let tree = NodeTree::new();
    let (code, report) = node(&tree);
    let want = [
        ("config.file", "pass"),
        ("config.validate", "pass"),
        ("socket.group", "pass"),
        ("socket.directory", "pass"),
        ("socket.file", "pass"),
        ("encryption_config.parse", "pass"),
        ("encryption_config.rules", "pass"),
        // identity stays as a read fallback in the phase 2 file.
        ("encryption_config.provider", "warn"),
        ("manifest.parse", "pass"),
        ("manifest.image", "pass"),
        ("manifest.supplemental_groups", "pass"),
        ("manifest.mounts", "pass"),
        ("manifest.security", "pass"),
        ("provider.ready", "pass"),
        ("provider.status", "pass"),
    ];
    let got = statuses(&report);
    let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(got, want, "{report:#}");
    assert_eq!(code, 0);
    assert_eq!(
        check(&report, "socket.group").1,
        format!("GID {} (numeric in the configuration)", tree.gid)
    );
    assert_eq!(
        check(&report, "provider.status").1,
        format!("keyIDHash {KEY_HASH_A}, generation 3, rotation active, Transit version 2, provider 0.1.0")
    );
    assert_eq!(
        check(&report, "manifest.mounts").1,
        "5 paths covered (socket directory, configuration file, state directory, OpenBao CA bundle, token file)"
    );

    // The same run as a table and as YAML.
    let mut args = tree.node_args();
    let n = args.len();
    args[n - 1] = "table".into();
    let (code, table, _) = run(&args, &[]);
    assert_eq!(code, 0);
    assert!(table.starts_with("CHECK "), "{table}");
    assert!(table.contains("\nsocket.directory               pass     "), "{table}");
    assert!(table.ends_with("node: 14/15 checks passed, 0 failed\n"), "{table}");
    args[n - 1] = "yaml".into();
    let (_, yaml, _) = run(&args, &[]);
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_yaml, report);
}

#[test]
fn wrong_socket_gid() {
    let tree = NodeTree::new();
    let wrong = tree.gid + 4242;
    tree.write_config(wrong);
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    let run = tree.path("run");
    assert_eq!(
        check(&report, "socket.directory"),
        (
            "fail".into(),
            format!("{}: group {}, want the socket group {wrong}", run.display(), tree.gid)
        )
    );
    assert_eq!(
        check(&report, "socket.file"),
        (
            "fail".into(),
            format!(
                "{}/kms.sock: group {}, want the socket group {wrong}",
                run.display(),
                tree.gid
            )
        )
    );
    assert_eq!(
        check(&report, "manifest.supplemental_groups"),
        (
            "fail".into(),
            format!(
                "supplementalGroups [{}] does not contain the socket GID {wrong}",
                tree.gid
            )
        )
    );
}

#[test]
fn supplemental_groups_missing_the_socket_gid() {
    let tree = NodeTree::new();
    let mut m = tree.good_manifest();
    m.supplemental_groups = vec![1234];
    tree.write_manifest(&m);
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "manifest.supplemental_groups"),
        (
            "fail".into(),
            format!("supplementalGroups [1234] does not contain the socket GID {}", tree.gid)
        )
    );
    assert_eq!(check(&report, "socket.directory").0, "pass");
}

#[test]
fn group_name_resolved_through_the_group_file() {
    let tree = NodeTree::new();
    let text = fs::read_to_string(tree.path("etc/config.yaml")).unwrap().replace(
        &format!("socketGroup: \"{}\"", tree.gid),
        "socketGroup: openbao-kms-socket",
    );
    fs::write(tree.path("etc/config.yaml"), text).unwrap();
    let groups = tree.path("group");
    fs::write(
        &groups,
        format!("root:x:0:\nopenbao-kms-socket:x:{}:openbao-kms\n", tree.gid),
    )
    .unwrap();
    let mut args = tree.node_args();
    args.extend(["--group-file".into(), groups.display().to_string()]);
    let (code, out, _) = run(&args, &[]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        check(&report, "socket.group"),
        (
            "pass".into(),
            format!("openbao-kms-socket = GID {} ({})", tree.gid, groups.display())
        )
    );
    assert_eq!(code, 0, "{report:#}");

    fs::write(&groups, "root:x:0:\n").unwrap();
    let (code, out, _) = run(&args, &[]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "socket.group"),
        (
            "fail".into(),
            format!("group \"openbao-kms-socket\" is not in {}", groups.display())
        )
    );
    assert_eq!(check(&report, "socket.directory").0, "skip");
    assert_eq!(check(&report, "manifest.supplemental_groups").0, "skip");
}

#[test]
fn unpinned_and_unexpected_image() {
    let tree = NodeTree::new();
    let mut m = tree.good_manifest();
    m.image = "registry.example/bao-kms-provider:0.1.0".into();
    tree.write_manifest(&m);
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "manifest.image"),
        (
            "fail".into(),
            "image \"registry.example/bao-kms-provider:0.1.0\" is not pinned by @sha256: digest".into()
        )
    );

    tree.write_manifest(&tree.good_manifest());
    let other = format!("sha256:{}", "f".repeat(64));
    let mut args = tree.node_args();
    args.extend(["--expected-digest".into(), other.clone()]);
    let (code, out, _) = run(&args, &[]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "manifest.image"),
        (
            "fail".into(),
            format!("image digest {DIGEST} differs from the expected {other}")
        )
    );
    let mut args = tree.node_args();
    args.extend(["--expected-digest".into(), DIGEST.into()]);
    assert_eq!(run(&args, &[]).0, 0);
    // A malformed expected digest is a usage error.
    let mut args = tree.node_args();
    args.extend(["--expected-digest".into(), "sha256:abc".into()]);
    assert_eq!(run(&args, &[]).0, 2);
}

#[test]
fn missing_and_read_only_mounts() {
    let tree = NodeTree::new();
    let mut m = tree.good_manifest();
    m.mounts.retain(|(name, _, _)| name != "state");
    m.mounts.iter_mut().filter(|x| x.0 == "run").for_each(|x| x.2 = true);
    tree.write_manifest(&m);
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "manifest.mounts"),
        (
            "fail".into(),
            format!(
                "socket directory {} is mounted read-only; state directory {} is not mounted",
                tree.path("run").display(),
                tree.path("state").display()
            )
        )
    );
}

#[test]
fn root_manifest_fails_security() {
    let tree = NodeTree::new();
    let mut m = tree.good_manifest();
    m.run_as_user = 0;
    tree.write_manifest(&m);
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "manifest.security"),
        ("fail".into(), "runAsUser is 0 (root)".into())
    );
}

#[test]
fn encryption_config_name_endpoint_version_cachesize() {
    let tree = NodeTree::new();
    let endpoint = format!("unix://{}", tree.path("run/kms.sock").display());

    tree.write_encryption_config("openbao-kms-other", &endpoint, "v2", "");
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "encryption_config.provider"),
        (
            "fail".into(),
            format!(
                "resources: no kms provider is named \"{PROVIDER_NAME}\" (transit.keyIdScope.providerName); listed kms providers: \"openbao-kms-other\"; add `kms: {{apiVersion: v2, name: {PROVIDER_NAME}, endpoint: {endpoint}, timeout: 3s}}`"
            )
        )
    );
    assert_eq!(check(&report, "encryption_config.rules").0, "pass");

    tree.write_encryption_config(PROVIDER_NAME, "unix:///run/openbao-kms/kms.sock", "v2", "");
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "encryption_config.provider"),
        (
            "fail".into(),
            format!(
                "resources[0].providers[0].kms.endpoint: endpoint is \"unix:///run/openbao-kms/kms.sock\" but server.socketPath gives \"{endpoint}\"; set endpoint: {endpoint}"
            )
        )
    );

    tree.write_encryption_config(PROVIDER_NAME, &endpoint, "v1", "");
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "encryption_config.rules"),
        (
            "fail".into(),
            "resources[0].providers[0].kms.apiVersion: KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead. Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.".into()
        )
    );
    assert_eq!(
        check(&report, "encryption_config.provider"),
        (
            "fail".into(),
            format!(
                "resources[0].providers[0].kms.apiVersion: kms provider \"{PROVIDER_NAME}\" uses apiVersion v1; this provider serves KMS v2 only: set apiVersion: v2"
            )
        )
    );

    tree.write_encryption_config(PROVIDER_NAME, &endpoint, "v2", "          cachesize: 1000\n");
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "encryption_config.rules"),
        (
            "fail".into(),
            "resources[0].providers[0].kms.cachesize: cachesize is not supported in v2".into()
        )
    );

    fs::write(
        tree.path("kubernetes/encryption-config.yaml"),
        "kind: EncryptionConfiguration\nfoo: 1\n",
    )
    .unwrap();
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    let (status, msg) = check(&report, "encryption_config.parse");
    assert_eq!(status, "fail");
    assert!(msg.contains("unknown field `foo`"), "{msg}");
    assert_eq!(check(&report, "encryption_config.rules").0, "skip");
}

#[test]
fn socket_and_directory_modes() {
    let tree = NodeTree::new();
    fs::set_permissions(tree.path("run/kms.sock"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(tree.path("run"), fs::Permissions::from_mode(0o750)).unwrap();
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "socket.file"),
        (
            "fail".into(),
            format!(
                "{}: mode 0666, server.socketMode is 0660",
                tree.path("run/kms.sock").display()
            )
        )
    );
    assert_eq!(
        check(&report, "socket.directory"),
        (
            "warn".into(),
            format!(
                "{}: mode 0750, want 2750 (setgid bit missing)",
                tree.path("run").display()
            )
        )
    );

    // Not a socket.
    fs::remove_file(tree.path("run/kms.sock")).unwrap();
    fs::write(tree.path("run/kms.sock"), "").unwrap();
    let (_, report) = node(&tree);
    assert_eq!(
        check(&report, "socket.file"),
        (
            "fail".into(),
            format!(
                "{} is a regular file, not a Unix socket",
                tree.path("run/kms.sock").display()
            )
        )
    );
}

#[test]
fn config_file_mode_and_validation() {
    let tree = NodeTree::new();
    let p = tree.path("etc/config.yaml");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "config.file"),
        (
            "fail".into(),
            format!(
                "{} has mode 0644, which the provider refuses (no group write or execute, no world access)",
                p.display()
            )
        )
    );
    // Everything depending on the configuration is skipped, not passed.
    for id in [
        "config.validate",
        "socket.group",
        "encryption_config.provider",
        "manifest.mounts",
        "provider.status",
    ] {
        assert_eq!(check(&report, id).0, "skip", "{id}");
    }

    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    let text = fs::read_to_string(&p)
        .unwrap()
        .replace("configVersion: v1alpha1", "configVersion: v1alpha1\nbogus: 1");
    fs::write(&p, text).unwrap();
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    let (status, msg) = check(&report, "config.validate");
    assert_eq!(status, "fail");
    assert!(msg.starts_with("bogus: "), "{msg}");
}

#[test]
fn provider_not_ready_or_other_identity() {
    let tree = NodeTree::new();
    tree.provider.set_ready(503, "status", "unavailable".into());
    tree.provider
        .set_ready(503, "reasons", serde_json::json!(["status_stale", "probe_failed"]));
    tree.provider.set_status("identityFingerprint", "cfg1.other".into());
    let (code, report) = node(&tree);
    assert_eq!(code, 4);
    assert_eq!(
        check(&report, "provider.ready"),
        ("fail".into(), "HTTP 503, reasons [status_stale,probe_failed]".into())
    );
    let (status, msg) = check(&report, "provider.status");
    assert_eq!(status, "fail");
    assert!(
        msg.starts_with("identity fingerprint cfg1.other differs from the configuration's cfg1."),
        "{msg}"
    );

    // --no-live skips the socket and the endpoints: usable before the provider starts.
    let mut args = tree.node_args();
    args.push("--no-live".into());
    let (_, out, _) = run(&args, &[]);
    let report: Value = serde_json::from_str(&out).unwrap();
    for id in ["socket.file", "provider.ready", "provider.status"] {
        assert_eq!(check(&report, id), ("skip".into(), "skipped: --no-live".into()));
    }
}
