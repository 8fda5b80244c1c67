//! Audit: the replay API (byte-exact, follow mode), and `mcplog-seg` on real files: every
//! single-bit flip of a sealed segment detected, a forged record caught by the hash chain, and the
//! tool reading a directory a server is writing to.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mcplog::storage::format::{decode_at, encode_header, Decoded, Header, HEADER_BYTES};
use serde_json::Value;

use crate::common::{event, Server};

fn seg(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn lines(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn replay_equals_what_was_posted_event_for_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_SEGMENT_MAX_BYTES", "4096")]);
    let mut posted = Vec::new();
    for i in 0..40 {
        // Odd spacing and key order: replay must give back exactly these bytes.
        let body = format!(
            r#"{{ "timestamp": {i}.5, "mcp_id":"m{}", "interaction_id" : "r-{i}", "action":"interaction_start" }}"#,
            i % 2
        );
        let seq = server
            .post("/api/v2/interactions", body.clone())
            .await
            .json()["seq"]
            .as_u64()
            .unwrap();
        posted.push((seq, body));
    }
    let response = server.get("/api/v2/events").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "application/x-ndjson");
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    let replayed: Vec<&str> = text.lines().collect();
    assert_eq!(replayed.len(), posted.len());
    for (line, (seq, body)) in replayed.iter().zip(&posted) {
        assert!(
            line.contains(&format!("\"event\":{body}")),
            "not byte-exact: {line} vs {body}"
        );
        assert_eq!(serde_json::from_str::<Value>(line).unwrap()["seq"], *seq);
    }
    let page = lines(
        &server
            .get("/api/v2/events?after_seq=10&limit=5&mcp_id=m1")
            .await
            .body,
    );
    let seqs: Vec<u64> = page.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [12, 14, 16, 18, 20]);
    let bad = server.get("/api/v2/events?after_seq=x").await;
    assert_eq!(bad.status, 400);
}

/// Reads a chunked NDJSON response from a raw connection until `count` events have arrived.
fn read_events(stream: &mut std::net::TcpStream, buffer: &mut Vec<u8>, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = lines(buffer);
        if events.len() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "only {} events after 20 s",
            events.len()
        );
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk) {
            Ok(0) => panic!("the stream ended"),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_sends_new_events_without_missing_or_repeating_any() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for i in 0..5 {
        server
            .post(
                "/api/v2/interactions",
                event("interaction_start", &format!("f-{i}"), "m", 1.0),
            )
            .await;
    }
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET /api/v2/events?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        server.key
    )
    .unwrap();
    let mut buffer = Vec::new();
    let caught_up = read_events(&mut stream, &mut buffer, 5);
    assert_eq!(caught_up.len(), 5);
    // Posted after the reader connected, some while it was still catching up on others.
    for i in 5..25 {
        let body = if i % 2 == 0 {
            event("interaction_start", &format!("f-{i}"), "m", 1.0)
        } else {
            format!(
                "[{},{}]",
                event("interaction_start", &format!("f-{i}a"), "m", 1.0),
                event("interaction_start", &format!("f-{i}b"), "m", 1.0)
            )
        };
        let path = if i % 2 == 0 {
            "/api/v2/interactions"
        } else {
            "/api/v2/interactions/batch"
        };
        assert_eq!(server.post(path, body).await.status, 200);
    }
    let all = read_events(&mut stream, &mut buffer, 35);
    let seqs: Vec<u64> = all.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=35).collect::<Vec<_>>(),
        "every event once, in seq order"
    );
}

/// The committed fixture segment followed by an empty next segment chained to it, so the fixture
/// is a sealed segment in the middle of a log.
fn fixture_log(dir: &Path, fixture: &[u8]) {
    std::fs::write(dir.join("00000000000000000001.seg"), fixture).unwrap();
    let footer_at = fixture.len() - mcplog::storage::format::FOOTER_BYTES;
    let Decoded::Footer(footer) = decode_at(fixture, footer_at) else {
        panic!("the fixture is sealed")
    };
    let next = encode_header(&Header {
        first_seq: footer.last_seq + 1,
        created_at_us: 1,
        prev_hash: footer.segment_hash,
    });
    std::fs::write(dir.join("00000000000000000003.seg"), next).unwrap();
}

#[test]
fn verify_detects_every_single_bit_flip_of_a_sealed_segment() {
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/segment-v1.seg"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    fixture_log(dir.path(), &fixture);
    let ok = seg(&["verify"], dir.path());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let path = dir.path().join("00000000000000000001.seg");
    for bit in 0..fixture.len() * 8 {
        let mut flipped = fixture.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &flipped).unwrap();
        let scanned = mcplog::storage::scan_log(dir.path(), |_| {}, |_| {});
        assert!(
            scanned.is_err(),
            "bit {bit} (byte {}) flipped went unnoticed by the scan",
            bit / 8
        );
        let verified = mcplog::storage::verify_log(dir.path(), |_| {});
        assert!(
            verified.is_err(),
            "bit {bit} (byte {}) flipped went unnoticed by verify",
            bit / 8
        );
    }
    // And through the command: exit 1, naming the file and the offset.
    let mut flipped = fixture.clone();
    flipped[HEADER_BYTES + 20] ^= 0x04;
    std::fs::write(&path, &flipped).unwrap();
    let out = seg(&["verify"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("00000000000000000001.seg")
            && report.contains(&format!("offset {HEADER_BYTES}")),
        "{report}"
    );
}

#[test]
fn a_rewritten_record_with_a_recomputed_crc_is_caught_by_the_chain() {
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/segment-v1.seg"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Decoded::Frame { frame, end } = decode_at(&fixture, HEADER_BYTES) else {
        panic!("a frame")
    };
    // Same length, another client timestamp, and a CRC that matches: only the hash can tell.
    let forged = mcplog::event::StoredEvent {
        timestamp: 1.0,
        ..frame
    };
    let mut encoded = Vec::new();
    mcplog::storage::format::encode_frame(&forged, &mut encoded);
    assert_eq!(encoded.len(), end - HEADER_BYTES);
    let mut tampered = fixture.clone();
    tampered[HEADER_BYTES..end].copy_from_slice(&encoded);
    assert!(
        matches!(decode_at(&tampered, HEADER_BYTES), Decoded::Frame { .. }),
        "the forged frame passes its CRC"
    );
    fixture_log(dir.path(), &tampered);
    let out = seg(&["verify"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("segment hash"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_reads_a_directory_while_the_server_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_SEGMENT_MAX_BYTES", "8192")]);
    let (addr, key) = (server.addr, server.key.clone());
    let writer = tokio::spawn(async move {
        let mut client = mcplog::client::Client::connect(addr).await.unwrap();
        for i in 0..600 {
            let body = format!(
                "[{},{}]",
                event("interaction_start", &format!("w-{i}"), "m", 1.0),
                event("interaction_complete", &format!("w-{i}"), "m", 2.0)
            );
            client
                .post("/api/v2/interactions/batch", Some(&key), body)
                .await
                .unwrap();
        }
    });
    let mut rounds = 0;
    while !writer.is_finished() || rounds < 3 {
        let verify = seg(&["verify"], dir.path());
        assert!(
            verify.status.success(),
            "verify failed while the server writes: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let dump = seg(&["dump", "--mcp-id", "m"], dir.path());
        assert!(dump.status.success());
        let seqs: Vec<u64> = lines(&dump.stdout)
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "dump skipped or repeated a seq"
        );
        rounds += 1;
    }
    writer.await.unwrap();
    let ls = seg(&["ls"], dir.path());
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listing.lines().count() > 3 && listing.contains("sealed") && listing.contains("active"),
        "{listing}"
    );
    let stats: Value = serde_json::from_slice(&seg(&["stats"], dir.path()).stdout).unwrap();
    assert_eq!(stats["events"], 1200);
    assert_eq!(stats["by_mcp_id"]["m"]["completed"], 600);
    // The tool counts as the server does, in the same shape (stale aside: it depends on the
    // server's stale_after).
    let mut served = server.get("/api/v2/interactions/stats").await.json()["records"].clone();
    let mut counted = stats["records"].clone();
    served.as_object_mut().unwrap().remove("stale");
    counted.as_object_mut().unwrap().remove("stale");
    assert_eq!(counted, served);
    let dump = seg(&["dump", "--interaction", "w-7"], dir.path());
    assert_eq!(lines(&dump.stdout).len(), 2);
}

/// The segment file holding `marker` in a stored body, and the offset of the frame holding it
/// (the frame starts before the body: found by decoding forward from the header).
fn frame_holding(data: &Path, marker: &str) -> (std::path::PathBuf, usize, usize) {
    for path in crate::common::segment_paths(data) {
        let bytes = std::fs::read(&path).unwrap();
        let mut at = HEADER_BYTES;
        while let Decoded::Frame { frame, end } = decode_at(&bytes, at) {
            if frame.body.contains(marker) {
                return (path, at, end);
            }
            at = end;
        }
    }
    panic!("no frame holds {marker}")
}

fn replay_lines(text: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(text)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A flipped bit inside the last write of the active segment, after its events were acknowledged
/// and replayed: start-up cannot tell it from a torn write, so it cuts the write's bytes into
/// quarantine, records the cut, and numbering goes on past every seq they held, so that a seq a
/// reader was given never names another event. verify, replay (follow or not) and dump say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_the_last_write_is_cut_and_its_seqs_are_never_given_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    for i in 1..=3 {
        let r = server
            .post(
                "/api/v2/interactions",
                event("interaction_start", &format!("one-{i}"), "m", 1.0e9),
            )
            .await;
        assert_eq!(r.json()["seq"], i);
    }
    // One batch, one write: seqs 4 to 8.
    let batch: Vec<String> = (4..=8)
        .map(|i| {
            serde_json::json!({"action": "interaction_start", "interaction_id": format!("batch-{i}"),
                "mcp_id": "m", "timestamp": 1.0e9, "request_data": {"marker": format!("MARK{i:04}")}})
            .to_string()
        })
        .collect();
    let r = server
        .post(
            "/api/v2/interactions/batch",
            format!("[{}]", batch.join(",")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    // A reader is served every seq.
    let served = replay_lines(&server.get("/api/v2/events").await.body);
    let served_seqs: Vec<u64> = served.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(served_seqs, (1..=8).collect::<Vec<_>>());
    server.kill();

    // One bit of seq 6's body flips on disk: frames 7 and 8 of the same write check out behind it.
    let (path, start, end) = frame_holding(&data, "MARK0006");
    let original = std::fs::read(&path).unwrap();
    let mut bytes = original.clone();
    bytes[(start + end) / 2] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();

    let server = Server::start(&data);
    assert!(
        server.log().contains("truncated a torn tail"),
        "{}",
        server.log()
    );
    // A follow stream opened before anything new is written.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET /api/v2/events?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        server.key
    )
    .unwrap();
    let mut buffer = Vec::new();
    let gap = serde_json::json!({"gap": {"after_seq": 5, "next_seq": 9, "reason": "cut"}});
    // The gap is announced as soon as the stream reaches it, before any new event exists.
    let caught_up = read_events(&mut stream, &mut buffer, 6);
    assert_eq!(caught_up[5], gap, "{caught_up:?}");
    // New events get seqs past every cut one: 6, 7 and 8 named other events for the reader.
    let r = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "after-cut", "m", 1.0e9),
        )
        .await;
    assert_eq!(r.json()["seq"], 9, "{}", r.json());
    let followed = read_events(&mut stream, &mut buffer, 7);
    assert_eq!(followed[6]["seq"], 9);
    assert_eq!(followed[6]["event"]["interaction_id"], "after-cut");

    // Replay without follow: the same lines, the gap in its place.
    let replayed = replay_lines(&server.get("/api/v2/events").await.body);
    assert_eq!(replayed.len(), 7, "{replayed:?}");
    let seqs: Vec<u64> = replayed.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 9]);
    assert_eq!(replayed[5], gap);
    // A cursor inside the gap is told what it misses from there on.
    let inside = replay_lines(&server.get("/api/v2/events?after_seq=6").await.body);
    assert_eq!(
        inside[0],
        serde_json::json!({"gap": {"after_seq": 6, "next_seq": 9, "reason": "cut"}})
    );
    assert_eq!(inside[1]["seq"], 9);
    server.kill();

    // The cut bytes are in quarantine/, exactly; repairs.jsonl has the record.
    let quarantine: Vec<_> = std::fs::read_dir(data.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert_eq!(std::fs::read(&quarantine[0]).unwrap(), bytes[start..]);
    let records = std::fs::read_to_string(data.join("segments/repairs.jsonl")).unwrap();
    let records: Vec<Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["kind"], "cut");
    assert_eq!(
        (record["after_seq"].as_u64(), record["first_seq"].as_u64()),
        (Some(5), Some(9))
    );
    assert_eq!(record["cut"]["offset"], start as u64);
    assert_eq!(record["cut"]["bytes"], (bytes.len() - start) as u64);
    assert!(quarantine[0].ends_with(record["quarantine"].as_str().unwrap()));
    // verify reports it, and accepts the log.
    let verify = seg(&["verify"], &data);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{said}");
    assert!(
        said.contains("cut at start-up before seq 9 (after seq 5)")
            && said.contains("seqs 6 to 8 skipped"),
        "{said}"
    );
    // dump prints the same gap line where the seqs skip.
    let dump = seg(&["dump"], &data);
    assert!(dump.status.success());
    let dumped = replay_lines(&dump.stdout);
    assert_eq!(dumped, replayed, "dump and replay print the same lines");
    // And the next start cuts nothing more.
    let server = Server::start(&data);
    assert!(
        !server.log().contains("truncated a torn tail"),
        "{}",
        server.log()
    );
    // Start-up's check reports the recorded cut on every start.
    assert!(
        server.log().contains("the log has a cut made at start-up"),
        "{}",
        server.log()
    );
    assert_eq!(
        server
            .post(
                "/api/v2/interactions",
                event("interaction_start", "later", "m", 1.0e9)
            )
            .await
            .json()["seq"],
        10
    );
}

/// Retention after a cut: the record stays (verify still prints it, start-up still accepts the
/// log), and a replay from before the retained log is told, cause by cause, why each run of seqs
/// is missing: deleted by retention, cut at start-up, deleted by retention again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_before_the_retained_log_names_each_cause_of_the_missing_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("MCPLOG_SEGMENT_MAX_BYTES", "4096"),
        ("MCPLOG_CLEANUP_INTERVAL", "200ms"),
        ("MCPLOG_MAX_RECORDS", "60"),
    ];
    let server = Server::start_with(&data, &env);
    for i in 1..=3 {
        let r = server
            .post(
                "/api/v2/interactions",
                event("interaction_start", &format!("early-{i}"), "m", 1.0e9),
            )
            .await;
        assert_eq!(r.json()["seq"], i);
    }
    server.kill();
    let last = crate::common::segment_paths(&data).pop().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    file.write_all(&[0x5A; 340]).unwrap();
    drop(file);
    let server = Server::start_with(&data, &env);
    let cut_next = 4 + 340 / mcplog::storage::cut::FRAME_BYTES_MIN as u64;
    let mut last_seq = 0;
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
        assert_eq!(r.status, 200);
        last_seq = r.json()["seqs"][9].as_u64().unwrap();
        if round == 0 {
            assert_eq!(r.json()["seqs"][0], cut_next);
        }
    }
    // Until retention has deleted the segment before the cut and some after it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let stats = server.get("/api/v2/interactions/stats").await.json();
        let first = stats["storage"]["first_seq"].as_u64().unwrap();
        if first > cut_next {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "retention deleted nothing: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let gap = |after: u64, next: u64, reason: &str| serde_json::json!({"gap": {"after_seq": after, "next_seq": next, "reason": reason}});
    let replayed = replay_lines(&server.get("/api/v2/events").await.body);
    assert_eq!(replayed[0], gap(0, 4, "retention"));
    assert_eq!(replayed[1], gap(3, cut_next, "cut"));
    assert_eq!(replayed[2], gap(cut_next - 1, first, "retention"));
    assert_eq!(replayed[3]["seq"], first);
    assert_eq!(replayed.len() as u64, 3 + last_seq - first + 1);
    let inside = replay_lines(&server.get("/api/v2/events?after_seq=5&limit=1").await.body);
    assert_eq!(
        inside,
        [
            gap(5, cut_next, "cut"),
            gap(cut_next - 1, first, "retention"),
            replayed[3].clone()
        ]
    );
    server.kill();
    let verify = seg(&["verify"], &data);
    assert!(verify.status.success());
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains(&format!(
            "cut at start-up before seq {cut_next} (after seq 3)"
        )),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let dumped = replay_lines(&seg(&["dump"], &data).stdout);
    assert_eq!(dumped, replayed);
    Server::start_with(&data, &env).kill();
}
