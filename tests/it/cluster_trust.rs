//! Cluster mode with a hostile or misconfigured neighbour, against a real `nats-server`: stray
//! messages and groups without the shared key on the stream, a node with other redaction rules.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{
    error_code, forged_frames, nats_server, rules_of, settled, single, verify_head, Nats,
    MASTER_SECRET,
};
use crate::common::Server;

/// A node of stream "trust" started with `args` (a `--config` file, say) besides the cluster's
/// settings.
fn node(data_dir: &Path, urls: &str, env: &[(&str, &str)], args: &[&str]) -> Server {
    let mut all = vec![
        ("MCPLOG_NATS_URL", urls),
        ("MCPLOG_NATS_REPLICAS", "1"),
        ("MCPLOG_NATS_STREAM", "trust"),
        ("MCPLOG_MASTER_SECRET", MASTER_SECRET),
    ];
    all.extend_from_slice(env);
    Server::start_with_args(data_dir, &all, args)
}

/// Waits until `node` answers `path` with `status`, for up to 10 s; returns the body.
async fn until_status(node: &Server, path: &str, status: u16) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = node.get(path).await;
        if answer.status.as_u16() == status {
            return answer.body.to_vec();
        }
        assert!(Instant::now() < deadline, "{path} never answered {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(node_metrics: &[u8], name: &str) -> u64 {
    String::from_utf8_lossy(node_metrics)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name}"))
        .parse()
        .unwrap()
}

/// Posts one event to `node`, which must acknowledge it; records (seq, body) under its id.
async fn acked(node: &Server, body: String, all: &mut Vec<(u64, String)>) {
    let answer = node.post("/api/v2/interactions", body.clone()).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.json());
    all.push((answer.json()["seq"].as_u64().unwrap(), body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strays_and_unkeyed_groups_are_skipped_and_a_node_with_other_rules_cannot_write() {
    use mcplog::engine::replica::Group;
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(bin, dir.path(), 1);
    let urls = nats.urls();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a = node(&a_dir, &urls, &[], &[]);
    let b = node(&b_dir, &urls, &[], &[]);
    let mut all = Vec::new();
    acked(&a, single(0, 1, "trust"), &mut all).await;
    acked(&b, single(1, 1, "trust"), &mut all).await;

    // Anyone with NATS access: a plain message, and a well-formed group continuing the chain
    // but keyed with another master secret.
    let addr: async_nats::ServerAddr = format!("nats://127.0.0.1:{}", nats.client_ports[0])
        .parse()
        .unwrap();
    let context = async_nats::jetstream::new(async_nats::connect(addr).await.unwrap());
    let stream = context.get_stream("trust").await.unwrap();
    assert!(
        stream.cached_info().config.deny_delete,
        "created denying deletes"
    );
    context
        .publish("trust.groups", "not a group".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // The chain so far: one event from each node, at positions 1 and 2.
    let stored = |position: u64, prev_hash| {
        let stream = stream.clone();
        async move {
            let message = stream.get_raw_message(position).await.unwrap();
            Group {
                first_seq: position,
                prev_hash,
                frames: message.payload.clone(),
                rules: rules_of(&message),
            }
        }
    };
    let first = stored(1, [0; 32]).await;
    let previous = stored(2, first.hash()).await;
    let unkeyed = Group {
        first_seq: 3,
        prev_hash: previous.hash(),
        frames: forged_frames(3, 1).into(),
        rules: previous.rules,
    };
    let other = mcplog::cluster::GroupKeys::from_master_secrets(b"not the cluster's secret", &[]);
    context
        .publish_with_headers(
            "trust.groups",
            mcplog::cluster::group_headers(&unkeyed, &other),
            unkeyed.frames.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Deleting a message is refused by the stream itself.
    assert!(stream.delete_message(3).await.is_err(), "deny_delete");

    // A restart finds where to go on stepping over them (here at the stream's end).
    drop(b);
    let b = node(&b_dir, &urls, &[], &[]);
    // Anyone who can publish: an applied group's message again, MAC and all (without its message
    // id, with which JetStream would drop it as a duplicate). The followers skip the copy.
    let copy_of = |position: u64| {
        let (context, stream) = (context.clone(), stream.clone());
        async move {
            let old = stream.get_raw_message(position).await.unwrap();
            crate::cluster::republish(&context, "trust.groups", &old).await;
        }
    };
    copy_of(1).await;
    // While B is down, a group of A's and then copies of B's last two groups, last in the
    // stream: a search would take a copy of B's last group for the chain's (it follows a copy of
    // its predecessor) and miss A's group. B's restart starts from its hint of its place, walks the chain, and goes on
    // from there, with A's group.
    let hint = b_dir.join(mcplog::cluster::HINT_FILE);
    let started = Instant::now();
    while !std::fs::read_to_string(&hint).is_ok_and(|text| text.starts_with("2 ")) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B wrote no hint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
    acked(&a, single(0, 3, "trust"), &mut all).await;
    for _ in 0..4 {
        copy_of(1).await;
        copy_of(2).await;
    }
    let b = node(&b_dir, &urls, &[], &[]);

    // No node halts; writes go on right after the strays, on both nodes.
    acked(&a, single(0, 2, "trust"), &mut all).await;
    acked(&b, single(1, 2, "trust"), &mut all).await;
    for node in [&a, &b] {
        let metrics = until_status(node, "/metrics", 200).await;
        assert_eq!(
            metric(&metrics, "mcplog_cluster_skipped_messages_total"),
            11
        );
        assert_eq!(metric(&metrics, "mcplog_cluster_halted"), 0);
        assert_eq!(node.get("/api/v2/health").await.status.as_u16(), 200);
    }

    // A node with weaker redaction: nothing it is sent is stored anywhere, while the others
    // write on.
    let weak = dir.path().join("weak.toml");
    std::fs::write(&weak, "[redaction]\nenabled = false\n").unwrap();
    let weak = weak.to_str().unwrap().to_owned();
    let c_dir = dir.path().join("c");
    let c = node(&c_dir, &urls, &[], &["--config", &weak]);
    until_status(&c, "/readyz", 503).await;
    let health = c.get("/api/v2/health").await;
    assert_eq!(health.status.as_u16(), 503);
    let reason = health.json()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("rules") && reason.contains("differ"),
        "{reason}"
    );
    let secret = json!({
        "action": "interaction_start", "interaction_id": "weak", "mcp_id": "mcp-0",
        "timestamp": 1_790_000_000.0, "request_data": {"password": "hunter2-in-clear"},
    })
    .to_string();
    let refused = c.post("/api/v2/interactions", secret).await;
    assert_eq!(refused.status.as_u16(), 503, "{}", refused.json());
    assert_eq!(error_code(&refused), "rules_differ");
    assert!(
        c.log().contains("this node refuses every write"),
        "{}",
        c.log()
    );
    let metrics = c.get("/metrics").await.body;
    assert_eq!(metric(&metrics, "mcplog_cluster_rules_differ"), 1);
    acked(&a, single(0, 3, "trust"), &mut all).await;
    acked(&b, single(1, 3, "trust"), &mut all).await;

    // A restart steps over the strays in the middle of the stream.
    drop(a);
    let a = node(&a_dir, &urls, &[], &[]);
    acked(&a, single(0, 4, "trust"), &mut all).await;
    let last_seq = all.iter().map(|(seq, _)| *seq).max().unwrap();
    settled(&[&a, &b, &c], last_seq).await;

    // Every acknowledged event, on every node, at its seq; identical replays; no secret.
    let replay = a.get("/api/v2/events?after_seq=0").await.body;
    for other in [&b, &c] {
        assert_eq!(other.get("/api/v2/events?after_seq=0").await.body, replay);
    }
    assert!(!String::from_utf8_lossy(&replay).contains("hunter2"));
    assert!(!String::from_utf8_lossy(&replay).contains("forged"));
    let lines: Vec<Value> = String::from_utf8_lossy(&replay)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as u64,
        last_seq,
        "one line per seq, nothing else"
    );
    for (seq, body) in &all {
        let sent: Value = serde_json::from_str(body).unwrap();
        assert_eq!(lines[*seq as usize - 1]["event"], sent, "seq {seq}");
    }

    // An operator moves the cluster to the weak rules on purpose: then the others refuse.
    drop(c);
    let c = node(
        &c_dir,
        &urls,
        &[("MCPLOG_NATS_ADOPT_RULES", "true")],
        &["--config", &weak],
    );
    acked(&c, single(2, 1, "trust"), &mut all).await;
    let refused = until_refused(&a).await;
    assert_eq!(error_code(&refused), "rules_differ");

    // The one way back for a node (README): stop it, move its data aside, start it from a
    // backup of a peer taken while that peer runs; it follows on and writes.
    drop(c);
    std::fs::rename(&c_dir, dir.path().join("c-aside")).unwrap();
    let backup = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .arg("backup")
        .arg(&a_dir)
        .arg(&c_dir)
        .output()
        .unwrap();
    assert!(backup.status.success(), "{backup:?}");
    let c = node(&c_dir, &urls, &[], &["--config", &weak]);
    acked(&c, single(2, 2, "trust"), &mut all).await;
    let last_seq = all.iter().map(|(seq, _)| *seq).max().unwrap();
    settled(&[&a, &b, &c], last_seq).await;

    drop((a, b, c));
    let head = verify_head(&a_dir);
    assert_eq!(verify_head(&b_dir), head, "the nodes' chains differ");
    assert_eq!(verify_head(&c_dir), head, "the third node's chain differs");
    drop(nats);
}

/// Posts to `node` until it refuses (the group with other rules may still be on its way).
async fn until_refused(node: &Server) -> mcplog::client::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 100.. {
        let answer = node
            .post("/api/v2/interactions", single(3, n, "trust"))
            .await;
        if answer.status.as_u16() == 503 {
            return answer;
        }
        assert!(Instant::now() < deadline, "{} still writes", node.addr);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_nats_users_let_a_node_write_and_a_reader_only_read() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(bin, dir.path(), 1);
    // The same server under the users and permissions deploy/cluster ships.
    nats.kill(0);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cluster/nats-auth.conf");
    let users = std::fs::read_to_string(shipped)
        .unwrap()
        .replace("CHANGE-ME-mcplog", "nodepassword1")
        .replace("CHANGE-ME-reader", "readerpassword1");
    std::fs::write(dir.path().join("nats-auth.conf"), users).unwrap();
    let conf = dir.path().join("n0.conf");
    let mut config = std::fs::read_to_string(&conf).unwrap();
    config.push_str("include ./nats-auth.conf\n");
    std::fs::write(&conf, config).unwrap();
    nats.restart(0);
    let port = nats.client_ports[0];

    // A node, with the user in its URL, creates the stream and writes.
    let url = format!("nats://mcplog:nodepassword1@127.0.0.1:{port}");
    let a = Server::start_with(
        &dir.path().join("a"),
        &[
            ("MCPLOG_NATS_URL", url.as_str()),
            ("MCPLOG_NATS_REPLICAS", "1"),
            ("MCPLOG_MASTER_SECRET", MASTER_SECRET),
        ],
    );
    let mut all = Vec::new();
    acked(&a, single(0, 1, "users"), &mut all).await;

    let addr = format!("127.0.0.1:{port}");
    assert!(
        async_nats::connect(&addr).await.is_err(),
        "no anonymous access"
    );
    let connect_as = |user: &str, password: &str| {
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            .connect(addr.clone())
    };
    let short = |client| {
        async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(1))
            .build(client)
    };
    // The reader reads the stream but cannot publish a group, purge or delete it.
    let reader = short(connect_as("reader", "readerpassword1").await.unwrap());
    let mut stream = reader.get_stream("mcplog").await.unwrap();
    stream.get_raw_message(1).await.unwrap();
    let published = async {
        reader
            .publish("mcplog.groups", "not a group".into())
            .await?
            .await
    };
    assert!(published.await.is_err(), "the reader published");
    assert!(stream.purge().await.is_err(), "the reader purged");
    assert!(reader.delete_stream("mcplog").await.is_err());
    // The nodes' user cannot delete the stream or a message of it either.
    let node_user = short(connect_as("mcplog", "nodepassword1").await.unwrap());
    assert!(node_user.delete_stream("mcplog").await.is_err());
    let as_node = node_user.get_stream("mcplog").await.unwrap();
    assert!(as_node.delete_message(1).await.is_err());
    assert_eq!(stream.info().await.unwrap().state.messages, 1, "untouched");
    acked(&a, single(0, 2, "users"), &mut all).await;
    // A node without the shared master secret could authenticate no group: it does not start.
    let (mut child, _, log) = crate::common::spawn(
        &dir.path().join("b"),
        &[
            ("MCPLOG_NATS_URL", url.as_str()),
            ("MCPLOG_NATS_REPLICAS", "1"),
        ],
    );
    assert_eq!(child.wait().unwrap().code(), Some(1));
    std::thread::sleep(Duration::from_millis(100));
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("cluster mode needs security.master_secret"),
        "{log}"
    );
    // Nor does an empty node with another master secret: it would skip every group and start
    // a history of its own in the same stream.
    let (mut child, _, log) = crate::common::spawn(
        &dir.path().join("c"),
        &[
            ("MCPLOG_NATS_URL", url.as_str()),
            ("MCPLOG_NATS_REPLICAS", "1"),
            (
                "MCPLOG_MASTER_SECRET",
                "another-master-secret-0123456789abcdef",
            ),
        ],
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("a node with another master secret started");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    std::thread::sleep(Duration::from_millis(100));
    let log = log.lock().unwrap().clone();
    assert!(log.contains("another master secret"), "{log}");
    drop(a);
    drop(nats);
}
