//! Each mapping rule, and the two-step decoding's bounds, over spans built with the official
//! message types.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::{Event, SpanKind},
    status::StatusCode,
    ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use serde_json::{json, Value as Json};

use super::*;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(s: &str) -> Value {
    Value::StringValue(s.into())
}

const START_NS: u64 = 1_795_000_000_250_000_000;
const END_NS: u64 = 1_795_000_002_750_000_000;

/// A server's `tools/call` span of tool `tool`, 2.5 s long.
fn tool_span(tool: &str, span_byte: u8) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![span_byte; 8],
        name: format!("tools/call {tool}"),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: START_NS,
        end_time_unix_nano: END_NS,
        attributes: vec![
            kv("mcp.method.name", text("tools/call")),
            kv("gen_ai.tool.name", text(tool)),
            kv("gen_ai.operation.name", text("execute_tool")),
        ],
        ..Default::default()
    }
}

fn request(resource: Option<&str>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource.map(|name| Resource {
                attributes: vec![kv("service.name", text(name))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The events a span maps to, each parsed, after checking it passes the event validation.
fn events(span: &Span) -> Vec<Json> {
    let Mapped::ToolCall(events) = map_span(span, Some("m")).unwrap() else {
        panic!("a tool call")
    };
    events
        .iter()
        .map(|e| {
            crate::event::validate(&e.body).unwrap_or_else(|err| panic!("{err:?}: {}", e.body));
            serde_json::from_str(&e.body).unwrap()
        })
        .collect()
}

#[test]
fn a_tool_call_becomes_a_start_and_a_complete_at_the_spans_times() {
    let mut span = tool_span("search", 1);
    span.attributes
        .push(kv("gen_ai.tool.call.arguments", text(r#"{"q":"rust"}"#)));
    span.attributes
        .push(kv("gen_ai.tool.call.result", text(r#"{"hits":3}"#)));
    let events = events(&span);
    assert_eq!(events.len(), 2);
    let id = format!("otel-{}-{}", "ab".repeat(16), "01".repeat(8));
    assert_eq!(
        events[0],
        json!({"action": "interaction_start", "interaction_id": id, "mcp_id": "m",
            "timestamp": 1795000000.25, "event_id": format!("{id}-start"),
            "request_data": {"tool": "search", "arguments": {"q": "rust"},
                "trace_id": "ab".repeat(16), "span_id": "01".repeat(8)}})
    );
    assert_eq!(
        events[1],
        json!({"action": "interaction_complete", "interaction_id": id, "mcp_id": "m",
            "timestamp": 1795000002.75, "event_id": format!("{id}-end"),
            "result_data": {"result": {"hits": 3}}})
    );
}

#[test]
fn an_error_status_or_an_error_type_becomes_an_interaction_error() {
    let mut by_status = tool_span("fails", 2);
    by_status.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "boom".into(),
    });
    by_status
        .attributes
        .push(kv("rpc.response.status_code", Value::IntValue(-32602)));
    let end = &events(&by_status)[1];
    assert_eq!(end["action"], "interaction_error");
    assert_eq!(
        end["error_data"],
        json!({"type": "error", "message": "boom", "code": -32602})
    );
    // The mcp SDK marks a tool result with isError by error.type alone, status left UNSET.
    let mut by_type = tool_span("fails", 3);
    by_type
        .attributes
        .push(kv("error.type", text("tool_error")));
    let end = &events(&by_type)[1];
    assert_eq!(end["action"], "interaction_error");
    assert_eq!(end["error_data"], json!({"type": "tool_error"}));
    // OK and UNSET without error.type complete: OTLP cannot tell a cancelled call from success.
    let mut ok = tool_span("ok", 4);
    ok.status = Some(Status {
        code: StatusCode::Ok as i32,
        message: String::new(),
    });
    assert_eq!(events(&ok)[1]["action"], "interaction_complete");
}

#[test]
fn span_events_named_for_progress_become_progress_events_in_order() {
    let mut span = tool_span("slow", 5);
    span.events = vec![
        Event {
            time_unix_nano: START_NS + 1_000_000_000,
            name: "progress".into(),
            attributes: vec![kv("progress", Value::DoubleValue(0.5))],
            ..Default::default()
        },
        Event {
            time_unix_nano: START_NS + 1_500_000_000,
            name: "exception".into(),
            ..Default::default()
        },
        Event {
            time_unix_nano: START_NS + 2_000_000_000,
            name: "mcp.progress".into(),
            attributes: vec![kv("message", text("almost"))],
            ..Default::default()
        },
    ];
    let events = events(&span);
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "interaction_start",
            "interaction_progress",
            "interaction_progress",
            "interaction_complete"
        ]
    );
    assert_eq!(events[1]["timestamp"], 1795000001.25);
    assert_eq!(
        events[1]["progress_data"],
        json!({"name": "progress", "attributes": {"progress": 0.5}})
    );
    assert_eq!(
        events[2]["progress_data"]["attributes"]["message"],
        "almost"
    );
    assert!(events[2]["event_id"]
        .as_str()
        .unwrap()
        .ends_with("-progress-2"));
}

#[test]
fn spans_that_are_not_a_servers_tool_call_are_ignored() {
    let mut client = tool_span("t", 6);
    client.kind = SpanKind::Client as i32;
    let mut list = tool_span("t", 7);
    list.attributes[0] = kv("mcp.method.name", text("tools/list"));
    let mut http = tool_span("t", 8);
    http.attributes.clear();
    for span in [client, list, http] {
        assert_eq!(map_span(&span, Some("m")), Ok(Mapped::Ignored));
    }
}

/// A change that breaks a span.
type Breakage = fn(&mut Span);

#[test]
fn a_tool_call_without_valid_ids_times_or_mcp_id_is_refused_naming_why() {
    let cases: [(Breakage, &str); 6] = [
        (|s| s.trace_id.clear(), "trace_id is 0 bytes"),
        (|s| s.trace_id = vec![0; 16], "trace_id is all zero"),
        (|s| s.span_id = vec![1; 4], "span_id is 4 bytes"),
        (|s| s.span_id = vec![0; 8], "span_id is all zero"),
        (|s| s.start_time_unix_nano = 0, "no start_time"),
        (|s| s.end_time_unix_nano = START_NS - 1, "before it starts"),
    ];
    for (break_it, reason) in cases {
        let mut span = tool_span("t", 9);
        break_it(&mut span);
        let refused = map_span(&span, Some("m")).unwrap_err();
        assert!(refused.contains(reason), "{refused} lacks {reason:?}");
    }
    let refused = map_span(&tool_span("t", 9), None).unwrap_err();
    assert!(refused.contains("service.name"), "{refused}");
}

#[test]
fn the_same_span_maps_to_the_same_bytes_so_a_retried_export_is_idempotent() {
    let mut span = tool_span("t", 10);
    span.attributes.push(kv(
        "gen_ai.tool.call.arguments",
        text(r#"{"b":1,"a":[1,2]}"#),
    ));
    assert_eq!(
        map_span(&span, Some("m")),
        map_span(&span.clone(), Some("m"))
    );
}

#[test]
fn protobuf_and_json_requests_split_into_the_same_spans_and_resources() {
    let spans = vec![tool_span("a", 11), tool_span("b", 12)];
    let request = request(Some("svc"), spans.clone());
    let protobuf = Bytes::from(request.encode_to_vec());
    // The JSON the official crate writes (hex ids, lowerCamelCase, times as strings) and JSON
    // written by hand the way the OTLP specification shows it.
    let by_crate = Bytes::from(serde_json::to_vec(&request).unwrap());
    let by_hand = Bytes::from(
        json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
            "scopeSpans": [{"scope": {"name": "x"}, "spans": [
                {"traceId": "ab".repeat(16), "spanId": "0b".repeat(8), "name": "tools/call a",
                 "kind": 2, "startTimeUnixNano": START_NS.to_string(), "endTimeUnixNano": END_NS,
                 "attributes": [
                    {"key": "mcp.method.name", "value": {"stringValue": "tools/call"}},
                    {"key": "gen_ai.tool.name", "value": {"stringValue": "a"}},
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}}]},
                {"traceId": "ab".repeat(16), "spanId": "0c".repeat(8), "name": "tools/call b",
                 "kind": 2, "startTimeUnixNano": START_NS, "endTimeUnixNano": END_NS.to_string(),
                 "attributes": [
                    {"key": "mcp.method.name", "value": {"stringValue": "tools/call"}},
                    {"key": "gen_ai.tool.name", "value": {"stringValue": "b"}},
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}}]}]}]}]})
        .to_string(),
    );
    for (body, encoding) in [
        (&protobuf, Encoding::Protobuf),
        (&by_crate, Encoding::Json),
        (&by_hand, Encoding::Json),
    ] {
        let export = split(body, encoding).unwrap();
        assert_eq!(export.span_count(), 2);
        let resource = &export.resources[0];
        assert_eq!(resource.service_name(), Ok(Some("svc".to_owned())));
        let decoded: Vec<Span> = resource.spans.iter().map(|s| s.decode().unwrap()).collect();
        assert_eq!(decoded, spans, "{encoding:?}");
    }
}

#[test]
fn bad_bodies_and_oversized_parts_are_refused_without_decoding_them_whole() {
    let request = request(None, vec![tool_span("a", 13)]);
    let encoded = request.encode_to_vec();
    let truncated = Bytes::copy_from_slice(&encoded[..encoded.len() - 3]);
    assert!(matches!(
        split(&truncated, Encoding::Protobuf),
        Err(ExportError::Malformed {
            encoding: "protobuf",
            ..
        })
    ));
    for json in ["{", "[]", r#"{"resourceSpans": 3}"#, "\u{0}"] {
        let body = Bytes::from(json.to_owned());
        assert!(
            matches!(
                split(&body, Encoding::Json),
                Err(ExportError::Malformed { .. })
            ),
            "{json:?}"
        );
    }
    // Empty spans cost 2 bytes each on the wire: counted, not decoded, and refused whole.
    let many = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); SPANS_MAX + 1],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = Bytes::from(many.encode_to_vec());
    assert_eq!(
        split(&body, Encoding::Protobuf).unwrap_err(),
        ExportError::TooManySpans {
            count: SPANS_MAX + 1
        }
    );
    // A span over SPAN_BYTES_MAX is refused alone.
    let mut big = tool_span("a", 14);
    big.attributes.push(kv(
        "gen_ai.tool.call.arguments",
        text(&"x".repeat(SPAN_BYTES_MAX)),
    ));
    let body = Bytes::from(self::request(None, vec![big, tool_span("b", 15)]).encode_to_vec());
    let export = split(&body, Encoding::Protobuf).unwrap();
    let refused = export.resources[0].spans[0].decode().unwrap_err();
    assert!(refused.contains("at most"), "{refused}");
    assert!(export.resources[0].spans[1].decode().is_ok());
    // A resource over RESOURCE_BYTES_MAX is not read: its spans get no mcp_id from it.
    let mut big_resource = self::request(Some("svc"), vec![tool_span("c", 16)]);
    big_resource.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("note", text(&"y".repeat(RESOURCE_BYTES_MAX))));
    let body = Bytes::from(big_resource.encode_to_vec());
    let export = split(&body, Encoding::Protobuf).unwrap();
    let refused = export.resources[0].service_name().unwrap_err();
    assert!(refused.contains("resource"), "{refused}");
    // An empty request is a request with no spans.
    let empty = Bytes::new();
    let export = split(&empty, Encoding::Protobuf).unwrap();
    assert_eq!(export.span_count(), 0);
}

#[test]
fn responses_carry_partial_success_only_when_spans_were_rejected() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    let whole = response(Encoding::Protobuf, 0, String::new());
    assert!(ExportTraceServiceResponse::decode(&whole[..])
        .unwrap()
        .partial_success
        .is_none());
    let partial = response(Encoding::Protobuf, 2, "why".into());
    let decoded = ExportTraceServiceResponse::decode(&partial[..]).unwrap();
    let success = decoded.partial_success.unwrap();
    assert_eq!(
        (success.rejected_spans, success.error_message.as_str()),
        (2, "why")
    );
    let json: Json = serde_json::from_slice(&response(Encoding::Json, 2, "why".into())).unwrap();
    assert_eq!(json["partialSuccess"]["errorMessage"], "why");
    let rejected = &json["partialSuccess"]["rejectedSpans"];
    assert!(rejected == 2 || rejected == "2", "{json}");
}
