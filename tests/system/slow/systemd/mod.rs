//! The systemd model under a real systemd as PID 1 (`make test-systemd`):
//! one minimal Debian bookworm root (built once by `debian-root.sh` and
//! cached outside the checkout), booted once per run with `systemd-nspawn`,
//! and the provider installed in it the way docs/install.md tells operators
//! to: the Debian package, `init` for the systemd model, `openbao-setup.sh`
//! against a real OpenBao on the host's loopback (the container shares the
//! host's network), then `node-setup.sh prepare`, `install`, `check` and
//! `start`. From inside the booted system the test then proves, step by step:
//!
//! 1. the package: sysusers users and groups, tmpfiles directories as the
//!    install table documents them, the unit installed disabled and stopped;
//! 2. node-setup's four phases end with the unit enabled, active and ready;
//!    every row of the install table has its documented owner and mode;
//! 3. the socket is 0660 with the socket group: a member of that group
//!    completes a KMS round trip (`probe`), a non-member is refused;
//! 4. `systemctl restart` keeps the key_id, the registry and decrypts what
//!    was encrypted before; reinstalling the package does not restart it;
//! 5. the sandbox: the provider's mount namespace is read-only everywhere
//!    but its state and runtime directories; `systemd-analyze security`
//!    gives the documented score;
//! 6. the kubeadm hooks of the systemd model (40, 30, 50) and
//!    `bao-kms-preflight node` pass;
//! 7. `systemctl stop` removes the socket and keeps its directory;
//! 8. a broken configuration makes the provider exit with its own
//!    configuration error (exit 3) in `journalctl -u`, never a sandbox
//!    error; the fixed configuration starts again.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bao_kms_system_tests::init_files::{mint_jwt, run_openbao_setup};
use bao_kms_system_tests::install_doc::{LayoutRow, MadeBy, documented_security_score, systemd_layout};
use bao_kms_system_tests::net::free_port;
use bao_kms_system_tests::nspawn::{Machine, text};
use bao_kms_system_tests::process::run_checked;
use bao_kms_system_tests::provider::{registry_record, workspace_root};
use bao_kms_system_tests::{KmsClient, OpenBao, wait};
use rcgen::KeyPair;
use tempfile::TempDir;

use super::package::deb_path;

const UNIT: &str = "bao-kms-provider.service";
const WORK: &str = "/srv/bao-kms";
const CONFIG: &str = "/etc/openbao-kms/config.yaml";
const SOCKET: &str = "/run/openbao-kms/kms.sock";
const REGISTRY: &str = "/var/lib/openbao-kms/state/key-registry.json";
const HOOKS: &str = "/usr/share/bao-kms-provider/kubeadm";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "openbao";
const SUBJECT: &str = "system:node:cp-1";
/// Files the sandbox must keep the provider from writing, by a read-only
/// mount (not only by file permissions).
const READ_ONLY: [&str; 6] = [
    "/etc/openbao-kms/.sandbox-probe",
    "/usr/bin/.sandbox-probe",
    "/var/lib/openbao-kms/.sandbox-probe",
    "/var/lib/openbao-kms/credentials/.sandbox-probe",
    "/var/log/.sandbox-probe",
    "/srv/.sandbox-probe",
];
/// node-setup's start waits for /ready; the provider's own bound.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The cached root `debian-root.sh` prints (building it the first time).
fn debian_root() -> anyhow::Result<PathBuf> {
    let script = workspace_root().join("tests/system/slow/systemd/debian-root.sh");
    let out = run_checked(&mut Command::new(script))?;
    eprintln!("{}", text(&out.stderr).trim_end());
    Ok(PathBuf::from(text(&out.stdout).trim()))
}

fn values(bao: &OpenBao, health: &str, metrics: &str) -> String {
    format!(
        r#"configVersion: v1alpha1
server:
  metricsAddress: {metrics}
  healthAddress: {health}
openbao:
  address: {address}
  tlsServerName: localhost
  instanceId: bao-test-a
auth:
  method: jwt
  jwt:
    mountPath: auth/k8s-jwt
    role: kms
    expectedIssuer: {ISSUER}
    expectedAudience: [{AUDIENCE}]
    expectedSubject: "{SUBJECT}"
bootstrap:
  retryInterval: 250ms
transit:
  mountPath: transit
  keyName: k8s-workload-a-etcd
  keyIdScope:
    providerName: openbao-kms-workload-a
    clusterId: workload-a
    transitMountId: transit-test-primary
"#,
        address = bao.address()
    )
}

/// Prints each step's duration as the test goes (the tier's timing is
/// measured here, never asserted).
struct Steps {
    start: Instant,
    last: Instant,
}

impl Steps {
    fn new() -> Self {
        let now = Instant::now();
        Self { start: now, last: now }
    }

    fn done(&mut self, what: &str) {
        let now = Instant::now();
        eprintln!(
            "systemd tier: {what}: {:.1}s (total {:.1}s)",
            (now - self.last).as_secs_f64(),
            (now - self.start).as_secs_f64()
        );
        self.last = now;
    }
}

/// (owner, group, mode) of `path` inside, as `stat` prints them.
fn stat(m: &Machine, path: &str) -> anyhow::Result<(String, String, u32)> {
    let out = m.run(&["stat", "-c", "%U %G %a", path])?;
    let f: Vec<&str> = out.split_whitespace().collect();
    anyhow::ensure!(f.len() == 3, "stat {path}: {out}");
    Ok((f[0].to_owned(), f[1].to_owned(), u32::from_str_radix(f[2], 8)?))
}

fn check_rows(m: &Machine, rows: &[&LayoutRow]) -> anyhow::Result<()> {
    for row in rows {
        let got = stat(m, &row.path)?;
        assert_eq!(
            got,
            (row.owner.clone(), row.group.clone(), row.mode),
            "{} ({:?}): (owner, group, mode)",
            row.path,
            row.made_by
        );
    }
    Ok(())
}

fn show(m: &Machine, property: &str) -> anyhow::Result<String> {
    Ok(m.run(&["systemctl", "show", "--value", "-p", property, UNIT])?
        .trim()
        .to_owned())
}

fn all(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

async fn wait_ready(http: &reqwest::Client, url: &str, m: &Machine) -> anyhow::Result<()> {
    wait::until(READY_TIMEOUT, "the provider's /ready", || {
        let (http, url) = (http.clone(), url.to_owned());
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|e| {
        let journal = m
            .exec(&["journalctl", "-u", UNIT, "--no-pager", "-n", "40"])
            .map(|o| all(&o))
            .unwrap_or_default();
        anyhow::anyhow!("{e}\njournal:\n{journal}")
    })
}

/// Runs `sh -c script` inside the provider's mount namespace (the sandbox
/// systemd built for it), as root or as the unit's identity.
fn in_sandbox(m: &Machine, main_pid: &str, as_provider: bool, script: &str) -> anyhow::Result<Output> {
    let mut args = vec!["nsenter", "-t", main_pid, "-m", "--"];
    if as_provider {
        args.extend([
            "setpriv",
            "--reuid=openbao-kms",
            "--regid=openbao-kms-socket",
            "--groups=openbao-kms",
            "--",
        ]);
    }
    args.extend(["sh", "-c", script]);
    m.exec(&args)
}

#[tokio::test]
async fn packaged_provider_runs_under_a_booted_systemd() -> anyhow::Result<()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "systemd-nspawn needs root: run this tier as root"
    );
    let mut steps = Steps::new();
    let deb = deb_path();
    let root = debian_root()?;
    steps.done("cached Debian root");

    // Host side: OpenBao, the work directory the node sees at /srv/bao-kms.
    let bao = OpenBao::start_dev().await?;
    let work = TempDir::new()?;
    let w = work.path();
    fs::set_permissions(w, fs::Permissions::from_mode(0o755))?;
    let deb_name = deb
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a .deb name")
        .to_owned();
    fs::copy(&deb, w.join(&deb_name))?;
    let health = format!("127.0.0.1:{}", free_port()?);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    fs::write(w.join("values.yaml"), values(&bao, &health, &metrics))?;
    fs::copy(bao.ca_file(), w.join("ca.crt"))?;
    let signer = KeyPair::generate()?;
    fs::write(w.join("issuer.pub.pem"), signer.public_key_pem())?;
    fs::write(w.join("identity.jwt"), mint_jwt(&signer, ISSUER, AUDIENCE, SUBJECT)?)?;
    steps.done("OpenBao");

    let mut m = Machine::boot(&root, &[(w, WORK, false)], &w.join("console.log")).await?;
    assert_eq!(m.run(&["cat", "/proc/1/comm"])?.trim(), "systemd");
    steps.done("boot");

    // 1. The package.
    let installed = m.run(&["dpkg", "--install", &format!("{WORK}/{deb_name}")])?;
    assert!(installed.contains("Setting up bao-kms-provider"), "{installed}");
    assert_eq!(m.exec(&["systemctl", "is-enabled", UNIT])?.stdout, b"disabled\n");
    assert_eq!(m.exec(&["systemctl", "is-active", UNIT])?.stdout, b"inactive\n");
    let user = m.run(&["getent", "passwd", "openbao-kms"])?;
    assert!(
        user.trim_end().ends_with(":/var/lib/openbao-kms:/usr/sbin/nologin"),
        "{user}"
    );
    let groups = m.run(&["id", "-nG", "openbao-kms"])?;
    assert_eq!(groups.trim(), "openbao-kms openbao-kms-socket");
    let layout = systemd_layout()?;
    check_rows(
        &m,
        &layout
            .iter()
            .filter(|r| r.made_by == MadeBy::Package)
            .collect::<Vec<_>>(),
    )?;
    steps.done("package installed");

    // 2. init on the node, openbao-setup.sh by the OpenBao operator, then
    // node-setup's phases.
    m.run(&[
        "bao-kms-provider",
        "init",
        "--values",
        &format!("{WORK}/values.yaml"),
        "--out",
        &format!("{WORK}/out"),
        "--new-key",
    ])?;
    let setup = run_openbao_setup(&w.join("out/openbao-setup.sh"), &bao, &w.join("issuer.pub.pem"))?;
    assert!(setup.status.success(), "openbao-setup.sh: {}", all(&setup));
    let node_setup = format!("{WORK}/out/node-setup.sh");
    m.run(&["sh", &node_setup, "prepare"])?;
    m.run(&[
        "sh",
        &node_setup,
        "install",
        "--ca",
        &format!("{WORK}/ca.crt"),
        "--credential",
        &format!("{WORK}/identity.jwt"),
    ])?;
    let checked = m.run(&["sh", &node_setup, "check"])?;
    assert!(!checked.contains("[fail]"), "{checked}");
    let started = m.exec_env(&["sh", &node_setup, "start"], &[("READY_TIMEOUT_SECONDS", "60")])?;
    assert!(started.status.success(), "node-setup start: {}", all(&started));
    assert_eq!(m.exec(&["systemctl", "is-enabled", UNIT])?.stdout, b"enabled\n");
    assert_eq!(show(&m, "ActiveState")?, "active");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let ready = format!("http://{health}/ready");
    wait_ready(&http, &ready, &m).await?;
    check_rows(&m, &layout.iter().collect::<Vec<_>>())?;
    steps.done("node-setup prepare, install, check, start");

    // 3. The socket group reaches the socket; nobody else does.
    m.run(&["useradd", "--system", "--no-create-home", "kube-apiserver"])?;
    m.run(&["usermod", "-a", "-G", "openbao-kms-socket", "kube-apiserver"])?;
    m.run(&["useradd", "--system", "--no-create-home", "outsider"])?;
    let probe = |user: &str| {
        m.exec(&[
            "setpriv",
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--",
            "bao-kms-provider",
            "probe",
            "--socket",
            SOCKET,
        ])
    };
    let member = probe("kube-apiserver")?;
    assert!(member.status.success(), "member: {}", all(&member));
    assert!(!text(&member.stdout).contains("[fail]"), "{}", all(&member));
    let outsider = probe("outsider")?;
    assert!(!outsider.status.success(), "non-member: {}", all(&outsider));
    assert!(
        all(&outsider).to_lowercase().contains("permission denied"),
        "non-member: {}",
        all(&outsider)
    );
    // kube-apiserver's side of KMS v2 through the same socket.
    let socket = m.host_path(SOCKET);
    let kms = KmsClient::connect(&socket).await?;
    let key_id = kms.healthy_status().await?.key_id;
    let stored = kms.prime().await?;
    drop(kms);
    steps.done("socket group round trip");

    // 4. Restart keeps key_id and state; a reinstall restarts nothing.
    let registry = fs::read_to_string(m.host_path(REGISTRY))?;
    let record = registry_record(&serde_json::from_str(&registry)?, 1);
    assert!(record.is_some(), "{registry}");
    let pid = show(&m, "MainPID")?;
    m.run(&["systemctl", "restart", UNIT])?;
    wait_ready(&http, &ready, &m).await?;
    assert_ne!(show(&m, "MainPID")?, pid);
    let kms = KmsClient::connect(&socket).await?;
    assert_eq!(kms.healthy_status().await?.key_id, key_id);
    kms.decrypt(&stored).await?;
    drop(kms);
    let after = fs::read_to_string(m.host_path(REGISTRY))?;
    assert_eq!(registry_record(&serde_json::from_str(&after)?, 1), record);
    let pid = show(&m, "MainPID")?;
    m.run(&["dpkg", "--install", &format!("{WORK}/{deb_name}")])?;
    assert_eq!(
        show(&m, "MainPID")?,
        pid,
        "reinstalling the package restarted the provider"
    );
    assert_eq!(show(&m, "ActiveState")?, "active");
    steps.done("restart and reinstall");

    // 5. The sandbox. Read-only mounts, whatever the file permissions say
    // (even root inside the provider's mount namespace cannot write) ...
    for path in READ_ONLY {
        let as_root = in_sandbox(&m, &pid, false, &format!("echo x > {path}"))?;
        assert!(
            !as_root.status.success() && all(&as_root).contains("Read-only file system"),
            "{path} as root in the sandbox: {}",
            all(&as_root)
        );
    }
    // ... and nowhere else for the provider's identity: /run by ownership,
    // the home directories hidden by ProtectHome=.
    for path in READ_ONLY
        .iter()
        .chain(&["/run/.sandbox-probe", "/root/.sandbox-probe", "/home/.sandbox-probe"])
    {
        let as_provider = in_sandbox(&m, &pid, true, &format!("echo x > {path}"))?;
        assert!(!as_provider.status.success(), "the provider wrote {path}");
    }
    for dir in ["/var/lib/openbao-kms/state", "/run/openbao-kms"] {
        let file = format!("{dir}/.sandbox-probe");
        let out = in_sandbox(&m, &pid, true, &format!("echo x > {file} && rm {file}"))?;
        assert!(out.status.success(), "the provider cannot write {dir}: {}", all(&out));
    }
    // /tmp is private: what the provider writes there is not the system's /tmp.
    let out = in_sandbox(&m, &pid, true, "echo x > /tmp/.sandbox-probe")?;
    assert!(out.status.success(), "{}", all(&out));
    assert!(!m.host_path("/tmp/.sandbox-probe").exists());
    let security = m.run(&["systemd-analyze", "security", "--no-pager", UNIT])?;
    let line = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{security}"));
    // "→ Overall exposure level for bao-kms-provider.service: 1.5 OK :-)"
    let mut words = line
        .split_once(".service:")
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace();
    let (score, label) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let (doc_score, doc_label) = documented_security_score()?;
    assert_eq!(
        (score, label),
        (format!("{doc_score:.1}").as_str(), doc_label.as_str()),
        "docs/install.md documents {doc_score} ({doc_label}): {line}"
    );
    steps.done("sandbox and systemd-analyze security");

    // 6. The kubeadm hooks of the systemd model, and the node preflight.
    let hook = |name: &str, args: &[&str]| {
        let mut all_args = vec!["sh".to_owned(), format!("{HOOKS}/{name}")];
        all_args.extend(args.iter().map(|a| (*a).to_owned()));
        let refs: Vec<&str> = all_args.iter().map(String::as_str).collect();
        m.run(&refs)
    };
    hook("40-encryption-config.sh", &["--phase", "1", &format!("{WORK}/out")])?;
    assert_eq!(
        stat(&m, "/etc/kubernetes/openbao-kms/encryption-config.yaml")?,
        ("root".to_owned(), "root".to_owned(), 0o600)
    );
    hook(
        "30-wait-preflight.sh",
        &["--manifest", "none", "--timeout", "60", "--interval", "1"],
    )?;
    let smoke = hook("50-smoke.sh", &["--no-apiserver"])?;
    assert!(smoke.contains("[pass]") && !smoke.contains("[fail]"), "{smoke}");
    let preflight = m.exec(&[
        "bao-kms-preflight",
        "node",
        "--config",
        CONFIG,
        "--encryption-config",
        "/etc/kubernetes/openbao-kms/encryption-config.yaml",
        "-o",
        "json",
    ])?;
    let report: serde_json::Value =
        serde_json::from_slice(&preflight.stdout).map_err(|e| anyhow::anyhow!("{e}: {}", all(&preflight)))?;
    assert!(preflight.status.success(), "{report:#}");
    for id in [
        "config.file",
        "socket.group",
        "socket.directory",
        "socket.file",
        "provider.ready",
    ] {
        let check = bao_kms_system_tests::doctor::report_check(&report, id);
        assert_eq!(check["status"], "pass", "{id}: {report:#}");
    }
    steps.done("kubeadm hooks 40, 30, 50 and bao-kms-preflight node");

    // 7. Stop removes the socket, keeps its directory.
    m.run(&["systemctl", "stop", UNIT])?;
    assert_eq!(show(&m, "ActiveState")?, "inactive");
    assert!(!m.host_path(SOCKET).exists(), "the socket outlived the provider");
    let socket_dir = layout
        .iter()
        .find(|r| r.path == "/run/openbao-kms")
        .expect("the socket directory row");
    check_rows(&m, &[socket_dir])?;
    steps.done("stop");

    // 8. A broken configuration: the provider's own error, not the sandbox's.
    let config_path = m.host_path(CONFIG);
    let good = fs::read_to_string(&config_path)?;
    let broken = good.replace(&bao.address(), &bao.address().replace("https://", "http://"));
    assert_ne!(broken, good);
    fs::write(&config_path, &broken)?;
    let since = format!("@{}", m.run(&["date", "+%s"])?.trim());
    m.run(&["systemctl", "start", UNIT])?;
    let status = wait::until(Duration::from_secs(30), "the provider to exit", || {
        let state = (show(&m, "Result"), show(&m, "ExecMainStatus"));
        async move {
            match state {
                (Ok(result), Ok(code)) if result != "success" => Ok((result, code)),
                (result, code) => Err(format!("{result:?} {code:?}")),
            }
        }
    })
    .await?;
    assert_eq!(
        status,
        ("exit-code".to_owned(), "3".to_owned()),
        "exit 3: configuration"
    );
    let journal = m.run(&["journalctl", "-u", UNIT, "--no-pager", "-o", "cat", "--since", &since])?;
    assert!(journal.contains("openbao.address"), "{journal}");
    for sandbox_error in [
        "Permission denied",
        "Operation not permitted",
        "Read-only file system",
        "status=226",
        "Bad system call",
        "SIGSYS",
    ] {
        assert!(!journal.contains(sandbox_error), "{sandbox_error}: {journal}");
    }
    assert!(
        http.get(&ready).send().await.is_err(),
        "/ready answers without a provider"
    );
    fs::write(&config_path, &good)?;
    m.run(&["systemctl", "restart", UNIT])?;
    wait_ready(&http, &ready, &m).await?;
    steps.done("broken configuration and recovery");

    m.poweroff()?;
    steps.done("poweroff");
    Ok(())
}
