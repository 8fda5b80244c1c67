//! Criterion benches for the segment log, in events per second:
//!
//! - `append/group_of_N`: one group commit of N events (encode, one write, one fdatasync), the
//!   writer's whole job apart from the fold;
//! - `replay/events_N`: opening a log of N events and folding every one into a fresh projection,
//!   which is what a start does.
//!
//! Run with `cargo bench --bench log`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mcplog::event::{Action, StoredEvent};
use mcplog::projector::Projection;
use mcplog::storage::{self, LogConfig};

const BODY: &str = r#"{"action":"interaction_start","interaction_id":"bench-000000","mcp_id":"ocr_workflow_mcp_001","timestamp":1763900000.25,"request_data":{"file":"invoice-2026-11.pdf","pages":3,"lang":"en"}}"#;

fn config(dir: &std::path::Path) -> LogConfig {
    LogConfig {
        dir: dir.join("segments"),
        segment_max_bytes: 64 * 1024 * 1024,
        segment_max_age: Duration::from_secs(86_400),
        disk: mcplog::storage::Disk::real(),
    }
}

fn group(first_seq: u64, ids: &[String]) -> Vec<StoredEvent<'_>> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| StoredEvent {
            seq: first_seq + i as u64,
            write_index: i as u32,
            received_at_us: 1_763_900_000_000_000,
            key_id: [7; 8],
            action: [Action::Start, Action::Progress, Action::Complete][i % 3],
            timestamp: 1_763_900_000.25,
            interaction_id: id,
            mcp_id: "ocr_workflow_mcp_001",
            event_id: None,
            body: BODY,
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let mut bench = c.benchmark_group("append");
    bench
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for size in [1usize, 100, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = storage::open(&config(dir.path()), 1, |_| {}).unwrap();
        let ids: Vec<String> = (0..size).map(|i| format!("bench-{i:06}")).collect();
        bench.throughput(Throughput::Elements(size as u64));
        bench.bench_with_input(BenchmarkId::new("group_of", size), &size, |b, _| {
            b.iter(|| {
                let events = group(opened.writer.next_seq(), &ids);
                let written = opened.writer.append(&events, 1);
                written.result.unwrap();
                for change in written.changes {
                    opened.catalog.apply(change);
                }
            })
        });
    }
    bench.finish();
}

fn replay(c: &mut Criterion) {
    let mut bench = c.benchmark_group("replay");
    bench
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    let events_total = 200_000usize;
    let dir = tempfile::tempdir().unwrap();
    {
        let mut opened = storage::open(&config(dir.path()), 1, |_| {}).unwrap();
        for chunk in 0..events_total / 1000 {
            // Three events per interaction: start, progress, complete.
            let ids: Vec<String> = (0..1000)
                .map(|i| format!("i-{}", (chunk * 1000 + i) / 3))
                .collect();
            let events = group(opened.writer.next_seq(), &ids);
            opened.writer.append(&events, 1).result.unwrap();
        }
    }
    let bytes: u64 = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // What `mcplog-seg verify` does: every CRC, seq and the hash chain, no fold, read-only.
    bench.throughput(Throughput::Bytes(bytes));
    bench.bench_function(BenchmarkId::new("verify_bytes", bytes), |b| {
        b.iter(|| {
            let mut events = 0u64;
            storage::scan_log(&dir.path().join("segments"), |_| events += 1, |_| {}).unwrap();
            assert_eq!(events, events_total as u64);
        })
    });
    bench.throughput(Throughput::Elements(events_total as u64));
    bench.bench_function(BenchmarkId::new("events", events_total), |b| {
        b.iter(|| {
            let mut projection = Projection::new();
            let opened = storage::open(&config(dir.path()), 1, |e| projection.apply(e)).unwrap();
            assert_eq!(projection.events_total(), events_total as u64);
            drop(opened);
        })
    });
    bench.finish();
}

criterion_group!(benches, append, replay);
criterion_main!(benches);
