//! The registry on disk: directory safety, the writer lock, safe reads and
//! crash-safe writes (temp file, fsync, rename, fsync directory; state before
//! checkpoint). The format and the rollback rules are in
//! `bao_kms_core::registry`; this module only moves bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bao_kms_core::registry::{Checkpoint, IdentityPins, StateFile};
use nix::fcntl::{Flock, FlockArg};

/// Largest registry file accepted (a registry holds a few records per rotation).
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {why}")]
    Directory { path: String, why: String },
    #[error("registry lock {path} is held by another process (is another provider or an --apply command running?)")]
    Locked { path: String },
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("{path}: {why}")]
    Content { path: String, why: String },
}

fn file_err(path: &Path, why: impl ToString) -> StoreError {
    StoreError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Paths of the registry files for `state.path`.
#[derive(Debug, Clone)]
pub struct RegistryPaths {
    pub state: PathBuf,
    pub checkpoint: PathBuf,
    pub lock: PathBuf,
    pub pins: PathBuf,
    /// JSON Lines: one record per `repin --apply`.
    pub pins_history: PathBuf,
}

impl RegistryPaths {
    pub fn new(state: &Path) -> Self {
        let with = |suffix: &str| {
            let mut s = state.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        Self {
            state: state.to_owned(),
            checkpoint: with(".checkpoint"),
            lock: with(".lock"),
            pins: with(".openbao-identity"),
            pins_history: with(".openbao-identity-history"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.state.parent().unwrap_or(Path::new("/"))
    }
}

/// Checks that the state directory is safe to trust: a real directory, not a
/// symlink, owned by this process's user, not group- or world-writable.
pub fn check_directory(dir: &Path) -> Result<(), StoreError> {
    crate::fsutil::check_private_dir(dir, "0750 or 0700").map_err(|why| StoreError::Directory {
        path: dir.display().to_string(),
        why,
    })
}

/// Proves the directory of `state` accepts a new file: creates
/// `.<name>.probe`, writes one byte, fsyncs it when `durable` (startup; the
/// per-probe check skips the fsync so it adds no flush to the disk etcd
/// shares) and removes it. A full, read-only or immutable file system and an
/// exhausted descriptor table all fail here, with the path and the errno.
pub fn check_writable(state: &Path, durable: bool) -> Result<(), StoreError> {
    let dir = state.parent().unwrap_or(Path::new("/"));
    let name = state
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let probe = dir.join(format!(".{name}.probe"));
    let unwritable = |e: io::Error| StoreError::Directory {
        path: dir.display().to_string(),
        why: format!("is not writable: creating {} failed: {e}", probe.display()),
    };
    // A leftover probe file is from an interrupted check.
    match fs::remove_file(&probe) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(unwritable(e)),
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(b"0")?;
            if durable { f.sync_all() } else { Ok(()) }
        });
    let removed = fs::remove_file(&probe);
    written.map_err(unwritable)?;
    removed.map_err(unwritable)
}

/// Reads a registry file if present. A present file must be a regular file
/// (not a symlink) whose mode grants no group write, no execute and no world access.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(meta) = crate::fsutil::regular_file(path, 0o137, "0640 or stricter").map_err(|why| file_err(path, why))?
    else {
        return Ok(None);
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    let opened = file.metadata().map_err(|e| file_err(path, e))?;
    if opened.ino() != meta.ino() || opened.dev() != meta.dev() {
        return Err(file_err(path, "was replaced while being opened"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_err(path, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(file_err(path, format!("is larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(Some(bytes))
}

/// A failed [`write_atomic`]: the error, and whether `path` was already
/// replaced when it happened (only the directory sync failed).
struct WriteFailure {
    error: StoreError,
    replaced: bool,
}

/// Writes `bytes` to `path` atomically and durably.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_reporting(path, bytes).map_err(|f| f.error)
}

fn write_atomic_reporting(path: &Path, bytes: &[u8]) -> Result<(), WriteFailure> {
    let before = |error| WriteFailure { error, replaced: false };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover temp file is from an interrupted write by a holder of the
    // lock, which we hold now.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(before(file_err(&tmp, e))),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| before(file_err(&tmp, e)))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| before(file_err(&tmp, e)))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| before(file_err(path, e)))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| WriteFailure {
        error: file_err(dir, e),
        replaced: true,
    })
}

/// A failed registry save.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SaveError {
    pub error: StoreError,
    /// Neither the state file nor the checkpoint was replaced: the registry
    /// on disk is exactly what it was before the attempt.
    pub files_unchanged: bool,
}

/// An open registry: the directory was checked and the writer lock is held
/// for the lifetime of this value.
pub struct RegistryStore {
    pub paths: RegistryPaths,
    _lock: Flock<File>,
}

/// What is on disk.
pub struct OnDisk {
    pub state: Option<StateFile>,
    pub checkpoint: Option<Checkpoint>,
    pub pins: Option<IdentityPins>,
}

impl RegistryStore {
    /// Checks the directory and takes the writer lock (never waits).
    pub fn open(state_path: &Path) -> Result<Self, StoreError> {
        let paths = RegistryPaths::new(state_path);
        check_directory(paths.dir())?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&paths.lock)
            .map_err(|e| file_err(&paths.lock, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| StoreError::Locked {
            path: paths.lock.display().to_string(),
        })?;
        Ok(Self { paths, _lock: lock })
    }

    /// [`check_writable`] for this registry's directory.
    pub fn check_writable(&self, durable: bool) -> Result<(), StoreError> {
        check_writable(&self.paths.state, durable)
    }

    /// Reads and decodes every registry file. Undecodable content is an
    /// error, never treated as absent.
    pub fn read(&self) -> Result<OnDisk, StoreError> {
        let content = |path: &Path, why: String| StoreError::Content {
            path: path.display().to_string(),
            why,
        };
        let state = read_optional(&self.paths.state)?
            .map(|b| StateFile::decode(&b).map_err(|e| content(&self.paths.state, e.to_string())))
            .transpose()?;
        let checkpoint = read_optional(&self.paths.checkpoint)?
            .map(|b| Checkpoint::decode(&b).map_err(|e| content(&self.paths.checkpoint, e)))
            .transpose()?;
        let pins = read_optional(&self.paths.pins)?
            .map(|b| IdentityPins::decode(&b).map_err(|e| content(&self.paths.pins, e)))
            .transpose()?;
        Ok(OnDisk {
            state,
            checkpoint,
            pins,
        })
    }

    /// Persists a state: the state file first, then its checkpoint.
    pub fn save(&self, state: &StateFile) -> Result<(), StoreError> {
        self.save_transition(state).map_err(|e| e.error)
    }

    /// [`Self::save`], reporting whether a failure left both files unchanged
    /// (the rotation driver treats that case as a deferred observation).
    pub fn save_transition(&self, state: &StateFile) -> Result<(), SaveError> {
        write_atomic_reporting(&self.paths.state, &state.encode()).map_err(|f| SaveError {
            error: f.error,
            files_unchanged: !f.replaced,
        })?;
        write_atomic(&self.paths.checkpoint, &Checkpoint::of(state).encode()).map_err(|error| SaveError {
            error,
            files_unchanged: false,
        })?;
        self.raise_anchor(state);
        Ok(())
    }

    /// Raises the rollback anchor in the pins file to `state`, last: an
    /// anchor that lags the state (a crash or a failed write here) is safe,
    /// the next save or start raises it. No pins file yet: the start that
    /// pins the identity writes the anchor.
    fn raise_anchor(&self, state: &StateFile) {
        let raised = read_optional(&self.paths.pins).and_then(|bytes| {
            let Some(bytes) = bytes else { return Ok(None) };
            let pins = IdentityPins::decode(&bytes).map_err(|why| file_err(&self.paths.pins, why))?;
            Ok(pins.raised_to(state))
        });
        let written = match raised {
            Ok(Some(next)) => self.save_pins(&next),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(message = "registry.anchor_write_failed", generation = state.generation, error = %e);
        }
    }

    pub fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        write_atomic(&self.paths.checkpoint, &checkpoint.encode())
    }

    pub fn save_pins(&self, pins: &IdentityPins) -> Result<(), StoreError> {
        write_atomic(&self.paths.pins, &pins.encode())
    }

    /// Appends one line to the re-pin history (the file is replaced
    /// atomically with its old content plus `line`).
    pub fn append_pins_history(&self, line: &[u8]) -> Result<(), StoreError> {
        let mut all = read_optional(&self.paths.pins_history)?.unwrap_or_default();
        all.extend_from_slice(line);
        write_atomic(&self.paths.pins_history, &all)
    }
}

/// Reads the state file and checkpoint without the writer lock, for the
/// read-only commands (`doctor`, `rotation-plan`) that run beside a live
/// provider. The same file checks as [`RegistryStore::read`] apply.
pub fn read_unlocked(paths: &RegistryPaths) -> Result<(Option<StateFile>, Option<Checkpoint>), String> {
    let read = |path: &Path| read_optional(path).map_err(|e| e.to_string());
    let state = read(&paths.state)?
        .map(|b| StateFile::decode(&b))
        .transpose()
        .map_err(|e| format!("{}: {e}", paths.state.display()))?;
    let checkpoint = read(&paths.checkpoint)?
        .map(|b| Checkpoint::decode(&b))
        .transpose()
        .map_err(|e| format!("{}: {e}", paths.checkpoint.display()))?;
    Ok((state, checkpoint))
}

/// Reads the identity pins file without the writer lock, for the read-only
/// commands; `None` when there is none yet.
pub fn read_pins_unlocked(paths: &RegistryPaths) -> Result<Option<IdentityPins>, String> {
    read_optional(&paths.pins)
        .map_err(|e| e.to_string())?
        .map(|b| IdentityPins::decode(&b))
        .transpose()
        .map_err(|e| format!("{}: {e}", paths.pins.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bao_kms_core::identity::IdentityScope;
    use bao_kms_core::snapshot::KeySnapshot;
    use std::os::unix::fs::PermissionsExt;

    fn state() -> StateFile {
        let scope = IdentityScope {
            provider_name: "p".into(),
            cluster_id: "c".into(),
            openbao_instance_id: "i".into(),
            openbao_namespace: String::new(),
            transit_mount_id: "m".into(),
            key_lineage_id: "l".into(),
            transit_mount_path: "transit".into(),
            transit_key_name: "k".into(),
        };
        StateFile::bootstrap(&scope, &KeySnapshot::new(&scope, 1, 100).unwrap(), 50)
    }

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn save_then_read_round_trips_with_safe_modes() {
        let d = dir();
        let store = RegistryStore::open(&d.path().join("key-registry.json")).unwrap();
        assert!(store.read().unwrap().state.is_none());
        let s = state();
        store.save(&s).unwrap();
        let on_disk = store.read().unwrap();
        assert_eq!(on_disk.state.unwrap(), s);
        assert_eq!(on_disk.checkpoint.unwrap(), Checkpoint::of(&s));
        let mode = fs::metadata(&store.paths.state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!d.path().join(".key-registry.json.tmp").exists());
    }

    #[test]
    fn a_save_that_fails_before_the_rename_leaves_the_files_unchanged() {
        let d = dir();
        let store = RegistryStore::open(&d.path().join("key-registry.json")).unwrap();
        let s = state();
        store.save(&s).unwrap();
        let before = (
            fs::read(&store.paths.state).unwrap(),
            fs::read(&store.paths.checkpoint).unwrap(),
        );
        // A directory where the temp file goes cannot be removed as a file.
        fs::create_dir(d.path().join(".key-registry.json.tmp")).unwrap();
        let next = s.successor(|_| {}).unwrap();
        let err = store.save_transition(&next).unwrap_err();
        assert!(err.files_unchanged, "{err}");
        let after = (
            fs::read(&store.paths.state).unwrap(),
            fs::read(&store.paths.checkpoint).unwrap(),
        );
        assert_eq!(before, after);

        fs::remove_dir(d.path().join(".key-registry.json.tmp")).unwrap();
        fs::create_dir(d.path().join(".key-registry.json.checkpoint.tmp")).unwrap();
        let err = store.save_transition(&next).unwrap_err();
        assert!(!err.files_unchanged, "the state file was replaced: {err}");
        assert_eq!(store.read().unwrap().state.unwrap(), next);
    }

    #[test]
    fn second_writer_is_refused() {
        let d = dir();
        let path = d.path().join("key-registry.json");
        let _first = RegistryStore::open(&path).unwrap();
        assert!(matches!(RegistryStore::open(&path), Err(StoreError::Locked { .. })));
    }

    #[test]
    fn unsafe_directory_and_files_are_refused() {
        let d = dir();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o770)).unwrap();
        assert!(matches!(
            RegistryStore::open(&d.path().join("r.json")),
            Err(StoreError::Directory { .. })
        ));
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();

        let store = RegistryStore::open(&d.path().join("r.json")).unwrap();
        store.save(&state()).unwrap();
        fs::set_permissions(&store.paths.state, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(store.read(), Err(StoreError::File { .. })));
        fs::set_permissions(&store.paths.state, fs::Permissions::from_mode(0o640)).unwrap();

        fs::write(&store.paths.checkpoint, b"not json").unwrap();
        fs::set_permissions(&store.paths.checkpoint, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(store.read(), Err(StoreError::Content { .. })));

        fs::remove_file(&store.paths.checkpoint).unwrap();
        std::os::unix::fs::symlink(&store.paths.state, &store.paths.checkpoint).unwrap();
        assert!(matches!(store.read(), Err(StoreError::File { .. })));
    }
}
