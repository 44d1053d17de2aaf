//! `probe --socket S`: a live Status -> Encrypt -> Decrypt round trip
//! through a running provider's socket, like kube-apiserver does at start.
//! Needs no configuration, credentials or state, and writes no files.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bao_kms_proto::v2::key_management_service_client::KeyManagementServiceClient;
use bao_kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use hyper_util::rt::TokioIo;
use rand::RngCore;
use tonic::transport::{Channel, Endpoint};

use bao_kms_core::checks::catalogue::*;

use crate::report::{CheckStatus, Report};

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/openbao-kms/kms.sock";

/// Connects a KMS client to a Unix socket (`:authority` is `localhost`, as
/// kube-apiserver sends it).
pub async fn connect(path: &Path, timeout: Duration) -> Result<Channel, String> {
    let path: PathBuf = path.to_owned();
    let shown = path.display().to_string();
    Endpoint::try_from("http://localhost")
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.to_string());
            format!("connecting to {shown}: {cause}")
        })
}

fn check_socket_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!("{} is a symlink", path.display()));
    }
    if !meta.file_type().is_socket() {
        return Err(format!("{} is not a socket", path.display()));
    }
    Ok(())
}

/// Why this process reaches the socket regardless of its group and mode:
/// root ignores permission bits, the owner is not the socket group.
fn caller_bypasses_permissions(socket: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 {
        return Some("running as root".to_owned());
    }
    let owner = std::fs::symlink_metadata(socket).ok()?.uid();
    (owner == euid).then(|| format!("running as the socket's owner (uid {euid})"))
}

/// Runs the probe and returns its report.
pub async fn run(socket: &Path, timeout: Duration, expected_key_id: Option<&str>) -> Report {
    let mut report = Report::new("probe");
    if let Err(e) = check_socket_path(socket) {
        report.push(KMS_SOCKET.check(CheckStatus::Fail, e));
        return report;
    }
    report.push(KMS_SOCKET.check(CheckStatus::Pass, ""));
    if let Some(why) = caller_bypasses_permissions(socket) {
        report.push(KMS_CALLER.check(CheckStatus::Warn, format!(
                "{why}: the round trip does not prove that kube-apiserver's user may use the socket; run as a member of the socket group"
            )));
    }
    let channel = match connect(socket, timeout).await {
        Ok(c) => c,
        Err(e) => {
            report.push(KMS_CONNECT.check(CheckStatus::Fail, e));
            return report;
        }
    };
    let mut client = KeyManagementServiceClient::new(channel);

    let status = match client.status(StatusRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            report.push(KMS_STATUS.check(CheckStatus::Fail, e.message().to_owned()));
            return report;
        }
    };
    if status.healthz != "ok" || status.key_id.is_empty() || status.version != "v2" {
        report.push(KMS_STATUS.check(
            CheckStatus::Fail,
            format!("version={:?} healthz={:?}", status.version, status.healthz),
        ));
        return report;
    }
    report.push(KMS_STATUS.check(CheckStatus::Pass, format!("version={}", status.version)));

    let mut seed = zeroize::Zeroizing::new(vec![0u8; 32]);
    rand::rng().fill_bytes(&mut seed);
    let uid = format!("probe-{:016x}", rand::rng().next_u64());
    let encrypted = match client
        .encrypt(EncryptRequest {
            plaintext: seed.to_vec(),
            uid: uid.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            report.push(KMS_ENCRYPT.check(CheckStatus::Fail, e.message().to_owned()));
            return report;
        }
    };
    report.push(KMS_ENCRYPT.check(
        CheckStatus::Pass,
        format!(
            "{} ciphertext bytes, {} annotations",
            encrypted.ciphertext.len(),
            encrypted.annotations.len()
        ),
    ));

    let decrypted = client
        .decrypt(DecryptRequest {
            ciphertext: encrypted.ciphertext.clone(),
            uid,
            key_id: encrypted.key_id.clone(),
            annotations: encrypted.annotations.clone(),
        })
        .await;
    match decrypted {
        Ok(r) if r.get_ref().plaintext == *seed => {
            report.push(KMS_DECRYPT.check(CheckStatus::Pass, ""));
        }
        Ok(_) => report.push(KMS_DECRYPT.check(CheckStatus::Fail, "plaintext differs")),
        Err(e) => report.push(KMS_DECRYPT.check(CheckStatus::Fail, e.message().to_owned())),
    }

    let hash = bao_kms_core::hash::h(&status.key_id);
    if encrypted.key_id != status.key_id {
        report.push(KMS_KEY_ID.check(
            CheckStatus::Fail,
            format!(
                "Status key_id hash {hash}, Encrypt key_id hash {}",
                bao_kms_core::hash::h(&encrypted.key_id)
            ),
        ));
    } else if expected_key_id.is_some_and(|k| k != status.key_id) {
        report.push(KMS_KEY_ID.check(
            CheckStatus::Fail,
            format!("key_id {} is not the expected one", status.key_id),
        ));
    } else {
        report.push(KMS_KEY_ID.check(CheckStatus::Pass, format!("key_id {} (hash {hash})", status.key_id)));
    }
    report
}
