//! Ingest and read-back through the real server: seqs, batches, idempotency, conflicts, the record
//! view, byte-exact events, and the view rebuilt after a restart.

use serde_json::{json, Value};

use crate::common::{error_of, event, segment_bytes, Server};

#[tokio::test]
async fn events_fold_into_a_record_and_come_back_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // Odd spacing and key order on purpose: the stored event must be exactly these bytes.
    let start = r#"{ "timestamp": 1763900000.25, "action":"interaction_start","interaction_id":"abc-123","mcp_id":"ocr_workflow_mcp_001","request_data":{"file":"a.pdf"} }"#;
    let progress = r#"{"action":"interaction_progress","interaction_id":"abc-123","mcp_id":"ocr_workflow_mcp_001","timestamp":1763900001,"progress_data":{"page":1}}"#;
    let complete = r#"{"action":"interaction_complete","interaction_id":"abc-123","mcp_id":"ocr_workflow_mcp_001","timestamp":1763900002.75,"result_data":{"pages":3}}"#;
    let mut seqs = Vec::new();
    for body in [start, progress, complete] {
        let response = server.post("/api/v2/interactions", body).await;
        assert_eq!(response.status, 200, "{}", response.json());
        let answer = response.json();
        assert_eq!(answer["status"], "accepted");
        assert_eq!(answer["interaction_id"], "abc-123");
        assert!(answer["queue_position"].is_u64());
        seqs.push(answer["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, vec![1, 2, 3]);

    let record = server.get("/api/v2/interactions/abc-123").await.json();
    assert_eq!(record["status"], "completed");
    assert_eq!(record["mcp_id"], "ocr_workflow_mcp_001");
    assert_eq!(record["start_time"], 1763900000.25);
    assert_eq!(record["end_time"], 1763900002.75);
    assert_eq!(record["processing_time"], 2.5);
    assert_eq!(record["request_data"], json!({"file": "a.pdf"}));
    assert_eq!(record["result_data"], json!({"pages": 3}));
    assert_eq!(record["error_data"], json!({}));
    assert_eq!(
        record["progress_updates"],
        json!([{"timestamp": 1763900001.0, "data": {"page": 1}}])
    );
    assert_eq!(record["metadata"]["first_seq"], 1);
    assert_eq!(record["metadata"]["last_seq"], 3);
    assert_eq!(record["metadata"]["event_count"], 3);
    assert_eq!(record["metadata"]["key_id"].as_str().unwrap().len(), 16);

    let events = server.get("/api/v2/interactions/abc-123/events").await;
    assert_eq!(events.status, 200);
    let text = String::from_utf8(events.body.to_vec()).unwrap();
    for body in [start, progress, complete] {
        assert!(
            text.contains(body),
            "event not returned byte-exact: {body}\nin {text}"
        );
    }
    let listed: Vec<u64> = events.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![1, 2, 3]);

    let missing = server.get("/api/v2/interactions/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(error_of(&missing)["field"], "interaction_id");
    assert_eq!(
        server.get("/api/v2/interactions/nope/events").await.status,
        404
    );
}

#[tokio::test]
async fn batches_are_one_commit_and_accept_ndjson() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let array = format!(
        "[{},{},{}]",
        event("interaction_start", "b-1", "m", 10.0),
        event("interaction_start", "b-2", "m", 10.0),
        event("interaction_error", "b-1", "m", 11.0)
    );
    let answer = server
        .post("/api/v2/interactions/batch", array)
        .await
        .json();
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["seqs"], json!([1, 2, 3]));
    let ndjson = format!(
        "{}\n\n{}\n",
        event("interaction_cancelled", "b-2", "m", 12.0),
        event("interaction_progress", "b-3", "m", 9.0)
    );
    let answer = server
        .post("/api/v2/interactions/batch", ndjson)
        .await
        .json();
    assert_eq!(answer["seqs"], json!([4, 5]));
    assert_eq!(
        server.get("/api/v2/interactions/b-1").await.json()["status"],
        "failed"
    );
    assert_eq!(
        server.get("/api/v2/interactions/b-2").await.json()["status"],
        "cancelled"
    );
    let orphan = server.get("/api/v2/interactions/b-3").await.json();
    assert_eq!(orphan["status"], "in_progress");
    assert_eq!(orphan["start_time"], Value::Null);
}

#[tokio::test]
async fn event_ids_make_retries_idempotent_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let with_id = |id: &str, ts: f64| {
        let mut body: Value =
            serde_json::from_str(&event("interaction_start", "idem", "m", ts)).unwrap();
        body["event_id"] = json!(id);
        body.to_string()
    };
    let server = Server::start(dir.path());
    let first = server
        .post("/api/v2/interactions", with_id("e-1", 5.0))
        .await
        .json();
    assert_eq!(first["seq"], 1);
    let bytes = segment_bytes(dir.path());
    let retry = server
        .post("/api/v2/interactions", with_id("e-1", 5.0))
        .await
        .json();
    assert_eq!(retry["seq"], 1);
    assert_eq!(retry["duplicate"], true);
    assert_eq!(segment_bytes(dir.path()), bytes, "a retry must not append");
    let clash = server
        .post("/api/v2/interactions", with_id("e-1", 6.0))
        .await;
    assert_eq!(clash.status, 409);
    assert_eq!(error_of(&clash)["field"], "event_id");
    // The same event twice in one batch is stored once.
    let batch = format!("[{},{}]", with_id("e-2", 7.0), with_id("e-2", 7.0));
    let answer = server
        .post("/api/v2/interactions/batch", batch)
        .await
        .json();
    assert_eq!(answer["seqs"], json!([2, 2]));
    server.kill();

    let server = Server::start(dir.path());
    let retry = server
        .post("/api/v2/interactions", with_id("e-1", 5.0))
        .await
        .json();
    assert_eq!(retry["seq"], 1, "event ids are rebuilt from the log");
    assert_eq!(
        server
            .post("/api/v2/interactions", with_id("e-2", 8.0))
            .await
            .status,
        409
    );
    assert_eq!(
        server.get("/api/v2/interactions/idem").await.json()["metadata"]["event_count"],
        2
    );
}

#[tokio::test]
async fn a_batch_with_a_conflict_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let with_id = |action: &str, id: &str, event_id: &str, n: u32| {
        let mut body: Value = serde_json::from_str(&event(action, id, "m-a", 1.0)).unwrap();
        body["event_id"] = Value::from(event_id);
        body["timestamp"] = Value::from(f64::from(n));
        body.to_string()
    };
    let first = server
        .post(
            "/api/v2/interactions",
            with_id("interaction_start", "c-1", "e-1", 1),
        )
        .await;
    assert_eq!(first.status, 200);
    let bytes = segment_bytes(dir.path());
    // Index 1 reuses a stored event_id with another body; index 3 one from index 2.
    let batch = format!(
        "[{},{},{},{}]",
        event("interaction_start", "c-2", "m-a", 1.0),
        with_id("interaction_progress", "c-1", "e-1", 2),
        with_id("interaction_start", "c-3", "e-3", 1),
        with_id("interaction_progress", "c-3", "e-3", 2)
    );
    let response = server.post("/api/v2/interactions/batch", batch).await;
    assert_eq!(response.status, 409);
    let indexes: Vec<u64> = error_of(&response)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![1, 3]);
    assert_eq!(segment_bytes(dir.path()), bytes);
    assert_eq!(server.get("/api/v2/interactions/c-2").await.status, 404);
    let record = server.get("/api/v2/interactions/c-1").await.json();
    assert_eq!(record["metadata"]["event_count"], 1);
}

/// Runs `mcplog keygen` for a writer of `mcp_id` against the server's data directory.
fn writer_key(server: &Server, mcp_id: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog"))
        .args(["keygen", "--data-dir"])
        .arg(&server.data_dir)
        .args(["--mcp-id", mcp_id])
        .env_remove("MCPLOG_MASTER_SECRET")
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn two_tenants_use_one_interaction_id_without_seeing_or_blocking_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (a, b) = (
        writer_key(&server, "tenant-a"),
        writer_key(&server, "tenant-b"),
    );
    let started = server
        .post_as(
            &a,
            "/api/v2/interactions",
            event("interaction_start", "job-1", "tenant-a", 100.0),
        )
        .await;
    assert_eq!(started.status, 200);
    // B uses the same id: no 409, nothing about A in the answer; its own interaction.
    for (action, t) in [("interaction_start", 200.0), ("interaction_error", 205.0)] {
        let response = server
            .post_as(
                &b,
                "/api/v2/interactions",
                event(action, "job-1", "tenant-b", t),
            )
            .await;
        assert_eq!(response.status, 200, "{}", response.json());
        assert!(!String::from_utf8_lossy(&response.body).contains("tenant-a"));
    }
    let done = server
        .post_as(
            &a,
            "/api/v2/interactions",
            event("interaction_complete", "job-1", "tenant-a", 103.0),
        )
        .await;
    assert_eq!(done.status, 200);
    // Each writer reads its own, by id alone.
    let mine = server.get_as(&a, "/api/v2/interactions/job-1").await.json();
    assert_eq!(
        (mine["mcp_id"].as_str(), mine["status"].as_str()),
        (Some("tenant-a"), Some("completed"))
    );
    assert_eq!(mine["metadata"]["event_count"], 2);
    let theirs = server.get_as(&b, "/api/v2/interactions/job-1").await.json();
    assert_eq!(
        (theirs["mcp_id"].as_str(), theirs["status"].as_str()),
        (Some("tenant-b"), Some("failed"))
    );
    let events = server
        .get_as(&b, "/api/v2/interactions/job-1/events")
        .await
        .json();
    assert_eq!(events["events"].as_array().unwrap().len(), 2);
    // Asking for the other's mcp_id looks like an unknown interaction.
    let peek = server
        .get_as(&a, "/api/v2/interactions/job-1?mcp_id=tenant-b")
        .await;
    assert_eq!(peek.status, 404);
    // An admin names the mcp_id, or is told the id is ambiguous.
    let ambiguous = server.get("/api/v2/interactions/job-1").await;
    assert_eq!(ambiguous.status, 409);
    let error = error_of(&ambiguous);
    assert_eq!(
        (error["code"].as_str(), error["field"].as_str()),
        (Some("ambiguous_id"), Some("mcp_id"))
    );
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("tenant-a, tenant-b"));
    let named = server
        .get("/api/v2/interactions/job-1?mcp_id=tenant-b")
        .await;
    assert_eq!(named.json()["status"], "failed");
    let named = server
        .get("/api/v2/interactions/job-1/events?mcp_id=tenant-a")
        .await;
    assert_eq!(named.json()["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        server
            .get("/api/v2/interactions/job-1?mcp_id=tenant-c")
            .await
            .status,
        404
    );
    // An id one tenant alone uses needs no mcp_id.
    let solo = server
        .post_as(
            &a,
            "/api/v2/interactions",
            event("interaction_start", "job-2", "tenant-a", 100.0),
        )
        .await;
    assert_eq!(solo.status, 200);
    assert_eq!(server.get("/api/v2/interactions/job-2").await.status, 200);
    // History and stats are per record: two interactions with one id.
    let all = server.get("/api/v2/interactions?limit=10").await.json();
    assert_eq!(all["count"], 3);
    // A writer's stats are its own mcp_id's counts, with no server-wide figures.
    let stats = server.get_as(&b, "/api/v2/interactions/stats").await.json();
    assert_eq!(stats["records"]["total"], 1, "{stats}");
    assert_eq!(stats["records"]["failed"], 1);
    for global in ["stats", "storage", "queue_size"] {
        assert!(
            stats.get(global).is_none(),
            "a writer sees {global}: {stats}"
        );
    }
    let stats = server.get("/api/v2/interactions/stats").await.json();
    assert_eq!(stats["records"]["total"], 3);
    assert!(stats["storage"]["last_seq"].as_u64().unwrap() >= 5);
    // Restarting folds the same two interactions back.
    let data = server.data_dir.clone();
    server.kill();
    let server = Server::start(&data);
    let named = server
        .get("/api/v2/interactions/job-1?mcp_id=tenant-a")
        .await;
    assert_eq!(named.json()["status"], "completed");
}

#[tokio::test]
async fn unknown_or_repeated_query_parameters_are_a_400_on_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let r = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "q", "m", 1.0),
        )
        .await;
    assert_eq!(r.status, 200);
    let gets = [
        "/api/v2/interactions?limit=5&limit=6",
        "/api/v2/interactions?colour=red",
        "/api/v2/interactions/q?verbose=1",
        "/api/v2/interactions/q?mcp_id=m&mcp_id=m",
        "/api/v2/interactions/q/events?x=1",
        "/api/v2/interactions/stats?mcp_id=m",
        "/api/v2/performance/metrics?time_range=1h&time_range=24h",
        "/api/v2/performance/metrics?range=1h",
        "/api/v2/events?after_seq=0&after_seq=1",
        "/api/v2/events?since=0",
        "/api/v2/health?x",
        "/api/v2/openapi.json?format=yaml",
        "/readyz?x=1",
        "/livez?x=1",
        "/metrics?name=x",
        "/dashboard?x=1",
    ];
    for path in gets {
        let response = server.get(path).await;
        assert_eq!(
            response.status,
            400,
            "{path}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let error = error_of(&response);
        assert_eq!(error["code"], "bad_parameter", "{path}");
        assert!(error["field"].is_string(), "{path}: {error}");
    }
    for path in [
        "/api/v2/interactions?x=1",
        "/api/v2/interactions/batch?x=1",
        "/api/v2/keys/revoke?x=1",
    ] {
        let response = server.post(path, "{}").await;
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(error_of(&response)["field"], "x");
    }
    // And nothing was stored by the refused POSTs.
    let stats = server.get("/api/v2/interactions/stats").await.json();
    assert_eq!(stats["storage"]["last_seq"], 1);
}

#[tokio::test]
async fn the_view_is_rebuilt_from_the_log_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so the log spans many of them.
    let env = [("MCPLOG_SEGMENT_MAX_BYTES", "4096")];
    let server = Server::start_with(dir.path(), &env);
    for i in 0..60 {
        let id = format!("r-{}", i % 20);
        let action = [
            "interaction_start",
            "interaction_progress",
            "interaction_complete",
        ][i / 20];
        assert_eq!(
            server
                .post(
                    "/api/v2/interactions",
                    event(action, &id, "m", 100.0 + i as f64)
                )
                .await
                .status,
            200
        );
    }
    // A second terminal event is kept and counted as a conflict, not applied.
    server
        .post(
            "/api/v2/interactions",
            event("interaction_error", "r-0", "m", 500.0),
        )
        .await;
    let before: Vec<Value> = all_records(&server).await;
    assert!(
        crate::common::segment_paths(dir.path()).len() >= 3,
        "expected several segments"
    );
    server.kill();
    let server = Server::start_with(dir.path(), &env);
    let after: Vec<Value> = all_records(&server).await;
    assert_eq!(before, after);
    assert_eq!(after[0]["status"], "completed");
    assert_eq!(after[0]["metadata"]["conflicts"], 1);
    assert_eq!(after[0]["metadata"]["event_count"], 4);
}

async fn all_records(server: &Server) -> Vec<Value> {
    let mut records = Vec::new();
    for i in 0..20 {
        records.push(
            server
                .get(&format!("/api/v2/interactions/r-{i}"))
                .await
                .json(),
        );
    }
    records
}

#[tokio::test]
async fn health_is_public_and_reports_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let health = client.get("/api/v2/health", None).await.unwrap();
    assert_eq!(health.status, 200);
    let body = health.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["processor_running"], true);
    assert_eq!(body["storage_writable"], true);
    assert!(body["queue_size"].is_u64());
    assert!(body["timestamp"].as_f64().unwrap() > 1.7e9);
    let unknown = client.get("/api/v2/nothing-here", None).await.unwrap();
    assert_eq!(unknown.status, 404);
    assert_eq!(error_of(&unknown)["code"], "not_found");
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_limits_apply_after_decompression() {
    use std::io::Write;
    let gzip = |bytes: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let headers = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let body = event("interaction_start", "gz-1", "m", 1.0);
    let response = client
        .send(
            hyper::Method::POST,
            "/api/v2/interactions",
            Some(&server.key),
            &headers,
            gzip(body.as_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.json());
    let events = server.get("/api/v2/interactions/gz-1/events").await;
    assert!(
        String::from_utf8_lossy(&events.body).contains(&body),
        "the decompressed bytes are stored"
    );

    // 8 MiB of JSON whitespace compresses to a few KiB: refused once it passes 1 MiB inflated.
    let bomb = format!(
        "{{{}\"action\":\"interaction_start\"}}",
        " ".repeat(8 * 1024 * 1024)
    );
    let compressed = gzip(bomb.as_bytes());
    assert!(compressed.len() < 64 * 1024);
    let bytes = segment_bytes(dir.path());
    let response = client
        .send(
            hyper::Method::POST,
            "/api/v2/interactions",
            Some(&server.key),
            &headers,
            compressed,
        )
        .await
        .unwrap();
    assert_eq!(response.status, 413);
    // The single event's body is the event: its limit's code, as for an event of a batch.
    assert_eq!(error_of(&response)["code"], "event_too_large");
    let response = client
        .send(
            hyper::Method::POST,
            "/api/v2/interactions",
            Some(&server.key),
            &headers,
            b"not gzip at all".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(error_of(&response)["code"], "bad_gzip");
    assert_eq!(segment_bytes(dir.path()), bytes);
}

#[tokio::test]
async fn one_batch_with_an_event_id_twice_names_the_batch_index_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let with_id = |id: &str, n: u32| {
        serde_json::json!({"action": "interaction_progress", "interaction_id": "dup", "mcp_id": "m",
            "timestamp": 1763900000.0, "event_id": id, "progress_data": {"n": n}})
        .to_string()
    };
    let batch = format!(
        "[{},{},{}]",
        with_id("e-1", 1),
        with_id("e-2", 2),
        with_id("e-1", 3)
    );
    let response = server.post("/api/v2/interactions/batch", batch).await;
    assert_eq!(response.status, 409, "{}", response.json());
    let error = error_of(&response);
    let errors = error["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{error}");
    assert_eq!(errors[0]["index"], 2);
    assert_eq!(errors[0]["field"], "event_id");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("event 0 of this batch"), "{message}");
    assert!(
        !message.contains("seq"),
        "no seq was stored to name: {message}"
    );
    assert_eq!(server.get("/api/v2/interactions/dup").await.status, 404);
    // The same event twice with the same body is stored once.
    let batch = format!("[{},{}]", with_id("e-1", 1), with_id("e-1", 1));
    let response = server.post("/api/v2/interactions/batch", batch).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["seqs"], serde_json::json!([1, 1]));
}

#[tokio::test]
async fn a_backfilled_start_older_than_stale_after_is_stale_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for body in [
        event("interaction_start", "old", "m", now - 7200.0),
        event("interaction_start", "fresh", "m", now - 60.0),
        // No start: counted from its first receive time, which is now.
        event("interaction_progress", "orphan", "m", now - 7200.0),
    ] {
        assert_eq!(server.post("/api/v2/interactions", body).await.status, 200);
    }
    let stats = server.get("/api/v2/interactions/stats").await.json();
    assert_eq!(stats["records"]["active"], 3);
    assert_eq!(stats["records"]["stale"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_with_one_event_id_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // Sixteen clients race with one event_id: eight send the same body, eight a body of their own.
    let body = |variant: usize| {
        json!({"action": "interaction_progress", "interaction_id": "race", "mcp_id": "m",
            "timestamp": 1763900000.0, "event_id": "e-race", "progress_data": {"v": variant}})
        .to_string()
    };
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (addr, key) = (server.addr, server.key.clone());
            let sent = body(if i < 8 { 0 } else { i });
            tokio::spawn(async move {
                let mut client = mcplog::client::Client::connect(addr).await.unwrap();
                let response = client
                    .post("/api/v2/interactions", Some(&key), sent.clone())
                    .await
                    .unwrap();
                (sent, response.status.as_u16(), response.json())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    // Exactly one event is stored.
    let events = server.get("/api/v2/interactions/race/events").await.json();
    let stored = events["events"].as_array().unwrap();
    assert_eq!(stored.len(), 1, "{events}");
    let seq = stored[0]["seq"].as_u64().unwrap();
    let stored_body = stored[0]["event"].clone();
    // Every other answer is a duplicate of it if its body is the stored one, else a 409.
    for (sent, status, answer) in answers {
        let sent_json: Value = serde_json::from_str(&sent).unwrap();
        if sent_json == stored_body {
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["seq"], seq);
        } else {
            assert_eq!(status, 409, "{sent}: {answer}");
            assert_eq!(error_of_json(&answer)["field"], "event_id");
        }
    }
}

fn error_of_json(body: &Value) -> Value {
    body["error"].clone()
}

/// An event of interaction `id` for mcp_id `m`, with an `event_id` and a payload `n`.
fn with_event_id(id: &str, event_id: &str, n: u32) -> String {
    json!({"action": "interaction_progress", "interaction_id": id, "mcp_id": "m",
        "timestamp": 1763900000.0, "event_id": event_id, "progress_data": {"n": n}})
    .to_string()
}

#[tokio::test]
async fn partial_mode_stores_the_valid_events_and_answers_each_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let stored_before = server
        .post(
            "/api/v2/interactions/batch",
            format!(
                "[{},{}]",
                with_event_id("old", "o-1", 1),
                with_event_id("old", "o-2", 2)
            ),
        )
        .await;
    assert_eq!(stored_before.json()["seqs"], json!([1, 2]));
    // The admin key as a field name: its message quotes it, and no key may leave in an answer.
    let quoting_a_key = format!(
        r#"{{"action":"interaction_start","interaction_id":"k","mcp_id":"m","timestamp":1,"{}":1}}"#,
        server.key
    );
    let items = [
        with_event_id("p", "p-1", 1),                     // 0: stored
        event("interaction_start", " padded", "m", 10.0), // 1: invalid id
        with_event_id("p", "e-1", 2),                     // 2: stored
        with_event_id("p", "e-1", 3),                     // 3: conflicts with 2
        with_event_id("old", "o-1", 1),                   // 4: duplicate of seq 1
        with_event_id("old", "o-2", 9),                   // 5: conflicts with seq 2
        quoting_a_key,                                    // 6: unknown field
        format!(
            r#"{{"action":"interaction_start","interaction_id":"long","mcp_id":"m","timestamp":1,"{}":1}}"#,
            "f".repeat(100_000)
        ), // 7
        with_event_id("p", "p-1", 1),                     // 8: a duplicate of 0
    ];
    let response = server
        .post(
            "/api/v2/interactions/batch?partial=true",
            format!("[{}]", items.join(",")),
        )
        .await;
    assert_eq!(response.status, 207, "{}", response.json());
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    assert!(!text.contains(&server.key), "a key left in a 207: {text}");
    assert!(
        text.len() < 8 * 1024,
        "quoted values are bounded: {} bytes",
        text.len()
    );
    let answer = response.json();
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "stored",
            "error",
            "stored",
            "error",
            "duplicate",
            "error",
            "error",
            "error",
            "duplicate"
        ]
    );
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i);
    }
    assert_eq!(results[0]["seq"], 3);
    assert_eq!(results[2]["seq"], 4);
    assert_eq!(
        results[8]["seq"], 3,
        "the same event twice in a batch is stored once"
    );
    assert_eq!(results[4]["seq"], 1);
    assert_eq!(results[1]["http_status"], 422);
    assert_eq!(results[1]["error"]["field"], "interaction_id");
    assert_eq!(results[3]["http_status"], 409);
    // Named by its index in the batch, not among the events that were submitted.
    let message = results[3]["error"]["message"].as_str().unwrap();
    assert!(message.contains("event 2 of this batch"), "{message}");
    assert_eq!(results[5]["http_status"], 409);
    assert!(results[5]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("seq 2"));
    assert_eq!(results[6]["error"]["code"], "unknown_field");
    assert_eq!(results[7]["error"]["code"], "unknown_field");
    assert_eq!(
        (
            &answer["count"],
            &answer["stored"],
            &answer["duplicates"],
            &answer["failed"]
        ),
        (&json!(9), &json!(2), &json!(2), &json!(5))
    );
    // Exactly what the answer says was stored: seqs 3 and 4, nothing else.
    let record = server.get("/api/v2/interactions/p").await.json();
    assert_eq!(record["metadata"]["event_count"], 2, "{record}");
    assert_eq!(record["progress_updates"].as_array().unwrap().len(), 2);
    assert_eq!(
        server.get("/api/v2/interactions/old").await.json()["metadata"]["event_count"],
        2
    );
    let stats = server.get("/api/v2/interactions/stats").await.json();
    assert_eq!(stats["storage"]["last_seq"], 4, "{stats}");

    // The default stays all or nothing, and the parameter takes true or false only.
    let response = server
        .post(
            "/api/v2/interactions/batch?partial=false",
            format!("[{},{}]", with_event_id("q", "q-1", 1), items[1]),
        )
        .await;
    assert_eq!(response.status, 422);
    assert_eq!(server.get("/api/v2/interactions/q").await.status, 404);
    for query in ["partial=yes", "partial=true&partial=true", "partly=true"] {
        let response = server
            .post(
                &format!("/api/v2/interactions/batch?{query}"),
                format!("[{}]", with_event_id("q", "q-1", 1)),
            )
            .await;
        assert_eq!(response.status, 400, "{query}");
        assert!(error_of(&response)["field"]
            .as_str()
            .unwrap()
            .starts_with("part"));
    }
    assert_eq!(server.get("/api/v2/interactions/q").await.status, 404);
    // Whole-request refusals are not per event: a body that is not an array of events.
    let response = server
        .post("/api/v2/interactions/batch?partial=true", "[{]")
        .await;
    assert_eq!(response.status, 400);
}

/// NDJSON outcomes are numbered by line (blank lines count), in partial mode, in an
/// all-or-nothing 422 and in a conflict's message; before, `index` counted non-blank lines, so a
/// client with blank lines between its events was pointed at the wrong one.
#[tokio::test]
async fn ndjson_outcomes_are_numbered_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let ndjson = [
        with_event_id("n", "n-1", 1),                    // line 0: stored
        String::new(),                                   // line 1: blank
        event("interaction_start", " padded", "m", 1.0), // line 2: invalid
        "   ".to_owned(),                                // line 3: blank
        with_event_id("n", "n-2", 2),                    // line 4: stored
        with_event_id("n", "n-2", 3),                    // line 5: conflicts with line 4
    ]
    .join("\r\n");
    let response = server
        .post("/api/v2/interactions/batch?partial=true", ndjson.clone())
        .await;
    assert_eq!(response.status, 207, "{}", response.json());
    let answer = response.json();
    let outcomes: Vec<(u64, &str)> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [(0, "stored"), (2, "error"), (4, "stored"), (5, "error")]
    );
    let conflict = answer["results"][3]["error"]["message"].as_str().unwrap();
    assert!(conflict.contains("event 4 of this batch"), "{conflict}");

    // All or nothing: the invalid event is named by its line.
    let response = server
        .post("/api/v2/interactions/batch", ndjson.replace("n-", "m-"))
        .await;
    assert_eq!(response.status, 422);
    assert_eq!(error_of(&response)["errors"][0]["index"], 2);
    // And so is a conflict within the batch.
    let lines = [
        String::new(),
        with_event_id("c", "c-1", 1),
        String::new(),
        with_event_id("c", "c-1", 2),
    ];
    let response = server
        .post("/api/v2/interactions/batch", lines.join("\n"))
        .await;
    assert_eq!(response.status, 409, "{}", response.json());
    let error = error_of(&response);
    assert_eq!(error["errors"][0]["index"], 3, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("event 1 of this batch"),
        "{error}"
    );
}

/// A body that is one JSON object is a single event, not a batch: a 400 naming the body in both
/// modes, whether on one line or pretty-printed, and nothing is stored. Before, one line was
/// stored as a batch of one and a pretty-printed one answered a 207 of broken lines. Declared as
/// NDJSON, one line is a batch of one event.
#[tokio::test]
async fn a_single_json_object_is_not_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let one = event("interaction_start", "single", "m", 1.0);
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&one).unwrap()).unwrap();
    for path in [
        "/api/v2/interactions/batch?partial=true",
        "/api/v2/interactions/batch",
    ] {
        for body in [&one, &pretty] {
            let response = server.post(path, body.clone()).await;
            assert_eq!(response.status, 400, "{path}: {}", response.json());
            let error = error_of(&response);
            assert_eq!(error["code"], "not_a_batch");
            assert_eq!(error["field"], "body");
        }
    }
    assert_eq!(server.get("/api/v2/interactions/single").await.status, 404);
    let response = server
        .client()
        .await
        .send(
            hyper::Method::POST,
            "/api/v2/interactions/batch?partial=true",
            Some(&server.key),
            &[("content-type", "application/x-ndjson")],
            one,
        )
        .await
        .unwrap();
    assert_eq!(response.status, 207, "{}", response.json());
    assert_eq!(response.json()["stored"], 1);
}

/// `min_seq` beyond what a single node has ever stored is answered at once with a 409
/// `min_seq_ahead` naming the parameter (it used to wait 5 s and answer 503), on both record
/// reads; a seq it holds reads as usual. A writer key is not told how far the log goes.
#[tokio::test]
async fn min_seq_beyond_a_single_nodes_log_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let writer = "writer-key-for-min-seq-0123456789";
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[static_api_keys]\n\"{writer}\" = {{ mcp_id = \"m\", role = \"writer\" }}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    for i in 0..3 {
        let r = server
            .post(
                "/api/v2/interactions",
                event("interaction_start", &format!("s{i}"), "m", 1.0),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    for path in [
        "/api/v2/interactions/s0?min_seq=3",
        "/api/v2/interactions/s0/events?min_seq=3",
    ] {
        assert_eq!(server.get(path).await.status, 200, "{path}");
    }
    for key in [server.key.as_str(), writer] {
        for path in [
            "/api/v2/interactions/s0?min_seq=4",
            "/api/v2/interactions/s0/events?min_seq=1000000",
        ] {
            let started = std::time::Instant::now();
            let response = server.get_as(key, path).await;
            let waited = started.elapsed();
            assert_eq!(response.status, 409, "{path}: {}", response.json());
            // Not a speed claim: the old code waited its full 5 s before answering.
            assert!(
                waited < std::time::Duration::from_secs(4),
                "{path}: {waited:?}"
            );
            let error = error_of(&response);
            assert_eq!(error["code"], "min_seq_ahead");
            assert_eq!(error["field"], "min_seq");
            let message = error["message"].as_str().unwrap();
            assert_eq!(
                message.contains("up to 3"),
                key != writer,
                "only a reader of the whole log is told its end: {message}"
            );
        }
    }
}

/// `interaction_events_max` caps the events of one interaction on every ingest path: a single
/// event past it is a 409 `interaction_full` naming the limit, an all-or-nothing batch is
/// refused listing it, partial mode refuses that event alone (counting the batch's earlier
/// events), and a retried event_id is still answered as a duplicate. Nothing past it is stored.
#[tokio::test]
async fn interaction_events_max_caps_an_interaction_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_INTERACTION_EVENTS_MAX", "3")]);
    for n in 1..=3 {
        let r = server
            .post(
                "/api/v2/interactions",
                with_event_id("full", &format!("f-{n}"), n),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
    }
    let response = server
        .post("/api/v2/interactions", with_event_id("full", "f-4", 4))
        .await;
    assert_eq!(response.status, 409, "{}", response.json());
    let error = error_of(&response);
    assert_eq!(error["code"], "interaction_full");
    assert_eq!(error["field"], "interaction_id");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("interaction_events_max is 3"));
    // A retry of a stored event is still a duplicate.
    let retry = server
        .post("/api/v2/interactions", with_event_id("full", "f-2", 2))
        .await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.json()["duplicate"], true);
    // All or nothing: refused whole, naming the event.
    let batch = format!(
        "[{},{}]",
        with_event_id("other", "o-1", 1),
        with_event_id("full", "f-5", 5)
    );
    let response = server
        .post("/api/v2/interactions/batch", batch.clone())
        .await;
    // As the event alone would be: 409, and counted as a conflict.
    assert_eq!(response.status, 409, "{}", response.json());
    assert_eq!(error_of(&response)["code"], "interaction_full");
    assert_eq!(error_of(&response)["errors"][0]["code"], "interaction_full");
    assert_eq!(error_of(&response)["errors"][0]["index"], 1);
    // An event repeated within one request is one event more, not two: at the cap's last
    // place, the repeat is answered as a duplicate.
    let twice = with_event_id("edge", "e-1", 1);
    let pair = |a: &str, b: &str| format!("[{a},{b}]");
    let warmup = pair(
        &with_event_id("edge", "e-0", 0),
        &with_event_id("edge", "e-00", 0),
    );
    let r = server.post("/api/v2/interactions/batch", warmup).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let r = server
        .post("/api/v2/interactions/batch", pair(&twice, &twice))
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["duplicates"], 1, "{}", r.json());
    // Partial: that event alone; a new interaction's fourth event of one batch too.
    let fresh: Vec<String> = (1..=4)
        .map(|n| with_event_id("fresh", &format!("n-{n}"), n))
        .collect();
    let response = server
        .post(
            "/api/v2/interactions/batch?partial=true",
            format!(
                "[{},{}]",
                batch[1..batch.len() - 1].to_owned(),
                fresh.join(",")
            ),
        )
        .await;
    assert_eq!(response.status, 207, "{}", response.json());
    let results = response.json()["results"].clone();
    let outcome = |i: usize| {
        (
            results[i]["status"].as_str().unwrap().to_owned(),
            results[i]["http_status"].as_u64(),
        )
    };
    assert_eq!(outcome(0), ("stored".to_owned(), None));
    assert_eq!(outcome(1), ("error".to_owned(), Some(409)));
    for i in 2..5 {
        assert_eq!(outcome(i), ("stored".to_owned(), None), "{i}");
    }
    assert_eq!(outcome(5), ("error".to_owned(), Some(409)));
    assert_eq!(results[5]["error"]["code"], "interaction_full");
    for id in ["full", "fresh", "edge"] {
        let record = server
            .get(&format!("/api/v2/interactions/{id}"))
            .await
            .json();
        assert_eq!(record["metadata"]["event_count"], 3, "{id}");
    }
}
