//! Retention on a cluster, against real NATS servers: the stream is trimmed with the nodes'
//! segments, an expired group is no longer readable from NATS, a node the trim left behind
//! refuses or halts naming the way back, and a node bootstrapped from a live peer's backup
//! follows the stream and agrees byte for byte.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use serde_json::Value;

use crate::cluster::{batch, nats_server, settled, single, start_node, verify_head, Nats};
use crate::common::Server;

/// Retention of two seconds (below the floor, so with the override), segments of 4 KiB that roll
/// after a second, and retention run five times a second: old groups expire within the test.
const SHORT: [(&str, &str); 5] = [
    ("MCPLOG_RETENTION", "2s"),
    ("MCPLOG_RETENTION_OVERRIDE", "true"),
    ("MCPLOG_SEGMENT_MAX_BYTES", "4096"),
    ("MCPLOG_SEGMENT_MAX_AGE", "1s"),
    ("MCPLOG_CLEANUP_INTERVAL", "200ms"),
];
/// The same with an hour's retention: nothing more expires while the test checks what is kept.
const LONG: [(&str, &str); 4] = [
    ("MCPLOG_RETENTION", "1h"),
    ("MCPLOG_SEGMENT_MAX_BYTES", "4096"),
    ("MCPLOG_SEGMENT_MAX_AGE", "1s"),
    ("MCPLOG_CLEANUP_INTERVAL", "200ms"),
];

/// What was acknowledged: event_id → (seq, event).
type Acked = HashMap<String, (u64, Value)>;

/// Posts a single event or a batch to `node` and records what it acknowledged.
async fn post(node: &Server, body: String, acked: &mut Acked) {
    let is_batch = body.starts_with('[');
    let path = if is_batch {
        "/api/v2/interactions/batch"
    } else {
        "/api/v2/interactions"
    };
    let answer = node.post(path, body.clone()).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.json());
    let answer = answer.json();
    let events: Vec<Value> = if is_batch {
        serde_json::from_str(&body).unwrap()
    } else {
        vec![serde_json::from_str(&body).unwrap()]
    };
    let seqs: Vec<u64> = if is_batch {
        let seqs = answer["seqs"].as_array().unwrap();
        seqs.iter().map(|s| s.as_u64().unwrap()).collect()
    } else {
        vec![answer["seq"].as_u64().unwrap()]
    };
    for (event, seq) in events.into_iter().zip(seqs) {
        acked.insert(event["event_id"].as_str().unwrap().to_owned(), (seq, event));
    }
}

/// A gauge or counter of `node`'s `/metrics`.
async fn metric(node: &Server, name: &str) -> u64 {
    let metrics = node.get("/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
        .parse()
        .unwrap()
}

/// Waits up to `limit` for `done`, saying `what` if it never is.
async fn wait_until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `mcplog-seg backup <from> <to>`.
fn backup(from: &Path, to: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .arg("backup")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Starts a node on `dir` that must refuse to start; its log.
fn refusal(dir: &Path, urls: &str) -> String {
    let env = [
        ("MCPLOG_NATS_URL", urls),
        ("MCPLOG_NATS_REPLICAS", "3"),
        ("MCPLOG_MASTER_SECRET", crate::cluster::MASTER_SECRET),
    ];
    let (mut child, _, log) = crate::common::spawn(dir, &env);
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{log}");
    log
}

/// Sends `signal` (`STOP`, `CONT`) to a node's process.
fn signal(node: &Server, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(node.child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Every node's replay, byte for byte the same, as lines; every acknowledged event from the first
/// seq held on is there at its seq with what was sent, and no earlier one.
async fn agreeing_replay(nodes: &[&Server], acked: &Acked) -> Vec<Value> {
    let replay = nodes[0].get("/api/v2/events?after_seq=0").await;
    assert_eq!(replay.status.as_u16(), 200);
    for node in &nodes[1..] {
        let other = node.get("/api/v2/events?after_seq=0").await;
        assert_eq!(replay.body, other.body, "the replays differ");
    }
    let events: Vec<Value> = String::from_utf8_lossy(&replay.body)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("event").is_some())
        .collect();
    let first = events[0]["seq"].as_u64().unwrap();
    for (i, line) in events.iter().enumerate() {
        assert_eq!(
            line["seq"].as_u64(),
            Some(first + i as u64),
            "no seq missing"
        );
    }
    for (event_id, (seq, sent)) in acked {
        if *seq >= first {
            let line = &events[(seq - first) as usize];
            assert_eq!(&line["event"], sent, "{event_id} at seq {seq}");
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_the_stream_and_a_node_joins_from_a_peers_backup() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(bin, dir.path(), 3);
    let urls = nats.urls();
    let path = |name: &str| dir.path().join(name);
    let (mut a, mut b) = (
        start_node(&path("a"), &urls, &SHORT),
        start_node(&path("b"), &urls, &SHORT),
    );
    // D follows the first two events, then is frozen while the rest happens.
    let d = start_node(&path("d"), &urls, &SHORT);
    let mut acked = Acked::new();
    post(&a, single(0, 0, "first"), &mut acked).await;
    post(&b, single(0, 1, "first"), &mut acked).await;
    settled(&[&a, &b, &d], 2).await;
    let addr: async_nats::ServerAddr = format!("nats://127.0.0.1:{}", nats.client_ports[0])
        .parse()
        .unwrap();
    let context = async_nats::jetstream::new(async_nats::connect(addr).await.unwrap());
    let mut stream: Stream = context.get_stream("mcplog").await.unwrap();
    assert!(stream.get_raw_message(1).await.is_ok(), "readable before");
    // The second group, which will expire: published again after the trim by anyone who may
    // publish, it must halt no node nor stop a restart.
    let expired = stream.get_raw_message(2).await.unwrap();
    signal(&d, "STOP");
    backup(&path("a"), &path("early"));
    // Its pending pull expires (2 s) before the next groups are published, so none reach it.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Old groups through both nodes: several segments' worth, all to expire.
    for n in 2..32 {
        let node = if n % 2 == 0 { &a } else { &b };
        post(node, batch(0, n), &mut acked).await;
    }
    let old_last = stream.info().await.unwrap().state.last_sequence;
    let old_last_seq = acked.values().map(|(seq, _)| *seq).max().unwrap();

    // Past retention, a new group rolls the idle segment: every old one is sealed and expires,
    // and the nodes trim the stream to the first new group.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for n in 0..6 {
        let node = if n % 2 == 0 { &a } else { &b };
        post(node, single(1, n, "new"), &mut acked).await;
    }
    wait_until(
        Duration::from_secs(15),
        "the stream was not trimmed",
        || {
            let mut stream = stream.clone();
            async move { stream.info().await.unwrap().state.first_sequence > old_last }
        },
    )
    .await;
    let first = stream.info().await.unwrap().state.first_sequence;
    assert_eq!(
        first,
        old_last + 1,
        "trimmed exactly to the first group retention keeps"
    );
    for position in 1..=old_last {
        let got = stream.get_raw_message(position).await;
        let err = got.expect_err("an expired group is still readable from NATS");
        assert_eq!(
            err.kind(),
            RawMessageErrorKind::NoMessageFound,
            "{position}"
        );
    }
    assert!(stream.get_raw_message(old_last + 1).await.is_ok());
    for node in [&a, &b] {
        wait_until(Duration::from_secs(5), "the gauge did not move", || async {
            metric(node, "mcplog_cluster_stream_first_position").await == old_last + 1
        })
        .await;
    }
    let logs = a.log() + &b.log();
    assert!(logs.contains("retention trimmed the stream"), "{logs}");
    crate::cluster::republish(&context, "mcplog.groups", &expired).await;
    for node in [&a, &b] {
        wait_until(Duration::from_secs(5), "a copy was not skipped", || async {
            metric(node, "mcplog_cluster_skipped_messages_total").await == 1
        })
        .await;
        assert_eq!(metric(node, "mcplog_cluster_halted").await, 0);
    }

    // D, thawed, finds the groups it needs gone: it halts naming the way back, having applied
    // nothing more.
    signal(&d, "CONT");
    wait_until(Duration::from_secs(20), "D did not halt", || async {
        d.get("/api/v2/health").await.status.as_u16() == 503
    })
    .await;
    let health = d.get("/api/v2/health").await.json();
    let reason = health["reason"].as_str().unwrap();
    assert!(reason.contains("retention trimmed"), "{reason}");
    assert!(reason.contains("mcplog-seg backup"), "{reason}");
    assert_eq!(metric(&d, "mcplog_cluster_applied_seq").await, 2);
    assert_eq!(metric(&d, "mcplog_cluster_halted").await, 1);
    drop(d);
    // A node whose log ends before the trim, and an empty one, refuse to start, naming it too.
    let log = refusal(&path("early"), &urls);
    assert!(log.contains("after this node's last seq 2"), "{log}");
    assert!(log.contains("mcplog-seg backup"), "{log}");
    let log = refusal(&path("empty"), &urls);
    assert!(log.contains("an empty node cannot catch up"), "{log}");
    assert!(log.contains("mcplog-seg backup"), "{log}");

    // A and B go on with a long retention (resuming in the trimmed stream); C joins from a
    // backup of A, taken live.
    drop(a);
    drop(b);
    a = start_node(&path("a"), &urls, &LONG);
    b = start_node(&path("b"), &urls, &LONG);
    backup(&path("a"), &path("c"));
    let c = start_node(&path("c"), &urls, &LONG);
    assert!(c.log().contains("resume_position="), "{}", c.log());
    for n in 0..12 {
        let node = [&a, &b, &c][n % 3];
        post(node, batch(2, n), &mut acked).await;
    }
    let last = acked.values().map(|(seq, _)| *seq).max().unwrap();
    assert_eq!(settled(&[&a, &b, &c], last).await, last);
    let events = agreeing_replay(&[&a, &b, &c], &acked).await;
    assert_eq!(
        events[0]["seq"].as_u64(),
        Some(old_last_seq + 1),
        "every old event expired, every new one kept"
    );
    let kept = acked
        .values()
        .filter(|(seq, _)| *seq > old_last_seq)
        .count();
    assert_eq!(
        events.len(),
        kept,
        "the events kept are the ones acknowledged"
    );
    drop((a, b, c));
    let head = verify_head(&path("a"));
    assert_eq!(verify_head(&path("b")), head);
    assert_eq!(
        verify_head(&path("c")),
        head,
        "the joined node's chain differs"
    );
}
