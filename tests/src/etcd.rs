//! A real etcd (Debian's `etcd-server`, `make deps`) on loopback with TLS
//! and client-certificate authentication, as a kubeadm control plane runs
//! it: a CA generated for the test signs etcd's serving certificate and
//! the client certificate kube-apiserver would use; a second CA signs a
//! client certificate etcd must refuse.
//!
//! The test writes values through etcd's own JSON gateway (`/v3/kv/put` on
//! the client port), so the product's etcd client stays read-only.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::net::free_port;
use crate::openbao::temp_dir;
use crate::process::KillOnDrop;
use crate::wait;

/// How long etcd may take to answer `/health`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A certificate and key pair on disk.
#[derive(Debug, Clone)]
pub struct ClientPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running etcd and its PKI.
pub struct Etcd {
    _dir: TempDir,
    _child: KillOnDrop,
    pub endpoint: String,
    /// The CA of etcd's serving and client certificates.
    pub ca: PathBuf,
    /// kube-apiserver's client pair (signed by `ca`).
    pub client: ClientPair,
    /// A client pair signed by another CA.
    pub foreign_client: ClientPair,
    /// The other CA (does not sign etcd's serving certificate).
    pub foreign_ca: PathBuf,
    http: reqwest::Client,
}

fn ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    usages: Vec<ExtendedKeyUsagePurpose>,
    dir: &Path,
    name: &str,
) -> anyhow::Result<ClientPair> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse()?));
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = usages;
    let issuer: &Issuer<'_, KeyPair> = issuer;
    let cert = params.signed_by(&key, issuer)?;
    let pair = ClientPair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    fs::write(&pair.cert, cert.pem())?;
    fs::write(&pair.key, key.serialize_pem())?;
    fs::set_permissions(&pair.key, fs::Permissions::from_mode(0o600))?;
    Ok(pair)
}

impl Etcd {
    /// Starts etcd on two free loopback ports (client over TLS with client
    /// certificates required, peer plaintext) and waits for `/health`.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = temp_dir("etcd")?;
        let pki = dir.path().join("pki");
        fs::create_dir_all(&pki)?;
        let ca_issuer = ca("etcd-ca")?;
        let ca_path = pki.join("ca.crt");
        fs::write(&ca_path, ca_issuer.pem())?;
        // Server and client usage, as kubeadm's etcd/server certificate: etcd's
        // JSON gateway dials etcd's own gRPC port with it.
        let server = leaf(
            &ca_issuer,
            "etcd",
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            &pki,
            "server",
        )?;
        let client = leaf(
            &ca_issuer,
            "kube-apiserver-etcd-client",
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            &pki,
            "apiserver-etcd-client",
        )?;
        let other = ca("other-ca")?;
        let foreign_ca = pki.join("other-ca.crt");
        fs::write(&foreign_ca, other.pem())?;
        let foreign_client = leaf(
            &other,
            "kube-apiserver-etcd-client",
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            &pki,
            "foreign-client",
        )?;

        let client_port = free_port()?;
        let peer_port = free_port()?;
        let endpoint = format!("https://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg(format!("--cert-file={}", server.cert.display()))
            .arg(format!("--key-file={}", server.key.display()))
            .arg(format!("--trusted-ca-file={}", ca_path.display()))
            .arg("--client-cert-auth")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian's etcd-server: make deps)")?;
        let child = KillOnDrop(child);

        let identity = reqwest::Identity::from_pem(&[fs::read(&client.cert)?, fs::read(&client.key)?].concat())?;
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&fs::read(&ca_path)?)?)
            .identity(identity)
            .timeout(Duration::from_secs(5))
            .build()?;
        let etcd = Self {
            _dir: dir,
            _child: child,
            endpoint,
            ca: ca_path,
            client,
            foreign_client,
            foreign_ca,
            http,
        };
        let log_path = etcd._dir.path().join("etcd.log");
        wait::until(READY_TIMEOUT, "etcd /health", || async {
            match etcd.http.get(format!("{}/health", etcd.endpoint)).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(format!("{e} ({})", fs::read_to_string(&log_path).unwrap_or_default())),
            }
        })
        .await?;
        Ok(etcd)
    }

    /// `PUT key = value` through etcd's JSON gateway.
    pub async fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let body = json!({"key": STANDARD.encode(key), "value": STANDARD.encode(value)});
        let resp = self
            .http
            .post(format!("{}/v3/kv/put", self.endpoint))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("etcd put {key}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "etcd put {key}: HTTP {status}: {text}");
        let v: Value = serde_json::from_str(&text)?;
        anyhow::ensure!(v.get("header").is_some(), "etcd put {key}: {text}");
        Ok(())
    }

    /// The flags `bao-kms-preflight storage` takes to read this etcd with
    /// kube-apiserver's client pair.
    pub fn storage_flags(&self) -> Vec<String> {
        self.flags_with(&self.ca, &self.client)
    }

    /// The same flags with another CA or client pair.
    pub fn flags_with(&self, ca: &Path, client: &ClientPair) -> Vec<String> {
        vec![
            "--etcd-servers".into(),
            self.endpoint.clone(),
            "--etcd-cafile".into(),
            ca.display().to_string(),
            "--etcd-certfile".into(),
            client.cert.display().to_string(),
            "--etcd-keyfile".into(),
            client.key.display().to_string(),
        ]
    }
}
