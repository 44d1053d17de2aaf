//! The KMS Unix socket as a resource with a lifecycle: the parent directory
//! is checked, a stale socket is removed only when a connect proves nobody
//! listens (never a non-socket file), mode and group are applied, and the
//! socket is unlinked on shutdown only if it is still the one we created.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bao_kms_core::config::SocketGroup;
use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("socket directory {path}: {why}")]
    Directory { path: String, why: String },
    #[error("{path}: {why}")]
    Existing { path: String, why: String },
    #[error("socket group {group}: {why}")]
    Group { group: String, why: String },
    #[error("binding {path}: {why}")]
    Bind { path: String, why: String },
}

/// A bound socket; dropping it does not unlink (call [`BoundSocket::remove`]).
pub struct BoundSocket {
    pub path: PathBuf,
    ino: u64,
    dev: u64,
}

/// Resolves `server.socketGroup` to a GID.
pub fn resolve_group(group: &SocketGroup) -> Result<u32, SocketError> {
    match group {
        SocketGroup::Gid(gid) => Ok(*gid),
        SocketGroup::Name(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            Ok(None) => Err(SocketError::Group {
                group: name.clone(),
                why: "no such group".into(),
            }),
            Err(e) => Err(SocketError::Group {
                group: name.clone(),
                why: e.to_string(),
            }),
        },
    }
}

/// Checks the socket's parent directory: a real directory owned by this
/// user and not group- or world-writable.
pub fn check_parent(dir: &Path) -> Result<(), SocketError> {
    crate::fsutil::check_private_dir(dir, "2750").map_err(|why| SocketError::Directory {
        path: dir.display().to_string(),
        why,
    })
}

/// Removes a leftover socket only if nothing accepts connections on it.
/// Returns true when a stale socket was removed.
async fn clear_stale(path: &Path) -> Result<bool, SocketError> {
    let err = |why: String| SocketError::Existing {
        path: path.display().to_string(),
        why,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(err(e.to_string())),
    };
    if meta.file_type().is_symlink() {
        return Err(err("is a symlink; refusing to touch it".into()));
    }
    if !meta.file_type().is_socket() {
        return Err(err("exists and is not a socket; refusing to delete it".into()));
    }
    match tokio::time::timeout(Duration::from_millis(250), tokio::net::UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(|e| err(format!("removing stale socket: {e}")))?;
            tracing::info!(message = "socket.stale_removed", path = %path.display());
            Ok(true)
        }
        Ok(Ok(_)) => Err(err(
            "another process is serving on this socket; refusing to start".into()
        )),
        Ok(Err(e)) => Err(err(format!("cannot tell whether the existing socket is stale: {e}"))),
        Err(_) => Err(err(
            "existing socket did not answer within 250 ms; refusing to start".into()
        )),
    }
}

/// Binds the KMS socket. Returns the listener, the bound-socket handle and
/// whether a stale socket was removed first.
pub async fn bind(path: &Path, mode: u32, gid: u32) -> Result<(UnixListener, BoundSocket, bool), SocketError> {
    let bind_err = |why: String| SocketError::Bind {
        path: path.display().to_string(),
        why,
    };
    let parent = path
        .parent()
        .ok_or_else(|| bind_err("has no parent directory".into()))?;
    check_parent(parent)?;
    let removed = clear_stale(path).await?;
    let listener = UnixListener::bind(path).map_err(|e| bind_err(e.to_string()))?;
    let cleanup = |why: String| {
        let _ = fs::remove_file(path);
        bind_err(why)
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| cleanup(format!("chmod {mode:04o}: {e}")))?;
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
        cleanup(format!(
            "chgrp {gid}: {e} (the provider must run as a member of the socket group)"
        ))
    })?;
    let meta = fs::symlink_metadata(path).map_err(|e| cleanup(e.to_string()))?;
    Ok((
        listener,
        BoundSocket {
            path: path.to_owned(),
            ino: meta.ino(),
            dev: meta.dev(),
        },
        removed,
    ))
}

impl BoundSocket {
    /// Unlinks the socket if it is still ours.
    pub fn remove(&self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && meta.ino() == self.ino
            && meta.dev() == self.dev
            && meta.file_type().is_socket()
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o750)).unwrap();
        d
    }

    fn my_gid() -> u32 {
        nix::unistd::getegid().as_raw()
    }

    #[tokio::test]
    async fn binds_with_mode_and_group_and_removes_only_its_own_socket() {
        let d = dir();
        let path = d.path().join("kms.sock");
        let (_l, bound, removed) = bind(&path, 0o660, my_gid()).await.unwrap();
        assert!(!removed);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), my_gid());
        bound.remove();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_but_live_socket_and_files_are_not() {
        let d = dir();
        let path = d.path().join("kms.sock");
        // Stale: bound then dropped without unlinking.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let (live, _bound, removed) = bind(&path, 0o660, my_gid()).await.unwrap();
        assert!(removed);
        // Live: our listener still accepts.
        let err = bind(&path, 0o660, my_gid()).await.err().unwrap();
        assert!(err.to_string().contains("another process"), "{err}");
        drop(live);

        let file = d.path().join("not-a-socket");
        fs::write(&file, b"data").unwrap();
        let err = bind(&file, 0o660, my_gid()).await.err().unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(fs::read(&file).unwrap(), b"data");
    }

    #[tokio::test]
    async fn writable_parent_is_refused() {
        let d = dir();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o770)).unwrap();
        let err = bind(&d.path().join("kms.sock"), 0o660, my_gid()).await.err().unwrap();
        assert!(matches!(err, SocketError::Directory { .. }), "{err}");
    }
}
