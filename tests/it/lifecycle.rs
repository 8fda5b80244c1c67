//! Connections and shutdown as a hostile or slow client meets them: SIGTERM with a live follower
//! and a half-sent request, header/body/request timeouts, the connection cap, follow heartbeats,
//! stalled replay readers bounded in bytes, and an unreadable event cutting a replay short.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{event, segment_paths, Server};

/// A raw HTTP/1.1 connection, for requests sent in pieces.
struct Raw(TcpStream);

impl Raw {
    fn open(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Raw(stream)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    /// Everything until the server closes the connection (or the read fails).
    fn read_to_close(&mut self) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let clean = self.0.read_to_end(&mut out).is_ok();
        (out, clean)
    }

    /// Reads until `needle` has arrived.
    fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while !out.windows(needle.len()).any(|w| w == needle) {
            let n = self.0.read(&mut buf).unwrap();
            assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(needle));
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// True once the server has closed the connection (a read returns 0 or fails) within `limit`.
    fn closed_within(&mut self, limit: Duration) -> bool {
        self.0.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(err) => {
                    return !matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }
}

fn headers(method: &str, path: &str, key: &str, length: Option<usize>) -> Vec<u8> {
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n");
    if let Some(length) = length {
        text.push_str(&format!("Content-Length: {length}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body_json(response: &[u8]) -> Value {
    let text = String::from_utf8_lossy(response);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn sigterm(server: &Server) {
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// Waits for the process to exit; returns its exit code and how long it took.
fn wait_exit(server: &mut Server, limit: Duration) -> (Option<i32>, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return (status.code(), started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "no exit within {limit:?}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_follower_and_a_half_sent_request_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        dir.path(),
        &[
            ("MCPLOG_SHUTDOWN_GRACE", "8s"),
            ("MCPLOG_BODY_READ_TIMEOUT", "60s"),
            ("MCPLOG_REQUEST_TIMEOUT", "60s"),
        ],
    );
    let t = now();
    for i in 0..3 {
        let r = server
            .post(
                "/api/v2/interactions",
                event("interaction_start", &format!("before-{i}"), "m", t),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    // A live follower that has caught up.
    let mut follower = Raw::open(server.addr);
    follower.send(&headers(
        "GET",
        "/api/v2/events?follow=true",
        &server.key,
        None,
    ));
    let seen = follower.read_until(b"\"seq\":3");
    // A request whose headers arrived and whose body is half-sent.
    let body = event("interaction_start", "in-flight", "m", t);
    let mut half = Raw::open(server.addr);
    half.send(&headers(
        "POST",
        "/api/v2/interactions",
        &server.key,
        Some(body.len()),
    ));
    half.send(&body.as_bytes()[..body.len() / 2]);
    std::thread::sleep(Duration::from_millis(200));

    let signalled = Instant::now();
    sigterm(&server);
    std::thread::sleep(Duration::from_millis(300));
    // Not ready at once, while the half-sent request keeps the drain open.
    let mut probe = Raw::open(server.addr);
    probe.send(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n");
    let (answer, _) = probe.read_to_close();
    assert_eq!(
        status_of(&answer),
        503,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The follower's stream has ended cleanly: the closing chunk, after every event it had.
    let (rest, clean) = follower.read_to_close();
    let stream = [seen, rest].concat();
    assert!(clean);
    assert!(
        stream.ends_with(b"0\r\n\r\n"),
        "the follow stream did not end with its closing chunk: {:?}",
        String::from_utf8_lossy(&stream)
    );
    // The in-flight request finishes within the grace period and is stored.
    half.send(&body.as_bytes()[body.len() / 2..]);
    let (answer, _) = half.read_to_close();
    assert_eq!(
        status_of(&answer),
        200,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(body_json(&answer)["seq"], 4);
    let (code, _) = wait_exit(&mut server, Duration::from_secs(20));
    assert_eq!(code, Some(0), "log:\n{}", server.log());
    assert!(signalled.elapsed() < Duration::from_secs(8 + 5));
    drop(server);

    let server = Server::start(dir.path());
    let r = server.get("/api/v2/interactions/in-flight").await;
    assert_eq!(
        r.status, 200,
        "the drained event is on disk after a restart"
    );
    assert_eq!(r.json()["metadata"]["first_seq"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_finishes_delays_exit_by_the_grace_period_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        dir.path(),
        &[
            ("MCPLOG_SHUTDOWN_GRACE", "1s"),
            ("MCPLOG_BODY_READ_TIMEOUT", "120s"),
            ("MCPLOG_REQUEST_TIMEOUT", "120s"),
        ],
    );
    let mut stalled = Raw::open(server.addr);
    stalled.send(&headers(
        "POST",
        "/api/v2/interactions/batch",
        &server.key,
        Some(10_000),
    ));
    stalled.send(b"[{\"action\":");
    // And a follower that never reads.
    let mut follower = Raw::open(server.addr);
    follower.send(&headers(
        "GET",
        "/api/v2/events?follow=true",
        &server.key,
        None,
    ));
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&server);
    let (code, took) = wait_exit(&mut server, Duration::from_secs(20));
    assert_eq!(code, Some(0), "log:\n{}", server.log());
    // One second of grace, plus the drain and the process's own exit.
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    assert!(
        server.log().contains("grace period over"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_slow_bodies_idle_connections_and_long_requests_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("MCPLOG_HEADER_READ_TIMEOUT", "400ms"),
            ("MCPLOG_BODY_READ_TIMEOUT", "400ms"),
            ("MCPLOG_REQUEST_TIMEOUT", "30s"),
        ],
    );
    // Headers that never finish: the connection is closed.
    let mut slow_headers = Raw::open(server.addr);
    slow_headers.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n");
    assert!(slow_headers.closed_within(Duration::from_secs(5)));
    // Not even a first byte: closed too.
    let mut silent = Raw::open(server.addr);
    assert!(silent.closed_within(Duration::from_secs(5)));
    // A kept-alive connection that goes quiet after a request: closed.
    let mut idle = Raw::open(server.addr);
    idle.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n");
    idle.read_until(b"ok\n");
    assert!(idle.closed_within(Duration::from_secs(5)));
    // A body that never finishes: 408 naming the body, nothing stored.
    let body = event("interaction_start", "slow-body", "m", now());
    let mut slow_body = Raw::open(server.addr);
    slow_body.send(&headers(
        "POST",
        "/api/v2/interactions",
        &server.key,
        Some(body.len()),
    ));
    slow_body.send(&body.as_bytes()[..5]);
    let (answer, _) = slow_body.read_to_close();
    assert_eq!(
        status_of(&answer),
        408,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let error = &body_json(&answer)["error"];
    assert_eq!(error["code"], "body_timeout");
    assert_eq!(error["field"], "body");
    assert_eq!(
        server.get("/api/v2/interactions/slow-body").await.status,
        404
    );
    drop(server);

    // The whole-request bound, when it is the shorter one.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("MCPLOG_BODY_READ_TIMEOUT", "30s"),
            ("MCPLOG_REQUEST_TIMEOUT", "400ms"),
        ],
    );
    let mut slow = Raw::open(server.addr);
    slow.send(&headers(
        "POST",
        "/api/v2/interactions",
        &server.key,
        Some(body.len()),
    ));
    slow.send(&body.as_bytes()[..5]);
    let (answer, _) = slow.read_to_close();
    assert_eq!(
        status_of(&answer),
        503,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(String::from_utf8_lossy(&answer)
        .to_ascii_lowercase()
        .contains("retry-after: 1"));
    assert_eq!(body_json(&answer)["error"]["code"], "request_timeout");
    // The replay stream is not bound by request_timeout.
    let mut follower = Raw::open(server.addr);
    follower.send(&headers(
        "GET",
        "/api/v2/events?follow=true",
        &server.key,
        None,
    ));
    follower.read_until(b"200 OK");
    std::thread::sleep(Duration::from_millis(1000));
    let r = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "after", "m", now()),
        )
        .await;
    assert_eq!(r.status, 200);
    follower.read_until(b"\"interaction_id\":\"after\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("MCPLOG_MAX_CONNECTIONS", "4"),
            ("MCPLOG_HEADER_READ_TIMEOUT", "60s"),
        ],
    );
    // Four connections each in the middle of a request (its body half sent): busy, so none is
    // closed for a new client. (Idle ones would be: see the next test.)
    let mut held: Vec<Raw> = (0..4)
        .map(|_| {
            let mut raw = Raw::open(server.addr);
            raw.send(&headers(
                "POST",
                "/api/v2/interactions",
                &server.key,
                Some(100),
            ));
            raw.send(b"{\"action\":");
            raw
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = Raw::open(server.addr);
    fifth.send(b"GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    fifth
        .0
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        fifth.0.read(&mut buf).is_err(),
        "a fifth connection was served while four requests were in progress"
    );
    drop(held.pop());
    fifth
        .0
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (answer, _) = fifth.read_to_close();
    assert_eq!(status_of(&answer), 200);
}

/// Idle sockets (connected and silent, or halfway through a request's head) filling
/// `max_connections` do not keep `/readyz` and `/livez` from answering: the connection idle
/// longest is closed for the new client. Before, the probes waited in the kernel's accept queue
/// until `header_read_timeout` closed an idle socket, so a load balancer drained the node. A
/// connection with a request in progress is not closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_filling_max_connections_leave_health_answerable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("MCPLOG_MAX_CONNECTIONS", "4"),
            ("MCPLOG_HEADER_READ_TIMEOUT", "30s"),
            ("MCPLOG_BODY_READ_TIMEOUT", "30s"),
        ],
    );
    // One connection busy (a request's body half sent), three idle: silent, a partial head, a
    // kept-alive one after an answer.
    let mut busy = Raw::open(server.addr);
    busy.send(&headers(
        "POST",
        "/api/v2/interactions",
        &server.key,
        Some(100),
    ));
    busy.send(b"{\"action\":");
    let silent = Raw::open(server.addr);
    let mut partial = Raw::open(server.addr);
    partial.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n");
    let mut kept = Raw::open(server.addr);
    kept.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n");
    kept.read_until(b"ok\n");
    std::thread::sleep(Duration::from_millis(200));
    // Well below header_read_timeout: the old code answered only once it had passed.
    // Each probe stays open (kept alive) once answered, so each needs another idle slot freed.
    let deadline = Duration::from_secs(5);
    let mut probes = Vec::new();
    for (path, end) in [
        ("/readyz", "ready\n"),
        ("/livez", "ok\n"),
        ("/api/v2/health", "}"),
        ("/readyz", "ready\n"),
        ("/livez", "ok\n"),
    ] {
        let mut probe = Raw::open(server.addr);
        probe.0.set_read_timeout(Some(deadline)).unwrap();
        probe.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).ends_with(end) {
            match probe.0.read(&mut buf) {
                Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
                other => panic!("{path} did not answer within {deadline:?}: {other:?}"),
            }
        }
        assert_eq!(status_of(&answer), 200, "{path}");
        probes.push(probe);
    }
    // The idle sockets were the ones closed; the request in progress still completes.
    let rest = format!("{:<90}", "1}"); // 100 bytes with the 10 sent
    busy.send(rest.as_bytes());
    let answer = busy.read_until(b"}");
    assert_eq!(
        status_of(&answer),
        422,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop((silent, partial, kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_follow_stream_sends_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_REPLAY_HEARTBEAT", "200ms")]);
    let r = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "a", "m", now()),
        )
        .await;
    assert_eq!(r.status, 200);
    let mut follower = Raw::open(server.addr);
    follower.send(&headers(
        "GET",
        "/api/v2/events?follow=true",
        &server.key,
        None,
    ));
    let started = Instant::now();
    let text = String::from_utf8(follower.read_until(b"\"heartbeat\"")).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let line = text
        .lines()
        .find(|l| l.contains("heartbeat"))
        .unwrap()
        .to_owned();
    let heartbeat: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(heartbeat["durable_seq"], 1);
    assert!(heartbeat["heartbeat"].as_f64().unwrap() > now() - 60.0);
    assert!(
        heartbeat.get("seq").is_none(),
        "a heartbeat is not an event"
    );
}

/// Posts `batches` batches of `per_batch` start events (ids `{prefix}-{batch}-{i}`), each with a
/// payload of `pad_bytes` bytes.
async fn post_padded_batches(
    server: &Server,
    prefix: &str,
    batches: usize,
    per_batch: usize,
    pad_bytes: usize,
) {
    let pad = "x".repeat(pad_bytes);
    for b in 0..batches {
        let batch: Vec<String> = (0..per_batch)
            .map(|i| {
                serde_json::json!({"action": "interaction_start",
                    "interaction_id": format!("{prefix}-{b}-{i}"), "mcp_id": "m",
                    "timestamp": now(), "request_data": {"pad": pad}})
                .to_string()
            })
            .collect();
        let r = server
            .post(
                "/api/v2/interactions/batch",
                format!("[{}]", batch.join(",")),
            )
            .await;
        assert_eq!(r.status, 200);
    }
}

/// Anonymous resident memory of a process, in bytes.
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_replay_readers_hold_a_bounded_number_of_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // 48 MB of events of ~100 KB each.
    post_padded_batches(&server, "big", 12, 40, 100_000).await;
    let pid = server.child.id();
    let before = rss_anon(pid);
    // Twenty readers that ask for everything and never read a byte.
    let stalled: Vec<Raw> = (0..20)
        .map(|_| {
            let mut raw = Raw::open(server.addr);
            raw.send(&headers("GET", "/api/v2/events", &server.key, None));
            raw
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss_anon(pid).saturating_sub(before);
    // Event-bounded buffers (8 chunks of 1000 events) held the whole 48 MB per reader: ~1 GB.
    assert!(
        grown < 120 * 1024 * 1024,
        "20 stalled readers grew the server by {} MB",
        grown / (1024 * 1024)
    );
    // The server still answers the others.
    assert_eq!(server.get("/api/v2/interactions/big-0-0").await.status, 200);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_cuts_the_replay_stream_with_an_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for (i, marker) in ["first", "POISONMARKER", "third"].iter().enumerate() {
        let body = serde_json::json!({"action": "interaction_start",
            "interaction_id": format!("r{i}"), "mcp_id": "m", "timestamp": now(),
            "request_data": {"note": marker}});
        let r = server.post("/api/v2/interactions", body.to_string()).await;
        assert_eq!(r.status, 200);
    }
    // Rot one byte of the second event on disk, under the running server's mapping.
    let path = segment_paths(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(12)
        .position(|w| w == b"POISONMARKER")
        .unwrap();
    bytes[at] ^= 0x20;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &bytes[at..at + 1], at as u64).unwrap();
    drop(file);

    let mut reader = Raw::open(server.addr);
    reader.send(&headers("GET", "/api/v2/events", &server.key, None));
    let (stream, _) = reader.read_to_close();
    let text = String::from_utf8_lossy(&stream);
    assert!(text.contains("\"interaction_id\":\"r0\""), "{text}");
    assert!(text.contains("\"code\":\"unreadable_event\""), "{text}");
    assert!(text.contains("\"seq\":2"), "{text}");
    assert!(
        !text.contains("\"interaction_id\":\"r2\""),
        "no event after the gap: {text}"
    );
    assert!(
        !stream.ends_with(b"0\r\n\r\n"),
        "the stream must be cut, not closed as if whole: {text}"
    );
}

#[tokio::test]
async fn replay_is_one_event_per_line_even_for_pretty_printed_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let pretty = "{\n  \"action\": \"interaction_start\",\r\n  \"interaction_id\": \"pretty\",\n  \"mcp_id\": \"m\",\n  \"timestamp\": 1763900000,\n  \"request_data\": {\"text\": \"a\\nb\"}\n}";
    assert_eq!(
        server.post("/api/v2/interactions", pretty).await.status,
        200
    );
    let flat = event("interaction_progress", "pretty", "m", 1763900001.0);
    assert_eq!(
        server
            .post("/api/v2/interactions", flat.clone())
            .await
            .status,
        200
    );
    let replay = server.get("/api/v2/events").await;
    let text = String::from_utf8(replay.body.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    let as_sent: Value = serde_json::from_str(pretty).unwrap();
    assert_eq!(first["event"], as_sent, "the same JSON");
    assert_eq!(
        first["event"]["request_data"]["text"], "a\nb",
        "escaped newlines are kept"
    );
    assert!(
        lines[0].contains(&pretty.replace(['\n', '\r'], " ")),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(&flat), "byte-exact otherwise");
    // The events endpoint keeps the exact bytes.
    let exact = server.get("/api/v2/interactions/pretty/events").await;
    assert!(String::from_utf8_lossy(&exact.body).contains(pretty));
    // So does the offline tool's dump: one line each.
    let dump = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .arg("dump")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&dump.stdout).lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_connection_after_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            ("MCPLOG_MAX_CONNECTIONS", "2"),
            ("MCPLOG_WRITE_TIMEOUT", "1s"),
            ("MCPLOG_HEADER_READ_TIMEOUT", "60s"),
        ],
    );
    // Two connections that pipeline thousands of requests and never read the answers: the
    // kernel's buffers fill and the server's writes stall.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(2048).unwrap();
        let stream = socket.connect(server.addr).await.unwrap();
        let mut stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n".repeat(20_000);
        let _ = stream.write_all(&request);
        stalled.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    // Within a few write timeouts, a new client is served again.
    let started = Instant::now();
    loop {
        let mut probe = Raw::open(server.addr);
        probe
            .0
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        probe.send(b"GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        let _ = probe.0.read_to_end(&mut answer);
        if status_of(&answer) == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "stalled readers still hold every connection"
        );
    }
    drop(stalled);
}

#[tokio::test]
async fn one_key_may_hold_only_so_many_replay_streams() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_REPLAY_STREAMS_PER_KEY_MAX", "2")]);
    let held: Vec<Raw> = (0..2)
        .map(|_| {
            let mut raw = Raw::open(server.addr);
            raw.send(&headers(
                "GET",
                "/api/v2/events?follow=true",
                &server.key,
                None,
            ));
            raw.read_until(b"200 OK");
            raw
        })
        .collect();
    let third = server.get("/api/v2/events?follow=true").await;
    assert_eq!(third.status, 429);
    assert_eq!(crate::common::error_of(&third)["code"], "too_many_streams");
    assert!(third.headers.get("retry-after").is_some());
    drop(held);
    // Closed streams give their slots back.
    let started = Instant::now();
    while server.get("/api/v2/events").await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_replay_cut_by_shutdown_does_not_look_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), &[("MCPLOG_SHUTDOWN_GRACE", "5s")]);
    post_padded_batches(&server, "s", 20, 500, 2000).await;
    // A reader that takes its time over 10 000 events of 2 KB.
    let mut reader = Raw::open(server.addr);
    reader.send(&headers("GET", "/api/v2/events", &server.key, None));
    reader.read_until(b"\"seq\":1,");
    sigterm(&server);
    let (rest, _) = reader.read_to_close();
    let text = String::from_utf8_lossy(&rest);
    let (code, _) = wait_exit(&mut server, Duration::from_secs(20));
    assert_eq!(code, Some(0));
    if text.contains("\"seq\":10000,") {
        return; // It finished before the signal took effect: nothing to prove this time.
    }
    assert!(
        text.contains("\"code\":\"shutting_down\""),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    assert!(
        !rest.ends_with(b"0\r\n\r\n"),
        "a cut replay ended as if whole"
    );
}

#[tokio::test]
async fn a_stored_body_altered_under_a_fixed_crc_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for i in 0..3 {
        let body = serde_json::json!({"action": "interaction_start",
            "interaction_id": format!("t{i}"), "mcp_id": "m", "timestamp": now(),
            "request_data": {"note": format!("NOTE{i}")}});
        assert_eq!(
            server
                .post("/api/v2/interactions", body.to_string())
                .await
                .status,
            200
        );
    }
    // Rewrite the second event's body so it is no longer JSON, and fix its frame's CRC, as a
    // forger would: the frame still checks, the body does not parse.
    let path = segment_paths(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"NOTE1").unwrap();
    let open = bytes[..at].iter().rposition(|&b| b == b'{').unwrap();
    let open = bytes[..open].iter().rposition(|&b| b == b'{').unwrap();
    bytes[open] = b'X';
    let frame = frame_holding(&bytes, open);
    let len = u32::from_le_bytes(bytes[frame..frame + 4].try_into().unwrap()) as usize;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[frame..frame + 4]);
    crc.update(&bytes[frame + 8..frame + 8 + len]);
    bytes[frame + 4..frame + 8].copy_from_slice(&crc.finalize().to_le_bytes());
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &bytes, 0).unwrap();
    drop(file);

    // Replay stops at it with an error line, cut.
    let mut reader = Raw::open(server.addr);
    reader.send(&headers("GET", "/api/v2/events", &server.key, None));
    let (stream, _) = reader.read_to_close();
    let text = String::from_utf8_lossy(&stream);
    assert!(text.contains("\"code\":\"unreadable_event\""), "{text}");
    assert!(!text.contains("\"interaction_id\":\"t2\""), "{text}");
    assert!(!stream.ends_with(b"0\r\n\r\n"));
    // The record and its events answer 500, never a payload of {} or a dropped connection.
    for path in ["/api/v2/interactions/t1", "/api/v2/interactions/t1/events"] {
        let response = server.get(path).await;
        assert_eq!(response.status, 500, "{path}");
        assert_eq!(
            crate::common::error_of(&response)["code"],
            "unreadable_event"
        );
    }
    assert_eq!(server.get("/api/v2/interactions/t0").await.status, 200);
}

/// The offset of the frame that holds byte `at` of a segment (walking frame lengths from the
/// header's end, as storage-format.md lays them out).
fn frame_holding(bytes: &[u8], at: usize) -> usize {
    let mut offset = mcplog::storage::format::HEADER_BYTES;
    loop {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let end = offset + 8 + len;
        if at < end {
            return offset;
        }
        offset = end;
    }
}

/// The head of a response up to its blank line, lower-cased, and the rest.
fn split_head(response: &[u8]) -> (String, Vec<u8>) {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    (
        String::from_utf8_lossy(&response[..end]).to_lowercase(),
        response[end..].to_vec(),
    )
}

/// A refusal sent before the request's body is read (a key over its rate on a single event:
/// 429; a bad key: 401) no longer leaves a keep-alive client to find a broken pipe on its next
/// request: a small body that has arrived whole is discarded and the connection kept (the next
/// request on it is answered), and a large one makes the answer say `Connection: close`, after
/// which the server closes. A refusal after the body was read (422) keeps the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_before_the_body_is_read_keeps_or_announces_the_close() {
    let dir = tempfile::tempdir().unwrap();
    let limited = "a-rate-limited-writer-key-0123456789";
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[static_api_keys]\n\"{limited}\" = {{ mcp_id = \"m\", role = \"writer\", \
             events_per_second = 1, burst = 1 }}\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    let small = event("interaction_start", "k", "m", now());
    let large = serde_json::json!({"action": "interaction_start", "interaction_id": "big",
        "mcp_id": "m", "timestamp": now(), "request_data": {"pad": "x".repeat(300_000)}})
    .to_string();
    let request = |key: &str, body: &str| {
        let mut bytes = headers("POST", "/api/v2/interactions", key, Some(body.len()));
        bytes.extend_from_slice(body.as_bytes());
        bytes
    };

    // The limited key's one token goes on the first event; the second is refused unread and
    // discarded, and the connection answers a third request.
    let mut raw = Raw::open(server.addr);
    raw.send(&request(limited, &small));
    let (first, _) = split_head(&raw.read_until(b"}"));
    assert!(first.starts_with("http/1.1 200"), "{first}");
    raw.send(&request(limited, &small));
    let (second, _) = split_head(&raw.read_until(b"}}"));
    assert!(second.starts_with("http/1.1 429"), "{second}");
    assert!(second.contains("retry-after: "), "{second}");
    assert!(!second.contains("connection: close"), "{second}");
    raw.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n");
    raw.read_until(b"ok\n");

    // A large body refused unread: the answer says the connection closes, and it does.
    for key in [limited, "not-a-key"] {
        let mut raw = Raw::open(server.addr);
        raw.send(&headers(
            "POST",
            "/api/v2/interactions",
            key,
            Some(large.len()),
        ));
        raw.send(&large.as_bytes()[..1000]);
        let (answer, _) = raw.read_to_close();
        let (head, _) = split_head(&answer);
        assert!(
            head.starts_with("http/1.1 429") || head.starts_with("http/1.1 401"),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
    }

    // A refusal of a body that was read keeps the connection open for the next request.
    let bad = "{\"action\":1}";
    let mut raw = Raw::open(server.addr);
    raw.send(&request(&server.key, bad));
    let (head, _) = split_head(&raw.read_until(b"}}"));
    assert!(head.starts_with("http/1.1 422"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    raw.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n");
    raw.read_until(b"ok\n");
}

/// A writer's quiet follow stream tells, as `durable_seq`, the newest seq of its own events (its
/// resume point), not the whole log's durable end, which counts what the other mcp_ids write.
/// A stream over the whole log (admin) still tells the log's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writers_heartbeat_tells_its_own_seq_not_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let writer = "heartbeat-writer-key-0123456789ab";
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[static_api_keys]\n\"{writer}\" = {{ mcp_id = \"mine\", role = \"writer\" }}\n"),
    )
    .unwrap();
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &[("MCPLOG_REPLAY_HEARTBEAT", "200ms")],
        &["--config", config.to_str().unwrap()],
    );
    // Seq 1 and 2 the writer's, 3 to 7 another mcp_id's.
    for (i, mcp) in ["mine", "mine", "x", "x", "x", "x", "x"].iter().enumerate() {
        let r = server
            .post(
                "/api/v2/interactions",
                event("interaction_start", &format!("h{i}"), mcp, now()),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let heartbeat_of = |key: &str| {
        let mut follower = Raw::open(server.addr);
        follower.send(&headers("GET", "/api/v2/events?follow=true", key, None));
        let text = String::from_utf8(follower.read_until(b"\"heartbeat\"")).unwrap();
        let mut rest = text.split("\"heartbeat\"").nth(1).unwrap().to_owned();
        while !rest.contains('}') {
            rest.push_str(&String::from_utf8(follower.read_until(b"}")).unwrap());
        }
        let line = format!("{{\"heartbeat\"{}", &rest[..=rest.find('}').unwrap()]);
        serde_json::from_str::<Value>(&line).unwrap()
    };
    assert_eq!(heartbeat_of(writer)["durable_seq"], 2);
    assert_eq!(heartbeat_of(&server.key)["durable_seq"], 7);
}

/// A `/proc/<pid>/status` figure, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Eight parallel reads of one interaction of 41 events of 1 MB each: each read used to build the
/// whole record in memory (and its serialization beside it), taking the server from 18 MB to
/// 404 MB resident. Now a read holds a few words per event and hands the stored payloads to the
/// connection straight from the segment mappings, so the server's peak resident memory (VmHWM,
/// reset after a first read has mapped the pages in) grows by less than two events'
/// `event_bytes_max` per reader plus a fixed allowance, whatever the record weighs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_reads_of_a_large_record_hold_no_copy_of_it() {
    const EVENT_BYTES_MAX: u64 = 1024 * 1024;
    const READERS: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[("MCPLOG_EVENT_BYTES_MAX", &EVENT_BYTES_MAX.to_string())],
    );
    let pad = "p".repeat(1_000_000);
    for i in 0..41 {
        let (action, field) = if i == 0 {
            ("interaction_start", "request_data")
        } else {
            ("interaction_progress", "progress_data")
        };
        let body = serde_json::json!({"action": action, "interaction_id": "large", "mcp_id": "m",
            "timestamp": now(), field: {"i": i, "pad": pad}})
        .to_string();
        assert_eq!(server.post("/api/v2/interactions", body).await.status, 200);
    }
    let read_all = |path: &'static str| {
        let mut raw = Raw::open(server.addr);
        let mut request = headers("GET", path, &server.key, None);
        request.splice(
            request.len() - 2..,
            b"Connection: close\r\n\r\n".iter().copied(),
        );
        raw.send(&request);
        let read = std::io::copy(&mut raw.0, &mut std::io::sink()).unwrap();
        assert!(read > 41_000_000, "{path}: {read} bytes");
    };
    let path = "/api/v2/interactions/large";
    // A first read maps the segment's pages in: file pages, shared by every reader after it.
    read_all(path);
    let pid = server.child.id();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting VmHWM");
    let before = proc_status_bytes(pid, "VmRSS:");
    std::thread::scope(|scope| {
        for _ in 0..READERS {
            scope.spawn(|| read_all(path));
        }
    });
    let peak = proc_status_bytes(pid, "VmHWM:");
    let grown = peak.saturating_sub(before);
    let bound = READERS * 2 * EVENT_BYTES_MAX + 16 * 1024 * 1024;
    println!(
        "8 parallel reads of a 41 MB record: VmRSS before {} MB, VmHWM during {} MB (+{} MB; bound {} MB)",
        before >> 20,
        peak >> 20,
        grown >> 20,
        bound >> 20
    );
    assert!(
        grown < bound,
        "8 parallel reads grew the server by {} MB (bound {} MB)",
        grown >> 20,
        bound >> 20
    );
}
