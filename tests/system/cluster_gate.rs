//! The cluster gate over three real providers (separate state directories,
//! one OpenBao Transit key) and three real preflight agents publishing
//! their node reports to the fake Kubernetes API ([`fake_kube`]), as three
//! control-plane nodes do (docs/rotation.md "Convergence", docs/preflight.md):
//!
//! - a node that learns the new version by unknown-key_id discovery (its
//!   kube-apiserver reads what a peer already wrote) ends on another
//!   generation than its peers, and `cluster --phase after-rotation` passes;
//! - two rotations a few seconds apart (the second once every node observed
//!   the first) end on different generations, and the gate passes;
//! - a node restarted on an older copy of its state directory fails the
//!   gate as `registry.rollback`;
//! - two deployment models side by side: cp-1 is a static pod node (its
//!   manifest pins an image present in `Node.status.images`), cp-2 and cp-3
//!   are systemd nodes whose units run the provider binary under test; they
//!   pass together, `--expected-binary-digest` with that binary's SHA-256
//!   passes, another digest fails `artifact.converged` on both systemd nodes.
//!
//! The agents run `--once` at the points the scenario names (a real agent
//! round each: node checks, local `/status`, Lease carried forward); every
//! wait polls `/status` or the metrics with a deadline.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use bao_kms_core::hash::h;
use bao_kms_system_tests::fake_kube::FakeApi;
use bao_kms_system_tests::provider::{ALLOWED_SOCKET_DIR_ENV, expected_key_id, preflight_binary, provider_binary};
use bao_kms_system_tests::static_pod::ManifestSpec;
use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, Provisioned, counter, provision, wait};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::rotation::{fast, wait_key_id};

const KEY: &str = "k8s-workload-a-etcd";
/// The image cp-1's static pod pins (and its Node lists).
const IMAGE: &str =
    "registry.example/bao-kms-provider@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const NS: &str = "bao-kms-preflight";
/// Bound on a node's convergence once its preconditions hold.
const CONVERGE_WITHIN: Duration = Duration::from_secs(20);

/// One control-plane node: its provider files, the provider, and the
/// kube-apiserver-side files the agent reads.
struct Node {
    name: String,
    env: ProviderEnv,
    provider: Option<Provider>,
    encryption_config: PathBuf,
    /// `--manifest <file>` (static pod) or `--unit <file>` (systemd).
    model: [String; 2],
}

impl Node {
    fn provider(&self) -> &Provider {
        self.provider.as_ref().expect("the node's provider runs")
    }
}

/// Three nodes on one OpenBao key and the fake API their agents report to.
struct Cluster {
    bao: OpenBao,
    p: Provisioned,
    _api: FakeApi,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    /// The program every node's systemd unit runs.
    binary: PathBuf,
    nodes: Vec<Node>,
}

/// Profile of one node: `(probeInterval, activationDelay)`; one stable
/// observation everywhere.
type Profile = (&'static str, &'static str);

impl Cluster {
    async fn start(profiles: [Profile; 3]) -> anyhow::Result<Self> {
        let bao = OpenBao::start_dev().await?;
        let p = provision(&bao, "transit", KEY)?;
        let api = FakeApi::start();
        let dir = tempfile::tempdir()?;
        let kubeconfig = api.write_kubeconfig(dir.path(), NS);
        let binary = unit_binary(dir.path())?;
        let mut lineage = None;
        let mut nodes = Vec::new();
        for (i, (probe, delay)) in profiles.into_iter().enumerate() {
            let name = format!("cp-{}", i + 1);
            let shared = lineage.clone();
            let env = fast(ProviderEnv::builder(&bao, &p))
                .with(|s| {
                    if let Some(l) = shared {
                        s.key_lineage_id = l;
                    }
                    s.probe_interval = probe.into();
                    // Fresh enough for the slowest probe in these profiles.
                    s.status_max_staleness = "20s".into();
                    s.deep_probe_interval = "10s".into();
                })
                .rotation(1, delay)
                .build()?;
            lineage = Some(env.settings().key_lineage_id.clone());
            // A node's socket directory is setgid (socket.directory).
            fs::set_permissions(env.socket_dir(), fs::Permissions::from_mode(0o2750))?;
            let encryption_config = env.dir().join("encryption-config.yaml");
            fs::write(
                &encryption_config,
                format!(
                    "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: {}\n          endpoint: unix://{}\n          timeout: 3s\n      - identity: {{}}\n",
                    env.settings().provider_name,
                    env.socket_path().display()
                ),
            )?;
            let model = if i == 0 {
                // A static pod node: the manifest mounts the node's provider
                // files and OpenBao's CA, and pins an image the node holds.
                let manifest = env.dir().join("bao-kms-provider.yaml");
                let ca_dir = bao.ca_file().parent().context("CA directory")?;
                let spec = ManifestSpec {
                    image: IMAGE.to_owned(),
                    supplemental_groups: vec![nix::unistd::getgid().as_raw()],
                    mounts: vec![
                        ("node".into(), env.dir().display().to_string(), false),
                        ("openbao-ca".into(), ca_dir.display().to_string(), true),
                    ],
                    run_as_user: 65532,
                };
                fs::write(&manifest, spec.render())?;
                api.add_node(&name, true, &[IMAGE]);
                ["--manifest".to_owned(), manifest.display().to_string()]
            } else {
                // A systemd node: the unit runs the provider binary.
                let unit = env.dir().join("bao-kms-provider.service");
                fs::write(
                    &unit,
                    format!(
                        "[Unit]\nDescription=bao-kms-provider\n\n[Service]\nType=notify\nExecStart={} serve --config {}\n",
                        binary.display(),
                        env.config_path().display()
                    ),
                )?;
                api.add_node(&name, true, &[]);
                ["--unit".to_owned(), unit.display().to_string()]
            };
            let provider = Some(Provider::start(&env).await?);
            nodes.push(Node {
                name,
                env,
                provider,
                encryption_config,
                model,
            });
        }
        Ok(Self {
            bao,
            p,
            _api: api,
            _dir: dir,
            kubeconfig,
            binary,
            nodes,
        })
    }

    /// One agent round on every node.
    fn agents(&self) -> anyhow::Result<()> {
        for n in &self.nodes {
            self.agent(n)?;
        }
        Ok(())
    }

    /// `bao-kms-preflight agent --once` for node `n`: its node checks and
    /// `/status`, published as its Lease.
    fn agent(&self, n: &Node) -> anyhow::Result<()> {
        let out = preflight(&[
            "agent",
            "--once",
            "--node-name",
            &n.name,
            "--kubeconfig",
            &self.kubeconfig.display().to_string(),
            "--config",
            &n.env.config_path().display().to_string(),
            "--encryption-config",
            &n.encryption_config.display().to_string(),
            &n.model[0],
            &n.model[1],
            "--allowed-socket-dir",
            &n.env.socket_dir().display().to_string(),
        ])?;
        ensure!(
            out.status.success(),
            "agent on {}: {}",
            n.name,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// `bao-kms-preflight cluster -o json <args>`: the exit code and report.
    fn gate(&self, args: &[&str]) -> anyhow::Result<(i32, Value)> {
        let kubeconfig = self.kubeconfig.display().to_string();
        let mut all = vec!["cluster", "--kubeconfig", &kubeconfig, "-o", "json"];
        all.extend_from_slice(args);
        let out = preflight(&all)?;
        let report = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "cluster printed no report: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok((out.status.code().unwrap_or(-1), report))
    }

    /// The same gate as the table an operator reads.
    fn gate_table(&self, args: &[&str]) -> anyhow::Result<(i32, String)> {
        let kubeconfig = self.kubeconfig.display().to_string();
        let mut all = vec!["cluster", "--kubeconfig", &kubeconfig];
        all.extend_from_slice(args);
        let out = preflight(&all)?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    /// Waits until every node serves `key_id`.
    async fn converge_on(&self, key_id: &str) -> anyhow::Result<Vec<Value>> {
        let mut statuses = Vec::new();
        for n in &self.nodes {
            statuses.push(
                wait_status(n.provider(), &format!("{} on {key_id}", n.name), |s| {
                    s["keyID"] == key_id && s["healthy"] == true && s["rotationState"] == "active"
                })
                .await?,
            );
        }
        Ok(statuses)
    }

    fn key_id(&self, version: u64) -> anyhow::Result<String> {
        expected_key_id(&self.bao, &self.p, &self.nodes[0].env, version)
    }
}

fn preflight(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(preflight_binary())
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove(ALLOWED_SOCKET_DIR_ENV)
        .output()?)
}

async fn wait_status(provider: &Provider, what: &str, want: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    wait::until(CONVERGE_WITHIN, what, || async {
        match provider.status_json().await {
            Ok(s) if want(&s) => Ok(s),
            Ok(s) => Err(s.to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await
}

/// `(node, id)` of every failing check.
fn failing(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            (
                c["node"].as_str().unwrap_or("-").to_owned(),
                c["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Ids of the passing checks.
fn passing(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|c| c["status"] == "pass")
        .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The generation each node's report carries.
fn generations(report: &Value) -> Vec<u64> {
    report["nodes"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|n| n["summary"]["generation"].as_u64().unwrap_or(0))
        .collect()
}

/// Asserts the after-rotation gate passes with every convergence check.
fn assert_gate_passes(code: i32, report: &Value) {
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(failing(report), Vec::<(String, String)>::new(), "{report:#}");
    let passed = passing(report);
    for id in [
        "key_id.converged",
        "content.converged",
        "version.converged",
        "artifact.reported",
        "artifact.converged",
        "rotation.active",
        "rotation.moved",
        "rotation.hold",
    ] {
        assert!(passed.iter().any(|p| p == id), "{id} did not pass: {report:#}");
    }
}

/// The provider binary under test as a systemd node installs it: without
/// the debug build's debug info (200 MB that the agent would hash every
/// round), else the build itself when `strip` is not installed.
fn unit_binary(dir: &Path) -> anyhow::Result<PathBuf> {
    let bin = dir.join("usr-bin-bao-kms-provider");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&bin)
        .arg(provider_binary())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(provider_binary(), &bin)?;
    }
    let version = Command::new(&bin).arg("version").output()?;
    ensure!(version.status.success(), "{} does not run", bin.display());
    Ok(bin)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    Ok(format!("sha256:{:x}", Sha256::digest(fs::read(path)?)))
}

/// Discovery: cp-3 probes every 5 s; the key is rotated right after one of
/// its probes, cp-1 and cp-2 promote within a second or two, cp-1's
/// kube-apiserver writes with version 2, and cp-3's reads it: cp-3 learns
/// version 2 by discovery (one more registry write than its peers), then
/// observes and promotes it. The nodes end on different generations with
/// one content digest, and the after-rotation gate passes.
#[tokio::test]
async fn discovery_leaves_generations_apart_and_the_after_rotation_gate_passes() -> anyhow::Result<()> {
    let c = Cluster::start([("500ms", "500ms"), ("500ms", "500ms"), ("5s", "500ms")]).await?;
    let k1 = c.key_id(1)?;
    c.converge_on(&k1).await?;
    c.agents()?;
    let (code, report) = c.gate(&["--phase", "before-rotation"])?;
    assert_eq!(code, 0, "{report:#}");

    // Rotate just after cp-3's probe: its next one is ~5 s away.
    let slow = c.nodes[2].provider();
    let reads = [("operation", "transit_metadata_read")];
    let before = counter(
        &slow.metrics_text().await?,
        "openbao_kms_openbao_requests_total",
        &reads,
    );
    wait::until(CONVERGE_WITHIN, "a probe on cp-3", || async {
        match slow.metrics_text().await {
            Ok(m) if counter(&m, "openbao_kms_openbao_requests_total", &reads) > before => Ok(()),
            Ok(_) => Err("no new metadata read".to_owned()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    c.bao.rotate_key(&c.p)?;
    let k2 = c.key_id(2)?;
    wait_key_id(c.nodes[0].provider(), &k2).await?;
    let seed_v2 = c.nodes[0].provider().client().await?.prime().await?;
    assert_eq!(seed_v2.key_id, k2);
    slow.client().await?.decrypt(&seed_v2).await?;
    let s = slow.status_json().await?;
    assert_eq!(
        (
            s["keyID"].as_str(),
            s["rotationState"].as_str(),
            s["pendingVersion"].as_u64()
        ),
        (Some(k1.as_str()), Some("active"), Some(2)),
        "cp-3 learnt version 2 by discovery, not by a probe: {s}"
    );
    assert!(slow.stderr().contains("rotation.discovered"), "no discovery logged");

    let statuses = c.converge_on(&k2).await?;
    let digests: Vec<&Value> = statuses.iter().map(|s| &s["contentDigest"]).collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "{statuses:?}");
    c.agents()?;
    let (code, report) = c.gate(&["--phase", "after-rotation"])?;
    assert_gate_passes(code, &report);
    let gens = generations(&report);
    assert_eq!(gens, [3, 3, 4], "discovery is one more write on cp-3: {report:#}");
    let (code, table) = c.gate_table(&["--phase", "after-rotation"])?;
    assert_eq!(code, 0, "{table}");
    assert!(
        table.ends_with("cluster (phase after-rotation): 3 control-plane nodes, 0 checks failed: PASS\n"),
        "{table}"
    );
    assert!(table.contains(&h(&k2)[..12]), "{table}");

    // Two deployment models pass together: the static pod's image is on
    // its node, the systemd units run the binary under test.
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("cp-1") && l.contains("image present")),
        "{table}"
    );
    let digest = sha256_file(&c.binary)?;
    assert!(
        table
            .lines()
            .filter(|l| l.contains(&format!("binary {}", &digest[..19])))
            .count()
            == 2,
        "{table}"
    );
    let (code, report) = c.gate(&["--phase", "after-rotation", "--expected-binary-digest", &digest])?;
    assert_gate_passes(code, &report);
    let reported = report["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "artifact.reported"))
        .context("artifact.reported")?;
    assert_eq!(reported["message"], "1 static pod, 2 systemd", "{report:#}");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (code, report) = c.gate(&["--phase", "after-rotation", "--expected-binary-digest", &wrong])?;
    assert_eq!(code, 4, "{report:#}");
    assert_eq!(
        failing(&report),
        [
            ("cp-2".to_owned(), "artifact.converged".to_owned()),
            ("cp-3".to_owned(), "artifact.converged".to_owned()),
        ],
        "{report:#}"
    );
    Ok(())
}

/// Two rotations a few seconds apart: cp-1 promotes version 2 before
/// version 3 exists, cp-2 and cp-3 (longer activation delays) see version 2
/// superseded by 3. Once every node has observed version 2 the key is
/// rotated again; all end on version 3 with different generations, and
/// the after-rotation gate passes.
#[tokio::test]
async fn two_rotations_seconds_apart_end_converged_and_the_gate_passes() -> anyhow::Result<()> {
    let c = Cluster::start([("500ms", "500ms"), ("500ms", "4s"), ("500ms", "6s")]).await?;
    let k1 = c.key_id(1)?;
    c.converge_on(&k1).await?;

    c.bao.rotate_key(&c.p)?;
    let k2 = c.key_id(2)?;
    // The second rotation lands once cp-1 promoted version 2 and the others
    // hold it pending (their delays are still running).
    wait_key_id(c.nodes[0].provider(), &k2).await?;
    for n in &c.nodes[1..] {
        wait_status(n.provider(), &format!("{} observed version 2", n.name), |s| {
            s["pendingVersion"] == 2 && s["keyID"] == k1.as_str()
        })
        .await?;
    }
    c.bao.rotate_key(&c.p)?;
    let k3 = c.key_id(3)?;
    c.converge_on(&k3).await?;
    c.agents()?;
    let (code, report) = c.gate(&["--phase", "after-rotation", "--before-key-id-hash", &h(&k1)])?;
    assert_gate_passes(code, &report);
    let gens = generations(&report);
    assert_eq!(gens[0], 5, "cp-1 promoted twice: {report:#}");
    assert_eq!(&gens[1..], [4, 4], "version 2 superseded on cp-2 and cp-3: {report:#}");
    Ok(())
}

/// cp-3's state directory is copied before a rotation; after every node
/// promoted version 2 and reported it, cp-3 is restarted on that copy
/// (generation 1, version 1 active): its next report fails
/// `registry.rollback`, and so does the gate.
#[tokio::test]
async fn a_node_restored_from_an_older_state_fails_the_gate_as_rollback() -> anyhow::Result<()> {
    let mut c = Cluster::start([("500ms", "500ms"), ("500ms", "500ms"), ("500ms", "500ms")]).await?;
    let k1 = c.key_id(1)?;
    c.converge_on(&k1).await?;
    let state_dir = c.nodes[2]
        .env
        .state_path()
        .parent()
        .context("state directory")?
        .to_path_buf();
    let copy = tempfile::tempdir()?;
    for e in fs::read_dir(&state_dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            fs::copy(e.path(), copy.path().join(e.file_name()))?;
        }
    }

    c.bao.rotate_key(&c.p)?;
    let k2 = c.key_id(2)?;
    c.converge_on(&k2).await?;
    c.agents()?;
    let (code, report) = c.gate(&["--phase", "after-rotation", "--before-key-id-hash", &h(&k1)])?;
    assert_gate_passes(code, &report);

    // Restore the old copy on cp-3 and restart it with a long activation
    // delay, so the report shows the restored registry (version 2 pending).
    let node = &mut c.nodes[2];
    node.provider.take().context("cp-3 provider")?.terminate().await?;
    for e in fs::read_dir(copy.path())? {
        let e = e?;
        fs::copy(e.path(), state_dir.join(e.file_name()))?;
    }
    node.env.edit_settings(|s| s.activation_delay = "1h".into())?;
    node.provider = Some(Provider::start(&node.env).await?);
    let s = wait_status(node.provider(), "cp-3 restored and observing", |s| {
        s["healthy"] == true && s["pendingVersion"] == 2
    })
    .await?;
    assert_eq!(
        (s["generation"].as_u64(), s["activeVersion"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );
    c.agents()?;
    let (code, report) = c.gate(&["--phase", "after-rotation", "--before-key-id-hash", &h(&k1)])?;
    assert_eq!(code, 4, "{report:#}");
    let failed = failing(&report);
    assert!(
        failed.contains(&("cp-3".to_owned(), "registry.rollback".to_owned())),
        "{report:#}"
    );
    assert!(
        failed.iter().all(|(n, _)| n == "cp-3"),
        "only the restored node fails: {report:#}"
    );
    let rollback = report["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "registry.rollback"))
        .context("registry.rollback")?;
    let msg = rollback["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("registry generation 2 is below 3") && msg.contains("active Transit version 1 is below 2"),
        "{msg}"
    );
    Ok(())
}
