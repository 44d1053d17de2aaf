//! `bao-kms-provider init` as operators run it: the real binary writing
//! real files. It never overwrites, refuses the flags it does not take and
//! bad values with the documented exit codes; the static pod it writes is a
//! Kubernetes `Pod` that passes `bao-kms-preflight node`; and the generated
//! `openbao-setup.sh` prepares a real OpenBao so that the provider, started
//! with the generated configuration, serves a first encrypt.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bao_kms_system_tests::doctor::{report_check, run_preflight_node};
use bao_kms_system_tests::init_files::{CLEARED_ENV, mint_jwt, run_openbao_setup};
use bao_kms_system_tests::net::free_port;
use bao_kms_system_tests::openbao::bao_binary;
use bao_kms_system_tests::process::KillOnDrop;
use bao_kms_system_tests::provider::{ALLOWED_SOCKET_DIR_ENV, READY_TIMEOUT, provider_binary};
use bao_kms_system_tests::{KmsClient, OpenBao, wait};
use k8s_openapi::api::core::v1::Pod;
use rcgen::KeyPair;
use serde_json::Value;
use tempfile::TempDir;

const EXIT_WRITE: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_VALUES: i32 = 3;
const EXIT_DIAGNOSTIC: i32 = 4;
const DIGEST: &str = "sha256:3f5ea2b8c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "openbao";
const SUBJECT: &str = "system:node:cp-1";

fn init(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut cmd = Command::new(provider_binary());
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    Ok(cmd.arg("init").args(args).envs(env.iter().copied()).output()?)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A values file with host paths filled by `init` (defaults) unless the
/// caller passes `extra` sections.
fn values(server: &str, openbao: &str, jwt_extra: &str, scope_extra: &str) -> String {
    format!(
        r#"configVersion: v1alpha1
server:
{server}openbao:
{openbao}  instanceId: bao-test-a
auth:
  method: jwt
  jwt:
    mountPath: auth/k8s-jwt
    role: kms
{jwt_extra}    expectedIssuer: {ISSUER}
    expectedAudience: [{AUDIENCE}]
    expectedSubject: "{SUBJECT}"
transit:
  mountPath: transit
  keyName: k8s-workload-a-etcd
  keyIdScope:
    providerName: openbao-kms-workload-a
    clusterId: workload-a
    transitMountId: transit-test-primary
{scope_extra}"#
    )
}

fn default_values() -> String {
    values(
        "  socketPath: /run/openbao-kms/kms.sock\n  healthAddress: 127.0.0.1:8082\n",
        "  address: https://bao.example:8200\n  tlsServerName: bao.example\n",
        "",
        "    keyLineageId: 01HXEXAMPLEKEYLINEAGEID\n",
    )
}

#[test]
fn never_overwrites_and_rejects_bad_flags_and_values() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let values_file = dir.path().join("values.yaml");
    fs::write(&values_file, default_values())?;
    let v = s(&values_file);

    // A non-empty --out: exit 1, the existing file untouched, nothing added.
    let busy = dir.path().join("busy");
    fs::create_dir(&busy)?;
    fs::write(busy.join("config.yaml"), "operator's own file\n")?;
    let out = init(&["--values", &v, "--out", &s(&busy)], &[])?;
    assert_eq!(code(&out), EXIT_WRITE, "{}", stderr(&out));
    assert!(stderr(&out).contains("never overwrites"), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(busy.join("config.yaml"))?, "operator's own file\n");
    assert_eq!(fs::read_dir(&busy)?.count(), 1);
    // --out naming a file: exit 1, the file untouched.
    let file_out = dir.path().join("plain-file");
    fs::write(&file_out, "x")?;
    let out = init(&["--values", &v, "--out", &s(&file_out)], &[])?;
    assert_eq!(code(&out), EXIT_WRITE);
    assert_eq!(fs::read_to_string(&file_out)?, "x");

    let fresh = dir.path().join("fresh");
    let f = s(&fresh);
    // Flags init does not take: exit 2, nothing written.
    for extra in [
        ["--config", "/etc/openbao-kms/config.yaml"],
        ["--log-level", "debug"],
        ["--metrics-address", "127.0.0.1:9000"],
        ["--health-address", "127.0.0.1:9001"],
        ["--no-such-flag", "x"],
        ["--model", "daemonset"],
    ] {
        let out = init(&["--values", &v, "--out", &f, extra[0], extra[1]], &[])?;
        assert_eq!(code(&out), EXIT_USAGE, "{extra:?}: {}", stderr(&out));
        assert!(!fresh.exists(), "{extra:?} wrote files");
    }
    // Static pod flags.
    let unpinned = init(
        &[
            "--values",
            &v,
            "--out",
            &f,
            "--model",
            "static-pod",
            "--image",
            "ghcr.io/example/bao-kms-provider:0.1.0",
            "--socket-gid",
            "1234",
        ],
        &[],
    )?;
    assert_eq!(code(&unpinned), EXIT_USAGE);
    assert!(stderr(&unpinned).contains("not pinned"), "{}", stderr(&unpinned));
    let no_gid = init(
        &[
            "--values",
            &v,
            "--out",
            &f,
            "--model",
            "static-pod",
            "--image",
            &format!("ghcr.io/example/bao-kms-provider@{DIGEST}"),
        ],
        &[],
    )?;
    assert_eq!(code(&no_gid), EXIT_USAGE);
    assert!(stderr(&no_gid).contains("--socket-gid"), "{}", stderr(&no_gid));
    let new_key = init(&["--values", &v, "--out", &f, "--new-key"], &[])?;
    assert_eq!(code(&new_key), EXIT_USAGE);
    assert!(!fresh.exists());

    // Bad values: exit 3 with the field named, nothing written.
    let bad = dir.path().join("bad.yaml");
    fs::write(
        &bad,
        default_values().replace("https://bao.example:8200", "http://bao.example:8200"),
    )?;
    let out = init(&["--values", &s(&bad), "--out", &f], &[])?;
    assert_eq!(code(&out), EXIT_VALUES);
    assert!(stderr(&out).contains("openbao.address"), "{}", stderr(&out));
    let no_subject = dir.path().join("no-subject.yaml");
    fs::write(
        &no_subject,
        default_values().replace(&format!("    expectedSubject: \"{SUBJECT}\"\n"), ""),
    )?;
    let out = init(&["--values", &s(&no_subject), "--out", &f], &[])?;
    assert_eq!(code(&out), EXIT_VALUES);
    assert!(stderr(&out).contains("auth.jwt.expectedSubject"), "{}", stderr(&out));
    let out = init(&["--values", &s(&dir.path().join("missing.yaml")), "--out", &f], &[])?;
    assert_eq!(code(&out), EXIT_VALUES);
    assert!(!fresh.exists());

    // Success, with environment overrides present and ignored.
    let out = init(
        &["--values", &v, "--out", &f],
        &[
            ("BAO_KMS_PROVIDER_LOG_LEVEL", "debug"),
            ("BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS", "127.0.0.1:9999"),
        ],
    )?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("identity fingerprint: cfg1."), "{stdout}");
    let config = fs::read_to_string(fresh.join("config.yaml"))?;
    assert!(config.contains("  level: info\n"), "{config}");
    assert!(config.contains("  healthAddress: 127.0.0.1:8082\n"), "{config}");
    for (name, want) in [
        ("config.yaml", 0o640),
        ("encryption-config-readers.yaml", 0o644),
        ("encryption-config.yaml", 0o644),
        ("openbao-policy.hcl", 0o644),
        ("openbao-setup.sh", 0o755),
        ("node-setup.sh", 0o755),
        ("installation.json", 0o644),
    ] {
        assert_eq!(mode(&fresh.join(name)), want, "{name}");
    }
    assert!(!fresh.join("bao-kms-provider.yaml").exists());
    // node-setup.sh without arguments names its phases and the fingerprint.
    let usage = Command::new(fresh.join("node-setup.sh")).output()?;
    assert!(usage.status.success());
    let usage = String::from_utf8_lossy(&usage.stdout);
    for needle in [
        "prepare",
        "install --ca",
        "check",
        "start",
        "identity fingerprint: cfg1.",
    ] {
        assert!(usage.contains(needle), "{needle}: {usage}");
    }
    for script in ["node-setup.sh", "openbao-setup.sh"] {
        let syntax = Command::new("sh").arg("-n").arg(fresh.join(script)).output()?;
        assert!(syntax.status.success(), "{script}: {}", stderr(&syntax));
    }
    // Running again into the now non-empty directory changes nothing.
    let before = fs::read(fresh.join("config.yaml"))?;
    let out = init(&["--values", &v, "--out", &f], &[])?;
    assert_eq!(code(&out), EXIT_WRITE);
    assert_eq!(fs::read(fresh.join("config.yaml"))?, before);
    Ok(())
}

// ------------------------------------------------------- static pod

/// A socket GID this test can give its socket directory: its own group, or
/// (as root, whose group 0 init refuses) a dedicated one.
fn socket_gid() -> u32 {
    match nix::unistd::getgid().as_raw() {
        0 => 4242,
        gid => gid,
    }
}

#[test]
fn static_pod_parses_as_a_pod_and_passes_the_node_checks() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let gid = socket_gid();
    let socket_dir = dir.path().join("run");
    fs::create_dir(&socket_dir)?;
    nix::unistd::chown(&socket_dir, None, Some(nix::unistd::Gid::from_raw(gid)))?;
    fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o2750))?;
    let values_file = dir.path().join("values.yaml");
    fs::write(
        &values_file,
        values(
            &format!(
                "  socketPath: {}\n  metricsAddress: 127.0.0.1:8081\n  healthAddress: 127.0.0.1:8082\n",
                socket_dir.join("kms.sock").display()
            ),
            "  address: https://bao.example:8200\n  tlsServerName: bao.example\n",
            "",
            "",
        ),
    )?;
    let out_dir = dir.path().join("out");
    let image = format!("registry.example.internal/bao-kms-provider@{DIGEST}");
    let gid_text = gid.to_string();
    let out = init(
        &[
            "--values",
            &s(&values_file),
            "--out",
            &s(&out_dir),
            "--model",
            "static-pod",
            "--new-key",
            "--image",
            &image,
            "--socket-gid",
            &gid_text,
        ],
        &[(ALLOWED_SOCKET_DIR_ENV, &s(&socket_dir))],
    )?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // A Kubernetes Pod, as kubelet reads it.
    let manifest = out_dir.join("bao-kms-provider.yaml");
    let pod: Pod = serde_yaml_ng::from_str(&fs::read_to_string(&manifest)?)?;
    let spec = pod.spec.clone().unwrap_or_default();
    let sc = spec.security_context.clone().unwrap_or_default();
    assert_eq!(pod.metadata.name.as_deref(), Some("bao-kms-provider"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(sc.supplemental_groups, Some(vec![i64::from(gid)]));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.automount_service_account_token, Some(false));
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some(image.as_str()));
    assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
    let volumes = spec.volumes.clone().unwrap_or_default();
    assert!(volumes.iter().all(|v| v.host_path.is_some()), "only hostPath volumes");
    let credentials = volumes
        .iter()
        .find(|v| v.name == "credentials")
        .and_then(|v| v.host_path.clone());
    assert_eq!(
        credentials.map(|h| (h.path, h.type_)),
        Some((
            "/var/lib/openbao-kms/credentials".to_owned(),
            Some("Directory".to_owned())
        ))
    );
    let installation: Value = serde_json::from_str(&fs::read_to_string(out_dir.join("installation.json"))?)?;
    assert_eq!(installation["runtime"]["socketGid"], gid);
    assert_eq!(installation["keyLineageIdGenerated"], true);
    let lineage = installation["keyLineageId"].as_str().unwrap_or_default();
    assert_eq!(lineage.len(), 32, "{lineage}");

    // The node checks, before the provider runs.
    let group_file = dir.path().join("group");
    fs::write(&group_file, format!("openbao-kms-socket:x:{gid}:\n"))?;
    let args = |manifest: &Path| -> Vec<String> {
        [
            "--no-live",
            "--config",
            &s(&out_dir.join("config.yaml")),
            "--manifest",
            &s(manifest),
            "--encryption-config",
            &s(&out_dir.join("encryption-config.yaml")),
            "--expected-digest",
            DIGEST,
            "--group-file",
            &s(&group_file),
            "--allowed-socket-dir",
            &s(&socket_dir),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    };
    let (rc, report) = run_preflight_node(&args(&manifest))?;
    assert_eq!(rc, 0, "{report:#}");
    for c in report["checks"].as_array().into_iter().flatten() {
        let id = c["id"].as_str().unwrap_or_default();
        let want = match id {
            "socket.file" | "provider.ready" | "provider.status" => "skip",
            // The phase 2 file keeps identity as the read fallback until
            // every Secret is rewritten: a warning by design, not a failure.
            "encryption_config.provider" => "warn",
            _ => "pass",
        };
        assert_eq!(c["status"], want, "{id}: {report:#}");
    }
    assert!(
        report_check(&report, "encryption_config.provider")["message"]
            .as_str()
            .is_some_and(|m| m.contains("identity remains as a read fallback")),
        "{report:#}"
    );
    for id in [
        "manifest.image",
        "manifest.supplemental_groups",
        "manifest.mounts",
        "manifest.security",
        "encryption_config.rules",
        "socket.directory",
    ] {
        assert_eq!(report_check(&report, id)["status"], "pass", "{id}");
    }

    // supplementalGroups without the socket GID, and an unpinned image,
    // fail the check that names them.
    let text = fs::read_to_string(&manifest)?;
    let wrong_groups = dir.path().join("wrong-groups.yaml");
    let edited = text.replace(
        &format!("supplementalGroups: [{gid}]"),
        &format!("supplementalGroups: [{}]", gid + 1),
    );
    assert_ne!(edited, text);
    fs::write(&wrong_groups, edited)?;
    let (rc, report) = run_preflight_node(&args(&wrong_groups))?;
    assert_eq!(rc, EXIT_DIAGNOSTIC);
    assert_eq!(
        report_check(&report, "manifest.supplemental_groups")["status"],
        "fail",
        "{report:#}"
    );
    assert_eq!(report_check(&report, "manifest.image")["status"], "pass");
    let unpinned = dir.path().join("unpinned.yaml");
    let edited = text.replace(&image, "registry.example.internal/bao-kms-provider:0.1.0");
    assert_ne!(edited, text);
    fs::write(&unpinned, edited)?;
    let (rc, report) = run_preflight_node(&args(&unpinned))?;
    assert_eq!(rc, EXIT_DIAGNOSTIC);
    assert_eq!(report_check(&report, "manifest.image")["status"], "fail", "{report:#}");
    assert_eq!(report_check(&report, "manifest.supplemental_groups")["status"], "pass");
    Ok(())
}

// ------------------------------------------------ OpenBao end to end

/// The socket, state and credentials directories of a node under `root`.
fn node_dirs(root: &Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let (socket_dir, state_dir, cred_dir) = (root.join("run"), root.join("state"), root.join("credentials"));
    for (d, m) in [(&socket_dir, 0o750), (&state_dir, 0o700), (&cred_dir, 0o750)] {
        fs::create_dir(d)?;
        fs::set_permissions(d, fs::Permissions::from_mode(m))?;
    }
    Ok((socket_dir, state_dir, cred_dir))
}

#[tokio::test]
async fn generated_openbao_setup_and_config_serve_a_first_encrypt() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let dir = TempDir::new()?;
    let root = dir.path();
    let (socket_dir, state_dir, cred_dir) = node_dirs(root)?;
    let health = format!("127.0.0.1:{}", free_port()?);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let gid = nix::unistd::getgid().as_raw();
    let jwt_file = cred_dir.join("identity.jwt");
    let values_file = root.join("values.yaml");
    fs::write(
        &values_file,
        values(
            &format!(
                "  socketPath: {}\n  socketGroup: \"{gid}\"\n  metricsAddress: {metrics}\n  healthAddress: {health}\n",
                socket_dir.join("kms.sock").display()
            ),
            &format!(
                "  address: {}\n  caCertFile: {}\n  tlsServerName: localhost\n",
                bao.address(),
                bao.ca_file().display()
            ),
            &format!("    jwtFile: {}\n", jwt_file.display()),
            "",
        )
        .replace(
            "transit:\n",
            &format!(
                "bootstrap:\n  retryInterval: 250ms\nstate:\n  path: {}\ntransit:\n",
                state_dir.join("key-registry.json").display()
            ),
        ),
    )?;
    let out_dir = root.join("out");
    let out = init(
        &["--values", &s(&values_file), "--out", &s(&out_dir), "--new-key"],
        &[(ALLOWED_SOCKET_DIR_ENV, &s(&socket_dir))],
    )?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The OpenBao operator's step, twice: the second run changes nothing.
    let signer = KeyPair::generate()?;
    let pubkeys = root.join("issuer.pub.pem");
    fs::write(&pubkeys, signer.public_key_pem())?;
    let setup = out_dir.join("openbao-setup.sh");
    let first = run_openbao_setup(&setup, &bao, &pubkeys)?;
    assert!(
        first.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&first.stdout),
        stderr(&first)
    );
    let first_out = String::from_utf8_lossy(&first.stdout);
    assert!(first_out.contains("enabled transit at transit"), "{first_out}");
    assert!(first_out.contains("created key k8s-workload-a-etcd"), "{first_out}");
    let again = run_openbao_setup(&setup, &bao, &pubkeys)?;
    assert!(again.status.success(), "{}", stderr(&again));
    let again_out = String::from_utf8_lossy(&again.stdout);
    assert!(again_out.contains("transit mount transit exists"), "{again_out}");
    assert!(again_out.contains("exists with the safe profile"), "{again_out}");
    assert!(again_out.contains("jwt auth at auth/k8s-jwt exists"), "{again_out}");

    // What the script configured.
    let key = bao.read_json("transit/keys/k8s-workload-a-etcd")?;
    assert_eq!(key["type"], "aes256-gcm96");
    assert_eq!(key["exportable"], false);
    assert_eq!(key["allow_plaintext_backup"], false);
    assert_eq!(bao.read_json("transit/config/keys")?["disable_upsert"], true);
    let role = bao.read_json("auth/k8s-jwt/role/kms")?;
    assert_eq!(role["token_ttl"], 1800);
    assert_eq!(role["token_max_ttl"], 3600);
    assert_eq!(role["token_no_default_policy"], true);
    assert_eq!(role["user_claim"], "sub");
    assert_eq!(role["bound_subject"], SUBJECT);
    assert_eq!(role["bound_audiences"], serde_json::json!([AUDIENCE]));
    assert_eq!(role["token_policies"], serde_json::json!(["openbao-kms-workload-a"]));
    let policy = bao.bao(&["policy", "read", "openbao-kms-workload-a"])?;
    assert_eq!(
        policy.trim_end(),
        fs::read_to_string(out_dir.join("openbao-policy.hcl"))?.trim_end()
    );
    assert!(!fs::read_to_string(&setup)?.contains(bao.root_token()));
    // One policy text: `policy openbao` prints what init wrote.
    let printed = Command::new(provider_binary())
        .args(["policy", "openbao", "--config", &s(&out_dir.join("config.yaml"))])
        .env(ALLOWED_SOCKET_DIR_ENV, &socket_dir)
        .output()?;
    assert!(printed.status.success(), "{}", stderr(&printed));
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim_end(), policy.trim_end());

    // The node's credential, then the provider with the generated config.
    fs::write(&jwt_file, mint_jwt(&signer, ISSUER, AUDIENCE, SUBJECT)?)?;
    fs::set_permissions(&jwt_file, fs::Permissions::from_mode(0o640))?;
    let config = out_dir.join("config.yaml");
    assert_eq!(fs::metadata(&config)?.mode() & 0o777, 0o640);
    serve_and_roundtrip(&config, &socket_dir, &health, &root.join("provider.stderr"), &[]).await
}

#[tokio::test]
async fn openbao_setup_refuses_an_existing_unsafe_key() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    bao.bao(&["secrets", "enable", "-path=transit", "transit"])?;
    bao.bao(&[
        "write",
        "-f",
        "transit/keys/k8s-workload-a-etcd",
        "type=aes256-gcm96",
        "exportable=true",
    ])?;
    let dir = TempDir::new()?;
    let values_file = dir.path().join("values.yaml");
    fs::write(&values_file, default_values())?;
    let out_dir = dir.path().join("out");
    let out = init(&["--values", &s(&values_file), "--out", &s(&out_dir)], &[])?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pubkeys = dir.path().join("issuer.pub.pem");
    fs::write(&pubkeys, KeyPair::generate()?.public_key_pem())?;
    let run = run_openbao_setup(&out_dir.join("openbao-setup.sh"), &bao, &pubkeys)?;
    assert!(!run.status.success());
    assert!(stderr(&run).contains("has exportable=true"), "{}", stderr(&run));
    // It stopped there: no policy and no auth mount were written.
    assert!(bao.bao(&["policy", "read", "openbao-kms-workload-a"]).is_err());
    assert!(bao.read_json("sys/auth/k8s-jwt").is_err());
    Ok(())
}

// ------------------------------------------ every auth method end to end

/// A node laid out for `init`'s output with one auth method: the values
/// file rendered with `--new-key`, and the directories the provider uses.
struct MethodNode {
    dir: TempDir,
    socket_dir: std::path::PathBuf,
    cred_dir: std::path::PathBuf,
    out_dir: std::path::PathBuf,
    health: String,
}

/// Renders `init` for `auth` (a YAML `auth:` section whose paths may use
/// `{cred}` for the credentials directory) against `bao`.
fn init_for(bao: &OpenBao, auth: &str) -> anyhow::Result<MethodNode> {
    let dir = TempDir::new()?;
    let root = dir.path();
    let (socket_dir, state_dir, cred_dir) = node_dirs(root)?;
    let health = format!("127.0.0.1:{}", free_port()?);
    let gid = nix::unistd::getgid().as_raw();
    let values = format!(
        "configVersion: v1alpha1\nserver:\n  socketPath: {socket}\n  socketGroup: \"{gid}\"\n  healthAddress: {health}\n  \
         metricsAddress: \"\"\nopenbao:\n  address: {addr}\n  caCertFile: {ca}\n  tlsServerName: localhost\n  \
         instanceId: bao-test-a\n{auth}bootstrap:\n  retryInterval: 250ms\nstate:\n  path: {state}\ntransit:\n  \
         mountPath: transit\n  keyName: k8s-workload-a-etcd\n  keyIdScope:\n    providerName: openbao-kms-workload-a\n    \
         clusterId: workload-a\n    transitMountId: transit-test-primary\n",
        socket = socket_dir.join("kms.sock").display(),
        addr = bao.address(),
        ca = bao.ca_file().display(),
        auth = auth.replace("{cred}", &s(&cred_dir)),
        state = state_dir.join("key-registry.json").display(),
    );
    let values_file = root.join("values.yaml");
    fs::write(&values_file, values)?;
    let out_dir = root.join("out");
    let out = init(
        &["--values", &s(&values_file), "--out", &s(&out_dir), "--new-key"],
        &[(ALLOWED_SOCKET_DIR_ENV, &s(&socket_dir))],
    )?;
    anyhow::ensure!(code(&out) == 0, "init: {}", stderr(&out));
    Ok(MethodNode {
        dir,
        socket_dir,
        cred_dir,
        out_dir,
        health,
    })
}

/// Runs the rendered `openbao-setup.sh` as the OpenBao operator with `env`.
fn openbao_setup_with(node: &MethodNode, bao: &OpenBao, env: &[(&str, &Path)]) -> anyhow::Result<String> {
    let mut cmd = Command::new(node.out_dir.join("openbao-setup.sh"));
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    let out = cmd
        .env("BAO_ADDR", bao.address())
        .env("BAO_CACERT", bao.ca_file())
        .env("BAO_TOKEN", bao.root_token())
        .env("BAO_BIN", bao_binary())
        .envs(env.iter().copied())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(out.status.success(), "openbao-setup.sh: {stdout}\n{}", stderr(&out));
    Ok(stdout)
}

fn private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Starts the provider with `config`, waits for `/ready` on `health` and
/// checks an Encrypt/Decrypt roundtrip through the socket in `socket_dir`.
async fn serve_and_roundtrip(
    config: &Path,
    socket_dir: &Path,
    health: &str,
    log_path: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    let log = fs::File::create(log_path)?;
    let mut cmd = Command::new(provider_binary());
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    let _provider = KillOnDrop(
        cmd.args(["serve", "--config", &s(config)])
            .env(ALLOWED_SOCKET_DIR_ENV, socket_dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let ready_url = format!("http://{health}/ready");
    let waited = wait::until(READY_TIMEOUT, "/ready 200", || {
        let (http, url) = (http.clone(), ready_url.clone());
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    if let Err(e) = waited {
        anyhow::bail!(
            "{e}\nprovider stderr:\n{}",
            fs::read_to_string(log_path).unwrap_or_default()
        );
    }
    let kms = KmsClient::connect(&socket_dir.join("kms.sock")).await?;
    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;
    Ok(())
}

/// [`serve_and_roundtrip`] for a [`MethodNode`].
async fn serve_node(node: &MethodNode, env: &[(&str, &str)]) -> anyhow::Result<()> {
    serve_and_roundtrip(
        &node.out_dir.join("config.yaml"),
        &node.socket_dir,
        &node.health,
        &node.dir.path().join("provider.stderr"),
        env,
    )
    .await
}

/// The secrets `openbao-setup.sh` handed out, copied to the configured
/// paths as `node-setup.sh install` would.
fn install_handed_out(node: &MethodNode, out: &Path, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        let handed = out.join(name);
        assert_eq!(mode(&handed), 0o600, "{name} is written private");
        private_file(&node.cred_dir.join(name), &fs::read(&handed)?)?;
    }
    Ok(())
}

#[tokio::test]
async fn generated_approle_setup_and_config_serve() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let node = init_for(
        &bao,
        "auth:\n  method: approle\n  approle:\n    mountPath: auth/kms-approle\n    roleIdFile: {cred}/role-id\n    secretIdFile: {cred}/secret-id\n",
    )?;
    let handed = node.dir.path().join("handed-out");
    fs::create_dir(&handed)?;
    let first = openbao_setup_with(&node, &bao, &[("BAO_KMS_CREDENTIALS_OUT", &handed)])?;
    assert!(first.contains("enabled approle auth at auth/kms-approle"), "{first}");
    // A second run changes nothing and keeps the handed-out secret ID.
    let secret_id = fs::read(handed.join("secret-id"))?;
    let again = openbao_setup_with(&node, &bao, &[("BAO_KMS_CREDENTIALS_OUT", &handed)])?;
    assert!(again.contains("approle auth at auth/kms-approle exists"), "{again}");
    assert!(again.contains("secret-id exists; not replaced"), "{again}");
    assert_eq!(fs::read(handed.join("secret-id"))?, secret_id);
    assert!(
        !first.contains(String::from_utf8_lossy(&secret_id).trim()),
        "the secret ID is never printed"
    );
    let role = bao.read_json("auth/kms-approle/role/openbao-kms-workload-a")?;
    assert_eq!(role["token_policies"], serde_json::json!(["openbao-kms-workload-a"]));
    assert_eq!(role["token_no_default_policy"], true);
    assert_eq!(role["secret_id_num_uses"], 0);
    install_handed_out(&node, &handed, &["role-id", "secret-id"])?;
    serve_node(&node, &[]).await
}

#[tokio::test]
async fn generated_token_setup_and_config_serve() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let node = init_for(&bao, "auth:\n  method: token\n  token:\n    tokenFile: {cred}/token\n")?;
    let handed = node.dir.path().join("handed-out");
    fs::create_dir(&handed)?;
    let out = openbao_setup_with(&node, &bao, &[("BAO_KMS_CREDENTIALS_OUT", &handed)])?;
    assert!(
        out.contains("wrote token role auth/token/roles/openbao-kms-workload-a"),
        "{out}"
    );
    let role = bao.read_json("auth/token/roles/openbao-kms-workload-a")?;
    assert_eq!(role["allowed_policies"], serde_json::json!(["openbao-kms-workload-a"]));
    assert_eq!(role["orphan"], true);
    assert_eq!(role["token_period"], 1800);
    let token = fs::read_to_string(handed.join("token"))?;
    assert!(!out.contains(token.trim()), "the token is never printed");
    let lookup = bao.bao(&["token", "lookup", "-format=json", token.trim()])?;
    let lookup: Value = serde_json::from_str(&lookup)?;
    assert_eq!(
        lookup["data"]["policies"],
        serde_json::json!(["openbao-kms-workload-a"])
    );
    assert_eq!(lookup["data"]["renewable"], true);
    install_handed_out(&node, &handed, &["token"])?;
    serve_node(&node, &[]).await
}

/// A raft OpenBao (its listener requests client certificates), `init` for
/// the cert `auth` section, a client CA, and the rendered setup run with it.
async fn cert_node(auth: &str) -> anyhow::Result<(OpenBao, MethodNode, crate::auth_methods::Pki, String)> {
    let bao = OpenBao::start_raft().await?;
    let node = init_for(&bao, auth)?;
    let pki = crate::auth_methods::Pki::new()?;
    let ca = node.dir.path().join("client-ca.pem");
    fs::write(&ca, pki.ca_pem())?;
    let out = openbao_setup_with(&node, &bao, &[("BAO_KMS_CLIENT_CA_FILE", &ca)])?;
    Ok((bao, node, pki, out))
}

#[tokio::test]
async fn generated_cert_setup_and_config_serve_with_a_file_key() -> anyhow::Result<()> {
    let (bao, node, pki, out) = cert_node(
        "auth:\n  method: cert\n  cert:\n    mountPath: auth/kms-cert\n    name: kms-node\n    source: file\n    file:\n      certificateFile: {cred}/client.crt\n      keyFile: {cred}/client.key\n",
    )
    .await?;
    assert!(out.contains("wrote role auth/kms-cert/certs/kms-node"), "{out}");
    let role = bao.read_json("auth/kms-cert/certs/kms-node")?;
    assert_eq!(role["token_policies"], serde_json::json!(["openbao-kms-workload-a"]));
    assert_eq!(role["token_no_default_policy"], true);
    // Without the CA, an existing role is kept.
    let again = openbao_setup_with(&node, &bao, &[])?;
    assert!(again.contains("certs/kms-node exists"), "{again}");
    let (cert, key) = pki.client(false)?;
    private_file(&node.cred_dir.join("client.crt"), cert.as_bytes())?;
    private_file(&node.cred_dir.join("client.key"), key.serialize_pem().as_bytes())?;
    serve_node(&node, &[]).await
}

#[tokio::test]
async fn generated_cert_setup_and_config_serve_with_a_pkcs11_key() -> anyhow::Result<()> {
    use crate::auth_methods::{SOFTHSM_MODULE, softhsm_token};
    let auth = format!(
        "auth:\n  method: cert\n  cert:\n    mountPath: auth/cert\n    name: kms-node\n    source: pkcs11\n    pkcs11:\n      certificateFile: {{cred}}/client.crt\n      modulePath: {SOFTHSM_MODULE}\n      tokenLabel: kms\n      keyLabel: kms-client\n      pinFile: {{cred}}/pkcs11.pin\n      maxSessions: 2\n"
    );
    let (_bao, node, pki, _) = cert_node(&auth).await?;
    let (cert, key) = pki.client(false)?;
    let conf = softhsm_token(node.dir.path(), &key)?;
    drop(key);
    private_file(&node.cred_dir.join("client.crt"), cert.as_bytes())?;
    private_file(&node.cred_dir.join("pkcs11.pin"), b"1234")?;
    serve_node(&node, &[("SOFTHSM2_CONF", &s(&conf))]).await
}

// Multi-threaded: the token endpoint answers while the test waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_oauth2_setup_and_config_serve() -> anyhow::Result<()> {
    use bao_kms_system_tests::oauth2::{ClientAuth, TokenEndpoint};
    let bao = OpenBao::start_dev().await?;
    let signer = std::sync::Arc::new(KeyPair::generate()?);
    let mint = {
        let signer = signer.clone();
        move || mint_jwt(&signer, ISSUER, AUDIENCE, SUBJECT).expect("mint")
    };
    let endpoint = TokenEndpoint::start("kms-node", "client-secret", ClientAuth::Post, Some(1800), mint).await?;
    let node = init_for(
        &bao,
        &format!(
            "auth:\n  method: jwt\n  jwt:\n    mountPath: auth/k8s-jwt\n    role: kms\n    source: oauth2\n    \
             expectedIssuer: {ISSUER}\n    expectedAudience: [{AUDIENCE}]\n    expectedSubject: \"{SUBJECT}\"\n    \
             oauth2:\n      tokenUrl: \"{}\"\n      clientId: kms-node\n      clientSecretFile: {{cred}}/client-secret\n      \
             authMethod: client_secret_post\n      caCertFile: {{cred}}/idp-ca.pem\n",
            endpoint.url("")
        ),
    )?;
    let pubkeys = node.dir.path().join("issuer.pub.pem");
    fs::write(&pubkeys, signer.public_key_pem())?;
    let out = openbao_setup_with(&node, &bao, &[("BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE", &pubkeys)])?;
    assert!(out.contains("wrote role auth/k8s-jwt/role/kms"), "{out}");
    private_file(&node.cred_dir.join("client-secret"), b"client-secret\n")?;
    fs::write(node.cred_dir.join("idp-ca.pem"), endpoint.ca_pem())?;
    serve_node(&node, &[]).await?;
    assert!(
        !endpoint.grants().is_empty(),
        "the provider fetched its JWT from the token endpoint"
    );
    Ok(())
}

// ------------------------------------------------------ node-setup.sh

fn node_setup(out_dir: &Path, root: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(out_dir.join("node-setup.sh"))
        .args(args)
        .env("NODE_SETUP_ROOT", root)
        .env("BAO_KMS_PROVIDER_BIN", provider_binary())
        .output()?)
}

fn owner_mode(path: &Path) -> (u32, u32, u32) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
}

/// The static-pod node layout, written under a scratch root as the real
/// script writes it on a node (numeric owners, so no host accounts are
/// created). Needs root for the ownership; without root, `prepare` must
/// refuse.
#[test]
fn node_setup_prepares_and_installs_the_static_pod_layout() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let values_file = dir.path().join("values.yaml");
    fs::write(&values_file, default_values())?;
    let out_dir = dir.path().join("out");
    let out = init(
        &[
            "--values",
            &s(&values_file),
            "--out",
            &s(&out_dir),
            "--model",
            "static-pod",
            "--image",
            &format!("registry.example.internal/bao-kms-provider@{DIGEST}"),
            "--socket-gid",
            "4242",
        ],
        &[],
    )?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Everything below writes under the scratch root only; a script that
    // does not honour NODE_SETUP_ROOT must never run here.
    let script = fs::read_to_string(out_dir.join("node-setup.sh"))?;
    assert!(
        script.contains("R=${NODE_SETUP_ROOT:-}"),
        "stale binary: rebuild bao-kms-provider"
    );
    let root = dir.path().join("node");
    fs::create_dir(&root)?;

    let prepared = node_setup(&out_dir, &root, &["prepare"])?;
    if !nix::unistd::geteuid().is_root() {
        assert_eq!(code(&prepared), 1);
        assert!(stderr(&prepared).contains("as root"), "{}", stderr(&prepared));
        return Ok(());
    }
    assert_eq!(code(&prepared), 0, "{}", stderr(&prepared));
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    for (path, want) in [
        ("/etc/openbao-kms", (0, 65532, 0o750)),
        ("/etc/openbao-kms/tls", (0, 0, 0o755)),
        ("/var/lib/openbao-kms", (65532, 65532, 0o750)),
        ("/var/lib/openbao-kms/credentials", (0, 65532, 0o750)),
        ("/var/lib/openbao-kms/state", (65532, 65532, 0o750)),
        ("/run/openbao-kms", (65532, 4242, 0o2750)),
        ("/etc/kubernetes/openbao-kms", (0, 0, 0o755)),
        ("/etc/openbao-kms/config.yaml", (0, 65532, 0o640)),
        ("/etc/kubernetes/openbao-kms/encryption-config.yaml", (0, 0, 0o600)),
        (
            "/etc/kubernetes/openbao-kms/encryption-config-readers.yaml",
            (0, 0, 0o600),
        ),
    ] {
        assert_eq!(owner_mode(&at(path)), want, "{path}");
    }
    assert_eq!(
        fs::read(at("/etc/openbao-kms/config.yaml"))?,
        fs::read(out_dir.join("config.yaml"))?
    );
    assert_eq!(
        fs::read_to_string(at("/etc/tmpfiles.d/openbao-kms-static-pod.conf"))?,
        "# bao-kms-provider socket directory (written by node-setup.sh)\nd /run/openbao-kms 2750 65532 4242 -\n"
    );

    // install: both files, exact owners and modes; bad arguments exit 2.
    let ca = dir.path().join("ca.pem");
    fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")?;
    let jwt = dir.path().join("identity.jwt");
    fs::write(&jwt, "header.payload.signature\n")?;
    for bad in [
        vec!["install", "--ca", &s(&ca)],
        vec![
            "install",
            "--ca",
            &s(&ca),
            "--credential",
            &s(&jwt),
            "--issuer-ca",
            &s(&ca),
        ],
        vec!["install", "--ca", &s(&jwt), "--credential", &s(&jwt)],
    ] {
        let run = node_setup(&out_dir, &root, &bad)?;
        assert_eq!(code(&run), EXIT_USAGE, "{bad:?}: {}", stderr(&run));
    }
    assert!(!at("/var/lib/openbao-kms/credentials/identity.jwt").exists());
    let installed = node_setup(&out_dir, &root, &["install", "--ca", &s(&ca), "--credential", &s(&jwt)])?;
    assert_eq!(code(&installed), 0, "{}", stderr(&installed));
    assert_eq!(owner_mode(&at("/etc/openbao-kms/tls/ca.crt")), (0, 0, 0o644));
    let installed_jwt = at("/var/lib/openbao-kms/credentials/identity.jwt");
    assert_eq!(owner_mode(&installed_jwt), (0, 65532, 0o640));
    assert_eq!(fs::read(&installed_jwt)?, fs::read(&jwt)?);
    // No temporary files left beside them.
    assert_eq!(fs::read_dir(at("/var/lib/openbao-kms/credentials"))?.count(), 1);

    // start refuses without a passed check.
    let start = node_setup(&out_dir, &root, &["start"])?;
    assert_eq!(code(&start), 1);
    assert!(stderr(&start).contains("no passed check"), "{}", stderr(&start));
    assert!(!at("/etc/kubernetes/manifests/bao-kms-provider.yaml").exists());
    Ok(())
}
