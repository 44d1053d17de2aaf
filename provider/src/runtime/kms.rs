//! The KMS operations. Admission (sizes, key_id, annotations, the
//! ciphertext's version, the AAD) is decided in `bao_kms_core::admission`;
//! this file finds the snapshot, counts refusals and makes the one Transit
//! call.

use std::collections::HashMap;

use bao_kms_core::admission::{self, DecryptRequest, EncryptAnswer};
use bao_kms_core::errors::{ErrorClass, KmsError};
use bao_kms_core::identity::IdentityScope;
use bao_kms_core::limits;
use bao_kms_core::snapshot::KeySnapshot;
use rand::RngCore;
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::Engine;
use super::call::bao_to_kms;
use crate::metrics::Reason as ReasonLabel;
use crate::transit::Transit;

impl Engine {
    /// KMS Encrypt: only with a healthy, active snapshot; explicit key_version.
    pub async fn encrypt(&self, plaintext: &[u8], uid: &str) -> Result<EncryptAnswer, KmsError> {
        admission::check_encrypt_request(plaintext, uid)?;
        let view = self.view();
        if !view.healthy() {
            let codes: Vec<&str> = view.reasons.iter().map(|r| r.code.as_str()).collect();
            return Err(admission::encrypt_refused(view.stale, &codes));
        }
        let active = &view.published.active;
        admission::check_encrypt_fits(plaintext, active)?;
        let call = admission::encrypt_call(&self.scope, active);
        let ciphertext = self
            .with_token(|t| {
                let call = &call;
                async move { self.transit.encrypt(&t, plaintext, &call.aad, call.key_version).await }
            })
            .await?;
        admission::encrypt_answer(ciphertext, &self.scope, active, &self.plugin_version)
    }

    /// KMS Decrypt: every check that needs no OpenBao first, then Transit.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        uid: &str,
        key_id: &str,
        annotations: &HashMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let req = DecryptRequest {
            ciphertext,
            uid,
            key_id,
            annotations,
        };
        let parsed = admission::decrypt_key_id(&req).map_err(|e| self.counted(e))?;
        let known = self.published.borrow().decryptable.get(parsed.as_str()).cloned();
        let snap = match known {
            Some(snap) => snap,
            None => self.discover(&parsed).await.map_err(|e| self.counted(e))?,
        };
        let call = admission::decrypt_call(&req, &self.scope, &snap).map_err(|e| self.counted(e))?;
        // Only requests that passed every check above reach here, so callers
        // that share a result asked for the same key_id and ciphertext.
        let key = (snap.key_id.as_str().to_owned(), ciphertext.to_vec());
        let batcher = &self.batcher;
        self.decrypts
            .run(key, || {
                batcher.decrypt(snap.key_id.as_str(), call.ciphertext, call.aad.clone())
            })
            .await
    }

    /// Counts a refused Decrypt in the metric its class belongs to.
    fn counted(&self, e: KmsError) -> KmsError {
        let reason = ReasonLabel {
            reason: e.class.as_str(),
        };
        match e.class {
            ErrorClass::KeyIdMalformed
            | ErrorClass::KeyIdUnknown
            | ErrorClass::KeyMetadataRefreshFailed
            | ErrorClass::StateUnavailable => {
                self.metrics.decrypt_key_id_errors.get_or_create(&reason).inc();
            }
            ErrorClass::AadMissing | ErrorClass::AadMismatch | ErrorClass::AnnotationInvalid => {
                self.metrics.aad_validation_errors.get_or_create(&reason).inc();
            }
            _ => {}
        }
        e
    }
}

/// Encrypts and decrypts 32 random bytes with `snap`'s version and AAD;
/// the ciphertext must fit kube-apiserver's 1 KiB limit. The runtime's
/// probe and `doctor`'s `transit.probe` both run this.
pub async fn deep_probe(
    transit: &dyn Transit,
    scope: &IdentityScope,
    token: &SecretString,
    snap: &KeySnapshot,
) -> Result<(), KmsError> {
    let mut sample = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(sample.as_mut());
    let call = admission::encrypt_call(scope, snap);
    let ciphertext = transit
        .encrypt(token, sample.as_ref(), &call.aad, call.key_version)
        .await
        .map_err(bao_to_kms)?;
    if ciphertext.len() > limits::MAX_CIPHERTEXT_BYTES {
        return Err(KmsError::new(
            ErrorClass::InvalidResponse,
            "deep probe ciphertext exceeds 1024 bytes",
        ));
    }
    let plain = transit
        .decrypt(token, &ciphertext, &call.aad)
        .await
        .map_err(bao_to_kms)?;
    if plain.as_slice() != sample.as_ref() {
        return Err(KmsError::new(
            ErrorClass::InvalidResponse,
            "deep probe round trip returned different bytes",
        ));
    }
    Ok(())
}
