//! The OCI image built by `make image` (images/build-image.py): its layout,
//! blobs and config, the exact contents of its single layer, the provider
//! running from the unpacked root file system alone (as the image's
//! non-root user, through a real KMS v2 round trip against a real OpenBao),
//! an independent tool's view of the archive (`skopeo`), a real containerd
//! importing it and running it as a container (runc), and reproducibility of
//! the builder.
//!
//! The archive is `$BAO_KMS_IMAGE_ARCHIVE` (the Makefile exports it), else
//! `images/out/bao-kms-provider-<version>-linux-<arch>.oci.tar`. These tests
//! run as root: they unpack with ownership and `chroot` into the rootfs.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use bao_kms_core::keyid::KeyId;
use bao_kms_system_tests::containerd::Containerd;
use bao_kms_system_tests::process::run_checked;
use bao_kms_system_tests::provider::{Chroot, dev_setup_with, workspace_root};
use bao_kms_system_tests::{Provider, ProviderEnv};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const NONROOT: u32 = 65532;
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no image architecture for {other}"),
    }
}

pub(crate) fn archive_path() -> PathBuf {
    let path = std::env::var_os("BAO_KMS_IMAGE_ARCHIVE").map_or_else(
        || {
            workspace_root()
                .join("images/out")
                .join(format!("bao-kms-provider-{VERSION}-linux-{}.oci.tar", oci_arch()))
        },
        PathBuf::from,
    );
    assert!(path.is_file(), "{} not found: run `make image` first", path.display());
    path
}

/// `sha256:<hex>` written next to the archive.
pub(crate) fn published_digest(archive: &Path) -> anyhow::Result<String> {
    let file = archive.with_file_name("image-digest.txt");
    let text = fs::read_to_string(&file).with_context(|| format!("{}: run `make image` first", file.display()))?;
    Ok(text.trim_end_matches('\n').to_owned())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One header of a tar stream.
#[derive(Debug)]
struct TarEntry {
    path: String,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    kind: u8,
    size: u64,
}

fn octal(field: &[u8]) -> anyhow::Result<u64> {
    let text: String = field.iter().take_while(|&&b| b != 0).map(|&b| char::from(b)).collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).with_context(|| format!("tar field {text:?} is not octal"))
}

fn cstr(field: &[u8]) -> String {
    String::from_utf8_lossy(&field[..field.iter().position(|&b| b == 0).unwrap_or(field.len())]).into_owned()
}

/// Reads every header of an uncompressed tar stream; rejects anything but
/// plain ustar headers (no pax or GNU extension records).
fn tar_entries(tar: &[u8]) -> anyhow::Result<Vec<TarEntry>> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        ensure!(&h[257..263] == b"ustar\0", "entry at {at} is not a ustar header");
        let name = cstr(&h[0..100]);
        let prefix = cstr(&h[345..500]);
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        // Directories are stored as `dir/`.
        let path = path.trim_end_matches('/').to_owned();
        let entry = TarEntry {
            path,
            mode: u32::try_from(octal(&h[100..108])?)?,
            uid: octal(&h[108..116])?,
            gid: octal(&h[116..124])?,
            size: octal(&h[124..136])?,
            mtime: octal(&h[136..148])?,
            kind: h[156],
        };
        ensure!(
            entry.kind == b'0' || entry.kind == b'5',
            "{}: entry type {:?} (only files and directories are expected)",
            entry.path,
            char::from(entry.kind)
        );
        at += 512 + usize::try_from(entry.size.div_ceil(512) * 512)?;
        entries.push(entry);
    }
    ensure!(at + 1024 <= tar.len(), "tar stream has no end-of-archive marker");
    Ok(entries)
}

/// The archive unpacked with the real `tar`: the OCI layout, the verified
/// manifest and config, and the layer extracted into a root file system.
struct Unpacked {
    _dir: TempDir,
    rootfs: PathBuf,
    index: Value,
    manifest_digest: String,
    config: Value,
    layer_tar: Vec<u8>,
    layer_entries: Vec<TarEntry>,
    outer_entries: Vec<TarEntry>,
}

impl Unpacked {
    fn repo_and_tag(&self) -> anyhow::Result<(String, String)> {
        let name = self.index["manifests"][0]["annotations"]["io.containerd.image.name"]
            .as_str()
            .context("io.containerd.image.name")?;
        let (repo, tag) = name.rsplit_once(':').context("image name has no tag")?;
        Ok((repo.to_owned(), tag.to_owned()))
    }

    fn label(&self, key: &str) -> anyhow::Result<String> {
        Ok(self.config["config"]["Labels"][key]
            .as_str()
            .with_context(|| format!("label {key}"))?
            .to_owned())
    }
}

fn unpack(archive: &Path) -> anyhow::Result<Unpacked> {
    let dir = tempfile::Builder::new().prefix("bao-kms-image-").tempdir()?;
    let layout = dir.path().join("layout");
    let rootfs = dir.path().join("rootfs");
    fs::create_dir(&layout)?;
    fs::create_dir(&rootfs)?;
    run_checked(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout))?;
    let outer_entries = tar_entries(&fs::read(archive)?)?;

    let oci_layout: Value = serde_json::from_slice(&fs::read(layout.join("oci-layout"))?)?;
    assert_eq!(oci_layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));

    // Every blob is stored under its own digest.
    let blobs = layout.join("blobs/sha256");
    let mut blob_names = BTreeSet::new();
    for entry in fs::read_dir(&blobs)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(
            sha256_hex(&fs::read(entry.path())?),
            name,
            "blob {name} does not match its digest"
        );
        blob_names.insert(name);
    }
    // A descriptor's blob: present, of the declared size and digest.
    let blob = |desc: &Value, media_type: &str| -> anyhow::Result<Vec<u8>> {
        assert_eq!(desc["mediaType"], media_type, "descriptor {desc}");
        let digest = desc["digest"].as_str().context("descriptor digest")?;
        let hex = digest.strip_prefix("sha256:").context("sha256 digest")?;
        let bytes = fs::read(blobs.join(hex)).with_context(|| format!("blob {digest}"))?;
        assert_eq!(sha256_hex(&bytes), hex);
        assert_eq!(Some(bytes.len() as u64), desc["size"].as_u64(), "size of {digest}");
        Ok(bytes)
    };

    let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().context("index manifests")?;
    assert_eq!(manifests.len(), 1, "index.json: {index}");
    let manifest_desc = &manifests[0];
    assert_eq!(manifest_desc["platform"]["os"], "linux");
    assert_eq!(manifest_desc["platform"]["architecture"], oci_arch());
    let manifest: Value = serde_json::from_slice(&blob(manifest_desc, MEDIA_MANIFEST)?)?;
    let manifest_digest = manifest_desc["digest"].as_str().context("manifest digest")?.to_owned();
    assert_eq!(manifest["schemaVersion"], 2);
    let config_bytes = blob(&manifest["config"], MEDIA_CONFIG)?;
    let config: Value = serde_json::from_slice(&config_bytes)?;
    let layers = manifest["layers"].as_array().context("manifest layers")?;
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    let layer_gz = blob(&layers[0], MEDIA_LAYER)?;

    // Exactly the three blobs the manifest names, nothing stale.
    let named: BTreeSet<String> = [
        &manifest_desc["digest"],
        &manifest["config"]["digest"],
        &layers[0]["digest"],
    ]
    .iter()
    .map(|d| d.as_str().unwrap_or_default().trim_start_matches("sha256:").to_owned())
    .collect();
    assert_eq!(blob_names, named);

    // The layer, uncompressed by the real gzip, is the config's diff_id.
    let gz_file = dir.path().join("layer.tar.gz");
    fs::write(&gz_file, &layer_gz)?;
    let layer_tar = run_checked(Command::new("gzip").arg("-dc").arg(&gz_file))?.stdout;
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([format!("sha256:{}", sha256_hex(&layer_tar))])
    );
    let layer_entries = tar_entries(&layer_tar)?;
    run_checked(
        Command::new("tar")
            .args(["--numeric-owner", "-xpzf"])
            .arg(&gz_file)
            .arg("-C")
            .arg(&rootfs),
    )?;
    // The image's `/` as a container runtime creates it.
    fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    Ok(Unpacked {
        _dir: dir,
        rootfs,
        index,
        manifest_digest,
        config,
        layer_tar,
        layer_entries,
        outer_entries,
    })
}

fn is_shared_library(path: &str) -> bool {
    let in_lib_dir = ["lib/", "lib64/", "usr/lib/", "usr/lib64/"]
        .iter()
        .any(|d| path.starts_with(d));
    let name = path.rsplit('/').next().unwrap_or_default();
    in_lib_dir && (name.starts_with("lib") || name.starts_with("ld-")) && name.contains(".so")
}

#[test]
fn archive_is_a_valid_minimal_image() -> anyhow::Result<()> {
    let archive = archive_path();
    let image = unpack(&archive)?;
    assert_eq!(published_digest(&archive)?, image.manifest_digest);
    let (repo, tag) = image.repo_and_tag()?;
    assert_eq!(tag, VERSION);
    assert_eq!(
        image.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        VERSION
    );
    let image_ref = fs::read_to_string(archive.with_file_name("image-ref.txt"))?;
    assert_eq!(image_ref, format!("{repo}:{VERSION}@{}\n", image.manifest_digest));

    // Config.
    let c = &image.config;
    assert_eq!(c["os"], "linux");
    assert_eq!(c["architecture"], oci_arch());
    assert_eq!(c["config"]["User"], "65532:65532");
    assert_eq!(
        c["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/bao-kms-provider"])
    );
    assert_eq!(
        c["config"]["Cmd"],
        serde_json::json!(["serve", "--config=/etc/openbao-kms/config.yaml"])
    );
    assert_eq!(
        c["config"]["ExposedPorts"],
        serde_json::json!({"8081/tcp": {}, "8082/tcp": {}})
    );
    assert_eq!(image.label("org.opencontainers.image.title")?, "bao-kms-provider");
    assert_eq!(image.label("org.opencontainers.image.version")?, VERSION);
    let revision = image.label("org.opencontainers.image.revision")?;
    assert!(
        revision.len() == 40 && revision.chars().all(|ch| ch.is_ascii_hexdigit()),
        "revision label {revision:?}"
    );
    assert!(
        c["config"]["Labels"].get("org.opencontainers.image.source").is_none(),
        "the image names no source location"
    );

    // Every entry of both tar streams: sorted, owned by 0:0, one mtime.
    let mtime = image.layer_entries[0].mtime;
    for (stream, entries) in [("layer", &image.layer_entries), ("archive", &image.outer_entries)] {
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        assert_eq!(paths, sorted, "{stream} entries are not sorted");
        for e in entries.iter() {
            assert_eq!((e.uid, e.gid), (0, 0), "{stream} {}", e.path);
            assert_eq!(e.mtime, mtime, "{stream} {}", e.path);
        }
    }
    // created = the entries' mtime (SOURCE_DATE_EPOCH).
    let out = run_checked(
        Command::new("date")
            .arg("-u")
            .arg(format!("-d@{mtime}"))
            .arg("+%Y-%m-%dT%H:%M:%SZ"),
    )?;
    assert_eq!(c["created"], String::from_utf8(out.stdout)?.trim());

    // Exactly: the two binaries, the CA bundle, passwd, group, shared
    // libraries, and the directories holding them.
    let files: Vec<&TarEntry> = image.layer_entries.iter().filter(|e| e.kind == b'0').collect();
    let fixed = [
        ("etc/group", 0o644),
        ("etc/passwd", 0o644),
        ("etc/ssl/certs/ca-certificates.crt", 0o644),
        ("usr/bin/bao-kms-preflight", 0o755),
        ("usr/bin/bao-kms-provider", 0o755),
    ];
    for (path, mode) in fixed {
        let e = files
            .iter()
            .find(|e| e.path == path)
            .with_context(|| format!("{path} missing"))?;
        assert_eq!(e.mode, mode, "{path}");
    }
    let libs: Vec<&str> = files
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| !fixed.iter().any(|(f, _)| f == p))
        .collect();
    for lib in &libs {
        assert!(is_shared_library(lib), "unexpected file /{lib} in the image");
        let bytes = fs::read(image.rootfs.join(lib))?;
        assert_eq!(&bytes[..4], b"\x7fELF", "/{lib} is not ELF");
    }
    assert!(libs.iter().any(|l| l.contains("/libc.so")), "libc: {libs:?}");
    assert!(libs.iter().any(|l| l.contains("/ld-")), "dynamic loader: {libs:?}");
    let dirs: BTreeSet<&str> = image
        .layer_entries
        .iter()
        .filter(|e| e.kind == b'5')
        .map(|e| e.path.as_str())
        .collect();
    let parents: BTreeSet<&str> = files
        .iter()
        .flat_map(|e| e.path.match_indices('/').map(|(i, _)| &e.path[..i]).collect::<Vec<_>>())
        .collect();
    assert_eq!(dirs, parents, "directories other than the files' parents");
    assert!(
        dirs.iter()
            .all(|d| image.layer_entries.iter().any(|e| e.path == *d && e.mode == 0o755))
    );

    // No shell, no package manager.
    for e in &image.layer_entries {
        let name = e.path.rsplit('/').next().unwrap_or_default();
        assert!(
            ![
                "sh", "bash", "dash", "ash", "busybox", "apt", "apt-get", "dpkg", "rpm", "apk"
            ]
            .contains(&name),
            "/{} must not be in the image",
            e.path
        );
    }
    let shell = Command::new("chroot")
        .arg(&image.rootfs)
        .args(["/bin/sh", "-c", "true"])
        .output()?;
    assert!(!shell.status.success(), "/bin/sh ran inside the image");

    // Users: root and nonroot 65532:65532, home /nonexistent, no usable shell.
    let passwd = fs::read_to_string(image.rootfs.join("etc/passwd"))?;
    let nonroot: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("nonroot:"))
        .context("nonroot user")?
        .split(':')
        .collect();
    assert_eq!(nonroot[2..6], ["65532", "65532", "nonroot", "/nonexistent"]);
    assert!(
        !image.rootfs.join(nonroot[6].trim_start_matches('/')).exists(),
        "login shell {}",
        nonroot[6]
    );
    assert_eq!(passwd.lines().count(), 2, "{passwd}");
    let group = fs::read_to_string(image.rootfs.join("etc/group"))?;
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
    let certs = fs::read_to_string(image.rootfs.join("etc/ssl/certs/ca-certificates.crt"))?;
    assert!(certs.matches("-----BEGIN CERTIFICATE-----").count() > 10, "CA bundle");

    // Both binaries run from the image's files alone, as the image's user.
    for bin in ["bao-kms-provider", "bao-kms-preflight"] {
        let out = run_checked(
            Command::new("chroot")
                .arg(format!("--userspec={NONROOT}:{NONROOT}"))
                .arg(&image.rootfs)
                .arg(format!("/usr/bin/{bin}"))
                .arg("--version"),
        )?;
        let stdout = String::from_utf8(out.stdout)?;
        assert!(stdout.contains(VERSION), "{bin} --version: {stdout}");
    }

    println!(
        "image {repo}:{VERSION}@{}: archive {} bytes, layer {} bytes uncompressed, {} files",
        image.manifest_digest,
        fs::metadata(&archive)?.len(),
        image.layer_tar.len(),
        files.len()
    );
    Ok(())
}

/// The provider started from the unpacked image (chroot: only the image's
/// loader and libraries), as 65532:65532, serves kube-apiserver's first
/// Status + Encrypt + Decrypt against a real OpenBao.
#[tokio::test]
async fn first_encrypt_from_the_image_rootfs() -> anyhow::Result<()> {
    let image = unpack(&archive_path())?;
    let chroot = Chroot {
        root: image.rootfs.clone(),
        user: Some((NONROOT, NONROOT)),
    };
    let (bao, p, env): (_, _, ProviderEnv) = dev_setup_with(|b| b.in_chroot(chroot)).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;

    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;
    let created = bao.key_metadata(&p)?.created_unix(1)?;
    let expected = KeyId::derive(&env.scope(), 1, created)?;
    assert_eq!(stored.key_id, expected.as_str());
    assert_eq!(kms.healthy_status().await?.key_id, expected.as_str());

    // The socket and the registry were made by the image's user, inside
    // the image's root.
    assert!(env.socket_path().starts_with(&image.rootfs));
    let socket = fs::metadata(env.socket_path())?;
    assert_eq!((socket.uid(), socket.gid()), (NONROOT, NONROOT));
    assert_eq!(fs::metadata(env.state_path())?.uid(), NONROOT);
    assert!(!provider.stderr().contains(&p.token), "the token appears in the log");
    Ok(())
}

/// `skopeo` (an independent implementation of the OCI layout) reads the
/// archive and reports our digest, platform and labels.
#[test]
fn skopeo_accepts_the_archive() -> anyhow::Result<()> {
    let archive = archive_path();
    let out = run_checked(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", archive.display())),
    )?;
    let info: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(info["Digest"], published_digest(&archive)?, "{info}");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Architecture"], oci_arch());
    assert_eq!(info["Labels"]["org.opencontainers.image.version"], VERSION);
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1), "{info}");
    Ok(())
}

/// Builds with images/build-image.py into a fresh directory; returns the
/// archive bytes and the digest it reports.
fn build_image(inputs: &BuildInputs, preflight: &Path) -> anyhow::Result<(Vec<u8>, String, f64)> {
    let out = tempfile::Builder::new().prefix("bao-kms-image-out-").tempdir()?;
    let started = Instant::now();
    run_checked(
        Command::new("python3")
            .arg(workspace_root().join("images/build-image.py"))
            .arg("--provider")
            .arg(&inputs.provider)
            .arg("--preflight")
            .arg(preflight)
            .arg("--ca-certs")
            .arg(&inputs.ca_certs)
            .arg("--out")
            .arg(out.path())
            .arg(format!("--repo={}", inputs.repo))
            .arg(format!("--version={VERSION}"))
            .arg(format!("--revision={}", inputs.revision))
            .arg(format!("--source-date-epoch={}", inputs.epoch))
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("IMAGE_REPO"),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let archive = out
        .path()
        .join(format!("bao-kms-provider-{VERSION}-linux-{}.oci.tar", oci_arch()));
    let digest = fs::read_to_string(out.path().join("image-digest.txt"))?;
    Ok((fs::read(archive)?, digest.trim().to_owned(), seconds))
}

struct BuildInputs {
    provider: PathBuf,
    ca_certs: PathBuf,
    repo: String,
    revision: String,
    epoch: u64,
}

/// The image's own binaries and CA bundle, with its revision and
/// SOURCE_DATE_EPOCH, rebuilt twice: byte-identical archives, and the same
/// digest as the archive under test (the libraries come from this machine,
/// as for `make image`). One flipped byte in one input changes the digest.
#[test]
fn builder_is_reproducible_and_input_sensitive() -> anyhow::Result<()> {
    let archive = archive_path();
    let image = unpack(&archive)?;
    let (repo, _) = image.repo_and_tag()?;
    let inputs = BuildInputs {
        provider: image.rootfs.join("usr/bin/bao-kms-provider"),
        ca_certs: image.rootfs.join("etc/ssl/certs/ca-certificates.crt"),
        repo,
        revision: image.label("org.opencontainers.image.revision")?,
        epoch: image.layer_entries[0].mtime,
    };
    let preflight = image.rootfs.join("usr/bin/bao-kms-preflight");

    let (first, first_digest, seconds) = build_image(&inputs, &preflight)?;
    let (second, second_digest, _) = build_image(&inputs, &preflight)?;
    assert_eq!(first_digest, second_digest);
    assert!(first == second, "two builds from the same inputs differ");
    assert_eq!(first_digest, image.manifest_digest, "rebuild of the image under test");
    assert!(
        first == fs::read(&archive)?,
        "rebuild is not byte-identical to {}",
        archive.display()
    );

    // One byte of the preflight binary flipped (in its last byte, which the
    // loader never reads): a different layer and so a different digest.
    let scratch = TempDir::new()?;
    let changed = scratch.path().join("bao-kms-preflight");
    let mut bytes = fs::read(&preflight)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&changed, &bytes)?;
    fs::set_permissions(&changed, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let (third, third_digest, _) = build_image(&inputs, &changed)?;
    assert_ne!(third_digest, first_digest);
    assert_eq!(third.len(), first.len(), "same sizes, different content");

    println!("image build: {seconds:.2} s, archive {} bytes", first.len());
    Ok(())
}

/// Fails with a clear message instead of a missing image.
#[test]
fn builder_refuses_missing_binaries() -> anyhow::Result<()> {
    let out = TempDir::new()?;
    let result = Command::new("python3")
        .arg(workspace_root().join("images/build-image.py"))
        .arg("--provider")
        .arg(out.path().join("absent"))
        .arg("--out")
        .arg(out.path())
        .output()?;
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
    assert_eq!(fs::read_dir(out.path())?.count(), 0, "nothing is written");
    Ok(())
}

/// What an air-gapped node does with the archive, on a real containerd:
/// `ctr -n k8s.io images import` unpacks the layer with the native
/// snapshotter and lists the image under its full name with our digest;
/// then runc runs the image as a container. With no arguments, the image's
/// Entrypoint and Cmd start `serve --config=/etc/openbao-kms/config.yaml`
/// (absent here, so it exits 3 naming that file). With a config mounted
/// from the host and host networking, as a static pod has them, the
/// container serves the first Status + Encrypt + Decrypt against a real
/// OpenBao, as the image's user 65532.
#[tokio::test]
async fn containerd_imports_and_runs_the_image() -> anyhow::Result<()> {
    let archive = archive_path();
    let digest = published_digest(&archive)?;
    let image_ref = fs::read_to_string(archive.with_file_name("image-ref.txt"))?;
    let name = image_ref.trim().split('@').next().unwrap_or_default().to_owned();
    let containerd = Containerd::start()?;
    let archive_arg = archive.to_string_lossy();

    let imported = containerd.ctr(&[
        "-n",
        "k8s.io",
        "images",
        "import",
        "--snapshotter",
        "native",
        &archive_arg,
    ])?;
    assert!(imported.contains(&name), "import output: {imported}");
    let listed = containerd.ctr(&["-n", "k8s.io", "images", "ls"])?;
    let line = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("{name} not listed:\n{listed}"))?;
    assert!(line.contains(&digest), "listed with another digest: {line}");
    assert!(line.contains(&format!("linux/{}", oci_arch())), "platform: {line}");
    let check = containerd.ctr(&["-n", "k8s.io", "images", "check", &format!("name=={name}")])?;
    assert!(check.contains("complete"), "images check: {check}");
    // Another namespace does not see it (the kubelet only reads k8s.io).
    let default_ns = containerd.ctr(&["-n", "default", "images", "ls", "-q"])?;
    assert!(!default_ns.contains(&name), "{default_ns}");

    // Entrypoint + Cmd.
    let mut default_run = containerd.run("bao-kms-defaults", &name, &[], &[])?;
    let status = default_run
        .wait(std::time::Duration::from_secs(30))
        .await
        .with_context(|| default_run.stderr())?;
    let out = fs::read_to_string(containerd.dir().join("bao-kms-defaults.stdout"))? + &default_run.stderr();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.contains("/etc/openbao-kms/config.yaml"), "{out}");
    drop(default_run);

    // The provider as a container, its files mounted from the host.
    let host_root = containerd.dir().join("host");
    fs::create_dir(&host_root)?;
    let chroot = Chroot {
        root: host_root.clone(),
        user: Some((NONROOT, NONROOT)),
    };
    let (bao, p, env): (_, _, ProviderEnv) = dev_setup_with(|b| b.in_chroot(chroot)).await?;
    let in_container = env.in_root(env.dir());
    let mount = format!(
        "type=bind,src={},dst={},options=rbind:rw",
        env.dir().display(),
        in_container.display()
    );
    let allowed = format!(
        "{}={}",
        bao_kms_system_tests::provider::ALLOWED_SOCKET_DIR_ENV,
        env.in_root(&env.socket_dir()).display()
    );
    let serve = containerd.run(
        "bao-kms-serve",
        &name,
        &["--mount".into(), mount, "--env".into(), allowed],
        &[
            "/usr/bin/bao-kms-provider".into(),
            "serve".into(),
            format!("--config={}", env.in_root(env.config_path()).display()),
        ],
    )?;
    let socket = env.socket_path().to_path_buf();
    let kms = bao_kms_system_tests::wait::until(
        bao_kms_system_tests::provider::READY_TIMEOUT,
        "the container's KMS socket",
        || async {
            bao_kms_system_tests::KmsClient::connect(&socket)
                .await
                .map_err(|e| format!("{e:#}"))
        },
    )
    .await
    .with_context(|| serve.stderr())?;
    kms.wait_healthy(bao_kms_system_tests::provider::READY_TIMEOUT)
        .await
        .with_context(|| serve.stderr())?;
    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;
    let created = bao.key_metadata(&p)?.created_unix(1)?;
    assert_eq!(stored.key_id, KeyId::derive(&env.scope(), 1, created)?.as_str());
    // The image's User applied: the socket belongs to 65532.
    let meta = fs::metadata(&socket)?;
    assert_eq!((meta.uid(), meta.gid()), (NONROOT, NONROOT));
    assert!(!serve.stderr().contains(&p.token), "the token appears in the log");

    // SIGTERM to the container (what the kubelet sends): a clean exit.
    let mut serve = serve;
    containerd.ctr(&["-n", "k8s.io", "task", "kill", "-s", "SIGTERM", "bao-kms-serve"])?;
    let status = serve.wait(bao_kms_system_tests::provider::TERMINATE_TIMEOUT).await?;
    assert_eq!(status.code(), Some(0), "{}", serve.stderr());
    Ok(())
}
