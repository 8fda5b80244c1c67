//! `POST /v1/traces`: the OTLP/HTTP trace receiver. MCP tool-call spans become interactions
//! (the rules are in `otlp::map_span` and README.md); other spans are counted and dropped.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;

use super::ingest::{check_item, read_body, role_refusal, store_partially, Checked};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::otlp::{self, Encoding};

/// What became of the spans of requests, for `/metrics`.
pub const SPAN_OUTCOMES: [&str; 4] = ["stored", "duplicate", "rejected", "ignored"];

/// An OTLP `ExportTraceServiceRequest`, protobuf or JSON; answered with an
/// `ExportTraceServiceResponse` in the same encoding.
#[utoipa::path(post, path = "/v1/traces", tag = "ingest",
    request_body(content = Vec<u8>, description = "an OTLP ExportTraceServiceRequest (application/x-protobuf or application/json)", content_type = "application/x-protobuf"),
    responses((status = 200, description = "an ExportTraceServiceResponse; partial_success counts rejected spans", content_type = "application/x-protobuf"),
        (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson), (status = 403, body = super::ErrorJson),
        (status = 413, body = super::ErrorJson), (status = 415, body = super::ErrorJson), (status = 503, body = super::ErrorJson),
        (status = 507, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn traces(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let encoding = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Encoding::of_content_type);
    let Some(encoding) = encoding else {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "OTLP/HTTP takes Content-Type application/x-protobuf or application/json",
        )
        .with_field("content-type")
        .into_response();
    };
    match receive(&state, &principal, &headers, body, encoding).await {
        Ok(response) => response,
        Err(err) => refusal(err, encoding),
    }
}

async fn receive(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<Response, ApiError> {
    if let Some(refusal) = role_refusal(principal) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal));
    }
    // An export costs what the server does for it: one token per span it holds, whether or not
    // the span is a tool call, plus the events its tool calls make beyond one each. The first
    // token is taken before the body is read, so a key over its rate costs one bucket check; the
    // rest of the spans' once they are counted, before any is decoded; the events' once mapped.
    state.rate_limits.check(principal, 1)?;
    let bytes = read_body(
        headers,
        body,
        otlp::BODY_BYTES_MAX,
        "the OTLP body limit",
        state.limits.body_read_timeout,
    )
    .await?;
    super::still_accepted(state, principal)?;
    let export = otlp::split(&bytes, encoding).map_err(|err| {
        let status = match err {
            otlp::ExportError::Malformed { .. } => StatusCode::BAD_REQUEST,
            otlp::ExportError::TooManySpans { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        };
        ApiError::new(status, "bad_export", err.to_string()).with_field("body")
    })?;
    let spans: usize = export.resources.iter().map(|r| r.spans.len()).sum();
    if spans > 1 {
        let rest = u32::try_from(spans - 1).unwrap_or(u32::MAX);
        state.rate_limits.check(principal, rest)?;
    }
    let mut mapped = map_export(&export, principal);
    drop(export);
    store_spans(state, principal, &mut mapped).await?;
    let Mapped {
        tally, refusals, ..
    } = mapped;
    state.telemetry.count_spans(tally);

    let [stored, duplicate, rejected, ignored] = tally;
    if rejected > 0 && stored + duplicate + ignored == 0 {
        // Nothing of the request was taken: a permanent refusal, which OTLP answers with 400.
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_spans",
            summary(rejected, &refusals),
        )
        .with_field("body"));
    }
    let message = if rejected > 0 {
        summary(rejected, &refusals)
    } else {
        String::new()
    };
    let body = otlp::response(encoding, rejected, message);
    Ok(([(header::CONTENT_TYPE, encoding.content_type())], body).into_response())
}

/// An export's spans, mapped: the tool calls' event bodies, and the tally so far.
struct Mapped {
    /// Each tool call's event bodies, with the number of the span they came from.
    bodies: Vec<(usize, String)>,
    /// Tool-call spans mapped.
    spans: usize,
    /// Spans by outcome, in [`SPAN_OUTCOMES`] order.
    tally: [u64; SPAN_OUTCOMES.len()],
    /// Why spans were refused.
    refusals: Vec<String>,
}

/// Decodes and maps span by span: only one span is decoded at a time. A span's mcp_id is the
/// key's, else its resource's `service.name`.
fn map_export(export: &otlp::Export<'_>, principal: &Principal) -> Mapped {
    let mut mapped = Mapped {
        bodies: Vec::new(),
        spans: 0,
        tally: [0; SPAN_OUTCOMES.len()],
        refusals: Vec::new(),
    };
    for resource in &export.resources {
        let service_name = resource.service_name();
        for raw in &resource.spans {
            let result = raw.decode().and_then(|span| {
                let mcp_id = match &principal.mcp_id {
                    Some(bound) => Some(bound.to_string()),
                    None => service_name.clone()?,
                };
                otlp::map_span(&span, mcp_id.as_deref())
            });
            match result {
                Ok(otlp::Mapped::Ignored) => mapped.tally[3] += 1,
                Ok(otlp::Mapped::ToolCall(events)) => {
                    let span = mapped.spans;
                    mapped
                        .bodies
                        .extend(events.into_iter().map(|e| (span, e.body)));
                    mapped.spans += 1;
                }
                Err(reason) => {
                    mapped.tally[2] += 1;
                    mapped.refusals.push(reason);
                }
            }
        }
    }
    mapped
}

/// Checks the tool calls' events as a client's would be, and stores them as a partial batch in
/// batch-sized parts; completes the tally. A span with a refused event is refused whole, so no
/// half of a span is stored by checking; a conflict found while storing refuses the rest of its
/// span. A part refused whole (a full queue) fails the request, and the exporter's retry finds
/// the parts already stored as duplicates.
async fn store_spans(
    state: &AppState,
    principal: &Principal,
    mapped: &mut Mapped,
) -> Result<(), ApiError> {
    let limits = state.limits;
    let mut checked: Vec<Checked> = mapped
        .bodies
        .iter()
        .enumerate()
        .map(|(index, (_, body))| check_item(index, body, principal, &limits, &state.redactor))
        .collect();
    super::ingest::refuse_past_events_max(state, &mut checked);
    let mut refused: Vec<Option<String>> = vec![None; mapped.spans];
    for ((span, _), item) in mapped.bodies.iter().zip(&checked) {
        if let Err((_, error)) = item {
            refused[*span].get_or_insert_with(|| error.message.clone());
        }
    }
    // Each tool call's span was paid for with one token before decoding; its other events now.
    let beyond_one = mapped.bodies.len().saturating_sub(mapped.spans);
    if beyond_one > 0 {
        let events = u32::try_from(beyond_one).unwrap_or(u32::MAX);
        state.rate_limits.check(principal, events)?;
    }
    let (kept, kept_span): (Vec<Checked>, Vec<usize>) = mapped
        .bodies
        .iter()
        .zip(checked)
        .filter(|((span, _), _)| refused[*span].is_none())
        .map(|((span, _), item)| (item, *span))
        .unzip();
    let mut stored = vec![false; mapped.spans];
    let mut kept_span = kept_span.into_iter();
    let mut kept = kept.into_iter().peekable();
    while kept.peek().is_some() {
        let part: Vec<Checked> = kept.by_ref().take(limits.batch_events_max).collect();
        let answer = store_partially(state, principal, part).await?;
        for (result, span) in answer.results.into_iter().zip(kept_span.by_ref()) {
            match (result.status, &result.error) {
                ("error", Some(error)) => {
                    refused[span].get_or_insert_with(|| error.message.clone());
                }
                ("stored", _) => stored[span] = true,
                _ => {}
            }
        }
    }
    for (span, why) in refused.into_iter().enumerate() {
        match why {
            Some(reason) => {
                mapped.tally[2] += 1;
                mapped.refusals.push(reason);
            }
            None if stored[span] => mapped.tally[0] += 1,
            None => mapped.tally[1] += 1,
        }
    }
    Ok(())
}

/// Most refusal reasons an answer quotes; the count says how many there were.
const REASONS_QUOTED_MAX: usize = 3;

fn summary(rejected: u64, refusals: &[String]) -> String {
    let shown: Vec<&str> = refusals
        .iter()
        .take(REASONS_QUOTED_MAX)
        .map(String::as_str)
        .collect();
    format!("{rejected} span(s) refused: {}", shown.join("; "))
}

/// A refusal in the request's encoding: OTLP/HTTP answers a protobuf request with a protobuf
/// `google.rpc.Status`; a JSON request gets mcplog's JSON error.
fn refusal(err: ApiError, encoding: Encoding) -> Response {
    if encoding == Encoding::Json {
        return err.into_response();
    }
    let status = otlp::RpcStatus::for_http(err.status.as_u16(), err.message);
    let mut response = (
        err.status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        status.encode_to_vec(),
    )
        .into_response();
    if let Some(seconds) = err.retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
