//! Crash injection with the real `strace`: the provider is killed with
//! SIGKILL at the Nth call of one syscall on the registry's write path
//! (`-e inject=<syscall>:signal=SIGKILL:when=N`), the way a power cut or
//! an OOM kill would stop it between two steps of a save.
//!
//! A registry save writes each file (state, checkpoint, identity pins) as
//! `.<name>.tmp`: `openat` (create), `write`, `fsync`, `rename` over the
//! file, then `openat` and `fsync` of the directory. Tracing only those
//! paths (`-P`: the three temp files and the state directory) makes every
//! counted call a write step, never a read.
//!
//! strace counts `when=N` per thread; a save is one synchronous call, so its
//! steps all run on one thread and the Nth step of the first save after
//! tracing starts is deterministic. [`Strace::spawn_args`] traces a
//! provider from its first instruction (wrapping it, with
//! `setpriv --pdeathsig KILL` so it never outlives strace);
//! [`Strace::attach`] traces a running provider from now on, so the next
//! save is the first.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process::KillOnDrop;
use crate::provider::ProviderEnv;
use crate::wait;

/// The syscalls of a save's steps.
pub const WRITE_SYSCALLS: [&str; 4] = ["openat", "write", "fsync", "rename"];

/// How many calls of each syscall one save makes: per file (state,
/// checkpoint, pins) `openat` of the temp file and of the directory,
/// `write`, `fsync` of the file and of the directory, `rename`.
pub const SAVE_STEPS: [(&str, usize); 4] = [("openat", 6), ("write", 3), ("fsync", 6), ("rename", 3)];

/// Every injection point of one save: `(syscall, n)` for each step.
pub fn save_points() -> Vec<(&'static str, usize)> {
    SAVE_STEPS
        .iter()
        .flat_map(|&(syscall, count)| (1..=count).map(move |n| (syscall, n)))
        .collect()
}

/// Exit code of a process killed by SIGKILL (128 + 9).
pub const KILLED: i32 = 137;

/// The paths a registry save writes through: each file's temp file and the
/// state directory (opened and fsynced after each rename).
pub fn registry_write_paths(env: &ProviderEnv) -> Vec<PathBuf> {
    let state = env.state_path();
    let dir = state.parent().unwrap_or(Path::new("/")).to_path_buf();
    let name = state
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut paths: Vec<PathBuf> = ["", ".checkpoint", ".openbao-identity"]
        .iter()
        .map(|suffix| dir.join(format!(".{name}{suffix}.tmp")))
        .collect();
    paths.push(dir);
    paths
}

/// One strace configuration: which paths, which injection, where the log goes.
pub struct Strace {
    args: Vec<String>,
}

impl Strace {
    /// Traces [`WRITE_SYSCALLS`] on `paths` into `log` (`-y`: with the path
    /// of each descriptor); with `inject = Some((syscall, n))` the Nth such
    /// call of `syscall` (per thread) kills the process with SIGKILL.
    pub fn new(paths: &[PathBuf], log: &Path, inject: Option<(&str, usize)>) -> Self {
        let mut args: Vec<String> = vec![
            "-f".into(),
            "-qq".into(),
            "-y".into(),
            "-o".into(),
            log.display().to_string(),
            "-e".into(),
            format!("trace={}", WRITE_SYSCALLS.join(",")),
        ];
        for path in paths {
            args.push("-P".into());
            args.push(path.display().to_string());
        }
        if let Some((syscall, n)) = inject {
            args.push("-e".into());
            args.push(format!("inject={syscall}:signal=SIGKILL:when={n}"));
        }
        Self { args }
    }

    /// The wrapper for [`crate::Provider::spawn_wrapped`]: strace, then
    /// `setpriv --pdeathsig KILL` so the provider dies with strace.
    pub fn spawn_args(&self) -> Vec<String> {
        let mut all = vec!["strace".to_owned()];
        all.extend(self.args.iter().cloned());
        all.extend(["--", "setpriv", "--pdeathsig", "KILL"].map(String::from));
        all
    }

    /// Attaches to every thread of `pid` and returns once all of them are
    /// traced (their `TracerPid` is strace).
    pub async fn attach(&self, pid: u32) -> anyhow::Result<Attached> {
        let child = Command::new("strace")
            .args(&self.args)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting strace")?;
        let tracer = child.id();
        let attached = Attached(KillOnDrop(child));
        wait::until(Duration::from_secs(10), "strace attached to every thread", || async {
            all_traced_by(pid, tracer)
        })
        .await?;
        Ok(attached)
    }
}

/// Whether every thread of `pid` is traced by `tracer`.
fn all_traced_by(pid: u32, tracer: u32) -> Result<(), String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| format!("{pid}: {e}"))?;
    for task in tasks {
        let task = task.map_err(|e| e.to_string())?;
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let traced = status.lines().find_map(|l| l.strip_prefix("TracerPid:")).map(str::trim);
        if traced != Some(tracer.to_string().as_str()) {
            return Err(format!("task {:?} TracerPid {traced:?}", task.file_name()));
        }
    }
    Ok(())
}

/// The process strace started (the traced provider), once it runs.
pub fn traced_child(strace_pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A strace attached to a running process; detaches (SIGTERM) when dropped.
pub struct Attached(KillOnDrop);

impl Drop for Attached {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.0.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.0.0.wait();
    }
}

/// How many calls of each of [`WRITE_SYSCALLS`] a strace log holds, and
/// the last traced call (the one an injection killed).
pub fn count_calls(log: &Path) -> anyhow::Result<(Vec<(&'static str, usize)>, String)> {
    let text = std::fs::read_to_string(log).with_context(|| log.display().to_string())?;
    let calls: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, call)| call.trim_start()))
        .filter(|call| WRITE_SYSCALLS.iter().any(|s| call.starts_with(&format!("{s}("))))
        .collect();
    let counts = WRITE_SYSCALLS
        .iter()
        .map(|s| (*s, calls.iter().filter(|c| c.starts_with(&format!("{s}("))).count()))
        .collect();
    Ok((counts, calls.last().map(|c| (*c).to_owned()).unwrap_or_default()))
}
