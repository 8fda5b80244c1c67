//! In-process router tests for what is purely HTTP: parameter parsing, error shapes, scope. The
//! router runs over a real engine on a temporary directory, called with `oneshot` (no socket);
//! what needs a process (signals, timeouts, files) is in `tests/it`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::router;
use crate::auth::{Keys, Role, StaticKey};
use crate::config::Config;

const ADMIN: &str = "mcplog_admin_test-key-for-the-router";
const WRITER_A: &str = "writer-key-of-tenant-a";
const WRITER_B: &str = "writer-key-of-tenant-b";
const AUDITOR: &str = "auditor-key-for-the-router";

/// A router over a fresh engine, with an admin key and writer keys for tenants `a` and `b`.
fn app(dir: &std::path::Path) -> axum::Router {
    let mut config = Config::default();
    config.storage.data_dir = dir.to_path_buf();
    let writer = |key: &str, mcp_id: &str| StaticKey {
        key: key.into(),
        mcp_id: Some(mcp_id.into()),
        role: Role::Writer,
        expires_at: None,
        disabled: false,
    };
    let keys = Keys::new(
        ADMIN,
        &[
            writer(WRITER_A, "a"),
            writer(WRITER_B, "b"),
            StaticKey {
                key: AUDITOR.into(),
                mcp_id: None,
                role: Role::Auditor,
                expires_at: None,
                disabled: false,
            },
        ],
        crate::auth::MasterSecrets {
            current: b"a-master-secret-for-tests".to_vec(),
            previous: Vec::new(),
        },
        dir,
        config.keys.api_key_cache_ttl,
    )
    .unwrap();
    let keys = std::sync::Arc::new(keys);
    let on_revocation = crate::server::revoker(&keys);
    let engine = std::sync::Arc::new(crate::server::recover(&config, on_revocation).unwrap());
    router(crate::server::app_state(&config, engine, keys))
}

/// Sends a request; returns the status and the body as JSON (Null if it is not JSON).
async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    key: &str,
    body: &str,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 30)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn event(id: &str, mcp_id: &str) -> String {
    serde_json::json!({"action": "interaction_start", "interaction_id": id, "mcp_id": mcp_id,
        "timestamp": 1.0e9})
    .to_string()
}

#[tokio::test]
async fn parameters_are_checked_by_name_count_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    for (uri, field) in [
        ("/api/v2/interactions?limit=0", "limit"),
        ("/api/v2/interactions?limit=5&limit=5", "limit"),
        ("/api/v2/interactions?since=soon", "since"),
        ("/api/v2/interactions?status=done", "status"),
        ("/api/v2/interactions?cursor=abc", "cursor"),
        ("/api/v2/performance/metrics?time_range=1y", "time_range"),
        ("/api/v2/events?follow=maybe", "follow"),
        ("/api/v2/interactions/x?mcp_id=a&mcp_id=b", "mcp_id"),
        ("/api/v2/interactions/stats?verbose=1", "verbose"),
        ("/readyz?probe=1", "probe"),
    ] {
        let (status, body) = call(&app, "GET", uri, ADMIN, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{uri}");
        assert_eq!(body["error"]["field"], field, "{uri}");
    }
}

#[tokio::test]
async fn every_error_has_the_one_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    for (method, uri, key, body, status) in [
        ("GET", "/nowhere", ADMIN, "", StatusCode::NOT_FOUND),
        (
            "DELETE",
            "/api/v2/interactions/stats",
            ADMIN,
            "",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "GET",
            "/api/v2/interactions/stats",
            "wrong",
            "",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/api/v2/interactions",
            ADMIN,
            "{",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v2/interactions",
            ADMIN,
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/api/v2/keys/revoke",
            WRITER_A,
            "{}",
            StatusCode::FORBIDDEN,
        ),
    ] {
        let (got, json) = call(&app, method, uri, key, body).await;
        assert_eq!(got, status, "{method} {uri}: {json}");
        let error = &json["error"];
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{json}"
        );
        assert!(error.get("field").is_some(), "{json}");
    }
}

#[tokio::test]
async fn a_writer_reads_its_own_mcp_id_only_and_cannot_tell_the_others_exist() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let (status, _) = call(
        &app,
        "POST",
        "/api/v2/interactions",
        WRITER_A,
        &event("x", "a"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        "POST",
        "/api/v2/interactions",
        WRITER_B,
        &event("y", "b"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Writing for another mcp_id: 403.
    let (status, _) = call(
        &app,
        "POST",
        "/api/v2/interactions",
        WRITER_A,
        &event("z", "b"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Another mcp_id's record is exactly as unknown as one that does not exist.
    let (theirs, theirs_body) = call(&app, "GET", "/api/v2/interactions/y", WRITER_A, "").await;
    let (nobody, nobody_body) = call(&app, "GET", "/api/v2/interactions/nope", WRITER_A, "").await;
    assert_eq!(
        (theirs, nobody),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(
        theirs_body["error"]["code"], nobody_body["error"]["code"],
        "{theirs_body} {nobody_body}"
    );
    // History and metrics for another mcp_id look like an unknown one's: empty.
    let (_, history) = call(&app, "GET", "/api/v2/interactions?mcp_id=b", WRITER_A, "").await;
    assert_eq!(history["count"], 0);
    let (_, mine) = call(&app, "GET", "/api/v2/interactions", WRITER_A, "").await;
    assert_eq!(mine["count"], 1);
    assert_eq!(mine["interactions"][0]["mcp_id"], "a");
    let (_, metrics) = call(
        &app,
        "GET",
        "/api/v2/performance/metrics?mcp_id=b&time_range=3650d",
        WRITER_A,
        "",
    )
    .await;
    assert_eq!(metrics["total_interactions"], 0);
    // The admin sees both.
    let (_, all) = call(&app, "GET", "/api/v2/interactions", ADMIN, "").await;
    assert_eq!(all["count"], 2);
}

/// The same refusal, on every ingest path: the one admission path gives it one code and status
/// (alone, in an all-or-nothing batch, as a partial batch's item, and for OTLP).
#[tokio::test]
async fn every_ingest_path_refuses_alike() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let theirs = event("x", "b");
    let single = call(&app, "POST", "/api/v2/interactions", WRITER_A, &theirs).await;
    assert_eq!(single.0, StatusCode::FORBIDDEN, "{}", single.1);
    assert_eq!(single.1["error"]["code"], "forbidden");
    assert_eq!(single.1["error"]["field"], "mcp_id");
    let batch = format!("[{theirs}]");
    let all = call(&app, "POST", "/api/v2/interactions/batch", WRITER_A, &batch).await;
    assert_eq!(all.0, StatusCode::FORBIDDEN, "{}", all.1);
    assert_eq!(all.1["error"]["errors"][0]["code"], "forbidden");
    assert_eq!(all.1["error"]["errors"][0]["field"], "mcp_id");
    let uri = "/api/v2/interactions/batch?partial=true";
    let partial = call(&app, "POST", uri, WRITER_A, &batch).await;
    assert_eq!(partial.0, StatusCode::MULTI_STATUS, "{}", partial.1);
    let result = &partial.1["results"][0];
    assert_eq!(result["http_status"], 403, "{}", partial.1);
    assert_eq!(result["error"]["code"], "forbidden");
    assert_eq!(result["error"]["field"], "mcp_id");

    // A key that may not write at all is refused before its body is read, on every path.
    for uri in [
        "/api/v2/interactions",
        "/api/v2/interactions/batch",
        "/api/v2/interactions/batch?partial=true",
        "/v1/traces",
    ] {
        let request = Request::builder()
            .method("POST")
            .uri(uri)
            .header("authorization", format!("Bearer {AUDITOR}"))
            .header("content-type", "application/json")
            .body(Body::from("not even json"))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{uri}");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{uri}");
        assert_eq!(body["error"]["field"], "authorization", "{uri}");
    }
}

/// A partial batch's 207 is answered whatever its size: its events are stored before it is, so
/// the checks every answer passes (keys, redaction) must never turn it into an error. Here the
/// refusals quote ids made to swell under escaping, well past a megabyte.
#[tokio::test]
async fn a_large_207_is_answered_as_207() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let mut events = vec![event("kept", "a")];
    for i in 0..999 {
        let mcp_id = format!("{}{i:03}", "\\\"".repeat(126));
        events.push(event(&format!("x{i}"), &mcp_id));
    }
    let body = format!("[{}]", events.join(","));
    let uri = "/api/v2/interactions/batch?partial=true";
    let (status, answer) = call(&app, "POST", uri, WRITER_A, &body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{answer}");
    assert_eq!(answer["stored"], 1);
    assert_eq!(answer["failed"], 999);
    let size = answer.to_string().len();
    assert!(
        size > 1 << 20,
        "the answer is {size} bytes: not past the old cap"
    );
}
