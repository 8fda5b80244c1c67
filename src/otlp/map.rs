//! One span → the events of one interaction, by the rules README.md states ("OpenTelemetry").
//! The bodies are built deterministically from the span alone, so an exporter retrying the same
//! spans sends the same events with the same `event_id`s, and they are stored once.

use std::fmt::Write;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use serde_json::{Map, Value as Json};

use super::{attribute, string_attribute};

/// What a span becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// An MCP tool call: its events in order (start, any progress, the end).
    ToolCall(Vec<MappedEvent>),
    /// Not an MCP tool call (another method, or a client's span of the call): dropped.
    Ignored,
}

/// One event of a mapped span: the JSON body a client would have posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedEvent {
    /// The event, as one JSON object.
    pub body: String,
}

/// The method name of a tool call in the MCP semantic conventions (`mcp.method.name`).
const TOOLS_CALL: &str = "tools/call";

/// Maps a span whose mcp_id is `mcp_id` (from the key, or the resource). A span that is not a
/// server's `tools/call` is [`Mapped::Ignored`]; a tool call that cannot be mapped is refused
/// with the reason.
pub fn map_span(span: &Span, mcp_id: Option<&str>) -> Result<Mapped, String> {
    if span.kind != SpanKind::Server as i32
        || string_attribute(&span.attributes, "mcp.method.name") != Some(TOOLS_CALL)
    {
        return Ok(Mapped::Ignored);
    }
    let call = ToolCall::of(span, mcp_id)?;
    let mut events = vec![call.start()];
    events.extend(call.progress());
    events.push(call.end());
    Ok(Mapped::ToolCall(events))
}

/// A server's `tools/call` span, checked, with what every one of its events carries.
struct ToolCall<'a> {
    span: &'a Span,
    mcp_id: &'a str,
    trace_id: String,
    span_id: String,
    /// `otel-<trace id>-<span id>`: the same for every export of the span.
    interaction_id: String,
    start_ns: u64,
    end_ns: u64,
}

impl<'a> ToolCall<'a> {
    /// The span's ids and times checked, or why it cannot be mapped.
    fn of(span: &'a Span, mcp_id: Option<&'a str>) -> Result<ToolCall<'a>, String> {
        let trace_id = id_hex(&span.trace_id, 16, "trace_id")?;
        let span_id = id_hex(&span.span_id, 8, "span_id")?;
        let mcp_id = mcp_id.ok_or(
            "the span has no mcp_id: send it with a writer key (which binds one), or set the \
             resource attribute service.name",
        )?;
        let (start_ns, end_ns) = (span.start_time_unix_nano, span.end_time_unix_nano);
        if start_ns == 0 {
            return Err("the span has no start_time_unix_nano".into());
        }
        if end_ns < start_ns {
            return Err(format!(
                "the span ends (end_time_unix_nano {end_ns}) before it starts ({start_ns})"
            ));
        }
        Ok(ToolCall {
            span,
            mcp_id,
            interaction_id: format!("otel-{trace_id}-{span_id}"),
            trace_id,
            span_id,
            start_ns,
            end_ns,
        })
    }

    /// One event's body: `action` at `time_ns` with `payload` under `field`, its `event_id` the
    /// interaction id and `suffix`.
    fn event(
        &self,
        action: &str,
        suffix: &str,
        time_ns: u64,
        field: &str,
        payload: Map<String, Json>,
    ) -> MappedEvent {
        let mut body = Map::new();
        body.insert("action".into(), action.into());
        body.insert("interaction_id".into(), self.interaction_id.as_str().into());
        body.insert("mcp_id".into(), self.mcp_id.into());
        body.insert("timestamp".into(), seconds(time_ns));
        body.insert(
            "event_id".into(),
            format!("{}-{suffix}", self.interaction_id).into(),
        );
        body.insert(field.into(), Json::Object(payload));
        MappedEvent {
            body: Json::Object(body).to_string(),
        }
    }

    /// The start: the tool, its arguments, and the span's ids.
    fn start(&self) -> MappedEvent {
        let span = self.span;
        let tool = string_attribute(&span.attributes, "gen_ai.tool.name")
            .or_else(|| span.name.strip_prefix("tools/call "))
            .unwrap_or(&span.name);
        let mut request = Map::new();
        request.insert("tool".into(), tool.into());
        if let Some(arguments) = json_attribute(&span.attributes, "gen_ai.tool.call.arguments") {
            request.insert("arguments".into(), arguments);
        }
        request.insert("trace_id".into(), self.trace_id.as_str().into());
        request.insert("span_id".into(), self.span_id.as_str().into());
        self.event(
            "interaction_start",
            "start",
            self.start_ns,
            "request_data",
            request,
        )
    }

    /// A progress event for each span event whose name says progress, numbered by its index
    /// among the span's events.
    fn progress(&self) -> Vec<MappedEvent> {
        let mut events = Vec::new();
        for (index, span_event) in self.span.events.iter().enumerate() {
            if !span_event.name.to_ascii_lowercase().contains("progress") {
                continue;
            }
            let mut progress = Map::new();
            progress.insert("name".into(), span_event.name.as_str().into());
            let fields: Map<String, Json> = span_event
                .attributes
                .iter()
                .filter_map(|kv| {
                    Some((
                        kv.key.clone(),
                        any_to_json(kv.value.as_ref()?.value.as_ref()?),
                    ))
                })
                .collect();
            progress.insert("attributes".into(), Json::Object(fields));
            let time_ns = match span_event.time_unix_nano {
                0 => self.start_ns,
                t => t,
            };
            events.push(self.event(
                "interaction_progress",
                &format!("progress-{index}"),
                time_ns,
                "progress_data",
                progress,
            ));
        }
        events
    }

    /// The end: an error when the span's status or `error.type` says so, else the result.
    fn end(&self) -> MappedEvent {
        let attributes = &self.span.attributes;
        let status = self.span.status.as_ref();
        let error_type = string_attribute(attributes, "error.type");
        let failed =
            status.is_some_and(|s| s.code == StatusCode::Error as i32) || error_type.is_some();
        if failed {
            let mut error = Map::new();
            error.insert("type".into(), error_type.unwrap_or("error").into());
            if let Some(message) = status.map(|s| s.message.as_str()).filter(|m| !m.is_empty()) {
                error.insert("message".into(), message.into());
            }
            if let Some(code) = attribute(attributes, "rpc.response.status_code") {
                error.insert("code".into(), any_to_json(code));
            }
            self.event("interaction_error", "end", self.end_ns, "error_data", error)
        } else {
            let mut result = Map::new();
            if let Some(value) = json_attribute(attributes, "gen_ai.tool.call.result") {
                result.insert("result".into(), value);
            }
            self.event(
                "interaction_complete",
                "end",
                self.end_ns,
                "result_data",
                result,
            )
        }
    }
}

/// A trace or span id in lowercase hex, if it is `len` bytes and not all zero (OTLP's rule for
/// a valid id).
fn id_hex(bytes: &[u8], len: usize, name: &str) -> Result<String, String> {
    if bytes.len() != len {
        return Err(format!(
            "the span's {name} is {} bytes; a valid one is {len}",
            bytes.len()
        ));
    }
    if bytes.iter().all(|&b| b == 0) {
        return Err(format!(
            "the span's {name} is all zero, which OTLP calls invalid"
        ));
    }
    Ok(hex(bytes))
}

/// Bytes in lowercase hex.
fn hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Nanoseconds since the Unix epoch as the events' seconds.
fn seconds(ns: u64) -> Json {
    // f64 keeps microseconds at today's epoch values; finer digits would be noise in a record.
    let micros = ns / 1_000;
    Json::from(micros as f64 / 1e6)
}

/// An attribute holding JSON text (as the conventions' `gen_ai.tool.call.arguments` and
/// `.result` do) as that JSON; any other value as itself.
fn json_attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<Json> {
    Some(match attribute(attributes, key)? {
        Value::StringValue(text) => {
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))
        }
        other => any_to_json(other),
    })
}

/// An attribute value as JSON. Recursion is bounded by the decoders' own nesting limits
/// (prost's and serde_json's, both near 100), and validation refuses payloads nested deeper
/// than events may be.
fn any_to_json(value: &Value) -> Json {
    match value {
        Value::StringValue(s) => Json::String(s.clone()),
        Value::BoolValue(b) => Json::Bool(*b),
        Value::IntValue(i) => Json::from(*i),
        Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Value::ArrayValue(array) => Json::Array(
            array
                .values
                .iter()
                .map(|v| v.value.as_ref().map_or(Json::Null, any_to_json))
                .collect(),
        ),
        Value::KvlistValue(list) => Json::Object(
            list.values
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                    (kv.key.clone(), value.map_or(Json::Null, any_to_json))
                })
                .collect(),
        ),
        Value::BytesValue(bytes) => Json::String(hex(bytes)),
        // A profiling-only reference into a table traces do not have: as if absent.
        Value::StringValueStrindex(_) => Json::Null,
    }
}
