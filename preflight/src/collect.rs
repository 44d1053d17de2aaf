//! Collecting facts: file metadata and contents on the node, the local
//! provider's `/ready` and `/status`. Boring on purpose: every decision
//! about these facts is in [`crate::checks`].

use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Largest file read (configuration, EncryptionConfiguration, manifest, group file).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Deadline of one request to the local provider.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

pub use bao_kms_core::checks::node::{FileFacts, FileKind, HttpAnswer};

/// `lstat(path)`.
pub fn stat(path: &Path) -> FileFacts {
    FileFacts::from_lstat(path, std::fs::symlink_metadata(path))
}

/// Reads a text file of at most [`MAX_FILE_BYTES`]. The error names the
/// problem, never the content.
pub fn read_text(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("{} is larger than {MAX_FILE_BYTES} bytes", path.display()));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// `GET http://<address><path>` with [`HTTP_TIMEOUT`]; the error is the
/// transport problem (connection refused, timeout).
pub async fn http_get(client: &reqwest::Client, address: &str, path: &str) -> Result<HttpAnswer, String> {
    let url = format!("http://{address}{path}");
    let resp = client
        .get(&url)
        .timeout(HTTP_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {}", error_chain(&e)))?;
    Ok(HttpAnswer { status, body })
}

/// `sha256:<hex>` of a file's bytes, read in chunks; the error is the
/// I/O problem.
pub fn sha256_file(path: &Path) -> Result<String, String> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// `e: source: source...` on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
