//! The seam between the provider's runtime and OpenBao: [`Transit`], the
//! calls the runtime makes (key metadata, the identity facts it pins, the
//! upsert setting, encrypt, decrypt, and the token it carries), and
//! [`OpenBaoTransit`], which makes them over HTTPS with the configured auth
//! method.
//!
//! The runtime decides what to do with tokens (drop one OpenBao rejected
//! with 403 and retry once with a fresh one; renew ahead of expiry before
//! each probe); this trait only hands them out, so in-process component
//! tests can drive every event order (rotation, discovery, re-login) with
//! a scripted implementation and paused time.

use std::time::Duration;

use async_trait::async_trait;
use bao_kms_core::transit::KeyMetadata;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::auth::Auth;
pub use crate::auth::AuthError;
use crate::openbao::OpenBao;
pub use crate::openbao::{BaoError, MountIdentity, Op};

/// What the runtime asks of OpenBao.
#[async_trait]
pub trait Transit: Send + Sync {
    /// The token to use now, logging in first when there is none.
    async fn token(&self) -> Result<SecretString, AuthError>;
    /// Drops `rejected` (OpenBao answered 403) so the next [`Transit::token`]
    /// logs in again.
    async fn invalidate(&self, rejected: &SecretString);
    /// Renews or replaces the token when its lease nears its end; keeps a
    /// still-valid token when that fails. Runs before every probe.
    async fn maintain_token(&self);

    /// The configured Transit key's metadata.
    async fn key_metadata(&self, token: &SecretString) -> Result<KeyMetadata, BaoError>;
    /// OpenBao's `cluster_id` (unauthenticated).
    async fn cluster_id(&self) -> Result<String, BaoError>;
    /// The Transit mount's accessor and uuid.
    async fn mount_identity(&self, token: &SecretString) -> Result<MountIdentity, BaoError>;
    /// Whether the mount refuses implicit key creation (`disable_upsert`).
    async fn disable_upsert(&self, token: &SecretString) -> Result<bool, BaoError>;
    /// Transit encrypt with the explicit `key_version`: the ciphertext string.
    async fn encrypt(
        &self,
        token: &SecretString,
        plaintext: &[u8],
        aad: &[u8],
        key_version: u64,
    ) -> Result<String, BaoError>;
    /// Transit decrypt of a `vault:v<N>:` ciphertext with `aad`.
    async fn decrypt(&self, token: &SecretString, ciphertext: &str, aad: &[u8])
    -> Result<Zeroizing<Vec<u8>>, BaoError>;
    /// Transit decrypt of several ciphertexts of the configured key in one
    /// `batch_input` call, each with its own AAD: per item, the plaintext or
    /// `None` when Transit refused that item. An implementation without
    /// batching refuses the whole batch (`transit_bad_request`); the caller
    /// then makes single calls.
    async fn decrypt_batch(
        &self,
        _token: &SecretString,
        _items: &[(&str, &[u8])],
    ) -> Result<Vec<Option<Zeroizing<Vec<u8>>>>, BaoError> {
        Err(BaoError {
            class: bao_kms_core::errors::ErrorClass::TransitBadRequest,
            op: Op::TransitDecryptBatch,
            http_status: None,
            message: "batch decrypt not supported".into(),
        })
    }
}

/// [`Transit`] over HTTPS with the configured auth method.
pub struct OpenBaoTransit {
    bao: OpenBao,
    auth: Auth,
    /// `auth.loginBeforeTokenExpiry`
    refresh_window: Duration,
    /// `auth.tokenRenewalIncrement`
    renewal_increment: Duration,
}

impl OpenBaoTransit {
    pub fn new(bao: OpenBao, auth: Auth, refresh_window: Duration, renewal_increment: Duration) -> Self {
        Self {
            bao,
            auth,
            refresh_window,
            renewal_increment,
        }
    }
}

#[async_trait]
impl Transit for OpenBaoTransit {
    async fn token(&self) -> Result<SecretString, AuthError> {
        self.auth.token().await
    }

    async fn invalidate(&self, rejected: &SecretString) {
        self.auth.invalidate(rejected).await;
    }

    async fn maintain_token(&self) {
        self.auth.maintain(self.refresh_window, self.renewal_increment).await;
    }

    async fn key_metadata(&self, token: &SecretString) -> Result<KeyMetadata, BaoError> {
        self.bao.key_metadata(token.expose_secret()).await
    }

    async fn cluster_id(&self) -> Result<String, BaoError> {
        self.bao.cluster_id().await
    }

    async fn mount_identity(&self, token: &SecretString) -> Result<MountIdentity, BaoError> {
        self.bao.mount_identity(token.expose_secret()).await
    }

    async fn disable_upsert(&self, token: &SecretString) -> Result<bool, BaoError> {
        self.bao.disable_upsert(token.expose_secret()).await
    }

    async fn encrypt(
        &self,
        token: &SecretString,
        plaintext: &[u8],
        aad: &[u8],
        key_version: u64,
    ) -> Result<String, BaoError> {
        self.bao
            .encrypt(token.expose_secret(), plaintext, aad, key_version)
            .await
    }

    async fn decrypt(
        &self,
        token: &SecretString,
        ciphertext: &str,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BaoError> {
        self.bao.decrypt(token.expose_secret(), ciphertext, aad).await
    }

    async fn decrypt_batch(
        &self,
        token: &SecretString,
        items: &[(&str, &[u8])],
    ) -> Result<Vec<Option<Zeroizing<Vec<u8>>>>, BaoError> {
        self.bao.decrypt_batch(token.expose_secret(), items).await
    }
}
