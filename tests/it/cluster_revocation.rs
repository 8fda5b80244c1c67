//! Revocation in cluster mode, against real NATS servers: a revocation is a record in the shared
//! log, so a key revoked through one node is refused by every node, ends its streams on every
//! node, and is refused by a node that joins later with an empty data directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{nats_server, settled, start_node, verify_head, Nats};
use crate::common::{event, Server};

/// How soon after node A's answer node B must refuse the revoked key (the promise).
const REFUSED_WITHIN: Duration = Duration::from_secs(1);

/// A writer key for mcp_id `m`, signed with the master secret every test node shares, valid for
/// an hour.
fn signed_writer_key() -> String {
    let expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    mcplog::auth::mint(
        b"cluster-test-master-secret-0123456789",
        mcplog::auth::Role::Writer,
        "m",
        expires_at,
    )
    .unwrap()
}

/// Whether `node` refuses `key` both for reading and for writing (nothing is stored).
async fn refuses(node: &Server, key: &str) -> bool {
    let written = node
        .post_as(
            key,
            "/api/v2/interactions",
            event("interaction_progress", "late", "m", 1_765_000_000.0),
        )
        .await;
    stats_status(node, key).await == 401 && written.status.as_u16() == 401
}

/// A follow stream read to its end on its own thread (the request asks the server to close the
/// connection after it): everything it sent so far.
fn follow(addr: SocketAddr, key: &str) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    // A backstop only: a stream that does not end fails the test, it does not hang it.
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "GET /api/v2/events?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (seen, reader)
}

fn text(seen: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&seen.lock().unwrap()).into_owned()
}

/// The node's whole log as its replay gives it to the node's admin: seq → line.
async fn replay(node: &Server) -> Vec<Value> {
    let response = node.get("/api/v2/events").await;
    assert_eq!(response.status.as_u16(), 200);
    String::from_utf8_lossy(&response.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn stats_status(node: &Server, key: &str) -> u16 {
    node.get_as(key, "/api/v2/interactions/stats")
        .await
        .status
        .as_u16()
}

/// A signed writer key revoked through node A: node B refuses it within a second of A's answer,
/// its follow stream on B ends with `key_revoked`, a node C started afterwards on an empty data
/// directory refuses it too (it learns the revocation from the stream), and every acknowledged
/// event is on every node, whose logs agree to the chain head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_node_is_refused_by_every_node_and_a_later_one() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(bin, dir.path(), 3);
    let a = start_node(&dir.path().join("a"), &nats.urls(), &[]);
    let b = start_node(&dir.path().join("b"), &nats.urls(), &[]);
    let writer = signed_writer_key();

    // Acknowledged events, through both nodes.
    let mut acked: Vec<(u64, String)> = Vec::new();
    for (n, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let body = event(
            "interaction_progress",
            &format!("i{n}"),
            "m",
            1_765_000_000.0,
        );
        let answer = node
            .post_as(&writer, "/api/v2/interactions", body.clone())
            .await;
        assert_eq!(answer.status.as_u16(), 200, "{}", answer.json());
        acked.push((answer.json()["seq"].as_u64().unwrap(), body));
    }
    let last_acked = acked.iter().map(|(seq, _)| *seq).max().unwrap();
    settled(&[&a, &b], last_acked).await;
    let (stream, reader) = follow(b.addr, &writer);
    let opened = Instant::now();
    while !text(&stream).contains(&format!("\"seq\":{last_acked}")) {
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "{}",
            text(&stream)
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let revoked = a
        .post("/api/v2/keys/revoke", json!({ "key": writer }).to_string())
        .await;
    let answered = Instant::now();
    assert_eq!(revoked.status.as_u16(), 200, "{}", revoked.json());
    assert_eq!(
        stats_status(&a, &writer).await,
        401,
        "refused by A once answered"
    );
    while stats_status(&b, &writer).await != 401 {
        assert!(
            answered.elapsed() < REFUSED_WITHIN,
            "node B still accepts the key revoked through A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refuses(&b, &writer).await);
    reader.join().unwrap();
    let streamed = text(&stream);
    let last = streamed
        .lines()
        .rev()
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    assert_eq!(last["error"]["code"], "key_revoked", "{streamed}");

    // A node that joins later, with nothing but the stream.
    let c = start_node(&dir.path().join("c"), &nats.urls(), &[]);
    let head = settled(&[&a, &b, &c], last_acked + 1).await;
    assert!(refuses(&c, &writer).await, "node C accepts the key");

    let revoked_id = revoked.json()["key_id"].as_str().unwrap().to_owned();
    let logs = [replay(&a).await, replay(&b).await, replay(&c).await];
    for log in &logs {
        assert_eq!(log.len() as u64, head, "every node holds every seq");
        for (seq, body) in &acked {
            let line = &log[*seq as usize - 1];
            let sent: Value = serde_json::from_str(body).unwrap();
            assert_eq!(line["event"], sent, "seq {seq}");
        }
        let record = &log[head as usize - 1];
        assert_eq!(record["event"]["revocation"]["key_id"], revoked_id.as_str());
    }
    let heads: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| verify_head(&dir.path().join(n)))
        .collect();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
}
