//! Connection failures to the Kubernetes API name their cause and fix:
//! the fake Kubernetes API behind a TLS front end serving each kind of bad
//! certificate (rcgen), a refused port and a listener that never answers.
//! A good leaf certificate reaches the fake API (the front end works).

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::cluster::Cluster;
use crate::common::run;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A serving certificate chain and its key.
struct Serving {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A leaf for `names` (IP or DNS) signed by `issuer`; `params` adjusts it.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    adjust: impl FnOnce(&mut CertificateParams),
) -> Serving {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    for n in names {
        params.subject_alt_names.push(match n.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into().unwrap()),
        });
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    adjust(&mut params);
    let signer: &Issuer<'_, KeyPair> = issuer;
    let cert = params.signed_by(&key, signer).unwrap();
    Serving {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

/// Accepts TLS with `serving` on a loopback port and forwards each
/// connection to the fake API at `backend` (plain HTTP). Returns the port.
fn tls_front(serving: Serving, backend: String) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(serving.chain, serving.key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let backend = backend.clone();
                tokio::spawn(async move {
                    // A refused handshake is the client's verdict: nothing to forward.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut plain = tokio::net::TcpStream::connect(backend).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    port
}

/// A kubeconfig for `server` trusting the CA in PEM `ca_pem`.
fn kubeconfig(dir: &Path, server: &str, ca_pem: &str) -> PathBuf {
    let ca = dir.join("api-ca.crt");
    std::fs::write(&ca, ca_pem).unwrap();
    let path = dir.join("kubeconfig-tls");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: tls\n  cluster:\n    server: {server}\n    certificate-authority: {}\ncontexts:\n- name: tls\n  context:\n    cluster: tls\n    user: tls\n    namespace: kube-system\ncurrent-context: tls\nusers:\n- name: tls\n  user:\n    token: fake-token\n",
            ca.display()
        ),
    )
    .unwrap();
    path
}

/// Runs `cluster` against `server`; returns (exit code, stderr).
fn cluster_against(dir: &Path, server: &str, ca_pem: &str, extra: &[&str]) -> (i32, String) {
    let kc = kubeconfig(dir, server, ca_pem);
    let mut args = vec![
        "cluster".to_owned(),
        "--kubeconfig".to_owned(),
        kc.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let (code, _, err) = run(&args, &[]);
    (code, err)
}

/// `cluster` through a TLS front end serving `serving` to the fake API of
/// `c`, trusting `ca_pem`: (server URL, exit code, stderr).
fn through_front(c: &Cluster, serving: Serving, ca_pem: &str) -> (String, i32, String) {
    let port = tls_front(serving, c.api.address.clone());
    let server = format!("https://127.0.0.1:{port}");
    let (code, err) = cluster_against(c._dir.path(), &server, ca_pem, &[]);
    (server, code, err)
}

/// Exit 5, the cause and the fix on their own lines.
fn assert_named(code: i32, err: &str, cause: &str, fix: &str) {
    assert_eq!(code, 5, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("bao-kms-preflight cluster: listing control-plane nodes: "),
        "{err}"
    );
    assert!(lines[0].contains(cause), "cause {cause:?} not in {err}");
    assert!(
        lines[1].starts_with("fix: ") && lines[1].contains(fix),
        "fix {fix:?} not in {err}"
    );
}

#[test]
fn a_good_leaf_reaches_the_api() {
    let c = Cluster::new();
    let ca = ca("kubernetes");
    let (_, code, err) = through_front(&c, leaf(&ca, &["127.0.0.1"], |_| {}), &ca.pem());
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unknown_issuer_is_named() {
    let c = Cluster::new();
    let (trusted, other) = (ca("kubernetes"), ca("someone-else"));
    let (server, code, err) = through_front(&c, leaf(&other, &["127.0.0.1"], |_| {}), &trusted.pem());
    assert_named(
        code,
        &err,
        &format!(
            "the certificate of the API server at {server} is not signed by the CA the kubeconfig trusts (unknown issuer)"
        ),
        "set the cluster's certificate-authority(-data) in the kubeconfig to the CA that signed the API server's certificate",
    );
}

/// A self-signed serving certificate marked as a CA, trusted by the
/// kubeconfig as itself (kubectl accepts it; rustls refuses a CA as the
/// end entity, and preflight says so instead of `client error (Connect)`).
#[test]
fn a_ca_certificate_as_the_server_certificate_is_named() {
    let c = Cluster::new();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let serving = Serving {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    };
    let (server, code, err) = through_front(&c, serving, &cert.pem());
    assert_named(
        code,
        &err,
        &format!(
            "the API server at {server} serves a CA certificate (basicConstraints CA:TRUE) as its own certificate"
        ),
        "reissue the API server's serving certificate as a leaf (CA:FALSE, extendedKeyUsage serverAuth) signed by the kubeconfig's CA",
    );
    assert!(!err.contains("client error (Connect)"), "{err}");

    // rewrite's first request (API discovery) says the same.
    let kc = kubeconfig(c._dir.path(), &server, &cert.pem());
    let ec = c._dir.path().join("encryption-config.yaml");
    std::fs::write(
        &ec,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: openbao-kms\n          endpoint: unix:///run/openbao-kms/kms.sock\n          timeout: 3s\n      - identity: {}\n",
    )
    .unwrap();
    let (code, _, err) = run(
        &[
            "rewrite".into(),
            "--kubeconfig".into(),
            kc.display().to_string(),
            "--encryption-config".into(),
            ec.display().to_string(),
        ],
        &[],
    );
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("serves a CA certificate (basicConstraints CA:TRUE)") && err.contains("\nfix: reissue"),
        "{err}"
    );
}

#[test]
fn a_name_mismatch_is_named() {
    let c = Cluster::new();
    let ca = ca("kubernetes");
    let (server, code, err) = through_front(&c, leaf(&ca, &["elsewhere.example"], |_| {}), &ca.pem());
    assert_named(
        code,
        &err,
        &format!(
            "the certificate of the API server at {server} is not valid for 127.0.0.1 (it names DnsName(\"elsewhere.example\"))"
        ),
        "reissue the certificate with 127.0.0.1 in its subjectAltName",
    );
}

#[test]
fn an_expired_certificate_is_named() {
    let c = Cluster::new();
    let ca = ca("kubernetes");
    let expired = leaf(&ca, &["127.0.0.1"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (server, code, err) = through_front(&c, expired, &ca.pem());
    assert_named(
        code,
        &err,
        &format!("the certificate of the API server at {server} has expired: not after 2021-01-01T00:00:00Z, now 20"),
        "renew the API server's certificate (kubeadm certs renew apiserver, then restart kube-apiserver)",
    );
}

#[test]
fn a_refused_connection_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("kubernetes");
    // Port 1 is privileged and unused on a test host: nothing listens.
    let (code, err) = cluster_against(dir.path(), "https://127.0.0.1:1", &ca.pem(), &[]);
    assert_named(
        code,
        &err,
        "nothing listens at https://127.0.0.1:1 (connection refused)",
        "start kube-apiserver or correct the kubeconfig's server address and port",
    );
}

/// A listener that takes the TCP connection (the kernel's backlog) but
/// never answers the TLS handshake: the connect timeout names it.
#[test]
fn a_silent_server_is_a_named_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("kubernetes");
    let silent = StdListener::bind("127.0.0.1:0").unwrap();
    let server = format!("https://{}", silent.local_addr().unwrap());
    let (code, err) = cluster_against(dir.path(), &server, &ca.pem(), &["--connect-timeout", "1s"]);
    assert_named(
        code,
        &err,
        &format!("no connection to {server} within 1s (connect timeout)"),
        "or raise --connect-timeout",
    );
    drop(silent);
}
