//! The writer thread: takes what is queued, group-commits it, folds it into the view and answers;
//! between groups, maintenance; while the last write failed, a probe each second.

use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::maintenance::{maintain, Maintenance};
use super::plan::{plan_group, Slot};
use super::{tell_revocations, Ack, OnRevocation, Submission, SubmitError, View, WriterHealth};
use crate::clock::now_us;
use crate::event::StoredEvent;
use crate::storage::LogWriter;

/// The most events one group commit carries; a larger backlog is written in several groups so
/// that one fdatasync never waits on an unbounded write.
pub const GROUP_EVENTS_MAX: usize = 4096;
/// The most client bytes one group commit carries (a single larger submission still goes alone).
/// With `segment_max_bytes` at most 1 GiB and a batch at most 256 MiB, a segment stays far below
/// the 4 GiB its u32 offsets can address.
pub const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Where a written group goes: the view it is folded into, the health its write reports to, the
/// durable seq readers wait on, and the hook told of its revocation records.
pub(super) struct Fold {
    pub(super) view: Arc<RwLock<View>>,
    pub(super) health: Arc<WriterHealth>,
    pub(super) durable: Arc<tokio::sync::watch::Sender<u64>>,
    pub(super) on_revocation: OnRevocation,
}

/// Runs until every sender is gone, then returns once the queue is written.
pub(super) fn run_writer(
    mut writer: LogWriter,
    rx: mpsc::Receiver<Submission>,
    maintenance: Maintenance,
    fold: &Fold,
) {
    let (view, health) = (&fold.view, &*fold.health);
    let mut last_us = 0;
    let mut next_maintenance = Instant::now();
    loop {
        if Instant::now() >= next_maintenance {
            last_us = now_us().max(last_us);
            maintain(&mut writer, view, &maintenance.policy, last_us, true);
            next_maintenance = Instant::now() + maintenance.interval;
        }
        let failed = health.last_failure.lock().expect("health lock").is_some();
        let mut wait = next_maintenance.saturating_duration_since(Instant::now());
        if failed {
            wait = wait.min(STORAGE_PROBE_INTERVAL);
        }
        let first = match rx.recv_timeout(wait) {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if failed && writer.poisoned().is_none() {
                    probe_storage(&writer, health);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let (group, held) = gather(first, &rx, Submission::bytes, GROUP_BYTES_MAX);
        // Receive times never go backwards, so retention by receive time stays monotone even if
        // the wall clock is stepped back.
        last_us = now_us().max(last_us);
        commit(&mut writer, fold, group, last_us);
        if let Some(next) = held {
            last_us = now_us().max(last_us);
            commit(&mut writer, fold, vec![next], last_us);
        }
    }
}

/// Takes what is waiting behind `first`, up to [`GROUP_EVENTS_MAX`] events and `bytes_max` bytes
/// as `bytes` counts them; returns the group and the submission that would have passed the byte
/// cap, which goes alone next.
pub(super) fn gather(
    first: Submission,
    rx: &mpsc::Receiver<Submission>,
    bytes: fn(&Submission) -> usize,
    bytes_max: usize,
) -> (Vec<Submission>, Option<Submission>) {
    let mut events = first.events.len();
    let mut total = bytes(&first);
    let mut group = vec![first];
    while events < GROUP_EVENTS_MAX && total < bytes_max {
        match rx.try_recv() {
            Ok(next) if total + bytes(&next) > bytes_max => return (group, Some(next)),
            Ok(next) => {
                events += next.events.len();
                total += bytes(&next);
                group.push(next);
            }
            Err(_) => break,
        }
    }
    (group, None)
}

/// How often a writer whose last write failed checks whether it could write again.
const STORAGE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Clears the failure once a probe write succeeds, so health and readiness return by themselves.
fn probe_storage(writer: &LogWriter, health: &WriterHealth) {
    match writer.probe() {
        Ok(()) => {
            tracing::info!("storage is writable again");
            *health.last_failure.lock().expect("health lock") = None;
        }
        Err(err) => tracing::debug!(error = %err, "storage still not writable"),
    }
}

/// Plans a group, writes what it appends with one write and one fdatasync, folds it into the
/// view, and answers every submission.
fn commit(writer: &mut LogWriter, fold: &Fold, group: Vec<Submission>, now_us: u64) {
    let next_seq = writer.next_seq();
    let (plans, appended) = plan_group(
        &fold.view.read().expect("view lock").projection,
        &group,
        next_seq,
    );
    let failure = if appended.is_empty() {
        None
    } else {
        let stored = stored_events(&group, &appended, next_seq, now_us);
        write_and_fold(writer, fold, &stored, now_us).err()
    };
    // After the fold and before any answer: a reader who has an answer (a replay, a follower
    // woken by this) finds the events in the view.
    let written = writer.next_seq() - 1;
    fold.durable
        .send_if_modified(|last| (*last < written).then(|| *last = written).is_some());
    for (submission, plan) in group.into_iter().zip(plans) {
        let answer = match &failure {
            // Nothing of a failed group is stored: a submission is refused for its own
            // conflicts, or else for the failure.
            Some(failure) => plan.map_err(SubmitError::from).and(Err(failure.clone())),
            None => plan
                .map_err(SubmitError::from)
                .map(|slots| slots.iter().map(|&slot| ack(slot, next_seq)).collect()),
        };
        submission.answer(answer);
    }
}

/// The group's events as they will be stored: seqs from `next_seq`, in append order.
pub(super) fn stored_events<'a>(
    group: &'a [Submission],
    appended: &[(usize, usize)],
    next_seq: u64,
    now_us: u64,
) -> Vec<StoredEvent<'a>> {
    appended
        .iter()
        .enumerate()
        .map(|(n, &(s, i))| {
            group[s].events[i].stored(next_seq + n as u64, n as u32, now_us, group[s].key_id)
        })
        .collect()
}

/// One write and one fdatasync of `stored`, then, under the view's write lock, the catalog's
/// changes (whatever the outcome: a roll before a failed write still changed the files) and,
/// if it was written, the fold; then its revocation records are told.
fn write_and_fold(
    writer: &mut LogWriter,
    fold: &Fold,
    stored: &[StoredEvent<'_>],
    now_us: u64,
) -> Result<(), SubmitError> {
    let health = &fold.health;
    let started = Instant::now();
    let written = writer.append(stored, now_us);
    health.fsync_seconds.observe(started.elapsed());
    {
        let mut view = fold.view.write().expect("view lock");
        for change in written.changes {
            view.catalog.apply(change);
        }
        if written.result.is_ok() {
            for event in stored {
                view.projection.apply(event);
            }
        }
    }
    if written.result.is_ok() {
        // Outside the view's lock: it writes and fsyncs revoked.keys.
        tell_revocations(stored, &fold.on_revocation);
    }
    let mut last_failure = health.last_failure.lock().expect("health lock");
    match written.result {
        Ok(()) => {
            *last_failure = None;
            Ok(())
        }
        Err(err) => {
            tracing::error!(error = %err, events = stored.len(), "group commit failed; nothing of it is acknowledged");
            *last_failure = Some(err.public_message());
            Err(SubmitError::Storage {
                no_space: err.is_no_space(),
                cause: Arc::new(err),
            })
        }
    }
}

/// The answer for one planned event of a written group.
pub(super) fn ack(slot: Slot, next_seq: u64) -> Ack {
    match slot {
        Slot::Append(n) => Ack {
            seq: next_seq + n as u64,
            duplicate: false,
        },
        Slot::SameAs(n) => Ack {
            seq: next_seq + n as u64,
            duplicate: true,
        },
        Slot::Stored(seq) => Ack {
            seq,
            duplicate: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::SubmitError;
    use crate::storage::StorageError;

    /// The engine's error keeps the storage failure as its source, for the log and for callers
    /// that match on it, while its message (which a client sees) names no directory.
    #[test]
    fn a_storage_failure_keeps_its_cause_and_shows_no_directory() {
        let cause = StorageError::Io {
            op: "fdatasync",
            path: PathBuf::from("/srv/secret/segments/00000000000000000001.seg"),
            source: std::io::Error::other("disk gone"),
        };
        let err = SubmitError::Storage {
            no_space: cause.is_no_space(),
            cause: Arc::new(cause),
        };
        let message = err.to_string();
        assert!(
            message.contains("fdatasync 00000000000000000001.seg"),
            "{message}"
        );
        assert!(!message.contains("/srv/secret"), "{message}");
        let source = err.source().expect("a source");
        let storage = source
            .downcast_ref::<Arc<StorageError>>()
            .map(|a| &**a)
            .or_else(|| source.downcast_ref::<StorageError>())
            .expect("the storage error");
        assert!(matches!(
            storage,
            StorageError::Io {
                op: "fdatasync",
                ..
            }
        ));
    }
}
