//! A consistent copy of a live log, checked as start-up would check it.

use std::path::Path;

use super::dir::{create_private_dir, list_segments, sync_dir};
use super::format::{self, Decoded, Hash, HEADER_BYTES};
use super::held::valid_prefix;
use super::inspect::scan_log;
use super::repair::{write_new, REPAIRS_FILE};
use super::{segment_file_name, StorageError};

/// What a backup copied.
#[derive(Debug, Clone)]
pub struct Backup {
    /// Segment files copied.
    pub segments: usize,
    /// Events in the copy.
    pub events: u64,
    /// Bytes of segment data copied.
    pub bytes: u64,
    /// The copy's chain head: its newest segment's hash.
    pub chain_head: Hash,
}

/// Files beside the segments that a restored server needs: its keys and revocations.
const KEY_FILES: [&str; 3] = ["admin.key", "master.secret", "revoked.keys"];

/// Copies the log in `data_dir` to `dest` (a new or empty directory) while a server may be
/// writing it: sealed segments as they are, the active one up to its last whole valid frame,
/// the repairs record and the key files. Then checks the copy as start-up would.
pub fn backup(data_dir: &Path, dest: &Path) -> Result<Backup, StorageError> {
    let source = data_dir.join("segments");
    let target = dest.join("segments");
    if !source.is_dir() {
        return Err(StorageError::Io {
            op: "back up",
            path: source,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a data directory: it has no segments/ directory",
            ),
        });
    }
    refuse_inside(data_dir, dest)?;
    if std::fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(StorageError::Io {
            op: "back up into",
            path: dest.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the destination is not empty",
            ),
        });
    }
    create_private_dir(&target).map_err(StorageError::io("create directory", &target))?;
    let names = list_segments(&source)?;
    let mut copied = 0;
    for (position, (first_seq, path)) in names.iter().enumerate() {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            // Retention deletes the oldest sealed segments: one gone before it was read is
            // simply not in the backup.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && copied == 0 => continue,
            Err(source) => {
                return Err(StorageError::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                })
            }
        };
        let last = position + 1 == names.len();
        let len = if last {
            // The active segment: only whole frames; a write in progress is left out.
            let prefix = valid_prefix(&bytes, bytes.len());
            match format::decode_at(&bytes, prefix.end) {
                Decoded::Footer(_) => bytes.len(),
                _ => prefix.end,
            }
        } else {
            bytes.len()
        };
        if len < HEADER_BYTES {
            continue;
        }
        write_new(&target.join(segment_file_name(*first_seq)), &bytes[..len])?;
        copied += 1;
    }
    copy_if_present(&source.join(REPAIRS_FILE), &target.join(REPAIRS_FILE))?;
    for name in KEY_FILES {
        copy_if_present(&data_dir.join(name), &dest.join(name))?;
    }
    sync_dir(&target)?;
    sync_dir(dest)?;
    let mut events = 0;
    let infos = scan_log(&target, |_| events += 1, |_| {})?;
    Ok(Backup {
        segments: infos.len(),
        events,
        bytes: infos.iter().map(|i| i.bytes).sum(),
        chain_head: infos.last().map_or([0; 32], |i| i.hash),
    })
}

/// Refuses a destination inside the data directory being copied (or the directory itself), however
/// it is spelled: through symbolic links, `..`, a relative path or a bind mount. A copy there would be read back
/// by the copy itself, end up in later backups, and sit inside what retention and repair manage.
fn refuse_inside(data_dir: &Path, dest: &Path) -> Result<(), StorageError> {
    let refuse = |reason: String| StorageError::Io {
        op: "back up into",
        path: dest.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, reason),
    };
    let data = data_dir
        .canonicalize()
        .map_err(StorageError::io("resolve", data_dir))?;
    let target = resolve(dest).map_err(refuse)?;
    // By path, and by identity: a bind mount shows the data directory under another path, with
    // the same device and inode.
    let identity = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    };
    let data_identity = identity(&data);
    let inside = target.starts_with(&data)
        || target
            .ancestors()
            .any(|ancestor| data_identity.is_some() && identity(ancestor) == data_identity);
    if inside {
        return Err(refuse(
            "the destination is inside the data directory being copied; choose a directory outside it"
                .into(),
        ));
    }
    Ok(())
}

/// Where `path` leads once created: its longest existing ancestor with every link resolved, then
/// the components still to create, with `.` and `..` applied as creating them would apply them.
/// A link among the missing components (one that points nowhere) is refused: where it would
/// lead cannot be known before it is followed.
fn resolve(path: &Path) -> Result<std::path::PathBuf, String> {
    use std::path::Component;
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|err| format!("cannot read the current directory: {err}"))?
            .join(path)
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    let base = loop {
        match existing.canonicalize() {
            Ok(base) => break base,
            Err(_) => {
                if existing.symlink_metadata().is_ok() {
                    return Err(format!(
                        "{} is a symbolic link that leads nowhere",
                        existing.display()
                    ));
                }
                match (existing.file_name(), existing.parent()) {
                    (Some(name), Some(parent)) => {
                        rest.push(name.to_owned());
                        existing = parent;
                    }
                    // `..` or the root: take the parent lexically.
                    _ => match existing.parent() {
                        Some(parent) => {
                            rest.push("..".into());
                            existing = parent;
                        }
                        None => return Err("the destination cannot be resolved".into()),
                    },
                }
            }
        }
    };
    let mut resolved = base;
    for name in rest.iter().rev() {
        match Path::new(name).components().next() {
            Some(Component::ParentDir) => {
                resolved.pop();
            }
            Some(Component::CurDir) | None => {}
            Some(_) => resolved.push(name),
        }
    }
    Ok(resolved)
}

fn copy_if_present(from: &Path, to: &Path) -> Result<(), StorageError> {
    match std::fs::read(from) {
        Ok(bytes) => write_new(to, &bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Io {
            op: "read",
            path: from.to_path_buf(),
            source,
        }),
    }
}
