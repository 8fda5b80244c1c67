//! Start-up time and resident memory of the real server over 1M interactions (4M events).
//!
//! `cargo bench --bench startup` writes a log of 1M interactions (start, two progress, a terminal
//! event; ~210-byte bodies) through the storage writer, then starts the `mcplog` binary on it
//! several times and reports:
//! - the time from spawning `mcplog serve` to its "listening" line (every CRC, seq and hash
//!   checked, every event folded), as events per second, beside the time to merely read the
//!   same files once (the baseline: no log can be replayed faster than it is read);
//! - the server's resident anonymous memory (`RssAnon` in /proc) once listening, minus that of a
//!   server on an empty data directory, per interaction. Mapped segment pages (`RssFile`) are the
//!   payloads, held by the page cache, and are reported apart.
//!
//! `MCPLOG_BENCH_INTERACTIONS` overrides the size (default 1 000 000); `MCPLOG_BENCH_KEEP_DIR`
//! names a directory to write the log into and leave behind (it is emptied first), to profile a
//! start on it afterwards.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcplog::event::{Action, StoredEvent};
use mcplog::storage::{self, LogConfig};

#[path = "common/mod.rs"]
mod common;

const RUNS: usize = 3;
const GROUP_EVENTS: usize = 4096;

fn main() {
    let interactions: u64 = std::env::var("MCPLOG_BENCH_INTERACTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // Under target/ rather than /tmp, which may be a small tmpfs.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let temporary = tempfile::tempdir_in(root).expect("a temporary directory");
    let empty = tempfile::tempdir_in(root).expect("a temporary directory");
    // A kept directory lets a profiler be pointed at the same log afterwards.
    let kept = std::env::var_os("MCPLOG_BENCH_KEEP_DIR").map(std::path::PathBuf::from);
    let dir = kept.as_deref().unwrap_or(temporary.path());
    if kept.is_some() {
        let _ = std::fs::remove_dir_all(dir);
    }

    let started = Instant::now();
    let events = write_log(dir, interactions);
    let bytes = dir_bytes(&dir.join("segments"));
    println!(
        "wrote {interactions} interactions, {events} events, {:.1} MiB of segments in {:.1} s",
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let empty_rss = start_and_measure(empty.path()).1;
    let mut read_s = Vec::new();
    let mut start_s = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..RUNS {
        read_s.push(read_all(&dir.join("segments")).as_secs_f64());
        let (elapsed, memory) = start_and_measure(dir);
        start_s.push(elapsed.as_secs_f64());
        rss.push(memory);
    }
    let read_s = median(read_s);
    let start_s = median(start_s);
    let anon = median(rss.iter().map(|m| m.anon_kib as f64).collect());
    let file = median(rss.iter().map(|m| m.file_kib as f64).collect());
    let per_interaction = (anon - empty_rss.anon_kib as f64) * 1024.0 / interactions as f64;
    println!(
        "read the segments once (baseline): {:.3} s, {:.2} GB/s",
        read_s,
        bytes as f64 / read_s / 1e9
    );
    println!(
        "start-up to listening: {:.3} s median of {RUNS}, {:.2} M events/s, {:.2} GB/s, {:.2}x the read",
        start_s,
        events as f64 / start_s / 1e6,
        bytes as f64 / start_s / 1e9,
        read_s / start_s
    );
    println!(
        "resident memory once listening: RssAnon {:.1} MiB (empty data dir: {:.1} MiB), \
         RssFile {:.1} MiB (mapped segments)",
        anon / 1024.0,
        empty_rss.anon_kib as f64 / 1024.0,
        file / 1024.0
    );
    println!("resident memory per interaction (RssAnon above empty): {per_interaction:.0} bytes");
}

/// Writes `interactions` interactions of four events each, in groups as the engine would, with
/// receive times of now so that retention keeps them.
fn write_log(data_dir: &Path, interactions: u64) -> u64 {
    let config = LogConfig {
        dir: data_dir.join("segments"),
        segment_max_bytes: 256 * 1024 * 1024,
        segment_max_age: Duration::from_secs(86_400),
        disk: mcplog::storage::Disk::real(),
    };
    let now_us = mcplog::clock::now_us();
    let now_s = now_us as f64 / 1e6;
    let mut opened = storage::open(&config, now_us, |_| {}).expect("a new log");
    let mcps: Vec<String> = (0..50).map(|m| format!("mcp_server_{m:03}")).collect();
    // Owned strings per group, then events borrowing them.
    let mut pending: Vec<(Action, f64, String, usize, String)> = Vec::new();
    let mut seq = opened.writer.next_seq();
    let flush = |pending: &mut Vec<(Action, f64, String, usize, String)>,
                 seq: &mut u64,
                 writer: &mut storage::LogWriter| {
        let events: Vec<StoredEvent<'_>> = pending
            .iter()
            .enumerate()
            .map(|(n, (action, timestamp, id, mcp, body))| StoredEvent {
                seq: *seq + n as u64,
                write_index: n as u32,
                received_at_us: now_us,
                key_id: [7; 8],
                action: *action,
                timestamp: *timestamp,
                interaction_id: id,
                mcp_id: &mcps[*mcp],
                event_id: None,
                body,
            })
            .collect();
        writer.append(&events, now_us).result.expect("appending");
        *seq += events.len() as u64;
        pending.clear();
    };
    let mut events = 0;
    for i in 0..interactions {
        let id = format!("7f3a2c1e-{i:08x}-4b6d-9e21-0c5f8a7b3d10");
        let mcp = (i % 50) as usize;
        let start = now_s - 86_400.0 + i as f64 * 0.05;
        for (action, t) in common::lifecycle(start, 0.5, i % 10 == 0) {
            let body = format!(
                r#"{{"action":"{}","interaction_id":"{id}","mcp_id":"{}","timestamp":{t},"{}":{{"file":"invoice-{i}.pdf","pages":3,"lang":"en"}}}}"#,
                action.wire_name(),
                mcps[mcp],
                action.payload_field()
            );
            pending.push((action, t, id.clone(), mcp, body));
            events += 1;
            if pending.len() == GROUP_EVENTS {
                flush(&mut pending, &mut seq, &mut opened.writer);
            }
        }
    }
    if !pending.is_empty() {
        flush(&mut pending, &mut seq, &mut opened.writer);
    }
    events
}

#[derive(Debug, Clone, Copy)]
struct Resident {
    anon_kib: u64,
    file_kib: u64,
}

/// Starts the server on `data_dir`, waits for its "listening" line, reads its resident memory,
/// and stops it.
fn start_and_measure(data_dir: &Path) -> (Duration, Resident) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcplog"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("MCPLOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning mcplog serve");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let listening = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening on") => break started.elapsed(),
            Some(Ok(_)) => continue,
            _ => {
                let _ = child.kill();
                panic!("mcplog serve ended before listening");
            }
        }
    };
    // Keep draining its log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let resident = resident(&child);
    stop(child);
    (listening, resident)
}

fn resident(child: &Child) -> Resident {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .expect("reading /proc/<pid>/status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
    };
    Resident {
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
    }
}

fn stop(mut child: Child) {
    // SIGTERM: a clean shutdown, so the next run does not find a lock or a torn tail.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Reads every segment file once from start to end, as the cheapest conceivable replay would.
fn read_all(segments: &Path) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for entry in std::fs::read_dir(segments).expect("the segments directory") {
        let mut file = std::fs::File::open(entry.expect("an entry").path()).expect("a segment");
        loop {
            let n = file.read(&mut buf).expect("reading a segment");
            if n == 0 {
                break;
            }
            total += buf[..n]
                .iter()
                .step_by(4096)
                .map(|&b| b as u64)
                .sum::<u64>();
        }
    }
    std::hint::black_box(total);
    started.elapsed()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("a directory")
        .map(|e| e.expect("an entry").metadata().expect("metadata").len())
        .sum()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
