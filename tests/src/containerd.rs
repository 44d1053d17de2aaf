//! A throw-away containerd for the image and bootstrap-hook tests: the
//! real daemon from Debian's `containerd` package, with its own socket,
//! root, state and plugin directories in a temp dir, the `native`
//! snapshotter and no CRI, driven with the real `ctr`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use tempfile::TempDir;

use crate::process::{KillOnDrop, run_checked};

/// A throw-away containerd: its own socket, root, state and plugin
/// directories in a temp dir, the `native` snapshotter, no CRI. Killed on
/// drop.
pub struct Containerd {
    // Declared first: killed before its directory is removed.
    child: KillOnDrop,
    dir: TempDir,
    socket: PathBuf,
}

impl Containerd {
    const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("bao-kms-containerd-").tempdir()?;
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
            opt = d.join("opt").display(),
        );
        fs::write(d.join("config.toml"), config)?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(d.join("containerd.log"))?)
            .stderr(fs::File::create(d.join("containerd.err"))?)
            .spawn()
            .context("starting containerd (Debian package containerd; `make deps`)")?;
        let mut containerd = Self {
            child: KillOnDrop(child),
            dir,
            socket,
        };
        let deadline = Instant::now() + Self::START_TIMEOUT;
        loop {
            if let Some(status) = containerd.child.0.try_wait()? {
                anyhow::bail!("containerd exited ({status}): {}", containerd.log());
            }
            if containerd.ctr(&["version"]).is_ok() {
                return Ok(containerd);
            }
            ensure!(
                Instant::now() < deadline,
                "containerd not serving within {:?}: {}",
                Self::START_TIMEOUT,
                containerd.log()
            );
            std::thread::sleep(crate::wait::POLL_INTERVAL);
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.err")).unwrap_or_default()
    }

    /// `ctr -a <socket> <args>`; stdout.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = run_checked(Command::new("ctr").arg("-a").arg(&self.socket).args(args))?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The `ctr` command line for this daemon (the bootstrap hooks' `CTR`).
    pub fn ctr_command(&self) -> String {
        format!("ctr --address {}", self.socket.display())
    }

    /// Image names in the `k8s.io` namespace (what kubelet's runtime sees).
    pub fn images(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .ctr(&["-n", "k8s.io", "images", "ls", "-q"])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// The daemon's temp directory (container output files live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A container started with `ctr run` (attached, `--rm`); on drop it is
/// killed and the `ctr` client reaped, which removes the container.
pub struct CtrRun<'a> {
    containerd: &'a Containerd,
    id: String,
    child: std::process::Child,
    stderr_file: PathBuf,
}

impl CtrRun<'_> {
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    /// Waits for the container's `ctr run` to exit.
    pub async fn wait(&mut self, timeout: std::time::Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(Instant::now() < deadline, "still running after {timeout:?}");
            tokio::time::sleep(crate::wait::POLL_INTERVAL).await;
        }
    }
}

impl Drop for CtrRun<'_> {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self
                .containerd
                .ctr(&["-n", "k8s.io", "task", "kill", "-s", "SIGKILL", &self.id]);
            let _ = self.child.wait();
        }
    }
}

impl Containerd {
    /// `ctr -n k8s.io run --rm --net-host <extra> <image> <id> [args]`, in
    /// the background; the container's output goes to files.
    pub fn run<'a>(&'a self, id: &str, image: &str, extra: &[String], args: &[String]) -> anyhow::Result<CtrRun<'a>> {
        let stdout_file = self.dir.path().join(format!("{id}.stdout"));
        let stderr_file = self.dir.path().join(format!("{id}.stderr"));
        let child = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "run", "--rm", "--net-host", "--snapshotter", "native"])
            .arg("--fifo-dir")
            .arg(self.dir.path().join("fifo"))
            .args(extra)
            .arg(image)
            .arg(id)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(&stdout_file)?)
            .stderr(fs::File::create(&stderr_file)?)
            .spawn()
            .context("ctr run")?;
        Ok(CtrRun {
            containerd: self,
            id: id.to_owned(),
            child,
            stderr_file,
        })
    }
}
