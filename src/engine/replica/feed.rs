//! The feed between the transport and the follower thread: bounded in groups and in bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::Group;

/// One delivered group: its position, and the group or why the message is not an authenticated
/// one (which the follower skips).
pub type Delivered = (u64, Result<Group, String>);

/// Where the transport hands delivered groups to the follower thread. Bounded in groups and in
/// bytes, so a follower that falls behind slows the transport's reading instead of growing
/// memory.
pub struct GroupFeed {
    tx: mpsc::SyncSender<Delivered>,
    /// Frame bytes handed over and not yet taken by the follower.
    bytes: Arc<AtomicUsize>,
}

impl GroupFeed {
    /// Hands a group over, or gives it back (`Full`) while [`FEED_GROUPS_MAX`] groups or
    /// [`FEED_BYTES_MAX`] bytes wait; a group larger than that alone still goes once the feed
    /// is empty.
    pub fn try_send(&self, item: Delivered) -> Result<(), mpsc::TrySendError<Delivered>> {
        let size = item.1.as_ref().map_or(0, |group| group.frames.len());
        let waiting = self.bytes.load(Ordering::SeqCst);
        if waiting > 0 && waiting + size > FEED_BYTES_MAX {
            return Err(mpsc::TrySendError::Full(item));
        }
        self.tx.try_send(item)?;
        self.bytes.fetch_add(size, Ordering::SeqCst);
        Ok(())
    }
}

/// The follower's end of a [`GroupFeed`].
pub(in crate::engine) fn group_feed() -> (GroupFeed, FeedReceiver) {
    let (tx, rx) = mpsc::sync_channel(FEED_GROUPS_MAX);
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        GroupFeed {
            tx,
            bytes: Arc::clone(&bytes),
        },
        FeedReceiver { rx, bytes },
    )
}

/// What the follower thread receives from.
pub(in crate::engine) struct FeedReceiver {
    rx: mpsc::Receiver<Delivered>,
    bytes: Arc<AtomicUsize>,
}

impl FeedReceiver {
    pub(super) fn recv_timeout(&self, wait: Duration) -> Result<Delivered, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(wait)
    }

    /// A received group's bytes are no longer waiting.
    pub(super) fn taken(&self, group: &Group) {
        self.bytes.fetch_sub(group.frames.len(), Ordering::SeqCst);
    }
}

/// Groups waiting for the follower, at most.
pub const FEED_GROUPS_MAX: usize = 64;
/// Frame bytes waiting for the follower, at most (but one group larger than this, alone).
pub const FEED_BYTES_MAX: usize = 64 * 1024 * 1024;
