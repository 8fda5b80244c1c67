//! The seam under the writer: every write, sync, truncation, creation and removal of a segment
//! file goes through a [`Disk`]. In production it is the file system and nothing else. In tests
//! it can also carry a simulated power supply ([`Disk::simulated`]): the real files act as the
//! volatile cache, while the simulation keeps what an fdatasync (or a directory sync) would have
//! made durable, and a power cut yields that durable image, with unsynced writes kept, dropped,
//! reordered or torn at sector granularity, as a real disk may leave them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

#[cfg(test)]
use std::sync::Arc;

use super::dir::FILE_MODE;

/// Where segment files are written. Cheap to clone.
#[derive(Clone, Default)]
pub struct Disk {
    #[cfg(test)]
    power: Option<Arc<sim::Power>>,
    #[cfg(not(test))]
    _private: (),
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Disk")
    }
}

impl Disk {
    /// The file system.
    pub fn real() -> Disk {
        Disk::default()
    }

    /// Creates a new file for reading and writing (mode 0600); it fails if the file exists.
    pub(super) fn create_new(&self, path: &Path) -> io::Result<File> {
        self.before(|p| p.create(path))?;
        OpenOptions::new()
            .mode(FILE_MODE)
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }

    /// Writes all of `bytes` at `offset`.
    pub(super) fn write_at(
        &self,
        file: &File,
        path: &Path,
        bytes: &[u8],
        offset: u64,
    ) -> io::Result<()> {
        self.before(|p| p.write(path, offset, bytes))?;
        file.write_all_at(bytes, offset)
    }

    /// Makes the file's data durable.
    pub(super) fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        self.before(|p| p.sync(path))?;
        file.sync_data()
    }

    /// Cuts or extends the file to `len` bytes (durable only once synced).
    pub(super) fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.before(|p| p.set_len(path, len))?;
        file.set_len(len)
    }

    /// Removes a file (durable only once its directory is synced).
    pub(super) fn remove(&self, path: &Path) -> io::Result<()> {
        self.before(|p| p.remove(path))?;
        std::fs::remove_file(path)
    }

    /// Makes the directory's entries (created and removed files) durable.
    pub(super) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.before(|p| p.sync_dir(dir))?;
        File::open(dir).and_then(|d| d.sync_all())
    }

    /// Tells the simulated power supply, if any, of an operation about to happen; fails once the
    /// power is cut.
    #[cfg(test)]
    fn before(&self, op: impl FnOnce(&sim::Power) -> io::Result<()>) -> io::Result<()> {
        match &self.power {
            Some(power) => op(power),
            None => Ok(()),
        }
    }

    #[cfg(not(test))]
    fn before(&self, _op: impl FnOnce(&NoPower) -> io::Result<()>) -> io::Result<()> {
        Ok(())
    }
}

/// The production build's stand-in for the simulation: never consulted.
#[cfg(not(test))]
struct NoPower;

#[cfg(not(test))]
#[allow(dead_code)]
impl NoPower {
    fn create(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn write(&self, _: &Path, _: u64, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn sync(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn set_len(&self, _: &Path, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn remove(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod sim {
    //! A simulated power supply over real files, in the manner of SQLite's crash-test VFS: it
    //! records every operation, keeps each file's durable content apart, and at the cut builds
    //! the image a power loss could leave.

    use std::collections::BTreeMap;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use super::Disk;

    /// Bytes a disk writes atomically: a torn write keeps or loses whole sectors.
    const SECTOR_BYTES: u64 = 512;

    /// An operation not yet made durable.
    #[derive(Debug, Clone)]
    enum Pending {
        Write { offset: u64, bytes: Vec<u8> },
        SetLen(u64),
    }

    #[derive(Debug, Default)]
    struct FileState {
        /// What a sync made durable.
        durable: Vec<u8>,
        /// Operations since the last sync, in order.
        pending: Vec<Pending>,
        /// Whether its directory entry is durable (created, and the directory synced since).
        entry_durable: bool,
        /// Created or removed since the directory's last sync.
        entry_pending: Option<bool>,
    }

    #[derive(Debug)]
    struct State {
        files: BTreeMap<PathBuf, FileState>,
        ops: u64,
        cut_at: u64,
        rng: u64,
        /// The image at the cut: file name → content.
        image: Option<BTreeMap<PathBuf, Vec<u8>>>,
    }

    /// The power supply: counts operations and cuts at the chosen one.
    #[derive(Debug)]
    pub(crate) struct Power(Mutex<State>);

    impl Power {
        /// A supply that cuts just before operation `cut_at` (counting from 1), with `seed`
        /// choosing what of the unsynced writes survives.
        pub(crate) fn new(cut_at: u64, seed: u64) -> Arc<Power> {
            Arc::new(Power(Mutex::new(State {
                files: BTreeMap::new(),
                ops: 0,
                cut_at,
                rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                image: None,
            })))
        }

        /// A disk on this supply.
        pub(crate) fn disk(self: &Arc<Power>) -> Disk {
            Disk {
                power: Some(Arc::clone(self)),
            }
        }

        /// The image the cut left, file by file, once the power is cut.
        pub(crate) fn image(&self) -> Option<BTreeMap<PathBuf, Vec<u8>>> {
            self.0.lock().unwrap().image.clone()
        }

        /// Counts an operation; at the cut, builds the image and fails this and every later one.
        fn tick(state: &mut State) -> io::Result<()> {
            if state.image.is_some() {
                return Err(io::Error::other("the power is cut"));
            }
            state.ops += 1;
            if state.ops >= state.cut_at {
                let image = cut(state);
                state.image = Some(image);
                return Err(io::Error::other("the power is cut"));
            }
            Ok(())
        }

        fn with(&self, op: impl FnOnce(&mut State)) -> io::Result<()> {
            let mut state = self.0.lock().unwrap();
            Power::tick(&mut state)?;
            op(&mut state);
            Ok(())
        }

        pub(super) fn create(&self, path: &Path) -> io::Result<()> {
            self.with(|s| {
                let file = s.files.entry(path.to_path_buf()).or_default();
                file.durable.clear();
                file.pending.clear();
                file.entry_pending = Some(true);
            })
        }

        pub(super) fn write(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
            self.with(|s| {
                s.files
                    .entry(path.to_path_buf())
                    .or_default()
                    .pending
                    .push(Pending::Write {
                        offset,
                        bytes: bytes.to_vec(),
                    })
            })
        }

        pub(super) fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
            self.with(|s| {
                s.files
                    .entry(path.to_path_buf())
                    .or_default()
                    .pending
                    .push(Pending::SetLen(len))
            })
        }

        pub(super) fn sync(&self, path: &Path) -> io::Result<()> {
            self.with(|s| {
                let file = s.files.entry(path.to_path_buf()).or_default();
                for op in std::mem::take(&mut file.pending) {
                    apply(&mut file.durable, &op);
                }
            })
        }

        pub(super) fn remove(&self, path: &Path) -> io::Result<()> {
            self.with(|s| {
                s.files.entry(path.to_path_buf()).or_default().entry_pending = Some(false)
            })
        }

        pub(super) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.with(|s| {
                for (path, file) in s.files.iter_mut() {
                    if path.parent() == Some(dir) {
                        if let Some(exists) = file.entry_pending.take() {
                            file.entry_durable = exists;
                        }
                    }
                }
            })
        }
    }

    fn apply(content: &mut Vec<u8>, op: &Pending) {
        match op {
            Pending::Write { offset, bytes } => {
                let end = *offset as usize + bytes.len();
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[*offset as usize..end].copy_from_slice(bytes);
            }
            Pending::SetLen(len) => content.resize(*len as usize, 0),
        }
    }

    fn next(rng: &mut u64) -> u64 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    }

    /// What a power loss may leave: every durable byte; of the unsynced operations, any subset
    /// applied in any order, a write possibly torn to some of its sectors; a directory entry made
    /// but not synced there or not.
    fn cut(state: &mut State) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut image = BTreeMap::new();
        let rng = &mut state.rng;
        for (path, file) in &state.files {
            let exists = match file.entry_pending {
                Some(pending) if next(rng).is_multiple_of(2) => pending,
                _ => file.entry_durable,
            };
            if !exists {
                continue;
            }
            let mut content = file.durable.clone();
            let mut pending = file.pending.clone();
            // Any order: shuffle.
            for i in (1..pending.len()).rev() {
                pending.swap(i, (next(rng) % (i as u64 + 1)) as usize);
            }
            for op in pending {
                match next(rng) % 3 {
                    0 => {}
                    1 => apply(&mut content, &op),
                    _ => match op {
                        // Torn: only some of its sectors reach the platter.
                        Pending::Write { offset, bytes } => {
                            let mut at = 0u64;
                            while (at as usize) < bytes.len() {
                                let sector_end = ((offset + at) / SECTOR_BYTES + 1) * SECTOR_BYTES;
                                let len = (sector_end - offset - at).min(bytes.len() as u64 - at);
                                if next(rng).is_multiple_of(2) {
                                    let part = Pending::Write {
                                        offset: offset + at,
                                        bytes: bytes[at as usize..(at + len) as usize].to_vec(),
                                    };
                                    apply(&mut content, &part);
                                }
                                at += len;
                            }
                        }
                        Pending::SetLen(_) => apply(&mut content, &op),
                    },
                }
            }
            image.insert(path.clone(), content);
        }
        image
    }
}
