//! A key snapshot: one Transit version of the configured key, bound to the
//! identity scope and the version's creation second.

use crate::identity::IdentityScope;
use crate::keyid::{KeyId, KeyIdError};

/// (identity scope, Transit version N, creation Unix second of N) and the
/// key_id derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySnapshot {
    pub version: u64,
    pub created_unix: i64,
    pub key_id: KeyId,
}

impl KeySnapshot {
    pub fn new(scope: &IdentityScope, version: u64, created_unix: i64) -> Result<Self, KeyIdError> {
        Ok(Self {
            version,
            created_unix,
            key_id: KeyId::derive(scope, version, created_unix)?,
        })
    }
}
