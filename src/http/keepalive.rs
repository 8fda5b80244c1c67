//! `Connection: close` on an answer sent before its request's body was read.
//!
//! Several refusals come before the body is read, on purpose: a bad key (401), a key over its
//! rate (429, "a single event is refused before its body is read"), a route or role that refuses
//! the request outright, a body over its limit (413). hyper cannot reuse such a connection (the
//! unread body is still in the stream) and closes it once the answer is written; without the
//! header a keep-alive client only learns so when its next request fails with a broken pipe, and
//! retries that one at once, never having seen the `Retry-After` it was sent. So what of the body
//! has already arrived is discarded, up to a small limit: if that was all of it (a small event
//! sent whole) the connection is kept; else the answer says `Connection: close`, and the client
//! knows the connection ends with this answer, reads it, and reconnects when the answer says.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Body as _, Bytes, Frame, SizeHint};

/// Most bytes of an unread body read and discarded, of what has already arrived, to keep the
/// connection: a small event refused unread is usually in the buffer whole.
const DISCARD_BYTES_MAX: usize = 64 * 1024;

/// Runs the request with its body watched. An answer that left the body unread first discards
/// what of it has already arrived (up to [`DISCARD_BYTES_MAX`], without waiting for more); if that
/// reaches its end the connection is kept, else the answer says `Connection: close`.
pub(super) async fn close_if_unread(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // A body that is empty from the start (a GET, `Content-Length: 0`) cannot be left unread.
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let left = Arc::new(Left::default());
    let watched = Watched {
        inner: Some(body),
        left: Arc::clone(&left),
    };
    let mut response = next
        .run(Request::from_parts(parts, Body::new(watched)))
        .await;
    if left.finished.load(Ordering::Acquire) {
        return response;
    }
    let unread = left.body.lock().expect("the unread body's lock").take();
    if !unread.is_some_and(discard_arrived) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads and drops what of `body` has already arrived, up to [`DISCARD_BYTES_MAX`]; true if that
/// was all of it.
fn discard_arrived(mut body: Body) -> bool {
    use futures_util::FutureExt;
    use http_body_util::BodyExt;
    let mut discarded = 0usize;
    loop {
        match body.frame().now_or_never() {
            Some(None) => return true,
            Some(Some(Ok(frame))) => {
                discarded += frame.data_ref().map_or(0, |data| data.len());
                if discarded > DISCARD_BYTES_MAX {
                    return false;
                }
                if body.is_end_stream() {
                    return true;
                }
            }
            Some(Some(Err(_))) | None => return false,
        }
    }
}

/// What a handler left of its request's body.
#[derive(Default)]
struct Left {
    /// It was read to its end.
    finished: AtomicBool,
    /// It was dropped before its end: here it is.
    body: Mutex<Option<Body>>,
}

/// A request body that records whether it was read to its end, and hands itself back if not.
struct Watched {
    inner: Option<Body>,
    left: Arc<Left>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if !self.left.finished.load(Ordering::Acquire) {
            *self.left.body.lock().expect("the unread body's lock") = self.inner.take();
        }
    }
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.left.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint())
    }
}
