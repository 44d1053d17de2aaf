//! The PKCS#11 session pool against a real SoftHSM2 token: ECDSA P-256 and
//! RSA keys pass the signer probe and sign what TLS asks for; concurrent
//! signers never open more than `maxSessions` sessions (one of them holds
//! the login) and all finish; a signer that finds every session busy fails
//! after its wait, naming the setting.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module loads, so the test runs
//! itself again as a child process with the variable set for a private
//! token directory (no process-global environment change in the test).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bao_kms_core::config::{CertAuth, CertSource, Pkcs11Source};
use bao_kms_provider::auth::pkcs11::{KeyKind, Pool, TokenKey};
use bao_kms_provider::auth::{AuthError, client_identity_within};
use rustls::SignatureScheme;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const CHILD: &str = "BAO_KMS_PKCS11_TEST_DIR";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn private_file(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A token `kms` (PIN 1234) holding `ec-client` (P-256) and `rsa-client`
/// (RSA 2048), with a self-signed client certificate for each.
fn provision(dir: &Path) -> PathBuf {
    let conf = dir.join("softhsm2.conf");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    let hsm = |args: &[&str]| run(Command::new("softhsm2-util").args(args).env("SOFTHSM2_CONF", &conf));
    hsm(&[
        "--init-token",
        "--free",
        "--label",
        "kms",
        "--pin",
        "1234",
        "--so-pin",
        "123456",
    ]);
    for (name, algorithm, option, id) in [
        ("ec", "EC", "ec_paramgen_curve:P-256", "01"),
        ("rsa", "RSA", "rsa_keygen_bits:2048", "02"),
    ] {
        let key = dir.join(format!("{name}.key"));
        run(Command::new("openssl")
            .args(["genpkey", "-algorithm", algorithm, "-pkeyopt", option, "-out"])
            .arg(&key));
        run(Command::new("openssl")
            .args(["req", "-x509", "-new", "-subj", "/CN=kms-client", "-days", "2"])
            .args(["-addext", "extendedKeyUsage=clientAuth", "-key"])
            .arg(&key)
            .arg("-out")
            .arg(dir.join(format!("{name}.crt"))));
        let crt = dir.join(format!("{name}.crt"));
        private_file(&crt, &std::fs::read_to_string(&crt).unwrap());
        let label = format!("{name}-client");
        hsm(&[
            "--import",
            key.to_str().unwrap(),
            "--token",
            "kms",
            "--label",
            &label,
            "--id",
            id,
            "--pin",
            "1234",
        ]);
        std::fs::remove_file(&key).unwrap();
    }
    private_file(&dir.join("pin"), "1234\n");
    conf
}

fn source(dir: &Path, name: &str, max_sessions: u32) -> Pkcs11Source {
    Pkcs11Source {
        certificate_file: dir.join(format!("{name}.crt")),
        module_path: MODULE.into(),
        token_label: "kms".into(),
        key_label: format!("{name}-client"),
        pin_file: dir.join("pin"),
        max_sessions,
    }
}

#[test]
fn pool_with_softhsm() {
    if let Ok(dir) = std::env::var(CHILD) {
        return in_child(Path::new(&dir));
    }
    assert!(Path::new(MODULE).exists(), "SoftHSM2 is not installed: run `make deps`");
    let dir = tempfile::tempdir().unwrap();
    let conf = provision(dir.path());
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pool_with_softhsm", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_child(dir: &Path) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // Both key types pass the probe and make a TLS client identity.
    for name in ["ec", "rsa"] {
        let cert = CertAuth {
            mount_path: "auth/cert".into(),
            name: String::new(),
            min_remaining_ttl: Duration::from_secs(60),
            clock_skew_leeway: Duration::from_secs(30),
            source: CertSource::Pkcs11(source(dir, name, 3)),
        };
        client_identity_within(&cert, now, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // Concurrent signers through a pool of 3: at most 3 sessions open.
    let src = source(dir, "rsa", 3);
    let pool = Pool::shared(&src).unwrap();
    let key = Arc::new(TokenKey {
        handle: pool.login_and_find(&src).unwrap(),
        pool: pool.clone(),
        kind: KeyKind::Rsa,
        wait: Duration::from_secs(30),
    });
    let signers: Vec<_> = (0..8)
        .map(|i| {
            let key = key.clone();
            std::thread::spawn(move || {
                for j in 0..5 {
                    let scheme = if (i + j) % 2 == 0 {
                        SignatureScheme::RSA_PSS_SHA256
                    } else {
                        SignatureScheme::RSA_PKCS1_SHA256
                    };
                    let signature = key.sign(scheme, format!("message {i} {j}").as_bytes()).unwrap();
                    assert_eq!(signature.len(), 256);
                }
            })
        })
        .collect();
    for s in signers {
        s.join().unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.max_sessions, 3);
    assert!(stats.peak <= 3, "{stats:?}");
    assert!(stats.open <= 3, "{stats:?}");
    assert!(stats.peak >= 2, "the login session and at least one signer: {stats:?}");
    drop((key, pool));

    // maxSessions 2: one signer; while it is leased, another waits, then fails.
    let src = source(dir, "ec", 2);
    let pool = Pool::shared(&src).unwrap();
    let handle = pool.login_and_find(&src).unwrap();
    let key = TokenKey {
        pool: pool.clone(),
        handle,
        kind: KeyKind::P256,
        wait: Duration::from_millis(300),
    };
    let held = pool.lease(Duration::from_secs(1)).unwrap();
    let busy = key.sign(SignatureScheme::ECDSA_NISTP256_SHA256, b"m").unwrap_err();
    assert!(
        matches!(&busy, AuthError::Pkcs11(m) if m.contains("auth.cert.pkcs11.maxSessions: 2")),
        "{busy}"
    );
    drop(held);
    key.sign(SignatureScheme::ECDSA_NISTP256_SHA256, b"m").unwrap();
    assert_eq!(pool.stats().open, 2);
}
