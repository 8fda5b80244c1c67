//! Cluster mode inside the engine, with nothing of the transport (the `cluster` module brings
//! NATS JetStream).
//!
//! A shared, replicated log of *groups* orders every write of the cluster; each node is a
//! deterministic follower of it:
//! - the **publisher** (the writer thread's job in cluster mode) gathers and plans a group
//!   against this node's view exactly as the single node does, encodes its frames as they will
//!   sit in a segment, and hands them to the [`SharedLog`] to be appended right after the last
//!   group this node applied. When another node got there first it waits until the follower has
//!   applied that group, plans again (events may now be duplicates or conflicts) and retries;
//! - the **follower** takes every group in order, checks it (its position, its first seq, the
//!   previous group's hash, every frame), appends it with one write and one fdatasync and folds
//!   it. A check that fails halts the follower for good with the reason, which health reports:
//!   a node never applies a history other than the shared one. A message the transport could
//!   not take for an authenticated group is skipped and counted, never applied: the shared log's
//!   positions may have holes, and the next group goes right after the last position *read*;
//! - every group carries the [`Rules`] it was planned under; a node whose rules differ from the
//!   last applied group's refuses to publish (see [`RulesPolicy`]).
//!
//! A client is answered only once this node's follower has applied the group carrying its
//! events: stored by the shared log, and durable and visible here.

mod feed;
mod follow;
mod liveness;
mod publish;
mod rules;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::storage::format::{self, Hash};

pub(super) use feed::group_feed;
pub use feed::{Delivered, GroupFeed, FEED_BYTES_MAX, FEED_GROUPS_MAX};
pub(super) use follow::{follower, run_follower};
pub use follow::{ApplyError, Follower};
pub use liveness::{Liveness, NotReady, OFFER_STALL};
pub(super) use publish::run_publisher;
pub use publish::PublishLimits;
pub use rules::{fingerprint, Rules, RulesPolicy};

/// One group of frames as the shared log carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The seq of its first frame.
    pub first_seq: u64,
    /// The chain hash of the group before it (zeros for the first).
    pub prev_hash: Hash,
    /// Its frames, encoded as a segment holds them, `write_index` counting from 0.
    pub frames: bytes::Bytes,
    /// The rules of the node that planned it (not in its chain hash).
    pub rules: Rules,
}

impl Group {
    /// The group's chain hash: SHA-256 over the previous group's hash, the first seq (8 bytes,
    /// little-endian) and the frames. Two nodes that applied the same groups hold the same hash.
    pub fn hash(&self) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash);
        hasher.update(self.first_seq.to_le_bytes());
        hasher.update(&self.frames);
        hasher.finalize().into()
    }

    /// How many frames it holds, by their length prefixes alone (no CRC check): `None` if its
    /// bytes do not divide into frames.
    pub fn frame_count(&self) -> Option<u64> {
        let (mut at, mut count) = (0, 0);
        while at < self.frames.len() {
            at = format::frame_end(&self.frames, at)?;
            count += 1;
        }
        (at == self.frames.len()).then_some(count)
    }
}

/// The most bytes a frame adds to its event's body and ids: the frame header, the fixed fields
/// and postcard's length prefixes. An event encodes to at most this plus the lengths of its
/// body and ids.
pub const FRAME_FIXED_BYTES_MAX: usize = format::FRAME_HEADER_BYTES
    + 10 // seq
    + 5 // write_index
    + 10 // received_at_us
    + 8 // key_id
    + 1 // action
    + 8 // timestamp
    + 4 * 5 // the length prefixes of four strings
    + 1; // event_id's option tag

/// The most bytes `events` can encode to.
fn frames_bytes_max(events: &[crate::event::NewEvent]) -> usize {
    events
        .iter()
        .map(|e| {
            FRAME_FIXED_BYTES_MAX
                + e.body().len()
                + e.interaction_id().len()
                + e.mcp_id().len()
                + e.event_id().map_or(0, str::len)
        })
        .sum()
}

/// Where a node stands in the shared log: the last group it applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// The rules that group carries (`None`: unknown, or no group yet).
    pub rules: Option<Rules>,
    /// That group's position in the shared log (0: none yet).
    pub position: u64,
    /// Its chain hash (zeros before the first group).
    pub hash: Hash,
    /// The seq the next group must begin with.
    pub next_seq: u64,
    /// The receive time of its frames; the next group's may not be earlier.
    pub received_at_us: u64,
}

/// The follower's progress, which the publisher waits on.
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<ProgressState>,
    /// This node's rules, against the applied group's.
    policy: RulesPolicy,
    /// Messages of the shared log skipped as not authenticated groups.
    skipped: std::sync::atomic::AtomicU64,
    changed: Condvar,
    /// Groups offered again because another node's group came first.
    moved: std::sync::atomic::AtomicU64,
    /// Groups offered again because the shared log took no writes.
    unavailable: std::sync::atomic::AtomicU64,
    /// Whether this node can write now, for readiness.
    pub(crate) liveness: Liveness,
}

#[derive(Debug, Default)]
struct ProgressState {
    applied: Applied,
    /// The last position read: `applied.position`, or a skipped message after it.
    read: u64,
    halted: Option<String>,
    pending: u64,
    /// (position, hash) of the groups applied last, oldest first, at most [`RECENT_GROUPS`].
    recent: std::collections::VecDeque<(u64, Hash)>,
}

/// How many applied groups' hashes the publisher can look back on to learn whether a group it
/// offered was stored.
const RECENT_GROUPS: usize = 4096;

/// What was applied at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// The group with this hash.
    Applied(Hash),
    /// A group too long ago to remember, or a skipped message.
    Forgotten,
}

/// What `/metrics` and health tell of a cluster node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The last group applied.
    pub applied: Applied,
    /// Groups the shared log held beyond the last one read, when it was read.
    pub pending: u64,
    /// Why the follower halted, if it did.
    pub halted: Option<String>,
    /// Groups this node offered again because another node's group came first.
    pub moved: u64,
    /// Groups this node offered again because the shared log took no writes.
    pub unavailable: u64,
    /// Messages skipped as not authenticated groups.
    pub skipped: u64,
    /// Why this node may not publish under its rules, if it may not.
    pub rules_differ: Option<String>,
}

impl Progress {
    /// The progress of a node publishing under `policy`, before it read anything.
    pub fn new(policy: RulesPolicy) -> Progress {
        Progress {
            policy,
            ..Progress::default()
        }
    }

    /// What there is to report.
    pub fn report(&self) -> Report {
        let state = self.lock();
        let count = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        Report {
            applied: state.applied,
            pending: state.pending,
            halted: state.halted.clone(),
            moved: count(&self.moved),
            unavailable: count(&self.unavailable),
            skipped: count(&self.skipped),
            rules_differ: self.policy.refusal(state.applied.rules),
        }
    }

    /// Why this node may not publish now, if its rules are not those of the last group applied.
    pub fn rules_differ(&self) -> Option<String> {
        self.policy.refusal(self.lock().applied.rules)
    }

    /// The last group applied and the last position read, together.
    fn standing(&self) -> (Applied, u64) {
        let state = self.lock();
        (state.applied, state.read)
    }

    /// The last position read (applied or skipped): where this node's next group must go after.
    pub fn read(&self) -> u64 {
        self.lock().read
    }

    /// The message at `position` (after the last read) was skipped.
    pub(super) fn skip(&self, position: u64) {
        self.lock().read = position;
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_all();
    }

    pub(super) fn set_pending(&self, groups: u64) {
        self.lock().pending = groups;
    }

    /// The last group applied.
    pub fn applied(&self) -> Applied {
        self.lock().applied
    }

    /// Why the follower halted, if it did.
    pub fn halted(&self) -> Option<String> {
        self.lock().halted.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().expect("progress lock")
    }

    pub(super) fn set(&self, applied: Applied) {
        let mut state = self.lock();
        state.applied = applied;
        state.read = applied.position;
        state.recent.push_back((applied.position, applied.hash));
        if state.recent.len() > RECENT_GROUPS {
            state.recent.pop_front();
        }
        drop(state);
        self.changed.notify_all();
    }

    /// What was applied at `position`, or `None` if nothing was read there yet.
    fn applied_at(&self, position: u64) -> Option<Lookup> {
        let state = self.lock();
        if position > state.read {
            return None;
        }
        let found = state.recent.iter().rev().find(|(at, _)| *at == position);
        Some(found.map_or(Lookup::Forgotten, |&(_, hash)| Lookup::Applied(hash)))
    }

    pub(super) fn halt(&self, reason: String) {
        self.lock().halted = Some(reason);
        self.changed.notify_all();
    }

    /// Waits until the follower has read position `position` (true) or halted, or until
    /// `deadline` (false).
    fn wait_for(&self, position: u64, deadline: Instant) -> bool {
        let mut state = self.lock();
        loop {
            if state.read >= position {
                return true;
            }
            if state.halted.is_some() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .expect("progress lock")
                .0;
        }
    }
}

/// Why the shared log did not take a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareError {
    /// A group was appended after the position given: apply it, then plan again.
    Moved,
    /// The shared log takes no writes now (no leader, no majority, unreachable); the reason.
    Unavailable(String),
}

/// The transport's half of publishing.
pub trait SharedLog: Send {
    /// Appends `group` right after position `after` (the last position this node read) and
    /// returns its position once the shared log has stored it, trying until `deadline`. Asked
    /// again with the same group and `after` (a retry after a lost answer), it must not store
    /// the group twice.
    fn append(&mut self, group: &Group, after: u64, deadline: Instant) -> Result<u64, ShareError>;
}
