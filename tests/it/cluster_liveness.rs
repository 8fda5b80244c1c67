//! Cluster mode when NATS goes silent and when a node is behind: a frozen server (SIGSTOP) is
//! left within seconds, `/readyz` says 503 with the reason while a node cannot write or is still
//! catching up, and 200 once it can; every acknowledged event is on every node afterwards.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{
    nats_server, post_until_answered, settled, single, start_node, verify_head, writer_key, Nats,
};
use crate::common::Server;

/// The longest writes through a node may stall once the NATS server it is connected to freezes:
/// about 3 s to notice (pings each second, dropped after two unanswered), up to 2 s for a
/// reconnect attempt to the frozen server, and a stream leader's election (about 5 s) if the
/// frozen server led the stream, with a generous margin for a loaded machine. Before the client
/// pinged, writes stalled 29-37 s, and for good while the server stayed frozen.
const FROZEN_STALL_MAX: Duration = Duration::from_secs(25);

/// Which of `nats`'s servers the process `pid` is connected to, from its sockets in `/proc`.
fn connected_server(pid: u32, nats: &Nats) -> Option<usize> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Field 1 is the local address, 2 the remote one (hex ip:port), 3 the state (01:
        // established), 9 the socket's inode.
        if fields.get(3) != Some(&"01")
            || !inodes.iter().any(|i| Some(&i.as_str()) == fields.get(9))
        {
            return None;
        }
        let port = u16::from_str_radix(fields[2].split(':').nth(1)?, 16).ok()?;
        nats.client_ports.iter().position(|&p| p == port)
    })
}

/// Sends `signal` (`STOP`, `CONT`) to NATS server `i`.
fn signal(nats: &Nats, i: usize, signal: &str) {
    let pid = nats.children[i].as_ref().expect("the server runs").id();
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// `/readyz`'s status and body.
async fn readyz(node: &Server) -> (u16, String) {
    let answer = node.get("/readyz").await;
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    (answer.status.as_u16(), body)
}

/// Polls `/readyz` until it answers `status`, for at most `within`; returns its body.
async fn readyz_becomes(node: &Server, status: u16, within: Duration, phase: &str) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = readyz(node).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {got} ({body:?}) {phase}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The acknowledged events: (event id, seq, body sent).
type Acked = Vec<(String, u64, String)>;

/// Posts event `n` through `node` alone, retrying 503s until it is acknowledged.
async fn write(node: SocketAddr, key: &str, n: usize, acked: &mut Acked) {
    let nodes = Arc::new(Mutex::new(vec![node, node]));
    let body = single(7, n, "liveness");
    let (status, answer) = post_until_answered(&nodes, 0, key, "/api/v2/interactions", &body).await;
    assert_eq!(status, 200, "{answer}");
    acked.push((format!("c7-e{n}"), answer["seq"].as_u64().unwrap(), body));
}

/// Both nodes hold every acknowledged event at its seq, replay the same bytes, and their logs
/// verify to the same chain head.
async fn every_event_on_both(a: Server, b: Server, acked: &Acked) {
    let last = acked.iter().map(|(_, seq, _)| *seq).max().unwrap();
    let head = settled(&[&a, &b], last).await;
    let replay = a.get("/api/v2/events?after_seq=0").await;
    assert_eq!(replay.status.as_u16(), 200);
    assert_eq!(
        replay.body,
        b.get("/api/v2/events?after_seq=0").await.body,
        "the nodes' replays differ"
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&replay.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, head, "one line per seq");
    for (event_id, seq, body) in acked {
        let line = &lines[*seq as usize - 1];
        assert_eq!(line["event"]["event_id"], event_id.as_str(), "seq {seq}");
        let sent: Value = serde_json::from_str(body).unwrap();
        assert_eq!(line["event"], sent, "seq {seq} holds what was acknowledged");
    }
    let (a_dir, b_dir) = (a.data_dir.clone(), b.data_dir.clone());
    drop(a);
    drop(b);
    assert_eq!(
        verify_head(&a_dir),
        verify_head(&b_dir),
        "the chains differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_left_within_seconds_and_readyz_is_503_while_no_write_can_succeed() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(bin, dir.path(), 3);
    let urls = nats.urls();
    let a = start_node(&dir.path().join("a"), &urls, &[]);
    let b = start_node(&dir.path().join("b"), &urls, &[]);
    let key = writer_key(&a);
    let mut acked = Acked::new();
    for n in 0..5 {
        write(a.addr, &key, n, &mut acked).await;
    }
    assert_eq!(readyz(&a).await, (200, "ready\n".to_owned()));

    // The server node A talks to freezes: A notices, moves to another server and writes again.
    let frozen = connected_server(a.child.id(), &nats).expect("node A is connected to a server");
    signal(&nats, frozen, "STOP");
    let froze = Instant::now();
    write(a.addr, &key, 5, &mut acked).await;
    let stalled = froze.elapsed();
    eprintln!("writes through node A resumed {stalled:?} after its server n{frozen} froze");
    assert!(
        stalled < FROZEN_STALL_MAX,
        "writes stalled {stalled:?} with server n{frozen} frozen"
    );
    let moved = connected_server(a.child.id(), &nats);
    assert!(
        moved.is_some() && moved != Some(frozen),
        "node A is connected to {moved:?}, not away from the frozen n{frozen}"
    );
    readyz_becomes(&a, 200, Duration::from_secs(10), "with one server frozen").await;
    signal(&nats, frozen, "CONT");
    // Thawed, nothing is left stuck: both nodes are ready and take every write at once.
    for node in [&a, &b] {
        readyz_becomes(node, 200, Duration::from_secs(20), "after the thaw").await;
    }
    for n in 6..16 {
        let node = if n % 2 == 0 { &a } else { &b };
        let body = single(7, n, "liveness");
        let answer = node
            .post_as(&key, "/api/v2/interactions", body.clone())
            .await;
        assert_eq!(
            answer.status.as_u16(),
            200,
            "after the thaw: {}",
            answer.json()
        );
        let seq = answer.json()["seq"].as_u64().unwrap();
        acked.push((format!("c7-e{n}"), seq, body));
    }

    // The stream's leader and one more server gone: no write can succeed, and A says so, idle.
    let gone = nats.stream_leader("mcplog").await;
    let also_gone = (gone + 1) % 3;
    nats.kill(gone);
    nats.kill(also_gone);
    let why = readyz_becomes(&a, 503, Duration::from_secs(15), "without a majority").await;
    assert!(why.starts_with("cluster unreachable"), "{why}");
    nats.restart(gone);
    nats.restart(also_gone);
    readyz_becomes(
        &a,
        200,
        Duration::from_secs(60),
        "after the servers came back",
    )
    .await;
    write(a.addr, &key, 100, &mut acked).await;
    every_event_on_both(a, b, &acked).await;
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_behind_a_backlog_is_not_ready_until_it_has_caught_up() {
    const BACKLOG: usize = 1500;
    const LAG: u64 = 10;
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(bin, dir.path(), 3);
    let urls = nats.urls();
    let a = start_node(&dir.path().join("a"), &urls, &[]);
    let b_dir = dir.path().join("b");
    let lag = LAG.to_string();
    let b_env = [("MCPLOG_NATS_READY_LAG_GROUPS", lag.as_str())];
    let b = start_node(&b_dir, &urls, &b_env);
    let key = writer_key(&a);
    let mut acked = Acked::new();
    write(b.addr, &key, 0, &mut acked).await;
    readyz_becomes(&b, 200, Duration::from_secs(10), "at the start").await;
    b.kill();
    // One event per request, one after another: one group each.
    for n in 1..=BACKLOG {
        write(a.addr, &key, n, &mut acked).await;
    }
    let last = acked.last().unwrap().1;
    let b = start_node(&b_dir, &urls, &b_env);
    let (first, why) = readyz(&b).await;
    assert_eq!(first, 503, "ready at once, {BACKLOG} groups behind: {why}");
    assert!(why.starts_with("catching up"), "{why}");
    let started = Instant::now();
    let mut seen = vec![why];
    let caught_up = loop {
        let (status, body) = readyz(&b).await;
        if status == 200 {
            break applied_seq(&b).await;
        }
        assert!(body.starts_with("catching up"), "{body}");
        if seen.len() < 3 {
            seen.push(body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never ready: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("node B was ready after {:?}: {seen:?}", started.elapsed());
    // One event per group: ready means within LAG groups of the stream's end.
    assert!(
        caught_up + LAG >= last,
        "ready at seq {caught_up}, {LAG} groups allowed, the stream ends at seq {last}"
    );
    every_event_on_both(a, b, &acked).await;
    drop(nats);
}

/// The last seq a node applied, from `/metrics`.
async fn applied_seq(node: &Server) -> u64 {
    let metrics = node.get("/metrics").await;
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|l| l.strip_prefix("mcplog_cluster_applied_seq "))
        .map(|v| v.parse().unwrap())
        .expect("the applied seq in /metrics")
}
