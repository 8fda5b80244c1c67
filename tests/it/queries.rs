//! History, stats, performance metrics, Prometheus and OpenAPI, over fixtures whose answers are
//! known in advance.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::common::{error_of, Server};

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn ev(action: &str, id: &str, mcp: &str, timestamp: f64) -> Value {
    json!({"action": action, "interaction_id": id, "mcp_id": mcp, "timestamp": timestamp})
}

async fn post_all(server: &Server, events: Vec<Value>) {
    for chunk in events.chunks(500) {
        let response = server
            .post(
                "/api/v2/interactions/batch",
                Value::Array(chunk.to_vec()).to_string(),
            )
            .await;
        assert_eq!(response.status, 200, "{}", response.json());
    }
}

/// Ten finished interactions with known processing times, two active, one orphan, one conflict,
/// all started a few minutes ago; one old interaction outside a 1h range.
fn fixture(t: f64) -> Vec<Value> {
    let mut events = Vec::new();
    for (i, seconds) in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].iter().enumerate() {
        let start = t - 600.0 + i as f64;
        events.push(ev("interaction_start", &format!("ok-{i}"), "ocr", start));
        events.push(ev(
            "interaction_complete",
            &format!("ok-{i}"),
            "ocr",
            start + seconds,
        ));
    }
    for (i, seconds) in [10.0, 20.0, 30.0].iter().enumerate() {
        let start = t - 500.0 + i as f64;
        events.push(ev("interaction_start", &format!("bad-{i}"), "pdf", start));
        events.push(ev(
            "interaction_error",
            &format!("bad-{i}"),
            "pdf",
            start + seconds,
        ));
    }
    events.push(ev("interaction_start", "stop-0", "ocr", t - 400.0));
    events.push(ev("interaction_cancelled", "stop-0", "ocr", t - 390.0));
    events.push(ev("interaction_complete", "stop-0", "ocr", t - 380.0)); // a conflict, not applied
    events.push(ev("interaction_start", "run-0", "ocr", t - 300.0));
    events.push(ev("interaction_start", "run-1", "pdf", t - 200.0));
    events.push(ev("interaction_progress", "run-1", "pdf", t - 199.0));
    events.push(ev("interaction_progress", "orphan-0", "ocr", t - 100.0));
    events.push(ev("interaction_start", "old-0", "ocr", t - 5.0 * 3600.0));
    events.push(ev(
        "interaction_complete",
        "old-0",
        "ocr",
        t - 5.0 * 3600.0 + 100.0,
    ));
    events
}

#[tokio::test]
async fn stats_and_metrics_match_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_STALE_AFTER", "1s")]);
    let t = now_s();
    post_all(&server, fixture(t)).await;

    let stats = server.get("/api/v2/interactions/stats").await.json();
    let records = &stats["records"];
    assert_eq!(records["total"], 14);
    assert_eq!(records["completed"], 7);
    assert_eq!(records["failed"], 3);
    assert_eq!(records["cancelled"], 1);
    assert_eq!(records["active"], 3, "run-0, run-1 and the orphan");
    assert_eq!(records["in_progress"], 2);
    assert_eq!(records["orphan"], 1);
    assert_eq!(records["conflicts"], 1);
    assert_eq!(
        records["stale"], 2,
        "run-0 and run-1 started minutes ago; the orphan was first received just now"
    );
    let expected_avg = (1.0 + 2.0 + 3.0 + 4.0 + 5.0 + 6.0 + 10.0 + 20.0 + 30.0 + 100.0) / 10.0;
    assert!((stats["average_processing_time"].as_f64().unwrap() - expected_avg).abs() < 1e-9);
    assert_eq!(stats["stats"]["requests_processed"], 27);
    assert_eq!(stats["storage"]["first_seq"], 1);
    assert_eq!(stats["storage"]["last_seq"], 27);
    assert_eq!(stats["storage"]["segments"], 1);
    assert!(stats["storage"]["bytes"].as_u64().unwrap() > 0);

    let m = server
        .get("/api/v2/performance/metrics?time_range=1h")
        .await
        .json();
    assert_eq!(
        m["total_interactions"], 10,
        "6 completed + 3 failed + 1 cancelled in the last hour: {m}"
    );
    assert_eq!(m["completed"], 6);
    assert_eq!(m["failed"], 3);
    assert_eq!(m["cancelled"], 1);
    assert!((m["success_rate"].as_f64().unwrap() - 0.6).abs() < 1e-12);
    assert!((m["error_rate"].as_f64().unwrap() - 0.3).abs() < 1e-12);
    assert_eq!(m["min_processing_time"], 1.0);
    assert_eq!(m["max_processing_time"], 30.0);
    assert!((m["avg_processing_time"].as_f64().unwrap() - 81.0 / 9.0).abs() < 1e-9);
    // Exact percentiles of {1,2,3,4,5,6,10,20,30} are 5, 30, 30; the answer is within one 5% bucket.
    for (field, exact) in [
        ("p50_processing_time", 5.0),
        ("p95_processing_time", 30.0),
        ("p99_processing_time", 30.0),
    ] {
        let got = m[field].as_f64().unwrap();
        assert!(
            got >= exact && got <= exact * 1.05,
            "{field}: {got} vs {exact}"
        );
    }
    assert_eq!(m["bucket_seconds"], 60);
    let series = m["series"].as_array().unwrap();
    let in_series: u64 = series
        .iter()
        .map(|b| {
            b["completed"].as_u64().unwrap()
                + b["failed"].as_u64().unwrap()
                + b["cancelled"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(in_series, 10);

    let day = server
        .get("/api/v2/performance/metrics?time_range=24h")
        .await
        .json();
    assert_eq!(day["total_interactions"], 11, "old-0 is inside 24h");
    assert_eq!(day["bucket_seconds"], 3600);
    let pdf = server
        .get("/api/v2/performance/metrics?time_range=24h&mcp_id=pdf")
        .await
        .json();
    assert_eq!(
        (
            pdf["total_interactions"].as_u64(),
            pdf["error_rate"].as_f64()
        ),
        (Some(3), Some(1.0))
    );

    // After stale_after (1 s) the three active records are stale.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let stats = server.get("/api/v2/interactions/stats").await.json();
    assert_eq!(stats["records"]["stale"], 3);
}

#[tokio::test]
async fn every_time_range_form_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for (range, seconds) in [
        ("1h", 3600),
        ("24h", 86_400),
        ("7d", 604_800),
        ("30d", 2_592_000),
        ("90s", 90),
        ("15m", 900),
        ("2d", 172_800),
    ] {
        let response = server
            .get(&format!("/api/v2/performance/metrics?time_range={range}"))
            .await;
        assert_eq!(response.status, 200, "{range}");
        let body = response.json();
        assert_eq!(body["time_range"], range);
        let span = body["series"].as_array().unwrap().len() as u64
            * body["bucket_seconds"].as_u64().unwrap();
        assert!(span >= seconds, "{range}: the series covers {span} s");
    }
    assert_eq!(
        server.get("/api/v2/performance/metrics").await.json()["time_range"],
        "24h"
    );
    for bad in ["2w", "0h", "abc", "", "1.5h", "-1h", "24"] {
        let response = server
            .get(&format!("/api/v2/performance/metrics?time_range={bad}"))
            .await;
        assert_eq!(response.status, 400, "{bad:?} was accepted");
        assert_eq!(error_of(&response)["field"], "time_range");
    }
    let response = server.get("/api/v2/performance/metrics?range=1h").await;
    assert_eq!(response.status, 400);
    assert_eq!(error_of(&response)["field"], "range");
}

#[tokio::test]
async fn history_filters_orders_and_refuses_bad_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let t = now_s();
    post_all(&server, fixture(t)).await;
    let ids = |body: &Value| -> Vec<String> {
        body["interactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["interaction_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = server.get("/api/v2/interactions?limit=1000").await.json();
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), 14);
    assert_eq!(
        &all_ids[..3],
        ["run-1", "run-0", "stop-0"],
        "newest start first"
    );
    assert_eq!(all_ids.last().unwrap(), "orphan-0", "no start: listed last");
    assert_eq!(
        all["interactions"][0]["progress_updates"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "full records"
    );

    let failed = server
        .get("/api/v2/interactions?status=failed")
        .await
        .json();
    assert_eq!(ids(&failed), ["bad-2", "bad-1", "bad-0"]);
    let ocr_done = server
        .get("/api/v2/interactions?mcp_id=ocr&status=completed&limit=3")
        .await
        .json();
    assert_eq!(ids(&ocr_done), ["ok-5", "ok-4", "ok-3"]);
    let window = server
        .get(&format!(
            "/api/v2/interactions?since={}&until={}",
            t - 450.0,
            t - 250.0
        ))
        .await
        .json();
    assert_eq!(ids(&window), ["run-0", "stop-0"]);
    let paged = server
        .get("/api/v2/interactions?limit=2&offset=1")
        .await
        .json();
    assert_eq!(ids(&paged), ["run-0", "stop-0"]);
    assert!(server
        .get("/api/v2/interactions?mcp_id=nobody")
        .await
        .json()["interactions"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        server.get("/api/v2/interactions").await.json()["limit"],
        100
    );

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("status=done", "status"),
        ("since=yesterday", "since"),
        ("cursor=zzz", "cursor"),
        ("mcp=ocr", "mcp"),
    ] {
        let response = server.get(&format!("/api/v2/interactions?{query}")).await;
        assert_eq!(response.status, 400, "{query}");
        assert_eq!(error_of(&response)["field"], field, "{query}");
    }
}

#[tokio::test]
async fn cursor_pagination_walks_everything_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let t = now_s();
    let mut events = Vec::new();
    for i in 0..250 {
        // Several share a start time, so ties must be broken consistently.
        let start = t - 1000.0 + (i / 3) as f64;
        let mcp = ["a", "b", "c"][i % 3];
        events.push(ev("interaction_start", &format!("p-{i}"), mcp, start));
    }
    for i in 0..20 {
        events.push(ev("interaction_progress", &format!("orphan-{i}"), "a", t));
    }
    post_all(&server, events).await;
    for (filter, expected) in [
        ("", 270),
        ("&mcp_id=a", 84 + 20),
        ("&status=started", 250),
        ("&since=1", 250),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut path = format!("/api/v2/interactions?limit=37{filter}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = server.get(&path).await.json();
            seen.extend(
                page["interactions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["interaction_id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{filter}: a record came twice");
        assert_eq!(seen.len(), expected, "{filter}");
        let at_once = server
            .get(&format!("/api/v2/interactions?limit=1000{filter}"))
            .await
            .json();
        let at_once: Vec<String> = at_once["interactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["interaction_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            seen, at_once,
            "{filter}: pages differ from the single answer"
        );
    }
}

#[tokio::test]
async fn liveness_readiness_and_prometheus_output_that_parses() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    post_all(&server, fixture(now_s())).await;
    let _ = server.post("/api/v2/interactions", "{").await; // one rejected request
    let mut client = server.client().await;
    assert_eq!(client.get("/livez", None).await.unwrap().status, 200);
    assert_eq!(client.get("/readyz", None).await.unwrap().status, 200);
    let response = client.get("/metrics", None).await.unwrap();
    assert_eq!(response.status, 200);
    assert!(response.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    let samples = parse_prometheus(&text);
    let value = |name: &str| samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(value("mcplog_events_ingested_total"), Some(27.0));
    assert_eq!(
        value("mcplog_ingest_rejected_total{reason=\"invalid\"}"),
        Some(1.0)
    );
    assert_eq!(value("mcplog_records{status=\"completed\"}"), Some(7.0));
    assert_eq!(
        value("mcplog_fsync_seconds_count"),
        Some(1.0),
        "one batch, one group commit"
    );
    assert!(value("mcplog_segments").unwrap() >= 1.0);
    assert!(
        !text.contains("ok-0") && !text.contains("interaction_id"),
        "no unbounded label values"
    );
}

/// Checks the exposition format line by line and returns every sample. Panics on any line that is
/// not a comment, a `# HELP`/`# TYPE` pair, or a sample of a declared family; checks that counters
/// end in `_total` and that histogram buckets are cumulative up to `_count`.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut types: std::collections::HashMap<String, String> = Default::default();
    let mut samples = Vec::new();
    let mut last_bucket: Option<(String, f64)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "counter without _total: {line}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("mcplog_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split("\",") {
                    let (key, value) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(!value.trim_end_matches('"').contains('"'), "{line}");
                }
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample of an undeclared family: {line}"
        );
        if name.ends_with("_bucket") {
            let key = series.split("le=").next().unwrap().to_owned();
            if let Some((previous_key, previous)) = &last_bucket {
                if *previous_key == key {
                    assert!(value >= *previous, "buckets not cumulative: {line}");
                }
            }
            last_bucket = Some((key, value));
        }
        if name.ends_with("_count") {
            if let Some((_, last)) = &last_bucket {
                assert_eq!(value, *last, "+Inf bucket differs from _count: {line}");
            }
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

/// A history cursor tells a writer nothing of the other mcp_ids: it used to carry the record's
/// ordinal, its rank among every interaction on the server, in clear hex (`1.<start>.<ordinal>`),
/// so a writer's cursor counted the others' interactions. It is sealed now: opaque, the same for
/// the same position, valid across a restart, and any changed character is a 400 naming `cursor`.
#[tokio::test]
async fn history_cursors_are_sealed_and_tampering_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let writer = "cursor-writer-key-0123456789abcdef";
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[static_api_keys]\n\"{writer}\" = {{ mcp_id = \"mine\", role = \"writer\" }}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap()];
    let server = Server::start_with_args(&data, &[], &args);
    let t = now_s();
    // 300 interactions of another mcp_id, then three of the writer's.
    let mut events: Vec<Value> = (0..300)
        .map(|i| ev("interaction_start", &format!("o-{i}"), "other", t - 10.0))
        .collect();
    events.extend((0..3).map(|i| ev("interaction_start", &format!("w-{i}"), "mine", t - i as f64)));
    post_all(&server, events).await;
    let page = server
        .get_as(writer, "/api/v2/interactions?limit=1")
        .await
        .json();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert!(
        cursor.bytes().all(|b| b.is_ascii_hexdigit()) && !cursor.contains('.'),
        "{cursor}"
    );
    // The old form ended in the ordinal: 300 = 0x12c for the writer's first record.
    assert!(!cursor.ends_with(".12c"), "{cursor}");
    let walk = |server: &Server, cursor: String| {
        let path = format!("/api/v2/interactions?limit=10&cursor={cursor}");
        let server_addr = server.addr;
        let key = writer.to_owned();
        async move {
            let mut client = mcplog::client::Client::connect(server_addr).await.unwrap();
            client.get(&path, Some(&key)).await.unwrap()
        }
    };
    let rest = walk(&server, cursor.clone()).await;
    assert_eq!(rest.status, 200);
    let ids: Vec<String> = rest.json()["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["interaction_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["w-1", "w-2"]);
    // The same position gives the same cursor.
    let again = server
        .get_as(writer, "/api/v2/interactions?limit=1")
        .await
        .json();
    assert_eq!(again["next_cursor"], cursor);
    // Tampered: one character changed, cut short, or the old clear-text form.
    let mut flipped = cursor.clone().into_bytes();
    flipped[cursor.len() - 1] = if flipped[cursor.len() - 1] == b'0' {
        b'1'
    } else {
        b'0'
    };
    for forged in [
        String::from_utf8(flipped).unwrap(),
        cursor[..cursor.len() - 2].to_owned(),
        "1.41da48be98100000.0".to_owned(),
    ] {
        let response = walk(&server, forged.clone()).await;
        assert_eq!(response.status, 400, "{forged}");
        let error = error_of(&response);
        assert_eq!(error["field"], "cursor", "{forged}");
        assert_eq!(error["code"], "bad_parameter");
    }
    // Valid across a restart of the same data directory.
    server.kill();
    let server = Server::start_with_args(&data, &[], &args);
    let after = walk(&server, cursor).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["count"], 2);
}
