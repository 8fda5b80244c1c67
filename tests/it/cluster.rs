//! Cluster mode against real NATS servers: three `nats-server` processes in one JetStream
//! cluster on free loopback ports, and mcplog nodes following the stream. Without `nats-server`
//! the tests say they skipped; under CI that is a failure (`.ci/run` installs it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcplog::client::Client;
use serde_json::{json, Value};

use crate::common::Server;

/// The `nats-server` binary, or `None` (and a skip note) outside CI.
pub(crate) fn nats_server() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install nats-server (see .ci/run)"
        );
        eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
    }
    found
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A JetStream cluster of `nats-server` processes on loopback.
pub(crate) struct Nats {
    pub(crate) bin: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) client_ports: Vec<u16>,
    pub(crate) children: Vec<Option<Child>>,
}

impl Nats {
    pub(crate) fn start(bin: PathBuf, dir: &Path, servers: usize) -> Nats {
        let client_ports: Vec<u16> = (0..servers).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..servers).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        for i in 0..servers {
            // One server alone runs JetStream unclustered: a cluster of one waits for peers.
            let cluster = if servers > 1 {
                format!(
                    "cluster {{ name: mcplog-test, listen: 127.0.0.1:{}, routes: [{routes}] }}\n",
                    route_ports[i]
                )
            } else {
                String::new()
            };
            let config = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\nmax_payload: 8388608\n\
                 jetstream {{ store_dir: \"{}\" }}\n{cluster}",
                client_ports[i],
                dir.join(format!("n{i}")).display(),
            );
            std::fs::write(dir.join(format!("n{i}.conf")), config).unwrap();
        }
        let mut nats = Nats {
            bin,
            dir: dir.to_path_buf(),
            client_ports,
            children: (0..servers).map(|_| None).collect(),
        };
        for i in 0..servers {
            nats.restart(i);
        }
        nats
    }

    pub(crate) fn restart(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.join(format!("n{i}.log"))).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.join(format!("n{i}.conf")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning nats-server");
        self.children[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.client_ports[i])).is_err() {
            assert!(Instant::now() < deadline, "nats-server n{i} did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub(crate) fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the server leading the stream, by its `server_name`.
    pub(crate) async fn stream_leader(&self, stream: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(leader) = self.try_leader(stream).await {
                return leader;
            }
            assert!(Instant::now() < deadline, "the stream has no leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn try_leader(&self, stream: &str) -> Option<usize> {
        let addrs: Vec<async_nats::ServerAddr> = self
            .client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}").parse().unwrap())
            .collect();
        let client = async_nats::connect(addrs).await.ok()?;
        let context = async_nats::jetstream::new(client);
        let mut stream = context.get_stream(stream).await.ok()?;
        let info = stream.info().await.ok()?;
        let leader = info.cluster.as_ref()?.leader.clone()?;
        leader.strip_prefix('n')?.parse().ok()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// An mcplog node of the cluster.
pub(crate) fn start_node(data_dir: &Path, urls: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("MCPLOG_NATS_URL", urls),
        ("MCPLOG_NATS_REPLICAS", "3"),
        // A key any node accepts, so clients may post to either.
        ("MCPLOG_MASTER_SECRET", MASTER_SECRET),
    ];
    env.extend_from_slice(extra);
    Server::start_with(data_dir, &env)
}

/// A writer key signed with the shared master secret, valid on every node.
pub(crate) fn writer_key(node: &Server) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mcplog"))
        .args(["keygen", "--role", "admin", "--data-dir"])
        .arg(&node.data_dir)
        .env("MCPLOG_MASTER_SECRET", MASTER_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// What a load client saw acknowledged: event_id → (seq, body).
type Acked = Arc<Mutex<HashMap<String, (u64, String)>>>;

/// Posts `path` with `body` to whichever node answers, retrying the same bytes until one
/// acknowledges (2xx) or refuses for a reason other than availability; returns the status and
/// body of that answer.
pub(crate) async fn post_until_answered(
    nodes: &Arc<Mutex<Vec<SocketAddr>>>,
    first: usize,
    key: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut attempt = first;
    loop {
        let addr = nodes.lock().unwrap()[attempt % 2];
        attempt += 1;
        let answer = match Client::connect(addr).await {
            Ok(mut client) => client.post(path, Some(key), body.to_owned()).await.ok(),
            Err(_) => None,
        };
        if let Some(response) = answer {
            let status = response.status.as_u16();
            // 503: the stream or the node is unavailable for now; anything else is an answer.
            if status != 503 {
                return (status, response.json());
            }
        }
        assert!(Instant::now() < deadline, "no node acknowledged {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn single(client: usize, n: usize, variant: &str) -> String {
    json!({
        "action": "interaction_start",
        "interaction_id": format!("c{client}-i{n}"),
        "mcp_id": format!("mcp-{}", client % 3),
        "event_id": format!("c{client}-e{n}"),
        "timestamp": 1_790_000_000.0 + n as f64,
        "request_data": {"n": n, "variant": variant},
    })
    .to_string()
}

pub(crate) fn batch(client: usize, n: usize) -> String {
    let events: Vec<Value> = (0..5)
        .map(|k| {
            json!({
                "action": "interaction_progress",
                "interaction_id": format!("c{client}-i{n}"),
                "mcp_id": format!("mcp-{}", client % 3),
                "event_id": format!("c{client}-b{n}-{k}"),
                "timestamp": 1_790_000_000.0 + n as f64,
                "progress_data": {"k": k},
            })
        })
        .collect();
    Value::Array(events).to_string()
}

/// One load client: singles and batches, alternating nodes; every 4th acknowledged event is
/// retried exactly (same seq, `duplicate`), every 5th with a changed body (409).
pub(crate) async fn load_client(
    client: usize,
    nodes: Arc<Mutex<Vec<SocketAddr>>>,
    key: String,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (usize, usize) {
    let (mut exact, mut changed) = (0, 0);
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        if n % 3 == 0 {
            let body = batch(client, n);
            let (status, answer) = post_until_answered(
                &nodes,
                client + n,
                &key,
                "/api/v2/interactions/batch",
                &body,
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            let seqs = answer["seqs"].as_array().unwrap();
            let events: Vec<Value> = serde_json::from_str(&body).unwrap();
            let mut acked = acked.lock().unwrap();
            for (event, seq) in events.iter().zip(seqs) {
                acked.insert(
                    event["event_id"].as_str().unwrap().to_owned(),
                    (seq.as_u64().unwrap(), event.to_string()),
                );
            }
            continue;
        }
        let body = single(client, n, "first");
        let (status, answer) =
            post_until_answered(&nodes, client + n, &key, "/api/v2/interactions", &body).await;
        assert_eq!(status, 200, "{answer}");
        let seq = answer["seq"].as_u64().unwrap();
        acked
            .lock()
            .unwrap()
            .insert(format!("c{client}-e{n}"), (seq, body.clone()));
        if n % 4 == 0 {
            let (status, again) =
                post_until_answered(&nodes, client + n + 1, &key, "/api/v2/interactions", &body)
                    .await;
            assert_eq!(status, 200, "{again}");
            assert_eq!(again["seq"].as_u64(), Some(seq), "an exact retry: {again}");
            assert_eq!(again["duplicate"], true, "{again}");
            exact += 1;
        }
        if n % 5 == 0 {
            let other = single(client, n, "changed");
            let (status, refused) =
                post_until_answered(&nodes, client + n + 1, &key, "/api/v2/interactions", &other)
                    .await;
            assert_eq!(
                status, 409,
                "a changed body under a stored event_id: {refused}"
            );
            changed += 1;
        }
    }
    (exact, changed)
}

/// Waits until both nodes report the same applied seq, at least `at_least`, and returns it.
pub(crate) async fn settled(nodes: &[&Server], at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seqs = Vec::new();
        for node in nodes {
            let metrics = node.get("/metrics").await;
            let metrics = String::from_utf8_lossy(&metrics.body);
            let seq = metrics
                .lines()
                .find_map(|l| l.strip_prefix("mcplog_cluster_applied_seq "))
                .map(|v| v.parse::<u64>().unwrap())
                .unwrap();
            seqs.push(seq);
        }
        if seqs.iter().all(|&s| s == seqs[0] && s >= at_least) {
            return seqs[0];
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not settle: {seqs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn verify_head(data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .arg("verify")
        .arg(data_dir.join("segments"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .split("chain head ")
        .nth(1)
        .expect("verify names the chain head")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_under_load_survive_killing_the_stream_leader_and_a_node_and_agree_byte_for_byte()
{
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(bin, dir.path(), 3);
    let urls = nats.urls();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = start_node(&a_dir, &urls, &[]);
    let b = start_node(&b_dir, &urls, &[]);
    let key = writer_key(&a);
    let nodes = Arc::new(Mutex::new(vec![a.addr, b.addr]));
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|c| {
            tokio::spawn(load_client(
                c,
                Arc::clone(&nodes),
                key.clone(),
                Arc::clone(&acked),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let count = || acked.lock().unwrap().len();
    // Waits until `more` events beyond `from` are acknowledged: the load goes on.
    let progress = |from: usize, more: usize, phase: &'static str| {
        let acked = Arc::clone(&acked);
        async move {
            let started = Instant::now();
            while acked.lock().unwrap().len() < from + more {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "no progress {phase}: {} acknowledged",
                    acked.lock().unwrap().len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            started.elapsed()
        }
    };
    progress(0, 300, "at the start").await;
    // The stream's leader dies mid-load, and comes back.
    let leader = nats.stream_leader("mcplog").await;
    nats.kill(leader);
    let without_leader = progress(count(), 100, "after the stream leader was killed").await;
    nats.restart(leader);
    let before_kill = count();
    // Then an mcplog node dies mid-load, and comes back on a new port.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let one_node = progress(count(), 100, "with one node killed").await;
    a = start_node(&a_dir, &urls, &[]);
    nodes.lock().unwrap()[0] = a.addr;
    // It went on from the group holding its last seq, not from the stream's start.
    let resumed_at = a
        .log()
        .split("resume_position=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .expect("the restart says where it resumed");
    assert!(resumed_at > 1, "resumed at position {resumed_at}");
    let restarted = progress(count(), 300, "after the node restarted").await;
    eprintln!(
        "100 events took {without_leader:?} after the stream leader was killed, 100 took \
         {one_node:?} with one node killed, 300 took {restarted:?} after it restarted"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut exact, mut changed) = (0, 0);
    for client in clients {
        let (e, c) = client.await.unwrap();
        exact += e;
        changed += c;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        exact > 0 && changed > 0,
        "{exact} exact, {changed} changed retries"
    );
    let last = acked.values().map(|(seq, _)| *seq).max().unwrap();
    eprintln!(
        "{} events acknowledged ({before_kill} before the node was killed), {exact} exact and \
         {changed} changed-body retries, last seq {last}",
        acked.len()
    );
    let head = settled(&[&a, &b], last).await;
    // Replay from seq 1 is byte-identical on both nodes, and holds every acknowledged event at
    // its acknowledged seq.
    let replay_a = a.get("/api/v2/events?after_seq=0").await;
    let replay_b = b.get("/api/v2/events?after_seq=0").await;
    assert_eq!(replay_a.status.as_u16(), 200);
    assert_eq!(replay_a.body, replay_b.body, "replays differ");
    // A new, empty node joins after all this and catches up from the stream's first group.
    let c_dir = dir.path().join("c");
    let c = start_node(&c_dir, &urls, &[]);
    assert_eq!(settled(&[&a, &c], head).await, head);
    let replay_c = c.get("/api/v2/events?after_seq=0").await;
    assert_eq!(
        replay_a.body, replay_c.body,
        "the late node's replay differs"
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&replay_a.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, head, "one line per seq, none missing");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"].as_u64(), Some(i as u64 + 1));
    }
    for (event_id, (seq, body)) in &acked {
        let line = &lines[*seq as usize - 1];
        assert_eq!(line["event"]["event_id"], event_id.as_str(), "seq {seq}");
        let sent: Value = serde_json::from_str(body).unwrap();
        assert_eq!(line["event"], sent, "seq {seq} holds what was acknowledged");
    }
    // Both logs check out, to the same chain head.
    drop(a);
    drop(b);
    drop(c);
    let (head_a, head_b) = (verify_head(&a_dir), verify_head(&b_dir));
    assert_eq!(head_a, head_b, "the nodes' chains differ");
    assert_eq!(verify_head(&c_dir), head_a, "the late node's chain differs");
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_ingest_answers_503_within_its_deadline_reads_answer_and_writes_resume()
{
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(bin, dir.path(), 3);
    let node = start_node(
        &dir.path().join("a"),
        &nats.urls(),
        &[("MCPLOG_NATS_INGEST_DEADLINE", "2s")],
    );
    let event = |n: usize| single(0, n, "outage");
    let stored = node.post("/api/v2/interactions", event(1)).await;
    assert_eq!(stored.status.as_u16(), 200, "{}", stored.json());
    // Two of three servers gone: no majority for the stream.
    let leader = nats.stream_leader("mcplog").await;
    nats.kill(leader);
    nats.kill((leader + 1) % 3);
    let started = Instant::now();
    let refused = node.post("/api/v2/interactions", event(2)).await;
    let waited = started.elapsed();
    assert_eq!(refused.status.as_u16(), 503, "{}", refused.json());
    assert_eq!(error_code(&refused), "cluster_unavailable");
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "answered after {waited:?} with a 2s deadline"
    );
    // Reads answer from the node's own view meanwhile.
    let record = node.get("/api/v2/interactions/c0-i1?mcp_id=mcp-0").await;
    assert_eq!(record.status.as_u16(), 200, "{}", record.json());
    let stats = node.get("/api/v2/interactions/stats").await;
    assert_eq!(stats.status.as_u16(), 200);
    // A majority back: writes resume by themselves.
    nats.restart(leader);
    nats.restart((leader + 1) % 3);
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed = loop {
        let answer = node.post("/api/v2/interactions", event(3)).await;
        if answer.status.as_u16() == 200 {
            break answer.json();
        }
        assert_eq!(answer.status.as_u16(), 503, "{}", answer.json());
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(resumed["seq"].as_u64().unwrap() >= 2, "{resumed}");
}

pub(crate) fn error_code(response: &mcplog::client::Response) -> String {
    response.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A group as a forger would publish it: frames for seqs `first_seq..`, under any headers.
pub(crate) fn forged_frames(first_seq: u64, count: u64) -> Vec<u8> {
    let body = r#"{"action":"interaction_start","interaction_id":"forged","mcp_id":"mcp-0","timestamp":1790000000,"request_data":{}}"#;
    let mut frames = Vec::new();
    for n in 0..count {
        let event = mcplog::event::StoredEvent {
            seq: first_seq + n,
            write_index: n as u32,
            received_at_us: mcplog::clock::now_us(),
            key_id: [0; 8],
            action: mcplog::event::Action::Start,
            timestamp: 1_790_000_000.0,
            interaction_id: "forged",
            mcp_id: "mcp-0",
            event_id: None,
            body,
        };
        mcplog::storage::format::encode_frame(&event, &mut frames);
    }
    frames
}

/// The master secret [`start_node`] gives every node.
pub(crate) const MASTER_SECRET: &str = "cluster-test-master-secret-0123456789";

/// The headers a node sharing [`MASTER_SECRET`] gives `group`: what only a holder of the shared
/// secret can make.
pub(crate) fn signed_headers(group: &mcplog::engine::replica::Group) -> async_nats::HeaderMap {
    let keys = mcplog::cluster::GroupKeys::from_master_secrets(MASTER_SECRET.as_bytes(), &[]);
    mcplog::cluster::group_headers(group, &keys)
}

/// The rules fingerprint a stored group carries.
pub(crate) fn rules_of(message: &async_nats::jetstream::message::StreamMessage) -> [u8; 16] {
    let hex = message.headers.get(mcplog::cluster::RULES_HEADER).unwrap();
    let bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex.as_str()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_fed_a_group_with_a_wrong_hash_seq_or_frame_halts_and_never_applies_it() {
    use mcplog::engine::replica::Group;
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(bin, dir.path(), 1);
    let addr: async_nats::ServerAddr = format!("nats://127.0.0.1:{}", nats.client_ports[0])
        .parse()
        .unwrap();
    let context = async_nats::jetstream::new(async_nats::connect(addr).await.unwrap());
    // (stream, first seq, previous hash is right, a frame byte flipped, what the halt names)
    let cases = [
        ("forged-hash", 2, false, false, "previous-group hash"),
        ("forged-seq", 5, true, false, "its first seq should be 2"),
        (
            "forged-frame",
            2,
            true,
            true,
            "frame 1 does not decode: CRC mismatch",
        ),
    ];
    for (n, (stream, first_seq, right_hash, flip, named)) in cases.into_iter().enumerate() {
        let data = dir.path().join(stream);
        let node = start_node(
            &data,
            &nats.urls(),
            &[
                ("MCPLOG_NATS_STREAM", stream),
                ("MCPLOG_NATS_REPLICAS", "1"),
            ],
        );
        let stored = node
            .post("/api/v2/interactions", single(0, 1, stream))
            .await;
        assert_eq!(stored.status.as_u16(), 200, "{}", stored.json());
        // nats-server 2.9 cannot fsync before it acknowledges, and its 8 MB messages cannot
        // hold a 16 MiB batch: the node says both.
        let log = node.log();
        assert!(
            log.contains("acknowledges a write before it is fsynced"),
            "{log}"
        );
        assert!(
            log.contains("batch_bytes_max lowered") && log.contains("nats_max_payload=8388608"),
            "{log}"
        );
        let stream_handle = context.get_stream(stream).await.unwrap();
        let first = stream_handle.get_raw_message(1).await.unwrap();
        let true_first = Group {
            first_seq: 1,
            prev_hash: [0; 32],
            frames: first.payload.clone(),
            rules: rules_of(&first),
        };
        let subject = format!("{stream}.groups");
        // First case: the group that would be right, but without the shared key's MAC, is
        // skipped (the halt below names the position after it), never applied.
        let halt_at = if n == 0 {
            let unsigned = Group {
                first_seq: 2,
                prev_hash: true_first.hash(),
                frames: forged_frames(2, 1).into(),
                rules: true_first.rules,
            };
            let mut headers = signed_headers(&unsigned);
            headers.insert(mcplog::cluster::MAC_HEADER, "00".repeat(32).as_str());
            context
                .publish_with_headers(subject.clone(), headers, unsigned.frames.clone())
                .await
                .unwrap()
                .await
                .unwrap();
            3
        } else {
            2
        };
        let mut frames = forged_frames(first_seq, 2);
        if flip {
            let last = frames.len() - 20;
            frames[last] ^= 0x01;
        }
        let prev_hash = if right_hash {
            true_first.hash()
        } else {
            [0x5a; 32]
        };
        // Signed with the shared key: an authenticated group that does not continue the
        // history is a real divergence.
        let forged = Group {
            first_seq,
            prev_hash,
            frames: frames.into(),
            rules: true_first.rules,
        };
        context
            .publish_with_headers(subject, signed_headers(&forged), forged.frames.clone())
            .await
            .unwrap()
            .await
            .unwrap();
        // Health turns 503 with the reason; nothing of the forged group is applied.
        let deadline = Instant::now() + Duration::from_secs(10);
        let health = loop {
            let health = node.get("/api/v2/health").await;
            if health.status.as_u16() == 503 {
                break health.json();
            }
            assert!(
                Instant::now() < deadline,
                "{stream}: the follower did not halt"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let reason = health["reason"].as_str().unwrap();
        assert!(
            reason.contains(named) && reason.contains(&format!("position {halt_at}")),
            "{stream}: {reason}"
        );
        let replay = node.get("/api/v2/events?after_seq=0").await;
        assert_eq!(
            String::from_utf8_lossy(&replay.body).lines().count(),
            1,
            "{stream}: only the true event"
        );
        let metrics = node.get("/metrics").await;
        let metrics = String::from_utf8_lossy(&metrics.body);
        assert!(metrics.contains("mcplog_cluster_halted 1"), "{metrics}");
        assert!(
            metrics.contains(&format!(
                "mcplog_cluster_skipped_messages_total {}\n",
                halt_at - 2
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains("mcplog_cluster_applied_position 1\n"),
            "{metrics}"
        );
        assert!(metrics.contains("mcplog_cluster_lag_groups "), "{metrics}");
        assert!(
            metrics.contains("mcplog_cluster_publish_retries_total{reason=\"moved\"} 0"),
            "{metrics}"
        );
        // mcplog sets no limit on the stream, so a new node can always start from group 1.
        let config = context
            .get_stream(stream)
            .await
            .unwrap()
            .cached_info()
            .config
            .clone();
        assert_eq!(config.max_age, Duration::ZERO, "{stream}");
        assert_eq!(
            (config.max_messages, config.max_bytes),
            (-1, -1),
            "{stream}"
        );
        // Ingest refuses rather than waiting on a follower that will not move.
        let refused = node
            .post("/api/v2/interactions", single(0, 2, stream))
            .await;
        assert_eq!(refused.status.as_u16(), 503, "{}", refused.json());
        assert!(
            error_of_text(&refused).contains("stopped applying"),
            "{}",
            refused.json()
        );
        // A restart reads the same group and halts again: it is never applied.
        drop(node);
        let node = start_node(
            &data,
            &nats.urls(),
            &[
                ("MCPLOG_NATS_STREAM", stream),
                ("MCPLOG_NATS_REPLICAS", "1"),
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.get("/api/v2/health").await.status.as_u16() != 503 {
            assert!(
                Instant::now() < deadline,
                "{stream}: no halt after a restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let replay = node.get("/api/v2/events?after_seq=0").await;
        assert_eq!(String::from_utf8_lossy(&replay.body).lines().count(), 1);
    }
}

pub(crate) fn error_of_text(response: &mcplog::client::Response) -> String {
    response.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_local_cluster_script_starts_three_nats_servers_and_two_nodes_sharing_one_log() {
    let Some(_) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ports = |n: usize| {
        (0..n)
            .map(|_| free_port().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let node_ports = ports(2);
    let mut script = Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cluster/start-local.sh"),
    );
    script
        .arg(dir.path().join("state"))
        .env("MCPLOG_BIN", env!("CARGO_BIN_EXE_mcplog"))
        .env("NATS_PORTS", ports(3))
        .env("ROUTE_PORTS", ports(3))
        .env("NODE_PORTS", &node_ports)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = script.spawn().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    /// SIGTERM to the script however the test ends (its trap stops every process it started),
    /// then waits for it.
    struct Stop(Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(child);
    let mut said = String::new();
    for line in std::io::BufRead::lines(stdout) {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.starts_with("ready") {
            break;
        }
    }
    assert!(said.contains("ready"), "the script stopped: {said}");
    let addrs: Vec<SocketAddr> = node_ports
        .split(' ')
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect();
    let key = |node: &str| {
        std::fs::read_to_string(dir.path().join("state").join(node).join("admin.key"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut one = Client::connect(addrs[0]).await.unwrap();
        let stored = one
            .post(
                "/api/v2/interactions",
                Some(&key("node-1")),
                single(9, 1, "script"),
            )
            .await
            .unwrap();
        assert_eq!(stored.status.as_u16(), 200, "{}", stored.json());
        let seq = stored.json()["seq"].as_u64().unwrap();
        // Read-your-writes on the other node: `min_seq` waits until it holds the write.
        let mut two = Client::connect(addrs[1]).await.unwrap();
        let path = format!("/api/v2/interactions/c9-i1?mcp_id=mcp-0&min_seq={seq}");
        let record = two.get(&path, Some(&key("node-2"))).await.unwrap();
        assert_eq!(record.status.as_u16(), 200, "{}", record.json());
        assert_eq!(record.json()["metadata"]["first_seq"].as_u64(), Some(seq));
        // A seq no node holds yet: 503 after the wait, naming the parameter.
        let started = Instant::now();
        let path = format!(
            "/api/v2/interactions/c9-i1?mcp_id=mcp-0&min_seq={}",
            seq + 1000
        );
        let later = two.get(&path, Some(&key("node-2"))).await.unwrap();
        assert_eq!(later.status.as_u16(), 503, "{}", later.json());
        assert_eq!(later.json()["error"]["code"], "not_yet_applied");
        assert_eq!(later.json()["error"]["field"], "min_seq");
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        let bad = two
            .get(
                "/api/v2/interactions/c9-i1/events?min_seq=soon",
                Some(&key("node-2")),
            )
            .await
            .unwrap();
        assert_eq!(bad.status.as_u16(), 400, "{}", bad.json());
        assert_eq!(bad.json()["error"]["field"], "min_seq");
        // The other node holds it too, at the same seq.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut two = Client::connect(addrs[1]).await.unwrap();
            let replay = two
                .get("/api/v2/events?after_seq=0", Some(&key("node-2")))
                .await
                .unwrap();
            let body = String::from_utf8_lossy(&replay.body).into_owned();
            if body.contains("c9-e1") {
                assert!(body.starts_with("{\"seq\":1,"), "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "node-2 never saw it: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_authenticates_with_the_configured_token_or_credentials_and_says_when_refused() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Command::new(bin)
        .args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--auth",
            "s3cret-token",
        ])
        .arg("-sd")
        .arg(dir.path().join("js"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("nats://127.0.0.1:{port}");
    let node = start_node(
        &dir.path().join("a"),
        &url,
        &[
            ("MCPLOG_NATS_TOKEN", "s3cret-token"),
            ("MCPLOG_NATS_REPLICAS", "1"),
        ],
    );
    let stored = node
        .post("/api/v2/interactions", single(0, 1, "token"))
        .await;
    assert_eq!(stored.status.as_u16(), 200, "{}", stored.json());
    // The server's default 1 MiB messages cannot hold a 16 MiB batch: the node lowered
    // batch_bytes_max to (1048576 - 1024 - 1000 * 71) / 2 bytes, and refuses a larger batch.
    let big = format!("[{}{}]", single(0, 2, "big"), " ".repeat(500_000));
    let refused = node.post("/api/v2/interactions/batch", big).await;
    assert_eq!(refused.status.as_u16(), 413, "{}", refused.json());
    let message = refused.json()["error"]["message"].to_string();
    assert!(
        message.contains("batch_bytes_max (488276 bytes)"),
        "{message}"
    );
    // event_bytes_max (1 MiB) came down with it.
    let big = format!("{}{}", single(0, 3, "big"), " ".repeat(500_000));
    let refused = node.post("/api/v2/interactions", big).await;
    assert_eq!(refused.status.as_u16(), 413, "{}", refused.json());
    let message = refused.json()["error"]["message"].to_string();
    assert!(
        message.contains("event_bytes_max (488276 bytes)"),
        "{message}"
    );
    drop(node);
    // A stream that exists is used as it is, and a difference from the settings is said.
    let node = start_node(
        &dir.path().join("a"),
        &url,
        &[
            ("MCPLOG_NATS_TOKEN", "s3cret-token"),
            ("MCPLOG_NATS_REPLICAS", "3"),
        ],
    );
    let log = node.log();
    assert!(
        log.contains("the stream exists with another number of replicas")
            && log.contains("replicas=1 configured=3"),
        "{log}"
    );
    drop(node);
    // Without the token, or with a credentials file that is not one, start-up stops at once
    // with the reason, and never shows the secret.
    let creds = dir.path().join("bad.creds");
    std::fs::write(&creds, "not a credentials file\n").unwrap();
    let cases = [
        (
            vec![("MCPLOG_NATS_TOKEN", "wrong-token")],
            "authorization violation",
        ),
        (
            vec![("MCPLOG_NATS_CREDENTIALS", creds.to_str().unwrap())],
            "credentials file does not load",
        ),
    ];
    for (env, named) in cases {
        let mut all = vec![
            ("MCPLOG_NATS_URL", url.as_str()),
            ("MCPLOG_NATS_REPLICAS", "1"),
            ("MCPLOG_MASTER_SECRET", MASTER_SECRET),
        ];
        all.extend(env);
        let started = Instant::now();
        let (mut child, _, log) = crate::common::spawn(&dir.path().join("b"), &all);
        let status = child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let log = log.lock().unwrap().clone();
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(log.contains(named), "{named}: {log}");
        for secret in ["s3cret-token", "wrong-token"] {
            assert!(!log.contains(secret), "{log}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_the_stream_does_not_hold_refuses_to_start() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(bin, dir.path(), 1);
    let env = [("MCPLOG_NATS_REPLICAS", "1")];
    // Node A writes three events, then the stream is deleted and begun again by node B.
    let a_dir = dir.path().join("a");
    let a = start_node(&a_dir, &nats.urls(), &env);
    for n in 1..=3 {
        let stored = a.post("/api/v2/interactions", single(0, n, "a")).await;
        assert_eq!(stored.status.as_u16(), 200, "{}", stored.json());
    }
    drop(a);
    let addr: async_nats::ServerAddr = format!("nats://127.0.0.1:{}", nats.client_ports[0])
        .parse()
        .unwrap();
    let context = async_nats::jetstream::new(async_nats::connect(addr).await.unwrap());
    context.delete_stream("mcplog").await.unwrap();
    let b = start_node(&dir.path().join("b"), &nats.urls(), &env);
    let stored = b.post("/api/v2/interactions", single(1, 1, "b")).await;
    assert_eq!(stored.status.as_u16(), 200, "{}", stored.json());
    // A's log holds seqs 1..=3; the stream's history ends at 1, with another event.
    let mut all = vec![
        ("MCPLOG_NATS_URL", nats.urls()),
        ("MCPLOG_MASTER_SECRET", MASTER_SECRET.to_owned()),
    ];
    all.extend(env.iter().map(|&(k, v)| (k, v.to_owned())));
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut child, _, log) = crate::common::spawn(&a_dir, &all);
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("this node's log ends at seq 3 but the stream's last group ends at seq 1"),
        "{log}"
    );
    // And a node whose log has events but the stream none refuses too.
    context.delete_stream("mcplog").await.unwrap();
    drop(b);
    let (mut child, _, log) = crate::common::spawn(&a_dir, &all);
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("but the stream is empty"), "{log}");
}

/// A cluster node whose last write is cut at start-up (a flipped bit in it, which start-up cannot
/// tell from a torn write) skips no seq: its seqs come from the stream, which delivers the cut
/// group again, byte for byte. The cut bytes are still kept and recorded; the node's replay holds
/// every event at its seq with no gap, and it goes on at the next seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_last_write_is_cut_takes_it_again_from_the_stream_without_skipping_seqs() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(bin, dir.path(), 1);
    let env = [("MCPLOG_NATS_REPLICAS", "1")];
    let a_dir = dir.path().join("a");
    let a = start_node(&a_dir, &nats.urls(), &env);
    for n in 1..=3 {
        let stored = a.post("/api/v2/interactions", single(0, n, "a")).await;
        assert_eq!(stored.status.as_u16(), 200, "{}", stored.json());
    }
    let stored = a.post("/api/v2/interactions/batch", batch(0, 4)).await;
    assert_eq!(stored.status.as_u16(), 200, "{}", stored.json());
    // The node answers once the stream has the group; its own view may apply it a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        let text = String::from_utf8_lossy(&a.get("/api/v2/events").await.body).into_owned();
        if text.lines().count() >= 8 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(before.lines().count(), 8);
    a.kill();
    // Flip one bit in the body of seq 6, the batch's third event.
    let last = crate::common::segment_paths(&a_dir).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let needle = br#""progress_data":{"k":2}"#;
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("seq 6's body");
    bytes[at + 5] ^= 0x01;
    std::fs::write(&last, &bytes).unwrap();

    let a = start_node(&a_dir, &nats.urls(), &env);
    assert!(a.log().contains("truncated a torn tail"), "{}", a.log());
    settled(&[&a], 8).await;
    let after = String::from_utf8_lossy(&a.get("/api/v2/events").await.body).into_owned();
    assert_eq!(
        after, before,
        "the same events at the same seqs, and no gap line"
    );
    let stored = a.post("/api/v2/interactions", single(0, 9, "a")).await;
    assert_eq!(stored.json()["seq"], 9, "{}", stored.json());
    a.kill();
    let records = std::fs::read_to_string(a_dir.join("segments/repairs.jsonl")).unwrap();
    let record: Value = serde_json::from_str(records.trim()).unwrap();
    assert_eq!(record["kind"], "cut");
    assert_eq!(
        record["first_seq"].as_u64().unwrap(),
        record["after_seq"].as_u64().unwrap() + 1,
        "no seq skipped: {record}"
    );
    assert!(a_dir.join(record["quarantine"].as_str().unwrap()).is_file());
    verify_head(&a_dir);
}

/// Publishes `message` (a group's, read back from the stream) again on `subject` as anyone who
/// may publish there could: its `Mcplog-` headers, MAC and all, without the message id with
/// which JetStream would drop it as a duplicate.
pub(crate) async fn republish(
    context: &async_nats::jetstream::Context,
    subject: &str,
    message: &async_nats::jetstream::message::StreamMessage,
) {
    let mut copy = async_nats::HeaderMap::new();
    for name in [
        mcplog::cluster::FIRST_SEQ_HEADER,
        mcplog::cluster::PREV_HASH_HEADER,
        mcplog::cluster::RULES_HEADER,
        mcplog::cluster::MAC_HEADER,
    ] {
        copy.insert(name, message.headers.get(name).unwrap().as_str());
    }
    context
        .publish_with_headers(subject.to_owned(), copy, message.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
}
