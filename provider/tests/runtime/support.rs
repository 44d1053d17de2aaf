//! A scripted [`Transit`] and an engine built on it: the in-process
//! component tests drive the real runtime (startup, probe, rotation driver,
//! discovery, KMS operations) on a real state directory, with time paused,
//! through every event order, in milliseconds.
//!
//! The scripted Transit keeps what a Transit key keeps: versions with their
//! creation seconds, and every ciphertext it issued with the version and
//! associated data it was made with. Decrypt with other associated data
//! fails like Transit does (`message authentication failed`), and a token
//! it has revoked is answered with 403.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bao_kms_core::annotations;
use bao_kms_core::config::{Config, ValidationContext, parse_yaml_with};
use bao_kms_core::errors::ErrorClass;
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_core::transit::KeyMetadata;
use bao_kms_provider::metrics::Metrics;
use bao_kms_provider::runtime::Engine;
use bao_kms_provider::transit::{AuthError, BaoError, MountIdentity, Op, Transit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// Creation second of version 1.
pub const CREATED_V1: i64 = 1_780_000_000;

pub struct ScriptedTransit {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Transit version -> creation second.
    versions: BTreeMap<u64, i64>,
    /// When set, every metadata read fails with this.
    metadata_failure: Option<BaoError>,
    tokens_issued: u32,
    current_token: Option<String>,
    revoked: HashSet<String>,
    /// Ciphertext -> (version, associated data, plaintext).
    issued: HashMap<String, (u64, Vec<u8>, Vec<u8>)>,
    /// `key_version` of every encrypt call, in order.
    encrypt_versions: Vec<u64>,
    metadata_reads: u32,
    /// When set, decrypt panics (a handler bug, reachable only here).
    panic_on_decrypt: bool,
    /// How long each decrypt takes (paused time in the tests).
    decrypt_delay: std::time::Duration,
    /// `batch_input` calls answered so far, and whether they are refused.
    batch_calls: u32,
    refuse_batches: bool,
}

fn bao_error(op: Op, class: ErrorClass, http_status: u16, message: &str) -> BaoError {
    BaoError {
        class,
        op,
        http_status: Some(http_status),
        message: message.to_owned(),
    }
}

impl ScriptedTransit {
    /// A fresh key: version 1 only.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                versions: BTreeMap::from([(1, CREATED_V1)]),
                metadata_failure: None,
                tokens_issued: 0,
                current_token: None,
                revoked: HashSet::new(),
                issued: HashMap::new(),
                encrypt_versions: Vec::new(),
                metadata_reads: 0,
                panic_on_decrypt: false,
                decrypt_delay: std::time::Duration::ZERO,
                batch_calls: 0,
                refuse_batches: false,
            }),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// `bao write -f transit/keys/<key>/rotate`: a new latest version,
    /// created `after_secs` after the previous one. Returns its number.
    pub fn rotate(&self, after_secs: i64) -> u64 {
        let mut inner = self.inner();
        let (&last, &created) = inner.versions.last_key_value().unwrap();
        inner.versions.insert(last + 1, created + after_secs);
        last + 1
    }

    pub fn created(&self, version: u64) -> i64 {
        self.inner().versions[&version]
    }

    pub fn fail_metadata(&self, failure: Option<BaoError>) {
        self.inner().metadata_failure = failure;
    }

    /// OpenBao revokes the token in use: every call with it answers 403.
    pub fn revoke_current_token(&self) {
        let mut inner = self.inner();
        if let Some(t) = inner.current_token.clone() {
            inner.revoked.insert(t);
        }
    }

    pub fn tokens_issued(&self) -> u32 {
        self.inner().tokens_issued
    }

    pub fn encrypt_versions(&self) -> Vec<u64> {
        self.inner().encrypt_versions.clone()
    }

    /// Makes every decrypt call panic (or not).
    pub fn panic_on_decrypt(&self, panic: bool) {
        self.inner().panic_on_decrypt = panic;
    }

    pub fn metadata_reads(&self) -> u32 {
        self.inner().metadata_reads
    }

    /// Every decrypt from now on takes `delay`.
    pub fn slow_decrypts(&self, delay: std::time::Duration) {
        self.inner().decrypt_delay = delay;
    }

    /// `batch_input` decrypt calls answered so far.
    pub fn batch_calls(&self) -> u32 {
        self.inner().batch_calls
    }

    /// Refuse every `batch_input` call with 400, as an OpenBao that does
    /// not batch would.
    pub fn refuse_batches(&self) {
        self.inner().refuse_batches = true;
    }

    /// The single decrypt answer, without delay or counting.
    fn answer(inner: &Inner, ciphertext: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, BaoError> {
        match inner.issued.get(ciphertext) {
            Some((_, want, plain)) if want == aad => Ok(Zeroizing::new(plain.clone())),
            Some(_) => Err(bao_error(
                Op::TransitDecrypt,
                ErrorClass::IntegrityFailed,
                400,
                "cipher: message authentication failed",
            )),
            None => Err(bao_error(
                Op::TransitDecrypt,
                ErrorClass::TransitBadRequest,
                400,
                "invalid ciphertext",
            )),
        }
    }

    fn check_token(&self, op: Op, token: &SecretString) -> Result<(), BaoError> {
        if self.inner().revoked.contains(token.expose_secret()) {
            return Err(bao_error(op, ErrorClass::TransitPolicyDenied, 403, "permission denied"));
        }
        Ok(())
    }

    fn metadata(&self) -> KeyMetadata {
        let inner = self.inner();
        KeyMetadata {
            name: "k8s-workload-a-etcd".into(),
            key_type: "aes256-gcm96".into(),
            latest_version: *inner.versions.keys().last().unwrap(),
            min_available_version: 0,
            min_decryption_version: 1,
            min_encryption_version: 0,
            versions: inner.versions.clone(),
            derived: false,
            convergent_encryption: false,
            exportable: false,
            allow_plaintext_backup: false,
            deletion_allowed: false,
            imported_key: false,
            soft_deleted: false,
            supports_encryption: true,
            supports_decryption: true,
            auto_rotate_period_secs: 0,
        }
    }
}

#[async_trait]
impl Transit for ScriptedTransit {
    async fn token(&self) -> Result<SecretString, AuthError> {
        let mut inner = self.inner();
        if let Some(t) = &inner.current_token {
            return Ok(SecretString::from(t.clone()));
        }
        inner.tokens_issued += 1;
        let token = format!("token-{}", inner.tokens_issued);
        inner.current_token = Some(token.clone());
        Ok(SecretString::from(token))
    }

    async fn invalidate(&self, rejected: &SecretString) {
        let mut inner = self.inner();
        if inner.current_token.as_deref() == Some(rejected.expose_secret()) {
            inner.current_token = None;
        }
    }

    async fn maintain_token(&self) {}

    async fn key_metadata(&self, token: &SecretString) -> Result<KeyMetadata, BaoError> {
        self.check_token(Op::TransitMetadataRead, token)?;
        self.inner().metadata_reads += 1;
        if let Some(e) = self.inner().metadata_failure.clone() {
            return Err(e);
        }
        Ok(self.metadata())
    }

    async fn cluster_id(&self) -> Result<String, BaoError> {
        Ok("cluster-1".into())
    }

    async fn mount_identity(&self, token: &SecretString) -> Result<MountIdentity, BaoError> {
        self.check_token(Op::MountRead, token)?;
        Ok(MountIdentity {
            accessor: "transit_1".into(),
            uuid: "uuid-1".into(),
        })
    }

    async fn disable_upsert(&self, token: &SecretString) -> Result<bool, BaoError> {
        self.check_token(Op::TransitDisableUpsertRead, token)?;
        Ok(true)
    }

    async fn encrypt(
        &self,
        token: &SecretString,
        plaintext: &[u8],
        aad: &[u8],
        key_version: u64,
    ) -> Result<String, BaoError> {
        self.check_token(Op::TransitEncrypt, token)?;
        let mut inner = self.inner();
        if !inner.versions.contains_key(&key_version) {
            return Err(bao_error(
                Op::TransitEncrypt,
                ErrorClass::TransitBadRequest,
                400,
                "invalid key version",
            ));
        }
        inner.encrypt_versions.push(key_version);
        let serial = inner.issued.len();
        let ciphertext = format!("vault:v{key_version}:{}", STANDARD.encode(format!("ct-{serial}")));
        inner
            .issued
            .insert(ciphertext.clone(), (key_version, aad.to_vec(), plaintext.to_vec()));
        Ok(ciphertext)
    }

    async fn decrypt(
        &self,
        token: &SecretString,
        ciphertext: &str,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BaoError> {
        self.check_token(Op::TransitDecrypt, token)?;
        // Read, then release the lock before panicking: a poisoned lock
        // would fail every later call of this scripted Transit.
        let panics = self.inner().panic_on_decrypt;
        assert!(!panics, "scripted Transit: decrypt panics");
        let delay = self.inner().decrypt_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let inner = self.inner();
        Self::answer(&inner, ciphertext, aad)
    }

    async fn decrypt_batch(
        &self,
        token: &SecretString,
        items: &[(&str, &[u8])],
    ) -> Result<Vec<Option<Zeroizing<Vec<u8>>>>, BaoError> {
        self.check_token(Op::TransitDecryptBatch, token)?;
        if self.inner().refuse_batches {
            return Err(bao_error(
                Op::TransitDecryptBatch,
                ErrorClass::TransitBadRequest,
                400,
                "batch_input refused",
            ));
        }
        let delay = self.inner().decrypt_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut inner = self.inner();
        inner.batch_calls += 1;
        Ok(items
            .iter()
            .map(|(ciphertext, aad)| Self::answer(&inner, ciphertext, aad).ok())
            .collect())
    }
}

/// One node: its state directory and configuration.
pub struct Node {
    /// Removed with the node.
    _dir: tempfile::TempDir,
    pub cfg: Arc<Config>,
}

pub const ACTIVATION_DELAY_SECS: u64 = 120;
pub const STABLE_COUNT: u32 = 3;

impl Node {
    pub fn new() -> Self {
        Self::with_server("")
    }

    /// A node whose `server` section also has `extra` (indented YAML lines).
    pub fn with_server(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("state")).unwrap();
        let yaml = format!(
            r#"configVersion: v1alpha1
server:
  socketPath: {root}/run/kms.sock
  socketGroup: "0"
{extra}openbao:
  address: https://127.0.0.1:8200
  caCertFile: {root}/ca.pem
  tlsServerName: localhost
  instanceId: bao-test
auth:
  method: token
  token:
    tokenFile: {root}/token
transit:
  mountPath: transit
  keyName: k8s-workload-a-etcd
  keyIdScope:
    providerName: openbao-kms-workload-a
    clusterId: workload-a
    transitMountId: transit-test
    keyLineageId: "01HXTESTLINEAGE"
status:
  probeInterval: 30s
  deepProbeInterval: 5m
  statusMaxStaleness: 2m
state:
  path: {root}/state/key-registry.json
rotation:
  mode: observed
  activationDelay: {ACTIVATION_DELAY_SECS}s
  requireStableObservationCount: {STABLE_COUNT}
"#,
            root = root.display()
        );
        let ctx = ValidationContext {
            extra_socket_dirs: vec![root.join("run")],
            ..ValidationContext::default()
        };
        let cfg = parse_yaml_with(&yaml, &ctx).unwrap();
        Self {
            _dir: dir,
            cfg: Arc::new(cfg),
        }
    }

    pub async fn start(&self, transit: &Arc<ScriptedTransit>) -> Arc<Engine> {
        self.try_start(transit).await.unwrap()
    }

    pub async fn try_start(
        &self,
        transit: &Arc<ScriptedTransit>,
    ) -> Result<Arc<Engine>, bao_kms_provider::runtime::StartupError> {
        let metrics = Arc::new(Metrics::for_auth(&self.cfg.auth.method));
        Engine::start_with(self.cfg.clone(), metrics, "0.1.0".into(), transit.clone()).await
    }

    pub fn state_path(&self) -> std::path::PathBuf {
        self.cfg.state.path.clone()
    }

    /// The key snapshot of `version` under this node's identity.
    pub fn snapshot(&self, transit: &ScriptedTransit, version: u64) -> KeySnapshot {
        KeySnapshot::new(&self.cfg.identity_scope(), version, transit.created(version)).unwrap()
    }

    /// The annotations kube-apiserver stores beside a DEK of `snapshot`.
    pub fn annotations(&self, snapshot: &KeySnapshot) -> HashMap<String, Vec<u8>> {
        annotations::build(&self.cfg.identity_scope(), snapshot, "0.1.0")
            .into_iter()
            .collect()
    }
}

/// What kube-apiserver keeps of one Encrypt.
pub struct Stored {
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub annotations: HashMap<String, Vec<u8>>,
    pub seed: Vec<u8>,
}

pub async fn encrypt(engine: &Engine, seed: u8) -> Stored {
    let seed = vec![seed; 32];
    let answer = engine.encrypt(&seed, "uid").await.unwrap();
    Stored {
        ciphertext: answer.ciphertext,
        key_id: answer.key_id.to_string(),
        annotations: answer.annotations.into_iter().collect(),
        seed,
    }
}

pub async fn decrypt(engine: &Engine, stored: &Stored) -> Result<Vec<u8>, bao_kms_core::errors::KmsError> {
    engine
        .decrypt(&stored.ciphertext, "uid", &stored.key_id, &stored.annotations)
        .await
        .map(|p| p.to_vec())
}

/// The key_id Status reports now (None when unhealthy).
pub fn status_key_id(engine: &Engine) -> Option<String> {
    engine.view().key_id().map(ToString::to_string)
}

/// Probes until the pending candidate is stable (the configured count of
/// observations), then lets the activation delay pass and probes once more.
pub async fn probe_until_promoted(engine: &Engine) {
    for _ in 0..STABLE_COUNT {
        engine.probe_once(false).await;
    }
    tokio::time::advance(std::time::Duration::from_secs(ACTIVATION_DELAY_SECS)).await;
    engine.probe_once(false).await;
}
