//! The provider under test: its files ([`ProviderEnv`]) and its process
//! ([`Provider`]).
//!
//! [`ProviderEnv`] lays out, in a temp directory, what an operator installs
//! on a control-plane node: the config file (0640), the token file (0600),
//! the state directory (0700) and the socket directory (0750), with fast
//! probe and bootstrap intervals so a test sees state changes in seconds.
//! [`Provider`] runs the real `bao-kms-provider serve --config` binary and
//! reads its health, status and metrics endpoints and its stderr. With a
//! [`Chroot`] the env lives inside a root file system (an unpacked image)
//! and the binary found there runs in it, as the given user.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bao_kms_core::identity::IdentityScope;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngCore as _;
use serde_json::Value;
use tempfile::TempDir;

use crate::kms_client::KmsClient;
use crate::net::free_port;
use crate::openbao::{OpenBao, Provisioned, tail, temp_dir};
use crate::wait::POLL_INTERVAL;

/// How long a provider may take to become ready against a healthy OpenBao.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a provider may take to drain and exit after SIGTERM.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The provider only accepts socket paths under `/run/openbao-kms` unless
/// this variable names another absolute directory (tests and the demo).
pub const ALLOWED_SOCKET_DIR_ENV: &str = "BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR";

/// Environment overrides the provider honours; cleared so that the
/// developer's shell cannot change what a test runs.
const PROVIDER_ENV_OVERRIDES: &[&str] = &[
    "BAO_KMS_PROVIDER_CONFIG",
    "BAO_KMS_PROVIDER_CONFIG_PATH",
    "BAO_KMS_PROVIDER_LOG_LEVEL",
    "BAO_KMS_PROVIDER_LOGGING_LEVEL",
    "BAO_KMS_PROVIDER_SERVER_METRICS_ADDRESS",
    "BAO_KMS_PROVIDER_SERVER_METRICSADDRESS",
    "BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS",
    "BAO_KMS_PROVIDER_SERVER_HEALTHADDRESS",
];

/// Config values a test may change; [`Settings::default`] is the fast
/// profile every system test uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub provider_name: String,
    pub cluster_id: String,
    pub transit_mount_id: String,
    pub key_lineage_id: String,
    pub instance_id: String,
    /// `openbao.address`; `None` uses the server's.
    pub openbao_address: Option<String>,
    pub openbao_timeout: String,
    pub grace_timeout: String,
    pub retry_interval: String,
    pub probe_interval: String,
    pub deep_probe_interval: String,
    pub status_max_staleness: String,
    pub login_before_token_expiry: String,
    pub token_renewal_increment: String,
    /// `rotation.activationDelay`.
    pub activation_delay: String,
    /// `rotation.requireStableObservationCount`.
    pub require_stable_observation_count: u32,
    /// `rotation.rejectVersionRollback`.
    pub reject_version_rollback: bool,
    /// `rotation.holdAtVersion`; `None` leaves it out.
    pub hold_at_version: Option<u64>,
    pub log_level: String,
}

impl Default for Settings {
    fn default() -> Self {
        let mut lineage = [0u8; 16];
        rand::rng().fill_bytes(&mut lineage);
        Self {
            provider_name: "openbao-kms-workload-a".into(),
            cluster_id: "workload-a".into(),
            transit_mount_id: "transit-test-primary".into(),
            key_lineage_id: lineage.iter().map(|b| format!("{b:02x}")).collect(),
            instance_id: "bao-test-a".into(),
            openbao_address: None,
            openbao_timeout: "1s".into(),
            grace_timeout: "5s".into(),
            retry_interval: "250ms".into(),
            probe_interval: "1s".into(),
            deep_probe_interval: "2s".into(),
            status_max_staleness: "3s".into(),
            login_before_token_expiry: "5m".into(),
            token_renewal_increment: "1h".into(),
            // The product defaults: no test promotes unless it asks to.
            activation_delay: "2m".into(),
            require_stable_observation_count: 3,
            reject_version_rollback: true,
            hold_at_version: None,
            log_level: "debug".into(),
        }
    }
}

/// A root directory the provider runs in (`chroot`), e.g. an unpacked
/// image, so that it uses only the binary and libraries found there.
#[derive(Debug, Clone)]
pub struct Chroot {
    /// The new `/`; `<root>/usr/bin/bao-kms-provider` is started.
    pub root: PathBuf,
    /// `uid:gid` to run as (`chroot --userspec`); `None` keeps root.
    pub user: Option<(u32, u32)>,
}

/// Builds a [`ProviderEnv`] with overrides.
pub struct ProviderEnvBuilder<'a> {
    bao: &'a OpenBao,
    provisioned: &'a Provisioned,
    settings: Settings,
    chroot: Option<Chroot>,
}

impl ProviderEnvBuilder<'_> {
    /// Changes any setting.
    pub fn with(mut self, edit: impl FnOnce(&mut Settings)) -> Self {
        edit(&mut self.settings);
        self
    }

    pub fn probe_interval(self, d: &str) -> Self {
        self.with(|s| s.probe_interval = d.into())
    }

    pub fn deep_probe_interval(self, d: &str) -> Self {
        self.with(|s| s.deep_probe_interval = d.into())
    }

    pub fn status_max_staleness(self, d: &str) -> Self {
        self.with(|s| s.status_max_staleness = d.into())
    }

    pub fn grace_timeout(self, d: &str) -> Self {
        self.with(|s| s.grace_timeout = d.into())
    }

    pub fn openbao_timeout(self, d: &str) -> Self {
        self.with(|s| s.openbao_timeout = d.into())
    }

    /// `rotation.requireStableObservationCount` and `rotation.activationDelay`.
    pub fn rotation(self, stable_observations: u32, activation_delay: &str) -> Self {
        self.with(|s| {
            s.require_stable_observation_count = stable_observations;
            s.activation_delay = activation_delay.into();
        })
    }

    /// Runs the provider inside `chroot`: the env directory and a copy of
    /// OpenBao's CA are created under its root, owned by its user, and the
    /// config names them by their paths inside the root.
    pub fn in_chroot(mut self, chroot: Chroot) -> Self {
        self.chroot = Some(chroot);
        self
    }

    /// Writes the directory, token file and config.
    pub fn build(self) -> anyhow::Result<ProviderEnv> {
        ProviderEnv::create(self.bao, self.provisioned, self.settings, self.chroot)
    }
}

/// A node's worth of provider files in a temp directory.
pub struct ProviderEnv {
    dir: TempDir,
    settings: Settings,
    openbao_address: String,
    ca_file: PathBuf,
    mount: String,
    key: String,
    config_path: PathBuf,
    token_file: PathBuf,
    state_path: PathBuf,
    socket_path: PathBuf,
    health_address: String,
    metrics_address: String,
    chroot: Option<Chroot>,
}

impl ProviderEnv {
    /// The fast default profile against `bao`, using `provisioned`'s token.
    pub fn new(bao: &OpenBao, provisioned: &Provisioned) -> anyhow::Result<Self> {
        Self::builder(bao, provisioned).build()
    }

    pub fn builder<'a>(bao: &'a OpenBao, provisioned: &'a Provisioned) -> ProviderEnvBuilder<'a> {
        ProviderEnvBuilder {
            bao,
            provisioned,
            settings: Settings::default(),
            chroot: None,
        }
    }

    fn create(bao: &OpenBao, p: &Provisioned, settings: Settings, chroot: Option<Chroot>) -> anyhow::Result<Self> {
        let dir = match &chroot {
            Some(c) => tempfile::Builder::new()
                .prefix("bao-kms-provider-")
                .tempdir_in(&c.root)?,
            None => temp_dir("provider-")?,
        };
        let state_dir = dir.path().join("state");
        let socket_dir = dir.path().join("run");
        mkdir(&state_dir, 0o700)?;
        mkdir(&socket_dir, 0o750)?;
        let token_file = dir.path().join("token");
        write_file(&token_file, p.token.as_bytes(), 0o600)?;
        let ca_file = match &chroot {
            Some(_) => {
                let copy = dir.path().join("openbao-ca.pem");
                fs::copy(bao.ca_file(), &copy)?;
                fs::set_permissions(&copy, fs::Permissions::from_mode(0o644))?;
                copy
            }
            None => bao.ca_file().to_path_buf(),
        };
        let env = Self {
            config_path: dir.path().join("config.yaml"),
            state_path: state_dir.join("key-registry.json"),
            socket_path: socket_dir.join("kms.sock"),
            token_file,
            dir,
            openbao_address: settings.openbao_address.clone().unwrap_or_else(|| bao.address()),
            settings,
            ca_file,
            mount: p.mount.clone(),
            key: p.key.clone(),
            health_address: format!("127.0.0.1:{}", free_port()?),
            metrics_address: format!("127.0.0.1:{}", free_port()?),
            chroot,
        };
        env.write_config()?;
        if let Some((uid, gid)) = env.chroot.as_ref().and_then(|c| c.user) {
            for path in [
                env.dir.path(),
                &state_dir,
                &socket_dir,
                &env.token_file,
                &env.config_path,
                &env.ca_file,
            ] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
            }
        }
        Ok(env)
    }

    /// Changes the settings and rewrites the config file (a restarted
    /// provider reads it).
    pub fn edit_settings(&mut self, edit: impl FnOnce(&mut Settings)) -> anyhow::Result<()> {
        edit(&mut self.settings);
        self.write_config()
    }

    /// Writes the config file (mode 0640) from the current settings.
    pub fn write_config(&self) -> anyhow::Result<()> {
        write_file(&self.config_path, self.config_yaml().as_bytes(), 0o640)
    }

    /// Replaces the token file (mode 0600) with `token`.
    pub fn write_token(&self, token: &str) -> anyhow::Result<()> {
        write_file(&self.token_file, token.as_bytes(), 0o600)
    }

    /// Replaces the config file with `yaml` (mode 0640), e.g. an edited
    /// [`Self::config_yaml`] for negative tests.
    pub fn write_config_text(&self, yaml: &str) -> anyhow::Result<()> {
        write_file(&self.config_path, yaml.as_bytes(), 0o640)
    }

    /// The config, in the published `v1alpha1` schema.
    pub fn config_yaml(&self) -> String {
        let s = &self.settings;
        let gid = match self.chroot.as_ref().and_then(|c| c.user) {
            Some((_, gid)) => gid,
            None => nix::unistd::getgid().as_raw(),
        };
        format!(
            r#"configVersion: v1alpha1
server:
  socketPath: {socket}
  socketMode: "0660"
  socketGroup: "{gid}"
  metricsAddress: "{metrics}"
  healthAddress: "{health}"
openbao:
  address: {address}
  caCertFile: {ca}
  tlsServerName: localhost
  timeout: {openbao_timeout}
  instanceId: {instance_id}
auth:
  method: token
  loginBeforeTokenExpiry: {login_before_token_expiry}
  tokenRenewalIncrement: {token_renewal_increment}
  token:
    tokenFile: {token}
transit:
  mountPath: {mount}
  keyName: {key}
  keyIdScope:
    providerName: {provider_name}
    clusterId: {cluster_id}
    transitMountId: {transit_mount_id}
    keyLineageId: "{key_lineage_id}"
bootstrap:
  graceTimeout: {grace_timeout}
  retryInterval: {retry_interval}
status:
  probeInterval: {probe_interval}
  deepProbeInterval: {deep_probe_interval}
  statusMaxStaleness: {status_max_staleness}
state:
  path: {state}
rotation:
  mode: observed
  activationDelay: {activation_delay}
  requireStableObservationCount: {require_stable_observation_count}
  rejectVersionRollback: {reject_version_rollback}{hold}
logging:
  level: {log_level}
  format: json
"#,
            socket = self.in_root(&self.socket_path).display(),
            metrics = self.metrics_address,
            health = self.health_address,
            address = self.openbao_address,
            ca = self.in_root(&self.ca_file).display(),
            openbao_timeout = s.openbao_timeout,
            instance_id = s.instance_id,
            token = self.in_root(&self.token_file).display(),
            login_before_token_expiry = s.login_before_token_expiry,
            token_renewal_increment = s.token_renewal_increment,
            mount = self.mount,
            key = self.key,
            provider_name = s.provider_name,
            cluster_id = s.cluster_id,
            transit_mount_id = s.transit_mount_id,
            key_lineage_id = s.key_lineage_id,
            grace_timeout = s.grace_timeout,
            retry_interval = s.retry_interval,
            probe_interval = s.probe_interval,
            deep_probe_interval = s.deep_probe_interval,
            status_max_staleness = s.status_max_staleness,
            state = self.in_root(&self.state_path).display(),
            activation_delay = s.activation_delay,
            require_stable_observation_count = s.require_stable_observation_count,
            reject_version_rollback = s.reject_version_rollback,
            hold = s
                .hold_at_version
                .map(|v| format!("\n  holdAtVersion: {v}"))
                .unwrap_or_default(),
            log_level = s.log_level,
        )
    }

    /// The identity scope the config declares, computed independently of
    /// the provider (for deriving the expected key_id).
    pub fn scope(&self) -> IdentityScope {
        let s = &self.settings;
        IdentityScope {
            provider_name: s.provider_name.clone(),
            cluster_id: s.cluster_id.clone(),
            openbao_instance_id: s.instance_id.clone(),
            openbao_namespace: String::new(),
            transit_mount_id: s.transit_mount_id.clone(),
            key_lineage_id: s.key_lineage_id.clone(),
            transit_mount_path: self.mount.clone(),
            transit_key_name: self.key.clone(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The root the provider runs in, if any.
    pub fn chroot(&self) -> Option<&Chroot> {
        self.chroot.as_ref()
    }

    /// `path` as the provider sees it: unchanged, or, in a chroot, relative
    /// to its root (`<root>/x/y` -> `/x/y`).
    pub fn in_root(&self, path: &Path) -> PathBuf {
        match &self.chroot {
            Some(c) => path
                .strip_prefix(&c.root)
                .map_or_else(|_| path.to_path_buf(), |rel| Path::new("/").join(rel)),
            None => path.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.socket_path
            .parent()
            .map_or_else(|| self.dir.path().join("run"), Path::to_path_buf)
    }

    /// `state.path`: the registry state file.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// `<state.path>.checkpoint`.
    pub fn checkpoint_path(&self) -> PathBuf {
        with_suffix(&self.state_path, ".checkpoint")
    }

    /// `<state.path>.lock`.
    pub fn lock_path(&self) -> PathBuf {
        with_suffix(&self.state_path, ".lock")
    }

    /// `http://<healthAddress><path>`.
    pub fn health_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.health_address)
    }

    /// `http://<metricsAddress>/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_address)
    }

    /// `server.metricsAddress` (`host:port`), as a scrape target.
    pub fn health_address(&self) -> &str {
        &self.health_address
    }

    pub fn metrics_address(&self) -> &str {
        &self.metrics_address
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn mkdir(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::create_dir(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// The provider binary: `$BAO_KMS_PROVIDER_BIN`, else
/// `<target dir>/debug/bao-kms-provider` where the target dir is
/// `$CARGO_TARGET_DIR` (relative to the workspace) or `<workspace>/target`.
///
/// # Panics
/// When the binary does not exist: system tests run the built binary, they
/// do not build it.
pub fn provider_binary() -> PathBuf {
    let path = match std::env::var_os("BAO_KMS_PROVIDER_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map_or_else(|| workspace_root().join("target"), |t| workspace_root().join(t));
            target.join("debug").join("bao-kms-provider")
        }
    };
    assert!(
        path.is_file(),
        "{} not found; build it first: cargo build -p bao-kms-provider",
        path.display()
    );
    path
}

/// A JSON file of the provider (registry state, checkpoint, pins); errors
/// name the file.
pub fn read_json(path: &Path) -> anyhow::Result<Value> {
    serde_json::from_slice(&fs::read(path)?).with_context(|| path.display().to_string())
}

/// The registry state's record of Transit `version`, if any.
pub fn registry_record(state: &Value, version: u64) -> Option<Value> {
    state["snapshots"]
        .as_array()?
        .iter()
        .find(|r| r["transitVersion"] == version)
        .cloned()
}

/// The `bao-kms-preflight` binary built beside the provider.
pub fn preflight_binary() -> PathBuf {
    let bin = provider_binary().with_file_name("bao-kms-preflight");
    assert!(
        bin.is_file(),
        "{} not found; build it first: cargo build --bins",
        bin.display()
    );
    bin
}

/// Distinguishes the output files of successive providers in one env.
static SPAWNED: AtomicUsize = AtomicUsize::new(0);

/// A running (or exited) `bao-kms-provider serve` process.
pub struct Provider {
    child: Child,
    exit: Option<ExitStatus>,
    stdout_file: PathBuf,
    stderr_file: PathBuf,
    socket_path: PathBuf,
    health_url: String,
    metrics_url: String,
    http: reqwest::Client,
}

impl Provider {
    /// Starts `bao-kms-provider serve --config <env config>`; output goes to
    /// files in the env directory.
    pub fn spawn(env: &ProviderEnv) -> anyhow::Result<Self> {
        Self::spawn_with_env(env, &[])
    }

    /// [`Self::spawn`] with extra environment variables for the child
    /// (e.g. `SOFTHSM2_CONF` for a PKCS#11 module).
    pub fn spawn_with_env(env: &ProviderEnv, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_command(env, extra, &[])
    }

    /// [`Self::spawn`] through a command that execs the provider in its own
    /// process (e.g. `prlimit --nofile=128:128`), so [`Self::pid`] is the
    /// provider's.
    pub fn spawn_wrapped(env: &ProviderEnv, wrapper: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_command(env, &[], wrapper)
    }

    fn spawn_command(env: &ProviderEnv, extra: &[(&str, &str)], wrapper: &[&str]) -> anyhow::Result<Self> {
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let stdout_file = env.dir().join(format!("provider-{n}.stdout"));
        let stderr_file = env.dir().join(format!("provider-{n}.stderr"));
        let mut cmd = match (env.chroot(), wrapper.split_first()) {
            (None, None) => Command::new(provider_binary()),
            (None, Some((program, args))) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(provider_binary());
                cmd
            }
            (Some(_), Some(_)) => bail!("a wrapped provider cannot run in a chroot"),
            (Some(c), None) => {
                let mut cmd = Command::new("chroot");
                if let Some((uid, gid)) = c.user {
                    cmd.arg(format!("--userspec={uid}:{gid}"))
                        .arg(format!("--groups={gid}"));
                }
                cmd.arg(&c.root).arg("/usr/bin/bao-kms-provider");
                cmd
            }
        };
        for var in PROVIDER_ENV_OVERRIDES {
            cmd.env_remove(var);
        }
        cmd.envs(extra.iter().copied());
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(env.in_root(env.config_path()))
            .env(ALLOWED_SOCKET_DIR_ENV, env.in_root(&env.socket_dir()))
            .current_dir(env.dir())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_file)?)
            .stderr(File::create(&stderr_file)?)
            .spawn()
            .context("starting bao-kms-provider")?;
        Ok(Self {
            child,
            exit: None,
            stdout_file,
            stderr_file,
            socket_path: env.socket_path().to_path_buf(),
            health_url: env.health_url(""),
            metrics_url: env.metrics_url(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?,
        })
    }

    /// Spawns and waits until `/ready` answers 200.
    pub async fn start(env: &ProviderEnv) -> anyhow::Result<Self> {
        let mut provider = Self::spawn(env)?;
        provider.wait_ready(READY_TIMEOUT).await?;
        Ok(provider)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the provider wrote to stderr (JSON log lines) so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_file).unwrap_or_default()
    }

    /// Exit code if the process has exited (128 + signal when killed).
    pub fn try_exit_code(&mut self) -> anyhow::Result<Option<i32>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait()?;
        }
        Ok(self.exit.map(exit_code))
    }

    /// Polls `GET /ready` until 200. Fails early, with the exit code and
    /// the end of stderr, if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.try_exit_code()? {
                bail!(
                    "provider exited with code {code} before it was ready; stderr:\n{}",
                    tail(&self.stderr(), 30)
                );
            }
            let last = match self.ready().await {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("{code} {body}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "provider not ready within {timeout:?} (last /ready: {last}); stderr:\n{}",
                    tail(&self.stderr(), 30)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits for the process to exit; returns its exit code and stderr.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<(i32, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.try_exit_code()? {
                return Ok((code, self.stderr()));
            }
            if Instant::now() >= deadline {
                bail!(
                    "provider still running after {timeout:?}; stderr:\n{}",
                    tail(&self.stderr(), 30)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits for a start that must be refused: the process must exit within
    /// `timeout` and must never create its socket meanwhile (checked every
    /// 20 ms). Returns the exit code and stderr.
    pub async fn wait_exit_without_socket(&mut self, timeout: Duration) -> anyhow::Result<(i32, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.socket_path.exists() {
                bail!("the provider created its socket; stderr:\n{}", tail(&self.stderr(), 30));
            }
            if let Some(code) = self.try_exit_code()? {
                return Ok((code, self.stderr()));
            }
            if Instant::now() >= deadline {
                bail!(
                    "provider still running after {timeout:?}; stderr:\n{}",
                    tail(&self.stderr(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub async fn terminate(&mut self) -> anyhow::Result<i32> {
        self.signal(Signal::SIGTERM)?;
        Ok(self.wait_exit(TERMINATE_TIMEOUT).await?.0)
    }

    /// Sends `signal` to the process (if it is still running).
    pub fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        if self.try_exit_code()?.is_none() {
            kill(Pid::from_raw(i32::try_from(self.child.id())?), signal)?;
        }
        Ok(())
    }

    /// A KMS client on this provider's socket.
    pub async fn client(&self) -> anyhow::Result<KmsClient> {
        KmsClient::connect(&self.socket_path).await
    }

    /// `GET <health address><path>`: status code and JSON body (`Null` if
    /// the body is not JSON).
    pub async fn health_get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self.http.get(format!("{}{path}", self.health_url)).send().await?;
        let code = resp.status().as_u16();
        let body = resp.text().await?;
        Ok((code, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// `GET /ready`.
    pub async fn ready(&self) -> anyhow::Result<(u16, Value)> {
        self.health_get("/ready").await
    }

    /// `GET /status` (JSON document).
    pub async fn status_json(&self) -> anyhow::Result<Value> {
        let (code, body) = self.health_get("/status").await?;
        if body.is_null() {
            bail!("/status answered {code} without JSON");
        }
        Ok(body)
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let resp = self.http.get(&self.metrics_url).send().await?;
        if !resp.status().is_success() {
            bail!("/metrics answered {}", resp.status());
        }
        Ok(resp.text().await?)
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl Drop for Provider {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A dev OpenBao with `transit`/`k8s-workload-a-etcd` provisioned, and a
/// provider env with the fast profile.
pub async fn dev_setup() -> anyhow::Result<(OpenBao, Provisioned, ProviderEnv)> {
    dev_setup_with(|b| b).await
}

/// [`dev_setup`] with overrides applied to the env builder.
pub async fn dev_setup_with(
    edit: impl FnOnce(ProviderEnvBuilder<'_>) -> ProviderEnvBuilder<'_>,
) -> anyhow::Result<(OpenBao, Provisioned, ProviderEnv)> {
    let bao = OpenBao::start_dev().await?;
    let provisioned = crate::openbao::provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = edit(ProviderEnv::builder(&bao, &provisioned)).build()?;
    Ok((bao, provisioned, env))
}

/// The fast rotation profile: probes every 500 ms, one stable observation
/// and a 500 ms activation delay, so a rotation is promoted within seconds.
pub fn fast_rotation(b: ProviderEnvBuilder<'_>) -> ProviderEnvBuilder<'_> {
    b.probe_interval("500ms")
        .deep_probe_interval("2s")
        .status_max_staleness("3s")
        .rotation(1, "500ms")
}

/// Bound on a promotion once the rotation is in Transit, with the fast
/// rotation profile (a few probes, a short activation delay).
pub const PROMOTION_TIMEOUT: Duration = Duration::from_secs(15);

/// The key_id of Transit `version` as OpenBao reports its creation second,
/// derived independently from the config's identity.
pub fn expected_key_id(bao: &OpenBao, p: &Provisioned, env: &ProviderEnv, version: u64) -> anyhow::Result<String> {
    let created = bao.key_metadata(p)?.created_unix(version)?;
    Ok(bao_kms_core::keyid::KeyId::derive(&env.scope(), version, created)?
        .as_str()
        .to_owned())
}

/// Rotates the key and waits until `provider` publishes `version`'s key_id
/// (healthy); returns that key_id.
pub async fn rotate_and_promote(
    bao: &OpenBao,
    p: &Provisioned,
    env: &ProviderEnv,
    provider: &Provider,
    version: u64,
) -> anyhow::Result<String> {
    bao.rotate_key(p)?;
    let key_id = expected_key_id(bao, p, env, version)?;
    crate::wait::until(
        PROMOTION_TIMEOUT,
        &format!("promotion of version {version}"),
        || async {
            match provider.status_json().await {
                Ok(s) if s["keyID"] == key_id.as_str() && s["healthy"] == true => Ok(()),
                Ok(s) => Err(s.to_string()),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await?;
    Ok(key_id)
}
