//! The ingest engine: a bounded queue in front of one writer thread that group-commits.
//!
//! Handlers [`Engine::submit`] validated events and wait. The writer thread takes everything that
//! is waiting, plans it against the view (`plan`: a repeated `event_id` is answered with its
//! first seq, one reused with another body is a conflict), writes the group with one write and
//! one fdatasync (`writer_loop`),
//! folds it into the projection, and only then answers. So an acknowledged event is durable and
//! already visible to readers.
//!
//! The queue is bounded in events (`queue_events_max`) by a semaphore whose permits travel with a
//! submission until it is answered; when none are left, `submit` fails at once with
//! [`SubmitError::QueueFull`] rather than letting memory grow.

mod maintenance;
mod plan;
pub mod replica;
mod writer_loop;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

pub use crate::event::NewEvent;
pub use maintenance::Maintenance;
pub use plan::{StoredId, StoredIds};
pub use writer_loop::{GROUP_BYTES_MAX, GROUP_EVENTS_MAX};

use crate::projector::Projection;
use crate::storage::{Catalog, LogWriter, StorageError};
use crate::telemetry::TimingHistogram;
use writer_loop::run_writer;

/// The view readers share: the folded records and the catalog to read payloads from.
#[derive(Debug, Default)]
pub struct View {
    /// Interaction records.
    pub projection: Projection,
    /// Segments and frame offsets.
    pub catalog: Catalog,
}

/// Told of every revocation record the engine folds (the writer's commit, the cluster follower's
/// fold), with the key id it revokes, before any submission of its group is answered: the server
/// wires it to its keys, which the engine does not know. Start-up's fold calls it too.
pub type OnRevocation = Arc<dyn Fn([u8; 8]) + Send + Sync>;

/// Tells `on_revocation` of each revocation record among `events`.
pub fn tell_revocations<'a>(
    events: impl IntoIterator<Item = &'a crate::event::StoredEvent<'a>>,
    on_revocation: &OnRevocation,
) {
    for event in events {
        if let Some(revoked) = crate::event::revoked_key(event) {
            on_revocation(revoked);
        }
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

/// Why an event of a submission clashes with what is stored: its `event_id` is already used
/// with a different body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Index of the event within its submission.
    pub index: usize,
    /// The field at fault.
    pub field: &'static str,
    /// The reused `event_id`.
    pub event_id: String,
    /// Which event holds it.
    pub holder: Holder,
}

/// The event that already holds a conflicting `event_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A stored event (or one being stored in the same group commit), by seq.
    Stored(u64),
    /// An earlier event of the same submission, by its index there: it has no seq, since
    /// nothing of a refused submission is stored.
    Earlier(usize),
}

impl Conflict {
    /// The explanation, naming an earlier event of the batch by `batch_index` of its index in
    /// the submission: a caller that submitted only some of a batch's events maps them back.
    pub fn describe(&self, batch_index: impl Fn(usize) -> usize) -> String {
        let event_id = &self.event_id;
        match self.holder {
            Holder::Stored(seq) => {
                format!(
                    "event_id {event_id:?} was already stored as seq {seq} with a different body"
                )
            }
            Holder::Earlier(index) => format!(
                "event_id {event_id:?} is used by event {} of this batch with a different body",
                batch_index(index)
            ),
        }
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(|index| index))
    }
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
    /// The submission's key was revoked (its revocation record came first in the log) while
    /// the submission waited; nothing of it is stored.
    #[error("the API key was revoked")]
    KeyRevoked,
    /// The write or fdatasync failed; the events are not stored. The message a client sees names
    /// the file but not its directory.
    #[error("storage failure: {}", .cause.public_message())]
    Storage {
        /// The storage error, naming file and operation (shared by every submission of the
        /// group).
        #[source]
        cause: Arc<StorageError>,
        /// Whether it was a full disk (`cause.is_no_space()`), which the API answers apart.
        no_space: bool,
    },
    /// The engine is shutting down and takes no more events.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Cluster mode: the shared log took no writes within the ingest deadline, or this node
    /// stopped applying it. Nothing was acknowledged; a retry with the same `event_id`s is safe.
    #[error("{message}")]
    Unavailable {
        /// What was waited for.
        message: String,
    },
    /// Cluster mode: this node's rules (redaction, limits) differ from those of the cluster's
    /// last group; it publishes nothing until they agree.
    #[error("{message}")]
    RulesDiffer {
        /// Which rules differ and what to do.
        message: String,
    },
    /// Cluster mode: the events, once encoded (and redacted), exceed the largest message the
    /// shared log takes.
    #[error("the batch encodes to {bytes} bytes, more than the cluster's message limit of {max} bytes; send fewer or smaller events")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
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
    /// When it was queued: cluster mode's ingest deadline counts from here.
    queued_at: std::time::Instant,
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
    /// Its queue places are given back first: a caller that submits again as soon as it is
    /// answered (a partial batch's next part) must find them free.
    fn answer(self, result: Result<Vec<Ack>, SubmitError>) {
        let Submission {
            reply,
            events,
            _permit: permit,
            ..
        } = self;
        drop(permit);
        let _ = reply.send(Answer {
            result,
            _events: events,
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
    /// Cluster mode: the thread applying the shared log.
    follower_thread: Mutex<Option<JoinHandle<()>>>,
    /// Cluster mode: what the follower applied.
    progress: Option<Arc<replica::Progress>>,
    /// Cluster mode: tells a follower retrying a failed write to give up (shutdown).
    follower_stop: Arc<AtomicBool>,
    /// The newest seq that is durable and folded into the view; followers of the replay wait on it.
    durable: Arc<tokio::sync::watch::Sender<u64>>,
    /// Cluster mode: the stream's first position, as the transport last saw it (0: not yet).
    stream_first: AtomicU64,
}

#[derive(Debug, Default)]
struct WriterHealth {
    running: AtomicBool,
    last_failure: Mutex<Option<String>>,
    /// Cluster mode: why the follower stopped for good.
    halted: Mutex<Option<String>>,
    /// Time of each group's write and fdatasync.
    fsync_seconds: TimingHistogram,
}

impl Engine {
    /// Starts the writer thread over an opened log and its folded view.
    pub fn start(
        writer: LogWriter,
        view: View,
        queue_events_max: usize,
        maintenance: Maintenance,
        on_revocation: OnRevocation,
    ) -> Engine {
        Engine::start_with(view, queue_events_max, None, |view, rx, health, durable| {
            move || {
                let fold = writer_loop::Fold {
                    view,
                    health,
                    durable,
                    on_revocation,
                };
                run_writer(writer, rx, maintenance, &fold)
            }
        })
    }

    /// Starts a cluster node's engine over an opened log and its folded view: a publisher thread
    /// in place of the writer, handing groups to `log`, and a follower thread applying what the
    /// returned feed delivers, from `resume` on (see [`replica`]).
    ///
    /// The transport must drop the feed before [`Engine::shutdown`] is called.
    #[allow(clippy::too_many_arguments)] // each is a separate part the server wires
    pub fn start_replicated(
        writer: LogWriter,
        view: View,
        queue_events_max: usize,
        maintenance: Maintenance,
        log: Box<dyn replica::SharedLog>,
        resume: replica::Applied,
        limits: replica::PublishLimits,
        on_revocation: OnRevocation,
    ) -> (Engine, replica::GroupFeed) {
        let progress = Arc::new(replica::Progress::new(limits.rules));
        progress.set(resume);
        let (feed, delivered) = replica::group_feed();
        let follower_thread = std::cell::Cell::new(None);
        let follower_stop = Arc::new(AtomicBool::new(false));
        let mut engine = Engine::start_with(
            view,
            queue_events_max,
            Some(Arc::clone(&progress)),
            |view, rx, health, durable| {
                let follower = replica::follower(
                    writer,
                    Arc::clone(&view),
                    Arc::clone(&progress),
                    health,
                    durable,
                    on_revocation,
                );
                let stop = Arc::clone(&follower_stop);
                follower_thread.set(Some(
                    std::thread::Builder::new()
                        .name("mcplog-follower".into())
                        .spawn(move || {
                            replica::run_follower(follower, delivered, maintenance, stop);
                        })
                        .expect("spawning the follower thread"),
                ));
                move || replica::run_publisher(log, view, progress, rx, limits)
            },
        );
        *engine.follower_thread.lock().expect("thread lock") = follower_thread.take();
        engine.follower_stop = follower_stop;
        (engine, feed)
    }

    /// The parts both modes share; `writer` builds the writer thread's body.
    fn start_with<F: FnOnce() + Send + 'static>(
        view: View,
        queue_events_max: usize,
        progress: Option<Arc<replica::Progress>>,
        writer: impl FnOnce(
            Arc<RwLock<View>>,
            mpsc::Receiver<Submission>,
            Arc<WriterHealth>,
            Arc<tokio::sync::watch::Sender<u64>>,
        ) -> F,
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
        let body = writer(
            Arc::clone(&view),
            rx,
            Arc::clone(&health),
            Arc::clone(&durable),
        );
        let thread = {
            let health = Arc::clone(&health);
            std::thread::Builder::new()
                .name("mcplog-writer".into())
                .spawn(move || {
                    let _running = Running(&health.running);
                    body();
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
            follower_thread: Mutex::new(None),
            durable,
            progress,
            follower_stop: Arc::default(),
            stream_first: AtomicU64::new(0),
        }
    }

    /// Cluster mode: the last group of the shared log this node applied, and why its follower
    /// halted if it did. `None` on a single node.
    pub fn replica_progress(&self) -> Option<replica::Report> {
        self.progress.as_ref().map(|progress| progress.report())
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
            queued_at: std::time::Instant::now(),
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

    /// Cluster mode: why this node refuses every write though its storage works (its rules are
    /// not the cluster's), if it does.
    pub fn cluster_refusal(&self) -> Option<String> {
        self.progress.as_ref()?.rules_differ()
    }

    /// The last storage failure, cleared by the next successful write; in cluster mode also why
    /// the follower halted, which nothing clears.
    pub fn storage_failure(&self) -> Option<String> {
        let halted = self.health.halted.lock().expect("health lock").clone();
        halted.or_else(|| {
            self.health
                .last_failure
                .lock()
                .expect("health lock")
                .clone()
        })
    }

    /// A receiver of the newest seq that is durable and visible in the view.
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Latency of group commits (one write and one fdatasync each).
    pub fn fsync_seconds(&self) -> &TimingHistogram {
        &self.health.fsync_seconds
    }

    /// Stops taking events, lets the writer (or publisher) answer everything queued, and waits
    /// for it.
    pub fn close_queue(&self) {
        self.tx.lock().expect("sender lock").take();
        let thread = self.writer_thread.lock().expect("thread lock").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Cluster mode: how many groups the shared log held beyond the last one read, as the
    /// transport last saw it.
    pub fn set_replica_pending(&self, groups: u64) {
        if let Some(progress) = &self.progress {
            progress.set_pending(groups);
        }
    }

    /// The first seq this node holds, or its last seq when retention left it none (the stream
    /// keeps the group holding it, for a restart to resume from); `None` before any event.
    pub fn first_held_seq(&self) -> Option<u64> {
        maintenance::first_held_seq(&self.view().catalog)
    }

    /// Cluster mode: the stream's first position, as the transport last saw it.
    pub fn set_stream_first_position(&self, position: u64) {
        self.stream_first.store(position, Ordering::Relaxed);
    }

    /// Cluster mode: the stream's first position as last seen (0: not yet looked at).
    pub fn stream_first_position(&self) -> u64 {
        self.stream_first.load(Ordering::Relaxed)
    }

    /// Cluster mode: stops the follower for good, as a group that does not continue this node's
    /// history would: the transport found the stream no longer holds what it needs next. Health
    /// turns 503 with `reason`.
    pub fn halt_replica(&self, reason: &str) {
        if let Some(progress) = &self.progress {
            tracing::error!(%reason, "the cluster follower halted; this node applies nothing more");
            *self.health.halted.lock().expect("health lock") = Some(reason.to_owned());
            progress.halt(reason.to_owned());
        }
    }

    /// Cluster mode: the transport reached the shared log (`Ok`) or cannot (`Err` with why).
    pub fn set_shared_log_reachable(&self, reachable: Result<(), String>) {
        if let Some(progress) = &self.progress {
            progress.liveness.set_reachable(reachable);
        }
    }

    /// Cluster mode: the transport saw the shared log hold groups up to `position`.
    pub fn saw_shared_log_end(&self, position: u64) {
        if let Some(progress) = &self.progress {
            progress.liveness.saw_end(position);
        }
    }

    /// Cluster mode: whether this node can write now and has applied the shared log to within
    /// `lag_max` groups of its end, or why not. Always ready on a single node.
    pub fn cluster_readiness(&self, lag_max: u64) -> Result<(), replica::NotReady> {
        let Some(progress) = &self.progress else {
            return Ok(());
        };
        let report = progress.report();
        // The last position read, not applied: skipped messages (strays, however many) are
        // behind the node as much as applied groups are.
        progress.liveness.readiness(
            progress.read().max(report.applied.position),
            report.halted,
            lag_max,
            std::time::Instant::now(),
        )
    }

    /// Stops taking events, lets the writer finish everything queued, and waits for it.
    pub fn shutdown(&self) {
        self.close_queue();
        // Ends once the transport has dropped the feed, or at its next retry of a failed write.
        self.follower_stop.store(true, Ordering::SeqCst);
        let follower = self.follower_thread.lock().expect("thread lock").take();
        if let Some(follower) = follower {
            let _ = follower.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::event::{Action, NewEvent};

    /// A caller answered may submit again at once and find its queue places free: with a queue
    /// of two events, submission after submission of two never finds it full.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answered_submission_has_given_its_queue_places_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        config.api.queue_events_max = 2;
        config.api.batch_events_max = 2;
        let engine = crate::server::recover(&config, std::sync::Arc::new(|_| {})).unwrap();
        for n in 0..3000 {
            let events = (0..2)
                .map(|i| {
                    let body = format!(
                        r#"{{"action":"interaction_progress","interaction_id":"i{n}","mcp_id":"m","timestamp":1.0,"progress_data":{{"i":{i}}}}}"#
                    );
                    NewEvent::new(Action::Progress, 1.0, &format!("i{n}"), "m", None, &body)
                })
                .collect();
            if let Err(err) = engine.submit(events, [0; 8]).await {
                panic!("submission {n}: {err}");
            }
        }
    }
}
