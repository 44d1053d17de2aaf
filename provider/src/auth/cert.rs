//! TLS client identity for OpenBao cert auth, re-read at every login.
//!
//! Local checks before a login: the leaf certificate is inside its validity
//! window (`auth.cert.clockSkewLeeway` tolerated; the rule is
//! `bao_kms_core::certificate`) with more than `auth.cert.minRemainingTtl`
//! left, and if it lists extended key usages, client authentication is one
//! of them.
//!
//! Sources: `file` (PEM chain and PEM private key) and `pkcs11` (PEM chain;
//! the private key stays in the PKCS#11 token and signs the TLS handshake
//! through cryptoki). A PKCS#11 key is probed once per login: it signs a
//! random challenge that must verify against the certificate's public key,
//! so a wrong key label fails with a clear message, not a handshake error.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bao_kms_core::certificate;
use bao_kms_core::config::{CertAuth, CertSource, Pkcs11Source};
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rand::RngCore;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::{AuthError, read_secret_file};
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

/// Builds the client identity for one login, with the leaf's `notAfter`
/// (Unix seconds).
pub fn identity(cert: &CertAuth, now_unix: i64) -> Result<(ClientIdentity, i64), AuthError> {
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
            let key = Pkcs11Key::open(p, &chain.certs[0])?;
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

/// An ECDSA P-256 private key inside a PKCS#11 token.
struct Pkcs11Key {
    // Kept alive for the session's lifetime.
    _context: Pkcs11,
    session: Mutex<Session>,
    key: ObjectHandle,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pkcs11Key")
    }
}

/// id-ecPublicKey with the prime256v1 curve.
const EC_PUBLIC_KEY_OID: &str = "1.2.840.10045.2.1";
const P256_CURVE_OID: &str = "1.2.840.10045.3.1.7";

impl Pkcs11Key {
    fn open(src: &Pkcs11Source, leaf: &CertificateDer<'_>) -> Result<Self, AuthError> {
        let p11 = |what: &str, e: cryptoki::error::Error| AuthError::Pkcs11(format!("{what}: {e}"));
        let (_, cert) = X509Certificate::from_der(leaf.as_ref())
            .map_err(|e| cert_err(&src.certificate_file, format!("unparsable certificate: {e}")))?;
        let spki = cert.public_key();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        if spki.algorithm.algorithm.to_id_string() != EC_PUBLIC_KEY_OID || curve.as_deref() != Some(P256_CURVE_OID) {
            return Err(cert_err(
                &src.certificate_file,
                "PKCS#11 keys must be ECDSA P-256 in this release (the certificate's key is not P-256)",
            ));
        }
        let public_key = spki.subject_public_key.data.to_vec();

        let context = Pkcs11::new(&src.module_path)
            .map_err(|e| p11(&format!("loading module {}", src.module_path.display()), e))?;
        context
            .initialize(CInitializeArgs::OsThreads)
            .map_err(|e| p11("C_Initialize", e))?;
        let slot = context
            .get_slots_with_token()
            .map_err(|e| p11("listing slots", e))?
            .into_iter()
            .find(|s| context.get_token_info(*s).is_ok_and(|t| t.label() == src.token_label))
            .ok_or_else(|| {
                AuthError::Pkcs11(format!(
                    "no token labelled {:?} (auth.cert.pkcs11.tokenLabel)",
                    src.token_label
                ))
            })?;
        let session = context.open_ro_session(slot).map_err(|e| p11("opening a session", e))?;
        let pin = read_secret_file(&src.pin_file)?;
        session
            .login(UserType::User, Some(&AuthPin::new(pin.expose_secret().into())))
            .map_err(|e| AuthError::Pkcs11(format!("login to token {:?} failed (wrong PIN?): {e}", src.token_label)))?;
        let key = *session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(src.key_label.as_bytes().to_vec()),
            ])
            .map_err(|e| p11("finding the key", e))?
            .first()
            .ok_or_else(|| {
                AuthError::Pkcs11(format!(
                    "no private key labelled {:?} (auth.cert.pkcs11.keyLabel)",
                    src.key_label
                ))
            })?;
        let signer = Self {
            _context: context,
            session: Mutex::new(session),
            key,
        };

        // Signer probe: the token's key must match the certificate.
        let mut challenge = [0u8; 32];
        rand::rng().fill_bytes(&mut challenge);
        let signature = signer.sign_p256(&challenge)?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &public_key)
            .verify(&challenge, &signature)
            .map_err(|_| {
                AuthError::KeyMismatch(format!(
                    "key {:?} does not match the certificate {}",
                    src.key_label,
                    src.certificate_file.display()
                ))
            })?;
        Ok(signer)
    }

    /// ECDSA P-256 over SHA-256 of `message`, DER-encoded as TLS expects.
    fn sign_p256(&self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        let digest = Sha256::digest(message);
        let session = self
            .session
            .lock()
            .map_err(|_| AuthError::Pkcs11("session lock poisoned".into()))?;
        let raw = session
            .sign(&Mechanism::Ecdsa, self.key, &digest)
            .map_err(|e| AuthError::Pkcs11(format!("signing: {e}")))?;
        let sig = p256::ecdsa::Signature::from_slice(&raw)
            .map_err(|_| AuthError::Pkcs11(format!("token returned a {}-byte ECDSA signature", raw.len())))?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

#[derive(Debug)]
struct Pkcs11Signer(Arc<Pkcs11Key>);

impl Signer for Pkcs11Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0
            .sign_p256(message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// Shared so every handshake of the login connection signs with one session.
struct SharedKey(Arc<Pkcs11Key>);

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pkcs11SigningKey")
    }
}

impl SigningKey for SharedKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(Pkcs11Signer(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}
