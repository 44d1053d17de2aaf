//! File-system trust checks shared by every place that reads or creates
//! security-relevant files (socket directory, registry, credentials).

use std::fs::{self, Metadata};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A directory we create files in must be a real directory (not a symlink),
/// owned by this process's user, and not group- or world-writable.
/// `recommended` names the mode to suggest in the error.
pub fn check_private_dir(dir: &Path, recommended: &str) -> Result<(), String> {
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if meta.file_type().is_symlink() {
        return Err("is a symlink".into());
    }
    if !meta.is_dir() {
        return Err("is not a directory".into());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "mode {mode:04o} is group- or world-writable; use {recommended}"
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(format!(
            "is owned by uid {} but the provider runs as uid {euid}",
            meta.uid()
        ));
    }
    Ok(())
}

/// Applies `bao_kms_core::path_trust` to every ancestor of `path` (from `/`
/// down to its directory), read with `lstat`. An ancestor that does not
/// exist ends the walk: the caller's own checks report the missing path.
pub fn check_ancestors(path: &Path, service_uid: u32) -> Result<(), String> {
    use bao_kms_core::path_trust::{Component, ancestors_verdict};
    let mut components = Vec::new();
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).collect();
    ancestors.reverse();
    for a in ancestors {
        let meta = match fs::symlink_metadata(a) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(format!("{}: {e}", a.display())),
        };
        components.push(Component {
            path: a.display().to_string(),
            is_symlink: meta.file_type().is_symlink(),
            uid: meta.uid(),
            mode: meta.permissions().mode() & 0o7777,
        });
    }
    ancestors_verdict(&components, service_uid)
}

/// [`check_ancestors`] for every path `serve` trusts (state, socket,
/// credentials), and the state file's owner. All problems, one line each,
/// prefixed with the config key.
pub fn check_trusted_paths(cfg: &bao_kms_core::config::Config, service_uid: u32) -> Vec<String> {
    use bao_kms_core::path_trust::{state_owner_verdict, trusted_paths};
    let mut problems: Vec<String> = trusted_paths(cfg)
        .into_iter()
        .filter_map(|(key, path)| check_ancestors(&path, service_uid).err().map(|e| format!("{key}: {e}")))
        .collect();
    if let Ok(meta) = fs::symlink_metadata(&cfg.state.path)
        && let Err(e) = state_owner_verdict(&cfg.state.path.display().to_string(), meta.uid(), service_uid)
    {
        problems.push(format!("state.path: {e}"));
    }
    problems
}

/// A file we trust must be a regular file (not a symlink) whose mode has
/// none of the `forbidden` bits. `recommended` names the mode to suggest.
/// `Ok(None)` when it does not exist.
pub fn regular_file(path: &Path, forbidden: u32, recommended: &str) -> Result<Option<Metadata>, String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if meta.file_type().is_symlink() {
        return Err("is a symlink; a regular file is required".into());
    }
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & forbidden != 0 {
        return Err(format!("mode {mode:04o} is unsafe; use {recommended}"));
    }
    Ok(Some(meta))
}

/// The largest credential file the provider reads (a token, JWT, secret,
/// OTLP header or client key).
pub const MAX_CREDENTIAL_FILE_BYTES: u64 = 64 * 1024;

/// A credential file: it exists, is a regular file (not a symlink) with none
/// of the private-file forbidden mode bits (0640 or stricter) and holds at
/// most [`MAX_CREDENTIAL_FILE_BYTES`].
pub fn credential_file(path: &Path) -> Result<Metadata, String> {
    let meta = regular_file(
        path,
        bao_kms_core::config::PRIVATE_FILE_FORBIDDEN_MODE,
        "0640 or stricter",
    )?
    .ok_or_else(|| "does not exist".to_owned())?;
    if meta.len() > MAX_CREDENTIAL_FILE_BYTES {
        return Err("is larger than 64 KiB".into());
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_and_file_rules() {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o750)).unwrap();
        assert!(check_private_dir(d.path(), "0750").is_ok());
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o770)).unwrap();
        assert!(
            check_private_dir(d.path(), "0750")
                .unwrap_err()
                .contains("group- or world-writable")
        );

        let f = d.path().join("f");
        assert!(regular_file(&f, 0o137, "0640").unwrap().is_none());
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(regular_file(&f, 0o137, "0640").unwrap().is_some());
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(regular_file(&f, 0o137, "0640").unwrap_err().contains("0644"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(regular_file(&link, 0o137, "0640").unwrap_err().contains("symlink"));
        assert!(
            regular_file(d.path(), 0o137, "0640")
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    #[test]
    fn credential_file_rules() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("secret");
        assert_eq!(credential_file(&f).unwrap_err(), "does not exist");
        fs::write(&f, b"s3cret").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(credential_file(&f).unwrap().len(), 6);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(credential_file(&f).unwrap_err().contains("0640 or stricter"));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&f, vec![b'x'; MAX_CREDENTIAL_FILE_BYTES as usize]).unwrap();
        assert!(credential_file(&f).is_ok());
        fs::write(&f, vec![b'x'; MAX_CREDENTIAL_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(credential_file(&f).unwrap_err(), "is larger than 64 KiB");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(credential_file(&link).unwrap_err().contains("symlink"));
    }
}
