//! The kubeadm-style bootstrap hooks in `manifests/kubeadm/`, run for real
//! with temp paths:
//! - 10: a real containerd (own root, state and socket, native snapshotter)
//!   imports an OCI archive built here; a digest mismatch, a corrupt
//!   manifest blob or an unpinned reference fail before any import.
//! - 20: placement of a static pod manifest fixture: atomic, idempotent,
//!   never replacing a different file without `--replace`.
//! - 30, 50: against a real OpenBao and the real provider: pass while it
//!   serves, fail once it is stopped.
//! - 40: the EncryptionConfiguration per phase and a kubeadm patch that,
//!   strategically merged into a kubeadm kube-apiserver manifest, gives the
//!   flag and the mounts.
//! - 60: `--phase` reaches `bao-kms-preflight cluster`, and a failing
//!   cluster check fails the step.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bao_kms_system_tests::Provider;
use bao_kms_system_tests::containerd::Containerd;
use bao_kms_system_tests::provider::{
    ALLOWED_SOCKET_DIR_ENV, dev_setup, preflight_binary, provider_binary, workspace_root,
};
use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha256};

fn script(name: &str) -> PathBuf {
    workspace_root().join("manifests/kubeadm").join(name)
}

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/kubeadm").join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kubeadm-hooks-")
        .tempdir()
        .expect("creating a temp dir")
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .expect("reading a directory")
        .map(|e| {
            e.expect("reading a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    n.sort();
    n
}

#[test]
fn hooks_are_posix_sh_and_pass_shellcheck() {
    let mut hooks: Vec<PathBuf> = fs::read_dir(workspace_root().join("manifests/kubeadm"))
        .expect("reading manifests/kubeadm")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    hooks.sort();
    assert_eq!(hooks.len(), 6, "{hooks:?}");
    for hook in &hooks {
        assert_eq!(mode(hook) & 0o111, 0o111, "{} is not executable", hook.display());
        let head = fs::read_to_string(hook).expect("reading a hook");
        assert!(head.starts_with("#!/bin/sh\n"), "{}", hook.display());
    }
    let out = run(Command::new("shellcheck")
        .args(["--shell=sh", "--severity=info"])
        .args(&hooks));
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}

// ---------------------------------------------------------------------------
// 10: preload the image into a real containerd

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// An OCI image layout archive with one tiny image; returns its manifest
/// digest (`sha256:<hex>`). `corrupt_manifest` stores different bytes under
/// the manifest's digest.
fn oci_archive(dir: &Path, corrupt_manifest: bool) -> (PathBuf, String) {
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("creating the layout");
    let put = |data: &[u8]| {
        let hex = sha256_hex(data);
        fs::write(blobs.join(&hex), data).expect("writing a blob");
        (hex, data.len())
    };
    let files = dir.join("layer-files");
    fs::create_dir_all(&files).expect("creating the layer dir");
    fs::write(files.join("provider-marker"), b"bao-kms-provider test layer\n").expect("writing the layer file");
    let layer_tar = dir.join("layer.tar");
    let out = run(Command::new("tar")
        .arg("-C")
        .arg(&files)
        .arg("-cf")
        .arg(&layer_tar)
        .arg("provider-marker"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (layer, layer_size) = put(&fs::read(&layer_tar).expect("reading the layer tar"));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer}"]}}}}"#
    );
    let (config, config_size) = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer}","size":{layer_size}}}]}}"#
    );
    let (manifest_hex, manifest_size) = put(manifest.as_bytes());
    if corrupt_manifest {
        fs::write(blobs.join(&manifest_hex), format!("{manifest}\n")).expect("writing index.json");
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_hex}","size":{manifest_size},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    );
    fs::write(layout.join("index.json"), index).expect("writing oci-layout");
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("writing oci-layout");
    let archive = dir.join("bao-kms-provider.oci.tar");
    let out = run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .args(["oci-layout", "index.json", "blobs"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    (archive, format!("sha256:{manifest_hex}"))
}

/// Step 10 against `containerd`, with the daemon's snapshotter.
fn preload(containerd: &Containerd, archive: &Path, ref_file: &Path) -> Output {
    run(Command::new(script("10-preload-image.sh"))
        .arg(archive)
        .arg(ref_file)
        .env("CTR", containerd.ctr_command())
        .env("CONTAINERD_SNAPSHOTTER", "native"))
}

fn images(containerd: &Containerd) -> Vec<String> {
    containerd.images().expect("ctr images ls")
}

#[tokio::test]
async fn preload_checks_the_digest_then_imports_into_a_real_containerd() {
    let containerd = Containerd::start().expect("containerd starts (make deps)");
    let dir = tempdir();
    let (archive, digest) = oci_archive(dir.path(), false);
    let repo = "registry.example.test/bao-kms-provider";
    let ref_file = dir.path().join("image-ref.txt");

    // A different digest: refused before containerd sees anything.
    let other = format!("sha256:{}", sha256_hex(b"another image"));
    fs::write(&ref_file, format!("{repo}@{other}\n")).unwrap();
    let out = preload(&containerd, &archive, &ref_file);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("does not match"), "{}", text(&out.stderr));
    assert!(images(&containerd).is_empty());

    // A tag instead of a digest.
    fs::write(&ref_file, format!("{repo}:v1\n")).unwrap();
    let out = preload(&containerd, &archive, &ref_file);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not pinned by digest"),
        "{}",
        text(&out.stderr)
    );

    // index.json names the digest, but the manifest blob is not what it names.
    let bad_dir = dir.path().join("corrupt");
    fs::create_dir(&bad_dir).unwrap();
    let (bad_archive, bad_digest) = oci_archive(&bad_dir, true);
    let bad_ref = bad_dir.join("image-ref.txt");
    fs::write(&bad_ref, format!("{repo}@{bad_digest}\n")).unwrap();
    let out = preload(&containerd, &bad_archive, &bad_ref);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("does not hash"), "{}", text(&out.stderr));
    assert!(images(&containerd).is_empty());

    // The matching reference: imported and listed under the pinned name.
    let pinned = format!("{repo}@{digest}");
    fs::write(&ref_file, format!("{pinned}\n")).unwrap();
    let out = preload(&containerd, &archive, &ref_file);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("imported {pinned}")),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(images(&containerd), vec![pinned.clone()]);

    // Again: nothing to do.
    let out = preload(&containerd, &archive, &ref_file);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("already present"), "{}", text(&out.stdout));
    assert_eq!(images(&containerd), vec![pinned]);
}

// ---------------------------------------------------------------------------
// 20: place the static pod manifest

fn place_pod(out_dir: &Path, manifest_dir: &Path, replace: bool) -> Output {
    let mut cmd = Command::new(script("20-place-static-pod.sh"));
    cmd.arg("--manifest-dir").arg(manifest_dir);
    if replace {
        cmd.arg("--replace");
    }
    run(cmd.arg(out_dir))
}

#[test]
fn static_pod_is_placed_atomically_and_a_different_one_only_with_replace() {
    let dir = tempdir();
    let out_dir = dir.path().join("out");
    let manifests = dir.path().join("manifests");
    fs::create_dir_all(&out_dir).unwrap();
    fs::create_dir_all(&manifests).unwrap();
    let dest = manifests.join("bao-kms-provider.yaml");

    // Nothing rendered yet.
    let out = place_pod(&out_dir, &manifests, false);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bao-kms-provider init"),
        "{}",
        text(&out.stderr)
    );

    // An image by tag is refused.
    let pod = fs::read_to_string(fixture("bao-kms-provider.yaml")).unwrap();
    let (image_line, _) = pod.split_once("@sha256:").unwrap();
    let by_tag = pod.replace(&pod[image_line.len()..image_line.len() + 72], ":v1");
    assert!(!by_tag.contains("@sha256:"));
    fs::write(out_dir.join("bao-kms-provider.yaml"), &by_tag).unwrap();
    let out = place_pod(&out_dir, &manifests, false);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not pinned by digest"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dest.exists());

    // The rendered manifest: placed, 0600, no temp files left.
    fs::write(out_dir.join("bao-kms-provider.yaml"), &pod).unwrap();
    let out = place_pod(&out_dir, &manifests, false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&dest).unwrap(), pod);
    assert_eq!(mode(&dest), 0o600);
    assert_eq!(names(&manifests), ["bao-kms-provider.yaml"]);

    // Again: nothing to do.
    let out = place_pod(&out_dir, &manifests, false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to do"), "{}", text(&out.stdout));

    // A different rendering: refused without --replace, file untouched.
    let newer = pod.replace("0123456789abcdef0123", "fedcba9876543210fedc");
    fs::write(out_dir.join("bao-kms-provider.yaml"), &newer).unwrap();
    let out = place_pod(&out_dir, &manifests, false);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--replace"), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&dest).unwrap(), pod);

    // With --replace: replaced, the previous one kept as a dot file.
    let out = place_pod(&out_dir, &manifests, true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&dest).unwrap(), newer);
    assert_eq!(
        fs::read_to_string(manifests.join(".bao-kms-provider.yaml.previous")).unwrap(),
        pod
    );
    assert_eq!(
        names(&manifests),
        [".bao-kms-provider.yaml.previous", "bao-kms-provider.yaml"]
    );

    // A missing kubelet manifest directory fails clearly.
    let out = place_pod(&out_dir, &dir.path().join("no-such-dir"), false);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("staticPodPath"), "{}", text(&out.stderr));
}

// ---------------------------------------------------------------------------
// 30 and 50: against a real OpenBao and the real provider

fn encryption_config(provider_name: &str, socket: &Path, kms_first: bool) -> String {
    let kms = format!(
        "      - kms:\n          apiVersion: v2\n          name: {provider_name}\n          endpoint: unix://{}\n          timeout: 3s\n",
        socket.display()
    );
    let identity = "      - identity: {}\n";
    let (first, second) = if kms_first {
        (kms.as_str(), identity)
    } else {
        (identity, kms.as_str())
    };
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{first}{second}"
    )
}

#[tokio::test]
async fn wait_preflight_waits_for_the_provider_and_fails_once_it_is_stopped() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    fs::set_permissions(env.socket_dir(), fs::Permissions::from_mode(0o2750))?;
    let ec = env.dir().join("encryption-config.yaml");
    fs::write(
        &ec,
        encryption_config(&env.settings().provider_name, env.socket_path(), true),
    )?;
    let wait_cmd = |timeout: &str| {
        let mut cmd = Command::new(script("30-wait-preflight.sh"));
        cmd.arg("--config")
            .arg(env.config_path())
            .args(["--manifest", "none", "--encryption-config"])
            .arg(&ec)
            .args(["--timeout", timeout, "--interval", "1"])
            .env("PREFLIGHT", preflight_binary())
            .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };

    // Started before the provider: keeps polling, passes once it serves.
    let waiting = wait_cmd("120").spawn()?;
    let mut provider = Provider::start(&env).await?;
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output()).await??;
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("preflight passed after"), "{stdout}");
    assert!(stdout.contains("socket.file"), "the report is printed: {stdout}");

    // Provider stopped: fails at the timeout with the last report.
    provider.terminate().await?;
    let out = run(&mut wait_cmd("2"));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("still failing after 2s"), "{stderr}");
    assert!(stderr.contains("socket.file") && stderr.contains("fail"), "{stderr}");

    // An explicitly named file that does not exist is an error at once.
    let out = run(Command::new(script("30-wait-preflight.sh"))
        .arg("--config")
        .arg(env.config_path())
        .arg("--encryption-config")
        .arg(env.dir().join("missing.yaml"))
        .env("PREFLIGHT", preflight_binary()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing.yaml: no such file"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn smoke_probe_passes_through_the_socket_and_fails_once_the_provider_stops() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let mut provider = Provider::start(&env).await?;
    let smoke = |extra: &[&str]| {
        run(Command::new(script("50-smoke.sh"))
            .arg("--socket")
            .arg(env.socket_path())
            .args(extra)
            .env("PROVIDER", provider_binary()))
    };

    let out = smoke(&["--no-apiserver"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("kms.key_id") && !stdout.contains("[fail]"), "{stdout}");
    assert!(stdout.contains("smoke test passed"), "{stdout}");

    // As a given process's identity (copied from /proc/PID/status), the way
    // it probes as kube-apiserver's user.
    let mut stand_in = Command::new("sleep").arg("120").spawn()?;
    let pid = stand_in.id().to_string();
    let out = smoke(&["--pid", &pid]);
    let _ = stand_in.kill();
    let _ = stand_in.wait();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(&format!("(pid {pid})")), "{stdout}");

    provider.terminate().await?;
    let out = smoke(&["--no-apiserver"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is the provider running?"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 40: EncryptionConfiguration and the kubeadm patch

/// Strategic merge as the API server applies it to a Pod, for the lists a
/// kube-apiserver patch touches: `containers` and `volumes` merge by
/// `name`, `volumeMounts` by `mountPath`; every other list is replaced;
/// maps merge key by key.
fn strategic_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Mapping(b), Value::Mapping(p)) => {
            for (k, pv) in p {
                let key = k.as_str().unwrap_or_default();
                match (b.get_mut(k), merge_key(key)) {
                    (Some(Value::Sequence(bs)), Some(mk)) => {
                        for item in pv.as_sequence().cloned().unwrap_or_default() {
                            let id = item.get(mk).cloned();
                            match bs.iter_mut().find(|e| id.is_some() && e.get(mk) == id.as_ref()) {
                                Some(existing) => strategic_merge(existing, &item),
                                None => bs.push(item),
                            }
                        }
                    }
                    (Some(bv @ Value::Mapping(_)), _) if pv.is_mapping() => strategic_merge(bv, pv),
                    _ => {
                        b.insert(k.clone(), pv.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn merge_key(list: &str) -> Option<&'static str> {
    match list {
        "containers" | "volumes" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        _ => None,
    }
}

fn yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&fs::read_to_string(path).expect("a containers list"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn apiserver(pod: &Value) -> &Mapping {
    pod["spec"]["containers"]
        .as_sequence()
        .expect("a containers list")
        .iter()
        .find(|c| c["name"] == "kube-apiserver")
        .and_then(Value::as_mapping)
        .expect("a kube-apiserver container")
}

fn by<'a>(list: &'a Value, key: &str, value: &str) -> Vec<&'a Value> {
    list.as_sequence()
        .expect("a list")
        .iter()
        .filter(|e| e[key] == value)
        .collect()
}

fn encryption_step(out_dir: &Path, node: &Path, phase: &str) -> Output {
    run(Command::new(script("40-encryption-config.sh"))
        .args(["--phase", phase])
        .arg("--dest")
        .arg(node.join("etc/kubernetes/openbao-kms/encryption-config.yaml"))
        .arg("--patches-dir")
        .arg(node.join("patches"))
        .arg(out_dir))
}

#[test]
fn encryption_config_phases_and_the_kubeadm_patch_merge_into_kube_apiserver() {
    let dir = tempdir();
    let out_dir = dir.path().join("out");
    let node = dir.path().join("node");
    fs::create_dir_all(&out_dir).unwrap();
    let socket = Path::new("/run/openbao-kms/kms.sock");
    let readers = encryption_config("kms-a", socket, false);
    let writers = encryption_config("kms-a", socket, true);

    // Nothing rendered yet; a phase that does not exist.
    let out = encryption_step(&out_dir, &node, "1");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("encryption-config-readers.yaml"),
        "{}",
        text(&out.stderr)
    );
    fs::write(out_dir.join("encryption-config-readers.yaml"), &readers).unwrap();
    fs::write(out_dir.join("encryption-config.yaml"), &writers).unwrap();
    let out = encryption_step(&out_dir, &node, "3");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--phase must be"), "{}", text(&out.stderr));

    // Phase 1: the readers file, private, and the patch.
    let dest = node.join("etc/kubernetes/openbao-kms/encryption-config.yaml");
    let out = encryption_step(&out_dir, &node, "1");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&dest).unwrap(), readers);
    assert_eq!(mode(&dest), 0o600);
    let patch_path = node.join("patches/kube-apiserver+strategic.yaml");
    let patch = yaml(&patch_path);

    let original = yaml(&fixture("kube-apiserver.yaml"));
    let mut merged = original.clone();
    strategic_merge(&mut merged, &patch);
    let before = apiserver(&original);
    let after = apiserver(&merged);
    // kubeadm's command is kept whole; the flag is appended through args.
    assert_eq!(after["command"], before["command"]);
    let flag = format!("--encryption-provider-config={}", dest.display());
    assert_eq!(after["args"], Value::Sequence(vec![Value::String(flag)]));
    let mounts = &after["volumeMounts"];
    assert_eq!(mounts.as_sequence().unwrap().len(), 4, "{mounts:?}");
    for kept in ["/etc/ssl/certs", "/etc/kubernetes/pki"] {
        assert_eq!(by(mounts, "mountPath", kept).len(), 1, "{kept}");
    }
    let ec_dir = dest.parent().unwrap().display().to_string();
    let ec_mount = by(mounts, "mountPath", &ec_dir);
    assert_eq!(ec_mount.len(), 1, "{mounts:?}");
    assert_eq!(ec_mount[0]["readOnly"], true);
    let socket_mount = by(mounts, "mountPath", "/run/openbao-kms");
    assert_eq!(socket_mount.len(), 1, "{mounts:?}");
    assert_ne!(socket_mount[0]["readOnly"], true);
    let volumes = &merged["spec"]["volumes"];
    assert_eq!(volumes.as_sequence().unwrap().len(), 4);
    for mount in [ec_mount[0], socket_mount[0]] {
        let name = mount["name"].as_str().unwrap();
        let volume = by(volumes, "name", name);
        assert_eq!(volume.len(), 1, "volume {name}");
        assert_eq!(volume[0]["hostPath"]["path"], mount["mountPath"]);
        assert_eq!(volume[0]["hostPath"]["type"], "Directory");
    }
    // Applying the patch again (kubeadm upgrade) changes nothing.
    let mut twice = merged.clone();
    strategic_merge(&mut twice, &patch);
    assert_eq!(twice, merged);

    // Running the step again changes nothing.
    let patch_text = fs::read_to_string(&patch_path).unwrap();
    let out = encryption_step(&out_dir, &node, "1");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is unchanged"), "{}", text(&out.stdout));

    // Phase 2: KMS first; the patch stays the same.
    let out = encryption_step(&out_dir, &node, "2");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&dest).unwrap(), writers);
    assert_eq!(fs::read_to_string(&patch_path).unwrap(), patch_text);
    assert_eq!(names(dest.parent().unwrap()), ["encryption-config.yaml"]);
    assert_eq!(names(&node.join("patches")), ["kube-apiserver+strategic.yaml"]);
}

// ---------------------------------------------------------------------------
// 60: cluster check

#[test]
fn cluster_step_passes_the_phase_through_and_fails_without_an_api_server() {
    let dir = tempdir();
    let cluster = |args: &[&str]| {
        run(Command::new(script("60-cluster.sh"))
            .args(args)
            .env("PREFLIGHT", preflight_binary())
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST"))
    };
    // The phase reaches bao-kms-preflight, which names the valid ones.
    let out = cluster(&["--phase", "mid-rotation"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("before-rotation") && stderr.contains("rejected the arguments"),
        "{stderr}"
    );

    // A valid phase but no reachable cluster: the step fails.
    let out = cluster(&["--phase", "before-rotation"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cluster check failed"), "{stderr}");
    assert!(
        text(&out.stdout).contains("cluster --phase before-rotation"),
        "{}",
        text(&out.stdout)
    );
}
