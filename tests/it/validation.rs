//! Every validation rule of the event contract, refused with a 4xx JSON error naming the field, storing
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
        ("{not json".into(), 400, Some("body"), "malformed_json"),
        ("[]".into(), 422, Some("body"), "not_an_object"),
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
    // The single event's body is the event: its limit's code, as for an event of a batch.
    assert_eq!(error_of(&response)["code"], "event_too_large");

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

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn ids_that_mislead_or_collide_with_routes_and_deep_payloads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let base = json!({"action": "interaction_start", "interaction_id": "ok-1", "mcp_id": "m",
        "timestamp": now_s(), "request_data": {}});
    let with = |key: &str, value: serde_json::Value| {
        let mut body = base.clone();
        body[key] = value;
        body.to_string()
    };
    let mut cases = vec![
        (
            with("interaction_id", json!("stats")),
            "interaction_id",
            "reserved_id",
        ),
        (
            with("interaction_id", json!("batch")),
            "interaction_id",
            "reserved_id",
        ),
        (
            with("interaction_id", json!("..")),
            "interaction_id",
            "reserved_id",
        ),
        (
            with("interaction_id", json!("   ")),
            "interaction_id",
            "blank_id",
        ),
        (with("mcp_id", json!(" \u{3000} ")), "mcp_id", "blank_id"),
        (
            with("event_id", json!("\t x")),
            "event_id",
            "control_character",
        ),
        (
            with("interaction_id", json!("a ")),
            "interaction_id",
            "surrounding_whitespace",
        ),
        (
            with("mcp_id", json!("\u{00A0}m")),
            "mcp_id",
            "surrounding_whitespace",
        ),
    ];
    for (name, c) in [
        ("right-to-left override", '\u{202E}'),
        ("left-to-right isolate", '\u{2066}'),
        ("zero-width space", '\u{200B}'),
        ("zero-width joiner", '\u{200D}'),
        ("byte-order mark", '\u{FEFF}'),
        ("word joiner", '\u{2060}'),
        ("soft hyphen", '\u{00AD}'),
        ("line separator", '\u{2028}'),
        ("tag character", '\u{E0041}'),
        ("hangul filler", '\u{3164}'),
        ("blank braille pattern", '\u{2800}'),
        ("arabic number sign", '\u{0600}'),
        ("khitan filler", '\u{16FE4}'),
        ("egyptian format control", '\u{13430}'),
        ("noncharacter", '\u{FFFF}'),
    ] {
        for field in ["interaction_id", "mcp_id", "event_id"] {
            let id = format!("abc{c}def");
            let body = with(field, json!(id));
            cases.push((body, field, "invisible_character"));
            let _ = name;
        }
    }
    let nested = |levels: usize| {
        format!(
            r#"{{"action":"interaction_start","interaction_id":"deep","mcp_id":"m","timestamp":{},"request_data":{}}}"#,
            now_s(),
            "{\"a\":[".repeat(levels / 2) + "1" + &"]}".repeat(levels / 2),
        )
    };
    cases.push((nested(100_000), "request_data", "too_deep"));
    cases.push((nested(130), "request_data", "too_deep"));
    for (body, field, code) in &cases {
        refused(&server, body, 422, Some(field), code).await;
    }
    // The same rules hold inside a batch, each bad event named by its index.
    let batch = format!(
        "[{},{}]",
        with("interaction_id", json!("fine")),
        nested(100_000)
    );
    let response = server.post("/api/v2/interactions/batch", batch).await;
    assert_eq!(response.status, 422);
    let errors = &error_of(&response)["errors"];
    assert_eq!(errors.as_array().unwrap().len(), 1, "{errors}");
    assert_eq!(errors[0]["index"], 1);
    assert_eq!(errors[0]["code"], "too_deep");
    // Exactly at the limit is fine, one past it is not, and text that only looks like brackets
    // does not count.
    let max = mcplog::event::PAYLOAD_DEPTH_MAX;
    let at_limit = format!(
        r#"{{"action":"interaction_start","interaction_id":"deep","mcp_id":"m","timestamp":{},"request_data":{{"a":{}{}}}}}"#,
        now_s(),
        "[".repeat(max - 1),
        "]".repeat(max - 1)
    );
    let ok = server.post("/api/v2/interactions", at_limit.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.json());
    let past = at_limit.replacen("[", "[[", 1).replacen("]", "]]", 1);
    refused(&server, &past, 422, Some("request_data"), "too_deep").await;
    let brackets = with("request_data", json!({"text": "[[[[{{{{".repeat(100)}));
    assert_eq!(
        server.post("/api/v2/interactions", brackets).await.status,
        200
    );
    // Ids with visible Unicode are fine, and fetchable.
    let visible = with("interaction_id", json!("façade-日本-🙂"));
    assert_eq!(
        server.post("/api/v2/interactions", visible).await.status,
        200
    );
    let r = server
        .get("/api/v2/interactions/fa%C3%A7ade-%E6%97%A5%E6%9C%AC-%F0%9F%99%82")
        .await;
    assert_eq!(r.status, 200);
    // An id with a slash is fetchable percent-encoded.
    let slash = with("interaction_id", json!("a/b"));
    assert_eq!(server.post("/api/v2/interactions", slash).await.status, 200);
    assert_eq!(server.get("/api/v2/interactions/a%2Fb").await.status, 200);
}

#[tokio::test]
async fn timestamps_ahead_of_the_clock_are_refused_and_times_never_go_negative() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_CLOCK_SKEW_MAX", "10m")]);
    let now = now_s();
    // Year 5138, and an hour ahead: both past a 10-minute skew.
    for ahead in [99_999_999_999.0, now + 3600.0] {
        let body = event("interaction_start", "future", "m", ahead);
        refused(
            &server,
            &body,
            422,
            Some("timestamp"),
            "timestamp_in_future",
        )
        .await;
    }
    // Within the skew, accepted.
    let body = event("interaction_start", "soon", "m", now + 60.0);
    assert_eq!(server.post("/api/v2/interactions", body).await.status, 200);
    // An end timestamped before its start: zero processing time, never negative.
    let start = event("interaction_start", "backwards", "m", now - 100.0);
    let end = event("interaction_complete", "backwards", "m", now - 160.0);
    assert_eq!(server.post("/api/v2/interactions", start).await.status, 200);
    assert_eq!(server.post("/api/v2/interactions", end).await.status, 200);
    let record = server.get("/api/v2/interactions/backwards").await.json();
    assert_eq!(record["processing_time"], 0.0, "{record}");
    let metrics = server
        .get("/api/v2/performance/metrics?time_range=1h")
        .await
        .json();
    assert_eq!(metrics["min_processing_time"], 0.0, "{metrics}");
    assert!(metrics["avg_processing_time"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn percentiles_are_within_five_percent_of_the_truth_at_every_magnitude() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let now = now_s();
    // Processing times of 1.5, 2 and 2.8 × 10^8 s (years), and of milliseconds, in one range.
    let times = [1.5e8, 2.0e8, 2.8e8];
    for (i, t) in times.iter().enumerate() {
        let id = format!("long-{i}");
        let start = event("interaction_start", &id, "long", now - t - 10.0);
        let end = event("interaction_complete", &id, "long", now - 10.0);
        assert_eq!(server.post("/api/v2/interactions", start).await.status, 200);
        assert_eq!(server.post("/api/v2/interactions", end).await.status, 200);
    }
    for (i, t) in [0.0004, 0.0005, 0.0009].iter().enumerate() {
        let id = format!("short-{i}");
        let start = event("interaction_start", &id, "short", now - 10.0);
        let end = event("interaction_complete", &id, "short", now - 10.0 + t);
        assert_eq!(server.post("/api/v2/interactions", start).await.status, 200);
        assert_eq!(server.post("/api/v2/interactions", end).await.status, 200);
    }
    let check = |metrics: &serde_json::Value, exact: [(&str, f64); 3]| {
        for (name, want) in exact {
            let got = metrics[name].as_f64().unwrap();
            // Timestamps are f64 seconds near 1.8e9: the times carry ~1e-6 s of rounding.
            let slack = 2e-6;
            assert!(
                got >= want * 0.95 - slack && got <= want * 1.05 + slack,
                "{name}: {got} vs {want}: {metrics}"
            );
        }
    };
    let long = server
        .get("/api/v2/performance/metrics?time_range=3650d&mcp_id=long")
        .await
        .json();
    check(
        &long,
        [
            ("p50_processing_time", 2.0e8),
            ("p99_processing_time", 2.8e8),
            ("max_processing_time", 2.8e8),
        ],
    );
    let short = server
        .get("/api/v2/performance/metrics?time_range=1h&mcp_id=short")
        .await
        .json();
    check(
        &short,
        [
            ("p50_processing_time", 0.0005),
            ("p95_processing_time", 0.0009),
            ("min_processing_time", 0.0004),
        ],
    );
}
