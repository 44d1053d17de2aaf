//! docs/install.md, static pod model, followed on a scratch node root with
//! the real artefacts: the image archive `make image` built (its digest read
//! from `image-ref.txt`, not assumed), preloaded into a real containerd by
//! hook 10; the install files rendered by `init` for that pinned image;
//! the pod placed by hook 20 and the phase-1 EncryptionConfiguration by
//! hook 40; then `bao-kms-preflight node` passes on exactly those files.
//! A manifest whose image is not the preloaded digest fails the same check.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context as _;
use bao_kms_system_tests::containerd::Containerd;
use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, report_check, run_preflight_node};
use bao_kms_system_tests::provider::{ALLOWED_SOCKET_DIR_ENV, provider_binary, workspace_root};

/// The archive `make image` wrote (the Makefile exports the path).
fn image_archive() -> PathBuf {
    let path = std::env::var_os("BAO_KMS_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("images/out/bao-kms-provider-0.1.0-linux-amd64.oci.tar"));
    assert!(path.is_file(), "{} not found: run `make image` first", path.display());
    path
}

fn hook(name: &str) -> Command {
    Command::new(workspace_root().join("manifests/kubeadm").join(name))
}

fn ok(out: Output, what: &str) -> anyhow::Result<String> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "{what} failed ({}): {text}", out.status);
    Ok(text)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn bare_node_to_a_preloaded_image_a_placed_static_pod_and_passing_node_checks() -> anyhow::Result<()> {
    let archive = image_archive();
    let out_dir = archive.parent().context("archive directory")?;
    let image_ref = fs::read_to_string(out_dir.join("image-ref.txt"))?.trim().to_owned();
    let digest = fs::read_to_string(out_dir.join("image-digest.txt"))?.trim().to_owned();
    assert!(image_ref.ends_with(&format!("@{digest}")), "{image_ref} vs {digest}");

    let node = tempfile::tempdir()?;
    let root = node.path();

    // Step 10: preload the archive into the node's container runtime.
    let containerd = Containerd::start()?;
    ok(
        hook("10-preload-image.sh")
            .arg(&archive)
            .arg(out_dir.join("image-ref.txt"))
            .env("CTR", containerd.ctr_command())
            .env("CONTAINERD_SNAPSHOTTER", "native")
            .output()?,
        "10-preload-image.sh",
    )?;
    // Listed under the exact reference the static pod will name.
    let images = containerd.images()?;
    assert!(images.contains(&image_ref), "{image_ref} not in {images:?}");

    // Render for this image and a socket group of the node's.
    let gid: u32 = 4243;
    let socket_dir = root.join("run/openbao-kms");
    fs::create_dir_all(&socket_dir)?;
    nix::unistd::chown(
        &socket_dir,
        Some(nix::unistd::Uid::from_raw(65532)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )?;
    fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o2750))?;
    let values = root.join("values.yaml");
    fs::write(
        &values,
        format!(
            r#"configVersion: v1alpha1
server:
  socketPath: {socket}
  metricsAddress: 127.0.0.1:8081
  healthAddress: 127.0.0.1:8082
openbao:
  address: https://bao.example:8200
  tlsServerName: bao.example
  instanceId: bao-prod-a
auth:
  method: jwt
  jwt:
    mountPath: auth/k8s-jwt
    role: kms
    expectedIssuer: https://issuer.example
    expectedAudience: [openbao]
    expectedSubject: "system:openbao-kms:control-plane"
transit:
  mountPath: transit
  keyName: k8s-workload-a-etcd
  keyIdScope:
    providerName: openbao-kms-workload-a
    clusterId: workload-a
    transitMountId: transit-prod-primary
"#,
            socket = socket_dir.join("kms.sock").display()
        ),
    )?;
    let rendered = root.join("out");
    ok(
        Command::new(provider_binary())
            .args(["init", "--model", "static-pod", "--new-key", "--values"])
            .arg(&values)
            .arg("--out")
            .arg(&rendered)
            .args(["--image", &image_ref, "--socket-gid", &gid.to_string()])
            .env(ALLOWED_SOCKET_DIR_ENV, &socket_dir)
            .output()?,
        "init",
    )?;

    // Step 20: the pod into the kubelet's manifest directory.
    let manifests = root.join("etc/kubernetes/manifests");
    fs::create_dir_all(&manifests)?;
    ok(
        hook("20-place-static-pod.sh")
            .arg(&rendered)
            .arg("--manifest-dir")
            .arg(&manifests)
            .output()?,
        "20-place-static-pod.sh",
    )?;
    let placed = manifests.join("bao-kms-provider.yaml");
    let pod: k8s_openapi::api::core::v1::Pod = serde_yaml_ng::from_str(&fs::read_to_string(&placed)?)?;
    let container = &pod.spec.context("pod spec")?.containers[0];
    assert_eq!(container.image.as_deref(), Some(image_ref.as_str()));
    assert_eq!(
        container.image_pull_policy.as_deref(),
        Some("Never"),
        "preloaded, never pulled"
    );

    // Step 40, phase 1 (readers): identity still writes, our KMS reads.
    let ec_dir = root.join("etc/kubernetes/openbao-kms");
    ok(
        hook("40-encryption-config.sh")
            .args(["--phase", "1"])
            .arg("--dest")
            .arg(ec_dir.join("encryption-config.yaml"))
            .arg("--patches-dir")
            .arg(ec_dir.join("patches"))
            .arg(&rendered)
            .output()?,
        "40-encryption-config.sh",
    )?;

    // The node checks on the placed files, pinned to the preloaded digest.
    let group_file = root.join("group");
    fs::write(&group_file, format!("openbao-kms-socket:x:{gid}:\n"))?;
    let args = |expected_digest: &str| -> Vec<String> {
        vec![
            "--no-live".into(),
            "--config".into(),
            s(&rendered.join("config.yaml")),
            "--manifest".into(),
            s(&placed),
            "--encryption-config".into(),
            s(&ec_dir.join("encryption-config.yaml")),
            "--expected-digest".into(),
            expected_digest.to_owned(),
            "--group-file".into(),
            s(&group_file),
            "--allowed-socket-dir".into(),
            s(&socket_dir),
        ]
    };
    let (rc, report) = run_preflight_node(&args(&digest))?;
    assert_eq!(rc, 0, "{report:#}");
    for id in [
        "config.file",
        "config.validate",
        "socket.group",
        "socket.directory",
        "encryption_config.parse",
        "encryption_config.rules",
        "manifest.parse",
        "manifest.image",
        "manifest.supplemental_groups",
        "manifest.mounts",
        "manifest.security",
    ] {
        assert_eq!(report_check(&report, id)["status"], "pass", "{id}: {report:#}");
    }
    // Phase 1 is a rollout state: said, not failed.
    assert_eq!(
        report_check(&report, "encryption_config.provider")["status"],
        "warn",
        "{report:#}"
    );

    // Another digest than the preloaded one: the manifest check fails.
    let other = format!("sha256:{}", "0".repeat(64));
    let (rc, report) = run_preflight_node(&args(&other))?;
    assert_eq!(rc, EXIT_DIAGNOSTIC, "{report:#}");
    assert_eq!(report_check(&report, "manifest.image")["status"], "fail", "{report:#}");
    Ok(())
}
