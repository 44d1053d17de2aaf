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
        report.add("kms.socket", "KMS socket is a socket", CheckStatus::Fail, Some(e));
        return report;
    }
    report.add("kms.socket", "KMS socket is a socket", CheckStatus::Pass, None);
    if let Some(why) = caller_bypasses_permissions(socket) {
        report.add(
            "kms.caller",
            "probe runs as kube-apiserver would",
            CheckStatus::Warn,
            Some(format!(
                "{why}: the round trip does not prove that kube-apiserver's user may use the socket; run as a member of the socket group"
            )),
        );
    }
    let channel = match connect(socket, timeout).await {
        Ok(c) => c,
        Err(e) => {
            report.add("kms.connect", "connect to the KMS socket", CheckStatus::Fail, Some(e));
            return report;
        }
    };
    let mut client = KeyManagementServiceClient::new(channel);

    let status = match client.status(StatusRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            report.add(
                "kms.status",
                "KMS Status is healthy",
                CheckStatus::Fail,
                Some(e.message().to_owned()),
            );
            return report;
        }
    };
    if status.healthz != "ok" || status.key_id.is_empty() || status.version != "v2" {
        report.add(
            "kms.status",
            "KMS Status is healthy",
            CheckStatus::Fail,
            Some(format!("version={:?} healthz={:?}", status.version, status.healthz)),
        );
        return report;
    }
    report.add(
        "kms.status",
        "KMS Status is healthy",
        CheckStatus::Pass,
        Some(format!("version={}", status.version)),
    );

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
            report.add(
                "kms.encrypt",
                "Encrypt a 32-byte seed",
                CheckStatus::Fail,
                Some(e.message().to_owned()),
            );
            return report;
        }
    };
    report.add(
        "kms.encrypt",
        "Encrypt a 32-byte seed",
        CheckStatus::Pass,
        Some(format!(
            "{} ciphertext bytes, {} annotations",
            encrypted.ciphertext.len(),
            encrypted.annotations.len()
        )),
    );

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
            report.add("kms.decrypt", "Decrypt returns the seed", CheckStatus::Pass, None);
        }
        Ok(_) => report.add(
            "kms.decrypt",
            "Decrypt returns the seed",
            CheckStatus::Fail,
            Some("plaintext differs".into()),
        ),
        Err(e) => report.add(
            "kms.decrypt",
            "Decrypt returns the seed",
            CheckStatus::Fail,
            Some(e.message().to_owned()),
        ),
    }

    let hash = bao_kms_core::hash::h(&status.key_id);
    if encrypted.key_id != status.key_id {
        report.add(
            "kms.key_id",
            "Status and Encrypt agree on key_id",
            CheckStatus::Fail,
            Some(format!(
                "Status key_id hash {hash}, Encrypt key_id hash {}",
                bao_kms_core::hash::h(&encrypted.key_id)
            )),
        );
    } else if expected_key_id.is_some_and(|k| k != status.key_id) {
        report.add(
            "kms.key_id",
            "Status and Encrypt agree on key_id",
            CheckStatus::Fail,
            Some(format!("key_id {} is not the expected one", status.key_id)),
        );
    } else {
        report.add(
            "kms.key_id",
            "Status and Encrypt agree on key_id",
            CheckStatus::Pass,
            Some(format!("key_id {} (hash {hash})", status.key_id)),
        );
    }
    report
}
