//! Request bodies: read whole within a byte limit and a time limit, gunzipped when they say so.

use std::io::Read;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Bytes;

use super::ApiError;
use crate::refusal::Code;

/// A body's limit in bytes after decompression, the setting that sets it (for messages), and the
/// code a body past it is refused with.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimit {
    /// Most bytes, after decompression.
    pub bytes: usize,
    /// The setting or rule that sets it, as messages name it.
    pub name: &'static str,
    /// What a body past it is refused as.
    pub code: Code,
}

/// Reads a whole body, gunzipping it if it says `Content-Encoding: gzip`, and refuses it with 413
/// once it passes the limit. The limit applies to the decompressed bytes, so a small gzip bomb
/// is refused as soon as it expands past the limit, without inflating the rest.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: BodyLimit,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let gzip = gzipped(headers)?;
    let too_large = || {
        ApiError::new(
            limit.code,
            format!(
                "the request body exceeds {} ({} bytes)",
                limit.name, limit.bytes
            ),
        )
        .with_field("body")
    };
    // Compressed bytes are never more than the limit plus gzip's framing on incompressible data.
    let wire_limit = if gzip {
        limit.bytes + limit.bytes / 64 + 1024
    } else {
        limit.bytes
    };
    let collected = tokio::time::timeout(timeout, Limited::new(body, wire_limit).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                Code::BodyTimeout,
                format!("the request body did not arrive within body_read_timeout ({timeout:?})"),
            )
            .with_field("body")
        })?;
    let raw = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(err) => {
            return Err(ApiError::new(
                Code::UnreadableBody,
                format!("the request body could not be read: {err}"),
            ))
        }
    };
    if !gzip {
        return Ok(raw);
    }
    let inflated = inflate(raw, limit.bytes).await?;
    if inflated.len() > limit.bytes {
        return Err(too_large());
    }
    Ok(Bytes::from(inflated))
}

/// Whether the body is gzip; identity is the other encoding taken, and only one may be named.
fn gzipped(headers: &HeaderMap) -> Result<bool, ApiError> {
    let unsupported = |message: String| {
        ApiError::new(Code::UnsupportedEncoding, message).with_field("content-encoding")
    };
    if headers.get_all(header::CONTENT_ENCODING).iter().count() > 1 {
        return Err(unsupported(
            "Content-Encoding is given more than once; send one: identity or gzip".to_owned(),
        ));
    }
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    match value.to_str().map(str::trim) {
        Ok(v) if v.eq_ignore_ascii_case("identity") => Ok(false),
        Ok(v) if v.eq_ignore_ascii_case("gzip") => Ok(true),
        _ => {
            let shown = String::from_utf8_lossy(value.as_bytes()).into_owned();
            Err(unsupported(format!(
                "Content-Encoding {shown:?} is not supported; send identity or gzip"
            )))
        }
    }
}

/// Inflates a gzip body, stopping one byte past `limit`. Inflating is CPU work of up to `limit`
/// bytes: on the blocking pool, so that the async workers go on answering other requests meanwhile.
async fn inflate(raw: Bytes, limit: usize) -> Result<Vec<u8>, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut inflated = Vec::new();
        // Every member of a multi-member gzip stream, not just the first (and nothing is dropped).
        let mut decoder = flate2::read::MultiGzDecoder::new(&raw[..]).take(limit as u64 + 1);
        decoder.read_to_end(&mut inflated).map(|_| inflated)
    })
    .await
    .map_err(|_| ApiError::new(Code::Internal, "inflating failed"))?
    .map_err(|err| {
        ApiError::new(
            Code::BadGzip,
            format!("the gzip body does not decompress: {err}"),
        )
        .with_field("content-encoding")
    })
}

/// The body as text.
pub(super) fn utf8(bytes: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes).map_err(|err| {
        ApiError::new(
            Code::NotUtf8,
            format!("the request body is not UTF-8: {err}"),
        )
        .with_field("body")
    })
}
