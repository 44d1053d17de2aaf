//! Whether a KMS request is admissible, and what goes to Transit.
//!
//! Decrypt is decided in two steps because the registry lookup between them
//! may need I/O (unknown-key_id discovery): [`decrypt_key_id`] checks the
//! sizes and the key_id form; the shell finds the key snapshot that key_id
//! names (or refuses with [`key_id_unknown`] / [`key_id_removed`]); then
//! [`decrypt_call`] checks the annotations and the ciphertext's Transit
//! version against that snapshot and rebuilds the AAD from the snapshot,
//! never from the annotations. Encrypt: [`encrypt_call`] before Transit,
//! [`encrypt_answer`] after it. Nothing here calls out; each refusal is a
//! [`KmsError`] whose class decides the gRPC code and the metric label.

use std::collections::{BTreeMap, HashMap};

use crate::aad;
use crate::annotations;
use crate::errors::{ErrorClass, KmsError};
use crate::identity::IdentityScope;
use crate::keyid::KeyId;
use crate::limits;
use crate::snapshot::KeySnapshot;
use crate::transit_wire::ciphertext_version;

pub mod queue;

/// A Decrypt request as kube-apiserver sends it.
#[derive(Debug, Clone, Copy)]
pub struct DecryptRequest<'a> {
    pub ciphertext: &'a [u8],
    pub uid: &'a str,
    pub key_id: &'a str,
    pub annotations: &'a HashMap<String, Vec<u8>>,
}

/// Sizes first, then the key_id form: `protocol_limit` or `key_id_malformed`.
pub fn decrypt_key_id(req: &DecryptRequest<'_>) -> Result<KeyId, KmsError> {
    limits::check_decrypt_request(req.ciphertext, req.uid, req.key_id, req.annotations)
        .map_err(|e| KmsError::new(ErrorClass::ProtocolLimit, e.to_string()))?;
    KeyId::parse(req.key_id).map_err(|e| KmsError::new(ErrorClass::KeyIdMalformed, e.to_string()))
}

/// A well-formed key_id that names no decryptable snapshot of this node.
pub fn key_id_unknown() -> KmsError {
    KmsError::new(
        ErrorClass::KeyIdUnknown,
        "key_id is not in the key registry (identity-bearing configuration changed, or registry state lost or rolled back?)",
    )
}

/// A key_id whose record an operator removed with `retire-versions`: it
/// never decrypts and is never rediscovered.
pub fn key_id_removed(transit_version: u64) -> KmsError {
    KmsError::new(
        ErrorClass::KeyIdUnknown,
        format!(
            "key_id names Transit version {transit_version}, which was removed from this node's key registry with retire-versions; it no longer decrypts here (restore-versions brings it back while Transit can still decrypt it)"
        ),
    )
}

/// Unknown-key_id discovery could not read the key metadata.
pub fn key_metadata_refresh_failed(cause: impl std::fmt::Display) -> KmsError {
    KmsError::new(
        ErrorClass::KeyMetadataRefreshFailed,
        format!("key_id is not in the key registry and the key metadata read failed: {cause}"),
    )
}

/// Unknown-key_id discovery verified `transit_version` but could not record
/// it: a discovered version is written before it decrypts (docs/rotation.md),
/// so the request fails as retryable instead of `key_id_unknown`.
pub fn state_unavailable(transit_version: u64, cause: impl std::fmt::Display) -> KmsError {
    KmsError::new(
        ErrorClass::StateUnavailable,
        format!(
            "key_id names Transit version {transit_version}, which is verified but could not be recorded in the key registry ({cause}); it decrypts once the state directory accepts writes"
        ),
    )
}

/// The Transit decrypt call an admitted request makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptCall<'a> {
    /// The Transit ciphertext string (`vault:v<N>:...`) of the snapshot's version.
    pub ciphertext: &'a str,
    /// The canonical AAD of the snapshot, sent as `associated_data`.
    pub aad: Vec<u8>,
}

/// The annotations and the ciphertext's version against the snapshot the
/// key_id named: `aad_missing`, `aad_mismatch` or `annotation_invalid`.
pub fn decrypt_call<'a>(
    req: &DecryptRequest<'a>,
    scope: &IdentityScope,
    snapshot: &KeySnapshot,
) -> Result<DecryptCall<'a>, KmsError> {
    annotations::verify(req.annotations, scope, snapshot).map_err(|e| KmsError::new(e.class(), e.to_string()))?;
    let ciphertext = std::str::from_utf8(req.ciphertext)
        .ok()
        .filter(|text| ciphertext_version(text) == Some(snapshot.version))
        .ok_or_else(|| {
            KmsError::new(
                ErrorClass::AadMismatch,
                format!("ciphertext is not a Transit version {} ciphertext", snapshot.version),
            )
        })?;
    Ok(DecryptCall {
        ciphertext,
        aad: aad::canonical(scope, snapshot),
    })
}

/// Why Encrypt is refused while the published status is not healthy.
pub fn encrypt_refused(stale: bool, reason_codes: &[&str]) -> KmsError {
    let class = if stale {
        ErrorClass::StatusStale
    } else {
        ErrorClass::StatusUnhealthy
    };
    KmsError::new(
        class,
        format!(
            "provider is not healthy ({}); refusing to encrypt",
            reason_codes.join(", ")
        ),
    )
}

/// The Transit encrypt call: the active snapshot's AAD and its explicit version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptCall {
    pub aad: Vec<u8>,
    pub key_version: u64,
}

/// The Encrypt request's sizes (`protocol_limit`), before anything else.
pub fn check_encrypt_request(plaintext: &[u8], uid: &str) -> Result<(), KmsError> {
    limits::check_encrypt_request(plaintext, uid).map_err(|e| KmsError::new(ErrorClass::ProtocolLimit, e.to_string()))
}

/// What Transit is asked to encrypt with: always the explicit version of
/// the active snapshot, never "latest".
pub fn encrypt_call(scope: &IdentityScope, active: &KeySnapshot) -> EncryptCall {
    EncryptCall {
        aad: aad::canonical(scope, active),
        key_version: active.version,
    }
}

/// Refuses a plaintext whose Transit ciphertext under the active version
/// would break kube-apiserver's 1 KiB limit (`protocol_limit`), so Transit
/// is not called for an answer that would be discarded.
pub fn check_encrypt_fits(plaintext: &[u8], active: &KeySnapshot) -> Result<(), KmsError> {
    limits::check_ciphertext_fits(active.version, plaintext.len())
        .map_err(|e| KmsError::new(ErrorClass::ProtocolLimit, e.to_string()))
}

/// What Encrypt returns to kube-apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptAnswer {
    pub ciphertext: Vec<u8>,
    pub key_id: KeyId,
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// The answer for a Transit ciphertext of the active snapshot, refused
/// (`invalid_response`) when kube-apiserver would discard it.
pub fn encrypt_answer(
    ciphertext: String,
    scope: &IdentityScope,
    active: &KeySnapshot,
    plugin_version: &str,
) -> Result<EncryptAnswer, KmsError> {
    let annotations = annotations::build(scope, active, plugin_version);
    limits::check_encrypt_response(ciphertext.as_bytes(), active.key_id.as_str(), &annotations).map_err(|e| {
        KmsError::new(
            ErrorClass::InvalidResponse,
            format!("encrypt response would break the KMS contract: {e}"),
        )
    })?;
    Ok(EncryptAnswer {
        ciphertext: ciphertext.into_bytes(),
        key_id: active.key_id.clone(),
        annotations,
    })
}

#[cfg(test)]
mod tests;
