//! The accept loop: connections within a cap, idle ones evicted first when it is reached, hyper's
//! header-read timeout, and a bounded drain on shutdown.
//!
//! At most `max_connections` connections are open. When all are open and another client
//! connects, the connection that has been idle longest (accepted with no request yet, or between
//! requests: waiting for a request's head, partly sent or not) is closed to make room; a
//! connection in the middle of a request is never closed for another. So idle sockets, however
//! many, cannot keep `/readyz` or `/livez` from being answered while any slot is idle: only
//! `max_connections` requests in progress at once make a new client wait (in the kernel's accept
//! queue, as before). An evicted keep-alive client reconnects, as it does after
//! `header_read_timeout`.
//!
//! Shutdown runs in this order. When `shutdown` resolves, `on_shutdown` runs (the server turns
//! `/readyz` to 503 and ends follow streams there); connections open at that moment finish the
//! request they are in and then close (an idle kept-alive one closes at once). Until they have
//! all closed, or `shutdown_grace` has passed, the listener still accepts, one request per
//! connection, so a load balancer polling `/readyz` sees 503 rather than a refused connection.
//! Then the listener closes and any connection still open is dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Limits on connections, in the units their names say.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most connections open at once; when all are open, the one idle longest is closed for a new
    /// client, and with none idle further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers. hyper starts this timer whenever
    /// it waits for a request's head, so it also bounds a kept-alive connection's idle time.
    pub header_read_timeout: Duration,
    /// How long requests in flight at shutdown may take to finish.
    pub shutdown_grace: Duration,
    /// How long a write to a client may make no progress before the connection is cut.
    pub write_timeout: Duration,
}

/// After a failed `accept` (out of file descriptors, say), wait this long before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` resolves, then drains as the module says.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
    on_shutdown: impl FnOnce(),
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(Open::default());
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut on_shutdown = Some(on_shutdown);
    let mut next_id: u64 = 0;
    let grace = tokio::time::sleep(Duration::MAX);
    // Kept across turns of the loop: once it has accepted a client it holds it until a slot is
    // free, and must not be dropped (closing the client's connection) when another branch wins.
    let mut admitting = Box::pin(admit(&listener, Arc::clone(&permits), &open));
    tokio::pin!(shutdown, grace);
    let mut draining = false;
    loop {
        tokio::select! {
            () = &mut shutdown, if !draining => {
                draining = true;
                if let Some(hook) = on_shutdown.take() {
                    hook();
                }
                let _ = closing_tx.send(true);
                grace.as_mut().reset(tokio::time::Instant::now() + limits.shutdown_grace);
                tracing::info!(
                    connections = connections.len(),
                    grace_ms = limits.shutdown_grace.as_millis() as u64,
                    "shutdown: finishing requests in flight"
                );
                if connections.is_empty() {
                    break;
                }
            }
            () = &mut grace, if draining => {
                tracing::warn!(
                    connections = connections.len(),
                    "shutdown: grace period over, closing the connections still open"
                );
                break;
            }
            Some(_) = connections.join_next() => {
                if draining && connections.is_empty() {
                    break;
                }
            }
            (permit, accepted) = &mut admitting => {
                admitting.set(admit(&listener, Arc::clone(&permits), &open));
                let stream = match accepted {
                    Ok(stream) => stream,
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let id = next_id;
                next_id += 1;
                let activity = open.register(id);
                let service = Tracked {
                    app: app.clone(),
                    activity: Arc::clone(&activity),
                };
                let mut builder = builder.clone();
                // A connection accepted while draining answers one request and closes.
                builder.keep_alive(!draining);
                // One accepted before shutdown is told to close once its request in flight is
                // answered; one accepted after it is not told (it would close before reading
                // its one request).
                let closing = (!draining).then(|| closing_rx.clone());
                let open = Arc::clone(&open);
                let write_timeout = limits.write_timeout;
                connections.spawn(async move {
                    let io = TokioIo::new(WriteTimeout::new(stream, write_timeout));
                    serve_connection(builder, io, service, closing, activity).await;
                    open.remove(id);
                    drop(permit);
                });
            }
        }
    }
    // Dropping the set aborts whatever is still open; the listener closes with this function.
    connections.shutdown().await;
}

/// Serves one connection until it ends, shutdown closes it (`closing`, gracefully: its request
/// in flight is answered first) or a new client evicts it.
async fn serve_connection(
    builder: http1::Builder,
    io: TokioIo<WriteTimeout<TcpStream>>,
    service: Tracked,
    mut closing: Option<watch::Receiver<bool>>,
    activity: Arc<Activity>,
) {
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let closed = async {
        match closing.as_mut() {
            Some(closing) => {
                let _ = closing.wait_for(|closing| *closing).await;
            }
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        _ = conn.as_mut() => End::Finished,
        () = closed => End::Graceful,
        // Evicted for a new client. Idle (the connection is polled only here, so no request can
        // begin meanwhile): closed now, even halfway through a request's head, which graceful
        // shutdown would wait out. A request that began after the choice is answered first.
        () = activity.evict.notified() => {
            if activity.in_flight.load(Ordering::Acquire) == 0 {
                End::Finished
            } else {
                End::Graceful
            }
        }
    };
    if end == End::Graceful {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// How a connection's task goes on after its first wait.
#[derive(PartialEq, Eq)]
enum End {
    /// Done: the connection ended, or is dropped now.
    Finished,
    /// Answer the request in progress, if any, then close.
    Graceful,
}

/// The next client and a slot for it. With a slot free, waits for a client; with none, waits for
/// a client, then closes the connection idle longest and waits for its slot (or any other).
async fn admit(
    listener: &TcpListener,
    permits: Arc<Semaphore>,
    open: &Open,
) -> (OwnedSemaphorePermit, std::io::Result<TcpStream>) {
    if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
        return (permit, listener.accept().await.map(|(stream, _)| stream));
    }
    let accepted = listener.accept().await.map(|(stream, _)| stream);
    let permit = match Arc::clone(&permits).try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            if accepted.is_ok() && open.evict_idle_longest() {
                tracing::debug!("max_connections reached: closed the connection idle longest");
            }
            permits
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed")
        }
    };
    (permit, accepted)
}

/// The open connections' activity, for choosing one to evict.
#[derive(Default)]
struct Open {
    connections: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Open {
    fn register(&self, id: u64) -> Arc<Activity> {
        let activity = Arc::new(Activity::default());
        self.lock().insert(id, Arc::clone(&activity));
        activity
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tells the connection idle longest to close; false when every connection is busy.
    fn evict_idle_longest(&self) -> bool {
        let mut connections = self.lock();
        let longest = connections
            .iter()
            .filter(|(_, activity)| activity.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, activity)| activity.idle_since_ns.load(Ordering::Acquire))
            .map(|(&id, _)| id);
        let Some(activity) = longest.and_then(|id| connections.remove(&id)) else {
            return false;
        };
        // A stored permit: the connection's task sees it even if not waiting yet.
        activity.evict.notify_one();
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.connections.lock().expect("the open connections' lock")
    }
}

/// What one connection is doing.
#[derive(Default)]
struct Activity {
    /// Requests begun and not yet answered to their last byte (0 or 1 under HTTP/1).
    in_flight: AtomicUsize,
    /// When the connection last became idle, in nanoseconds since the process's [`epoch`]
    /// (0: since it was accepted, before any request).
    idle_since_ns: AtomicU64,
    /// Notified to close the connection for a new client.
    evict: Notify,
}

/// The process's reference instant for [`Activity::idle_since_ns`].
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The router as one connection's service: marks the connection busy from a request's head to
/// its answer's last byte.
#[derive(Clone)]
struct Tracked {
    app: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let busy = Busy::begin(Arc::clone(&self.activity));
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(request).await?;
            Ok(response.map(|inner| Body::new(Answering { inner, _busy: busy })))
        })
    }
}

/// A request in progress on a connection; its end makes the connection idle.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let since = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.idle_since_ns.store(since, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy until hyper has written it (or dropped it).
struct Answering {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Answering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes may not stall for longer than `limit`: a client that stops reading
/// (its receive window full) is cut off, rather than holding its connection, its buffered
/// response and its slot under `max_connections` for ever. Reads are bounded by hyper's
/// header-read timeout and the body and request timeouts.
pub(super) struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    /// Armed when a write could not proceed; cleared by any progress.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub(super) fn new(inner: S, limit: Duration) -> WriteTimeout<S> {
        WriteTimeout {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a write or flush returned `Pending`: pending still, or timed out.
    fn pending<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading: write_timeout passed",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
