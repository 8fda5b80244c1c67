//! Running it as an operator does: retention, configuration precedence, the reference's config
//! file, bad configuration, JSON logs, and SIGTERM under load.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcplog::client::Client;
use serde_json::Value;

use crate::common::{error_of, event, segment_paths, spawn_serve, Server};

/// Everything a reader sees: every record (full) and the record counts.
async fn whole_view(server: &Server) -> (Value, Value) {
    let history = server.get("/api/v2/interactions?limit=1000").await.json();
    let stats = server.get("/api/v2/interactions/stats").await.json();
    (history["interactions"].clone(), stats["records"].clone())
}

#[tokio::test]
async fn retention_drops_old_segments_keeps_new_ones_and_the_view_matches_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MCPLOG_RETENTION", "3s"),
        ("MCPLOG_RETENTION_OVERRIDE", "true"),
        ("MCPLOG_SEGMENT_MAX_BYTES", "4096"),
        ("MCPLOG_SEGMENT_MAX_AGE", "1s"),
        ("MCPLOG_CLEANUP_INTERVAL", "200ms"),
    ];
    let server = Server::start_with(dir.path(), &env);
    for i in 0..40 {
        let old = format!(
            "[{},{}]",
            event("interaction_start", &format!("old-{i}"), "m", 1.0),
            event("interaction_complete", &format!("old-{i}"), "m", 2.0)
        );
        assert_eq!(
            server.post("/api/v2/interactions/batch", old).await.status,
            200
        );
    }
    // An interaction whose start falls to retention and whose end is kept.
    server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "span", "m", 10.0),
        )
        .await;
    let segments_before = segment_paths(dir.path()).len();
    assert!(segments_before >= 3, "{segments_before} segments");
    // Past retention: the idle active segment is sealed by age and every old segment expires.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    server
        .post(
            "/api/v2/interactions",
            event("interaction_complete", "span", "m", 12.0),
        )
        .await;
    for i in 0..5 {
        assert_eq!(
            server
                .post(
                    "/api/v2/interactions",
                    event("interaction_start", &format!("new-{i}"), "m", 20.0)
                )
                .await
                .status,
            200
        );
    }
    assert_eq!(
        server.get("/api/v2/interactions/old-0").await.status,
        404,
        "expired interactions are gone from the view"
    );
    assert_eq!(server.get("/api/v2/interactions/old-39").await.status, 404);
    assert_eq!(server.get("/api/v2/interactions/new-4").await.status, 200);
    let span = server.get("/api/v2/interactions/span").await.json();
    assert_eq!(span["status"], "completed");
    assert_eq!(
        span["start_time"],
        Value::Null,
        "its start event was dropped with its segment"
    );
    let first = segment_paths(dir.path())[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        first, "00000000000000000001.seg",
        "the oldest segments are deleted"
    );
    let stats = server.get("/api/v2/interactions/stats").await.json();
    assert!(stats["storage"]["first_seq"].as_u64().unwrap() > 81);
    assert_eq!(stats["records"]["total"], 6);
    assert!(server.log().contains("retention deleted expired segments"));

    let before = whole_view(&server).await;
    server.kill();
    let server = Server::start_with(dir.path(), &env);
    let after = whole_view(&server).await;
    assert_eq!(
        before, after,
        "the view after retention equals a fresh rebuild from the remaining segments"
    );
}

#[tokio::test]
async fn flags_override_environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_dir, env_dir, flag_dir) = (
        dir.path().join("from-file"),
        dir.path().join("from-env"),
        dir.path().join("from-flag"),
    );
    let config = dir.path().join("mcplog.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = {:?}\n[api]\nevent_bytes_max = 3000\n",
            file_dir.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    /// Arguments, environment, and the data directory that should win.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a std::path::Path);
    let cases: [Case<'_>; 3] = [
        (
            &[
                "--config",
                config,
                "--bind",
                "127.0.0.1:0",
                "--data-dir",
                flag_dir.to_str().unwrap(),
            ],
            &[("MCPLOG_DATA_DIR", env_dir.to_str().unwrap())],
            &flag_dir,
        ),
        (
            &["--config", config, "--bind", "127.0.0.1:0"],
            &[("MCPLOG_DATA_DIR", env_dir.to_str().unwrap())],
            &env_dir,
        ),
        (
            &["--config", config, "--bind", "127.0.0.1:0"],
            &[],
            &file_dir,
        ),
    ];
    for (args, env, expected) in cases {
        let (mut child, rx, log) = spawn_serve(args, env);
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no start: {}", log.lock().unwrap()));
        assert!(
            expected.join("admin.key").exists(),
            "{args:?} {env:?} did not use {}",
            expected.display()
        );
        if expected == file_dir {
            // event_bytes_max: 3000 from the file; then 5000 from the environment wins.
            let key = std::fs::read_to_string(expected.join("admin.key"))
                .unwrap()
                .trim()
                .to_owned();
            let padded = |n: usize| {
                format!(
                    r#"{{"action":"interaction_start","interaction_id":"p","mcp_id":"m","timestamp":1,"request_data":{{"pad":"{}"}}}}"#,
                    "x".repeat(n)
                )
            };
            let mut client = Client::connect(addr).await.unwrap();
            assert_eq!(
                client
                    .post("/api/v2/interactions", Some(&key), padded(4000))
                    .await
                    .unwrap()
                    .status,
                413
            );
            child.kill().unwrap();
            child.wait().unwrap();
            let (mut child, rx, _) = spawn_serve(args, &[("MCPLOG_EVENT_BYTES_MAX", "5000")]);
            let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            let mut client = Client::connect(addr).await.unwrap();
            assert_eq!(
                client
                    .post("/api/v2/interactions", Some(&key), padded(4000))
                    .await
                    .unwrap()
                    .status,
                200
            );
            child.kill().unwrap();
            child.wait().unwrap();
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// The reference design's example file, verbatim (its `null`s included).
const REFERENCE_FILE: &str = include_str!("../fixtures/reference-config.toml");

#[tokio::test]
async fn the_reference_config_file_loads_with_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("coordinator_extensions.toml");
    std::fs::write(&config, REFERENCE_FILE).unwrap();
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &[],
        &["--config", config.to_str().unwrap()],
    );
    let log = server.log();
    for warned in [
        "extensions.interaction_logging",
        "database_path",
        "workers",
        "expires_at = null",
    ] {
        assert!(log.contains(warned), "no warning about {warned}:\n{log}");
    }
    assert!(
        !log.contains("sk-mcp-ocr-workflow-001"),
        "a warning shows a key"
    );
    let ok = server
        .post_as(
            "sk-mcp-ocr-workflow-001",
            "/api/v2/interactions",
            event("interaction_start", "r-1", "ocr_workflow_mcp_001", 1.0),
        )
        .await;
    assert_eq!(
        ok.status, 200,
        "the reference's static key works as a writer"
    );
    let other = server
        .post_as(
            "sk-mcp-ocr-workflow-001",
            "/api/v2/interactions",
            event(
                "interaction_start",
                "r-2",
                "data_analysis_workflow_001",
                1.0,
            ),
        )
        .await;
    assert_eq!(other.status, 403);
}

#[tokio::test]
async fn invalid_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        (
            "[api]\nqueue_events_max = \"lots\"\n",
            "api.queue_events_max",
        ),
        ("[storage]\nretention = \"forever\"\n", "storage.retention"),
        ("[logging]\nlevel = \"loud\"\n", "logging.level"),
        ("[storage]\nfsync = \"never\"\n", "storage.fsync"),
        ("[api\n", "--config"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog"))
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--data-dir",
                dir.path().join("d").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog"))
        .args([
            "serve",
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
        ])
        .env("MCPLOG_SEGMENT_MAX_AGE", "1 week")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("MCPLOG_SEGMENT_MAX_AGE"));
}

#[tokio::test]
async fn absurd_empty_or_unparseable_variables_stop_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // Every case is tried, and the ones not refused as they should be are listed together.
    let mut wrong = Vec::new();
    for (var, value, named) in [
        // Would overflow a clock's arithmetic and panic later (writer, connection, SIGINT).
        (
            "MCPLOG_CLEANUP_INTERVAL",
            "9223372036854775807",
            "MCPLOG_CLEANUP_INTERVAL",
        ),
        (
            "MCPLOG_HEADER_READ_TIMEOUT",
            "9223372036854775807",
            "MCPLOG_HEADER_READ_TIMEOUT",
        ),
        (
            "MCPLOG_SHUTDOWN_GRACE",
            "9223372036854775807",
            "MCPLOG_SHUTDOWN_GRACE",
        ),
        ("MCPLOG_RETENTION", "100000000000000d", "MCPLOG_RETENTION"),
        // Would roll a segment on every write.
        ("MCPLOG_SEGMENT_MAX_AGE", "0", "MCPLOG_SEGMENT_MAX_AGE"),
        // Would put the keys and segments in the current directory.
        ("MCPLOG_DATA_DIR", "", "data_dir"),
        ("MCPLOG_NATS_TOKEN", "", "MCPLOG_NATS_TOKEN"),
        ("MCPLOG_NATS_CREDENTIALS", "", "MCPLOG_NATS_CREDENTIALS"),
        ("MCPLOG_BIND", "nonsense", "bind"),
        ("MCPLOG_BIND", "", "bind"),
    ] {
        // No --data-dir or --bind flag: they would override the variables under test.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog"))
            .arg("serve")
            .current_dir(dir.path())
            .env("MCPLOG_DATA_DIR", dir.path().join("d"))
            .env("MCPLOG_BIND", "127.0.0.1:0")
            .env(var, value)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A server that starts instead fails the test rather than hanging it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        if status.code() != Some(2) || !stderr.contains(named) {
            wrong.push(format!("{var}={value:?}: {status}: {stderr}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Nothing was written where the empty data directory would have put it.
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "d")
        .collect();
    assert!(written.is_empty(), "{written:?}");
}

#[tokio::test]
async fn a_variable_fixes_what_the_file_alone_gets_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcplog.toml");
    for (text, env, key) in [
        (
            "[api]\nevent_bytes_max = 100\nbatch_bytes_max = 50\n",
            ("MCPLOG_BATCH_BYTES_MAX", "1000"),
            "api.batch_bytes_max",
        ),
        (
            "[storage]\nretention = \"30m\"\n",
            ("MCPLOG_RETENTION_OVERRIDE", "true"),
            "storage.retention",
        ),
        (
            "[security]\nmaster_secret = \"short\"\n",
            ("MCPLOG_MASTER_SECRET", "a-master-secret-long-enough"),
            "security.master_secret",
        ),
        (
            "[api]\nbatch_events_max = 20000\n",
            ("MCPLOG_QUEUE_EVENTS_MAX", "50000"),
            "api.batch_events_max",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let data = tempfile::tempdir().unwrap();
        let args = ["--config", config.to_str().unwrap()];
        // The file alone is refused, naming the key...
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog"))
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: {stderr}");
        // ...and starts once the variable sets the final value right.
        let server = Server::start_with_args(data.path(), &[env], &args);
        assert_eq!(server.get("/api/v2/interactions/stats").await.status, 200);
        server.kill();
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_FORMAT", "json")]);
    server.post("/api/v2/interactions", "{").await;
    let log = server.log();
    assert!(log.lines().count() >= 3);
    for line in log.lines() {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        assert!(
            parsed["level"].is_string() && parsed["fields"].is_object(),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_with_every_acknowledged_event_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for client_no in 0..16 {
        let (addr, key, acked) = (server.addr, server.key.clone(), Arc::clone(&acked));
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = Client::connect(addr).await else {
                return;
            };
            for n in 0.. {
                let id = format!("t-{client_no}-{n}");
                match client
                    .post(
                        "/api/v2/interactions",
                        Some(&key),
                        event("interaction_start", &id, "m", 1.0),
                    )
                    .await
                {
                    Ok(response) if response.status == 200 => acked.lock().unwrap().push(id),
                    Ok(response) => assert_eq!(response.status, 503, "{}", error_of(&response)),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", server.log());
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "only {} acknowledged", acked.len());
    drop(server);
    let server = Server::start(dir.path());
    let total = server.get("/api/v2/interactions/stats").await.json()["records"]["total"]
        .as_u64()
        .unwrap();
    assert!(total >= acked.len() as u64);
    let mut client = server.client().await;
    for id in &acked {
        let response = client
            .get(&format!("/api/v2/interactions/{id}"), Some(&server.key))
            .await
            .unwrap();
        assert_eq!(response.status, 200, "acknowledged {id} lost in shutdown");
    }
}

/// A tmpfs of a few MiB, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        mounted.status.success().then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_loses_nothing_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount("4m") else {
        eprintln!("SKIPPED a_full_disk_…: this machine cannot mount a tmpfs (mount needs root); the full-disk path is untested here");
        return;
    };
    let data = disk.dir.path().join("data");
    let server = Server::start(&data);
    // Leave about 160 KiB free.
    let filler = disk.dir.path().join("filler");
    let free = fs_free_bytes(disk.dir.path());
    std::fs::write(&filler, vec![0u8; (free - 160 * 1024) as usize]).unwrap();
    let mut acked = Vec::new();
    let mut full = None;
    for i in 0..5000 {
        let id = format!("d-{i}");
        let body = format!(
            r#"{{"action":"interaction_start","interaction_id":"{id}","mcp_id":"m","timestamp":1,"request_data":{{"pad":"{}"}}}}"#,
            "x".repeat(900)
        );
        let response = server.post("/api/v2/interactions", body).await;
        match response.status.as_u16() {
            200 => acked.push(id),
            507 => {
                full = Some(error_of(&response));
                break;
            }
            other => panic!("unexpected {other}: {}", response.json()),
        }
    }
    let full = full.expect("the disk never filled");
    assert_eq!(full["code"], "insufficient_storage");
    assert!(
        full["message"].as_str().unwrap().contains("write"),
        "{full}"
    );
    let health = server
        .client()
        .await
        .get("/api/v2/health", None)
        .await
        .unwrap();
    assert_eq!(health.status, 503);
    assert!(
        health.json()["reason"]
            .as_str()
            .unwrap()
            .contains("No space")
            || health.json()["reason"].as_str().unwrap().contains("space")
    );
    // No absolute path reaches a client: not in the 507, not in the public health answer.
    let root = disk.dir.path().to_str().unwrap();
    assert!(!full.to_string().contains(root), "{full}");
    assert!(
        !health.json().to_string().contains(root),
        "{}",
        health.json()
    );
    assert!(acked.len() > 20);
    for id in acked.iter().step_by(7) {
        assert_eq!(
            server
                .get(&format!("/api/v2/interactions/{id}"))
                .await
                .status,
            200
        );
    }

    // Space returns: readiness comes back by itself, with no write to prove it (a load balancer
    // that drains on /readyz sends none), and ingest resumes without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ready = server.client().await.get("/readyz", None).await.unwrap();
        if ready.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz stayed {} after space returned",
            ready.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let response = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "after-space", "m", 2.0),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.json());
    assert_eq!(
        server
            .client()
            .await
            .get("/api/v2/health", None)
            .await
            .unwrap()
            .status,
        200
    );
    server.kill();

    // And the next start works, with everything acknowledged.
    let server = Server::start(&data);
    let mut client = server.client().await;
    for id in acked.iter().chain(["after-space".to_owned()].iter()) {
        let response = client
            .get(&format!("/api/v2/interactions/{id}"), Some(&server.key))
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{id} lost");
    }
    server.kill();
}

fn fs_free_bytes(path: &std::path::Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_data_directory_and_every_file_in_it_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let r = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "p", "m", 1.0),
        )
        .await;
    assert_eq!(r.status, 200);
    // A revocation file, too.
    let r = server
        .post(
            "/api/v2/keys/revoke",
            serde_json::json!({"key_id": "0123456789abcdef", "force": true}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200);
    let mut seen = 0;
    let mut paths = vec![data.clone()];
    while let Some(path) = paths.pop() {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
            paths.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
        seen += 1;
    }
    // data/, segments/, a segment, the lock, admin.key, master.secret, revoked.keys.
    assert!(seen >= 7, "only {seen} paths");
    // The offline tool says its version.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("mcplog-seg "));
}

#[tokio::test]
async fn a_retention_below_the_floor_is_refused_unless_overridden() {
    let dir = tempfile::tempdir().unwrap();
    for (env, refused) in [
        (vec![("MCPLOG_RETENTION", "0s")], true),
        (vec![("MCPLOG_RETENTION", "30")], true),
        (vec![("MCPLOG_RETENTION", "59m")], true),
        (
            vec![
                ("MCPLOG_RETENTION", "0s"),
                ("MCPLOG_RETENTION_OVERRIDE", "maybe"),
            ],
            true,
        ),
        (vec![("MCPLOG_MAX_RECORDS", "0")], true),
        (vec![("MCPLOG_MAX_BYTES", "0")], true),
        (vec![("MCPLOG_RETENTION", "2h")], false),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog"));
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("d"))
            .stderr(std::process::Stdio::piped());
        for (name, value) in &env {
            command.env(name, value);
        }
        if refused {
            let output = command.output().unwrap();
            assert_eq!(output.status.code(), Some(2), "{env:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            // Named as the variable, or as the file's key.
            let named = env.iter().any(|(var, _)| {
                stderr.contains(var)
                    || stderr.contains(&var.trim_start_matches("MCPLOG_").to_ascii_lowercase())
            });
            assert!(named, "{env:?}: {stderr}");
        } else {
            let server = Server::start_with(&dir.path().join("d"), &env);
            assert_eq!(server.get("/api/v2/interactions/stats").await.status, 200);
        }
    }
    // The file's key, with the override, starts.
    let config = dir.path().join("short.toml");
    std::fs::write(
        &config,
        "[storage]\nretention = \"10m\"\nretention_override = true\n",
    )
    .unwrap();
    let server = Server::start_with_args(
        &dir.path().join("d"),
        &[],
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(server.get("/api/v2/interactions/stats").await.status, 200);
}

#[test]
fn serve_help_and_the_readme_list_every_setting() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for setting in mcplog::config::SETTINGS {
        assert!(
            help.contains(setting.env),
            "serve --help lacks {}",
            setting.env
        );
        assert!(
            readme.contains(setting.env),
            "README.md lacks {}",
            setting.env
        );
        assert!(
            readme.contains(&format!("`{}`", setting.name)),
            "README.md does not name the key {}",
            setting.key()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_caps_far_below_the_log_keep_the_active_segment_while_writing_and_reading() {
    for cap in [("MCPLOG_MAX_RECORDS", "60"), ("MCPLOG_MAX_BYTES", "20000")] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_with(
            dir.path(),
            &[
                ("MCPLOG_SEGMENT_MAX_BYTES", "4096"),
                ("MCPLOG_CLEANUP_INTERVAL", "200ms"),
                cap,
            ],
        );
        let mut last = 0;
        for round in 0..30 {
            let batch: Vec<String> = (0..10)
                .map(|i| event("interaction_start", &format!("r{round}-{i}"), "m", 1.0e9))
                .collect();
            let r = server
                .post(
                    "/api/v2/interactions/batch",
                    format!("[{}]", batch.join(",")),
                )
                .await;
            assert_eq!(r.status, 200, "{cap:?}");
            last = r.json()["seqs"][9].as_u64().unwrap();
            // Reads go on meanwhile: the newest events are always there.
            let newest = server
                .get(&format!("/api/v2/interactions/r{round}-9"))
                .await;
            assert_eq!(newest.status, 200, "{cap:?}: the newest event was deleted");
            let replay = server
                .get(&format!("/api/v2/events?after_seq={}", last - 1))
                .await;
            assert!(String::from_utf8_lossy(&replay.body).contains(&format!("\"seq\":{last}")));
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        // Let retention run past the last writes.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        let stats = server.get("/api/v2/interactions/stats").await.json();
        let storage = &stats["storage"];
        assert_eq!(storage["last_seq"], last, "{cap:?}: {stats}");
        let first = storage["first_seq"].as_u64().unwrap();
        assert!(first > 1, "{cap:?}: nothing was deleted: {stats}");
        // Within the cap, give or take the active segment, which is never selected.
        let kept = last - first + 1;
        match cap.0 {
            "MCPLOG_MAX_RECORDS" => assert!(kept <= 60 + 40, "{cap:?}: kept {kept}"),
            _ => assert!(
                storage["bytes"].as_u64().unwrap() <= 20_000 + 4096 + 200,
                "{cap:?}: {storage}"
            ),
        }
        assert_eq!(stats["records"]["total"].as_u64().unwrap(), kept);
        server.kill();
        let verify = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
            .arg("verify")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
    }
}

/// `mcplog-load compare`, as BENCHMARKS.md runs it: every contestant (the server, the parse-only
/// handler, a second binary under a second configuration) gets its rounds, a median and a ratio.
#[test]
fn the_load_tool_compares_a_second_binary_and_configuration_in_the_same_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let versus_config = dir.path().join("versus.toml");
    std::fs::write(&versus_config, "[redaction]\nenabled = false\n").unwrap();
    // One short round of each contestant, the second binary as given.
    let compare = |versus_bin: &std::path::Path, extra: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mcplog-load"))
            .args([
                "compare",
                "--rounds",
                "1",
                "--seconds",
                "1",
                "--clients",
                "2",
            ])
            .arg("--server-bin")
            .arg(env!("CARGO_BIN_EXE_mcplog"))
            .arg("--versus-bin")
            .arg(versus_bin)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = compare(
        std::path::Path::new(env!("CARGO_BIN_EXE_mcplog")),
        &["--versus-config".as_ref(), versus_config.as_os_str()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for contestant in ["mcplog", "parse-only", "versus"] {
        let median = stdout
            .lines()
            .find(|line| line.starts_with(&format!("median {contestant} ")))
            .unwrap_or_else(|| panic!("no median for {contestant}: {stdout}"));
        assert!(median.contains(" 0 errors"), "{median}");
    }
    assert!(stdout.contains("ratio mcplog / versus: "), "{stdout}");
    assert!(stdout.contains("ratio mcplog / parse-only: "), "{stdout}");
    // The second binary is the one named: a missing one stops the comparison before any round.
    let missing = dir.path().join("no-such-mcplog");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog-load"))
        .args([
            "compare",
            "--rounds",
            "1",
            "--seconds",
            "1",
            "--clients",
            "2",
        ])
        .arg("--server-bin")
        .arg(env!("CARGO_BIN_EXE_mcplog"))
        .arg("--versus-bin")
        .arg(&missing)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let scratch = format!("mcplog-load-{}/", child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("starting mcplog serve"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("round 1"));
    // The contestants it had started stop with it (they were once left running, holding what
    // their parent held).
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&scratch))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}
