//! Start-to-ready and memory: `serve` started from this binary with a copy
//! of the configuration that points socket, health listener and registry
//! into a private temporary directory (nothing of the configured
//! deployment is touched), timed from process start to `/ready` answering
//! 200, once without registry state (cold: bootstrap) and once with it
//! (warm), then stopped with SIGTERM. RSS is read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bao_kms_core::config::validate::{ENV_HEALTH_ADDRESS, ENV_METRICS_ADDRESS};
use serde_yaml_ng::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config_file::ALLOWED_SOCKET_DIR_ENV;

/// How long one start may take before the run counts as failed.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two `/ready` polls.
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The process serving a Unix socket (its peer credentials).
pub async fn socket_pid(socket: &Path) -> Option<u32> {
    let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    let pid = stream.peer_cred().ok()?.pid()?;
    u32::try_from(pid).ok()
}

/// One start: how long until ready, and the RSS right then.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub ready: Duration,
    pub rss_kib: Option<u64>,
}

/// A scratch deployment of the same configuration.
pub struct Scratch {
    dir: tempfile::TempDir,
    config: PathBuf,
    state_dir: PathBuf,
    socket_dir: PathBuf,
    health: String,
}

fn free_loopback_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn set(map: &mut Value, section: &str, key: &str, value: String) -> Result<(), String> {
    let section = map
        .get_mut(section)
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| format!("configuration has no {section} section"))?;
    section.insert(Value::from(key), Value::from(value));
    Ok(())
}

impl Scratch {
    /// Copies the configuration at `config` with its socket, health
    /// listener and registry moved into a new temporary directory and the
    /// metrics listener off.
    pub fn new(config: &Path) -> Result<Self, String> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let text = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
        let mut yaml: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("bao-kms-benchmark-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let socket_dir = dir.path().join("run");
        let state_dir = dir.path().join("state");
        std::fs::DirBuilder::new()
            .mode(0o750)
            .create(&socket_dir)
            .and_then(|()| std::fs::DirBuilder::new().mode(0o700).create(&state_dir))
            .map_err(|e| format!("temporary directory: {e}"))?;
        let health = format!("127.0.0.1:{}", free_loopback_port()?);
        let path = |p: PathBuf| p.display().to_string();
        set(&mut yaml, "server", "socketPath", path(socket_dir.join("kms.sock")))?;
        set(&mut yaml, "server", "healthAddress", health.clone())?;
        // Empty disables the listener; absent would mean the default port.
        set(&mut yaml, "server", "metricsAddress", String::new())?;
        set(&mut yaml, "state", "path", path(state_dir.join("key-registry.json")))?;
        let config = dir.path().join("config.yaml");
        let text = serde_yaml_ng::to_string(&yaml).map_err(|e| e.to_string())?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|e| format!("{}: {e}", config.display()))?;
        Ok(Self {
            dir,
            config,
            state_dir,
            socket_dir,
            health,
        })
    }

    /// Removes the scratch registry: the next start bootstraps.
    pub fn clear_state(&self) -> Result<(), String> {
        for entry in std::fs::read_dir(&self.state_dir).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Starts `serve`, waits for `/ready`, measures, stops it with SIGTERM.
    pub async fn start(&self, run: usize) -> Result<Start, String> {
        let exe = std::env::current_exe().map_err(|e| format!("this binary: {e}"))?;
        let log_path = self.dir.path().join(format!("serve-{run}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env(ALLOWED_SOCKET_DIR_ENV, &self.socket_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        for name in ENV_HEALTH_ADDRESS.iter().chain(ENV_METRICS_ADDRESS.iter()) {
            cmd.env_remove(name);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("starting serve: {e}"))?;
        let pid = child.id();
        let outcome = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Err(format!("serve exited with {status} before ready"));
            }
            if ready(&self.health).await {
                break Ok(Start {
                    ready: started.elapsed(),
                    rss_kib: pid.and_then(rss_kib),
                });
            }
            if started.elapsed() > READY_DEADLINE {
                break Err(format!("not ready within {READY_DEADLINE:?}"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        outcome.map_err(|e| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            format!(
                "{e}; serve log: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        })
    }
}

/// True when `GET /ready` on `addr` answers 200.
async fn ready(addr: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_of_this_process() {
        let rss = rss_kib(std::process::id()).unwrap_or_default();
        assert!(rss > 0);
    }

    #[test]
    fn scratch_config_moves_socket_health_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            "server:\n  socketPath: /run/openbao-kms/kms.sock\n  metricsAddress: 127.0.0.1:8081\nstate:\n  path: /var/lib/openbao-kms/key-registry.json\nopenbao:\n  address: https://bao:8200\n",
        )
        .unwrap();
        let scratch = Scratch::new(&config).unwrap();
        let copy: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&scratch.config).unwrap()).unwrap();
        let socket = copy["server"]["socketPath"].as_str().unwrap();
        assert!(socket.starts_with(scratch.dir.path().to_str().unwrap()), "{socket}");
        assert_eq!(copy["server"]["healthAddress"].as_str().unwrap(), scratch.health);
        assert_eq!(copy["server"]["metricsAddress"].as_str(), Some(""));
        assert!(
            copy["state"]["path"]
                .as_str()
                .unwrap()
                .starts_with(scratch.state_dir.to_str().unwrap())
        );
        assert_eq!(copy["openbao"]["address"].as_str(), Some("https://bao:8200"));
    }
}
