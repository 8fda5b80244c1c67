//! Keys that change while the server runs, through the real server and binaries: replay streams
//! that end when their key is revoked, expires or stops being the admin key; `admin.key` read
//! again when it changes or is deleted; a master secret rotated with
//! `security.previous_master_secrets`; `/metrics` behind a key with `api.metrics_auth`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{event, Server};

/// How long a stream may take to end once its key is refused: the promise is one second; the
/// assertion is generous so that a loaded machine does not fail it.
const END_DEADLINE: Duration = Duration::from_secs(5);

/// Runs `mcplog keygen` on `data_dir` with `env`; returns the key.
fn keygen(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = keygen_output(data_dir, args, env);
    assert!(
        output.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn keygen_output(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcplog"));
    command
        .arg("keygen")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("MCPLOG_MASTER_SECRET")
        .env_remove("MCPLOG_PREVIOUS_MASTER_SECRETS");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// A replay stream read on its own thread: every byte it sends, and when and how it ended.
struct Stream {
    rx: mpsc::Receiver<Event>,
    bytes: Vec<u8>,
}

enum Event {
    Bytes(Vec<u8>),
    /// The server closed the connection (`true`: cleanly, after the closing chunk).
    Closed(bool, Instant),
}

impl Stream {
    fn open(addr: SocketAddr, path: &str, key: &str) -> Stream {
        Stream::open_slow(addr, path, key, None)
    }

    /// With `pause`, the reader reads one buffer, then waits that long before reading on.
    fn open_slow(addr: SocketAddr, path: &str, key: &str, pause: Option<Duration>) -> Stream {
        let mut socket = TcpStream::connect(addr).unwrap();
        write!(
            socket,
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            let mut seen = Vec::new();
            let mut first = true;
            loop {
                match socket.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let clean = seen.ends_with(b"0\r\n\r\n");
                        let _ = tx.send(Event::Closed(clean, Instant::now()));
                        return;
                    }
                    Ok(n) => {
                        seen.extend_from_slice(&buf[..n]);
                        if tx.send(Event::Bytes(buf[..n].to_vec())).is_err() {
                            return;
                        }
                        if let (true, Some(pause)) = (first, pause) {
                            std::thread::sleep(pause);
                        }
                        first = false;
                    }
                }
            }
        });
        Stream {
            rx,
            bytes: Vec::new(),
        }
    }

    /// Reads until `needle` has arrived; panics after 30 s.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.text().contains(needle) {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Bytes(bytes)) => self.bytes.extend(bytes),
                Ok(Event::Closed(..)) | Err(_) => {
                    panic!("no {needle:?} in the stream: {}", self.text())
                }
            }
        }
    }

    /// Waits for the stream to end, at most `limit`: when it closed and whether cleanly, or
    /// `None` if it is still open.
    fn end_within(&mut self, limit: Duration) -> Option<(Instant, bool)> {
        let deadline = Instant::now() + limit;
        loop {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Bytes(bytes)) => {
                    self.bytes.extend(bytes);
                    // The closing chunk: the body is whole, whenever the connection closes.
                    if self.bytes.ends_with(b"\r\n0\r\n\r\n") {
                        return Some((Instant::now(), true));
                    }
                }
                Ok(Event::Closed(clean, at)) => return Some((at, clean)),
                Err(_) => return None,
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The JSON lines of the body (chunk-size lines of the chunked encoding skipped).
    fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The last JSON line of a stream, which must be the error naming why it ended.
fn final_error(stream: &Stream) -> Value {
    let lines = stream.lines();
    let last = lines.last().cloned().unwrap_or(Value::Null);
    assert!(
        last["error"]["code"].is_string(),
        "the stream did not end with an error line: {}",
        stream.text()
    );
    last["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_follow_streams_with_key_revoked_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    // A heartbeat far away: the stream must end without waiting for one.
    let server = Server::start_with(dir.path(), &[("MCPLOG_REPLAY_HEARTBEAT", "1h")]);
    let auditor = keygen(
        dir.path(),
        &["--role", "auditor", "--expires-in", "1h"],
        &[],
    );
    let t = now_s();
    let posted = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "r-1", "m", t),
        )
        .await;
    assert_eq!(posted.status, 200);
    let mut leaked = Stream::open(server.addr, "/api/v2/events?follow=true", &auditor);
    let mut second = Stream::open(server.addr, "/api/v2/events?follow=true", &auditor);
    let mut admin = Stream::open(server.addr, "/api/v2/events?follow=true", &server.key);
    for stream in [&mut leaked, &mut second, &mut admin] {
        stream.wait_for("\"seq\":1");
    }

    let revoked = server
        .post("/api/v2/keys/revoke", json!({ "key": auditor }).to_string())
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.json());
    let at = Instant::now();
    for stream in [&mut leaked, &mut second] {
        let (ended, clean) = stream
            .end_within(END_DEADLINE)
            .unwrap_or_else(|| panic!("still open after revocation: {}", stream.text()));
        assert!(ended - at < END_DEADLINE);
        assert!(clean, "a follow stream ends cleanly: {}", stream.text());
        let error = final_error(stream);
        assert_eq!(error["code"], "key_revoked", "{error}");
        assert_eq!(error["field"], "authorization");
        assert!(!stream.text().contains(&auditor), "the key is never echoed");
    }
    // Another key's stream goes on, and sees what comes next.
    let posted = server
        .post(
            "/api/v2/interactions",
            event("interaction_progress", "r-1", "m", t),
        )
        .await;
    assert_eq!(posted.status, 200);
    admin.wait_for("\"seq\":2");
    assert!(admin.end_within(Duration::from_millis(300)).is_none());
    assert!(!leaked.text().contains("\"seq\":2"), "{}", leaked.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_expires_ends_its_follow_stream_with_key_expired() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_REPLAY_HEARTBEAT", "300ms")]);
    let output = keygen_output(
        dir.path(),
        &["--role", "auditor", "--expires-in", "3s", "--json"],
        &[],
    );
    assert!(output.status.success());
    let minted: Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = minted["key"].as_str().unwrap().to_owned();
    let expires_at = minted["expires_at"].as_f64().unwrap();
    let mut stream = Stream::open(server.addr, "/api/v2/events?follow=true", &key);
    // Alive, and sending heartbeats, before it expires.
    stream.wait_for("heartbeat");
    let (ended, clean) = stream
        .end_within(Duration::from_secs_f64(expires_at - now_s()) + END_DEADLINE)
        .unwrap_or_else(|| panic!("still open after expiry: {}", stream.text()));
    let ended_s = now_s() - ended.elapsed().as_secs_f64();
    assert!(
        ended_s >= expires_at - 0.05,
        "ended {:.3}s before its key expired",
        expires_at - ended_s
    );
    assert!(clean);
    let error = final_error(&stream);
    assert_eq!(error["code"], "key_expired", "{error}");
    let heartbeats = stream
        .lines()
        .iter()
        .filter(|l| l.get("heartbeat").is_some())
        .count();
    assert!(heartbeats >= 2, "{}", stream.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_replay_in_progress_is_cut_after_key_revoked_when_its_key_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let writer = keygen(
        dir.path(),
        &["--mcp-id", "m", "--role", "writer", "--expires-in", "1h"],
        &[],
    );
    // About 24 MB of events: far more than the socket and the server buffer.
    let padding = "x".repeat(4000);
    for batch in 0..6 {
        let events: Vec<String> = (0..1000)
            .map(|i| {
                json!({"action": "interaction_start", "interaction_id": format!("b{batch}-{i}"),
                    "mcp_id": "m", "timestamp": 1.0, "request_data": {"pad": padding}})
                .to_string()
            })
            .collect();
        let r = server
            .post_as(
                &writer,
                "/api/v2/interactions/batch",
                format!("[{}]", events.join(",")),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
    }
    // The reader takes one buffer, then stalls while the key is revoked.
    let mut stream = Stream::open_slow(
        server.addr,
        "/api/v2/events",
        &writer,
        Some(Duration::from_secs(2)),
    );
    stream.wait_for("\"seq\":1,");
    let revoked = server
        .post("/api/v2/keys/revoke", json!({ "key": writer }).to_string())
        .await;
    assert_eq!(revoked.status, 200);
    let (_, clean) = stream
        .end_within(Duration::from_secs(30))
        .expect("the replay ends");
    let error = final_error(&stream);
    assert_eq!(error["code"], "key_revoked", "{error}");
    assert!(
        !clean,
        "a bounded replay that was refused is cut, so it never looks whole"
    );
    let sent = stream
        .lines()
        .iter()
        .filter(|l| l.get("seq").is_some())
        .count();
    assert!(sent < 6000, "the whole replay was sent after revocation");
}

/// Writes `key` to `<data>/admin.key` the way an operator should: a new file renamed into place.
fn replace_admin_key(data: &Path, key: &str) {
    let temporary = data.join("admin.key.new");
    std::fs::write(&temporary, format!("{key}\n")).unwrap();
    std::fs::rename(&temporary, data.join("admin.key")).unwrap();
}

/// Polls `GET /api/v2/interactions/stats` with `key` until it answers `status`, within 5 s.
async fn answers_within(server: &Server, key: &str, status: u16) -> bool {
    let deadline = Instant::now() + END_DEADLINE;
    while Instant::now() < deadline {
        if server
            .get_as(key, "/api/v2/interactions/stats")
            .await
            .status
            == status
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_key_file_is_read_again_when_replaced_deleted_or_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let server = Server::start_with(data, &[("MCPLOG_REPLAY_HEARTBEAT", "1h")]);
    let first = server.key.clone();
    let mut old_stream = Stream::open(server.addr, "/api/v2/events?follow=true", &first);
    old_stream.wait_for("HTTP/1.1 200");

    // Replaced: the new key works, the old one is refused and its stream ends.
    let second = "mcplog_admin_an-operators-replacement-key-0001";
    replace_admin_key(data, second);
    assert!(answers_within(&server, second, 200).await, "the new key");
    let refused = server.get_as(&first, "/api/v2/interactions/stats").await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.json()["error"]["message"],
        "the API key is no longer the admin key: admin.key was replaced"
    );
    old_stream
        .end_within(END_DEADLINE)
        .expect("the old admin key's stream ends");
    assert_eq!(final_error(&old_stream)["code"], "key_replaced");
    assert!(
        server.log().contains(
            "admin.key changed: its new key is the admin key from now on, and the previous one is refused"
        ),
        "{}",
        server.log()
    );
    // The new key is the one revocation protects as the last admin key.
    let last = server
        .post_as(
            second,
            "/api/v2/keys/revoke",
            json!({ "key": second }).to_string(),
        )
        .await;
    assert_eq!(last.status, 409, "{}", last.json());

    // Deleted: a new key is made and written with mode 0600, as on a first start, and the
    // deleted file's key is refused.
    std::fs::remove_file(data.join("admin.key")).unwrap();
    let deadline = Instant::now() + END_DEADLINE;
    let third = loop {
        match std::fs::read_to_string(data.join("admin.key")) {
            Ok(text) if !text.trim().is_empty() => break text.trim().to_owned(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("admin.key was not made again; log:\n{}", server.log()),
        }
    };
    assert!(third.starts_with("mcplog_admin_") && third != second && third != first);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("admin.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(answers_within(&server, &third, 200).await);
    assert_eq!(
        server
            .get_as(second, "/api/v2/interactions/stats")
            .await
            .status,
        401
    );
    assert!(
        server.log().contains("admin.key was deleted"),
        "{}",
        server.log()
    );

    // An empty file (a write caught half-way) keeps the key in use.
    std::fs::write(data.join("admin.key"), "").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        server
            .get_as(&third, "/api/v2/interactions/stats")
            .await
            .status,
        200
    );

    // SIGHUP reads it at once, and does not end the server.
    let fourth = "mcplog_admin_replaced-again-then-a-sighup-0002";
    replace_admin_key(data, fourth);
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(answers_within(&server, fourth, 200).await);
    assert!(server.log().contains("SIGHUP"), "{}", server.log());
    assert_eq!(
        server.get("/livez").await.status,
        200,
        "the server survives SIGHUP"
    );
}

/// `mcplog serve` on `data` with `env`, the keygen environment cleared.
fn serve(data: &Path, env: &[(&str, &str)]) -> Server {
    Server::start_with(data, env)
}

async fn stats_status(server: &Server, key: &str) -> u16 {
    server
        .get_as(key, "/api/v2/interactions/stats")
        .await
        .status
        .as_u16()
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_secret_rotation_keeps_old_keys_working_until_the_previous_secret_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Before: the data directory's generated secret signs every key.
    let server = serve(&data, &[]);
    let old_key = keygen(&data, &["--role", "auditor", "--expires-in", "1h"], &[]);
    assert_eq!(stats_status(&server, &old_key).await, 200);
    server.kill();
    let old_secret = std::fs::read_to_string(data.join("master.secret"))
        .unwrap()
        .trim()
        .to_owned();

    // Rotation, the README's way: the old secret kept as a previous one, a new one made.
    std::fs::rename(data.join("master.secret"), data.join("master.secret.old")).unwrap();
    let overlap = [("MCPLOG_PREVIOUS_MASTER_SECRETS", old_secret.as_str())];
    let server = serve(&data, &overlap);
    let new_secret = std::fs::read_to_string(data.join("master.secret")).unwrap();
    assert_ne!(new_secret.trim(), old_secret, "a new secret was made");
    assert_eq!(
        stats_status(&server, &old_key).await,
        200,
        "old keys still work"
    );
    assert_eq!(stats_status(&server, &old_key).await, 200);
    let metrics = server.get("/metrics").await.body.clone();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert_eq!(
        sample(&metrics, "mcplog_keys_previous_secret_total"),
        Some(2),
        "each request with an old key is counted"
    );
    // keygen signs with the new secret, whatever is listed as previous.
    let new_key = keygen(
        &data,
        &["--role", "auditor", "--expires-in", "1h"],
        &overlap,
    );
    assert_eq!(stats_status(&server, &new_key).await, 200);
    let metrics = server.get("/metrics").await.body.clone();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert_eq!(
        sample(&metrics, "mcplog_keys_previous_secret_total"),
        Some(2),
        "a new key is not counted"
    );
    server.kill();

    // Done: without the previous secret, old keys are refused and new ones work.
    let server = serve(&data, &[]);
    assert_eq!(stats_status(&server, &old_key).await, 401);
    assert_eq!(stats_status(&server, &new_key).await, 200);
    server.kill();

    // The same with configured secrets; the shadowed master.secret file is named, by the server
    // and by keygen alike.
    let configured = "a-configured-master-secret-0123456789";
    let env = [
        ("MCPLOG_MASTER_SECRET", configured),
        ("MCPLOG_PREVIOUS_MASTER_SECRETS", new_secret.trim()),
    ];
    let server = serve(&data, &env);
    assert_eq!(stats_status(&server, &new_key).await, 200);
    assert!(
        server
            .log()
            .contains("master.secret in the data directory is not used"),
        "{}",
        server.log()
    );
    let output = keygen_output(&data, &["--role", "auditor", "--expires-in", "1h"], &env);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "master.secret in the data directory is not used: security.master_secret \
             (MCPLOG_MASTER_SECRET) is set and takes its place; keys signed with the file's secret \
             are accepted while it is listed"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains(configured) && !server.log().contains(configured));
    let configured_key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(stats_status(&server, &configured_key).await, 200);
    assert_eq!(stats_status(&server, &old_key).await, 401);
    server.kill();
    // A previous secret too short to be one is a configuration error (exit 2), for both.
    let short = [("MCPLOG_PREVIOUS_MASTER_SECRETS", "short-secret")];
    let output = keygen_output(&data, &["--role", "auditor"], &short);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("previous_master_secrets") && !stderr.contains("short-secret"),
        "{stderr}"
    );
    let serve = Command::new(env!("CARGO_BIN_EXE_mcplog"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .env("MCPLOG_PREVIOUS_MASTER_SECRETS", "short-secret")
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&serve.stderr).contains("previous_master_secrets"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_is_public_by_default_and_needs_an_auditor_or_admin_key_with_metrics_auth() {
    let dir = tempfile::tempdir().unwrap();
    let public = Server::start(&dir.path().join("public"));
    let answer = public.client().await.get("/metrics", None).await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(String::from_utf8_lossy(&answer.body).contains("mcplog_keys_previous_secret_total 0"));
    public.kill();

    let data = dir.path().join("guarded");
    let config = dir.path().join("mcplog.toml");
    std::fs::write(&config, "[api]\nmetrics_auth = true\n").unwrap();
    let guarded = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    let writer = keygen(&data, &["--mcp-id", "m", "--expires-in", "1h"], &[]);
    let auditor = keygen(&data, &["--role", "auditor", "--expires-in", "1h"], &[]);
    let anonymous = guarded.client().await.get("/metrics", None).await.unwrap();
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error"]["code"], "unauthorized");
    let by_writer = guarded.get_as(&writer, "/metrics").await;
    assert_eq!(by_writer.status, 403);
    assert_eq!(by_writer.json()["error"]["field"], "authorization");
    for key in [&auditor, &guarded.key] {
        let answer = guarded.get_as(key, "/metrics").await;
        assert_eq!(answer.status, 200);
        assert!(String::from_utf8_lossy(&answer.body).contains("mcplog_events_ingested_total"));
    }
    // The environment sets it too; other public routes stay public.
    guarded.kill();
    let by_env = Server::start_with(&data, &[("MCPLOG_METRICS_AUTH", "true")]);
    let mut client = by_env.client().await;
    assert_eq!(client.get("/metrics", None).await.unwrap().status, 401);
    for public in [
        "/livez",
        "/readyz",
        "/api/v2/health",
        "/api/v2/openapi.json",
    ] {
        let mut client = by_env.client().await;
        assert_eq!(
            client.get(public, None).await.unwrap().status,
            200,
            "{public}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_static_key_loses_its_stream_and_every_ingest_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcplog.toml");
    std::fs::write(
        &config,
        "[static_api_keys]\n\"static-auditor-key-for-streams\" = { role = \"auditor\" }\n\
         \"static-writer-key-for-ingest\" = { mcp_id = \"m\", role = \"writer\" }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_args(
        &data,
        &[("MCPLOG_REPLAY_HEARTBEAT", "1h")],
        &["--config", config.to_str().unwrap()],
    );
    let (auditor, writer) = (
        "static-auditor-key-for-streams",
        "static-writer-key-for-ingest",
    );
    let mut stream = Stream::open(server.addr, "/api/v2/events?follow=true", auditor);
    stream.wait_for("HTTP/1.1 200");
    let by_id = mcplog::auth::hex(&mcplog::auth::key_id(auditor));
    let revoked = server
        .post(
            "/api/v2/keys/revoke",
            json!({ "key_id": by_id }).to_string(),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.json());
    stream
        .end_within(END_DEADLINE)
        .expect("a static key's stream ends on revocation");
    assert_eq!(final_error(&stream)["code"], "key_revoked");

    let revoked = server
        .post("/api/v2/keys/revoke", json!({ "key": writer }).to_string())
        .await;
    assert_eq!(revoked.status, 200);
    let t = now_s();
    for (path, body) in [
        (
            "/api/v2/interactions",
            event("interaction_start", "s-1", "m", t),
        ),
        (
            "/api/v2/interactions/batch",
            format!("[{}]", event("interaction_start", "s-2", "m", t)),
        ),
        (
            "/api/v2/interactions/batch?partial=true",
            format!("[{}]", event("interaction_start", "s-3", "m", t)),
        ),
        ("/v1/traces", "{\"resourceSpans\":[]}".to_owned()),
    ] {
        let answer = server.post_as(writer, path, body).await;
        assert_eq!(answer.status, 401, "{path}: {}", answer.json());
        assert_eq!(
            answer.json()["error"]["message"],
            "the API key has been revoked",
            "{path}"
        );
    }
    let stats = server.get("/api/v2/interactions/stats").await.json();
    assert_eq!(stats["records"]["total"], 0, "nothing was stored");
}

/// Sends a request's head now and its body later, on a raw connection; returns the status line
/// and the whole answer.
struct SlowBody {
    socket: TcpStream,
    body: String,
}

impl SlowBody {
    fn head(addr: SocketAddr, path: &str, key: &str, body: String) -> SlowBody {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            socket,
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        SlowBody { socket, body }
    }

    fn finish(mut self) -> String {
        self.socket.write_all(self.body.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = self.socket.read_to_string(&mut answer);
        answer
    }
}

/// A key revoked while its request's body is still arriving does nothing: the key is checked
/// again once the body is read (found by a hostile pass: all four ingest paths stored the event,
/// and a revoked admin could still revoke).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_while_its_body_arrives_stores_and_revokes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcplog.toml");
    std::fs::write(
        &config,
        "[static_api_keys]\n\"slow-writer-key-0123456789\" = { mcp_id = \"m\", role = \"writer\" }\n\
         \"slow-admin-key-0123456789\" = { role = \"admin\" }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    let writer = "slow-writer-key-0123456789";
    let one = event("interaction_start", "late-one", "m", now_s());
    let pending = [
        SlowBody::head(server.addr, "/api/v2/interactions", writer, one.clone()),
        SlowBody::head(
            server.addr,
            "/api/v2/interactions/batch",
            writer,
            format!(
                "[{}]",
                event("interaction_start", "late-batch", "m", now_s())
            ),
        ),
        SlowBody::head(
            server.addr,
            "/api/v2/interactions/batch?partial=true",
            writer,
            format!(
                "[{}]",
                event("interaction_start", "late-partial", "m", now_s())
            ),
        ),
    ];
    // A second admin starts a revocation of the file's admin key, and is itself revoked first.
    let admin = "slow-admin-key-0123456789";
    let late_revoke = SlowBody::head(
        server.addr,
        "/api/v2/keys/revoke",
        admin,
        json!({ "key": server.key }).to_string(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    for key in [writer, admin] {
        let id = mcplog::auth::hex(&mcplog::auth::key_id(key));
        let revoked = server
            .post("/api/v2/keys/revoke", json!({ "key_id": id }).to_string())
            .await;
        assert_eq!(revoked.status, 200, "{}", revoked.json());
    }
    for request in pending {
        let answer = request.finish();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let answer = late_revoke.finish();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Nothing was stored, and the file's admin key still works.
    for id in ["late-one", "late-batch", "late-partial"] {
        let record = server.get(&format!("/api/v2/interactions/{id}")).await;
        assert_eq!(record.status, 404, "{id} was stored");
    }
    assert_eq!(server.get("/api/v2/interactions/stats").await.status, 200);
}

/// `admin.key` replaced by what cannot be a key (two lines, a control character, a FIFO, a
/// huge file): the server keeps the key it has, and goes on reading the file (a FIFO once
/// blocked the reload for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_key_file_that_holds_no_key_leaves_the_current_one_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let path = data.join("admin.key");
    for bad in [
        "mcplog_admin_lineA\nmcplog_admin_lineB".to_owned(),
        "mcplog_admin_a\u{1}b".to_owned(),
        "a".repeat(2 << 20),
    ] {
        let temporary = data.join("admin.key.new");
        std::fs::write(&temporary, &bad).unwrap();
        std::fs::rename(&temporary, &path).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            stats_status(&server, &server.key).await,
            200,
            "{:?} replaced the key",
            &bad[..bad.len().min(40)]
        );
    }
    std::fs::remove_file(&path).unwrap();
    let fifo = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(fifo.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stats_status(&server, &server.key).await, 200);
    // The reload still runs: a real new key takes over.
    std::fs::remove_file(&path).unwrap();
    replace_admin_key(&data, "mcplog_admin_after-the-fifo-0123456789");
    assert!(answers_within(&server, "mcplog_admin_after-the-fifo-0123456789", 200).await);
    assert!(answers_within(&server, &server.key, 401).await);
}

/// A static key a client could not send as one bearer token, or that an error answer would
/// escape past the key check, stops start-up.
#[test]
fn a_static_key_with_white_space_or_quotes_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for key in ["with space-0123456789", "quote\\\"key-0123456789", ""] {
        let config = dir.path().join("bad.toml");
        std::fs::write(
            &config,
            format!("[static_api_keys]\n\"{key}\" = {{ role = \"admin\" }}\n"),
        )
        .unwrap();
        let (mut child, _rx, log) = crate::common::spawn_with_args(
            &dir.path().join("data"),
            &[],
            &["--config", config.to_str().unwrap()],
        );
        let status = child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let log = log.lock().unwrap().clone();
        assert_eq!(status.code(), Some(2), "{key:?}: {log}");
        assert!(log.contains("static_api_keys"), "{key:?}: {log}");
    }
}

/// A master secret of the wrong type or too short is a configuration error (exit 2) that never
/// shows its value, found before anything is written to the data directory.
#[test]
fn a_bad_master_secret_stops_start_up_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    for value in [
        "1234567890123456789",
        "[\"SUPERSECRETVALUE-aaaaaaaa\"]",
        "\"shortSECRET\"",
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, format!("[security]\nmaster_secret = {value}\n")).unwrap();
        let data = dir.path().join("data");
        let (mut child, _rx, log) =
            crate::common::spawn_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
        let status = child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let log = log.lock().unwrap().clone();
        assert_eq!(status.code(), Some(2), "{value}: {log}");
        assert!(log.contains("master_secret"), "{log}");
        for shown in ["1234567890123456789", "SUPERSECRETVALUE", "shortSECRET"] {
            assert!(!log.contains(shown), "{value}: {log}");
        }
        assert!(
            !data.join("admin.key").exists(),
            "{value}: the data directory was written"
        );
    }
}

/// A setting's variable that is not UTF-8 stops start-up (exit 2, naming it, not showing it),
/// rather than being read as unset while the operator believes the secret set.
#[test]
fn a_setting_variable_that_is_not_utf8_stops_start_up() {
    use std::os::unix::ffi::OsStringExt;
    let dir = tempfile::tempdir().unwrap();
    let value = std::ffi::OsString::from_vec(b"\xff\xfeNONUTF8SECRET-xxxxxxxxxx".to_vec());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcplog"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("MCPLOG_MASTER_SECRET", value)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that started anyway is stopped, and the test fails, rather than waiting on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("MCPLOG_MASTER_SECRET"), "{stderr}");
    assert!(!stderr.contains("NONUTF8SECRET"), "{stderr}");
    assert!(!dir.path().join("data").join("admin.key").exists());
}

/// A revocation is a record in the log: replay shows it to an admin (the revoked key id as its
/// interaction, under the reserved mcp_id, sent by the revoking admin's key id), it makes no
/// interaction record, and it outlives `revoked.keys`: a restart with the file deleted still
/// refuses the key (start-up applies the log's records) and writes the file again; a backup
/// carries the file. A client event
/// under the reserved mcp_id is refused, and nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_a_record_in_the_log_and_outlives_revoked_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let writer = keygen(dir.path(), &["--mcp-id", "m", "--expires-in", "1h"], &[]);
    let writer_id = mcplog::hex::encode(&mcplog::auth::key_id(&writer));
    let t = now_s();
    let posted = server
        .post_as(
            &writer,
            "/api/v2/interactions",
            event("interaction_start", "r-1", "m", t),
        )
        .await;
    assert_eq!(posted.status, 200, "{}", posted.json());
    let forged = json!({"action": "interaction_progress", "interaction_id": writer_id,
        "mcp_id": "mcplog.keys", "timestamp": t});
    let refused = server
        .post("/api/v2/interactions", forged.to_string())
        .await;
    assert_eq!(refused.status, 422, "{}", refused.json());
    assert_eq!(refused.json()["error"]["code"], "reserved_id");
    assert_eq!(refused.json()["error"]["field"], "mcp_id");

    let revoked = server
        .post("/api/v2/keys/revoke", json!({ "key": writer }).to_string())
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.json());
    assert_eq!(
        stats_status(&server, &writer).await,
        401,
        "refused once answered"
    );
    let replay = server.get("/api/v2/events").await;
    let text = String::from_utf8_lossy(&replay.body).into_owned();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "the event and the record, nothing refused: {text}"
    );
    let record = &lines[1];
    assert_eq!(record["seq"], 2);
    assert_eq!(
        record["key_id"],
        mcplog::hex::encode(&mcplog::auth::key_id(&server.key))
    );
    assert_eq!(record["event"]["mcp_id"], "mcplog.keys");
    assert_eq!(record["event"]["interaction_id"], writer_id.as_str());
    assert_eq!(record["event"]["revocation"]["key_id"], writer_id.as_str());
    let listed = server.get("/api/v2/interactions").await.json();
    assert_eq!(listed["count"], 1, "the record is no interaction: {listed}");

    // A backup carries the revocation in its segments and in revoked.keys, which outlives them.
    let backup = tempfile::tempdir().unwrap();
    let copied = Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .arg("backup")
        .arg(dir.path())
        .arg(backup.path().join("copy"))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{copied:?}");
    let file = std::fs::read_to_string(backup.path().join("copy/revoked.keys")).unwrap();
    assert_eq!(file.trim(), writer_id);

    server.kill();
    std::fs::remove_file(dir.path().join("revoked.keys")).unwrap();
    let server = serve(dir.path(), &[]);
    assert_eq!(
        stats_status(&server, &writer).await,
        401,
        "refused after the restart"
    );
    let file = std::fs::read_to_string(dir.path().join("revoked.keys")).unwrap();
    assert_eq!(file.trim(), writer_id, "start-up wrote the file again");
    let listed = server.get("/api/v2/interactions").await.json();
    assert_eq!(listed["count"], 1, "{listed}");
}
