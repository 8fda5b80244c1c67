//! `Connection: close` on an answer sent before its request's body was read.
//!
//! Several refusals come before the body is read, on purpose: a bad key (401), a key over its
//! rate (429, "a single event is refused before its body is read"), a route or role that refuses
//! the request outright, a body over its limit (413). hyper cannot reuse such a connection (the
//! unread body is still in the stream) and closes it once the answer is written; without the
//! header a keep-alive client only learns so when its next request fails with a broken pipe, and
//! retries that one at once, never having seen the `Retry-After` it was sent. With the header it
//! knows the connection ends with this answer, reads it, and reconnects when the answer says.
//! Draining the body instead would make the server read (up to a limit) what it just refused.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Body as _, Bytes, Frame, SizeHint};

/// Runs the request with its body watched; answers that left a body unread say
/// `Connection: close`.
pub(super) async fn close_if_unread(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // A body that is empty from the start (a GET, `Content-Length: 0`) cannot be left unread.
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let watched = Watched {
        inner: body,
        finished: Arc::clone(&finished),
    };
    let mut response = next
        .run(Request::from_parts(parts, Body::new(watched)))
        .await;
    if !finished.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records whether it was read to its end.
struct Watched {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
