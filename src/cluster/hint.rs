//! Where this node stands in the stream, kept as a hint beside its log
//! (`<data>/cluster.position`: the position and hash of a group it applied), so that a restart
//! starts from a group it knows is the chain's instead of searching the stream for it. Anyone who
//! may publish on the subject can publish copies of earlier groups, which a search over the
//! stream can take for the chain's; a group this node applied cannot be a copy. The hint is
//! checked against the stream (the group at that position must have that hash) before it is
//! used, and a missing, stale or unreadable hint only means the search.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Cluster;
use crate::engine::Engine;
use crate::storage::format::Hash;

/// The hint's file name in the data directory.
pub const HINT_FILE: &str = "cluster.position";
/// How often the hint is brought up to date (a restart walks the stream from it over the groups
/// applied since, at most this long's worth).
const HINT_INTERVAL: Duration = Duration::from_secs(1);

/// The position and hash a hint file holds, if it holds one.
pub(super) fn read_hint(path: &Path) -> Option<(u64, Hash)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (position, hash) = text.trim().split_once(' ')?;
    Some((position.parse().ok()?, crate::hex::decode_array(hash)?))
}

/// Writes the hint whole (a new file renamed over the old one, so a reader never finds half of
/// one); not synced: a hint lost to a power cut only means the search.
fn write_hint(path: &Path, position: u64, hash: &Hash) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fresh = path.with_extension("position.new");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&fresh)?;
    writeln!(file, "{position} {}", crate::hex::encode(hash))?;
    std::fs::rename(&fresh, path)
}

impl Cluster {
    /// Runs as a task beside [`Cluster::follow`]: every [`HINT_INTERVAL`], writes the last group
    /// the follower applied to the hint file, if it moved.
    pub async fn keep_hint(self: Arc<Self>, engine: Arc<Engine>) {
        let Some(path) = self.hint.clone() else {
            return;
        };
        let mut written = 0;
        loop {
            if let Some(report) = engine.replica_progress() {
                let applied = report.applied;
                if applied.position > written {
                    match write_hint(&path, applied.position, &applied.hash) {
                        Ok(()) => written = applied.position,
                        Err(err) => {
                            tracing::warn!(error = %err, "writing the cluster position hint failed")
                        }
                    }
                }
            }
            tokio::time::sleep(HINT_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_reads_back_and_a_damaged_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HINT_FILE);
        assert_eq!(read_hint(&path), None);
        write_hint(&path, 42, &[7; 32]).unwrap();
        assert_eq!(read_hint(&path), Some((42, [7; 32])));
        std::fs::write(&path, "42 zz\n").unwrap();
        assert_eq!(read_hint(&path), None);
    }
}
