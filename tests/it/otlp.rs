//! The OTLP/HTTP receiver through the real server: protobuf and JSON exports built with the
//! official message types, the records they make, idempotency on a repeated export, the
//! mcp_id rules, and every kind of bad input refused with nothing stored. The end-to-end run
//! with a real MCP server and the OpenTelemetry SDK's exporter is `an_mcp_servers_own_spans_*`.

use std::path::Path;

use hyper::Method;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use serde_json::json;

use crate::common::{error_of, Server};

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Now, in nanoseconds, less `ago_ms`.
fn ns_ago(ago_ms: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_nanos() as u64 - ago_ms * 1_000_000
}

/// A server's tools/call span that ran from 3 s ago for 2.5 s.
fn tool_span(tool: &str, span_byte: u8, failed: bool) -> Span {
    let start = ns_ago(3_000);
    Span {
        trace_id: vec![0x5a; 16],
        span_id: vec![span_byte; 8],
        name: format!("tools/call {tool}"),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 2_500_000_000,
        attributes: vec![
            kv("mcp.method.name", "tools/call"),
            kv("gen_ai.tool.name", tool),
            kv("gen_ai.tool.call.arguments", r#"{"path":"a.pdf"}"#),
        ],
        status: failed.then(|| Status {
            code: StatusCode::Error as i32,
            message: "the file is encrypted".into(),
        }),
        ..Default::default()
    }
}

fn export(service: Option<&str>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: service.map(|name| Resource {
                attributes: vec![kv("service.name", name)],
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

async fn post(
    server: &Server,
    key: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> mcplog::client::Response {
    let mut headers = vec![("content-type", content_type)];
    headers.extend_from_slice(extra);
    server
        .client()
        .await
        .send(Method::POST, "/v1/traces", Some(key), &headers, body)
        .await
        .unwrap()
}

async fn post_protobuf(
    server: &Server,
    key: &str,
    request: &ExportTraceServiceRequest,
) -> mcplog::client::Response {
    post(
        server,
        key,
        "application/x-protobuf",
        &[],
        request.encode_to_vec(),
    )
    .await
}

fn interaction_id(span_byte: u8) -> String {
    format!(
        "otel-{}-{}",
        "5a".repeat(16),
        format!("{span_byte:02x}").repeat(8)
    )
}

async fn event_count(server: &Server) -> u64 {
    let stats = server.get("/api/v2/interactions/stats").await.json();
    stats["storage"]["last_seq"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn tool_call_spans_become_interactions_once_however_often_they_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut http = tool_span("ignored", 9, false);
    http.attributes.clear();
    let request = export(
        Some("ocr_mcp"),
        vec![
            tool_span("extract", 1, false),
            tool_span("extract", 2, true),
            http,
        ],
    );
    let response = post_protobuf(&server, &server.key, &request).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert_eq!(response.headers["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(&response.body[..]).unwrap();
    assert_eq!(answer.partial_success, None, "every span was taken");

    let ok = server
        .get(&format!("/api/v2/interactions/{}", interaction_id(1)))
        .await
        .json();
    assert_eq!(ok["status"], "completed", "{ok}");
    assert_eq!(
        ok["mcp_id"], "ocr_mcp",
        "an admin key's spans take service.name"
    );
    assert_eq!(ok["processing_time"], 2.5);
    assert_eq!(ok["request_data"]["tool"], "extract");
    assert_eq!(ok["request_data"]["arguments"], json!({"path": "a.pdf"}));
    let failed = server
        .get(&format!("/api/v2/interactions/{}", interaction_id(2)))
        .await
        .json();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error_data"]["message"], "the file is encrypted");
    assert_eq!(event_count(&server).await, 4, "two events per tool call");

    // The exporter's retry, and the same spans as JSON: stored once.
    let again = post_protobuf(&server, &server.key, &request).await;
    assert_eq!(again.status, 200);
    let json_body = serde_json::to_vec(&request).unwrap();
    let as_json = post(&server, &server.key, "application/json", &[], json_body).await;
    assert_eq!(as_json.status, 200, "{}", as_json.json());
    assert_eq!(as_json.headers["content-type"], "application/json");
    assert_eq!(
        event_count(&server).await,
        4,
        "a re-exported span is stored once"
    );
    let metrics = String::from_utf8(server.get("/metrics").await.body.to_vec()).unwrap();
    for line in [
        "mcplog_otlp_spans_total{outcome=\"stored\"} 2",
        "mcplog_otlp_spans_total{outcome=\"duplicate\"} 4",
        "mcplog_otlp_spans_total{outcome=\"ignored\"} 3",
        "mcplog_otlp_spans_total{outcome=\"rejected\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in /metrics");
    }
}

#[tokio::test]
async fn a_writer_key_binds_the_mcp_id_and_an_admin_key_needs_service_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcplog.toml");
    std::fs::write(
        &config,
        "[static_api_keys]\n\"otlp-writer-key-0123456789\" = { mcp_id = \"bound\", role = \"writer\" }\n\"otlp-auditor-key-0123456789\" = { role = \"auditor\" }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    let request = export(Some("ignored_service"), vec![tool_span("t", 3, false)]);
    let response = post_protobuf(&server, "otlp-writer-key-0123456789", &request).await;
    assert_eq!(response.status, 200);
    let record = server
        .get(&format!("/api/v2/interactions/{}", interaction_id(3)))
        .await
        .json();
    assert_eq!(record["mcp_id"], "bound");

    let response = post_protobuf(&server, "otlp-auditor-key-0123456789", &request).await;
    assert_eq!(response.status, 403);

    // An admin key and no service.name: the span has no mcp_id, and nothing else came.
    let request = export(None, vec![tool_span("t", 4, false)]);
    let response = post_protobuf(&server, &server.key, &request).await;
    assert_eq!(response.status, 400);
    let status = mcplog::otlp::RpcStatus::decode(&response.body[..]).unwrap();
    assert!(status.message.contains("service.name"), "{status:?}");
    assert_eq!(status.code, 3);
}

#[tokio::test]
async fn bad_exports_are_refused_as_otlp_says_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let key = server.key.clone();
    let good = export(Some("m"), vec![tool_span("t", 5, false)]).encode_to_vec();

    let truncated = good[..good.len() - 4].to_vec();
    let response = post(&server, &key, "application/x-protobuf", &[], truncated).await;
    assert_eq!(response.status, 400);
    let status = mcplog::otlp::RpcStatus::decode(&response.body[..]).unwrap();
    assert!(status.message.contains("protobuf"), "{status:?}");

    let response = post(&server, &key, "text/plain", &[], good.clone()).await;
    assert_eq!(response.status, 415);
    assert_eq!(error_of(&response)["field"], "content-type");

    let response = post(
        &server,
        &key,
        "application/json",
        &[],
        b"{\"resourceSpans\":".to_vec(),
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(error_of(&response)["field"], "body");

    // Over the body limit, and a gzip bomb that inflates past it.
    let oversized = vec![0u8; mcplog::otlp::BODY_BYTES_MAX + 1];
    let response = post(&server, &key, "application/x-protobuf", &[], oversized).await;
    assert_eq!(response.status, 413);
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    assert!(bomb.len() < 128 * 1024);
    let response = post(
        &server,
        &key,
        "application/json",
        &[("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(response.status, 413);

    // More spans than a request may hold: counted before any is decoded, and a 413.
    let many = export(
        Some("m"),
        vec![Span::default(); mcplog::otlp::SPANS_MAX + 1],
    );
    let response = post_protobuf(&server, &key, &many).await;
    assert_eq!(response.status, 413);

    // Spans with missing or invalid ids: refused, and with nothing else taken, a 400.
    let mut no_trace = tool_span("t", 6, false);
    no_trace.trace_id.clear();
    let mut zero_span = tool_span("t", 7, false);
    zero_span.span_id = vec![0; 8];
    let request = export(Some("m"), vec![no_trace, zero_span]);
    let response = post_protobuf(&server, &key, &request).await;
    assert_eq!(response.status, 400);
    let json_body = serde_json::to_vec(&request).unwrap();
    let response = post(&server, &key, "application/json", &[], json_body).await;
    assert_eq!(response.status, 400);
    assert!(
        error_of(&response)["message"]
            .as_str()
            .unwrap()
            .contains("2 span(s) refused"),
        "{}",
        response.json()
    );
    assert_eq!(event_count(&server).await, 0, "nothing was stored");

    // One bad span among good ones: the good one is stored, the answer counts the other.
    let mut bad = tool_span("t", 8, false);
    bad.trace_id = vec![1; 3];
    let request = export(Some("m"), vec![bad, tool_span("t", 5, false)]);
    let response = post_protobuf(&server, &key, &request).await;
    assert_eq!(response.status, 200);
    let answer = ExportTraceServiceResponse::decode(&response.body[..]).unwrap();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("trace_id is 3 bytes"),
        "{partial:?}"
    );
    assert_eq!(event_count(&server).await, 2);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The client packages' virtualenv, which `.ci/run` installs with the OpenTelemetry SDK and its
/// OTLP/HTTP exporter.
fn python() -> Option<std::path::PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/.venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install clients/python/.venv (see .ci/run)"
    );
    eprintln!("SKIPPED: no clients/python/.venv; see .ci/run");
    None
}

#[tokio::test]
async fn an_mcp_servers_own_spans_become_interactions_with_no_mcplog_code() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcplog.toml");
    std::fs::write(
        &config,
        "[static_api_keys]\n\"otel-writer-key-0123456789\" = { mcp_id = \"otel_mcp\", role = \"writer\" }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/mcp_server.py");
    let endpoint = format!("http://{}/v1/traces", server.addr);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
            .env(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer otel-writer-key-0123456789",
            )
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let history = server
        .get("/api/v2/interactions?mcp_id=otel_mcp&limit=100")
        .await
        .json();
    let records = history["interactions"].as_array().unwrap();
    let mut by_tool: Vec<(String, String, f64)> = records
        .iter()
        .map(|r| {
            (
                r["request_data"]["tool"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
                r["processing_time"].as_f64().unwrap(),
            )
        })
        .collect();
    by_tool.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(by_tool.len(), 2, "{history}");
    assert_eq!((&by_tool[0].0[..], &by_tool[0].1[..]), ("divide", "failed"));
    assert_eq!(
        (&by_tool[1].0[..], &by_tool[1].1[..]),
        ("slow_add", "completed")
    );
    // The tool sleeps 200 ms: the span's duration is the record's processing time.
    assert!(by_tool[1].2 >= 0.2 && by_tool[1].2 < 5.0, "{by_tool:?}");
}

/// A client's span: not a tool call, so it is decoded and dropped.
fn client_span(span_byte: u8) -> Span {
    Span {
        trace_id: vec![0x6b; 16],
        span_id: vec![span_byte; 8],
        name: "GET /somewhere".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: ns_ago(2_000),
        end_time_unix_nano: ns_ago(1_000),
        ..Default::default()
    }
}

/// Spans that are not tool calls cost a rate-limited key a token each: the server decodes them
/// all. Before, an export of only such spans cost nothing, so a limited key could have the server
/// decode 4 MiB bodies without end. A tool call costs its events (one token per span, the rest
/// once mapped), and a key over its rate is refused before its body is read.
#[tokio::test]
async fn every_span_decoded_costs_a_rate_limited_key() {
    let dir = tempfile::tempdir().unwrap();
    let limited = "otlp-limited-writer-key-0123456789";
    let config = dir.path().join("mcplog.toml");
    std::fs::write(
        &config,
        format!(
            "[static_api_keys]\n\"{limited}\" = {{ mcp_id = \"m\", role = \"writer\", \
             events_per_second = 1, burst = 20 }}\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    // Twenty spans that map to nothing take the whole burst...
    let ignored = export(None, (0..20).map(client_span).collect());
    let response = post_protobuf(&server, limited, &ignored).await;
    assert_eq!(response.status, 200);
    // ...so the next export, however small, waits for tokens.
    let one = export(None, vec![client_span(99)]);
    let response = post_protobuf(&server, limited, &one).await;
    assert_eq!(response.status, 429);
    assert!(response.headers.contains_key("retry-after"));
    let status = mcplog::otlp::RpcStatus::decode(&response.body[..]).unwrap();
    assert!(status.message.contains("events per second"), "{status:?}");
    // In JSON too, naming the quota's field.
    let response = post(
        &server,
        limited,
        "application/json",
        &[],
        br#"{"resourceSpans":[]}"#.to_vec(),
    )
    .await;
    assert_eq!(response.status, 429);
    assert_eq!(error_of(&response)["field"], "events_per_second");
    // More spans than the burst can never pass: split the export.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &[],
        &["--config", config.to_str().unwrap()],
    );
    let many = export(None, (0..40).map(client_span).collect());
    let response = post_protobuf(&server, limited, &many).await;
    assert_eq!(response.status, 413);
    assert_eq!(event_count(&server).await, 0);
}

/// `interaction_events_max` holds for OTLP too: a tool call whose span would make more events
/// than the cap (start, progress span events, end) is refused whole, and nothing of it stored.
#[tokio::test]
async fn a_span_past_interaction_events_max_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_INTERACTION_EVENTS_MAX", "3")]);
    let mut span = tool_span("t", 7, false);
    span.events = (0..3)
        .map(|i| opentelemetry_proto::tonic::trace::v1::span::Event {
            name: "progress".into(),
            time_unix_nano: span.start_time_unix_nano + 1_000_000 * (i + 1),
            ..Default::default()
        })
        .collect();
    let response = post_protobuf(&server, &server.key, &export(Some("svc"), vec![span])).await;
    assert_eq!(response.status, 400);
    let status = mcplog::otlp::RpcStatus::decode(&response.body[..]).unwrap();
    assert!(
        status.message.contains("interaction_events_max"),
        "{status:?}"
    );
    assert_eq!(event_count(&server).await, 0);
    // Within the cap (start and end) it is stored.
    let response = post_protobuf(
        &server,
        &server.key,
        &export(Some("svc"), vec![tool_span("t", 8, false)]),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(event_count(&server).await, 2);
}

/// Whatever refuses a protobuf export (the key check, a parameter, the method, the handler), the
/// answer is a `google.rpc.Status` with the gRPC code OTLP pairs with its status; a key the
/// client put where a refusal quotes it is replaced, and the status still decodes.
#[tokio::test]
async fn every_refusal_of_a_protobuf_export_is_a_grpc_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let good = export(Some("m"), vec![tool_span("t", 5, false)]).encode_to_vec();
    let protobuf = [("content-type", "application/x-protobuf")];
    let mut client = server.client().await;
    // (method, path, key, HTTP status, gRPC code)
    let cases: [(&str, &str, Option<&str>, u16, i32); 4] = [
        ("POST", "/v1/traces", None, 401, 16),
        ("POST", "/v1/traces", Some("not-a-key"), 401, 16),
        ("POST", "/v1/traces?x=1", Some(&server.key), 400, 3),
        ("GET", "/v1/traces", Some(&server.key), 405, 12),
    ];
    for (method, path, key, http, grpc) in cases {
        let headers = &protobuf[..];
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .send(method, path, key, headers, good.clone())
            .await
            .unwrap();
        assert_eq!(response.status, http, "{path}");
        assert_eq!(response.headers["content-type"], "application/x-protobuf");
        let status = mcplog::otlp::RpcStatus::decode(&response.body[..]).unwrap();
        assert_eq!(status.code, grpc, "{path}: {status:?}");
        assert!(!status.message.is_empty(), "{path}");
    }
    // A key quoted back (here as the content encoding) is redacted before the status is encoded.
    let key = server.key.clone();
    let headers = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", key.as_str()),
    ];
    let response = client
        .send(Method::POST, "/v1/traces", Some(&key), &headers, good)
        .await
        .unwrap();
    assert_eq!(response.status, 415);
    let status = mcplog::otlp::RpcStatus::decode(&response.body[..]).unwrap();
    assert_eq!(status.code, 3);
    assert!(!status.message.contains(&key), "{status:?}");
    assert!(status.message.contains("<a key>"), "{status:?}");
}
