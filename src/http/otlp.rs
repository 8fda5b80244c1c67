//! `POST /v1/traces`: the OTLP/HTTP trace receiver. MCP tool-call spans become interactions
//! (the rules are in `otlp::map_span` and README.md); other spans are counted and dropped.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use prost::Message;

use super::admit::{Admission, Checked, Outcome};
use super::body::BodyLimit;
use super::{refusal, ApiError, AppState};
use crate::auth::Principal;
use crate::otlp::{self, Encoding};
use crate::refusal::Code;

/// What became of a span, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanOutcome {
    /// A tool call whose events were appended.
    Stored,
    /// A tool call all of whose events were stored already.
    Duplicate,
    /// A span refused: it does not decode, or an event of its tool call was refused.
    Rejected,
    /// Not a tool call: counted and dropped.
    Ignored,
}

impl SpanOutcome {
    /// Every outcome, in the order `/metrics` lists them.
    pub const ALL: [SpanOutcome; 4] = [
        SpanOutcome::Stored,
        SpanOutcome::Duplicate,
        SpanOutcome::Rejected,
        SpanOutcome::Ignored,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            SpanOutcome::Stored => "stored",
            SpanOutcome::Duplicate => "duplicate",
            SpanOutcome::Rejected => "rejected",
            SpanOutcome::Ignored => "ignored",
        }
    }
}

/// Spans by outcome, indexed as [`SpanOutcome::ALL`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanTally([u64; SpanOutcome::ALL.len()]);

impl SpanTally {
    fn add(&mut self, outcome: SpanOutcome) {
        self.0[outcome as usize] += 1;
    }

    /// Spans with `outcome`.
    pub fn of(&self, outcome: SpanOutcome) -> u64 {
        self.0[outcome as usize]
    }
}

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
            Code::UnsupportedMediaType,
            "OTLP/HTTP takes Content-Type application/x-protobuf or application/json",
        )
        .with_field("content-type")
        .into_response();
    };
    // A refusal is JSON here; `protobuf_refusals` re-encodes it for a protobuf request.
    match receive(&state, &principal, &headers, body, encoding).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// The admission steps (see `admit.rs`) for an export: it costs one token per span it holds,
/// whether or not the span is a tool call (each is decoded), plus the events its tool calls make
/// beyond one each; the spans' tokens are taken once they are counted, before any is decoded, the
/// events' once the spans are mapped.
async fn receive(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<Response, ApiError> {
    let limit = BodyLimit {
        bytes: otlp::BODY_BYTES_MAX,
        name: "the OTLP body limit",
        code: Code::BodyTooLarge,
    };
    let (mut admission, bytes) = Admission::begin(state, principal, headers, body, limit).await?;
    let export = otlp::split(&bytes, encoding).map_err(|err| {
        let code = match err {
            otlp::ExportError::Malformed { .. } => Code::BadExport,
            otlp::ExportError::TooManySpans { .. } => Code::TooManySpans,
        };
        ApiError::new(code, err.to_string()).with_field("body")
    })?;
    let spans = export.span_count();
    admission.charge(spans)?;
    let mut mapped = map_export(&export, principal);
    drop(export);
    admission.charge(spans + mapped.bodies.len().saturating_sub(mapped.spans))?;
    store_spans(&admission, &mut mapped).await?;
    let Mapped {
        tally, refusals, ..
    } = mapped;
    state.telemetry.count_spans(tally);

    let rejected = tally.of(SpanOutcome::Rejected);
    if rejected > 0 && u64::try_from(spans).unwrap_or(u64::MAX) == rejected {
        // Nothing of the request was taken: a permanent refusal, which OTLP answers with 400.
        return Err(
            ApiError::new(Code::InvalidSpans, summary(rejected, &refusals)).with_field("body"),
        );
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
    /// Spans by outcome.
    tally: SpanTally,
    /// Why spans were refused.
    refusals: Vec<String>,
}

/// Decodes and maps span by span: only one span is decoded at a time. A span's mcp_id is the
/// key's, else its resource's `service.name`.
fn map_export(export: &otlp::Export<'_>, principal: &Principal) -> Mapped {
    let mut mapped = Mapped {
        bodies: Vec::new(),
        spans: 0,
        tally: SpanTally::default(),
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
                Ok(otlp::Mapped::Ignored) => mapped.tally.add(SpanOutcome::Ignored),
                Ok(otlp::Mapped::ToolCall(events)) => {
                    let span = mapped.spans;
                    mapped
                        .bodies
                        .extend(events.into_iter().map(|e| (span, e.body)));
                    mapped.spans += 1;
                }
                Err(reason) => {
                    mapped.tally.add(SpanOutcome::Rejected);
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
async fn store_spans(admission: &Admission<'_>, mapped: &mut Mapped) -> Result<(), ApiError> {
    let checked = admission.check(
        mapped
            .bodies
            .iter()
            .enumerate()
            .map(|(index, (_, body))| (index, body.as_str())),
    );
    let mut refused: Vec<Option<String>> = vec![None; mapped.spans];
    for ((span, _), item) in mapped.bodies.iter().zip(&checked) {
        if let Err(error) = item {
            refused[*span].get_or_insert_with(|| error.message.clone());
        }
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
        let part: Vec<Checked> = kept.by_ref().take(admission.batch_events_max()).collect();
        let partial = admission.store_partially(part).await?;
        for ((_, outcome), span) in partial.outcomes.into_iter().zip(kept_span.by_ref()) {
            match outcome {
                Outcome::Refused(error) => {
                    refused[span].get_or_insert(error.message);
                }
                Outcome::Stored(_) => stored[span] = true,
                Outcome::Duplicate(_) => {}
            }
        }
    }
    for (span, why) in refused.into_iter().enumerate() {
        match why {
            Some(reason) => {
                mapped.tally.add(SpanOutcome::Rejected);
                mapped.refusals.push(reason);
            }
            None if stored[span] => mapped.tally.add(SpanOutcome::Stored),
            None => mapped.tally.add(SpanOutcome::Duplicate),
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

/// OTLP/HTTP answers a protobuf request's refusal with a protobuf `google.rpc.Status`, whatever
/// refused it: the key check, a query parameter, the method, the request timeout or the handler.
/// Every refusal is made as mcplog's JSON error (and checked for keys and secrets as such); this
/// layer, outside all of them, re-encodes it for a protobuf request of `/v1/traces`, with the
/// table's gRPC code and the answer's status and headers kept. A JSON request keeps the JSON.
pub(super) async fn protobuf_refusals(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let protobuf = request.uri().path() == super::Route::OtlpTraces.path()
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Encoding::of_content_type)
            == Some(Encoding::Protobuf);
    let response = next.run(request).await;
    let Some(code) = response.extensions().get::<Code>().copied() else {
        return response;
    };
    if !protobuf {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let message = match axum::body::to_bytes(body, super::ERROR_BODY_BYTES_MAX).await {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|json| json["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let status = otlp::RpcStatus {
        code: refusal::answer(code).grpc as i32,
        message,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(Encoding::Protobuf.content_type()),
    );
    Response::from_parts(parts, axum::body::Body::from(status.encode_to_vec()))
}
