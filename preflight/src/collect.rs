//! Collecting facts: file metadata and contents on the node, the local
//! provider's `/ready` and `/status`. Boring on purpose: every decision
//! about these facts is in [`crate::checks`].

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest file read (configuration, EncryptionConfiguration, manifest, group file).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Deadline of one request to the local provider.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Missing,
    Regular,
    Directory,
    Socket,
    Symlink,
    Other,
}

impl FileKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Regular => "a regular file",
            Self::Directory => "a directory",
            Self::Socket => "a Unix socket",
            Self::Symlink => "a symlink",
            Self::Other => "a special file",
        }
    }
}

/// What `lstat` says about a path (symlinks are not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub path: PathBuf,
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Why the path could not be inspected (other than not existing).
    pub error: Option<String>,
}

impl FileFacts {
    /// Facts of a path that was not inspected.
    pub fn missing(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            kind: FileKind::Missing,
            mode: 0,
            uid: 0,
            gid: 0,
            error: None,
        }
    }
}

/// `lstat(path)`.
pub fn stat(path: &Path) -> FileFacts {
    let mut facts = FileFacts::missing(path);
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let ft = meta.file_type();
            facts.kind = if ft.is_symlink() {
                FileKind::Symlink
            } else if ft.is_dir() {
                FileKind::Directory
            } else if ft.is_file() {
                FileKind::Regular
            } else if ft.is_socket() {
                FileKind::Socket
            } else {
                FileKind::Other
            };
            facts.mode = meta.mode() & 0o7777;
            facts.uid = meta.uid();
            facts.gid = meta.gid();
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => facts.error = Some(e.to_string()),
    }
    facts
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

/// The answer of one local HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
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

/// The provider's `/status` JSON (the fields preflight reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    #[serde(rename = "keyIDHash", default)]
    pub key_id_hash: String,
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub rotation_state: String,
    #[serde(default)]
    pub active_version: u64,
    #[serde(default)]
    pub latest_version: u64,
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub cache_age_seconds: f64,
    #[serde(default)]
    pub provider_name: String,
    #[serde(default)]
    pub identity_fingerprint: String,
}
