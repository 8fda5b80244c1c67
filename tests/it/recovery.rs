//! Damage to the files: a torn tail of the last segment is truncated and start-up goes on; a
//! flipped byte anywhere else stops start-up, naming the file.

use std::io::Write;

use crate::common::{event, segment_paths, start_expecting_failure, Server};

async fn fill(server: &Server, prefix: &str, count: usize) {
    for i in 0..count {
        let response = server
            .post(
                "/api/v2/interactions",
                event("interaction_start", &format!("{prefix}-{i}"), "m", 1.0),
            )
            .await;
        assert_eq!(response.status, 200);
    }
}

#[tokio::test]
async fn garbage_appended_to_the_last_segment_is_truncated_and_data_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    fill(&server, "g", 50).await;
    server.kill();
    let last = segment_paths(dir.path()).pop().unwrap();
    let clean_len = std::fs::metadata(&last).unwrap().len();
    // Pseudo-random bytes, as a torn write of unsynced pages leaves them.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let garbage: Vec<u8> = (0..1500)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&garbage)
        .unwrap();

    let server = Server::start(dir.path());
    assert!(
        server.log().contains("truncated a torn tail"),
        "{}",
        server.log()
    );
    // Cut back to the last whole frame and sealed there: no seq of the cut bytes is given again
    // (they cannot be told from a flipped bit in an acknowledged write), so a new segment begins
    // past them.
    let kept = std::fs::read(&last).unwrap();
    assert_eq!(
        kept.len() as u64,
        clean_len + mcplog::storage::format::FOOTER_BYTES as u64
    );
    assert!(matches!(
        mcplog::storage::format::decode_at(&kept, clean_len as usize),
        mcplog::storage::format::Decoded::Footer(_)
    ));
    for i in 0..50 {
        assert_eq!(
            server
                .get(&format!("/api/v2/interactions/g-{i}"))
                .await
                .status,
            200,
            "g-{i} lost"
        );
    }
    let next = server
        .post(
            "/api/v2/interactions",
            event("interaction_start", "after", "m", 2.0),
        )
        .await
        .json();
    // 1500 bytes with no valid frame in them may have held 1500 / 34 frames
    // (storage-format.md, "Cuts at start-up"): seqs 51 to 94.
    assert_eq!(
        next["seq"],
        51 + 1500 / mcplog::storage::cut::FRAME_BYTES_MIN as u64
    );
    let quarantined: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(quarantined, [garbage]);
    server.kill();
    // And it starts again after that, cleanly.
    let server = Server::start(dir.path());
    assert!(!server.log().contains("torn tail"));
    assert_eq!(server.get("/api/v2/interactions/after").await.status, 200);
}

#[tokio::test]
async fn a_half_written_last_frame_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    fill(&server, "h", 5).await;
    server.kill();
    let last = segment_paths(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    // Cut the last frame in half: as if the final write never finished.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let server = Server::start(dir.path());
    assert!(server.log().contains("truncated a torn tail"));
    assert_eq!(server.get("/api/v2/interactions/h-3").await.status, 200);
    assert_eq!(server.get("/api/v2/interactions/h-4").await.status, 404);
    // The half frame held seq 5 and could have held more: the next event goes past all of them,
    // where the recorded cut says.
    let records = std::fs::read_to_string(dir.path().join("segments/repairs.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(records.trim()).unwrap();
    let cut = record["cut"]["bytes"].as_u64().unwrap();
    let expected = 5 + cut / mcplog::storage::cut::FRAME_BYTES_MIN as u64;
    assert!(expected > 5);
    assert_eq!(record["first_seq"], expected);
    assert_eq!(
        server
            .post(
                "/api/v2/interactions",
                event("interaction_start", "h-4", "m", 1.0)
            )
            .await
            .json()["seq"],
        expected
    );
}

#[tokio::test]
async fn a_flipped_byte_in_an_older_segment_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("MCPLOG_SEGMENT_MAX_BYTES", "4096")];
    let server = Server::start_with(dir.path(), &env);
    fill(&server, "f", 80).await;
    server.kill();
    let segments = segment_paths(dir.path());
    assert!(
        segments.len() >= 3,
        "expected several segments, got {}",
        segments.len()
    );
    let victim = &segments[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();

    let (status, log) = start_expecting_failure(dir.path());
    assert!(!status.success());
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(log.contains(name), "the error does not name {name}:\n{log}");
    assert!(
        log.contains("offset"),
        "the error does not give an offset:\n{log}"
    );
}

#[tokio::test]
async fn a_flipped_byte_inside_the_last_segment_before_later_writes_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    fill(&server, "m", 20).await;
    server.kill();
    let last = segment_paths(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    // Early in the segment: every later event was written (and synced) after this one.
    bytes[mcplog::storage::format::HEADER_BYTES + 12] ^= 0x01;
    std::fs::write(&last, &bytes).unwrap();
    let (status, log) = start_expecting_failure(dir.path());
    assert!(!status.success());
    assert!(log.contains("not a torn tail"), "{log}");
}
