//! The PKCS#11 token of cert auth: the module is loaded and initialized once
//! per process, and its sessions form a bounded pool of
//! `auth.cert.pkcs11.maxSessions`.
//!
//! PKCS#11 login state belongs to the application and the token, not to one
//! session: one session of the pool is reserved to hold it (the `C_Login`
//! session), the others (`maxSessions - 1`) sign. A signer waits for a free
//! session up to the login timeout, then fails naming the setting; a
//! session that failed is closed rather than returned, and a failed token
//! (removed, re-initialized, logged out) drops the whole pool so the next
//! login opens it afresh.
//!
//! Keys: ECDSA P-256 (`CKM_ECDSA` over SHA-256, DER-encoded for TLS) and
//! RSA (`CKM_SHA256_RSA_PKCS_PSS` with MGF1-SHA-256 and a 32-byte salt, the
//! `rsa_pss_rsae_sha256` scheme TLS 1.3 requires for a client certificate
//! signature, and `CKM_SHA256_RSA_PKCS` where a TLS 1.2 server offers only
//! `rsa_pkcs1_sha256`).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bao_kms_core::config::Pkcs11Source;
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rustls::SignatureScheme;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::error::{AuthError, read_secret_file};

fn p11(what: &str, e: cryptoki::error::Error) -> AuthError {
    AuthError::Pkcs11(format!("{what}: {e}"))
}

/// A poisoned lock only means a signer panicked; the pool's counts are
/// updated in single statements and stay consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sessions of the pool, and how many signers are open.
struct Sessions {
    /// The reserved session holding the token's login state.
    login: Option<Session>,
    /// Signing sessions not in use.
    idle: Vec<Session>,
    /// Signing sessions open (idle + leased).
    signers: usize,
    /// Most signing sessions ever open at once.
    peak_signers: usize,
}

/// What the pool holds now (for logs, doctor and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// `auth.cert.pkcs11.maxSessions`.
    pub max_sessions: u32,
    /// Sessions open now, the login session included.
    pub open: usize,
    /// Most sessions ever open at once, the login session included.
    pub peak: usize,
}

pub struct Pool {
    // Declared before `context`: sessions close before the module finalizes.
    sessions: Mutex<Sessions>,
    freed: Condvar,
    slot: Slot,
    module: PathBuf,
    token_label: String,
    max_sessions: u32,
    context: Pkcs11,
}

/// The process's pool (one module initialization per process).
static SHARED: OnceLock<Mutex<Option<Arc<Pool>>>> = OnceLock::new();

impl Pool {
    /// The process's pool for `src`, opened on first use.
    pub fn shared(src: &Pkcs11Source) -> Result<Arc<Pool>, AuthError> {
        let mut shared = lock(SHARED.get_or_init(Mutex::default));
        if let Some(pool) = shared.as_ref()
            && pool.module == src.module_path
            && pool.token_label == src.token_label
            && pool.max_sessions == src.max_sessions
        {
            return Ok(pool.clone());
        }
        // A pool for other settings is released first: a module initializes
        // once per process.
        *shared = None;
        let pool = Arc::new(Self::open(src)?);
        *shared = Some(pool.clone());
        Ok(pool)
    }

    /// Drops `pool` from the process (a token failure): the next login opens
    /// the module again. Leases in flight keep it alive until they end.
    pub fn evict(pool: &Arc<Pool>) {
        let mut shared = lock(SHARED.get_or_init(Mutex::default));
        if shared.as_ref().is_some_and(|p| Arc::ptr_eq(p, pool)) {
            *shared = None;
        }
    }

    fn open(src: &Pkcs11Source) -> Result<Self, AuthError> {
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
        tracing::info!(
            message = "auth.pkcs11.pool",
            max_sessions = src.max_sessions,
            signing_sessions = src.max_sessions.saturating_sub(1),
        );
        Ok(Self {
            sessions: Mutex::new(Sessions {
                login: None,
                idle: Vec::new(),
                signers: 0,
                peak_signers: 0,
            }),
            freed: Condvar::new(),
            slot,
            module: src.module_path.clone(),
            token_label: src.token_label.clone(),
            max_sessions: src.max_sessions,
            context,
        })
    }

    pub fn stats(&self) -> PoolStats {
        let s = lock(&self.sessions);
        let login = usize::from(s.login.is_some());
        PoolStats {
            max_sessions: self.max_sessions,
            open: login + s.signers,
            peak: 1 + s.peak_signers,
        }
    }

    /// Logs the token in (once per pool, with the PIN read now) and finds
    /// the private key labelled `key_label`.
    pub fn login_and_find(&self, src: &Pkcs11Source) -> Result<ObjectHandle, AuthError> {
        let mut s = lock(&self.sessions);
        if s.login.is_none() {
            let session = self
                .context
                .open_ro_session(self.slot)
                .map_err(|e| p11("opening the login session", e))?;
            let pin = read_secret_file(&src.pin_file)?;
            match session.login(UserType::User, Some(&AuthPin::new(pin.expose_secret().into()))) {
                Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => {
                    return Err(AuthError::Pkcs11(format!(
                        "login to token {:?} failed (wrong PIN?): {e}",
                        src.token_label
                    )));
                }
            }
            s.login = Some(session);
        }
        let Some(session) = s.login.as_ref() else {
            return Err(AuthError::Pkcs11("the login session is gone".into()));
        };
        session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(src.key_label.as_bytes().to_vec()),
            ])
            .map_err(|e| p11("finding the key", e))?
            .first()
            .copied()
            .ok_or_else(|| {
                AuthError::Pkcs11(format!(
                    "no private key labelled {:?} (auth.cert.pkcs11.keyLabel)",
                    src.key_label
                ))
            })
    }

    /// A signing session, waiting up to `wait` for one to be free.
    pub fn lease(self: &Arc<Self>, wait: Duration) -> Result<Lease, AuthError> {
        let signers_max = (self.max_sessions as usize).saturating_sub(1).max(1);
        let deadline = Instant::now() + wait;
        let mut s = lock(&self.sessions);
        loop {
            if let Some(session) = s.idle.pop() {
                return Ok(self.leased(session));
            }
            if s.signers < signers_max {
                s.signers += 1;
                s.peak_signers = s.peak_signers.max(s.signers);
                drop(s);
                return match self.context.open_ro_session(self.slot) {
                    Ok(session) => Ok(self.leased(session)),
                    Err(e) => {
                        self.closed_one();
                        Err(p11("opening a signing session", e))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(AuthError::Pkcs11(format!(
                    "all {signers_max} signing sessions of the token are busy after {wait:?} \
                     (auth.cert.pkcs11.maxSessions: {}, one of them holds the login)",
                    self.max_sessions
                )));
            }
            s = self
                .freed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    fn leased(self: &Arc<Self>, session: Session) -> Lease {
        Lease {
            pool: self.clone(),
            session: Some(session),
            failed: false,
        }
    }

    fn closed_one(&self) {
        let mut s = lock(&self.sessions);
        s.signers = s.signers.saturating_sub(1);
        drop(s);
        self.freed.notify_one();
    }
}

/// One signing session, returned to the pool on drop (closed instead if a
/// call on it failed).
pub struct Lease {
    pool: Arc<Pool>,
    session: Option<Session>,
    failed: bool,
}

impl Lease {
    fn sign(&mut self, mechanism: &Mechanism<'_>, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let Some(session) = self.session.as_ref() else {
            return Err(AuthError::Pkcs11("the signing session is gone".into()));
        };
        session.sign(mechanism, key, data).map_err(|e| {
            self.failed = true;
            p11("signing", e)
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if self.failed {
            drop(session);
            self.pool.closed_one();
            // The token may be gone: the next login opens it afresh.
            Pool::evict(&self.pool);
        } else {
            lock(&self.pool.sessions).idle.push(session);
            self.pool.freed.notify_one();
        }
    }
}

/// The kind of key the certificate names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    P256,
    Rsa,
}

impl KeyKind {
    /// The TLS signature schemes this key signs, in order of preference.
    pub fn schemes(self) -> &'static [SignatureScheme] {
        match self {
            Self::P256 => &[SignatureScheme::ECDSA_NISTP256_SHA256],
            Self::Rsa => &[SignatureScheme::RSA_PSS_SHA256, SignatureScheme::RSA_PKCS1_SHA256],
        }
    }
}

/// A private key inside the token, signing through the pool.
pub struct TokenKey {
    pub pool: Arc<Pool>,
    pub handle: ObjectHandle,
    pub kind: KeyKind,
    /// How long a signature may wait for a free session.
    pub wait: Duration,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pkcs11Key")
    }
}

impl TokenKey {
    /// The signature of `message` under `scheme`, encoded as TLS expects.
    pub fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        let mut lease = self.pool.lease(self.wait)?;
        match scheme {
            SignatureScheme::ECDSA_NISTP256_SHA256 => {
                let digest = Sha256::digest(message);
                let raw = lease.sign(&Mechanism::Ecdsa, self.handle, &digest)?;
                let sig = p256::ecdsa::Signature::from_slice(&raw)
                    .map_err(|_| AuthError::Pkcs11(format!("token returned a {}-byte ECDSA signature", raw.len())))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            SignatureScheme::RSA_PSS_SHA256 => {
                let params = PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32.into(),
                };
                lease.sign(&Mechanism::Sha256RsaPkcsPss(params), self.handle, message)
            }
            SignatureScheme::RSA_PKCS1_SHA256 => lease.sign(&Mechanism::Sha256RsaPkcs, self.handle, message),
            other => Err(AuthError::Pkcs11(format!("unsupported signature scheme {other:?}"))),
        }
    }
}
