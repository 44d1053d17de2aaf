//! Health reasons: what `/ready`, `/status`, Status and the logs say is
//! wrong, as a stable code ([`ReasonCode`]) and a one-line detail without
//! secrets. The codes are an interface (alerts, runbooks and automation
//! match on them): `as_str` is what every document and log line carries,
//! and [`ReasonCode::ALL`] is documented in docs/operations.md.

use crate::errors::ErrorClass;

/// Every reason the provider reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// Transit's `latest_version` went below a retained version.
    VersionRollback,
    /// A retained version's creation second, the OpenBao cluster or the
    /// mount changed under the pinned identity.
    IdentityDrift,
    /// Metadata is missing or inconsistent for a version the registry needs.
    MetadataUnverified,
    /// `min_encryption_version` is above the active version.
    EncryptionBlocked,
    /// The published snapshot is older than `status.statusMaxStaleness`.
    StatusStale,
    /// Login to OpenBao failed.
    AuthFailed,
    /// Reading the Transit key metadata failed.
    MetadataReadFailed,
    /// The deep probe (encrypt and decrypt with the active version) failed.
    DeepProbeFailed,
    /// The Transit key's profile is unsafe.
    ProfileInvalid,
    /// The Transit mount allows implicit key creation.
    UpsertAllowed,
    /// The mount's upsert setting could not be read.
    UpsertCheckFailed,
    /// The registry could not be saved.
    StateSaveFailed,
    /// The state directory refuses writes (full, read-only, immutable, out
    /// of descriptors): a rotation observation or a discovered version
    /// could not be recorded. The registry on disk is intact.
    StateUnavailable,
    /// A probe request got no answer from a serving OpenBao (sealed,
    /// unreachable, TLS, DNS, timeout, rate-limited): nothing about the
    /// login or the key was learned.
    ProbeFailed,
    /// The deep probe's calls were answered, but wrongly: the round trip
    /// returned other bytes, the ciphertext broke the 1 KiB limit or named
    /// another version, or Transit refused its own fresh ciphertext.
    DeepProbeInvalid,
    /// The KMS socket is not serving.
    SocketUnavailable,
}

impl ReasonCode {
    pub const ALL: &'static [ReasonCode] = &[
        Self::VersionRollback,
        Self::IdentityDrift,
        Self::MetadataUnverified,
        Self::EncryptionBlocked,
        Self::StatusStale,
        Self::AuthFailed,
        Self::MetadataReadFailed,
        Self::DeepProbeFailed,
        Self::ProfileInvalid,
        Self::UpsertAllowed,
        Self::UpsertCheckFailed,
        Self::StateSaveFailed,
        Self::StateUnavailable,
        Self::ProbeFailed,
        Self::DeepProbeInvalid,
        Self::SocketUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::VersionRollback => "version_rollback",
            Self::IdentityDrift => "identity_drift",
            Self::MetadataUnverified => "metadata_unverified",
            Self::EncryptionBlocked => "encryption_blocked",
            Self::StatusStale => "status_stale",
            Self::AuthFailed => "auth_failed",
            Self::MetadataReadFailed => "metadata_read_failed",
            Self::DeepProbeFailed => "deep_probe_failed",
            Self::ProfileInvalid => "profile_invalid",
            Self::UpsertAllowed => "upsert_allowed",
            Self::UpsertCheckFailed => "upsert_check_failed",
            Self::StateSaveFailed => "state_save_failed",
            Self::StateUnavailable => "state_unavailable",
            Self::ProbeFailed => "probe_failed",
            Self::DeepProbeInvalid => "deep_probe_invalid",
            Self::SocketUnavailable => "socket_unavailable",
        }
    }

    /// The reason for a probe request (login or read) that failed with
    /// `class`: `probe_failed` when OpenBao did not serve, so the login or
    /// the key was never judged; else `otherwise` (`auth_failed`,
    /// `metadata_read_failed`).
    pub fn of_probe_failure(class: ErrorClass, otherwise: ReasonCode) -> ReasonCode {
        match class {
            ErrorClass::OpenBaoUnavailable
            | ErrorClass::OpenBaoTlsFailed
            | ErrorClass::OpenBaoDnsFailed
            | ErrorClass::OpenBaoConnectionFailed
            | ErrorClass::OpenBaoSealed
            | ErrorClass::OpenBaoRateLimited
            | ErrorClass::Timeout => Self::ProbeFailed,
            _ => otherwise,
        }
    }

    /// The reason for a failed deep probe: `deep_probe_invalid` when
    /// Transit answered wrongly, else `deep_probe_failed`.
    pub fn of_deep_probe_failure(class: ErrorClass) -> ReasonCode {
        match class {
            ErrorClass::InvalidResponse | ErrorClass::IntegrityFailed => Self::DeepProbeInvalid,
            _ => Self::DeepProbeFailed,
        }
    }

    /// The code of a wire string, for readers of `/ready` and `/status`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health reason: Transit's `latest_version` went below a retained version.
pub const VERSION_ROLLBACK: ReasonCode = ReasonCode::VersionRollback;
/// Health reason: a retained version's creation second changed.
pub const IDENTITY_DRIFT: ReasonCode = ReasonCode::IdentityDrift;
/// Health reason: metadata is missing or inconsistent for a version the registry needs.
pub const METADATA_UNVERIFIED: ReasonCode = ReasonCode::MetadataUnverified;
/// Health reason: `min_encryption_version` is above the active version.
pub const ENCRYPTION_BLOCKED: ReasonCode = ReasonCode::EncryptionBlocked;

/// A health reason: a stable code and a one-line detail without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: ReasonCode,
    pub detail: String,
}

impl Reason {
    pub fn new(code: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// A probe request (login or read) that failed with `class`: code by
    /// [`ReasonCode::of_probe_failure`]; a `probe_failed` detail leads with
    /// the class (`probe_failed: openbao_sealed: login failed: …`).
    pub fn probe_failure(class: ErrorClass, otherwise: ReasonCode, detail: impl std::fmt::Display) -> Self {
        let code = ReasonCode::of_probe_failure(class, otherwise);
        if code == ReasonCode::ProbeFailed {
            Self::new(code, format!("{}: {detail}", class.as_str()))
        } else {
            Self::new(code, detail.to_string())
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The wire strings are a contract: every code round-trips, none repeats.
    #[test]
    fn codes_are_unique_and_parse_back() {
        let mut seen = HashSet::new();
        for c in ReasonCode::ALL {
            assert!(seen.insert(c.as_str()), "{c}");
            assert_eq!(ReasonCode::parse(c.as_str()), Some(*c));
        }
        assert_eq!(ReasonCode::parse("nope"), None);
        assert_eq!(
            ReasonCode::of_probe_failure(ErrorClass::OpenBaoSealed, ReasonCode::AuthFailed),
            ReasonCode::ProbeFailed
        );
        assert_eq!(
            ReasonCode::of_probe_failure(ErrorClass::AuthFailed, ReasonCode::AuthFailed),
            ReasonCode::AuthFailed
        );
        assert_eq!(
            ReasonCode::of_probe_failure(ErrorClass::TransitPolicyDenied, ReasonCode::MetadataReadFailed),
            ReasonCode::MetadataReadFailed
        );
        assert_eq!(
            Reason::probe_failure(ErrorClass::OpenBaoSealed, ReasonCode::AuthFailed, "login failed").to_string(),
            "probe_failed: openbao_sealed: login failed"
        );
        assert_eq!(
            ReasonCode::of_deep_probe_failure(ErrorClass::InvalidResponse),
            ReasonCode::DeepProbeInvalid
        );
        assert_eq!(
            ReasonCode::of_deep_probe_failure(ErrorClass::OpenBaoSealed),
            ReasonCode::DeepProbeFailed
        );
        assert_eq!(
            Reason::new(ReasonCode::StatusStale, "snapshot is 40s old").to_string(),
            "status_stale: snapshot is 40s old"
        );
    }
}
