//! The accept loop: connections within a cap, hyper's header-read timeout, and a bounded drain on
//! shutdown.
//!
//! Shutdown runs in this order. When `shutdown` resolves, `on_shutdown` runs (the server turns
//! `/readyz` to 503 and ends follow streams there); connections open at that moment finish the
//! request they are in and then close (an idle kept-alive one closes at once). Until they have
//! all closed, or `shutdown_grace` has passed, the listener still accepts, one request per
//! connection, so a load balancer polling `/readyz` sees 503 rather than a refused connection.
//! Then the listener closes and any connection still open is dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Limits on connections, in the units their names say.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most connections open at once; further clients wait in the kernel's accept queue.
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
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut on_shutdown = Some(on_shutdown);
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(shutdown, grace);
    let mut draining = false;
    loop {
        let accept = async {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed");
            (permit, listener.accept().await)
        };
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
            (permit, accepted) = accept => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let mut builder = builder.clone();
                // A connection accepted while draining answers one request and closes.
                builder.keep_alive(!draining);
                // One accepted before shutdown is told to close once its request in flight is
                // answered; one accepted after it is not told (it would close before reading
                // its one request).
                let mut closing = (!draining).then(|| closing_rx.clone());
                connections.spawn(async move {
                    let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
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
                    let finished = tokio::select! {
                        result = conn.as_mut() => Some(result),
                        () = closed => None,
                    };
                    if finished.is_none() {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                    drop(permit);
                });
            }
        }
    }
    // Dropping the set aborts whatever is still open; the listener closes with this function.
    connections.shutdown().await;
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
