//! Criterion benches for the projector and the queries over it:
//!
//! - `fold/events_400000`: folding 100k interactions (400k events, already decoded) into a fresh
//!   projection, the fold's share of a start or of a group commit;
//! - `query/history_mcp_status`: a history page of 100 filtered by mcp_id and status;
//! - `query/metrics_30d` and `query/metrics_30d_one_mcp`: performance metrics over 30 days.
//!
//! Run with `cargo bench --bench projection`. `cargo bench --bench query` measures the same
//! queries at 1M interactions as latency percentiles, with memory per interaction.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcplog::event::{Action, StoredEvent};
use mcplog::projector::{Projection, Status};
use mcplog::query::{self, HistoryQuery};

#[path = "common/mod.rs"]
mod common;

const INTERACTIONS: u64 = 100_000;
const MCPS: u64 = 20;
const NOW_S: f64 = 1_763_900_000.0;
const SPAN_S: f64 = 30.0 * 86_400.0;

/// Owned events: interaction id, mcp, action, timestamp.
fn events() -> Vec<(String, String, Action, f64)> {
    let mut out = Vec::with_capacity(INTERACTIONS as usize * 4);
    for i in 0..INTERACTIONS {
        let id = format!("7f3a2c1e-{i:08x}-4b6d-9e21-0c5f8a7b3d10");
        let mcp = format!("mcp_server_{:03}", i % MCPS);
        let start = NOW_S - SPAN_S + (i as f64 / INTERACTIONS as f64) * SPAN_S;
        let duration = 0.05 + (i % 1000) as f64 / 100.0;
        for (action, t) in common::lifecycle(start, duration, i % 7 == 0) {
            out.push((id.clone(), mcp.clone(), action, t));
        }
    }
    out
}

fn fold(events: &[(String, String, Action, f64)]) -> Projection {
    let mut projection = Projection::new();
    for (n, (id, mcp, action, t)) in events.iter().enumerate() {
        projection.apply(&StoredEvent {
            seq: n as u64 + 1,
            write_index: 0,
            received_at_us: (t * 1e6) as u64,
            key_id: [1; 8],
            action: *action,
            timestamp: *t,
            interaction_id: id,
            mcp_id: mcp,
            event_id: None,
            body: "",
        });
    }
    projection
}

fn benches(c: &mut Criterion) {
    let events = events();
    let mut group = c.benchmark_group("fold");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function(format!("events_{}", events.len()), |b| {
        b.iter(|| fold(&events))
    });
    group.finish();

    let projection = fold(&events);
    let mut group = c.benchmark_group("query");
    let mut i = 0u64;
    group.bench_function("history_mcp_status", |b| {
        b.iter(|| {
            i += 1;
            let query = HistoryQuery {
                mcp_id: Some(format!("mcp_server_{:03}", i % MCPS)),
                status: Some([Status::Completed, Status::Failed][(i % 2) as usize]),
                limit: 100,
                ..HistoryQuery::default()
            };
            let page = query::history(&projection, &query);
            assert_eq!(page.ordinals.len(), 100);
        })
    });
    group.bench_function("metrics_30d", |b| {
        b.iter(|| query::metrics(&projection, NOW_S, 30 * 86_400, mcplog::scope::Scope::All))
    });
    group.bench_function("metrics_30d_one_mcp", |b| {
        b.iter(|| {
            query::metrics(
                &projection,
                NOW_S,
                30 * 86_400,
                mcplog::scope::Scope::Only("mcp_server_007"),
            )
        })
    });
    group.finish();
}

criterion_group!(projection_benches, benches);
criterion_main!(projection_benches);
