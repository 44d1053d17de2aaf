//! The systemd model in `manifests/systemd/`, checked with systemd's own
//! tools against a temp node root, and the identity and directory design
//! checked by running the real provider the way the unit runs it.
//!
//! - `systemd-analyze verify --root` accepts the unit with the built binary
//!   installed at its ExecStart path, and names a broken unit.
//! - `systemd-sysusers --root` and `systemd-tmpfiles --root --create` give
//!   the documented users, groups, owners and modes (numeric, resolved
//!   through the root's own passwd and group files), and the unit's
//!   RuntimeDirectory= and StateDirectory= agree with tmpfiles.
//! - `systemd-analyze security --offline` rates the unit's exposure.
//! - The provider, started with the unit's UID, primary group, supplementary
//!   group and umask in that layout, passes its own socket-directory,
//!   state-directory and credential checks; a kube-apiserver user that is
//!   only in the socket group reaches the socket and nothing else.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bao_kms_system_tests::doctor::report_check;
use bao_kms_system_tests::process::KillOnDrop;
use bao_kms_system_tests::provider::{ALLOWED_SOCKET_DIR_ENV, dev_setup, provider_binary, workspace_root};
use bao_kms_system_tests::wait;
use tempfile::TempDir;

const UNIT: &str = "bao-kms-provider.service";
const UNIT_DIR: &str = "usr/lib/systemd/system";
/// Targets the unit's dependencies (explicit and default) name; verify
/// needs them to exist in the root.
const TARGETS: [&str; 5] = [
    "sysinit.target",
    "basic.target",
    "shutdown.target",
    "network-online.target",
    "multi-user.target",
];
/// A UID outside the system range standing in for kube-apiserver's user.
const APISERVER_UID: u32 = 64_010;

fn manifests() -> PathBuf {
    workspace_root().join("manifests/systemd")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A node root with the unit, sysusers and tmpfiles files and the provider
/// binary installed at their package paths.
struct NodeRoot {
    dir: TempDir,
}

impl NodeRoot {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("node-root-")
            .tempdir()
            .expect("creating the node root");
        // Other users (the service user, the API server) must traverse it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod the node root");
        fs::create_dir(dir.path().join("etc")).expect("creating etc/");
        let root = Self { dir };
        root.install(&manifests().join(UNIT), &format!("{UNIT_DIR}/{UNIT}"), 0o644);
        root.install(
            &manifests().join("sysusers.d/openbao-kms.conf"),
            "usr/lib/sysusers.d/openbao-kms.conf",
            0o644,
        );
        root.install(
            &manifests().join("tmpfiles.d/openbao-kms.conf"),
            "usr/lib/tmpfiles.d/openbao-kms.conf",
            0o644,
        );
        for target in TARGETS {
            root.install(
                &Path::new("/usr/lib/systemd/system").join(target),
                &format!("{UNIT_DIR}/{target}"),
                0o644,
            );
        }
        root.install(&provider_binary(), "usr/bin/bao-kms-provider", 0o755);
        root
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }

    fn install(&self, src: &Path, rel: &str, mode: u32) {
        let dst = self.at(rel);
        fs::create_dir_all(dst.parent().expect("a relative path")).expect("creating parent directories");
        // The binary is large: link it when the temp dir is on its file system.
        if mode & 0o111 == 0 || fs::hard_link(src, &dst).is_err() {
            fs::copy(src, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
        }
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn sysusers(&self) {
        let out = run(Command::new("systemd-sysusers").arg(format!("--root={}", self.path().display())));
        assert!(out.status.success(), "systemd-sysusers: {}", text(&out.stderr));
    }

    fn tmpfiles(&self) {
        let out = run(Command::new("systemd-tmpfiles")
            .arg(format!("--root={}", self.path().display()))
            .arg("--create"));
        assert!(out.status.success(), "systemd-tmpfiles: {}", text(&out.stderr));
    }

    /// `systemd-analyze verify` on `unit` inside the root: Ok when it exits
    /// 0 and prints nothing about the unit; Err with what it printed.
    fn verify(&self, unit: &str) -> Result<(), String> {
        let out = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", self.path().display()))
            .arg("--man=no")
            .arg(format!("/{UNIT_DIR}/{unit}")));
        let stderr = text(&out.stderr);
        let stem = unit.trim_end_matches(".service");
        let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains(stem)).collect();
        if out.status.success() && about_unit.is_empty() {
            Ok(())
        } else {
            Err(format!("exit {:?}: {stderr}", out.status.code()))
        }
    }

    /// `name -> fields` of the root's passwd and group files.
    fn passwd(&self) -> HashMap<String, Vec<String>> {
        colon_table(&self.at("etc/passwd"))
    }

    fn group(&self) -> HashMap<String, Vec<String>> {
        colon_table(&self.at("etc/group"))
    }

    fn uid(&self, name: &str) -> u32 {
        let p = self.passwd();
        p.get(name).unwrap_or_else(|| panic!("no user {name}"))[2]
            .parse()
            .expect("a numeric ID")
    }

    fn gid(&self, name: &str) -> u32 {
        let g = self.group();
        g.get(name).unwrap_or_else(|| panic!("no group {name}"))[2]
            .parse()
            .expect("a numeric ID")
    }
}

fn colon_table(path: &Path) -> HashMap<String, Vec<String>> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let fields: Vec<String> = l.split(':').map(str::to_owned).collect();
            (fields[0].clone(), fields)
        })
        .collect()
}

/// `Key=Value` lines of the unit file (last one wins, as for these keys).
fn unit_settings() -> HashMap<String, String> {
    fs::read_to_string(manifests().join(UNIT))
        .expect("reading the unit")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn octal(s: &str) -> u32 {
    u32::from_str_radix(s, 8).unwrap_or_else(|e| panic!("mode {s}: {e}"))
}

#[test]
fn unit_verifies_in_a_node_root_and_a_broken_unit_does_not() {
    let root = NodeRoot::new();
    root.verify(UNIT).unwrap();

    // An unknown directive: verify warns on stderr (exit status stays 0).
    let unit = fs::read_to_string(manifests().join(UNIT)).unwrap();
    assert!(unit.contains("\nType=exec\n"));
    fs::write(
        root.at(&format!("{UNIT_DIR}/broken-key.service")),
        unit.replace("\nType=exec\n", "\nTpye=exec\n"),
    )
    .unwrap();
    let err = root.verify("broken-key.service").unwrap_err();
    assert!(err.contains("Unknown key 'Tpye'"), "{err}");

    // An ExecStart binary that is not installed: verify fails.
    fs::write(
        root.at(&format!("{UNIT_DIR}/broken-exec.service")),
        unit.replace(
            "/usr/bin/bao-kms-provider serve",
            "/usr/bin/bao-kms-provider-missing serve",
        ),
    )
    .unwrap();
    let err = root.verify("broken-exec.service").unwrap_err();
    assert!(err.contains("bao-kms-provider-missing"), "{err}");
    assert!(!err.contains("exit Some(0)"), "{err}");
}

#[test]
fn sysusers_and_tmpfiles_give_the_documented_identities_and_modes() {
    let root = NodeRoot::new();
    root.sysusers();
    root.tmpfiles();

    let passwd = root.passwd();
    let group = root.group();
    let user = &passwd["openbao-kms"];
    assert_eq!(user[4], "OpenBao Kubernetes KMS provider");
    assert_eq!(user[5], "/var/lib/openbao-kms");
    assert_eq!(user[6], "/usr/sbin/nologin");
    let (kms, socket) = (root.gid("openbao-kms"), root.gid("openbao-kms-socket"));
    assert_ne!(kms, socket);
    assert_eq!(user[3].parse::<u32>().unwrap(), kms, "primary group");
    let uid = root.uid("openbao-kms");
    assert!(uid < 1000, "a system user: {uid}");
    assert_eq!(group["openbao-kms-socket"][3], "openbao-kms");
    assert_eq!(group["openbao-kms"][3], "", "nobody else reads credentials");

    // (path, mode, uid, gid) for every directory of docs/install.md.
    let expected = [
        ("etc/openbao-kms", 0o750, 0, kms),
        ("etc/openbao-kms/tls", 0o755, 0, 0),
        ("etc/openbao-kms/credentials", 0o750, 0, kms),
        ("var/lib/openbao-kms", 0o750, uid, kms),
        ("var/lib/openbao-kms/state", 0o700, uid, socket),
        ("run/openbao-kms", 0o2750, uid, socket),
    ];
    for (rel, mode, owner, grp) in expected {
        let meta = fs::symlink_metadata(root.at(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(meta.is_dir(), "{rel}");
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (mode, owner, grp),
            "{rel}: (mode, uid, gid)"
        );
    }

    // What the unit makes systemd create matches tmpfiles, so the two never
    // fight over owner or mode.
    let unit = unit_settings();
    let unit_uid = root.uid(&unit["User"]);
    let unit_gid = root.gid(&unit["Group"]);
    for (key, mode_key, prefix) in [
        ("RuntimeDirectory", "RuntimeDirectoryMode", "run"),
        ("StateDirectory", "StateDirectoryMode", "var/lib"),
    ] {
        let rel = format!("{prefix}/{}", unit[key]);
        let meta = fs::symlink_metadata(root.at(&rel)).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (octal(&unit[mode_key]), unit_uid, unit_gid),
            "{key}={} vs tmpfiles",
            unit[key]
        );
    }
    assert_eq!(unit["RuntimeDirectoryPreserve"], "yes");
    assert_eq!(root.gid(&unit["SupplementaryGroups"]), kms);

    // Applying both again changes nothing (package upgrades re-run them).
    root.sysusers();
    root.tmpfiles();
    assert_eq!(root.passwd(), passwd);
    assert_eq!(root.group(), group);
}

#[test]
fn security_exposure_is_low() {
    let root = NodeRoot::new();
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", root.path().display()))
        .arg(format!("/{UNIT_DIR}/{UNIT}")));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in {stdout}"));
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable: {line}"));
    eprintln!("{line}");
    assert!(score <= 2.0, "{line}");
}

/// Runs `args` as `uid` with primary `gid`, supplementary `groups`, umask
/// 0027, no capabilities and no-new-privileges, as the unit does.
fn as_identity(uid: u32, gid: u32, groups: &[u32], args: &[&Path]) -> Command {
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(format!("--groups={}", groups.join(",")))
        .args(["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"])
        .args(["sh", "-c", "umask 0027 && exec \"$@\"", "sh"])
        .args(args);
    cmd
}

fn place(path: &Path, contents: &[u8], mode: u32, uid: u32, gid: u32) {
    fs::write(path, contents).expect("writing");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    chown(path, Some(uid), Some(gid)).expect("chown");
}

#[tokio::test]
async fn provider_serves_as_the_unit_identity_and_the_socket_group_reaches_only_the_socket() -> anyhow::Result<()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches to the unit's UID and groups: run it as root"
    );
    let root = NodeRoot::new();
    root.sysusers();
    root.tmpfiles();
    let unit = unit_settings();
    let uid = root.uid(&unit["User"]);
    let primary = root.gid(&unit["Group"]);
    let supplementary = root.gid(&unit["SupplementaryGroups"]);
    let (kms, socket) = (root.gid("openbao-kms"), root.gid("openbao-kms-socket"));
    assert_eq!((primary, supplementary), (socket, kms));

    // Files as node-setup installs them.
    let (bao, _p, env) = dev_setup().await?;
    let token = fs::read(env.dir().join("token"))?;
    let token_file = root.at("etc/openbao-kms/credentials/token");
    place(&token_file, &token, 0o640, 0, kms);
    let ca = root.at("etc/openbao-kms/tls/ca.crt");
    place(&ca, &fs::read(bao.ca_file())?, 0o644, 0, 0);
    let socket_path = root.at("run/openbao-kms/kms.sock");
    let state_path = root.at("var/lib/openbao-kms/state/key-registry.json");
    // socketGroup as the numeric GID: the provider resolves names through
    // the host's group database, and the group lives in the test root's.
    let config = env
        .config_yaml()
        .replace(
            &env.socket_path().display().to_string(),
            &socket_path.display().to_string(),
        )
        .replace(
            &format!("socketGroup: \"{}\"", nix::unistd::getgid()),
            &format!("socketGroup: \"{socket}\""),
        )
        .replace(
            &env.dir().join("token").display().to_string(),
            &token_file.display().to_string(),
        )
        .replace(&bao.ca_file().display().to_string(), &ca.display().to_string())
        .replace(
            &env.state_path().display().to_string(),
            &state_path.display().to_string(),
        );
    assert!(config.contains(&format!("socketGroup: \"{socket}\"")), "{config}");
    let config_path = root.at("etc/openbao-kms/config.yaml");
    place(&config_path, config.as_bytes(), 0o640, 0, kms);

    let bin = root.at("usr/bin/bao-kms-provider");
    let logs = root.at("provider.log");
    let mut cmd = as_identity(
        uid,
        primary,
        &[kms],
        &[&bin, Path::new("serve"), Path::new("--config"), &config_path],
    );
    let child = cmd
        .env(ALLOWED_SOCKET_DIR_ENV, root.at("run/openbao-kms"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&logs)?)
        .spawn()?;
    let mut provider = KillOnDrop(child);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let ready = env.health_url("/ready");
    wait::until(Duration::from_secs(30), "the provider's /ready", || {
        let http = http.clone();
        let ready = ready.clone();
        let exited = provider.0.try_wait().ok().flatten();
        let log = fs::read_to_string(&logs).unwrap_or_default();
        async move {
            if let Some(status) = exited {
                return Err(format!("provider exited with {status}: {log}"));
            }
            match http.get(&ready).send().await {
                Ok(r) if r.status().as_u16() == 200 => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nprovider log: {}", fs::read_to_string(&logs).unwrap_or_default()))?;

    // What the provider created: a socket with the socket group, a registry
    // in the private state directory, nothing readable by the socket group.
    let sock = fs::symlink_metadata(&socket_path)?;
    assert_eq!((sock.mode() & 0o777, sock.uid(), sock.gid()), (0o660, uid, socket));
    let state = fs::symlink_metadata(&state_path)?;
    assert_eq!(state.uid(), uid);
    assert_eq!(state.mode() & 0o077 & !0o040, 0, "state mode {:o}", state.mode());

    // kube-apiserver's user, a member of the socket group only: the probe's
    // full round trip passes through the socket ...
    let probe = run(&mut as_identity(
        APISERVER_UID,
        APISERVER_UID,
        &[socket],
        &[&bin, Path::new("probe"), Path::new("--socket"), &socket_path],
    ));
    let report = text(&probe.stdout);
    assert!(probe.status.success(), "{report}{}", text(&probe.stderr));
    assert!(report.contains("[pass]") && !report.contains("[fail]"), "{report}");

    // ... but it cannot read the configuration, the credential or the registry.
    for target in [&config_path, &token_file, &state_path] {
        let out = run(&mut as_identity(
            APISERVER_UID,
            APISERVER_UID,
            &[socket],
            &[Path::new("cat"), target],
        ));
        assert!(
            !out.status.success(),
            "{} is readable by the socket group",
            target.display()
        );
        assert!(text(&out.stderr).contains("Permission denied"), "{}", text(&out.stderr));
    }
    // Without the socket group it cannot reach the socket either.
    let outsider = run(&mut as_identity(
        APISERVER_UID,
        APISERVER_UID,
        &[APISERVER_UID],
        &[&bin, Path::new("probe"), Path::new("--socket"), &socket_path],
    ));
    assert!(!outsider.status.success(), "{}", text(&outsider.stdout));

    // The node preflight agrees with the directory, socket and config file.
    let ec = root.at("etc/kubernetes/openbao-kms/encryption-config.yaml");
    fs::create_dir_all(ec.parent().unwrap())?;
    fs::write(
        &ec,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: {}\n          endpoint: unix://{}\n          timeout: 3s\n      - identity: {{}}\n",
            env.settings().provider_name,
            socket_path.display()
        ),
    )?;
    let out = run(Command::new(provider_binary().with_file_name("bao-kms-preflight"))
        .arg("node")
        .arg("--config")
        .arg(&config_path)
        .arg("--encryption-config")
        .arg(&ec)
        .args(["-o", "json"])
        .arg("--group-file")
        .arg(root.at("etc/group"))
        .env(ALLOWED_SOCKET_DIR_ENV, root.at("run/openbao-kms")));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))?;
    for id in [
        "config.file",
        "socket.group",
        "socket.directory",
        "socket.file",
        "provider.ready",
    ] {
        let check = report_check(&report, id);
        assert_eq!(check["status"], "pass", "{check}");
    }
    Ok(())
}
