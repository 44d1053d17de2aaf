//! TLS client identity for OpenBao cert auth, re-read at every login.
//!
//! Local checks before a login: the leaf certificate is inside its validity
//! window (`auth.cert.clockSkewLeeway` tolerated; the rule is
//! `bao_kms_core::certificate`) with more than `auth.cert.minRemainingTtl`
//! left, and if it lists extended key usages, client authentication is one
//! of them.
//!
//! Sources: `file` (PEM chain and PEM private key) and `pkcs11` (PEM chain;
//! the private key, ECDSA P-256 or RSA, stays in the PKCS#11 token and signs
//! the TLS handshake through cryptoki and the session pool of
//! [`super::pkcs11`]). A PKCS#11 key is probed once per login: it signs a
//! random challenge that must verify against the certificate's public key,
//! so a wrong key label fails with a clear message, not a handshake error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bao_kms_core::certificate;
use bao_kms_core::config::{CertAuth, CertSource, Pkcs11Source};
use rand::RngCore;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::AuthError;
use super::pkcs11::{KeyKind, Pool, TokenKey};
use crate::openbao::ClientIdentity;

fn cert_err(path: &Path, why: impl Into<String>) -> AuthError {
    AuthError::Certificate {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// A client certificate chain (leaf first) whose leaf passed the checks.
pub struct Chain {
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after_unix: i64,
}

/// The checks a leaf certificate must pass, from `auth.cert`.
pub fn expectations(cert: &CertAuth) -> certificate::Expectations {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    certificate::Expectations {
        min_remaining_ttl_secs: secs(cert.min_remaining_ttl),
        clock_skew_leeway_secs: secs(cert.clock_skew_leeway),
    }
}

/// Reads a PEM certificate chain (leaf first) and checks the leaf.
pub fn read_chain(path: &Path, expect: &certificate::Expectations, now_unix: i64) -> Result<Chain, AuthError> {
    crate::fsutil::regular_file(
        path,
        bao_kms_core::config::PRIVATE_FILE_FORBIDDEN_MODE,
        "0640 or stricter",
    )
    .map_err(|why| cert_err(path, why))?
    .ok_or_else(|| cert_err(path, "does not exist"))?;
    let pem = std::fs::read(path).map_err(|e| cert_err(path, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(path, format!("invalid PEM: {e}")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| cert_err(path, "contains no CERTIFICATE block"))?;
    let not_after_unix = check_leaf(leaf, expect, now_unix).map_err(|why| cert_err(path, why))?;
    Ok(Chain {
        certs: chain,
        not_after_unix,
    })
}

/// Validity window (with `auth.cert.clockSkewLeeway`), remaining lifetime
/// and client-auth usage of `leaf`; returns its `notAfter` (Unix seconds).
pub fn check_leaf(leaf: &CertificateDer<'_>, expect: &certificate::Expectations, now_unix: i64) -> Result<i64, String> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| format!("unparsable certificate: {e}"))?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    certificate::check_validity(not_before, not_after, expect, now_unix).map_err(|e| e.to_string())?;
    if let Ok(Some(eku)) = cert.extended_key_usage()
        && !eku.value.any
        && !eku.value.client_auth
    {
        return Err("has extended key usages but not clientAuth".into());
    }
    Ok(not_after)
}

/// How long a PKCS#11 signature waits for a free session when the caller
/// names no deadline (`doctor`): the default login timeout.
pub const DEFAULT_SESSION_WAIT: Duration = Duration::from_secs(5);

/// Builds the client identity for one login, with the leaf's `notAfter`
/// (Unix seconds).
pub fn identity(cert: &CertAuth, now_unix: i64) -> Result<(ClientIdentity, i64), AuthError> {
    identity_within(cert, now_unix, DEFAULT_SESSION_WAIT)
}

/// [`identity`], a PKCS#11 signature waiting at most `session_wait` for a
/// free session of the pool.
pub fn identity_within(
    cert: &CertAuth,
    now_unix: i64,
    session_wait: Duration,
) -> Result<(ClientIdentity, i64), AuthError> {
    let expect = expectations(cert);
    match &cert.source {
        CertSource::File {
            certificate_file,
            key_file,
        } => {
            let chain = read_chain(certificate_file, &expect, now_unix)?;
            crate::fsutil::regular_file(
                key_file,
                bao_kms_core::config::PRIVATE_FILE_FORBIDDEN_MODE,
                "0640 or stricter",
            )
            .map_err(|why| cert_err(key_file, why))?
            .ok_or_else(|| cert_err(key_file, "does not exist"))?;
            let pem = zeroize::Zeroizing::new(std::fs::read(key_file).map_err(|e| cert_err(key_file, e.to_string()))?);
            let key = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| cert_err(key_file, format!("invalid PEM: {e}")))?
                .ok_or_else(|| cert_err(key_file, "contains no private key"))?;
            Ok((
                ClientIdentity::Key {
                    chain: chain.certs,
                    key,
                },
                chain.not_after_unix,
            ))
        }
        CertSource::Pkcs11(p) => {
            let chain = read_chain(&p.certificate_file, &expect, now_unix)?;
            let key = open_token_key(p, &chain.certs[0], session_wait)?;
            let certified = Arc::new(CertifiedKey::new(chain.certs, Arc::new(SharedKey(Arc::new(key)))));
            Ok((
                ClientIdentity::Resolver(Arc::new(StaticResolver(certified))),
                chain.not_after_unix,
            ))
        }
    }
}

#[derive(Debug)]
struct StaticResolver(Arc<CertifiedKey>);

impl ResolvesClientCert for StaticResolver {
    fn resolve(&self, _hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.key.choose_scheme(schemes).map(|_| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// id-ecPublicKey with the prime256v1 curve, and rsaEncryption.
const EC_PUBLIC_KEY_OID: &str = "1.2.840.10045.2.1";
const P256_CURVE_OID: &str = "1.2.840.10045.3.1.7";
const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";

/// The token's key for the certificate `leaf`: the pool's login, the key
/// found by label, and the signer probe (a random challenge signed by the
/// token must verify against the certificate's public key).
fn open_token_key(src: &Pkcs11Source, leaf: &CertificateDer<'_>, wait: Duration) -> Result<TokenKey, AuthError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| cert_err(&src.certificate_file, format!("unparsable certificate: {e}")))?;
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let (kind, verifier): (KeyKind, &'static dyn ring::signature::VerificationAlgorithm) = match spki
        .algorithm
        .algorithm
        .to_id_string()
        .as_str()
    {
        EC_PUBLIC_KEY_OID if curve.as_deref() == Some(P256_CURVE_OID) => {
            (KeyKind::P256, &ring::signature::ECDSA_P256_SHA256_ASN1)
        }
        RSA_ENCRYPTION_OID => (KeyKind::Rsa, &ring::signature::RSA_PSS_2048_8192_SHA256),
        _ => {
            return Err(cert_err(
                &src.certificate_file,
                "PKCS#11 keys must be ECDSA P-256 or RSA (2048 to 8192 bits); the certificate names another key type",
            ));
        }
    };
    let public_key = spki.subject_public_key.data.to_vec();

    let pool = Pool::shared(src)?;
    let handle = pool.login_and_find(src).inspect_err(|_| Pool::evict(&pool))?;
    let key = TokenKey {
        pool,
        handle,
        kind,
        wait,
    };
    let mut challenge = [0u8; 32];
    rand::rng().fill_bytes(&mut challenge);
    let signature = key.sign(kind.schemes()[0], &challenge)?;
    ring::signature::UnparsedPublicKey::new(verifier, &public_key)
        .verify(&challenge, &signature)
        .map_err(|_| {
            AuthError::KeyMismatch(format!(
                "key {:?} does not match the certificate {}",
                src.key_label,
                src.certificate_file.display()
            ))
        })?;
    Ok(key)
}

#[derive(Debug)]
struct Pkcs11Signer {
    key: Arc<TokenKey>,
    scheme: SignatureScheme,
}

impl Signer for Pkcs11Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key
            .sign(self.scheme, message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Shared so every handshake of the login connection signs through the pool.
#[derive(Debug)]
struct SharedKey(Arc<TokenKey>);

impl SigningKey for SharedKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.0.kind.schemes().iter().find(|s| offered.contains(s))?;
        Some(Box::new(Pkcs11Signer {
            key: self.0.clone(),
            scheme: *scheme,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.0.kind {
            KeyKind::P256 => SignatureAlgorithm::ECDSA,
            KeyKind::Rsa => SignatureAlgorithm::RSA,
        }
    }
}
