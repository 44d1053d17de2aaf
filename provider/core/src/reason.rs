//! Health reasons: what `/ready`, `/status`, Status and the logs say is
//! wrong, as a stable code and a one-line detail without secrets. The codes
//! here are the ones the key registry's metadata check and the rotation
//! machine produce.

/// Health reason: Transit's `latest_version` went below a retained version.
pub const VERSION_ROLLBACK: &str = "version_rollback";
/// Health reason: a retained version's creation second changed.
pub const IDENTITY_DRIFT: &str = "identity_drift";
/// Health reason: metadata is missing or inconsistent for a version the registry needs.
pub const METADATA_UNVERIFIED: &str = "metadata_unverified";
/// Health reason: `min_encryption_version` is above the active version.
pub const ENCRYPTION_BLOCKED: &str = "encryption_blocked";

/// A health reason: a stable code and a one-line detail without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: &'static str,
    pub detail: String,
}

impl Reason {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}
