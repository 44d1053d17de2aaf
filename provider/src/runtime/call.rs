//! One Transit call as the KMS operations make it: with the current token,
//! re-obtained once when OpenBao answers 403, and its failure as
//! kube-apiserver sees it.

use std::future::Future;

use bao_kms_core::errors::{ErrorClass, KmsError};
use secrecy::SecretString;

use crate::transit::{AuthError, BaoError, Transit};

/// A failed Transit call as kube-apiserver sees it.
pub(super) fn bao_to_kms(e: BaoError) -> KmsError {
    let message = match e.class {
        ErrorClass::IntegrityFailed => {
            "Transit rejected the ciphertext: message authentication failed (integrity error)".into()
        }
        _ => format!("OpenBao {}: {}", e.class.as_str(), e.message),
    };
    KmsError::new(e.class, message)
}

/// No token could be obtained for a Transit call.
fn auth_to_kms(e: &AuthError) -> KmsError {
    KmsError::new(e.class(), e.to_string())
}

/// Calls `transit` with the current token; on 403 the token is dropped,
/// re-obtained once and the call retried.
pub(super) async fn call_with_token<T, F, Fut>(transit: &dyn Transit, call: F) -> Result<T, KmsError>
where
    F: Fn(SecretString) -> Fut,
    Fut: Future<Output = Result<T, BaoError>>,
{
    let token = transit.token().await.map_err(|e| auth_to_kms(&e))?;
    match call(token.clone()).await {
        Err(e) if e.http_status == Some(403) => {
            transit.invalidate(&token).await;
            let fresh = transit.token().await.map_err(|e| auth_to_kms(&e))?;
            call(fresh).await.map_err(bao_to_kms)
        }
        other => other.map_err(bao_to_kms),
    }
}
