//! The kube-apiserver side of KMS v2: a gRPC client over the Unix socket
//! that calls and checks the plugin the way kube-apiserver does.
//!
//! Every call carries the `kms.timeout` deadline (3 s): sent as
//! `grpc-timeout` and enforced locally. [`KmsClient::prime`] is what
//! kube-apiserver does when it loads its encryption config: one Status, then
//! one Encrypt of a fresh 32-byte seed, with every check kube-apiserver
//! applies to both answers (`ValidateEncryptedObject`,
//! `isKMSv2ProviderHealthyAndMaybeRotateDEK`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use bao_kms_proto::v2::key_management_service_client::KeyManagementServiceClient;
use bao_kms_proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use hyper_util::rt::TokioIo;
use rand::RngCore as _;
use tonic::transport::{Channel, Endpoint};

use crate::KMS_CALL_TIMEOUT;
use crate::wait;

/// kube-apiserver's limit on `key_id` (`KeyIDMaxSize`).
pub const KEY_ID_MAX_BYTES: usize = 1024;
/// kube-apiserver's limit on the Encrypt ciphertext (`encryptedDEKSourceMaxSize`).
pub const CIPHERTEXT_MAX_BYTES: usize = 1024;
/// kube-apiserver's limit on annotation keys + values (`annotationsMaxSize`).
pub const ANNOTATIONS_MAX_BYTES: usize = 32 * 1024;
/// Size of the DEK seed kube-apiserver encrypts.
pub const SEED_BYTES: usize = 32;

/// A seed encrypted through the plugin, with everything kube-apiserver
/// stores in etcd next to the data (`EncryptedObject`).
#[derive(Debug, Clone)]
pub struct EncryptedSeed {
    pub seed: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub annotations: HashMap<String, Vec<u8>>,
}

impl EncryptedSeed {
    /// The Decrypt request kube-apiserver sends for this seed (fresh uid);
    /// tests tamper with it for negative cases.
    pub fn decrypt_request(&self) -> DecryptRequest {
        DecryptRequest {
            ciphertext: self.ciphertext.clone(),
            uid: new_uid(),
            key_id: self.key_id.clone(),
            annotations: self.annotations.clone(),
        }
    }

    /// UTF-8 value of one annotation.
    pub fn annotation(&self, key: &str) -> Option<String> {
        self.annotations
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// A KMS v2 client connected to the plugin's Unix socket.
#[derive(Clone)]
pub struct KmsClient {
    inner: KeyManagementServiceClient<Channel>,
    channel: Channel,
    socket: PathBuf,
}

impl KmsClient {
    /// Connects over `socket` (plaintext HTTP/2, `:authority` `localhost`,
    /// as kube-apiserver dials it).
    pub async fn connect(socket: &Path) -> anyhow::Result<Self> {
        let path = socket.to_path_buf();
        let channel = Endpoint::try_from("http://localhost")?
            .connect_timeout(KMS_CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            }))
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        Ok(Self {
            inner: KeyManagementServiceClient::new(channel.clone()),
            channel,
            socket: socket.to_path_buf(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Raw Status call.
    pub async fn status(&self) -> Result<StatusResponse, tonic::Status> {
        let mut client = self.inner.clone();
        call(client.status(request(StatusRequest {}))).await
    }

    /// Raw Encrypt call with a fresh uid.
    pub async fn encrypt(&self, plaintext: &[u8]) -> Result<EncryptResponse, tonic::Status> {
        let mut client = self.inner.clone();
        let req = EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: new_uid(),
        };
        call(client.encrypt(request(req))).await
    }

    /// Raw Decrypt call.
    pub async fn decrypt_raw(&self, req: DecryptRequest) -> Result<DecryptResponse, tonic::Status> {
        let mut client = self.inner.clone();
        call(client.decrypt(request(req))).await
    }

    /// Raw Decrypt call carrying extra gRPC metadata (`traceparent`, ...).
    pub async fn decrypt_with_metadata(
        &self,
        req: DecryptRequest,
        metadata: &[(&'static str, &str)],
    ) -> Result<DecryptResponse, tonic::Status> {
        let mut client = self.inner.clone();
        let mut req = request(req);
        for (name, value) in metadata {
            let value = value
                .parse()
                .map_err(|_| tonic::Status::invalid_argument("metadata value"))?;
            req.metadata_mut().insert(*name, value);
        }
        call(client.decrypt(req)).await
    }

    /// Sends `body` as the request message of `method` (`Encrypt`,
    /// `Decrypt`, `Status`) without encoding it: for malformed protobuf.
    /// The answer's message is discarded.
    pub async fn call_bytes(&self, method: &str, body: Vec<u8>) -> Result<(), tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path: tonic::codegen::http::uri::PathAndQuery = format!("/v2.KeyManagementService/{method}")
            .parse()
            .map_err(|e| tonic::Status::internal(format!("{e}")))?;
        call(grpc.unary(request(body), path, RawCodec)).await
    }

    /// Status, checked as kube-apiserver checks it: version `v2`, healthz
    /// `ok`, key_id non-empty and at most 1 KiB.
    pub async fn healthy_status(&self) -> anyhow::Result<StatusResponse> {
        let status = self.status().await.map_err(|s| anyhow::anyhow!("Status failed: {s}"))?;
        check_status(&status)?;
        Ok(status)
    }

    /// Polls Status until it passes [`Self::healthy_status`]'s checks.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<StatusResponse> {
        wait::until(timeout, "a healthy KMS Status", || async {
            match self.status().await {
                Ok(s) => check_status(&s).map(|()| s.clone()).map_err(|e| format!("{e}")),
                Err(e) => Err(format!("{e}")),
            }
        })
        .await
    }

    /// What kube-apiserver does at start: Status, then Encrypt of a fresh
    /// random 32-byte seed, accepting the result only if it satisfies the
    /// KMS v2 contract and its key_id equals the Status key_id.
    pub async fn prime(&self) -> anyhow::Result<EncryptedSeed> {
        let status = self.healthy_status().await?;
        let mut seed = vec![0u8; SEED_BYTES];
        rand::rng().fill_bytes(&mut seed);
        let resp = self
            .encrypt(&seed)
            .await
            .map_err(|s| anyhow::anyhow!("Encrypt failed: {s}"))?;
        check_encrypt_response(&resp)?;
        ensure!(
            resp.key_id == status.key_id,
            "Encrypt key_id {:?} differs from Status key_id {:?}: kube-apiserver would discard the DEK",
            resp.key_id,
            status.key_id
        );
        Ok(EncryptedSeed {
            seed,
            ciphertext: resp.ciphertext,
            key_id: resp.key_id,
            annotations: resp.annotations,
        })
    }

    /// [`Self::prime`] `count` times: the DEK seeds of `count` objects.
    pub async fn prime_many(&self, count: usize) -> anyhow::Result<Vec<EncryptedSeed>> {
        let mut primed = Vec::with_capacity(count);
        for _ in 0..count {
            primed.push(self.prime().await?);
        }
        Ok(primed)
    }

    /// [`Self::decrypt`] of every seed: nothing stored is lost.
    pub async fn decrypt_all(&self, stored: &[EncryptedSeed]) -> anyhow::Result<()> {
        for (i, seed) in stored.iter().enumerate() {
            self.decrypt(seed)
                .await
                .with_context(|| format!("stored seed {i} of {} (key_id {})", stored.len(), seed.key_id))?;
        }
        Ok(())
    }

    /// Decrypts a stored seed with its ciphertext, key_id and annotations,
    /// as kube-apiserver does on a DEK cache miss, and checks the plaintext
    /// is byte-exact.
    pub async fn decrypt(&self, stored: &EncryptedSeed) -> anyhow::Result<()> {
        let resp = self
            .decrypt_raw(stored.decrypt_request())
            .await
            .map_err(|s| anyhow::anyhow!("Decrypt failed: {s}"))?;
        ensure!(
            resp.plaintext == stored.seed,
            "Decrypt returned different bytes than were encrypted"
        );
        Ok(())
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(KMS_CALL_TIMEOUT);
    req
}

/// Bounds a call by the deadline locally too, like grpc-go's context.
async fn call<T>(fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, tonic::Status> {
    match tokio::time::timeout(KMS_CALL_TIMEOUT, fut).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("client deadline of 3s exceeded")),
    }
}

/// A fresh request uid shaped like the UUIDs kube-apiserver sends.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn check_status(status: &StatusResponse) -> anyhow::Result<()> {
    ensure!(
        status.version == "v2",
        "Status version {:?}, expected \"v2\"",
        status.version
    );
    ensure!(
        status.healthz == "ok",
        "Status healthz {:?}, expected \"ok\"",
        status.healthz
    );
    check_key_id(&status.key_id).context("Status key_id")
}

fn check_key_id(key_id: &str) -> anyhow::Result<()> {
    ensure!(!key_id.is_empty(), "key_id is empty");
    ensure!(
        key_id.len() <= KEY_ID_MAX_BYTES,
        "key_id is {} bytes, over {KEY_ID_MAX_BYTES}",
        key_id.len()
    );
    Ok(())
}

/// kube-apiserver's `ValidateEncryptedObject` applied to an Encrypt answer.
pub fn check_encrypt_response(resp: &EncryptResponse) -> anyhow::Result<()> {
    ensure!(!resp.ciphertext.is_empty(), "ciphertext is empty");
    ensure!(
        resp.ciphertext.len() <= CIPHERTEXT_MAX_BYTES,
        "ciphertext is {} bytes, over {CIPHERTEXT_MAX_BYTES}",
        resp.ciphertext.len()
    );
    check_key_id(&resp.key_id).context("Encrypt key_id")?;
    let mut total = 0;
    for (key, value) in &resp.annotations {
        if !is_fully_qualified_domain_name(key) {
            bail!("annotation key {key:?} is not a fully qualified domain name");
        }
        total += key.len() + value.len();
    }
    ensure!(
        total <= ANNOTATIONS_MAX_BYTES,
        "annotations total {total} bytes, over {ANNOTATIONS_MAX_BYTES}"
    );
    Ok(())
}

/// apimachinery's `IsFullyQualifiedDomainName`: an optional trailing dot is
/// dropped; then a lowercase RFC 1123 subdomain (labels of
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, each at most 63, total at most 253) with
/// at least two labels.
pub fn is_fully_qualified_domain_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    !name.is_empty() && name.len() <= 253 && labels.len() >= 2 && labels.iter().all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_rules_match_kube_apiserver() {
        for ok in [
            "version.encryption.remote.io",
            "key-id-hash.kms.openbao.org",
            "a.b",
            "a.b.",
        ] {
            assert!(is_fully_qualified_domain_name(ok), "{ok}");
        }
        for bad in [
            "panda",
            "",
            ".",
            "Upper.case.io",
            "under_score.io",
            "-a.io",
            "a-.io",
            "a..io",
        ] {
            assert!(!is_fully_qualified_domain_name(bad), "{bad}");
        }
        assert!(!is_fully_qualified_domain_name(&format!("{}.io", "a".repeat(64))));
    }

    #[test]
    fn uid_looks_like_a_uuid() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.matches('-').count(), 4);
        assert_ne!(uid, new_uid());
    }
}

/// A codec that sends bytes as they are and ignores the answer's message.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        let n = prost::bytes::Buf::remaining(src);
        prost::bytes::Buf::advance(src, n);
        Ok(Some(()))
    }
}
