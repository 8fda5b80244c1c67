//! The data directory's files apart from segment contents: the lock, the listing of segments,
//! read-only mappings, private directories and directory syncs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{parse_segment_file_name, Damage, StorageError};

/// Name of the lock file that keeps two servers off one data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Mode of every file the storage layer creates: the owner's alone.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Takes the exclusive lock of a data directory, creating it if needed. The lock lasts as long as
/// the returned file is open.
pub fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    create_private_dir(dir).map_err(StorageError::io("create directory", dir))?;
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .mode(FILE_MODE)
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StorageError::io("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(StorageError::Io {
            op: "lock",
            path,
            source,
        }),
    }
}

/// Every segment file of a directory, sorted by first seq.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(StorageError::io("read directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(StorageError::io("read directory", dir))?;
        let name = entry.file_name();
        if let Some(first_seq) = name.to_str().and_then(parse_segment_file_name) {
            // A link, a pipe or a device named like a segment was not made by mcplog, and
            // reading it could hang or never end.
            let kind = entry
                .file_type()
                .map_err(StorageError::io("stat", &entry.path()))?;
            if !kind.is_file() {
                let path = entry.path();
                return Err(StorageError::corrupt(&path, 0, Damage::NotRegularFile));
            }
            found.push((first_seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Maps a whole file read-only.
// One of the two mappings in the crate, each with its SAFETY argument; unsafe_code is denied elsewhere.
#[allow(unsafe_code)]
pub fn map_file(path: &Path) -> Result<Mmap, StorageError> {
    let file = File::open(path).map_err(StorageError::io("open", path))?;
    // SAFETY: segment files are only appended to by the writer and never rewritten in place, so
    // bytes within the length seen here do not change under the mapping.
    unsafe { Mmap::map(&file) }.map_err(StorageError::io("mmap", path))
}

/// Creates a directory and its missing parents readable by the owner only (0700): segments hold
/// every payload, and keys sit beside them. An existing directory keeps its mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Flushes a directory entry change (a created, renamed or removed file) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io("fsync directory", dir))
}
