//! The operator's ways forward, on real files with the real binaries: `mcplog-seg repair` after
//! damage start-up refuses, `mcplog-seg backup` of a live log, and `verify` agreeing with
//! start-up on every directory.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{event, segment_paths, start_expecting_failure, Server};

fn seg(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A stopped server's data directory holding `count` events in several small segments; returns
/// the interaction ids in seq order.
async fn small_segments(data: &Path, count: usize) -> Vec<String> {
    let server = Server::start_with(data, &[("MCPLOG_SEGMENT_MAX_BYTES", "4096")]);
    let mut ids = Vec::new();
    for i in 0..count {
        let id = format!("r-{i:04}");
        let body = serde_json::json!({"action": "interaction_start", "interaction_id": id,
            "mcp_id": "m", "timestamp": 1.0e9, "request_data": {"pad": "p".repeat(200), "marker": format!("MARK{i:04}")}});
        let r = server.post("/api/v2/interactions", body.to_string()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["seq"], i as u64 + 1);
        ids.push(id);
    }
    server.kill();
    ids
}

/// Flips one byte of the marker of event `i`, wherever it is stored.
fn rot_event(data: &Path, i: usize) -> std::path::PathBuf {
    let marker = format!("MARK{i:04}");
    for path in segment_paths(data) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(8).position(|w| w == marker.as_bytes()) {
            bytes[at + 4] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
            return path;
        }
    }
    panic!("no {marker}");
}

async fn present(server: &Server, id: &str) -> bool {
    match server
        .get(&format!("/api/v2/interactions/{id}"))
        .await
        .status
        .as_u16()
    {
        200 => true,
        404 => false,
        other => panic!("{id}: {other}"),
    }
}

#[tokio::test]
async fn repair_quarantines_damage_records_the_break_and_the_server_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids = small_segments(&data, 60).await;
    let segments_before = segment_paths(&data);
    assert!(segments_before.len() >= 4, "{}", segments_before.len());
    // Damage in the middle of a sealed segment that is neither first nor last.
    let damaged = rot_event(&data, 20);
    assert!(damaged != segments_before[0] && damaged != *segments_before.last().unwrap());
    let damaged_bytes = std::fs::read(&damaged).unwrap();

    let (status, log) = start_expecting_failure(&data);
    assert_eq!(status.code(), Some(1), "{log}");
    let verify = seg(&["verify"], &data);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));

    let repaired = seg(&["repair"], &data);
    assert!(repaired.status.success(), "{}", text(&repaired));
    let said = text(&repaired);
    assert!(said.contains("recorded chain break"), "{said}");
    // The damaged segment, whole and unchanged, is in the quarantine.
    let quarantine: Vec<_> = std::fs::read_dir(data.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert_eq!(std::fs::read(&quarantine[0]).unwrap(), damaged_bytes);
    assert!(data.join("segments/repairs.jsonl").exists());

    // verify accepts the log and reports the break; start-up agrees.
    let verify = seg(&["verify"], &data);
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        text(&verify).contains("chain break before seq"),
        "{}",
        text(&verify)
    );
    let server = Server::start(&data);
    assert!(server
        .log()
        .contains("chain break recorded by mcplog-seg repair"));
    // Every event outside the damaged segment, and those before the damage in it, are there;
    // the damaged event is not.
    assert!(!present(&server, &ids[20]).await);
    let mut kept = 0;
    for id in &ids {
        if present(&server, id).await {
            kept += 1;
        }
    }
    assert!(present(&server, &ids[0]).await && present(&server, &ids[59]).await);
    assert!(kept >= 60 - 12, "kept {kept} of 60");
    // Writing goes on after the last stored seq.
    let r = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "after", "m", 1.0e9),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["seq"], 61);
    // A repair while the server runs is refused by the data directory's lock.
    let refused = seg(&["repair"], &data);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("in use"), "{}", text(&refused));
    server.kill();
    // Once repaired, there is nothing more to do; restarts keep working.
    let again = seg(&["repair"], &data);
    assert!(
        text(&again).contains("nothing to repair"),
        "{}",
        text(&again)
    );
    let server = Server::start(&data);
    assert!(present(&server, "after").await);
}

#[tokio::test]
async fn repair_of_the_active_segment_never_gives_a_seq_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    for i in 0..10 {
        let body = serde_json::json!({"action": "interaction_start", "interaction_id": format!("a-{i}"),
            "mcp_id": "m", "timestamp": 1.0e9, "request_data": {"marker": format!("MARK{i:04}")}});
        assert_eq!(
            server
                .post("/api/v2/interactions", body.to_string())
                .await
                .status,
            200
        );
    }
    server.kill();
    // Damage before later writes: not a torn tail.
    rot_event(&data, 3);
    let (status, log) = start_expecting_failure(&data);
    assert_eq!(status.code(), Some(1), "{log}");
    let repaired = seg(&["repair"], &data);
    assert!(repaired.status.success(), "{}", text(&repaired));
    assert!(seg(&["verify"], &data).status.success());
    let server = Server::start(&data);
    for i in 0..3 {
        assert!(present(&server, &format!("a-{i}")).await);
    }
    for i in 3..10 {
        assert!(!present(&server, &format!("a-{i}")).await, "a-{i}");
    }
    // Seqs 4 to 10 went to quarantined events: a new event gets 11.
    let r = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "new", "m", 1.0e9),
        )
        .await;
    assert_eq!(r.json()["seq"], 11, "{}", r.json());
    let replay = server.get("/api/v2/events").await;
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&replay.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, [1, 2, 3, 11]);
    // The jump is announced where it is, with its cause: replay never passes a gap in silence.
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(
        lines[3],
        serde_json::json!({"gap": {"after_seq": 3, "next_seq": 11, "reason": "repair"}})
    );
    // Also to a follow stream.
    let follow = server.get("/api/v2/events?follow=true&limit=4").await;
    let followed: Vec<serde_json::Value> = String::from_utf8_lossy(&follow.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(followed, lines);
    // mcplog-seg dump prints the same lines.
    server.kill();
    let dump = seg(&["dump"], &data);
    let dumped: Vec<serde_json::Value> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dumped, lines);
    let dumped_from = seg(&["dump", "--from-seq", "5"], &data);
    assert_eq!(
        String::from_utf8_lossy(&dumped_from.stdout).lines().next(),
        Some(r#"{"gap":{"after_seq":4,"next_seq":11,"reason":"repair"}}"#)
    );
}

/// Ways a data directory can be found; the mutation and whether start-up should accept it.
type Mutation = (&'static str, fn(&Path), bool);

#[tokio::test]
async fn verify_and_start_up_agree_on_every_directory() {
    fn segs(data: &Path) -> Vec<std::path::PathBuf> {
        segment_paths(data)
    }
    fn unseal(path: &Path) {
        let len = std::fs::metadata(path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(len - 72).unwrap();
    }
    let mutations: Vec<Mutation> = vec![
        ("untouched", |_| {}, true),
        (
            "a torn tail on the last segment",
            |d| {
                let last = segs(d).pop().unwrap();
                let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
                std::io::Write::write_all(&mut f, &[7u8; 13]).unwrap();
            },
            true,
        ),
        (
            // The writer seals a segment before it creates the next, so this is damage.
            "an empty file after the active segment",
            |d| {
                let last = segs(d).pop().unwrap();
                let name = last.file_name().unwrap().to_str().unwrap();
                let next: u64 = name.trim_end_matches(".seg").parse::<u64>().unwrap() + 1000;
                std::fs::write(d.join(format!("segments/{next:020}.seg")), b"").unwrap();
            },
            false,
        ),
        (
            "an unsealed segment, then one without a whole header",
            |d| {
                let all = segs(d);
                // Drop the active segment; unseal the one before; a header-less file after it.
                std::fs::remove_file(all.last().unwrap()).unwrap();
                unseal(&all[all.len() - 2]);
                std::fs::write(all.last().unwrap(), b"\x89MCPLOG").unwrap();
            },
            false,
        ),
        (
            "an unsealed segment that is not the last",
            |d| unseal(&segs(d)[1]),
            false,
        ),
        (
            "a flipped bit in a sealed segment",
            |d| {
                let path = &segs(d)[1];
                let mut bytes = std::fs::read(path).unwrap();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x10;
                std::fs::write(path, bytes).unwrap();
            },
            false,
        ),
        (
            "a missing middle segment",
            |d| std::fs::remove_file(&segs(d)[1]).unwrap(),
            false,
        ),
        (
            "a header-less file in the middle",
            |d| {
                let all = segs(d);
                let name = all[1].file_name().unwrap().to_str().unwrap();
                let between: u64 = name.trim_end_matches(".seg").parse::<u64>().unwrap() + 1;
                std::fs::write(d.join(format!("segments/{between:020}.seg")), b"\x89MC").unwrap();
            },
            false,
        ),
    ];
    let template = tempfile::tempdir().unwrap();
    small_segments(&template.path().join("data"), 40).await;
    for (name, mutate, starts) in mutations {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        copy_dir(&template.path().join("data"), &data);
        mutate(&data);
        let verified = seg(&["verify"], &data).status.success();
        let started = if starts {
            let server = Server::start(&data);
            server.kill();
            true
        } else {
            let (status, _) = start_expecting_failure(&data);
            assert_eq!(status.code(), Some(1), "{name}");
            false
        };
        assert_eq!(
            (verified, started),
            (starts, starts),
            "{name}: verify and start-up disagree"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_live_log_is_checked_and_a_server_starts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &[("MCPLOG_SEGMENT_MAX_BYTES", "8192")]);
    let mut acked = Vec::new();
    for i in 0..80 {
        let id = format!("b-{i}");
        let r = server
            .post(
                "/api/v2/interactions",
                event("interaction_start", &id, "m", 1.0e9),
            )
            .await;
        assert_eq!(r.status, 200);
        acked.push(id);
    }
    // Keep writing while the backup runs.
    let addr = server.addr;
    let key = server.key.clone();
    let writer = tokio::spawn(async move {
        let mut client = mcplog::client::Client::connect(addr).await.unwrap();
        for i in 0..200 {
            let body = event("interaction_start", &format!("during-{i}"), "m", 1.0e9);
            client
                .post("/api/v2/interactions", Some(&key), body)
                .await
                .unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let dest = dir.path().join("copy");
    let data_arg = data.to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking({
        let dest = dest.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
                .args(["backup", &data_arg])
                .arg(&dest)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    writer.await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let said = text(&output);
    assert!(said.contains("chain head"), "{said}");
    assert!(seg(&["verify"], &dest).status.success());
    // Into a directory that is not empty: refused.
    let again = seg(&["backup", data.to_str().unwrap()], &dest);
    assert!(!again.status.success());
    server.kill();

    // A server starts from the copy with every event acknowledged before the backup began, and
    // with the same keys.
    let restored = Server::start(&dest);
    assert_eq!(
        restored.key,
        std::fs::read_to_string(data.join("admin.key"))
            .unwrap()
            .trim()
    );
    for id in &acked {
        assert!(present(&restored, id).await, "{id} missing from the backup");
    }
    let stats = restored.get("/api/v2/interactions/stats").await.json();
    let last_seq = stats["storage"]["last_seq"].as_u64().unwrap();
    assert!(last_seq >= 80);
    assert_eq!(stats["records"]["total"].as_u64().unwrap(), last_seq);
}

#[tokio::test]
async fn the_offline_tool_refuses_what_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    // Not a data directory: an error, never "ok: 0 segments".
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for target in [empty.clone(), dir.path().join("missing")] {
        let verify = seg(&["verify"], &target);
        assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
        assert!(
            text(&verify).contains("not a data directory"),
            "{}",
            text(&verify)
        );
    }
    // A backup of something that is not a log creates nothing.
    let dest = dir.path().join("dest");
    let backup = seg(&["backup", empty.to_str().unwrap()], &dest);
    assert!(!backup.status.success());
    assert!(!dest.exists());
    // Something named like a segment that is not a regular file is refused by the tool and by
    // start-up alike, rather than read for ever.
    let data = dir.path().join("data");
    small_segments(&data, 3).await;
    let link = data.join("segments/00000000000000009999.seg");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let verify = seg(&["verify"], &data);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        text(&verify).contains("not a regular file"),
        "{}",
        text(&verify)
    );
    let backup = seg(
        &["backup", data.to_str().unwrap()],
        &dir.path().join("copy"),
    );
    assert!(!backup.status.success());
    let (status, log) = start_expecting_failure(&data);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
}

#[tokio::test]
async fn a_forged_and_resealed_segment_is_refused_by_start_up_and_verify_naming_the_link() {
    use mcplog::storage::format::{self, Decoded};
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_segments(&data, 40).await;
    let segments = segment_paths(&data);
    assert!(segments.len() >= 4);
    // Rewrite one event of a middle segment and reseal it as a forger would: frame CRC, footer
    // hash and footer CRC recomputed. The segment checks out alone; the next one's header still
    // names the old hash.
    let forged = &segments[1];
    let mut bytes = std::fs::read(forged).unwrap();
    let at = format::HEADER_BYTES;
    let Decoded::Frame { frame, end } = format::decode_at(&bytes, at) else {
        panic!("a frame")
    };
    let changed = mcplog::event::StoredEvent {
        timestamp: frame.timestamp + 1.0,
        ..frame
    };
    let mut encoded = Vec::new();
    format::encode_frame(&changed, &mut encoded);
    assert_eq!(encoded.len(), end - at);
    bytes[at..end].copy_from_slice(&encoded);
    let footer_at = bytes.len() - format::FOOTER_BYTES;
    let Decoded::Footer(footer) = format::decode_at(&bytes, footer_at) else {
        panic!("a sealed segment")
    };
    let resealed = format::Footer {
        segment_hash: sha2::Sha256::digest(&bytes[..footer_at]).into(),
        ..footer
    };
    bytes[footer_at..].copy_from_slice(&format::encode_footer(&resealed));
    std::fs::write(forged, &bytes).unwrap();

    let next = segments[2]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let (status, log) = start_expecting_failure(&data);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("hash chain broken") && log.contains(&next),
        "{log}"
    );
    let verify = seg(&["verify"], &data);
    assert_eq!(verify.status.code(), Some(1));
    let said = text(&verify);
    assert!(
        said.contains("hash chain broken") && said.contains(&next),
        "{said}"
    );
    // The next segment's bytes are whole: repair records the broken link and moves nothing.
    let before = std::fs::read(&segments[2]).unwrap();
    let repaired = seg(&["repair"], &data);
    assert!(repaired.status.success(), "{}", text(&repaired));
    assert!(
        std::fs::read(&segments[2]).unwrap() == before,
        "repair rewrote a segment whose own bytes check out"
    );
    let quarantined = std::fs::read_dir(data.join("quarantine")).map_or(0, |d| d.count());
    assert_eq!(quarantined, 0, "{}", text(&repaired));
    assert_eq!(seg(&["verify"], &data).status.code(), Some(0));
}

#[tokio::test]
async fn backup_into_the_live_data_directory_is_refused_however_it_is_spelled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_segments(&data, 3).await;
    let listing = |path: &Path| -> Vec<std::path::PathBuf> {
        let mut all = Vec::new();
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() && !path.is_symlink() {
                    stack.push(path.clone());
                }
                all.push(path);
            }
        }
        all.sort();
        all
    };
    let before = listing(&data);
    // A link outside the data directory that points into it.
    let link = dir.path().join("into-data");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let dangling = dir.path().join("nowhere");
    std::os::unix::fs::symlink(data.join("not-yet"), &dangling).unwrap();
    let spellings = [
        data.clone(),
        data.join("backup"),
        data.join("segments"),
        data.join("deep/er/copy"),
        dir.path().join("elsewhere/../data/copy"),
        data.join("segments/../copy"),
        link.join("copy"),
        link.clone(),
        dangling.join("copy"),
    ];
    for dest in &spellings {
        let output = seg(&["backup", data.to_str().unwrap()], dest);
        assert!(
            !output.status.success(),
            "{}: {}",
            dest.display(),
            text(&output)
        );
        let said = text(&output);
        assert!(
            said.contains("inside the data directory") || said.contains("leads nowhere"),
            "{}: {said}",
            dest.display()
        );
        assert_eq!(
            listing(&data),
            before,
            "{}: something was written",
            dest.display()
        );
    }
    assert!(!dir.path().join("elsewhere").exists());
    // A relative path that climbs into it, from inside a subdirectory of the data directory.
    let output = Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .current_dir(data.join("segments"))
        .args(["backup", data.to_str().unwrap(), "../copy"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert_eq!(listing(&data), before);
    // Beside it is fine, also through a `..` that leaves it.
    let output = seg(
        &["backup", data.to_str().unwrap()],
        &data.join("segments/../../copy"),
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(seg(&["verify"], &dir.path().join("copy")).status.success());
}

/// A header that does not check out, on the first, a middle and the last segment: repair keeps
/// every frame behind it that checks out (under a rebuilt header) and always records the break,
/// so verify never prints a plain "ok" over a repair; no seq goes missing, so replay has no gap.
#[tokio::test]
async fn repair_of_a_damaged_header_keeps_every_frame_and_records_the_break() {
    let template = tempfile::tempdir().unwrap();
    let ids = small_segments(&template.path().join("data"), 40).await;
    let count = segment_paths(&template.path().join("data")).len();
    assert!(count >= 4, "{count}");
    for (name, which) in [("first", 0), ("middle", 1), ("last", count - 1)] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        copy_dir(&template.path().join("data"), &data);
        let victim = segment_paths(&data)[which].clone();
        let mut bytes = std::fs::read(&victim).unwrap();
        let original = bytes.clone();
        bytes[40] ^= 0x08; // inside prev_hash: the header's CRC no longer holds
        std::fs::write(&victim, &bytes).unwrap();
        let (status, log) = start_expecting_failure(&data);
        assert_eq!(status.code(), Some(1), "{name}: {log}");

        let repaired = seg(&["repair"], &data);
        assert!(repaired.status.success(), "{name}: {}", text(&repaired));
        assert!(
            text(&repaired).contains("kept") && !text(&repaired).contains("kept 0 frames"),
            "{name}: {}",
            text(&repaired)
        );
        let quarantine: Vec<_> = std::fs::read_dir(data.join("quarantine"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(quarantine.len(), 1, "{name}");
        assert_eq!(std::fs::read(&quarantine[0]).unwrap(), bytes, "{name}");
        let records = std::fs::read_to_string(data.join("segments/repairs.jsonl")).unwrap();
        assert_eq!(records.lines().count(), 1, "{name}: {records}");
        let verify = seg(&["verify"], &data);
        assert!(verify.status.success(), "{name}: {}", text(&verify));
        assert!(
            text(&verify).contains("chain break before seq"),
            "{name}: {}",
            text(&verify)
        );
        // The rebuilt segment holds the same frames as before.
        let rebuilt = std::fs::read(&victim).unwrap();
        let frames_end = |b: &[u8]| {
            let mut at = mcplog::storage::format::HEADER_BYTES;
            while let mcplog::storage::format::Decoded::Frame { end, .. } =
                mcplog::storage::format::decode_at(b, at)
            {
                at = end;
            }
            at
        };
        assert_eq!(
            rebuilt[68..frames_end(&rebuilt)],
            original[68..frames_end(&original)],
            "{name}"
        );
        let server = Server::start(&data);
        for id in &ids {
            assert!(present(&server, id).await, "{name}: {id} lost");
        }
        let replay = server.get("/api/v2/events").await;
        let text_body = String::from_utf8_lossy(&replay.body).into_owned();
        assert_eq!(text_body.lines().count(), 40, "{name}: {text_body}");
        assert!(!text_body.contains("\"gap\""), "{name}");
        let r = server
            .post(
                "/api/v2/interactions",
                event("interaction_start", "after", "m", 1.0e9),
            )
            .await;
        assert_eq!(r.json()["seq"], 41, "{name}");
    }
}

/// The first segment damaged past saving (its header and first frame unreadable): it is removed
/// (its copy in quarantine), and the break is recorded although no segment comes before it:
/// verify reports it, and replay announces the missing seqs as a repair, not as retention.
#[tokio::test]
async fn repair_that_removes_the_first_segment_records_the_break() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_segments(&data, 40).await;
    let first = segment_paths(&data)[0].clone();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[..100].fill(0);
    std::fs::write(&first, &bytes).unwrap();
    let repaired = seg(&["repair"], &data);
    assert!(repaired.status.success(), "{}", text(&repaired));
    assert!(!first.exists());
    let verify = seg(&["verify"], &data);
    assert!(verify.status.success(), "{}", text(&verify));
    let second_first_seq = segment_paths(&data)[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(".seg")
        .parse::<u64>()
        .unwrap();
    assert!(
        text(&verify).contains(&format!(
            "chain break before seq {second_first_seq} (after seq 0)"
        )),
        "{}",
        text(&verify)
    );
    let server = Server::start(&data);
    let replay = server.get("/api/v2/events").await;
    let first_line = String::from_utf8_lossy(&replay.body)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        first_line,
        format!(r#"{{"gap":{{"after_seq":0,"next_seq":{second_first_seq},"reason":"repair"}}}}"#)
    );
}

/// Damage at the end of the active segment too, behind the damage start-up refused: the frames
/// there held seqs no valid frame shows any more, so repair numbers past every seq those bytes
/// may have held, as start-up's cuts do, rather than past the last frame it can still read.
#[tokio::test]
async fn repair_of_the_active_segment_numbers_past_damaged_frames_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    for i in 0..10 {
        let body = serde_json::json!({"action": "interaction_start", "interaction_id": format!("z-{i}"),
            "mcp_id": "m", "timestamp": 1.0e9, "request_data": {"marker": format!("MARK{i:04}")}});
        let r = server.post("/api/v2/interactions", body.to_string()).await;
        assert_eq!(r.json()["seq"], i + 1);
    }
    server.kill();
    // Seq 4 damaged with later writes behind it (not a torn tail), and seqs 9 and 10 as well.
    for i in [3, 8, 9] {
        rot_event(&data, i);
    }
    let (status, log) = start_expecting_failure(&data);
    assert_eq!(status.code(), Some(1), "{log}");
    let repaired = seg(&["repair"], &data);
    assert!(repaired.status.success(), "{}", text(&repaired));
    let server = Server::start(&data);
    let r = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "new", "m", 1.0e9),
        )
        .await;
    let seq = r.json()["seq"].as_u64().unwrap();
    assert!(
        seq > 10,
        "seq {seq} was acknowledged for z-{} before",
        seq - 1
    );
}

/// Seqs no log reaches, claimed by a forged footer or an edited `repairs.jsonl`, are refused with
/// a message: `repair` changes nothing and does not panic (it once overflowed, after moving the
/// segment aside), start-up refuses rather than hanging or serving 503s, `verify` names it.
#[tokio::test]
async fn seqs_beyond_any_log_are_refused_not_numbered_past() {
    use mcplog::storage::format::{encode_footer, Footer};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_segments(&data, 3).await;
    let last = segment_paths(&data).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    bytes.push(0x07);
    bytes.extend_from_slice(&encode_footer(&Footer {
        last_seq: u64::MAX,
        data_end: 0,
        received_min_us: 0,
        received_max_us: 0,
        segment_hash: [0; 32],
    }));
    std::fs::write(&last, &bytes).unwrap();
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = segment_paths(&data)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    let output = seg(&["repair"], &data);
    assert!(!output.status.success(), "{}", text(&output));
    assert_ne!(
        output.status.code(),
        Some(101),
        "a panic: {}",
        text(&output)
    );
    assert!(
        text(&output).contains("beyond any log"),
        "{}",
        text(&output)
    );
    for (path, content) in &before {
        assert_eq!(&std::fs::read(path).unwrap(), content, "{path:?} changed");
    }
    assert!(
        !data.join("quarantine").exists(),
        "a refused repair moved bytes"
    );

    // An edited record naming the last seq there is.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_segments(&data, 3).await;
    let record = serde_json::json!({
        "repaired_at_us": 1, "first_seq": u64::MAX, "after_seq": 3, "prev_hash": "00",
        "kept_hash": "00", "quarantine": "", "reason": "edited"
    });
    std::fs::write(
        data.join("segments").join("repairs.jsonl"),
        format!("{record}\n"),
    )
    .unwrap();
    let (status, log) = start_expecting_failure(&data);
    assert!(!status.success(), "{log}");
    assert!(log.contains("beyond any log"), "{log}");
    let output = seg(&["verify"], &data);
    assert!(!output.status.success(), "{}", text(&output));
    assert_ne!(
        output.status.code(),
        Some(101),
        "a panic: {}",
        text(&output)
    );
}

/// A bind mount shows the data directory under another path: `backup` refuses it there too (by
/// device and inode). Needs the right to mount; skipped, saying so, where there is none.
#[tokio::test]
async fn backup_into_the_data_directory_through_a_bind_mount_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_segments(&data, 3).await;
    let mount_point = dir.path().join("elsewhere");
    std::fs::create_dir(&mount_point).unwrap();
    let mounted = Command::new("mount")
        .arg("--bind")
        .arg(&data)
        .arg(&mount_point)
        .output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no right to bind-mount here");
        return;
    }
    let dest = mount_point.join("backup");
    let output = Command::new(env!("CARGO_BIN_EXE_mcplog-seg"))
        .arg("backup")
        .arg(&data)
        .arg(&dest)
        .output()
        .unwrap();
    let created = data.join("backup").exists();
    let _ = Command::new("umount").arg(&mount_point).status();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("inside the data directory"),
        "{}",
        text(&output)
    );
    assert!(!created, "the backup was written into the data directory");
}

/// A repair stopped after it re-sealed the damaged last segment but before it made the new one
/// (a crash, a kill): the seqs the quarantined bytes held were recorded as the repair began, so
/// the next start numbers past them rather than giving them again (a hostile pass found seqs
/// 2..6, served before, given to new events, and `verify` saying a plain "ok").
#[tokio::test]
async fn a_repair_stopped_half_way_never_leads_to_a_seq_given_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    for i in 0..10 {
        let body = serde_json::json!({"action": "interaction_start", "interaction_id": format!("h-{i}"),
            "mcp_id": "m", "timestamp": 1.0e9, "request_data": {"marker": format!("MARK{i:04}")}});
        let r = server.post("/api/v2/interactions", body.to_string()).await;
        assert_eq!(r.json()["seq"], i + 1);
    }
    server.kill();
    for i in [3, 8] {
        rot_event(&data, i);
    }
    let repaired = seg(&["repair"], &data);
    assert!(repaired.status.success(), "{}", text(&repaired));
    // Undo what the repair did after re-sealing: the new segment and the record of its link.
    let segments = data.join("segments");
    let newest = segment_paths(&data).pop().unwrap();
    std::fs::remove_file(&newest).unwrap();
    let records = std::fs::read_to_string(segments.join("repairs.jsonl")).unwrap();
    let lines: Vec<&str> = records.lines().collect();
    assert!(
        lines.len() >= 2,
        "no record made as the repair began: {records}"
    );
    std::fs::write(segments.join("repairs.jsonl"), format!("{}\n", lines[0])).unwrap();
    let server = Server::start(&data);
    let r = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "new", "m", 1.0e9),
        )
        .await;
    let seq = r.json()["seq"].as_u64().unwrap();
    assert!(
        seq > 10,
        "seq {seq} was acknowledged for h-{} before",
        seq - 1
    );
    drop(server);
    let verified = seg(&["verify"], &data);
    assert!(
        text(&verified).contains("repair"),
        "verify says nothing of the repair: {}",
        text(&verified)
    );
}
