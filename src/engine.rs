//! The ingest engine: a bounded queue in front of one writer thread that group-commits.
//!
//! Handlers [`Engine::submit`] validated events and wait. The writer thread takes everything that
//! is waiting, checks it against the view (an interaction's mcp_id never changes; a repeated
//! `event_id` is answered with its first seq), writes the group with one write and one fdatasync,
//! folds it into the projection, and only then answers. So an acknowledged event is durable and
//! already visible to readers.
//!
//! The queue is bounded in events (`queue_events_max`) by a semaphore whose permits travel with a
//! submission until it is answered; when none are left, `submit` fails at once with
//! [`SubmitError::QueueFull`] rather than letting memory grow.

use hashbrown::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::event::{Action, StoredEvent, ValidEvent};
use crate::projector::Projection;
use crate::storage::{retention, Catalog, LogWriter};
use crate::telemetry::Histogram;

/// The most events one group commit carries; a larger backlog is written in several groups so
/// that one fdatasync never waits on an unbounded write.
pub const GROUP_EVENTS_MAX: usize = 4096;
/// The most client bytes one group commit carries (a single larger submission still goes alone).
/// With `segment_max_bytes` at most 1 GiB and a batch at most 256 MiB, a segment stays far below
/// the 4 GiB its u32 offsets can address.
pub const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The view readers share: the folded records and the catalog to read payloads from.
#[derive(Debug, Default)]
pub struct View {
    /// Interaction records.
    pub projection: Projection,
    /// Segments and frame offsets.
    pub catalog: Catalog,
}

/// An event the writer owns until it is on disk. Its strings share one allocation: a batch of a
/// thousand events would otherwise make four thousand, and free them again.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The action.
    pub action: Action,
    /// Client timestamp in seconds.
    pub timestamp: f64,
    /// interaction_id, mcp_id, event_id (empty if absent) and the body, end to end.
    text: Box<str>,
    /// Where interaction_id, mcp_id and event_id end in `text`.
    ends: [u32; 3],
    has_event_id: bool,
}

impl NewEvent {
    /// An event from its parts. The body is the client's JSON, byte-exact.
    pub fn new(
        action: Action,
        timestamp: f64,
        interaction_id: &str,
        mcp_id: &str,
        event_id: Option<&str>,
        body: &str,
    ) -> NewEvent {
        let parts = [interaction_id, mcp_id, event_id.unwrap_or(""), body];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 3];
        for (i, part) in parts.iter().enumerate() {
            text.push_str(part);
            if let Some(end) = ends.get_mut(i) {
                // Events are bounded far below 4 GiB (`event_bytes_max`).
                *end = u32::try_from(text.len()).expect("an event below 4 GiB");
            }
        }
        NewEvent {
            action,
            timestamp,
            text: text.into_boxed_str(),
            ends,
            has_event_id: event_id.is_some(),
        }
    }

    /// The interaction.
    pub fn interaction_id(&self) -> &str {
        &self.text[..self.ends[0] as usize]
    }

    /// The reporting MCP.
    pub fn mcp_id(&self) -> &str {
        &self.text[self.ends[0] as usize..self.ends[1] as usize]
    }

    /// The idempotency key, if the client sent one.
    pub fn event_id(&self) -> Option<&str> {
        self.has_event_id
            .then(|| &self.text[self.ends[1] as usize..self.ends[2] as usize])
    }

    /// The client's JSON, byte-exact.
    pub fn body(&self) -> &str {
        &self.text[self.ends[2] as usize..]
    }
}

impl From<&ValidEvent<'_>> for NewEvent {
    fn from(event: &ValidEvent<'_>) -> NewEvent {
        NewEvent::new(
            event.action,
            event.timestamp,
            &event.interaction_id,
            &event.mcp_id,
            event.event_id.as_deref(),
            event.body,
        )
    }
}

/// The answer for one stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The event's seq.
    pub seq: u64,
    /// True when the event's `event_id` was already stored and nothing new was appended.
    pub duplicate: bool,
}

/// Why an event of a submission clashes with what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Index of the event within its submission.
    pub index: usize,
    /// The field at fault: `mcp_id` or `event_id`.
    pub field: &'static str,
    /// What clashes, with the values that matter.
    pub message: String,
}

/// Why a submission was not stored. Nothing of a refused submission is stored.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The queue holds `queue_events_max` events already.
    #[error("the ingest queue is full ({capacity} events); retry shortly")]
    QueueFull {
        /// The queue's capacity in events.
        capacity: usize,
    },
    /// One or more events clash with stored ones.
    #[error("{} event(s) conflict with stored events", .0.len())]
    Conflict(Vec<Conflict>),
    /// The write or fdatasync failed; the events are not stored.
    #[error("storage failure: {message}")]
    Storage {
        /// The storage error, naming file and operation.
        message: String,
        /// Whether it was a full disk.
        no_space: bool,
    },
    /// The engine is shutting down and takes no more events.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Counters in the reference's `stats` shape.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events handed to `submit`.
    pub requests_received: AtomicU64,
    /// Events acknowledged as stored.
    pub requests_processed: AtomicU64,
    /// Events refused after validation (queue full, conflict, storage failure).
    pub requests_failed: AtomicU64,
}

struct Submission {
    events: Vec<NewEvent>,
    key_id: [u8; 8],
    reply: oneshot::Sender<Answer>,
    _permit: OwnedSemaphorePermit,
}

/// The writer's answer to a submission. It hands the events back so that the handler, not the
/// writer thread, frees them: freeing thousands of strings is work the serial writer need not do.
struct Answer {
    result: Result<Vec<Ack>, SubmitError>,
    _events: Vec<NewEvent>,
}

impl Submission {
    /// Answers the submission, giving its events back to be freed by the receiver.
    fn answer(self, result: Result<Vec<Ack>, SubmitError>) {
        let _ = self.reply.send(Answer {
            result,
            _events: self.events,
        });
    }

    fn bytes(&self) -> usize {
        self.events.iter().map(|e| e.body().len()).sum()
    }
}

/// Marks the writer as stopped however its thread ends, a panic included, so health and
/// readiness never report a dead writer as running.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The running engine. Cloning the `Arc` shares it between handlers.
pub struct Engine {
    view: Arc<RwLock<View>>,
    tx: Mutex<Option<mpsc::SyncSender<Submission>>>,
    permits: Arc<Semaphore>,
    queue_events_max: usize,
    counters: Counters,
    health: Arc<WriterHealth>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// The newest seq that is durable and folded into the view; followers of the replay wait on it.
    durable: Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct WriterHealth {
    running: AtomicBool,
    last_failure: Mutex<Option<String>>,
    /// Time of each group's write and fdatasync.
    fsync_seconds: Histogram,
}

impl Engine {
    /// Starts the writer thread over an opened log and its folded view.
    pub fn start(
        writer: LogWriter,
        view: View,
        queue_events_max: usize,
        maintenance: Maintenance,
    ) -> Engine {
        assert!(queue_events_max > 0);
        let view = Arc::new(RwLock::new(view));
        // Never full in practice: the semaphore admits at most queue_events_max events, and every
        // submission holds at least one.
        let (tx, rx) = mpsc::sync_channel(queue_events_max);
        let health = Arc::new(WriterHealth::default());
        health.running.store(true, Ordering::SeqCst);
        let last = view
            .read()
            .expect("view lock")
            .catalog
            .last_seq()
            .unwrap_or(0);
        let durable = Arc::new(tokio::sync::watch::Sender::new(last));
        let thread = {
            let view = Arc::clone(&view);
            let health = Arc::clone(&health);
            let durable = Arc::clone(&durable);
            std::thread::Builder::new()
                .name("mcplog-writer".into())
                .spawn(move || {
                    let _running = Running(&health.running);
                    run_writer(writer, view, rx, maintenance, &health, &durable);
                })
                .expect("spawning the writer thread")
        };
        Engine {
            view,
            tx: Mutex::new(Some(tx)),
            permits: Arc::new(Semaphore::new(queue_events_max)),
            queue_events_max,
            counters: Counters::default(),
            health,
            writer_thread: Mutex::new(Some(thread)),
            durable,
        }
    }

    /// Queues events and waits until they are durable (or refused). All or nothing.
    ///
    /// Returns the acks, and the queue depth in events seen on entry (the reference's
    /// `queue_position`).
    pub async fn submit(
        &self,
        events: Vec<NewEvent>,
        key_id: [u8; 8],
    ) -> Result<(Vec<Ack>, usize), SubmitError> {
        let count = events.len() as u64;
        self.counters
            .requests_received
            .fetch_add(count, Ordering::Relaxed);
        let result = self.submit_inner(events, key_id).await;
        let counter = if result.is_ok() {
            &self.counters.requests_processed
        } else {
            &self.counters.requests_failed
        };
        counter.fetch_add(count, Ordering::Relaxed);
        result
    }

    async fn submit_inner(
        &self,
        events: Vec<NewEvent>,
        key_id: [u8; 8],
    ) -> Result<(Vec<Ack>, usize), SubmitError> {
        let needed = u32::try_from(events.len()).expect("batches are bounded");
        let full = || SubmitError::QueueFull {
            capacity: self.queue_events_max,
        };
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(needed)
            .map_err(|_| full())?;
        let position = self.queue_size();
        let tx = self
            .tx
            .lock()
            .expect("sender lock")
            .clone()
            .ok_or(SubmitError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        tx.try_send(Submission {
            events,
            key_id,
            reply,
            _permit: permit,
        })
        .map_err(|err| match err {
            mpsc::TrySendError::Full(_) => full(),
            mpsc::TrySendError::Disconnected(_) => SubmitError::ShuttingDown,
        })?;
        let acks = answer
            .await
            .map_err(|_| SubmitError::ShuttingDown)?
            .result?;
        Ok((acks, position))
    }

    /// Events accepted but not yet answered.
    pub fn queue_size(&self) -> usize {
        self.queue_events_max - self.permits.available_permits()
    }

    /// The shared view, for readers.
    pub fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view
            .read()
            .expect("the view lock is never poisoned: the writer does not panic while holding it")
    }

    /// The reference's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether the writer thread runs.
    pub fn writer_running(&self) -> bool {
        self.health.running.load(Ordering::SeqCst)
    }

    /// The last storage failure, cleared by the next successful write.
    pub fn storage_failure(&self) -> Option<String> {
        self.health
            .last_failure
            .lock()
            .expect("health lock")
            .clone()
    }

    /// A receiver of the newest seq that is durable and visible in the view.
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Latency of group commits (one write and one fdatasync each).
    pub fn fsync_seconds(&self) -> &Histogram {
        &self.health.fsync_seconds
    }

    /// Stops taking events, lets the writer finish everything queued, and waits for it.
    pub fn shutdown(&self) {
        self.tx.lock().expect("sender lock").take();
        let thread = self.writer_thread.lock().expect("thread lock").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Housekeeping the writer thread does between groups: at start, then every `interval`.
#[derive(Debug, Clone, Copy)]
pub struct Maintenance {
    /// How often (`cleanup_interval`).
    pub interval: Duration,
    /// What retention keeps.
    pub policy: retention::Policy,
}

fn run_writer(
    mut writer: LogWriter,
    view: Arc<RwLock<View>>,
    rx: mpsc::Receiver<Submission>,
    maintenance: Maintenance,
    health: &WriterHealth,
    durable: &tokio::sync::watch::Sender<u64>,
) {
    let mut last_us = 0;
    let mut next_maintenance = Instant::now();
    loop {
        if Instant::now() >= next_maintenance {
            last_us = now_us().max(last_us);
            maintain(&mut writer, &view, &maintenance.policy, last_us);
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
        let mut events = first.events.len();
        let mut bytes = first.bytes();
        let mut group = vec![first];
        let mut held = None;
        while events < GROUP_EVENTS_MAX && bytes < GROUP_BYTES_MAX {
            match rx.try_recv() {
                Ok(next) if bytes + next.bytes() > GROUP_BYTES_MAX => {
                    held = Some(next);
                    break;
                }
                Ok(next) => {
                    events += next.events.len();
                    bytes += next.bytes();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        // Receive times never go backwards, so retention by receive time stays monotone even if
        // the wall clock is stepped back.
        last_us = now_us().max(last_us);
        commit(&mut writer, &view, group, last_us, health);
        if let Some(next) = held {
            last_us = now_us().max(last_us);
            commit(&mut writer, &view, vec![next], last_us, health);
        }
        // Only after the fold: a follower woken by this reads the events from the view.
        durable.send_if_modified(|last| {
            let now = writer.next_seq() - 1;
            (*last != now).then(|| *last = now).is_some()
        });
    }
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

/// Seals an old idle segment, deletes the segments retention selects, and rebuilds the view from
/// what remains, so that it equals what a fresh start would fold. Runs on the writer thread, so no
/// group is planned or written meanwhile.
fn maintain(writer: &mut LogWriter, view: &RwLock<View>, policy: &retention::Policy, now_us: u64) {
    if let Err(err) = writer.roll_if_old(now_us) {
        tracing::error!(error = %err, "sealing an old segment failed");
    }
    let changes = writer.take_changes();
    if !changes.is_empty() {
        let mut view = view.write().expect("view lock");
        for change in changes {
            view.catalog.apply(change);
        }
    }
    let count = retention::select(&view.read().expect("view lock").catalog, now_us, policy);
    if count == 0 {
        return;
    }
    let started = Instant::now();
    let paths = view.write().expect("view lock").catalog.drop_oldest(count);
    if let Some(dir) = paths[0].parent() {
        if let Err(err) = retention::delete(&paths, dir) {
            // The files stay until the next run or start; the view no longer serves them.
            tracing::error!(error = %err, "deleting expired segments failed");
        }
    }
    let mut projection = Projection::new();
    let folded = view
        .read()
        .expect("view lock")
        .catalog
        .for_each_event(|event| projection.apply(event));
    if let Err(reason) = folded {
        tracing::error!(%reason, "rebuilding the view after retention failed; keeping the old view");
        return;
    }
    let events = projection.events_total();
    view.write().expect("view lock").projection = projection;
    tracing::info!(
        segments = count,
        events_kept = events,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "retention deleted expired segments"
    );
}

/// What became of one event of a planned group.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Appended as the n-th event of the group.
    Append(usize),
    /// Already stored at this seq.
    Stored(u64),
    /// The same event as the n-th appended event of this group.
    SameAs(usize),
}

/// What the accepted submissions of a group claim, borrowed from the group itself.
#[derive(Default)]
struct Claims<'a> {
    /// (mcp_id, event_id) → (append number, body).
    event_ids: HashMap<(&'a str, &'a str), (usize, &'a str)>,
    /// (submission, event) of every event to append, in append order.
    appended: Vec<(usize, usize)>,
}

fn commit(
    writer: &mut LogWriter,
    view: &RwLock<View>,
    group: Vec<Submission>,
    now_us: u64,
    health: &WriterHealth,
) {
    let next_seq = writer.next_seq();
    let (plans, appended) = {
        let view = view.read().expect("view lock");
        let mut claims = Claims::default();
        let plans: Vec<_> = group
            .iter()
            .enumerate()
            .map(|(index, submission)| plan(&view, index, submission, &mut claims, next_seq))
            .collect();
        (plans, claims.appended)
    };
    if !appended.is_empty() {
        let stored: Vec<StoredEvent<'_>> = appended
            .iter()
            .enumerate()
            .map(|(n, &(s, i))| {
                let event = &group[s].events[i];
                StoredEvent {
                    seq: next_seq + n as u64,
                    write_index: n as u32,
                    received_at_us: now_us,
                    key_id: group[s].key_id,
                    action: event.action,
                    timestamp: event.timestamp,
                    interaction_id: event.interaction_id(),
                    mcp_id: event.mcp_id(),
                    event_id: event.event_id(),
                    body: event.body(),
                }
            })
            .collect();
        let started = Instant::now();
        let appended = writer.append(&stored, now_us);
        health.fsync_seconds.observe(started.elapsed());
        {
            // A roll before a failed write still changed the files: the catalog learns of it
            // either way.
            let mut view = view.write().expect("view lock");
            for change in writer.take_changes() {
                view.catalog.apply(change);
            }
            if appended.is_ok() {
                for event in &stored {
                    view.projection.apply(event);
                }
            }
        }
        if let Err(err) = appended {
            tracing::error!(error = %err, events = stored.len(), "group commit failed; nothing of it is acknowledged");
            *health.last_failure.lock().expect("health lock") = Some(err.public_message());
            let failure = SubmitError::Storage {
                message: err.public_message(),
                no_space: err.is_no_space(),
            };
            drop(stored);
            for (submission, plan) in group.into_iter().zip(plans) {
                let answer = plan
                    .map_err(SubmitError::Conflict)
                    .and(Err(failure.clone()));
                submission.answer(answer);
            }
            return;
        }
        *health.last_failure.lock().expect("health lock") = None;
    }
    for (submission, plan) in group.into_iter().zip(plans) {
        let answer = plan.map_err(SubmitError::Conflict).map(|slots| {
            slots
                .iter()
                .map(|slot| match *slot {
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
                })
                .collect()
        });
        submission.answer(answer);
    }
}

/// Decides each event of a submission against the view and the claims of the submissions before
/// it in the group, or lists every conflict in it. Claims are only added when it is accepted.
fn plan<'a>(
    view: &View,
    submission_index: usize,
    submission: &'a Submission,
    group: &mut Claims<'a>,
    next_seq: u64,
) -> Result<Vec<Slot>, Vec<Conflict>> {
    let mut slots = Vec::with_capacity(submission.events.len());
    let mut conflicts = Vec::new();
    let mut own = Claims::default();
    let base = group.appended.len();
    for (index, event) in submission.events.iter().enumerate() {
        let mcp_id = event.mcp_id();
        if let Some(event_id) = event.event_id() {
            let reused = |seq: u64| Conflict {
                index,
                field: "event_id",
                message: format!(
                    "event_id {event_id:?} was already stored as seq {seq} with a different body"
                ),
            };
            if let Some(seq) = view.projection.event_seq(mcp_id, event_id) {
                match view.catalog.with_event(seq, |e| e.body == event.body()) {
                    Some(Ok(true)) => slots.push(Slot::Stored(seq)),
                    _ => conflicts.push(reused(seq)),
                }
                continue;
            }
            let key = (mcp_id, event_id);
            // Earlier in this submission: the other event is named by its index, since neither
            // has a seq (nothing of a refused submission is stored).
            if let Some(&(n, body)) = own.event_ids.get(&key) {
                if body == event.body() {
                    slots.push(Slot::SameAs(n));
                } else {
                    let earlier = own.appended[n - base].1;
                    conflicts.push(Conflict {
                        index,
                        field: "event_id",
                        message: format!(
                            "event_id {event_id:?} is used by event {earlier} of this batch with a different body"
                        ),
                    });
                }
                continue;
            }
            // In another request of the same group commit: stored just before this one.
            if let Some(&(n, body)) = group.event_ids.get(&key) {
                if body == event.body() {
                    slots.push(Slot::SameAs(n));
                } else {
                    conflicts.push(reused(next_seq + n as u64));
                }
                continue;
            }
            own.event_ids
                .insert(key, (base + own.appended.len(), event.body()));
        }
        slots.push(Slot::Append(base + own.appended.len()));
        own.appended.push((submission_index, index));
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    group.event_ids.extend(own.event_ids);
    group.appended.extend(own.appended);
    Ok(slots)
}

pub use crate::clock::now_us;
