//! Reading etcd the way kube-apiserver's storage is laid out: a gRPC client
//! of etcd's v3 `KV.Range` (the read-only stubs in `bao_kms_proto::etcd`,
//! which have no method that writes), over TLS with kube-apiserver's etcd
//! client certificate, one page at a time.
//!
//! [`Scanner`] pins the etcd revision of its first page and reads every
//! later page at that revision, so the scan is one consistent snapshot
//! (what kube-apiserver's paginated lists do); each page starts after the
//! last key of the previous one, and is dropped before the next is read,
//! so memory stays at one page whatever the store's size.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bao_kms_proto::etcd::etcdserverpb::RangeRequest;
use bao_kms_proto::etcd::etcdserverpb::kv_client::KvClient;
use bao_kms_proto::etcd::mvccpb::KeyValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::collect::error_chain;

/// Largest page answer accepted. etcd limits one value to
/// `--max-request-bytes` (1.5 MiB by default), so a page of 100 values fits.
pub const MAX_PAGE_BYTES: usize = 256 << 20;

/// Where etcd is and how to authenticate, as kube-apiserver's flags name it.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `--etcd-servers`: tried in order until one answers.
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Deadline of the connection and of each page.
    pub timeout: Duration,
}

/// Why etcd could not be read; the message names the cause and the flag.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot connect to etcd at {endpoint}: {cause}")]
    Connect { endpoint: String, cause: String },
    #[error("etcd at {endpoint} refused the range request: {cause}")]
    Request { endpoint: String, cause: String },
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|e| EtcdError::Setup(format!("cannot read {what} {}: {e}", path.display())))
}

/// Names the likely cause of a TLS or connection failure from its error
/// chain (rustls and the OS word them; etcd answers a rejected client
/// certificate with a TLS alert or by closing the connection).
pub fn explain(chain: &str) -> String {
    let lower = chain.to_ascii_lowercase();
    let hint = if lower.contains("connection refused") {
        "nothing listens there: check --etcd-servers"
    } else if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        "etcd's serving certificate is not signed by --etcd-cafile"
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        "etcd's serving certificate does not name this endpoint's host"
    } else if lower.contains("expired") {
        "a certificate has expired"
    } else if lower.contains("certificaterequired")
        || lower.contains("certificate required")
        || lower.contains("badcertificate")
        || lower.contains("bad certificate")
        || lower.contains("unknownca")
        || lower.contains("unknown ca")
        || lower.contains("decrypterror")
        || lower.contains("connection reset")
        || lower.contains("connection closed")
        || lower.contains("broken pipe")
    {
        // With TLS 1.3 the client finishes its handshake before etcd checks
        // the client certificate; a refused one shows up as a closed or
        // reset connection on the first request.
        "etcd rejected the client certificate: --etcd-certfile/--etcd-keyfile must be signed by the CA in etcd's --trusted-ca-file (kube-apiserver's apiserver-etcd-client pair)"
    } else if lower.contains("timed out") || lower.contains("deadline") || lower.contains("timeout") {
        "no answer within --timeout"
    } else if lower.contains("http2") || lower.contains("h2 protocol") || lower.contains("frame") {
        "the endpoint does not speak gRPC over TLS: check the scheme (https://) and the port"
    } else {
        ""
    };
    if hint.is_empty() {
        chain.to_owned()
    } else {
        format!("{hint} ({chain})")
    }
}

/// A TLS (https) or plaintext (http) channel to one endpoint.
async fn connect_one(opts: &EtcdOptions, endpoint: &str) -> Result<Channel, EtcdError> {
    let setup = |e: tonic::transport::Error| EtcdError::Connect {
        endpoint: endpoint.to_owned(),
        cause: explain(&error_chain(&e)),
    };
    let mut ep = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| EtcdError::Setup(format!("--etcd-servers {endpoint}: {e}")))?
        .connect_timeout(opts.timeout)
        .timeout(opts.timeout);
    if endpoint.starts_with("https://") {
        let ca = opts
            .ca_file
            .as_deref()
            .ok_or_else(|| EtcdError::Setup(format!("{endpoint} is https: --etcd-cafile is required")))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_file(ca, "--etcd-cafile")?));
        match (&opts.cert_file, &opts.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read_file(cert, "--etcd-certfile")?,
                    read_file(key, "--etcd-keyfile")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(EtcdError::Setup(
                    "--etcd-certfile and --etcd-keyfile go together".to_owned(),
                ));
            }
        }
        ep = ep.tls_config(tls).map_err(setup)?;
    } else if !endpoint.starts_with("http://") {
        return Err(EtcdError::Setup(format!(
            "--etcd-servers {endpoint}: expected https://host:port (or http:// for an etcd without TLS)"
        )));
    }
    ep.connect().await.map_err(setup)
}

/// The first endpoint that connects.
pub async fn connect(opts: &EtcdOptions) -> Result<(KvClient<Channel>, String), EtcdError> {
    let mut last = EtcdError::Setup("--etcd-servers is empty".to_owned());
    for endpoint in &opts.endpoints {
        match connect_one(opts, endpoint).await {
            Ok(channel) => {
                let client = KvClient::new(channel).max_decoding_message_size(MAX_PAGE_BYTES);
                return Ok((client, endpoint.clone()));
            }
            Err(e @ EtcdError::Setup(_)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The end of the range of every key starting with `prefix` (etcd's
/// "prefix plus one": the last byte below 0xff incremented, the rest cut).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the key space.
    vec![0]
}

/// Pages through every key under a prefix at one revision.
pub struct Scanner {
    client: KvClient<Channel>,
    endpoint: String,
    next_key: Vec<u8>,
    range_end: Vec<u8>,
    page_size: i64,
    revision: i64,
    done: bool,
}

impl Scanner {
    pub fn new(client: KvClient<Channel>, endpoint: String, prefix: &[u8], page_size: u32) -> Self {
        Self {
            client,
            endpoint,
            next_key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            page_size: i64::from(page_size.max(1)),
            revision: 0,
            done: false,
        }
    }

    /// The revision the scan reads at (0 before the first page).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    fn request_error(&self, status: &tonic::Status) -> EtcdError {
        let message = status.message();
        let cause = if message.contains("compacted") {
            format!(
                "revision {} was compacted during the scan ({message}): run storage again",
                self.revision
            )
        } else if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ) {
            explain(&format!("{:?}: {message}: {}", status.code(), status_source(status)))
        } else if status.code() == tonic::Code::PermissionDenied || status.code() == tonic::Code::Unauthenticated {
            format!("{message}: the client certificate's user may not read this prefix")
        } else if message.contains("message length too large") || message.contains("decoded message length") {
            format!("{message}: a page exceeded {MAX_PAGE_BYTES} bytes, lower --page-size")
        } else {
            format!("{:?}: {message}", status.code())
        };
        EtcdError::Request {
            endpoint: self.endpoint.clone(),
            cause,
        }
    }

    /// Number of keys under the prefix at the scan's revision (for the
    /// progress indicator; call after the first page).
    pub async fn count(&mut self) -> Result<i64, EtcdError> {
        let req = RangeRequest {
            key: self.next_key.clone(),
            range_end: self.range_end.clone(),
            revision: self.revision,
            count_only: true,
            ..RangeRequest::default()
        };
        // count_only counts from next_key: add what was already read by the caller.
        match self.client.range(req).await {
            Ok(resp) => Ok(resp.into_inner().count),
            Err(status) => Err(self.request_error(&status)),
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<KeyValue>>, EtcdError> {
        if self.done {
            return Ok(None);
        }
        let req = RangeRequest {
            key: self.next_key.clone(),
            range_end: self.range_end.clone(),
            limit: self.page_size,
            revision: self.revision,
            ..RangeRequest::default()
        };
        let resp = match self.client.range(req).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(self.request_error(&status)),
        };
        if self.revision == 0 {
            self.revision = resp.header.as_ref().map_or(0, |h| h.revision);
        }
        match resp.kvs.last() {
            Some(last) if resp.more => {
                // The smallest key after the last one read.
                let mut next = last.key.clone();
                next.push(0);
                self.next_key = next;
            }
            _ => self.done = true,
        }
        Ok(Some(resp.kvs))
    }
}

/// The transport error under a gRPC status, if any.
fn status_source(status: &tonic::Status) -> String {
    use std::error::Error as _;
    status.source().map(error_chain).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\x00");
        assert_eq!(prefix_end(b""), b"\x00");
    }

    #[test]
    fn causes_are_named() {
        assert!(explain("tcp connect error: Connection refused (os error 111)").starts_with("nothing listens"));
        assert!(
            explain("invalid peer certificate: UnknownIssuer").starts_with("etcd's serving certificate is not signed")
        );
        assert!(
            explain("received fatal alert: CertificateRequired").starts_with("etcd rejected the client certificate")
        );
        assert_eq!(explain("something else"), "something else");
    }
}
