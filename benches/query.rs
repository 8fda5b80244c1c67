//! Query speed and projection memory with 1M interactions (4M events) folded in.
//!
//! Prints, for `cargo bench --bench query`:
//! - bytes allocated per interaction by the fold (payloads are not held in memory);
//! - latency percentiles of history queries filtered by mcp_id and status, limit 100;
//! - latency of performance metrics over 30d, with and without an mcp_id.
//!
//! A counting global allocator measures memory; timings are taken over many repetitions and
//! reported as percentiles because a mean hides the tail the target is about.

// The counting allocator that measures bytes per interaction is the bench's only unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use mcplog::event::StoredEvent;
use mcplog::projector::{Projection, Status};
use mcplog::query::{self, HistoryQuery};

#[path = "common/mod.rs"]
mod common;

struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const INTERACTIONS: u64 = 1_000_000;
const MCPS: u64 = 50;
const NOW_S: f64 = 1_763_900_000.0;
const SPAN_S: f64 = 30.0 * 86_400.0;

fn build() -> Projection {
    let mut projection = Projection::new();
    let mcp_names: Vec<String> = (0..MCPS).map(|m| format!("mcp_server_{m:03}")).collect();
    let mut seq = 0;
    let mut id = String::new();
    for i in 0..INTERACTIONS {
        use std::fmt::Write;
        id.clear();
        let _ = write!(id, "7f3a2c1e-{i:08x}-4b6d-9e21-0c5f8a7b3d10");
        let start = NOW_S - SPAN_S + (i as f64 / INTERACTIONS as f64) * SPAN_S;
        let mcp = &mcp_names[(i % MCPS) as usize];
        let duration = 0.05 + (i * 2_654_435_761 % 10_000) as f64 / 1000.0;
        for (action, t) in common::lifecycle(start, duration, (i / MCPS).is_multiple_of(10)) {
            seq += 1;
            projection.apply(&StoredEvent {
                seq,
                write_index: 0,
                received_at_us: (t * 1e6) as u64,
                key_id: [1; 8],
                action,
                timestamp: t,
                interaction_id: &id,
                mcp_id: mcp,
                event_id: None,
                body: "",
            });
        }
    }
    projection
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    format!(
        "p50 {:?}  p99 {:?}  max {:?}",
        at(0.50),
        at(0.99),
        samples[samples.len() - 1]
    )
}

fn main() {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let started = Instant::now();
    let projection = build();
    let fold_time = started.elapsed();
    let bytes = ALLOCATED.load(Ordering::Relaxed) - before;
    println!(
        "fold: {} interactions, {} events in {:?} ({:.2} M events/s)",
        INTERACTIONS,
        projection.events_total(),
        fold_time,
        projection.events_total() as f64 / fold_time.as_secs_f64() / 1e6
    );
    println!(
        "memory: {} bytes allocated, {:.1} bytes per interaction (payloads excluded)",
        bytes,
        bytes as f64 / INTERACTIONS as f64
    );

    let statuses = [Status::Completed, Status::Failed];
    let mut samples = Vec::new();
    for i in 0..20_000u64 {
        let query = HistoryQuery {
            mcp_id: Some(format!("mcp_server_{:03}", i % MCPS)),
            status: Some(statuses[(i % 2) as usize]),
            limit: 100,
            ..HistoryQuery::default()
        };
        let t = Instant::now();
        let page = query::history(&projection, &query);
        samples.push(t.elapsed());
        assert_eq!(page.ordinals.len(), 100);
    }
    println!(
        "history (mcp_id + status, limit 100): {}",
        percentiles(samples)
    );

    let mut samples = Vec::new();
    for i in 0..2_000u64 {
        let query = HistoryQuery {
            mcp_id: Some(format!("mcp_server_{:03}", i % MCPS)),
            limit: 100,
            ..HistoryQuery::default()
        };
        let t = Instant::now();
        std::hint::black_box(query::history(&projection, &query));
        samples.push(t.elapsed());
    }
    println!("history (mcp_id only, limit 100): {}", percentiles(samples));

    for (label, mcp) in [
        ("all mcp_ids", None),
        ("one mcp_id", Some("mcp_server_007")),
    ] {
        let mut samples = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let scope = mcp.map_or(mcplog::scope::Scope::All, mcplog::scope::Scope::Only);
            let m = query::metrics(&projection, NOW_S, 30 * 86_400, scope);
            samples.push(t.elapsed());
            assert!(m.total_interactions > 0);
        }
        println!("metrics 30d ({label}): {}", percentiles(samples));
    }
}
