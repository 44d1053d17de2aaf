//! A state directory that refuses writes, on a real file system against a
//! real OpenBao (docs/operations.md, docs/rotation.md#persistence-failures):
//!
//! - `serve` checks at startup that the directory takes a new file (create,
//!   write, fsync, remove) and refuses to start (exit 5) naming the path and
//!   the errno when it is full, read-only or immutable;
//! - a running node whose directory fills up or turns read-only reports
//!   `/ready` 503 and Status unhealthy with `state_unavailable`, keeps
//!   decrypting what its registry holds, answers a version a peer promoted
//!   meanwhile with a retryable `Unavailable` (`state_unavailable`, never
//!   `key_id_unknown`), and recovers on its own once the directory takes
//!   writes again (the recovery time is printed).
//!
//! - every ancestor of the state directory must be a real directory and the
//!   state file the service user's: a symlinked parent and a state file of
//!   another uid are refused at start.
//!
//! The full case uses a small tmpfs mounted on the state directory, the
//! read-only case a read-only bind mount over it, the immutable case
//! `chattr +i`: these tests run as root (as CI
//! does).

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use bao_kms_system_tests::provider::{
    PROMOTION_TIMEOUT, ProviderEnvBuilder, expected_key_id, fast_rotation, read_json,
};
use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, counter, metric, provision, wait};
use serde_json::Value;
use tonic::Code;

const KEY: &str = "k8s-workload-a-etcd";
/// Bound on any one health change once its cause holds (a few probes).
const CHANGE_WITHIN: Duration = Duration::from_secs(10);
/// Exit code of a fail-closed start.
const EXIT_FAIL_CLOSED: i32 = 5;

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd).args(args).output().with_context(|| cmd.to_owned())?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A small tmpfs mounted on a directory (mode 0700) for the test's lifetime.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path) -> anyhow::Result<Self> {
        let d = dir.to_str().context("path")?;
        run("mount", &["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", d])
            .context("mounting a tmpfs on the state directory (the test runs as root)")?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// Writes a file until the file system is full; returns its path.
    fn fill(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("filler");
        let mut f = File::create(&path)?;
        let chunk = [0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Whatever is left below a block.
        while f.write(&[0u8]).is_ok_and(|n| n > 0) {}
        Ok(path)
    }

    /// A read-only bind mount over the directory: new opens fail with
    /// `EROFS` while the provider keeps its open lock file (a remount of a
    /// file system with a file open for writing is refused as busy).
    fn read_only(&self) -> anyhow::Result<()> {
        let d = self.dir.to_str().context("path")?;
        run("mount", &["--bind", d, d])?;
        run("mount", &["-o", "remount,bind,ro", d])
    }

    /// Removes the read-only bind mount.
    fn writable(&self) -> anyhow::Result<()> {
        run("umount", &[self.dir.to_str().context("path")?])
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // The bind mount, if still there, then the tmpfs.
        while Command::new("mountpoint")
            .arg("-q")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success())
        {
            if !Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success())
            {
                break;
            }
        }
    }
}

fn fast(b: ProviderEnvBuilder<'_>) -> ProviderEnvBuilder<'_> {
    fast_rotation(b)
}

fn state_dir(env: &ProviderEnv) -> PathBuf {
    env.state_path().parent().map(Path::to_path_buf).unwrap_or_default()
}

fn codes(doc: &Value) -> Vec<String> {
    doc["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|r| r.split(':').next().unwrap_or_default().to_owned())
        .collect()
}

/// Waits for `/ready` `want_code` with `state_unavailable` present (503) or
/// absent (200); returns the `/status` document seen then.
async fn wait_ready_code(provider: &Provider, want_code: u16) -> anyhow::Result<Value> {
    let what = format!("/ready {want_code}");
    wait::until(CHANGE_WITHIN, &what, || async {
        let (code, ready) = provider.ready().await.map_err(|e| format!("{e:#}"))?;
        let unavailable = codes(&ready).iter().any(|c| c == "state_unavailable");
        if code == want_code && unavailable == (want_code == 503) {
            provider.status_json().await.map_err(|e| format!("{e:#}"))
        } else {
            Err(format!("{code} {ready}"))
        }
    })
    .await
}

#[tokio::test]
async fn a_full_or_read_only_state_directory_is_unhealthy_decrypts_and_recovers() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, "transit", KEY)?;
    let env_a = fast(ProviderEnv::builder(&bao, &p)).build()?;
    let lineage = env_a.settings().key_lineage_id.clone();
    let env_b = fast(ProviderEnv::builder(&bao, &p))
        .with(move |s| s.key_lineage_id = lineage)
        .build()?;
    let tmpfs = Tmpfs::mount(&state_dir(&env_a))?;
    let a = Provider::start(&env_a).await?;
    let b = Provider::start(&env_b).await?;
    let kms_a = a.client().await?;
    let seed_v1 = kms_a.prime().await?;

    // Full: unhealthy before any rotation needs the disk.
    let filler = tmpfs.fill()?;
    let status = wait_ready_code(&a, 503).await?;
    assert_eq!(status["healthy"], false, "/status: {status}");
    assert_eq!(status["keyID"], "", "/status: {status}");
    let detail = status["reasons"].to_string();
    assert!(
        detail.contains(&state_dir(&env_a).display().to_string()) && detail.contains("No space left on device"),
        "the reason names the directory and the errno: {detail}"
    );
    let m = a.metrics_text().await?;
    assert_eq!(metric(&m, "openbao_kms_rotation_persistence_degraded", &[]), Some(1.0));
    kms_a.decrypt(&seed_v1).await?;
    let err = kms_a.encrypt(&[1u8; 32]).await.expect_err("Encrypt while unhealthy");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    // A peer promotes version 2 and writes with it; this node cannot
    // record version 2, so it answers a retryable Unavailable.
    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &env_a, 2)?;
    wait::until(PROMOTION_TIMEOUT, "node b promotes version 2", || async {
        match b.status_json().await {
            Ok(s) if s["keyID"] == k2.as_str() => Ok(()),
            Ok(s) => Err(s.to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    let seed_v2 = b.client().await?.prime().await?;
    assert_eq!(seed_v2.key_id, k2);
    // Discovery runs at most once per probe interval: retry until it ran.
    let before = a.metrics_text().await?;
    let err = wait::until(CHANGE_WITHIN, "Decrypt of version 2 refused as unavailable", || async {
        match kms_a.decrypt_raw(seed_v2.decrypt_request()).await {
            Ok(_) => Err("decrypted from an unrecorded version".to_owned()),
            Err(e) if e.code() == Code::Unavailable => Ok(e),
            Err(e) => Err(format!("{:?} {}", e.code(), e.message())),
        }
    })
    .await?;
    assert!(err.message().contains("could not be recorded"), "{err}");
    let after = a.metrics_text().await?;
    ensure!(
        counter(
            &after,
            "openbao_kms_decrypt_key_id_errors_total",
            &[("reason", "state_unavailable")]
        ) > counter(
            &before,
            "openbao_kms_decrypt_key_id_errors_total",
            &[("reason", "state_unavailable")]
        ),
        "counted as state_unavailable"
    );
    assert_eq!(read_json(env_a.state_path())?["generation"], 1, "nothing was written");
    kms_a.decrypt(&seed_v1).await?;

    // Space again: healthy on its own, version 2 recorded and decryptable.
    fs::remove_file(&filler)?;
    let freed = Instant::now();
    let status = wait_ready_code(&a, 200).await?;
    println!("recovery after the state directory was freed: {:?}", freed.elapsed());
    assert_eq!(status["healthy"], true, "/status: {status}");
    kms_a.decrypt(&seed_v2).await?;
    kms_a.decrypt(&seed_v1).await?;
    let m = a.metrics_text().await?;
    assert_eq!(metric(&m, "openbao_kms_rotation_persistence_degraded", &[]), Some(0.0));

    // Read-only: the same, with the errno of a read-only file system.
    tmpfs.read_only()?;
    let status = wait_ready_code(&a, 503).await?;
    assert!(
        status["reasons"].to_string().contains("Read-only file system"),
        "/status: {status}"
    );
    kms_a.decrypt(&seed_v1).await?;
    kms_a.decrypt(&seed_v2).await?;
    tmpfs.writable()?;
    let writable = Instant::now();
    wait_ready_code(&a, 200).await?;
    println!(
        "recovery after the state directory turned writable: {:?}",
        writable.elapsed()
    );
    kms_a.decrypt(&seed_v2).await?;
    drop(a);
    Ok(())
}

#[tokio::test]
async fn serve_refuses_to_start_on_a_state_directory_that_refuses_writes() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, "transit", KEY)?;
    let env = ProviderEnv::builder(&bao, &p).build()?;
    let dir = state_dir(&env);

    // Immutable (chattr +i on the directory itself).
    run("chattr", &["+i", dir.to_str().context("path")?])?;
    let mut refused = Provider::spawn(&env)?;
    let outcome = refused.wait_exit_without_socket(Duration::from_secs(20)).await;
    run("chattr", &["-i", dir.to_str().context("path")?])?;
    let (code, stderr) = outcome?;
    assert_eq!(code, EXIT_FAIL_CLOSED, "{stderr}");
    assert!(
        stderr.contains("state_unavailable")
            && stderr.contains(&dir.display().to_string())
            && stderr.contains("Operation not permitted"),
        "{stderr}"
    );

    let tmpfs = Tmpfs::mount(&dir)?;
    let filler = tmpfs.fill()?;
    let mut refused = Provider::spawn(&env)?;
    let (code, stderr) = refused.wait_exit_without_socket(Duration::from_secs(20)).await?;
    assert_eq!(code, EXIT_FAIL_CLOSED, "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    fs::remove_file(&filler)?;

    tmpfs.read_only()?;
    let mut refused = Provider::spawn(&env)?;
    let (code, stderr) = refused.wait_exit_without_socket(Duration::from_secs(20)).await?;
    assert_eq!(code, EXIT_FAIL_CLOSED, "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    tmpfs.writable()?;

    let started = Instant::now();
    let provider = Provider::start(&env).await?;
    println!("start once the directory is writable: {:?}", started.elapsed());
    provider.client().await?.prime().await?;
    // A directory that refused writes cannot hold a last-exit record.
    let mut record_path = env.state_path().as_os_str().to_owned();
    record_path.push(".last-exit");
    assert!(!Path::new(&record_path).exists());
    let leftovers: Vec<_> = fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".probe"))
        .collect();
    assert!(leftovers.is_empty(), "probe files left behind: {leftovers:?}");
    drop(provider);
    Ok(())
}

#[tokio::test]
async fn a_symlinked_ancestor_or_a_foreign_state_file_is_refused() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, "transit", KEY)?;
    let env = ProviderEnv::builder(&bao, &p).build()?;
    let mut provider = Provider::start(&env).await?;
    provider.client().await?.prime().await?;
    assert_eq!(provider.terminate().await?, 0);

    // The state file owned by another uid.
    std::os::unix::fs::chown(env.state_path(), Some(12345), None)?;
    let mut refused = Provider::spawn(&env)?;
    let (code, stderr) = refused.wait_exit_without_socket(Duration::from_secs(20)).await?;
    assert_eq!(code, EXIT_FAIL_CLOSED, "{stderr}");
    assert!(stderr.contains("is owned by uid 12345"), "{stderr}");
    std::os::unix::fs::chown(env.state_path(), Some(nix::unistd::geteuid().as_raw()), None)?;

    // The state directory reached through a symlinked parent.
    let real = env.dir().join("real");
    fs::create_dir(&real)?;
    fs::rename(state_dir(&env), real.join("state"))?;
    let link = env.dir().join("link");
    std::os::unix::fs::symlink(&real, &link)?;
    let yaml = env.config_yaml().replace(
        &state_dir(&env).display().to_string(),
        &link.join("state").display().to_string(),
    );
    env.write_config_text(&yaml)?;
    let mut refused = Provider::spawn(&env)?;
    let (code, stderr) = refused.wait_exit_without_socket(Duration::from_secs(20)).await?;
    assert_eq!(code, EXIT_FAIL_CLOSED, "{stderr}");
    assert!(stderr.contains(&format!("{} is a symlink", link.display())), "{stderr}");

    // The real path is accepted.
    let yaml = env.config_yaml().replace(
        &state_dir(&env).display().to_string(),
        &real.join("state").display().to_string(),
    );
    env.write_config_text(&yaml)?;
    Provider::start(&env).await?;
    Ok(())
}
