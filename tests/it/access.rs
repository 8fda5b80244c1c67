//! API keys and access control through the real server: roles, signed keys from `mcplog keygen`,
//! static keys from the config file, tampering, expiry, revocation, and no raw key on disk or in
//! the server's log.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::common::{error_of, event, Server};

/// Runs `mcplog keygen` and returns the key it printed.
fn keygen(data_dir: &Path, mcp_id: &str, role: &str, expires_in: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcplog"));
    command
        .args(["keygen", "--data-dir"])
        .arg(data_dir)
        .args(["--mcp-id", mcp_id, "--role", role]);
    if let Some(lifetime) = expires_in {
        command.args(["--expires-in", lifetime]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "keygen prints the key alone: {stdout:?}"
    );
    let key = stdout.trim().to_owned();
    // Its key_id and expiry go to stderr, so `KEY=$(mcplog keygen ...)` takes the key alone.
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("key_id {}", hex_key_id(&key))),
        "{stderr}"
    );
    key
}

/// Runs `mcplog keygen` with these arguments.
fn keygen_raw(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcplog"));
    command
        .arg("keygen")
        .args(args)
        .env_remove("MCPLOG_MASTER_SECRET");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

const STATIC_CONFIG: &str = r#"
[static_api_keys]
"static-writer-key-no-expiry" = { mcp_id = "m1", role = "writer" }
"static-disabled-key" = { mcp_id = "m1", role = "writer", disabled = true }
"static-expired-key" = { role = "auditor", expires_at = "2020-01-01T00:00:00Z" }
"#;

#[tokio::test]
async fn each_role_is_allowed_and_refused_where_it_should_be() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcplog.toml");
    std::fs::write(&config, STATIC_CONFIG).unwrap();
    let data = dir.path().join("data");
    // keygen uses the master secret the server made on its first start.
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    let w1 = keygen(&data, "m1", "writer", Some("1h"));
    let w2 = keygen(&data, "m2", "writer", None);
    let auditor = keygen(&data, "any", "auditor", Some("1d"));
    let admin = server.key.clone();

    // Writing.
    assert_eq!(
        server
            .post_as(
                &w1,
                "/api/v2/interactions",
                event("interaction_start", "a-1", "m1", 1.0)
            )
            .await
            .status,
        200
    );
    let other = server
        .post_as(
            &w1,
            "/api/v2/interactions",
            event("interaction_start", "b-1", "m2", 1.0),
        )
        .await;
    assert_eq!(other.status, 403);
    assert_eq!(error_of(&other)["field"], "mcp_id");
    let mixed = format!(
        "[{},{}]",
        event("interaction_start", "a-2", "m1", 1.0),
        event("interaction_start", "b-2", "m2", 1.0)
    );
    let refused = server
        .post_as(&w1, "/api/v2/interactions/batch", mixed)
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(error_of(&refused)["errors"][0]["index"], 1);
    assert_eq!(
        server.get("/api/v2/interactions/a-2").await.status,
        404,
        "nothing of a refused batch is stored"
    );
    assert_eq!(
        server
            .post_as(
                &w2,
                "/api/v2/interactions",
                event("interaction_start", "b-1", "m2", 1.0)
            )
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .post_as(
                &auditor,
                "/api/v2/interactions",
                event("interaction_start", "c-1", "m1", 1.0)
            )
            .await
            .status,
        403
    );
    assert_eq!(
        server
            .post_as(
                &admin,
                "/api/v2/interactions",
                event("interaction_start", "c-1", "m3", 1.0)
            )
            .await
            .status,
        200
    );
    let static_writer = "static-writer-key-no-expiry";
    assert_eq!(
        server
            .post_as(
                static_writer,
                "/api/v2/interactions",
                event("interaction_progress", "a-1", "m1", 2.0)
            )
            .await
            .status,
        200
    );

    // Reading: a writer sees its own mcp_id only, and others' records look unknown.
    assert_eq!(
        server.get_as(&w1, "/api/v2/interactions/a-1").await.status,
        200
    );
    assert_eq!(
        server.get_as(&w1, "/api/v2/interactions/b-1").await.status,
        404
    );
    assert_eq!(
        server
            .get_as(&w1, "/api/v2/interactions/b-1/events")
            .await
            .status,
        404
    );
    let hidden = error_of(&server.get_as(&w1, "/api/v2/interactions/b-1").await);
    let unknown = error_of(&server.get_as(&w1, "/api/v2/interactions/zzz").await);
    assert_eq!(
        (&hidden["code"], &hidden["field"]),
        (&unknown["code"], &unknown["field"]),
        "another mcp_id's record looks unknown"
    );
    let history = server.get_as(&w1, "/api/v2/interactions").await.json();
    let ids: Vec<&str> = history["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["interaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a-1"]);
    assert!(server
        .get_as(&w1, "/api/v2/interactions?mcp_id=m2")
        .await
        .json()["interactions"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        server
            .get_as(&w1, "/api/v2/interactions/stats")
            .await
            .json()["records"]["total"],
        1
    );
    assert_eq!(
        server
            .get_as(&auditor, "/api/v2/interactions/stats")
            .await
            .json()["records"]["total"],
        3
    );
    let metrics = server
        .get_as(&w1, "/api/v2/performance/metrics?mcp_id=m2")
        .await
        .json();
    assert_eq!(metrics["total_interactions"], 0);
    // Replay: a writer gets its own mcp_id's events only; an auditor gets all.
    let replay_ids = |body: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(body)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["mcp_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let own = replay_ids(&server.get_as(&w1, "/api/v2/events").await.body);
    assert!(!own.is_empty() && own.iter().all(|m| m == "m1"), "{own:?}");
    assert!(replay_ids(&server.get_as(&w1, "/api/v2/events?mcp_id=m2").await.body).is_empty());
    let all = replay_ids(&server.get_as(&auditor, "/api/v2/events").await.body);
    assert!(
        all.contains(&"m2".to_owned()) && all.contains(&"m3".to_owned()),
        "{all:?}"
    );
    for path in [
        "/api/v2/interactions/b-1",
        "/api/v2/interactions/a-1/events",
        "/api/v2/interactions?mcp_id=m2",
    ] {
        assert_eq!(
            server.get_as(&auditor, path).await.status,
            200,
            "auditor reads {path}"
        );
    }

    // Static keys: no expiry accepted (above); disabled and expired refused.
    for key in ["static-disabled-key", "static-expired-key"] {
        let response = server.get_as(key, "/api/v2/interactions/stats").await;
        assert_eq!(response.status, 401, "{key}");
        assert!(!error_of(&response)["message"]
            .as_str()
            .unwrap()
            .contains(key));
    }

    // Revocation is for admins only.
    for key in [&w1, &auditor] {
        let response = server
            .post_as(key, "/api/v2/keys/revoke", json!({"key": w2}).to_string())
            .await;
        assert_eq!(response.status, 403);
    }
}

#[tokio::test]
async fn every_tampered_character_and_an_expired_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let key = keygen(dir.path(), "m1", "writer", Some("1h"));
    let short = keygen(dir.path(), "m1", "writer", Some("1s"));
    assert_eq!(
        server
            .get_as(&key, "/api/v2/interactions/stats")
            .await
            .status,
        200
    );
    let mut client = server.client().await;
    let bytes = key.as_bytes();
    for at in 0..bytes.len() {
        let mut tampered = bytes.to_vec();
        tampered[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
        let tampered = String::from_utf8(tampered).unwrap();
        let response = client
            .get("/api/v2/interactions/stats", Some(&tampered))
            .await
            .unwrap();
        assert_eq!(
            response.status, 401,
            "accepted with character {at} changed: {tampered}"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let expired = server.get_as(&short, "/api/v2/interactions/stats").await;
    assert_eq!(expired.status, 401);
    assert!(error_of(&expired)["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    // A lifetime above key_lifetime_max is refused by keygen.
    let output = Command::new(env!("CARGO_BIN_EXE_mcplog"))
        .args(["keygen", "--data-dir"])
        .arg(dir.path())
        .args(["--mcp-id", "m1", "--expires-in", "31d"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[tokio::test]
async fn revocation_is_immediate_survives_restart_and_no_raw_key_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcplog.toml");
    std::fs::write(&config, STATIC_CONFIG).unwrap();
    let data = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap()];
    let server = Server::start_with_args(&data, &[], &args);
    let by_key = keygen(&data, "m1", "writer", None);
    let by_id = keygen(&data, "m1", "writer", None);
    let kept = keygen(&data, "m1", "writer", None);
    for key in [&by_key, &by_id, &kept] {
        // Also puts each key in the validation cache.
        assert_eq!(
            server
                .post_as(
                    key,
                    "/api/v2/interactions",
                    event(
                        "interaction_start",
                        &format!("r-{}", &key[key.len() - 6..]),
                        "m1",
                        1.0
                    )
                )
                .await
                .status,
            200
        );
    }
    let revoked = server
        .post("/api/v2/keys/revoke", json!({"key": by_key}).to_string())
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.json());
    let id = hex_key_id(&by_id);
    let revoked = server
        .post("/api/v2/keys/revoke", json!({"key_id": id}).to_string())
        .await;
    assert_eq!(revoked.json()["key_id"], id);
    for key in [&by_key, &by_id] {
        let response = server.get_as(key, "/api/v2/interactions/stats").await;
        assert_eq!(response.status, 401, "a revoked key still works (cache)");
        assert!(error_of(&response)["message"]
            .as_str()
            .unwrap()
            .contains("revoked"));
    }
    assert_eq!(
        server
            .get_as(&kept, "/api/v2/interactions/stats")
            .await
            .status,
        200
    );
    let bad = server
        .post("/api/v2/keys/revoke", json!({"key_id": "xyz"}).to_string())
        .await;
    assert_eq!(
        (bad.status.as_u16(), error_of(&bad)["field"].as_str()),
        (422, Some("key_id"))
    );
    let first_log = server.log();
    server.kill();

    let server = Server::start_with_args(&data, &[], &args);
    for key in [&by_key, &by_id] {
        assert_eq!(
            server
                .get_as(key, "/api/v2/interactions/stats")
                .await
                .status,
            401,
            "revocation forgotten on restart"
        );
    }
    assert_eq!(
        server
            .get_as(&kept, "/api/v2/interactions/stats")
            .await
            .status,
        200
    );
    let log = first_log + &server.log();
    let admin = server.key.clone();
    server.kill();

    // No raw key anywhere in the data directory (admin.key is the admin key's own file) or in the
    // server's log output.
    let raw_keys = [
        by_key.as_str(),
        by_id.as_str(),
        kept.as_str(),
        admin.as_str(),
        "static-writer-key-no-expiry",
        "static-disabled-key",
    ];
    let mut files = vec![data.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.file_name().unwrap() == "admin.key" {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for key in raw_keys {
            assert!(
                !contains(&bytes, key.as_bytes()),
                "{} holds a raw key",
                path.display()
            );
        }
    }
    for key in raw_keys {
        assert!(!log.contains(key), "the server's log shows a raw key");
    }
}

fn hex_key_id(key: &str) -> String {
    mcplog::auth::hex(&mcplog::auth::key_id(key))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn keygen_finds_the_servers_secret_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    // No server has run and no secret is configured: a clear refusal, and no secret made.
    let output = keygen_raw(&["--data-dir", data_arg, "--mcp-id", "m1"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no master secret"), "{stderr}");
    assert!(stderr.contains("MCPLOG_MASTER_SECRET"), "{stderr}");
    assert!(!data.join("master.secret").exists());

    // The server's secret from the environment: keygen given the same variable signs keys the
    // server accepts, and neither drops a master.secret into the data directory.
    let secret = ("MCPLOG_MASTER_SECRET", "an-environment-secret-of-32-bytes");
    let server = Server::start_with(&data, &[secret]);
    let output = keygen_raw(
        &["--data-dir", data_arg, "--role", "auditor", "--json"],
        &[secret],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = printed["key"].as_str().unwrap();
    assert_eq!(printed["key_id"], hex_key_id(key));
    assert_eq!(printed["role"], "auditor");
    assert!(
        printed["mcp_id"].is_null(),
        "an auditor key needs no --mcp-id"
    );
    assert!(printed["expires_at"].as_u64().unwrap() > 1_700_000_000);
    assert!(!data.join("master.secret").exists());
    let stats = server.get_as(key, "/api/v2/interactions/stats").await;
    assert_eq!(stats.status, 200, "{}", stats.json());
    // An auditor reads everything and writes nothing.
    let write = server
        .post_as(
            key,
            "/api/v2/interactions",
            event("interaction_start", "a", "m1", 1.0),
        )
        .await;
    assert_eq!(write.status, 403);
    // Without the variable, keygen has no secret to find and says so.
    let output = keygen_raw(&["--data-dir", data_arg, "--mcp-id", "m1"], &[]);
    assert_eq!(output.status.code(), Some(2));
    // A writer key still needs an mcp_id, one an event could carry.
    let output = keygen_raw(&["--data-dir", data_arg], &[secret]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--mcp-id"));
    // Nor the mcp_id of the server's revocation records, which no event of a client carries.
    let output = keygen_raw(
        &["--data-dir", data_arg, "--mcp-id", "mcplog.keys"],
        &[secret],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("reserved"));
    for bad in ["   ", "a\u{200B}b", "m "] {
        let output = keygen_raw(&["--data-dir", data_arg, "--mcp-id", bad], &[secret]);
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("--mcp-id"));
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_keys_are_trimmed_alike() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let header = format!("{scheme} {}", server.key);
        let response = client
            .send(
                hyper::Method::GET,
                "/api/v2/interactions/stats",
                None,
                &[("authorization", &header)],
                "",
            )
            .await
            .unwrap();
        assert_eq!(response.status, 200, "scheme {scheme}");
    }
    let header = format!("Basic {}", server.key);
    let response = client
        .send(
            hyper::Method::GET,
            "/api/v2/interactions/stats",
            None,
            &[("authorization", &header)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(response.status, 401);
}

#[tokio::test]
async fn revocation_normalizes_keys_refuses_unknown_ones_and_keeps_the_last_admin() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let writer = keygen(dir.path(), "m1", "writer", None);
    assert_eq!(
        server
            .get_as(&writer, "/api/v2/interactions/stats")
            .await
            .status,
        200
    );
    // The key as read from a file, trailing newline and all, is the key.
    let key_file = dir.path().join("writer.key");
    std::fs::write(&key_file, format!("{writer}\n")).unwrap();
    let from_file = std::fs::read_to_string(&key_file).unwrap();
    let revoked = server
        .post("/api/v2/keys/revoke", json!({"key": from_file}).to_string())
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.json());
    assert_eq!(revoked.json()["status"], "revoked");
    assert_eq!(revoked.json()["key_id"], hex_key_id(&writer));
    assert_eq!(
        server
            .get_as(&writer, "/api/v2/interactions/stats")
            .await
            .status,
        401,
        "the key keeps working after its revocation answered revoked"
    );
    let again = server
        .post("/api/v2/keys/revoke", json!({"key": writer}).to_string())
        .await;
    assert_eq!(again.json()["status"], "already_revoked");

    // An id this server never issued or met: said so, nothing stored, unless forced.
    let unknown = server
        .post(
            "/api/v2/keys/revoke",
            json!({"key_id": "0123456789abcdef"}).to_string(),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(error_of(&unknown)["code"], "unknown_key");
    let revoked_file = std::fs::read_to_string(dir.path().join("revoked.keys")).unwrap();
    assert!(!revoked_file.contains("0123456789abcdef"));
    let forced = server
        .post(
            "/api/v2/keys/revoke",
            json!({"key_id": "0123456789abcdef", "force": true}).to_string(),
        )
        .await;
    assert_eq!(forced.status, 200);
    // A key this server would never accept: 404, and the message does not echo it.
    let typo = "mcplog1.writer.9999999999.6d31.0011223344556677.00112233445566778899aabbccddeeff";
    let unknown = server
        .post("/api/v2/keys/revoke", json!({"key": typo}).to_string())
        .await;
    assert_eq!(unknown.status, 404);
    assert!(!unknown.json().to_string().contains(typo));
    // A signed key minted but never used is revoked by the key itself.
    let unused = keygen(dir.path(), "m1", "writer", None);
    let by_key = server
        .post("/api/v2/keys/revoke", json!({"key": unused}).to_string())
        .await;
    assert_eq!(by_key.status, 200);
    assert_eq!(
        server
            .get_as(&unused, "/api/v2/interactions/stats")
            .await
            .status,
        401
    );

    // The only admin key cannot be revoked, by key or by id.
    for body in [
        json!({"key": server.key}),
        json!({"key_id": hex_key_id(&server.key)}),
    ] {
        let refused = server.post("/api/v2/keys/revoke", body.to_string()).await;
        assert_eq!(refused.status, 409, "{}", refused.json());
        assert_eq!(error_of(&refused)["code"], "last_admin_key");
    }
    assert_eq!(server.get("/api/v2/interactions/stats").await.status, 200);

    // Malformed requests never echo a raw key, whatever its shape.
    for body in [
        format!("\"{}\"", server.key),
        format!("[\"{}\"]", server.key),
        format!("{{\"key\": \"{}\"", server.key),
        format!("{{\"key\": [\"{}\"]}}", server.key),
        format!("{{\"{}\": 1}}", server.key),
    ] {
        let response = server.post("/api/v2/keys/revoke", body.clone()).await;
        assert!(response.status.is_client_error(), "{body}");
        assert!(
            !String::from_utf8_lossy(&response.body).contains(&server.key),
            "{body} -> {}",
            String::from_utf8_lossy(&response.body)
        );
    }
}

#[tokio::test]
async fn no_error_answer_echoes_a_raw_key_wherever_it_was_put() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcplog.toml");
    std::fs::write(&config, STATIC_CONFIG).unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    let writer = keygen(&data, "m1", "writer", None);
    let static_key = "static-writer-key-no-expiry";
    let mut client = server.client().await;
    for key in [writer.as_str(), server.key.as_str(), static_key] {
        let encoded: String = key
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let gets = [
            format!("/api/v2/interactions?status={encoded}"),
            format!("/api/v2/interactions?since={encoded}"),
            format!("/api/v2/interactions?limit={encoded}"),
            format!("/api/v2/interactions?{encoded}=1"),
            format!("/api/v2/interactions/{encoded}"),
            format!("/api/v2/interactions/{encoded}/events"),
            format!("/api/v2/performance/metrics?time_range={encoded}"),
            format!("/api/v2/events?after_seq={encoded}"),
            format!("/livez?{encoded}=1"),
            format!("/{encoded}"),
        ];
        for path in &gets {
            let response = client
                .get(path, Some(&server.key))
                .await
                .unwrap_or_else(|err| panic!("{path}: {err}"));
            assert!(response.status.as_u16() >= 400, "{path}");
            let body = String::from_utf8_lossy(&response.body);
            assert!(!body.contains(key), "{path} echoed a key: {body}");
        }
        let bodies = [
            format!("\"{key}\""),
            format!("[\"{key}\"]"),
            json!({"action": key, "interaction_id": "a", "mcp_id": "m1", "timestamp": 1.0}).to_string(),
            format!("{{\"{key}\": 1, \"action\": \"interaction_start\"}}"),
            json!({"action": "interaction_start", "interaction_id": "a", "mcp_id": key, "timestamp": 1.0}).to_string(),
        ];
        for body in &bodies {
            for path in ["/api/v2/interactions", "/api/v2/interactions/batch"] {
                // As the writer: a foreign mcp_id is refused naming both ids.
                let response = client
                    .post(path, Some(&writer), body.clone())
                    .await
                    .unwrap();
                assert!(response.status.as_u16() >= 400, "{path} {body}");
                let text = String::from_utf8_lossy(&response.body);
                assert!(!text.contains(key), "{path} {body} echoed a key: {text}");
            }
        }
        let response = client
            .send(
                hyper::Method::POST,
                "/api/v2/interactions",
                Some(&server.key),
                &[("content-encoding", key)],
                "{}",
            )
            .await
            .unwrap();
        assert_eq!(response.status, 415);
        assert!(!String::from_utf8_lossy(&response.body).contains(key));
    }
}

#[tokio::test]
async fn the_last_working_admin_key_cannot_be_revoked_but_a_second_admin_may_retire_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcplog.toml");
    // An expired static admin key does not count as a way back in.
    std::fs::write(
        &config,
        "[static_api_keys]\n\"static-admin-expired-0123456789\" = { role = \"admin\", expires_at = \"2020-01-01T00:00:00Z\" }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_args(&data, &[], &["--config", config.to_str().unwrap()]);
    let refused = server
        .post(
            "/api/v2/keys/revoke",
            json!({"key": server.key}).to_string(),
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.json());
    assert_eq!(error_of(&refused)["code"], "last_admin_key");
    // A second admin key (signed) retires the first, and keeps working.
    let second = keygen(&data, "ops", "admin", None);
    let retired = server
        .post_as(
            &second,
            "/api/v2/keys/revoke",
            json!({"key": server.key}).to_string(),
        )
        .await;
    assert_eq!(retired.status, 200, "{}", retired.json());
    assert_eq!(server.get("/api/v2/interactions/stats").await.status, 401);
    assert_eq!(
        server
            .get_as(&second, "/api/v2/interactions/stats")
            .await
            .status,
        200
    );
    // It cannot revoke itself now: nothing would be left.
    let itself = server
        .post_as(
            &second,
            "/api/v2/keys/revoke",
            json!({"key": second}).to_string(),
        )
        .await;
    assert_eq!(itself.status, 409);
}

#[tokio::test]
async fn partial_mode_refuses_another_mcp_ids_events_one_by_one_and_an_auditor_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let writer = keygen(&data, "m1", "writer", None);
    let auditor = keygen(&data, "any", "auditor", None);
    let batch = format!(
        "[{},{}]",
        event("interaction_start", "mine", "m1", 10.0),
        event("interaction_start", "theirs", "m2", 10.0)
    );
    let path = "/api/v2/interactions/batch?partial=true";
    let response = server.post_as(&writer, path, batch.clone()).await;
    assert_eq!(response.status, 207, "{}", response.json());
    let results = response.json()["results"].clone();
    assert_eq!(results[0]["status"], "stored");
    assert_eq!(results[1]["status"], "error");
    assert_eq!(results[1]["http_status"], 403);
    assert_eq!(results[1]["error"]["field"], "mcp_id");
    assert_eq!(server.get("/api/v2/interactions/mine").await.status, 200);
    assert_eq!(server.get("/api/v2/interactions/theirs").await.status, 404);

    let response = server.post_as(&auditor, path, batch).await;
    assert_eq!(response.status, 403, "{}", response.json());
    assert_eq!(error_of(&response)["code"], "forbidden");
}
