//! `GET /api/v2/events`: the stored events in seq order as NDJSON, exactly as they arrived, for
//! auditors. `follow=true` keeps the stream open and sends new events as they become durable.
//!
//! The stream is read by seq: a task reads the view in chunks after a cursor and sends them on a
//! small bounded channel (so a slow reader slows the task, not the server). Once it has caught up
//! it waits for the writer to announce a newer durable seq. The cursor, not a subscription, decides
//! what comes next, so the switch from catch-up to live neither misses nor repeats an event.
//!
//! A stream outlives the request that authenticated it, so its key is checked again for as long
//! as it runs: before every chunk it sends, at once when a key is revoked or the admin key file
//! changes (the keys' generation), and every `KEY_RECHECK` (for expiry). A key no longer accepted
//! ends the stream with a final error line naming why (`key_revoked`, `key_expired`,
//! `key_replaced`).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hyper::body::Bytes;
use tokio::sync::{mpsc, watch};

use super::{ApiError, AppState};
use crate::auth::{AuthError, KeyId, Keys, Principal};
use crate::event::EventLine;
use crate::refusal::Code;
use crate::scope::Scope;

/// Most events looked at under one hold of the view's read lock.
const CHUNK_EVENTS: u64 = 1000;
/// A chunk is closed once it holds this many bytes, so one chunk is at most this plus one event.
const CHUNK_BYTES_TARGET: usize = 64 * 1024;
/// Chunks buffered between the reading task and the connection. With the chunk being built, a
/// reader that stops reading holds at most `(CHUNKS_BUFFERED + 1) × (CHUNK_BYTES_TARGET + one
/// event)` bytes of this server's memory (hyper's write buffer and the socket's aside).
const CHUNKS_BUFFERED: usize = 2;
/// How often an open stream checks its key again even when nothing announced a change: an
/// expiry is seen within this.
const KEY_RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

#[utoipa::path(get, path = "/api/v2/events", tag = "audit",
    params(
        ("after_seq" = Option<u64>, Query, description = "start after this seq (default 0: from the oldest retained event)"),
        ("limit" = Option<u64>, Query, description = "stop after this many events (default: no limit)"),
        ("mcp_id" = Option<String>, Query, description = "only this mcp_id"),
        ("follow" = Option<bool>, Query, description = "keep the stream open and send new events as they become durable"),
    ),
    responses((status = 200, description = "NDJSON, one object per line, in seq order: an event {seq, received_at, key_id, event}; a gap {\"gap\":{after_seq, next_seq, reason}} where no event holds the seqs after after_seq and before next_seq, nor ever will (reason: retention, repair or cut); with follow, a heartbeat {heartbeat, durable_seq} while quiet; an error {\"error\":{code, message, ...}} that ends the stream", content_type = "application/x-ndjson", body = String),
        (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson),
        (status = 429, description = "too many replay streams open for this key", body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let params = super::checked_params(params, &["after_seq", "limit", "mcp_id", "follow"])?;
    let ReplayParams {
        after,
        limit,
        mcp_id,
        follow,
    } = replay_params(params)?;
    // A writer replays its own mcp_id only; asking for another gives what an unknown one gives.
    let only = match principal.scope().narrow(mcp_id.as_deref()) {
        Scope::All => OwnedScope::All,
        Scope::Only(mcp_id) => OwnedScope::Only(mcp_id.to_owned()),
        Scope::Nothing => OwnedScope::Nothing,
    };
    let slot = state
        .replay_streams
        .open(principal.key_id, state.limits.replay_streams_per_key_max)
        .ok_or_else(|| {
            let max = state.limits.replay_streams_per_key_max;
            let message = format!(
                "this key has replay_streams_per_key_max ({max}) replay streams open already"
            );
            ApiError::new(Code::TooManyStreams, message)
        })?;
    let (tx, rx) = mpsc::channel::<Piece>(CHUNKS_BUFFERED);
    let keys = std::sync::Arc::clone(&state.keys);
    let refused = Box::pin(refused(
        std::sync::Arc::clone(&keys),
        principal.clone(),
        keys.subscribe(),
    ));
    tokio::spawn(async move {
        produce(state, after, limit, only, follow, tx).await;
        drop(slot);
    });
    let body = Body::from_stream(Chunks {
        rx,
        state: Ending::Open,
        keys,
        principal,
        refused,
        follow,
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// What a replay asks for.
struct ReplayParams {
    after: u64,
    limit: Option<u64>,
    mcp_id: Option<String>,
    follow: bool,
}

/// A replay's checked parameters read.
fn replay_params(params: Vec<(String, String)>) -> Result<ReplayParams, ApiError> {
    let bad = ApiError::bad_parameter;
    let (mut after, mut limit, mut mcp_id, mut follow) = (0u64, None, None, false);
    for (name, value) in params {
        match name.as_str() {
            "after_seq" => {
                after = value.parse().map_err(|_| {
                    bad(
                        "after_seq",
                        format!("after_seq must be a whole number, got {value:?}"),
                    )
                })?
            }
            "limit" => {
                limit = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|l| *l > 0)
                        .ok_or_else(|| {
                            bad(
                                "limit",
                                format!("limit must be a whole number above 0, got {value:?}"),
                            )
                        })?,
                )
            }
            "mcp_id" => mcp_id = Some(value),
            "follow" => {
                follow = value.parse().map_err(|_| {
                    bad(
                        "follow",
                        format!("follow must be true or false, got {value:?}"),
                    )
                })?
            }
            other => return Err(bad(other, format!("unknown query parameter {other:?}"))),
        }
    }
    Ok(ReplayParams {
        after,
        limit,
        mcp_id,
        follow,
    })
}

/// Replay streams open per key, each held by a [`StreamSlot`].
#[derive(Debug, Default)]
pub struct OpenStreams(std::sync::Mutex<std::collections::HashMap<KeyId, usize>>);

impl OpenStreams {
    /// A slot for one more stream of `key`, unless it has `max` open.
    fn open(self: &std::sync::Arc<Self>, key: KeyId, max: usize) -> Option<StreamSlot> {
        let mut open = self.0.lock().expect("stream count lock");
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            streams: std::sync::Arc::clone(self),
            key,
        })
    }
}

/// One open replay stream; closing it (dropping) frees the key's slot.
struct StreamSlot {
    streams: std::sync::Arc<OpenStreams>,
    key: KeyId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.0.lock().expect("stream count lock");
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A [`Scope`] the reading task owns.
enum OwnedScope {
    All,
    Only(String),
    Nothing,
}

impl OwnedScope {
    fn scope(&self) -> Scope<'_> {
        match self {
            OwnedScope::All => Scope::All,
            OwnedScope::Only(mcp_id) => Scope::Only(mcp_id),
            OwnedScope::Nothing => Scope::Nothing,
        }
    }
}

/// What the reading task hands the connection: lines to send, or a fault that aborts the stream.
enum Piece {
    Lines(Bytes),
    /// The stream is cut here (no closing chunk), so a client cannot mistake it for a whole one.
    Abort,
}

/// Reads chunks after `cursor` and sends them until the limit, the end (without follow), an
/// unreadable event, shutdown, or the reader going away. A quiet follow stream sends a heartbeat
/// line every `replay_heartbeat`.
async fn produce(
    state: AppState,
    mut cursor: u64,
    limit: Option<u64>,
    only: OwnedScope,
    follow: bool,
    tx: mpsc::Sender<Piece>,
) {
    let mut durable = state.engine.subscribe_durable();
    let mut draining = state.draining.subscribe();
    let heartbeat = state.limits.replay_heartbeat;
    let mut left = limit.unwrap_or(u64::MAX);
    // What a heartbeat tells as `durable_seq`. A stream over the whole log tells the log's
    // durable end. A writer's stream tells the seq of the newest event of its own it has sent
    // (or its `after_seq`): as good a point to resume from, since no event of its own lies
    // between, and it does not tell a writer how much the other mcp_ids write.
    let whole_log = matches!(only, OwnedScope::All);
    let mut own_sent = cursor;
    loop {
        let last = *durable.borrow_and_update();
        while left > 0 {
            let chunk = read_chunk(&state, cursor, last, left, only.scope());
            if chunk.cursor == cursor {
                break;
            }
            cursor = chunk.cursor;
            own_sent = chunk.last_sent.unwrap_or(own_sent);
            left -= chunk.sent;
            if !chunk.lines.is_empty()
                && tx
                    .send(Piece::Lines(Bytes::from(chunk.lines)))
                    .await
                    .is_err()
            {
                return;
            }
            if chunk.unreadable {
                let _ = tx.send(Piece::Abort).await;
                return;
            }
            if *draining.borrow() {
                // A follow stream ends cleanly at shutdown (the reader resumes with after_seq);
                // a bounded replay that has not reached its end must not look whole.
                if !follow {
                    let resume = if whole_log { cursor } else { own_sent };
                    let _ = tx.send(Piece::Lines(shutting_down_line(resume))).await;
                    let _ = tx.send(Piece::Abort).await;
                }
                return;
            }
        }
        if !follow || left == 0 {
            return;
        }
        tokio::select! {
            changed = durable.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
            // Shutdown ends the stream cleanly; the reader resumes with after_seq elsewhere.
            () = async { let _ = draining.wait_for(|draining| *draining).await; } => return,
            () = tokio::time::sleep(heartbeat) => {
                let told = if whole_log { last } else { own_sent };
                let line = format!(
                    "{{\"heartbeat\":{},\"durable_seq\":{told}}}\n",
                    crate::clock::now_us() as f64 / 1e6
                );
                if tx.send(Piece::Lines(Bytes::from(line))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The last line of a bounded replay cut by shutdown: where to resume.
fn shutting_down_line(after_seq: u64) -> Bytes {
    let line = serde_json::json!({"error": {
        "code": Code::ShuttingDown,
        "message": "the server is shutting down; resume with after_seq",
        "after_seq": after_seq,
    }});
    Bytes::from(format!("{line}\n"))
}

/// One chunk of NDJSON and where the reading stopped.
struct Chunk {
    lines: Vec<u8>,
    /// The last seq looked at, or the last seq of a gap announced.
    cursor: u64,
    /// Event lines in `lines`.
    sent: u64,
    /// The seq of the last event line in `lines`.
    last_sent: Option<u64>,
    /// The chunk ends with an error line for an event that could not be read.
    unreadable: bool,
}

/// NDJSON of the events after `cursor` up to `last`: at most `CHUNK_EVENTS` seqs looked at,
/// `left` sent, and about `CHUNK_BYTES_TARGET` bytes. Seqs no event holds (before the oldest
/// retained event, in a recorded repair or cut) are announced with a gap line each, in seq order,
/// even at the end of the log: a seq past a cut is known never to come.
fn read_chunk(state: &AppState, cursor: u64, last: u64, left: u64, only: Scope<'_>) -> Chunk {
    let view = state.engine.view();
    let mut chunk = Chunk {
        lines: Vec::new(),
        cursor,
        sent: 0,
        last_sent: None,
        unreadable: false,
    };
    let mut looked = 0;
    while looked < CHUNK_EVENTS && chunk.sent < left && chunk.lines.len() < CHUNK_BYTES_TARGET {
        let seq = chunk.cursor + 1;
        let resume = view.catalog.resume_at(seq);
        if resume > seq {
            for gap in view.catalog.gaps(chunk.cursor, resume) {
                chunk.lines.extend_from_slice(gap.line().as_bytes());
            }
            chunk.cursor = resume - 1;
            continue;
        }
        if seq > last {
            break;
        }
        looked += 1;
        let line = view.catalog.with_event(seq, |e| {
            if !only.admits(e.mcp_id) {
                return Ok(None);
            }
            // A frame whose CRC holds but whose body is not JSON was altered: not a line to skip.
            EventLine::of(e)
                .and_then(|line| serde_json::to_string(&line).ok())
                .map(Some)
                .ok_or_else(|| "the stored body is not JSON".to_owned())
        });
        chunk.cursor = seq;
        match line.map(|read| read.and_then(|line| line)) {
            Some(Ok(Some(line))) => {
                chunk.lines.extend_from_slice(line.as_bytes());
                chunk.lines.push(b'\n');
                chunk.sent += 1;
                chunk.last_sent = Some(seq);
            }
            Some(Ok(None)) | None => {}
            Some(Err(reason)) => {
                tracing::error!(seq, %reason, "a stored event could not be read for replay");
                let line = serde_json::json!({"error": {
                    "code": Code::UnreadableEvent,
                    "seq": seq,
                    "message": "this stored event failed its checksum and cannot be replayed; the stream stops here (mcplog-seg verify names the damage)",
                }});
                chunk.lines.extend_from_slice(line.to_string().as_bytes());
                chunk.lines.push(b'\n');
                chunk.unreadable = true;
                break;
            }
        }
    }
    chunk
}

/// Resolves once `keys` no longer accept `principal`, with the reason: checked at once, on every
/// change the keys announce, and every [`KEY_RECHECK`].
async fn refused(
    keys: std::sync::Arc<Keys>,
    principal: Principal,
    mut changes: watch::Receiver<u64>,
) -> AuthError {
    let mut recheck = tokio::time::interval(KEY_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Err(why) = keys.still_accepts(&principal, now_s()) {
            return why;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                // The keys are gone only with the server; the timer still runs.
                changes.mark_unchanged();
                recheck.tick().await;
            },
            _ = recheck.tick() => {}
        }
    }
}

fn now_s() -> f64 {
    crate::clock::now_us() as f64 / 1e6
}

/// The stable code a stream ends with when its key is no longer accepted.
fn refusal_code(why: AuthError) -> Code {
    match why {
        AuthError::Revoked => Code::KeyRevoked,
        AuthError::Expired => Code::KeyExpired,
        AuthError::Replaced => Code::KeyReplaced,
        AuthError::Disabled => Code::KeyDisabled,
        _ => Code::KeyUnknown,
    }
}

/// The final line of a stream whose key is no longer accepted.
fn refusal_line(why: AuthError) -> Bytes {
    let line = serde_json::json!({"error": {
        "code": refusal_code(why),
        "message": format!("{why}; the stream ends here"),
        "field": "authorization",
    }});
    Bytes::from(format!("{line}\n"))
}

/// Where a stream is in ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Sending.
    Open,
    /// The last line was sent; the stream ends cleanly at the next poll.
    Close,
    /// The last line was sent; at the next poll hyper is given the chance to flush, then cut.
    CutNext,
    /// The next poll fails the body, cutting the stream without its closing chunk.
    Cutting,
}

/// The channel as the body's stream of chunks.
struct Chunks {
    rx: mpsc::Receiver<Piece>,
    state: Ending,
    keys: std::sync::Arc<Keys>,
    principal: Principal,
    /// Resolves once the key is no longer accepted.
    refused: Pin<Box<dyn std::future::Future<Output = AuthError> + Send>>,
    /// A follow stream ends cleanly after a refusal; a bounded replay is cut, so that a partial
    /// export never looks whole.
    follow: bool,
}

impl Chunks {
    /// The refusal line, and the stream set to end after it.
    fn refuse(&mut self, why: AuthError) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        tracing::info!(
            reason = refusal_code(why).as_str(),
            "a replay stream ended: its key is no longer accepted"
        );
        self.state = if self.follow {
            Ending::Close
        } else {
            Ending::CutNext
        };
        Poll::Ready(Some(Ok(refusal_line(why))))
    }
}

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.state {
            Ending::Open => {}
            Ending::Close => return Poll::Ready(None),
            Ending::CutNext => {
                // Pending once, so that hyper writes out the lines it holds before the cut.
                self.state = Ending::Cutting;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Ending::Cutting => {
                return Poll::Ready(Some(Err(std::io::Error::other(
                    "the replay stream was cut",
                ))))
            }
        }
        if let Poll::Ready(why) = self.refused.as_mut().poll(cx) {
            return self.refuse(why);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Piece::Lines(lines))) => {
                // Checked before every chunk, whatever the timer says.
                match self.keys.still_accepts(&self.principal, now_s()) {
                    Ok(()) => Poll::Ready(Some(Ok(lines))),
                    Err(why) => self.refuse(why),
                }
            }
            Poll::Ready(Some(Piece::Abort)) => {
                self.state = Ending::Cutting;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
