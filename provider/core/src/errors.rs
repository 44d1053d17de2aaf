//! Error classes (`error_class`, docs/operations.md) and the one mapping from
//! a class to the KMS gRPC status code. The provider maps [`KmsCode`] to
//! tonic's code; metric labels and log fields use [`ErrorClass::as_str`].

/// Every failure the provider reports is sorted into one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    OpenBaoUnavailable,
    OpenBaoTlsFailed,
    OpenBaoDnsFailed,
    OpenBaoConnectionFailed,
    OpenBaoSealed,
    OpenBaoRateLimited,
    AuthFailed,
    TransitKeyMissing,
    TransitPolicyDenied,
    TransitBadRequest,
    /// Transit refuses the ciphertext's key version: below the key's
    /// `min_decryption_version`, or above its latest version (the key was
    /// deleted and created again). A key state to fix in OpenBao, not a bad
    /// request.
    TransitKeyVersionRejected,
    IntegrityFailed,
    KeyIdUnknown,
    KeyIdMalformed,
    KeyMetadataRefreshFailed,
    /// Unknown-key_id discovery verified a version but could not record it.
    StateUnavailable,
    AadMissing,
    AadMismatch,
    AnnotationInvalid,
    StatusStale,
    StatusUnhealthy,
    ProtocolLimit,
    ConcurrencyLimit,
    QueueDeadline,
    Timeout,
    Canceled,
    InvalidResponse,
    /// A request handler panicked; the panic was caught and the call failed.
    Panic,
    Unknown,
}

/// A KMS request failure: a class (gRPC code, metric label) and a message
/// kube-apiserver may show in its logs and `/healthz`; never secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KmsError {
    pub class: ErrorClass,
    pub message: String,
}

impl KmsError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

/// gRPC status codes the KMS service returns (a subset of gRPC's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsCode {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    Unavailable,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    DeadlineExceeded,
    Cancelled,
    Internal,
}

impl KmsCode {
    /// The `status` label of `openbao_kms_grpc_requests_total` (`ok` is
    /// the label of a success, which has no code here).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::FailedPrecondition => "failed_precondition",
            Self::Unavailable => "unavailable",
            Self::PermissionDenied => "permission_denied",
            Self::Unauthenticated => "unauthenticated",
            Self::ResourceExhausted => "resource_exhausted",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Cancelled => "canceled",
            Self::Internal => "internal",
        }
    }
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenBaoUnavailable => "openbao_unavailable",
            Self::OpenBaoTlsFailed => "openbao_tls_failed",
            Self::OpenBaoDnsFailed => "openbao_dns_failed",
            Self::OpenBaoConnectionFailed => "openbao_connection_failed",
            Self::OpenBaoSealed => "openbao_sealed",
            Self::OpenBaoRateLimited => "openbao_rate_limited",
            Self::AuthFailed => "auth_failed",
            Self::TransitKeyMissing => "transit_key_missing",
            Self::TransitPolicyDenied => "transit_policy_denied",
            Self::TransitBadRequest => "transit_bad_request",
            Self::TransitKeyVersionRejected => "transit_key_version_rejected",
            Self::IntegrityFailed => "integrity_failed",
            Self::KeyIdUnknown => "key_id_unknown",
            Self::KeyIdMalformed => "key_id_malformed",
            Self::KeyMetadataRefreshFailed => "key_metadata_refresh_failed",
            Self::StateUnavailable => "state_unavailable",
            Self::AadMissing => "aad_missing",
            Self::AadMismatch => "aad_mismatch",
            Self::AnnotationInvalid => "annotation_invalid",
            Self::StatusStale => "status_stale",
            Self::StatusUnhealthy => "status_unhealthy",
            Self::ProtocolLimit => "protocol_limit",
            Self::ConcurrencyLimit => "concurrency_limit",
            Self::QueueDeadline => "queue_deadline",
            Self::Timeout => "timeout",
            Self::Canceled => "canceled",
            Self::InvalidResponse => "invalid_response",
            Self::Panic => "panic",
            Self::Unknown => "unknown",
        }
    }

    /// The gRPC code kube-apiserver sees for this class.
    pub fn code(self) -> KmsCode {
        match self {
            Self::OpenBaoUnavailable
            | Self::OpenBaoTlsFailed
            | Self::OpenBaoDnsFailed
            | Self::OpenBaoConnectionFailed
            | Self::OpenBaoSealed
            | Self::OpenBaoRateLimited
            | Self::KeyMetadataRefreshFailed
            | Self::StateUnavailable
            | Self::TransitKeyMissing => KmsCode::Unavailable,
            Self::AuthFailed => KmsCode::Unauthenticated,
            Self::TransitPolicyDenied => KmsCode::PermissionDenied,
            Self::TransitBadRequest
            | Self::IntegrityFailed
            | Self::KeyIdMalformed
            | Self::AadMissing
            | Self::AadMismatch
            | Self::AnnotationInvalid
            | Self::ProtocolLimit => KmsCode::InvalidArgument,
            Self::KeyIdUnknown => KmsCode::NotFound,
            Self::StatusStale | Self::StatusUnhealthy | Self::TransitKeyVersionRejected => KmsCode::FailedPrecondition,
            Self::ConcurrencyLimit => KmsCode::ResourceExhausted,
            Self::Timeout | Self::QueueDeadline => KmsCode::DeadlineExceeded,
            Self::Canceled => KmsCode::Cancelled,
            Self::InvalidResponse | Self::Panic | Self::Unknown => KmsCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_content_errors_never_look_like_backend_outages() {
        for class in [
            ErrorClass::AadMismatch,
            ErrorClass::KeyIdMalformed,
            ErrorClass::ProtocolLimit,
            ErrorClass::IntegrityFailed,
        ] {
            assert_eq!(class.code(), KmsCode::InvalidArgument);
        }
        assert_eq!(ErrorClass::KeyIdUnknown.code(), KmsCode::NotFound);
        assert_eq!(ErrorClass::OpenBaoSealed.code(), KmsCode::Unavailable);
        assert_eq!(ErrorClass::StateUnavailable.code(), KmsCode::Unavailable);
        assert_eq!(ErrorClass::ConcurrencyLimit.code(), KmsCode::ResourceExhausted);
        assert_eq!(ErrorClass::Panic.code(), KmsCode::Internal);
        assert_eq!(ErrorClass::QueueDeadline.code(), KmsCode::DeadlineExceeded);
        assert_eq!(
            ErrorClass::TransitKeyVersionRejected.code(),
            KmsCode::FailedPrecondition
        );
        assert_eq!(ErrorClass::TransitKeyMissing.code(), KmsCode::Unavailable);
    }
}
