//! The follower: takes every group of the shared log in order, checks it (its position, its
//! first seq, the previous group's hash, every frame), appends what this node does not hold yet
//! with one write and one fdatasync, and folds it. A check that fails halts it for good; a
//! message that is not an authenticated group is skipped and counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use super::feed::FeedReceiver;
use super::{Applied, Group, Progress};
use crate::clock::now_us;
use crate::engine::maintenance::{maintain, Maintenance};
use crate::engine::{tell_revocations, OnRevocation, View, WriterHealth};
use crate::event::StoredEvent;
use crate::storage::format::{self, Decoded};
use crate::storage::{CatalogChange, LogWriter};

/// Why a group was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The group does not continue this node's history; the follower stops for good.
    Halt(String),
    /// The local write failed (a full disk, say); the same group may be applied again later.
    Storage(String),
    /// The group is a copy of one applied already (every frame held, byte for byte), published
    /// again: skipped, as a message that is not a group is.
    Copy(String),
}

/// The follower: applies the shared log's groups to this node's segments and view.
pub struct Follower {
    pub(super) writer: LogWriter,
    pub(super) view: Arc<RwLock<View>>,
    pub(super) progress: Arc<Progress>,
    health: Arc<WriterHealth>,
    pub(super) durable: Arc<tokio::sync::watch::Sender<u64>>,
    pub(super) on_revocation: OnRevocation,
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
        if group.prev_hash != applied.hash && group.first_seq < applied.next_seq {
            return Err(self.copy_of_earlier(group, &applied).map_err(&halt)?);
        }
        check_place(position, group, &applied).map_err(&halt)?;
        let checked = check_frames(group, applied.received_at_us).map_err(&halt)?;
        let held = self.held(group, &checked).map_err(&halt)?;
        let changes = self.append(group, &checked, held)?;
        let next = Applied {
            position,
            hash: group.hash(),
            next_seq: group.first_seq + checked.frames.len() as u64,
            received_at_us: checked.received_at_us,
            rules: Some(group.rules),
        };
        self.fold(next, changes, &checked.frames[held..]);
        Ok(())
    }

    /// An authenticated group that begins before this node's next seq and does not follow its
    /// last applied group: anyone who can publish on the stream can publish an earlier group's
    /// message again, MAC and all. A copy of frames this node holds byte for byte is skipped
    /// (`Copy`); anything else is not this node's history (an error, which halts).
    fn copy_of_earlier(&self, group: &Group, applied: &Applied) -> Result<ApplyError, String> {
        let checked = check_frames(group, 0)?;
        let end = group.first_seq + checked.frames.len() as u64;
        if end > applied.next_seq {
            return Err(format!(
                "it begins at an applied seq but runs past the next one, {}",
                applied.next_seq
            ));
        }
        // Frames retention deleted here since cannot be compared: a copy of expired history
        // cannot be applied either way.
        self.compare(group, &checked.frames, Missing::Skip)?;
        Ok(ApplyError::Copy(format!(
            "a copy of the group of seqs {} to {}, applied already, published again",
            group.first_seq,
            end - 1
        )))
    }

    /// How many of the group's frames this node already holds; each must be the event it holds
    /// at that seq, byte for byte.
    fn held(&self, group: &Group, checked: &Checked<'_>) -> Result<usize, String> {
        let local_next = self.writer.next_seq();
        if local_next < group.first_seq {
            return Err(format!(
                "this node's log ends at seq {}, before the group begins",
                local_next - 1
            ));
        }
        let count = checked.frames.len();
        let held = usize::try_from(local_next - group.first_seq).map_or(count, |n| n.min(count));
        self.compare(group, &checked.frames[..held], Missing::Differs)?;
        Ok(held)
    }

    /// Whether each of `frames` (of `group`) is the event this node holds at its seq, byte for
    /// byte; a seq this node does not hold counts as `missing` says.
    fn compare(
        &self,
        group: &Group,
        frames: &[CheckedFrame<'_>],
        missing: Missing,
    ) -> Result<(), String> {
        let view = self.view.read().expect("view lock");
        for (range, frame) in frames {
            let seq = frame.seq;
            let same = view.catalog.with_event(seq, |event| {
                let mut local = Vec::new();
                format::encode_frame(event, &mut local);
                local == group.frames[range.clone()]
            });
            match (same, missing) {
                (Some(Ok(true)), _) | (None, Missing::Skip) => {}
                _ => return Err(format!("this node holds a different event at seq {seq}")),
            }
        }
        Ok(())
    }

    /// Appends the frames after the first `held` with one write and one fdatasync: the
    /// catalog's changes, or the storage failure (the catalog changes a failed write made
    /// applied first).
    fn append(
        &mut self,
        group: &Group,
        checked: &Checked<'_>,
        held: usize,
    ) -> Result<Vec<CatalogChange>, ApplyError> {
        if held == checked.frames.len() {
            return Ok(Vec::new());
        }
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
        if let Err(err) = written.result {
            self.apply_changes(written.changes);
            return Err(self.storage_failed(err.public_message()));
        }
        Ok(written.changes)
    }

    /// Folds the appended frames into the view and publishes `next` as applied. Their
    /// revocation records are told first (outside the view's lock: that writes revoked.keys), so
    /// a publisher answered for one finds the key revoked on this node.
    fn fold(&self, next: Applied, changes: Vec<CatalogChange>, appended: &[CheckedFrame<'_>]) {
        tell_revocations(appended.iter().map(|(_, frame)| frame), &self.on_revocation);
        let differed = self.progress.rules_differ().is_some();
        {
            let mut view = self.view.write().expect("view lock");
            for change in changes {
                view.catalog.apply(change);
            }
            for (_, frame) in appended {
                view.projection.apply(frame);
            }
            // Under the view's lock, so a publisher planning against the view sees the matching
            // position.
            self.progress.set(next);
        }
        *self.health.last_failure.lock().expect("health lock") = None;
        match self.progress.rules_differ() {
            Some(reason) if !differed => {
                tracing::error!(%reason, position = next.position, "this node refuses every write");
            }
            None if differed => {
                tracing::info!(
                    position = next.position,
                    "this node's rules are the cluster's again"
                );
            }
            _ => {}
        }
        let last = next.next_seq - 1;
        self.durable
            .send_if_modified(|durable| (*durable < last).then(|| *durable = last).is_some());
    }

    fn apply_changes(&self, changes: Vec<CatalogChange>) {
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

    /// Passes over the message at `position`, which is not an authenticated group: it is never
    /// applied, and the next group may come after it.
    fn skip(&self, position: u64, why: &str) {
        self.progress.skip(position);
        // Anyone who may publish on the subject can send strays by the hundred thousand: the
        // first few are logged, then one in SKIP_LOG_EVERY, each with the count so far.
        let skipped = self.progress.report().skipped;
        if skipped <= SKIP_LOG_FIRST || skipped.is_multiple_of(SKIP_LOG_EVERY) {
            tracing::warn!(
                position,
                reason = %why,
                skipped,
                "skipped a message of the cluster's stream: not an authenticated group, or a copy of one applied"
            );
        }
    }

    /// Stops the follower for good: health turns 503 with the reason, the publisher answers 503.
    fn halt(&self, reason: &str) {
        tracing::error!(%reason, "the cluster follower halted; this node applies nothing more");
        *self.health.halted.lock().expect("health lock") = Some(reason.to_owned());
        self.progress.halt(reason.to_owned());
    }
}

/// The group sits where this node's history continues: a position after the last applied
/// group's (skipped messages may lie between), the next seq, and the last applied group's hash.
fn check_place(position: u64, group: &Group, applied: &Applied) -> Result<(), String> {
    if position <= applied.position {
        return Err(format!(
            "expected a position after {}, the last applied group's",
            applied.position
        ));
    }
    if group.first_seq != applied.next_seq {
        return Err(format!(
            "its first seq should be {}, the one after the last applied group",
            applied.next_seq
        ));
    }
    if group.prev_hash != applied.hash {
        return Err("its previous-group hash is not the hash of the last applied group".into());
    }
    Ok(())
}

/// How [`Follower::compare`] counts a seq this node does not hold.
#[derive(Debug, Clone, Copy)]
enum Missing {
    /// As a different event.
    Differs,
    /// As the same (retention deleted it).
    Skip,
}

/// A frame's bytes within its group, and the frame decoded from them.
type CheckedFrame<'a> = (std::ops::Range<usize>, StoredEvent<'a>);

/// What checking a group's frames found.
struct Checked<'a> {
    frames: Vec<CheckedFrame<'a>>,
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

/// The follower thread: applies what arrives; between groups, retention. A local storage
/// failure is retried each second; a group that does not continue the history halts it; a
/// message that is not an authenticated group is skipped.
pub(in crate::engine) fn run_follower(
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
                follower.skip(position, &why);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        loop {
            match follower.apply(position, &group) {
                Ok(()) => break,
                Err(ApplyError::Copy(why)) => {
                    follower.skip(position, &why);
                    break;
                }
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

/// Skipped messages logged one by one before the log thins out to one in [`SKIP_LOG_EVERY`].
const SKIP_LOG_FIRST: u64 = 16;
const SKIP_LOG_EVERY: u64 = 1000;

/// The pause before applying again a group whose local write failed.
const STORAGE_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Builds the follower of an engine starting in cluster mode.
pub(in crate::engine) fn follower(
    writer: LogWriter,
    view: Arc<RwLock<View>>,
    progress: Arc<Progress>,
    health: Arc<WriterHealth>,
    durable: Arc<tokio::sync::watch::Sender<u64>>,
    on_revocation: OnRevocation,
) -> Follower {
    Follower {
        writer,
        view,
        progress,
        health,
        durable,
        on_revocation,
    }
}
