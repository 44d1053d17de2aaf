//! A booted Debian system for one test: `systemd-nspawn --register=no
//! --keep-unit --volatile=overlay -D <root> -b`, systemd as PID 1, sharing
//! the host's network namespace (so it reaches an OpenBao on the host's
//! loopback, and the host reaches its health port).
//!
//! - The root is the cached one `tests/system/slow/systemd/debian-root.sh`
//!   builds; `--volatile=overlay` keeps every change in memory, so the
//!   cache stays as built.
//! - Commands run inside with `nsenter` into the container's namespaces
//!   ([`Machine::exec`]), as root with a clean environment.
//! - Files inside are reachable from the host under
//!   `/proc/<container PID 1>/root` ([`Machine::host_path`]), e.g. the KMS
//!   socket for the harness's kube-apiserver-like client.
//! - Dropping the machine powers it off (SIGTERM to systemd-nspawn, which
//!   shuts the container down), then kills it after a deadline.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::wait;

/// How long the boot to `running` (or `degraded`) may take.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the orderly shutdown may take before the container is killed.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline of one command inside.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One booted container.
pub struct Machine {
    nspawn: Child,
    leader: u32,
    console: PathBuf,
}

impl Machine {
    /// Boots `root` with the host directories `binds` (host path, path
    /// inside, read-only) and waits until systemd reports the boot done.
    /// The console goes to `console`.
    pub async fn boot(root: &Path, binds: &[(&Path, &str, bool)], console: &Path) -> anyhow::Result<Self> {
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["--register=no", "--keep-unit", "--volatile=overlay", "--quiet"])
            .arg("-D")
            .arg(root)
            .arg(format!("--machine=bao-kms-{}", std::process::id()));
        for (host, inside, read_only) in binds {
            let flag = if *read_only { "--bind-ro" } else { "--bind" };
            cmd.arg(format!("{flag}={}:{inside}", host.display()));
        }
        let log = File::create(console)?;
        let nspawn = cmd
            .arg("-b")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting systemd-nspawn (Debian package systemd-container)")?;
        let mut machine = Self {
            nspawn,
            leader: 0,
            console: console.to_owned(),
        };
        let nspawn_pid = machine.nspawn.id();
        machine.leader = wait::until(BOOT_TIMEOUT, "the container's systemd", || {
            let found = container_init(nspawn_pid);
            let exited = machine.nspawn.try_wait().ok().flatten();
            let console = fs::read_to_string(console).unwrap_or_default();
            async move {
                if let Some(status) = exited {
                    return Err(format!("systemd-nspawn exited with {status}: {console}"));
                }
                found.ok_or_else(|| "no container PID 1 yet".to_owned())
            }
        })
        .await?;
        wait::until(BOOT_TIMEOUT, "systemctl is-system-running", || {
            let out = machine.exec(&["systemctl", "is-system-running"]);
            async move {
                let out = out.map_err(|e| e.to_string())?;
                match text(&out.stdout).trim() {
                    state @ ("running" | "degraded") => Ok(state.to_owned()),
                    state => Err(state.to_owned()),
                }
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nconsole:\n{}", machine.console()))?;
        Ok(machine)
    }

    /// The container's PID 1 as the host sees it.
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// `path` inside the container, as a host path.
    pub fn host_path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.leader)).join(path.trim_start_matches('/'))
    }

    pub fn console(&self) -> String {
        fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Runs `args` inside the container as root, with a clean environment,
    /// and waits for it (at most [`EXEC_TIMEOUT`]).
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.exec_env(args, &[])
    }

    pub fn exec_env(&self, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.leader))
            .args(["--mount", "--uts", "--ipc", "--pid", "--root", "--wd=/"])
            .args(["--", "env", "-i", &format!("PATH={PATH}"), "LANG=C.UTF-8", "HOME=/root"]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("nsenter {args:?}"))?;
        let deadline = Instant::now() + EXEC_TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(child.wait_with_output()?);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output()?;
                bail!(
                    "{args:?} inside the container did not finish within {EXEC_TIMEOUT:?}: {}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `args` inside and fails unless it exits 0; returns stdout.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.exec(args)?;
        if !out.status.success() {
            bail!(
                "{args:?} inside the container: {}\n{}{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        Ok(text(&out.stdout))
    }

    /// Shuts the container down in order; kills it after the deadline.
    pub fn poweroff(&mut self) -> anyhow::Result<()> {
        if self.nspawn.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(i32::try_from(self.nspawn.id())?);
        kill(pid, Signal::SIGTERM)?;
        let deadline = Instant::now() + POWEROFF_TIMEOUT;
        while Instant::now() < deadline {
            if self.nspawn.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        bail!("the container did not shut down within {POWEROFF_TIMEOUT:?}")
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Err(e) = self.poweroff() {
            eprintln!("nspawn: {e}");
        }
    }
}

/// The PID of the container's systemd: a descendant of systemd-nspawn
/// whose command is `systemd`.
fn container_init(nspawn: u32) -> Option<u32> {
    let mut todo = vec![nspawn];
    while let Some(pid) = todo.pop() {
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            let comm = fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if comm.trim() == "systemd" {
                return Some(child);
            }
            todo.push(child);
        }
    }
    None
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
