//! OpenTelemetry traces as interactions: the MCP tool-call spans of an OTLP export request become
//! interaction events (README.md, "OpenTelemetry"). Pure: bytes in, event bodies out; nothing
//! here knows HTTP or storage.
//!
//! Decoding comes in two steps so that its work is bounded before it is done. The request is
//! first split into its resources and spans left undecoded (byte slices of a protobuf body,
//! raw text of a JSON one), whose count is checked against [`SPANS_MAX`]; then each span is
//! decoded on its own, if it is at most [`SPAN_BYTES_MAX`] bytes, and mapped. A decoded message
//! can take many times its wire size in memory (an empty span is 2 bytes on the wire and a few
//! hundred in memory), so nothing larger than one span is ever decoded whole.

mod map;

pub use map::{map_span, Mapped, MappedEvent};

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Largest OTLP request body, in bytes after decompression. Exporters send a few hundred
/// spans per request (the SDKs' batch processors default to 512), far below this.
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most spans in one request; a request with more is refused whole (413).
pub const SPANS_MAX: usize = 10_000;
/// Largest span, in encoded bytes; a larger span is refused alone.
pub const SPAN_BYTES_MAX: usize = 256 * 1024;
/// Largest resource, in encoded bytes; the spans of a larger one are refused.
pub const RESOURCE_BYTES_MAX: usize = 64 * 1024;

/// How the request body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`: the protobuf JSON mapping, ids in hex.
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names (parameters such as `charset` aside), if OTLP has it.
    pub fn of_content_type(value: &str) -> Option<Encoding> {
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "JSON",
        }
    }
}

/// Why a whole request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The body is not an export request in its encoding.
    #[error("the body is not an OTLP ExportTraceServiceRequest in {encoding}: {detail}")]
    Malformed {
        /// `protobuf` or `JSON`.
        encoding: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// More spans than [`SPANS_MAX`].
    #[error("the request holds {count} spans; at most {SPANS_MAX} are taken in one request")]
    TooManySpans {
        /// Spans in the request.
        count: usize,
    },
}

/// An export request split into its resources, spans undecoded.
#[derive(Debug, Default)]
pub struct Export<'a> {
    /// Each `ResourceSpans`, in order.
    pub resources: Vec<RawResource<'a>>,
}

impl Export<'_> {
    /// Spans in the request.
    pub fn span_count(&self) -> usize {
        self.resources.iter().map(|r| r.spans.len()).sum()
    }
}

/// One `ResourceSpans`: its resource and every span of its scopes, undecoded.
#[derive(Debug)]
pub struct RawResource<'a> {
    resource: Option<RawPart<'a>>,
    /// The spans of every scope, in order.
    pub spans: Vec<RawSpan<'a>>,
}

/// One undecoded span.
#[derive(Debug)]
pub struct RawSpan<'a>(RawPart<'a>);

#[derive(Debug)]
enum RawPart<'a> {
    Protobuf(Bytes),
    Json(&'a RawValue),
}

impl RawPart<'_> {
    fn len(&self) -> usize {
        match self {
            RawPart::Protobuf(bytes) => bytes.len(),
            RawPart::Json(raw) => raw.get().len(),
        }
    }

    fn decode<T: Message + Default + for<'de> Deserialize<'de>>(&self) -> Result<T, String> {
        match self {
            RawPart::Protobuf(bytes) => T::decode(bytes.clone()).map_err(|err| err.to_string()),
            RawPart::Json(raw) => serde_json::from_str(raw.get()).map_err(|err| err.to_string()),
        }
    }
}

impl RawSpan<'_> {
    /// The decoded span, or why it cannot be.
    pub fn decode(&self) -> Result<Span, String> {
        let len = self.0.len();
        if len > SPAN_BYTES_MAX {
            return Err(format!(
                "the span is {len} bytes; at most {SPAN_BYTES_MAX} are taken"
            ));
        }
        self.0
            .decode()
            .map_err(|err| format!("the span does not decode: {err}"))
    }
}

impl RawResource<'_> {
    /// The resource's `service.name`, the mcp_id of its spans when the key binds none; or why
    /// the resource cannot be read.
    pub fn service_name(&self) -> Result<Option<String>, String> {
        let Some(part) = &self.resource else {
            return Ok(None);
        };
        let len = part.len();
        if len > RESOURCE_BYTES_MAX {
            return Err(format!(
                "the span's resource is {len} bytes; at most {RESOURCE_BYTES_MAX} are taken"
            ));
        }
        let resource: Resource = part
            .decode()
            .map_err(|err| format!("the span's resource does not decode: {err}"))?;
        Ok(string_attribute(&resource.attributes, "service.name").map(str::to_owned))
    }
}

/// Splits a request into its resources and undecoded spans, and checks the span count.
pub fn split(body: &Bytes, encoding: Encoding) -> Result<Export<'_>, ExportError> {
    let malformed = |detail: String| ExportError::Malformed {
        encoding: encoding.name(),
        detail,
    };
    let export = match encoding {
        Encoding::Protobuf => split_protobuf(body.clone()).map_err(malformed)?,
        Encoding::Json => {
            let text = std::str::from_utf8(body).map_err(|err| malformed(err.to_string()))?;
            split_json(text).map_err(malformed)?
        }
    };
    let count = export.span_count();
    if count > SPANS_MAX {
        return Err(ExportError::TooManySpans { count });
    }
    Ok(export)
}

// The outer messages of the trace protocol with their nested messages kept as bytes: the same
// field numbers and wire types as `ExportTraceServiceRequest`, `ResourceSpans` and
// `ScopeSpans`, decoded by prost, so that spans can be counted before any is decoded.

#[derive(Clone, PartialEq, prost::Message)]
struct RequestFrame {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    resource_spans: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpansFrame {
    #[prost(bytes = "bytes", optional, tag = "1")]
    resource: Option<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    scope_spans: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpansFrame {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<Bytes>,
}

fn split_protobuf(body: Bytes) -> Result<Export<'static>, String> {
    let request = RequestFrame::decode(body).map_err(|err| err.to_string())?;
    let mut resources = Vec::with_capacity(request.resource_spans.len());
    for bytes in request.resource_spans {
        let frame = ResourceSpansFrame::decode(bytes).map_err(|err| err.to_string())?;
        let mut spans = Vec::new();
        for scope in frame.scope_spans {
            let scope = ScopeSpansFrame::decode(scope).map_err(|err| err.to_string())?;
            spans.extend(
                scope
                    .spans
                    .into_iter()
                    .map(|s| RawSpan(RawPart::Protobuf(s))),
            );
        }
        resources.push(RawResource {
            resource: frame.resource.map(RawPart::Protobuf),
            spans,
        });
    }
    Ok(Export { resources })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonRequest<'a> {
    #[serde(borrow, default, alias = "resource_spans")]
    resource_spans: Vec<JsonResourceSpans<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonResourceSpans<'a> {
    #[serde(borrow, default)]
    resource: Option<&'a RawValue>,
    #[serde(borrow, default, alias = "scope_spans")]
    scope_spans: Vec<JsonScopeSpans<'a>>,
}

#[derive(Deserialize)]
struct JsonScopeSpans<'a> {
    #[serde(borrow, default)]
    spans: Vec<&'a RawValue>,
}

fn split_json(text: &str) -> Result<Export<'_>, String> {
    // serde would also read a struct from an array of its fields; a request is an object.
    if !text.trim_start().starts_with('{') {
        return Err("the request is not a JSON object".into());
    }
    let request: JsonRequest<'_> = serde_json::from_str(text).map_err(|err| err.to_string())?;
    let resources = request
        .resource_spans
        .into_iter()
        .map(|resource_spans| RawResource {
            resource: resource_spans
                .resource
                .filter(|raw| raw.get() != "null")
                .map(RawPart::Json),
            spans: resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
                .map(|raw| RawSpan(RawPart::Json(raw)))
                .collect(),
        })
        .collect();
    Ok(Export { resources })
}

/// The string value of attribute `key`, if it has one.
pub(crate) fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// The value of attribute `key`, if it is set.
pub(crate) fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// An encoded `ExportTraceServiceResponse`: empty when every span was taken, else with
/// `partial_success` counting the rejected spans and saying why (OTLP/HTTP's answer).
pub fn response(encoding: Encoding, rejected_spans: u64, error_message: String) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    let response = ExportTraceServiceResponse {
        partial_success: (rejected_spans > 0 || !error_message.is_empty()).then_some(
            ExportTracePartialSuccess {
                rejected_spans: i64::try_from(rejected_spans).unwrap_or(i64::MAX),
                error_message,
            },
        ),
    };
    match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&response).expect("a response serializes"),
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP gives a refused protobuf request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

#[cfg(test)]
mod tests;
