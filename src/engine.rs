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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::event::{Action, StoredEvent, ValidEvent};
use crate::projector::{Admission, Projection, Refusal};
use crate::storage::{Catalog, LogWriter};

/// The most events one group commit carries; a larger backlog is written in several groups so
/// that one fdatasync never waits on an unbounded write.
pub const GROUP_EVENTS_MAX: usize = 4096;

/// The view readers share: the folded records and the catalog to read payloads from.
#[derive(Debug, Default)]
pub struct View {
    /// Interaction records.
    pub projection: Projection,
    /// Segments and frame offsets.
    pub catalog: Catalog,
}

/// An event the writer owns until it is on disk.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The action.
    pub action: Action,
    /// The interaction.
    pub interaction_id: String,
    /// The reporting MCP.
    pub mcp_id: String,
    /// Client timestamp in seconds.
    pub timestamp: f64,
    /// Optional idempotency key.
    pub event_id: Option<String>,
    /// The client's JSON, byte-exact.
    pub body: String,
}

impl From<&ValidEvent<'_>> for NewEvent {
    fn from(event: &ValidEvent<'_>) -> NewEvent {
        NewEvent {
            action: event.action,
            interaction_id: event.interaction_id.to_string(),
            mcp_id: event.mcp_id.to_string(),
            timestamp: event.timestamp,
            event_id: event.event_id.as_deref().map(str::to_owned),
            body: event.body.to_owned(),
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
    reply: oneshot::Sender<Result<Vec<Ack>, SubmitError>>,
    _permit: OwnedSemaphorePermit,
}

/// The running engine. Cloning the `Arc` shares it between handlers.
pub struct Engine {
    view: Arc<RwLock<View>>,
    tx: Mutex<Option<mpsc::Sender<Submission>>>,
    permits: Arc<Semaphore>,
    queue_events_max: usize,
    counters: Counters,
    health: Arc<WriterHealth>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct WriterHealth {
    running: AtomicBool,
    last_failure: Mutex<Option<String>>,
}

impl Engine {
    /// Starts the writer thread over an opened log and its folded view.
    pub fn start(writer: LogWriter, view: View, queue_events_max: usize) -> Engine {
        assert!(queue_events_max > 0);
        let view = Arc::new(RwLock::new(view));
        let (tx, rx) = mpsc::channel(queue_events_max);
        let health = Arc::new(WriterHealth::default());
        health.running.store(true, Ordering::SeqCst);
        let thread = {
            let view = Arc::clone(&view);
            let health = Arc::clone(&health);
            std::thread::Builder::new()
                .name("mcplog-writer".into())
                .spawn(move || {
                    run_writer(writer, view, rx, &health);
                    health.running.store(false, Ordering::SeqCst);
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
        tx.send(Submission {
            events,
            key_id,
            reply,
            _permit: permit,
        })
        .await
        .map_err(|_| SubmitError::ShuttingDown)?;
        let acks = answer.await.map_err(|_| SubmitError::ShuttingDown)??;
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

    /// Stops taking events, lets the writer finish everything queued, and waits for it.
    pub fn shutdown(&self) {
        self.tx.lock().expect("sender lock").take();
        let thread = self.writer_thread.lock().expect("thread lock").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn run_writer(
    mut writer: LogWriter,
    view: Arc<RwLock<View>>,
    mut rx: mpsc::Receiver<Submission>,
    health: &WriterHealth,
) {
    let mut last_us = 0;
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        let mut events = group[0].events.len();
        while events < GROUP_EVENTS_MAX {
            match rx.try_recv() {
                Ok(next) => {
                    events += next.events.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        // Receive times never go backwards, so retention by receive time stays monotone even if
        // the wall clock is stepped back.
        last_us = now_us().max(last_us);
        commit(&mut writer, &view, group, last_us, health);
    }
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

fn commit(
    writer: &mut LogWriter,
    view: &RwLock<View>,
    group: Vec<Submission>,
    now_us: u64,
    health: &WriterHealth,
) {
    let next_seq = writer.next_seq();
    let mut plans: Vec<(Submission, Vec<Slot>)> = Vec::with_capacity(group.len());
    let mut appended: Vec<(usize, usize)> = Vec::new(); // (plan index, event index)
    {
        let view = view.read().expect("view lock");
        // Interactions and event ids claimed by earlier submissions of this group.
        let mut group_mcp: HashMap<String, String> = HashMap::new();
        let mut group_event_ids: HashMap<(String, String), usize> = HashMap::new();
        for submission in group {
            match plan(
                &view,
                &submission,
                &group_mcp,
                &group_event_ids,
                &plans,
                &appended,
                next_seq,
            ) {
                Ok(slots) => {
                    let plan_index = plans.len();
                    for (i, slot) in slots.iter().enumerate() {
                        let event = &submission.events[i];
                        group_mcp
                            .entry(event.interaction_id.clone())
                            .or_insert_with(|| event.mcp_id.clone());
                        if let Slot::Append(n) = *slot {
                            debug_assert_eq!(n, appended.len());
                            appended.push((plan_index, i));
                            if let Some(id) = &event.event_id {
                                group_event_ids.insert((event.mcp_id.clone(), id.clone()), n);
                            }
                        }
                    }
                    plans.push((submission, slots));
                }
                Err(conflicts) => {
                    let _ = submission.reply.send(Err(SubmitError::Conflict(conflicts)));
                }
            }
        }
    }
    if !appended.is_empty() {
        let key_ids: Vec<[u8; 8]> = plans.iter().map(|(s, _)| s.key_id).collect();
        let stored: Vec<StoredEvent<'_>> = appended
            .iter()
            .enumerate()
            .map(|(n, &(p, i))| {
                let event = &plans[p].0.events[i];
                StoredEvent {
                    seq: next_seq + n as u64,
                    write_index: n as u32,
                    received_at_us: now_us,
                    key_id: key_ids[p],
                    action: event.action,
                    timestamp: event.timestamp,
                    interaction_id: &event.interaction_id,
                    mcp_id: &event.mcp_id,
                    event_id: event.event_id.as_deref(),
                    body: &event.body,
                }
            })
            .collect();
        match writer.append(&stored, now_us) {
            Ok(changes) => {
                let mut view = view.write().expect("view lock");
                for change in changes {
                    view.catalog.apply(change);
                }
                for event in &stored {
                    view.projection.apply(event);
                }
                drop(view);
                *health.last_failure.lock().expect("health lock") = None;
            }
            Err(err) => {
                tracing::error!(error = %err, events = stored.len(), "group commit failed; nothing of it is acknowledged");
                *health.last_failure.lock().expect("health lock") = Some(err.to_string());
                let failure = SubmitError::Storage {
                    message: err.to_string(),
                    no_space: err.is_no_space(),
                };
                for (submission, _) in plans {
                    let _ = submission.reply.send(Err(failure.clone()));
                }
                return;
            }
        }
    }
    for (submission, slots) in plans {
        let acks = slots
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
            .collect();
        let _ = submission.reply.send(Ok(acks));
    }
}

/// Decides each event of a submission, or lists every conflict in it.
fn plan(
    view: &View,
    submission: &Submission,
    group_mcp: &HashMap<String, String>,
    group_event_ids: &HashMap<(String, String), usize>,
    plans: &[(Submission, Vec<Slot>)],
    appended: &[(usize, usize)],
    next_seq: u64,
) -> Result<Vec<Slot>, Vec<Conflict>> {
    let mut slots = Vec::with_capacity(submission.events.len());
    let mut conflicts = Vec::new();
    // Claims made by earlier events of this same submission.
    let mut own_mcp: HashMap<&str, &str> = HashMap::new();
    let mut own_event_ids: HashMap<(&str, &str), (usize, usize)> = HashMap::new(); // → (append number, event index)
    let mut next_append = appended.len();
    for (index, event) in submission.events.iter().enumerate() {
        let claimed_mcp = own_mcp
            .get(event.interaction_id.as_str())
            .copied()
            .or_else(|| group_mcp.get(&event.interaction_id).map(String::as_str));
        let admission = view.projection.admit(
            &event.interaction_id,
            &event.mcp_id,
            event.event_id.as_deref(),
        );
        let stored_mcp = match &admission {
            Err(Refusal::McpMismatch { stored }) => Some(stored.as_str()),
            Ok(_) => claimed_mcp,
        };
        if let Some(stored) = stored_mcp.filter(|&m| m != event.mcp_id) {
            conflicts.push(Conflict {
                index,
                field: "mcp_id",
                message: format!(
                    "interaction {:?} belongs to mcp_id {stored:?}, not {:?}",
                    event.interaction_id, event.mcp_id
                ),
            });
            continue;
        }
        let reused = |stored_body: Option<&str>, seq: Option<u64>| Conflict {
            index,
            field: "event_id",
            message: format!(
                "event_id {:?} was already stored{} with a different body",
                event.event_id.as_deref().unwrap_or_default(),
                seq.map(|s| format!(" as seq {s}")).unwrap_or_default()
            ) + if stored_body.is_none() {
                " (the stored event could not be read)"
            } else {
                ""
            },
        };
        if let Ok(Admission::SeenEventId(seq)) = admission {
            let stored_body = view.catalog.with_event(seq, |e| e.body == event.body);
            match stored_body {
                Some(Ok(true)) => slots.push(Slot::Stored(seq)),
                Some(Ok(false)) => conflicts.push(reused(Some(""), Some(seq))),
                _ => conflicts.push(reused(None, Some(seq))),
            }
            continue;
        }
        if let Some(id) = &event.event_id {
            let own = own_event_ids
                .get(&(event.mcp_id.as_str(), id.as_str()))
                .copied();
            let earlier = match own {
                Some((n, i)) => Some((n, submission.events[i].body.as_str())),
                None => group_event_ids
                    .get(&(event.mcp_id.clone(), id.clone()))
                    .map(|&n| {
                        let (p, i) = appended[n];
                        (n, plans[p].0.events[i].body.as_str())
                    }),
            };
            if let Some((n, first_body)) = earlier {
                if first_body == event.body {
                    slots.push(Slot::SameAs(n));
                } else {
                    conflicts.push(reused(Some(""), Some(next_seq + n as u64)));
                }
                continue;
            }
            own_event_ids.insert((event.mcp_id.as_str(), id.as_str()), (next_append, index));
        }
        own_mcp
            .entry(event.interaction_id.as_str())
            .or_insert(event.mcp_id.as_str());
        slots.push(Slot::Append(next_append));
        next_append += 1;
    }
    if conflicts.is_empty() {
        Ok(slots)
    } else {
        Err(conflicts)
    }
}

/// The server clock in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}
