//! Every validation rule of SPEC §2, refused with a 4xx JSON error naming the field, storing
//! nothing.

use serde_json::json;

use crate::common::{error_of, event, segment_bytes, Server};

/// Posts `body`, expects `status` with `field` and `code` named, and checks nothing was stored.
async fn refused(server: &Server, body: &str, status: u16, field: Option<&str>, code: &str) {
    let before = segment_bytes(&server.data_dir);
    let response = server.post("/api/v2/interactions", body).await;
    assert_eq!(
        response.status.as_u16(),
        status,
        "{body} → {}",
        response.json()
    );
    let error = error_of(&response);
    assert_eq!(error["field"].as_str(), field, "{body} → {error}");
    assert_eq!(error["code"], code, "{body} → {error}");
    assert_eq!(
        segment_bytes(&server.data_dir),
        before,
        "{body} wrote to the log"
    );
}

#[tokio::test]
async fn every_rule_is_refused_with_the_field_named_and_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let base = json!({"action": "interaction_start", "interaction_id": "v-1", "mcp_id": "m", "timestamp": 1763900000.5});
    let with = |key: &str, value: serde_json::Value| {
        let mut body = base.clone();
        body[key] = value;
        body.to_string()
    };
    let without = |key: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(key);
        body.to_string()
    };
    let ms = json!(1763900000500u64);
    let mut cases: Vec<(String, u16, Option<&str>, &str)> = vec![
        ("{not json".into(), 400, None, "malformed_json"),
        ("[]".into(), 422, None, "not_an_object"),
        (without("action"), 422, Some("action"), "missing_field"),
        (with("action", json!("interaction_done")), 422, Some("action"), "unknown_action"),
        (with("action", json!(1)), 422, Some("action"), "not_a_string"),
        (without("timestamp"), 422, Some("timestamp"), "missing_field"),
        (with("timestamp", json!("1763900000")), 422, Some("timestamp"), "not_a_number"),
        (with("timestamp", json!(0)), 422, Some("timestamp"), "out_of_range"),
        (with("timestamp", json!(-5)), 422, Some("timestamp"), "out_of_range"),
        (with("timestamp", ms), 422, Some("timestamp"), "looks_like_milliseconds"),
        (
            r#"{"action":"interaction_start","interaction_id":"v","mcp_id":"m","timestamp":1e400}"#.into(),
            422,
            Some("timestamp"),
            "not_a_number",
        ),
        (with("request_data", json!([1])), 422, Some("request_data"), "not_an_object"),
        (with("request_data", json!(null)), 422, Some("request_data"), "not_an_object"),
        (with("result_data", json!({})), 422, Some("result_data"), "payload_mismatch"),
        (with("colour", json!("red")), 422, Some("colour"), "unknown_field"),
        (with("event_id", json!("")), 422, Some("event_id"), "bad_length"),
        (with("event_id", json!("e".repeat(129))), 422, Some("event_id"), "bad_length"),
        (
            r#"{"action":"interaction_start","action":"interaction_start","interaction_id":"v","mcp_id":"m","timestamp":1}"#.into(),
            422,
            Some("action"),
            "duplicate_field",
        ),
    ];
    for id in ["interaction_id", "mcp_id"] {
        cases.extend([
            (without(id), 422, Some(id), "missing_field"),
            (with(id, json!("")), 422, Some(id), "bad_length"),
            (
                with(id, json!("x".repeat(257))),
                422,
                Some(id),
                "bad_length",
            ),
            (
                with(id, json!("tab\there")),
                422,
                Some(id),
                "control_character",
            ),
            (with(id, json!(42)), 422, Some(id), "not_a_string"),
        ]);
    }
    for (body, status, field, code) in &cases {
        refused(&server, body, *status, *field, code).await;
    }

    // Nothing above was stored: the interaction is unknown and the first real event gets seq 1.
    assert_eq!(server.get("/api/v2/interactions/v-1").await.status, 404);
    let ok = server.post("/api/v2/interactions", base.to_string()).await;
    assert_eq!(ok.status, 200, "{}", ok.json());
    assert_eq!(ok.json()["seq"], 1);
}

#[tokio::test]
async fn limits_auth_and_encoding_are_refused_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("MCPLOG_EVENT_BYTES_MAX", "2048"),
            ("MCPLOG_BATCH_EVENTS_MAX", "3"),
        ],
    );
    let before = segment_bytes(dir.path());

    let big = json!({"action": "interaction_start", "interaction_id": "big", "mcp_id": "m", "timestamp": 1.0,
        "request_data": {"pad": "x".repeat(3000)}}).to_string();
    let response = server.post("/api/v2/interactions", big).await;
    assert_eq!(response.status, 413);
    assert_eq!(error_of(&response)["code"], "body_too_large");

    let four: Vec<String> = (0..4)
        .map(|i| event("interaction_start", &format!("b{i}"), "m", 1.0))
        .collect();
    let response = server
        .post(
            "/api/v2/interactions/batch",
            format!("[{}]", four.join(",")),
        )
        .await;
    assert_eq!(response.status, 413);
    assert_eq!(error_of(&response)["code"], "batch_too_large");

    let response = server.post("/api/v2/interactions/batch", "[]").await;
    assert_eq!(response.status, 422);
    assert_eq!(error_of(&response)["code"], "empty_batch");

    let mut client = server.client().await;
    let body = event("interaction_start", "a", "m", 1.0);
    for key in [None, Some("wrong-key")] {
        let response = client
            .post("/api/v2/interactions", key, body.clone())
            .await
            .unwrap();
        assert_eq!(response.status, 401);
        assert_eq!(error_of(&response)["field"], "authorization");
    }
    let response = client
        .send(
            hyper::Method::POST,
            "/api/v2/interactions",
            Some(&server.key),
            &[("content-encoding", "br")],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 415);

    let response = client
        .post("/api/v2/interactions", Some(&server.key), vec![0xff, 0xfe])
        .await
        .unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(error_of(&response)["code"], "not_utf8");

    assert_eq!(
        segment_bytes(dir.path()),
        before,
        "a refused request wrote to the log"
    );
}

#[tokio::test]
async fn an_invalid_batch_lists_every_bad_index_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let before = segment_bytes(dir.path());
    let batch = json!([
        serde_json::from_str::<serde_json::Value>(&event("interaction_start", "ok-1", "m", 1.0)).unwrap(),
        {"action": "interaction_start", "interaction_id": "", "mcp_id": "m", "timestamp": 1.0},
        serde_json::from_str::<serde_json::Value>(&event("interaction_start", "ok-2", "m", 1.0)).unwrap(),
        {"action": "interaction_start", "interaction_id": "x", "mcp_id": "m", "timestamp": 1.0e13},
    ]);
    let response = server
        .post("/api/v2/interactions/batch", batch.to_string())
        .await;
    assert_eq!(response.status, 422);
    let error = error_of(&response);
    assert_eq!(error["code"], "invalid_batch");
    let errors = error["errors"].as_array().unwrap();
    let indexes: Vec<u64> = errors
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![1, 3]);
    assert_eq!(errors[0]["field"], "interaction_id");
    assert_eq!(errors[1]["field"], "timestamp");
    assert_eq!(segment_bytes(dir.path()), before);
    assert_eq!(server.get("/api/v2/interactions/ok-1").await.status, 404);
}
