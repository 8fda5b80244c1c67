//! The seam under the log's files: every write, sync, truncation, creation and removal of a
//! file in the data directory that the server makes (the writer's, and start-up's own: removing a
//! segment that never got its header, quarantining and truncating a torn tail, recording the cut,
//! retention's deletions) goes through a [`Disk`]. In production it is the file system and
//! nothing else. In tests it can also carry a simulated power supply (`sim::Power`): the
//! real files act as the volatile cache, while the simulation keeps what an fdatasync (or a
//! directory sync) would have made durable, and a power cut yields that durable image, with
//! unsynced writes kept, dropped, reordered or torn at sector granularity, as a real disk may
//! leave them. Or it can carry one injected failure of a group's write or fdatasync
//! (`sim::Faults`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

#[cfg(test)]
use std::sync::Arc;

use super::dir::FILE_MODE;

/// Where the log's files are written. Cheap to clone.
#[derive(Clone, Default)]
pub struct Disk {
    #[cfg(test)]
    power: Option<Arc<sim::Power>>,
    #[cfg(test)]
    faults: Option<Arc<sim::Faults>>,
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

    /// Opens an existing file for writing. (Opening changes nothing on disk: the simulation is
    /// not told.)
    pub(super) fn open_write(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).open(path)
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
        #[cfg(test)]
        if let Some(kept) = self.faults.as_ref().and_then(|f| f.on_write(offset, bytes)) {
            file.write_all_at(&bytes[..kept], offset)?;
            return Err(io::Error::other("injected write failure"));
        }
        file.write_all_at(bytes, offset)
    }

    /// Makes the file's data durable.
    pub(super) fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        self.before(|p| p.sync(path))?;
        #[cfg(test)]
        if let Some(faults) = &self.faults {
            faults.on_sync()?;
        }
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

    /// Writes a new file (0600) whole and syncs it; its entry is durable once its directory is
    /// synced.
    pub(super) fn write_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let file = self.create_new(path)?;
        self.write_at(&file, path, bytes, 0)?;
        self.sync_data(&file, path)
    }

    /// Appends `bytes` to a file, created (0600) if missing, and syncs them.
    pub(super) fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let file = match OpenOptions::new().write(true).open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => self.create_new(path)?,
            Err(err) => return Err(err),
        };
        let end = file.metadata()?.len();
        self.write_at(&file, path, bytes, end)?;
        self.sync_data(&file, path)
    }

    /// Cuts a file to `len` bytes, durably.
    pub(super) fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = self.open_write(path)?;
        self.set_len(&file, path, len)?;
        self.sync_data(&file, path)
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
    use crate::storage::format::FOOTER_MARKER;

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
        /// The operation the power was cut at: its kind, and the file or directory.
        cut_op: Option<(&'static str, PathBuf)>,
        /// Whether a file's sync returns without making anything durable (a disk that lies, or a
        /// writer that acknowledges before its fdatasync: to the simulation they are one).
        syncs_lie: bool,
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
                cut_op: None,
                syncs_lie: false,
            })))
        }

        /// A supply over files already on disk, each durable with its content: a machine started
        /// again from what an earlier cut left, to be cut in turn.
        pub(crate) fn restore<'a>(
            cut_at: u64,
            seed: u64,
            files: impl IntoIterator<Item = (PathBuf, &'a [u8])>,
        ) -> Arc<Power> {
            let power = Power::new(cut_at, seed);
            let mut state = power.0.lock().unwrap();
            for (path, content) in files {
                state.files.insert(
                    path,
                    FileState {
                        durable: content.to_vec(),
                        entry_durable: true,
                        ..FileState::default()
                    },
                );
            }
            drop(state);
            power
        }

        /// Makes every later file sync a lie: it returns without making anything durable.
        pub(crate) fn lie_on_syncs(&self) {
            self.0.lock().unwrap().syncs_lie = true;
        }

        /// The operation the power was cut at (its kind, such as `set_len`, and its file), once
        /// cut.
        pub(crate) fn cut_op(&self) -> Option<(&'static str, PathBuf)> {
            self.0.lock().unwrap().cut_op.clone()
        }

        /// A disk on this supply.
        pub(crate) fn disk(self: &Arc<Power>) -> Disk {
            Disk {
                power: Some(Arc::clone(self)),
                faults: None,
            }
        }

        /// The image the cut left, file by file, once the power is cut.
        pub(crate) fn image(&self) -> Option<BTreeMap<PathBuf, Vec<u8>>> {
            self.0.lock().unwrap().image.clone()
        }

        /// Counts an operation; at the cut, builds the image and fails this and every later one.
        fn tick(state: &mut State, kind: &'static str, path: &Path) -> io::Result<()> {
            if state.image.is_some() {
                return Err(io::Error::other("the power is cut"));
            }
            state.ops += 1;
            if state.ops >= state.cut_at {
                let image = cut(state);
                state.image = Some(image);
                state.cut_op = Some((kind, path.to_path_buf()));
                return Err(io::Error::other("the power is cut"));
            }
            Ok(())
        }

        fn with(
            &self,
            kind: &'static str,
            path: &Path,
            op: impl FnOnce(&mut State),
        ) -> io::Result<()> {
            let mut state = self.0.lock().unwrap();
            Power::tick(&mut state, kind, path)?;
            op(&mut state);
            Ok(())
        }

        pub(super) fn create(&self, path: &Path) -> io::Result<()> {
            self.with("create", path, |s| {
                let file = s.files.entry(path.to_path_buf()).or_default();
                file.durable.clear();
                file.pending.clear();
                file.entry_pending = Some(true);
            })
        }

        pub(super) fn write(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
            self.with("write", path, |s| {
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
            self.with("set_len", path, |s| {
                s.files
                    .entry(path.to_path_buf())
                    .or_default()
                    .pending
                    .push(Pending::SetLen(len))
            })
        }

        pub(super) fn sync(&self, path: &Path) -> io::Result<()> {
            if self.0.lock().unwrap().syncs_lie {
                return Ok(());
            }
            self.with("sync", path, |s| {
                let file = s.files.entry(path.to_path_buf()).or_default();
                for op in std::mem::take(&mut file.pending) {
                    apply(&mut file.durable, &op);
                }
            })
        }

        pub(super) fn remove(&self, path: &Path) -> io::Result<()> {
            self.with("remove", path, |s| {
                s.files.entry(path.to_path_buf()).or_default().entry_pending = Some(false)
            })
        }

        pub(super) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.with("sync_dir", dir, |s| {
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

    /// One failure injected into a group's write: the next write of frames (not a header, at
    /// offset 0, nor a footer, which begins with its marker; no frame length is the marker)
    /// fails after `bytes` of it, or is written whole and then its fdatasync fails.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Fault {
        /// Write only this many bytes of the group, then fail as a full disk would.
        Write { bytes: usize },
        /// Write the whole group, then fail the fdatasync.
        Sync,
    }

    /// Failures armed for a disk: each fires once.
    #[derive(Debug, Default)]
    pub(crate) struct Faults(Mutex<FaultState>);

    #[derive(Debug, Default)]
    struct FaultState {
        armed: Option<Fault>,
        fail_next_sync: bool,
    }

    impl Faults {
        /// Failures for a disk, none armed yet.
        pub(crate) fn new() -> Arc<Faults> {
            Arc::default()
        }

        /// A disk that fails as armed.
        pub(crate) fn disk(self: &Arc<Faults>) -> Disk {
            Disk {
                power: None,
                faults: Some(Arc::clone(self)),
            }
        }

        /// Fails the next group's write or fdatasync.
        pub(crate) fn arm(&self, fault: Fault) {
            self.0.lock().unwrap().armed = Some(fault);
        }

        /// For a write of `bytes` at `offset`: how many of them to write before failing, if this
        /// write is to fail.
        pub(super) fn on_write(&self, offset: u64, bytes: &[u8]) -> Option<usize> {
            let footer = bytes.starts_with(&FOOTER_MARKER.to_le_bytes());
            if offset == 0 || footer {
                return None;
            }
            let mut state = self.0.lock().unwrap();
            match state.armed.take()? {
                Fault::Write { bytes: kept } => Some(kept.min(bytes.len())),
                Fault::Sync => {
                    state.fail_next_sync = true;
                    None
                }
            }
        }

        /// Fails this sync if the group's write before it was armed to.
        pub(super) fn on_sync(&self) -> io::Result<()> {
            let mut state = self.0.lock().unwrap();
            match std::mem::take(&mut state.fail_next_sync) {
                true => Err(io::Error::other("injected fdatasync failure")),
                false => Ok(()),
            }
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
