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
//!   a node never applies a history other than the shared one.
//!
//! A client is answered only once this node's follower has applied the group carrying its
//! events: stored by the shared log, and durable and visible here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::maintenance::{maintain, Maintenance};
use super::plan::{plan_group, Planned};
use super::writer_loop::{ack, gather, stored_events};
use super::{Submission, SubmitError, View, WriterHealth};
use crate::clock::now_us;
use crate::event::StoredEvent;
use crate::storage::format::{self, Decoded, Hash};
use crate::storage::LogWriter;

/// One group of frames as the shared log carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The seq of its first frame.
    pub first_seq: u64,
    /// The chain hash of the group before it (zeros for the first).
    pub prev_hash: Hash,
    /// Its frames, encoded as a segment holds them, `write_index` counting from 0.
    pub frames: bytes::Bytes,
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
    changed: Condvar,
    /// Groups offered again because another node's group came first.
    moved: std::sync::atomic::AtomicU64,
    /// Groups offered again because the shared log took no writes.
    unavailable: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct ProgressState {
    applied: Applied,
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
    /// A group too long ago to remember.
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
}

impl Progress {
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
        }
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
        state.recent.push_back((applied.position, applied.hash));
        if state.recent.len() > RECENT_GROUPS {
            state.recent.pop_front();
        }
        drop(state);
        self.changed.notify_all();
    }

    /// What was applied at `position`, or `None` if nothing is yet.
    fn applied_at(&self, position: u64) -> Option<Lookup> {
        let state = self.lock();
        if position > state.applied.position {
            return None;
        }
        let found = state.recent.iter().rev().find(|(at, _)| *at == position);
        Some(found.map_or(Lookup::Forgotten, |&(_, hash)| Lookup::Applied(hash)))
    }

    fn halt(&self, reason: String) {
        self.lock().halted = Some(reason);
        self.changed.notify_all();
    }

    /// Waits until the follower has applied position `position` (true) or halted, or until
    /// `deadline` (false).
    fn wait_for(&self, position: u64, deadline: Instant) -> bool {
        let mut state = self.lock();
        loop {
            if state.applied.position >= position {
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
    /// Appends `group` right after position `after` (the last group this node applied) and
    /// returns its position once the shared log has stored it, trying until `deadline`. Asked
    /// again with the same group and `after` (a retry after a lost answer), it must not store
    /// the group twice.
    fn append(&mut self, group: &Group, after: u64, deadline: Instant) -> Result<u64, ShareError>;
}

/// The limits of the publisher.
#[derive(Debug, Clone, Copy)]
pub struct PublishLimits {
    /// How long a submission may wait for the shared log before it is answered 503.
    pub ingest_deadline: Duration,
    /// The most bytes of frames one group may carry (below the shared log's message limit).
    pub group_bytes_max: usize,
}

/// The publisher: the writer thread of a node whose log is shared.
pub(super) fn run_publisher(
    mut log: Box<dyn SharedLog>,
    view: Arc<RwLock<View>>,
    progress: Arc<Progress>,
    rx: mpsc::Receiver<Submission>,
    limits: PublishLimits,
) {
    // Frames are larger than bodies: count each event at its largest.
    let frame_bytes = |s: &Submission| frames_bytes_max(&s.events);
    while let Ok(first) = rx.recv() {
        let (group, held) = gather(first, &rx, frame_bytes, limits.group_bytes_max);
        publish(&mut *log, &view, &progress, group, limits);
        if let Some(next) = held {
            publish(&mut *log, &view, &progress, vec![next], limits);
        }
    }
}

/// Plans `group` against the view, has the shared log append its frames, waits for the follower
/// to apply them and answers; plans again whenever another node's group came first.
fn publish(
    log: &mut dyn SharedLog,
    view: &RwLock<View>,
    progress: &Progress,
    group: Vec<Submission>,
    limits: PublishLimits,
) {
    // The deadline runs from when the group's oldest submission arrived, not from now.
    let oldest = group.iter().map(|s| s.queued_at).min();
    let deadline = oldest.expect("a group holds a submission") + limits.ingest_deadline;
    // The group last offered and the plan its frames carry: offered again, byte for byte, until
    // it is known to be stored here (answered from this plan) or overtaken (planned afresh).
    let mut offer: Option<Offer> = None;
    let mut reason = String::from("no answer yet");
    let outcome = loop {
        if let Some(made) = &offer {
            match progress.applied_at(made.at.position + 1) {
                Some(Lookup::Applied(hash)) if hash == made.hash => {
                    let made = offer.take().expect("checked above");
                    break Ok((made.at.next_seq, made.plans));
                }
                // Another group took its place: it can never be stored now.
                Some(_) => offer = None,
                None => {}
            }
        }
        if progress.halted().is_some() || Instant::now() >= deadline {
            break Err(unavailable(progress, &reason));
        }
        let made = match offer.take() {
            Some(made) => made,
            None => {
                // The view and `Applied` agree: the follower changes both under the view's
                // write lock.
                let guard = view.read().expect("view lock");
                let at = progress.applied();
                let (plans, appended) = plan_group(&guard.projection, &group, at.next_seq);
                drop(guard);
                if appended.is_empty() {
                    break Ok((at.next_seq, plans));
                }
                // Receive times never go backwards along the shared log.
                let now = now_us().max(at.received_at_us);
                let mut frames = Vec::new();
                for event in stored_events(&group, &appended, at.next_seq, now) {
                    format::encode_frame(&event, &mut frames);
                }
                let shared = Group {
                    first_seq: at.next_seq,
                    prev_hash: at.hash,
                    frames: frames.into(),
                };
                let made = Offer {
                    at,
                    hash: shared.hash(),
                    group: shared,
                    plans,
                };
                if made.group.frames.len() > limits.group_bytes_max {
                    // Only redaction makes frames outgrow the bound the group was gathered by:
                    // offer the submissions one by one; one alone that is too large is refused.
                    if group.len() > 1 {
                        for submission in group {
                            publish(log, view, progress, vec![submission], limits);
                        }
                        return;
                    }
                    break Err(SubmitError::TooLarge {
                        bytes: made.group.frames.len(),
                        max: limits.group_bytes_max,
                    });
                }
                made
            }
        };
        match log.append(&made.group, made.at.position, deadline) {
            Ok(position) if position == made.at.position + 1 => {
                // Stored; answered once this node's follower has applied it (checked above).
                if !progress.wait_for(position, deadline) {
                    reason = "applying it here took too long".into();
                }
            }
            Ok(position) => {
                // Not proof that this group sits right after `after` (some servers answer a
                // retry's message id before the first attempt is stored): offer it again.
                reason = format!("the stream answered position {position}");
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(ShareError::Moved) => {
                progress.moved.fetch_add(1, Ordering::Relaxed);
                // Apply what came first (perhaps this very group, from an earlier attempt).
                if !progress.wait_for(made.at.position + 1, deadline) {
                    reason = "catching up with other nodes' groups took too long".into();
                }
            }
            Err(ShareError::Unavailable(why)) => {
                progress.unavailable.fetch_add(1, Ordering::Relaxed);
                reason = why;
                std::thread::sleep(RETRY_PAUSE);
            }
        }
        offer = Some(made);
    };
    match outcome {
        Ok((next_seq, plans)) => {
            for (submission, plan) in group.into_iter().zip(plans) {
                let answer = plan
                    .map_err(SubmitError::Conflict)
                    .map(|slots| slots.iter().map(|&slot| ack(slot, next_seq)).collect());
                submission.answer(answer);
            }
        }
        Err(err) => {
            for submission in group {
                submission.answer(Err(err.clone()));
            }
        }
    }
}

/// A group offered to the shared log, with the state it was planned against and its plan.
struct Offer {
    at: Applied,
    group: Group,
    /// `group.hash()`, computed once.
    hash: Hash,
    plans: Vec<Planned>,
}

/// The pause before offering a group again to a shared log that could not take it.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

fn unavailable(progress: &Progress, reason: &str) -> SubmitError {
    SubmitError::Unavailable {
        message: match progress.halted() {
            Some(halted) => format!("this node stopped applying the cluster's log: {halted}"),
            None => format!("the cluster's log takes no writes now: {reason}"),
        },
    }
}

/// Why a group was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The group does not continue this node's history; the follower stops for good.
    Halt(String),
    /// The local write failed (a full disk, say); the same group may be applied again later.
    Storage(String),
}

/// The follower: applies the shared log's groups to this node's segments and view.
pub struct Follower {
    writer: LogWriter,
    view: Arc<RwLock<View>>,
    progress: Arc<Progress>,
    health: Arc<WriterHealth>,
    durable: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Follower {
    /// Checks the group delivered at `position` against what this node applied, appends the
    /// frames it does not hold yet and folds them.
    ///
    /// A group this node already holds in part (its last start cut a torn group short, or it
    /// resumed from an earlier group) must match the held frames byte for byte.
    pub fn apply(&mut self, position: u64, group: &Group) -> Result<(), ApplyError> {
        let applied = self.progress.applied();
        let halt = |why: String| {
            ApplyError::Halt(format!(
                "the group at position {position} (first seq {}): {why}",
                group.first_seq
            ))
        };
        if position != applied.position + 1 {
            return Err(halt(format!(
                "expected position {}, after the last applied group",
                applied.position + 1
            )));
        }
        if group.first_seq != applied.next_seq {
            return Err(halt(format!(
                "its first seq should be {}, the one after the last applied group",
                applied.next_seq
            )));
        }
        if group.prev_hash != applied.hash {
            return Err(halt(
                "its previous-group hash is not the hash of the last applied group".into(),
            ));
        }
        let checked = check_frames(group, applied.received_at_us).map_err(&halt)?;
        let local_next = self.writer.next_seq();
        if local_next < group.first_seq {
            return Err(halt(format!(
                "this node's log ends at seq {}, before the group begins",
                local_next - 1
            )));
        }
        // Frames this node already holds must be these frames.
        let count = checked.frames.len();
        let held = usize::try_from(local_next - group.first_seq).map_or(count, |n| n.min(count));
        {
            let view = self.view.read().expect("view lock");
            for (range, frame) in checked.frames.iter().take(held) {
                let seq = frame.seq;
                let same = view.catalog.with_event(seq, |event| {
                    let mut local = Vec::new();
                    format::encode_frame(event, &mut local);
                    local == group.frames[range.clone()]
                });
                if same != Some(Ok(true)) {
                    return Err(halt(format!(
                        "this node holds a different event at seq {seq}"
                    )));
                }
            }
        }
        let mut changes = Vec::new();
        if held < count {
            let from = checked.frames[held].0.start;
            let started = Instant::now();
            let written = self.writer.restamp_empty(checked.received_at_us).map(|()| {
                self.writer
                    .append_encoded(&group.frames[from..], checked.received_at_us, held == 0)
            });
            let written = match written {
                Ok(written) => written,
                Err(err) => return Err(self.storage_failed(err.public_message())),
            };
            self.health.fsync_seconds.observe(started.elapsed());
            changes = written.changes;
            if let Err(err) = written.result {
                self.apply_changes(changes);
                return Err(self.storage_failed(err.public_message()));
            }
        }
        let next = Applied {
            position,
            hash: group.hash(),
            next_seq: group.first_seq + count as u64,
            received_at_us: checked.received_at_us,
        };
        {
            let mut view = self.view.write().expect("view lock");
            for change in changes {
                view.catalog.apply(change);
            }
            for (_, frame) in checked.frames.iter().skip(held) {
                view.projection.apply(frame);
            }
            // Under the view's lock, so a publisher planning against the view sees the matching
            // position.
            self.progress.set(next);
        }
        *self.health.last_failure.lock().expect("health lock") = None;
        let last = next.next_seq - 1;
        self.durable
            .send_if_modified(|durable| (*durable != last).then(|| *durable = last).is_some());
        Ok(())
    }

    fn apply_changes(&self, changes: Vec<crate::storage::CatalogChange>) {
        let mut view = self.view.write().expect("view lock");
        for change in changes {
            view.catalog.apply(change);
        }
    }

    fn storage_failed(&self, message: String) -> ApplyError {
        tracing::error!(error = %message, "applying a group of the cluster's log failed; it is tried again");
        *self.health.last_failure.lock().expect("health lock") = Some(message.clone());
        ApplyError::Storage(message)
    }

    /// Stops the follower for good: health turns 503 with the reason, the publisher answers 503.
    fn halt(&self, reason: &str) {
        tracing::error!(%reason, "the cluster follower halted; this node applies nothing more");
        *self.health.halted.lock().expect("health lock") = Some(reason.to_owned());
        self.progress.halt(reason.to_owned());
    }
}

/// What checking a group's frames found.
struct Checked<'a> {
    /// Each frame's bytes within the group, and the frame decoded from them.
    frames: Vec<(std::ops::Range<usize>, StoredEvent<'a>)>,
    received_at_us: u64,
}

/// Every frame of `group` decodes with its CRC, carries the next seq and its index in the group,
/// and all share one receive time no earlier than `after_us`.
fn check_frames(group: &Group, after_us: u64) -> Result<Checked<'_>, String> {
    let mut frames = Vec::new();
    let mut received_at_us = None;
    let mut at = 0;
    while at < group.frames.len() {
        let n = frames.len() as u64;
        let (frame, end) = match format::decode_at(&group.frames, at) {
            Decoded::Frame { frame, end } => (frame, end),
            Decoded::Corrupt(kind) => return Err(format!("frame {n} does not decode: {kind}")),
            Decoded::Incomplete => return Err(format!("frame {n} is cut short")),
            Decoded::Footer(_) => return Err(format!("frame {n} is a segment footer")),
        };
        if frame.seq != group.first_seq + n || u64::from(frame.write_index) != n {
            return Err(format!(
                "frame {n} carries seq {} and write index {}",
                frame.seq, frame.write_index
            ));
        }
        match received_at_us {
            None if frame.received_at_us < after_us => {
                return Err(format!(
                    "its receive time {} is before the last applied group's {after_us}",
                    frame.received_at_us
                ))
            }
            None => received_at_us = Some(frame.received_at_us),
            Some(t) if t != frame.received_at_us => {
                return Err(format!("frame {n} has another receive time than frame 0"))
            }
            Some(_) => {}
        }
        frames.push((at..end, frame));
        at = end;
    }
    let received_at_us = received_at_us.ok_or("it holds no frame")?;
    Ok(Checked {
        frames,
        received_at_us,
    })
}

/// One delivered group: its position, and the group or why the message is not one (which halts
/// the follower).
pub type Delivered = (u64, Result<Group, String>);

/// Where the transport hands delivered groups to the follower thread. Bounded in groups and in
/// bytes, so a follower that falls behind slows the transport's reading instead of growing
/// memory.
pub struct GroupFeed {
    tx: mpsc::SyncSender<Delivered>,
    /// Frame bytes handed over and not yet taken by the follower.
    bytes: Arc<std::sync::atomic::AtomicUsize>,
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
pub(super) fn group_feed() -> (GroupFeed, FeedReceiver) {
    let (tx, rx) = mpsc::sync_channel(FEED_GROUPS_MAX);
    let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (
        GroupFeed {
            tx,
            bytes: Arc::clone(&bytes),
        },
        FeedReceiver { rx, bytes },
    )
}

/// What the follower thread receives from.
pub(super) struct FeedReceiver {
    rx: mpsc::Receiver<Delivered>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl FeedReceiver {
    fn recv_timeout(&self, wait: Duration) -> Result<Delivered, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(wait)
    }

    /// A received group's bytes are no longer waiting.
    fn taken(&self, group: &Group) {
        self.bytes.fetch_sub(group.frames.len(), Ordering::SeqCst);
    }
}

/// Groups waiting for the follower, at most.
pub const FEED_GROUPS_MAX: usize = 64;
/// Frame bytes waiting for the follower, at most (but one group larger than this, alone).
pub const FEED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The follower thread: applies what arrives; between groups, retention. A local storage
/// failure is retried each second; a group that does not continue the history halts it.
pub(super) fn run_follower(
    mut follower: Follower,
    feed: FeedReceiver,
    maintenance: Maintenance,
    stop: Arc<AtomicBool>,
) {
    let mut next_maintenance = Instant::now();
    loop {
        if Instant::now() >= next_maintenance {
            maintain(
                &mut follower.writer,
                &follower.view,
                &maintenance.policy,
                now_us(),
                false,
            );
            next_maintenance = Instant::now() + maintenance.interval;
        }
        let wait = next_maintenance.saturating_duration_since(Instant::now());
        let (position, group) = match feed.recv_timeout(wait) {
            Ok((position, Ok(group))) => {
                feed.taken(&group);
                (position, group)
            }
            Ok((position, Err(why))) => {
                follower.halt(&format!(
                    "the message at position {position} is not a group: {why}"
                ));
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        loop {
            match follower.apply(position, &group) {
                Ok(()) => break,
                // A poisoned writer refuses every write from now on: waiting will not help.
                Err(ApplyError::Storage(err)) if follower.writer.poisoned().is_some() => {
                    follower.halt(&format!("the local log cannot be written: {err}"));
                    return;
                }
                Err(ApplyError::Storage(_)) => {
                    std::thread::sleep(STORAGE_RETRY_PAUSE);
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
                Err(ApplyError::Halt(reason)) => {
                    follower.halt(&reason);
                    return;
                }
            }
        }
    }
}

/// The pause before applying again a group whose local write failed.
const STORAGE_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Builds the follower of an engine starting in cluster mode.
pub(super) fn follower(
    writer: LogWriter,
    view: Arc<RwLock<View>>,
    progress: Arc<Progress>,
    health: Arc<WriterHealth>,
    durable: Arc<tokio::sync::watch::Sender<u64>>,
) -> Follower {
    Follower {
        writer,
        view,
        progress,
        health,
        durable,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{Action, StoredEvent};
    use crate::projector::Projection;
    use crate::storage::{open, Disk, LogConfig};

    const T0_US: u64 = 1_790_000_000_000_000;

    /// A follower over a fresh log in `dir`, at the start of the shared log.
    fn follower_in(dir: &std::path::Path) -> Follower {
        let config = LogConfig {
            dir: dir.to_path_buf(),
            segment_max_bytes: 1 << 20,
            segment_max_age: Duration::from_secs(3600),
            disk: Disk::real(),
        };
        let mut projection = Projection::new();
        let opened = open(&config, T0_US, |e| projection.apply(e)).unwrap();
        let view = Arc::new(RwLock::new(View {
            projection,
            catalog: opened.catalog,
        }));
        let progress = Arc::new(Progress::default());
        progress.set(Applied {
            position: 0,
            hash: [0; 32],
            next_seq: opened.writer.next_seq(),
            received_at_us: 0,
        });
        follower(
            opened.writer,
            view,
            progress,
            Arc::default(),
            Arc::new(tokio::sync::watch::Sender::new(0)),
        )
    }

    fn frames(first_seq: u64, count: u64, received_at_us: u64, tag: &str) -> Vec<u8> {
        let body = format!(r#"{{"action":"interaction_progress","tag":"{tag}"}}"#);
        let mut out = Vec::new();
        for n in 0..count {
            let event = StoredEvent {
                seq: first_seq + n,
                write_index: n as u32,
                received_at_us,
                key_id: [1; 8],
                action: Action::Progress,
                timestamp: 1_790_000_000.0,
                interaction_id: "i",
                mcp_id: "m",
                event_id: None,
                body: &body,
            };
            format::encode_frame(&event, &mut out);
        }
        out
    }

    fn group(first_seq: u64, prev_hash: Hash, frames: Vec<u8>) -> Group {
        Group {
            first_seq,
            prev_hash,
            frames: frames.into(),
        }
    }

    fn halted(result: Result<(), ApplyError>) -> String {
        match result {
            Err(ApplyError::Halt(reason)) => reason,
            other => panic!("expected a halt, got {other:?}"),
        }
    }

    #[test]
    fn groups_in_order_are_appended_folded_and_chained() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = follower_in(dir.path());
        let first = group(1, [0; 32], frames(1, 3, T0_US, "a"));
        follower.apply(1, &first).unwrap();
        let second = group(4, first.hash(), frames(4, 2, T0_US + 1, "b"));
        follower.apply(2, &second).unwrap();
        let applied = follower.progress.applied();
        assert_eq!(applied.position, 2);
        assert_eq!(applied.next_seq, 6);
        assert_eq!(applied.hash, second.hash());
        assert_ne!(first.hash(), second.hash());
        assert_eq!(follower.writer.next_seq(), 6);
        assert_eq!(follower.view.read().unwrap().projection.events_total(), 5);
        assert_eq!(*follower.durable.borrow(), 5);
    }

    #[test]
    fn a_group_out_of_place_is_refused_naming_what_is_wrong_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = follower_in(dir.path());
        let first = group(1, [0; 32], frames(1, 2, T0_US, "a"));
        follower.apply(1, &first).unwrap();
        let hash = first.hash();
        let cases = [
            (
                3,
                group(3, hash, frames(3, 1, T0_US, "x")),
                "expected position 2",
            ),
            (
                2,
                group(4, hash, frames(4, 1, T0_US, "x")),
                "first seq should be 3",
            ),
            (
                2,
                group(3, [9; 32], frames(3, 1, T0_US, "x")),
                "previous-group hash",
            ),
            (
                2,
                group(3, hash, frames(4, 1, T0_US, "x")),
                "frame 0 carries seq 4",
            ),
            (2, group(3, hash, Vec::new()), "holds no frame"),
            (
                2,
                group(3, hash, frames(3, 1, T0_US - 1, "x")),
                "before the last applied",
            ),
        ];
        for (position, bad, named) in cases {
            let reason = halted(follower.apply(position, &bad));
            assert!(reason.contains(named), "{named}: {reason}");
            assert_eq!(follower.writer.next_seq(), 3, "{named}: nothing written");
        }
        // Frames of one group must share one receive time and count their write index from 0.
        let mut mixed = frames(3, 1, T0_US, "x");
        mixed.extend(frames(4, 1, T0_US + 5, "x"));
        assert!(halted(follower.apply(2, &group(3, hash, mixed))).contains("write index"));
        let mut flipped = frames(3, 2, T0_US, "x");
        let at = flipped.len() - 3;
        flipped[at] ^= 1;
        let reason = halted(follower.apply(2, &group(3, hash, flipped)));
        assert!(
            reason.contains("frame 1 does not decode: CRC mismatch"),
            "{reason}"
        );
        let mut cut = frames(3, 2, T0_US, "x");
        cut.truncate(cut.len() - 1);
        assert!(halted(follower.apply(2, &group(3, hash, cut))).contains("cut short"));
        assert_eq!(follower.progress.applied().position, 1);
    }

    #[test]
    fn frames_already_held_are_compared_and_only_the_rest_appended() {
        // A node whose last start kept only the first two frames of a three-frame group.
        let dir = tempfile::tempdir().unwrap();
        let mut follower = follower_in(dir.path());
        let whole = frames(1, 3, T0_US, "a");
        let first_two = frames(1, 2, T0_US, "a");
        let written = follower.writer.append_encoded(&first_two, T0_US, true);
        written.result.unwrap();
        {
            let mut view = follower.view.write().unwrap();
            for change in written.changes {
                view.catalog.apply(change);
            }
        }
        follower
            .apply(1, &group(1, [0; 32], whole.clone()))
            .unwrap();
        assert_eq!(follower.writer.next_seq(), 4);
        // The same again, but the held frames differ from the group's: halt.
        let dir = tempfile::tempdir().unwrap();
        let mut other = follower_in(dir.path());
        let written = other
            .writer
            .append_encoded(&frames(1, 2, T0_US, "other"), T0_US, true);
        written.result.unwrap();
        {
            let mut view = other.view.write().unwrap();
            for change in written.changes {
                view.catalog.apply(change);
            }
        }
        let reason = halted(other.apply(1, &group(1, [0; 32], whole)));
        assert!(
            reason.contains("holds a different event at seq 1"),
            "{reason}"
        );
        assert_eq!(other.writer.next_seq(), 3);
    }

    #[test]
    fn an_empty_segment_takes_its_first_groups_time_so_nodes_agree_on_its_header() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = follower_in(one.path());
        // The second node's log was created a minute later by its own clock.
        let config = LogConfig {
            dir: two.path().to_path_buf(),
            segment_max_bytes: 1 << 20,
            segment_max_age: Duration::from_secs(3600),
            disk: Disk::real(),
        };
        drop(open(&config, T0_US + 60_000_000, |_| {}).unwrap());
        let b = follower_in(two.path());
        let g = group(1, [0; 32], frames(1, 2, T0_US + 90_000_000, "a"));
        for mut node in [a, b] {
            node.apply(1, &g).unwrap();
        }
        let bytes = |dir: &std::path::Path| {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                .collect();
            files.sort();
            files
                .iter()
                .map(|p| std::fs::read(p).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(bytes(one.path()), bytes(two.path()));
    }

    #[test]
    fn the_frame_bound_covers_what_an_event_encodes_to() {
        let long = "x".repeat(crate::event::ID_BYTES_MAX);
        let event = crate::event::NewEvent::new(
            Action::Error,
            1_790_000_000.125,
            &long,
            &long,
            Some(&"e".repeat(crate::event::EVENT_ID_BYTES_MAX)),
            r#"{"k":1}"#,
        );
        let bound = frames_bytes_max(std::slice::from_ref(&event));
        let stored = event.stored(u64::MAX, u32::MAX, u64::MAX, [0xff; 8]);
        let mut out = Vec::new();
        format::encode_frame(&stored, &mut out);
        assert!(out.len() <= bound, "{} > {bound}", out.len());
    }

    /// What the fake shared log does with the next offer.
    #[derive(Clone, Copy, Debug)]
    enum Next {
        /// Store it (if it follows the stream's last group) and answer its position.
        Store,
        /// Store it, but lose the answer.
        StoreAndLoseTheAnswer,
        /// Answer position 0 without storing it, as some servers answer a retried message id.
        AnswerZero,
        /// Another node's group lands first.
        Foreign,
    }

    /// A shared log in memory that delivers every stored group to the follower, as the
    /// transport does.
    struct FakeLog {
        stream: Arc<Mutex<Vec<Group>>>,
        feed: Arc<Mutex<Option<GroupFeed>>>,
        script: std::collections::VecDeque<Next>,
    }

    impl FakeLog {
        fn store(&self, group: Group) -> u64 {
            let mut stream = self.stream.lock().unwrap();
            stream.push(group.clone());
            let position = stream.len() as u64;
            let feed = self.feed.lock().unwrap();
            let feed = feed.as_ref().unwrap();
            feed.try_send((position, Ok(group))).unwrap();
            position
        }
    }

    impl SharedLog for FakeLog {
        fn append(&mut self, group: &Group, after: u64, _: Instant) -> Result<u64, ShareError> {
            let next = self.script.pop_front().unwrap_or(Next::Store);
            let last = self.stream.lock().unwrap().len() as u64;
            match next {
                Next::AnswerZero => Ok(0),
                Next::Foreign => {
                    let prev = self
                        .stream
                        .lock()
                        .unwrap()
                        .last()
                        .map_or([0; 32], Group::hash);
                    let first_seq = group.first_seq;
                    self.store(Group {
                        first_seq,
                        prev_hash: prev,
                        frames: frames(first_seq, 1, T0_US, "foreign").into(),
                    });
                    Err(ShareError::Moved)
                }
                _ if last != after => Err(ShareError::Moved),
                Next::Store => Ok(self.store(group.clone())),
                Next::StoreAndLoseTheAnswer => {
                    self.store(group.clone());
                    Err(ShareError::Unavailable("the answer was lost".into()))
                }
            }
        }
    }

    /// An engine whose shared log follows `script`, and the stream it wrote.
    fn engine_with(
        dir: &std::path::Path,
        script: &[Next],
        deadline: Duration,
    ) -> (super::super::Engine, Arc<Mutex<Vec<Group>>>) {
        let follower = follower_in(dir);
        let Follower { writer, view, .. } = follower;
        let view = Arc::try_unwrap(view).unwrap().into_inner().unwrap();
        let stream = Arc::new(Mutex::new(Vec::new()));
        let feed = Arc::new(Mutex::new(None));
        let log = FakeLog {
            stream: Arc::clone(&stream),
            feed: Arc::clone(&feed),
            script: script.iter().copied().collect(),
        };
        let (engine, sender) = super::super::Engine::start_replicated(
            writer,
            view,
            100,
            Maintenance {
                interval: Duration::from_secs(3600),
                policy: crate::storage::retention::Policy {
                    retention: Duration::from_secs(86_400 * 30),
                    max_records: None,
                    max_bytes: None,
                },
            },
            Box::new(log),
            Applied {
                next_seq: 1,
                ..Applied::default()
            },
            PublishLimits {
                ingest_deadline: deadline,
                group_bytes_max: 1 << 20,
            },
        );
        *feed.lock().unwrap() = Some(sender);
        (engine, stream)
    }

    fn submit(
        engine: &super::super::Engine,
        body: &str,
    ) -> Result<Vec<super::super::Ack>, SubmitError> {
        let event = crate::event::NewEvent::new(Action::Start, 1.0, "i", "m", None, body);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(engine.submit(vec![event], [0; 8]))
            .map(|(acks, _)| acks)
    }

    #[test]
    fn a_stored_group_whose_answer_was_lost_is_answered_once_and_never_offered_again() {
        // An event without an event_id: offered twice, it would be stored twice.
        let dir = tempfile::tempdir().unwrap();
        let (engine, stream) = engine_with(
            dir.path(),
            &[Next::StoreAndLoseTheAnswer],
            Duration::from_secs(5),
        );
        let acks = submit(&engine, "{}").unwrap();
        assert_eq!(acks[0].seq, 1);
        assert!(!acks[0].duplicate);
        assert_eq!(stream.lock().unwrap().len(), 1, "stored once");
    }

    #[test]
    fn an_answer_that_does_not_place_the_group_is_no_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, stream) = engine_with(
            dir.path(),
            &[Next::AnswerZero, Next::AnswerZero, Next::Store],
            Duration::from_secs(5),
        );
        assert_eq!(submit(&engine, "{}").unwrap()[0].seq, 1);
        assert_eq!(stream.lock().unwrap().len(), 1);
        // Only such answers until the deadline: 503, and nothing acknowledged.
        let dir = tempfile::tempdir().unwrap();
        let never = [Next::AnswerZero; 64];
        let (engine, stream) = engine_with(dir.path(), &never, Duration::from_millis(300));
        match submit(&engine, "{}") {
            Err(SubmitError::Unavailable { message }) => {
                assert!(message.contains("answered position 0"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(stream.lock().unwrap().is_empty());
    }

    #[test]
    fn a_group_overtaken_by_another_nodes_is_planned_again_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, stream) = engine_with(dir.path(), &[Next::Foreign], Duration::from_secs(5));
        let acks = submit(&engine, "{}").unwrap();
        assert_eq!(acks[0].seq, 2, "after the foreign group's event");
        let stream = stream.lock().unwrap();
        assert_eq!(stream.len(), 2);
        assert_eq!(stream[1].prev_hash, stream[0].hash());
        assert_eq!(engine.replica_progress().unwrap().moved, 1);
    }

    #[test]
    fn the_feed_holds_at_most_its_bytes_but_always_takes_one_group() {
        let (feed, rx) = group_feed();
        let sized = |bytes: usize| Group {
            first_seq: 1,
            prev_hash: [0; 32],
            frames: vec![0u8; bytes].into(),
        };
        // One group larger than the bound goes alone.
        feed.try_send((1, Ok(sized(FEED_BYTES_MAX + 1)))).unwrap();
        assert!(matches!(
            feed.try_send((2, Ok(sized(1)))),
            Err(mpsc::TrySendError::Full(_))
        ));
        let (_, taken) = rx.recv_timeout(Duration::from_secs(1)).unwrap();
        rx.taken(taken.as_ref().unwrap());
        feed.try_send((2, Ok(sized(FEED_BYTES_MAX - 10)))).unwrap();
        assert!(matches!(
            feed.try_send((3, Ok(sized(11)))),
            Err(mpsc::TrySendError::Full(_))
        ));
        feed.try_send((3, Ok(sized(10)))).unwrap();
    }

    #[test]
    fn a_cluster_node_never_seals_an_idle_segment_on_its_own_clock() {
        let dir = tempfile::tempdir().unwrap();
        let mut node = follower_in(dir.path());
        node.apply(1, &group(1, [0; 32], frames(1, 2, T0_US, "a")))
            .unwrap();
        let policy = crate::storage::retention::Policy {
            retention: Duration::from_secs(86_400 * 30),
            max_records: None,
            max_bytes: None,
        };
        // Two hours later by this node's clock, past segment_max_age (1h).
        let later = T0_US + 7_200_000_000;
        maintain(&mut node.writer, &node.view, &policy, later, false);
        assert_eq!(node.view.read().unwrap().catalog.segments().len(), 1);
        // A single node would seal it.
        maintain(&mut node.writer, &node.view, &policy, later, true);
        assert_eq!(node.view.read().unwrap().catalog.segments().len(), 2);
    }
}
