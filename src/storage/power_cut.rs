//! Simulated power loss under the real writer: many seeded runs, each cut at a random operation
//! (a group's write or sync, a footer, a segment's creation or its directory sync), then a start
//! from what the cut left. Every acknowledged event must be there, byte-exact, and the start must
//! never be refused. A writer that acknowledges before its fdatasync fails this.

use std::collections::BTreeMap;
use std::time::Duration;

use super::disk::sim::Power;
use super::{open, Disk, LogConfig};
use crate::event::{Action, StoredEvent};

/// Runs.
const SEEDS: u64 = 300;

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// One run: writes until the power is cut, then starts from the image. Returns why the run
/// failed, if it did.
fn run(seed: u64, skip_sync: bool) -> Result<(), String> {
    let mut rng = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let dir = tempfile::tempdir().unwrap();
    let cut_at = 1 + next(&mut rng) % 120;
    let power = Power::new(cut_at, seed);
    let config = LogConfig {
        dir: dir.path().join("segments"),
        segment_max_bytes: 1024 + next(&mut rng) % 3072,
        segment_max_age: Duration::from_secs(3600),
        disk: power.disk(),
    };
    // (seq, interaction id, body) of every acknowledged event.
    let mut acked: Vec<(u64, String, String)> = Vec::new();
    if let Ok(mut opened) = open(&config, 1, |_| {}) {
        opened.writer.skip_sync = skip_sync;
        for group in 0..10_000u64 {
            let first = opened.writer.next_seq();
            let count = 1 + next(&mut rng) % 5;
            let texts: Vec<(String, String)> = (0..count)
                .map(|i| {
                    let pad = "x".repeat((next(&mut rng) % 300) as usize);
                    let id = format!("i{group}-{i}");
                    (id.clone(), format!(r#"{{"id":"{id}","pad":"{pad}"}}"#))
                })
                .collect();
            let events: Vec<StoredEvent<'_>> = texts
                .iter()
                .enumerate()
                .map(|(i, (id, body))| StoredEvent {
                    seq: first + i as u64,
                    write_index: i as u32,
                    received_at_us: 10 + group,
                    key_id: [1; 8],
                    action: Action::Progress,
                    timestamp: 1.0,
                    interaction_id: id,
                    mcp_id: "m",
                    event_id: None,
                    body,
                })
                .collect();
            if opened.writer.append(&events, 10 + group).result.is_err() {
                break;
            }
            for event in &events {
                acked.push((event.seq, event.interaction_id.into(), event.body.into()));
            }
        }
    }
    let image = power.image().ok_or("the power was never cut")?;

    let found = restart(&image, &config)
        .map_err(|err| format!("seed {seed} (cut at {cut_at}): the start was refused: {err}"))?;
    for (seq, id, body) in &acked {
        if found.get(seq) != Some(&(id.clone(), body.clone())) {
            return Err(format!(
                "seed {seed} (cut at {cut_at}): acknowledged seq {seq} is lost or altered"
            ));
        }
    }
    if !found.keys().copied().eq(1..=found.len() as u64) {
        return Err(format!("seed {seed}: the recovered seqs have a gap"));
    }
    Ok(())
}

/// Starts a fresh machine from the image a cut left, on the real disk; returns every event it
/// holds by seq, as (interaction id, body).
fn restart(
    image: &BTreeMap<std::path::PathBuf, Vec<u8>>,
    config: &LogConfig,
) -> Result<BTreeMap<u64, (String, String)>, super::StorageError> {
    let restored = tempfile::tempdir().unwrap();
    let segments = restored.path().join("segments");
    std::fs::create_dir_all(&segments).unwrap();
    for (path, content) in image {
        std::fs::write(segments.join(path.file_name().unwrap()), content).unwrap();
    }
    let real = LogConfig {
        dir: segments,
        disk: Disk::real(),
        ..config.clone()
    };
    let mut found = BTreeMap::new();
    open(&real, 1_000_000, |e| {
        found.insert(e.seq, (e.interaction_id.into(), e.body.into()));
    })?;
    Ok(found)
}

#[test]
fn every_acknowledged_event_survives_a_power_cut_at_any_operation() {
    for seed in 0..SEEDS {
        run(seed, false).unwrap();
    }
}

#[test]
fn a_writer_that_acknowledges_before_its_sync_is_caught() {
    let failures = (0..SEEDS).filter(|&seed| run(seed, true).is_err()).count();
    assert!(
        failures > 0,
        "no run lost an event although no group was synced before its answer"
    );
}

/// The same through the real engine: concurrent submissions, group commits, acknowledgements.
async fn engine_run(seed: u64, skip_sync: bool) -> Result<(), String> {
    use std::sync::Arc;

    use crate::engine::{Engine, Maintenance, NewEvent, View};
    use crate::projector::Projection;
    use crate::storage::retention;

    {
        let mut rng = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        let dir = tempfile::tempdir().unwrap();
        let cut_at = 8 + next(&mut rng) % 150;
        let power = Power::new(cut_at, seed);
        let config = LogConfig {
            dir: dir.path().join("segments"),
            segment_max_bytes: 2048,
            segment_max_age: Duration::from_secs(3600),
            disk: power.disk(),
        };
        let Ok(mut opened) = open(&config, 1, |_| {}) else {
            return Ok(());
        };
        opened.writer.skip_sync = skip_sync;
        let view = View {
            projection: Projection::new(),
            catalog: opened.catalog,
        };
        let maintenance = Maintenance {
            interval: Duration::from_secs(3600),
            policy: retention::Policy {
                retention: Duration::from_secs(30 * 86_400),
                max_records: None,
                max_bytes: None,
            },
        };
        let engine = Arc::new(Engine::start(opened.writer, view, 10_000, maintenance));
        let clients: Vec<_> = (0..8)
            .map(|client| {
                let engine = Arc::clone(&engine);
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for n in 0..40 {
                        let id = format!("c{client}-{n}");
                        let body = format!(r#"{{"id":"{id}","n":{n}}}"#);
                        let event = NewEvent::new(Action::Start, 1.0, &id, "m", None, &body);
                        match engine.submit(vec![event], [2; 8]).await {
                            Ok((acks, _)) => acked.push((acks[0].seq, id, body)),
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        let mut acked = Vec::new();
        for client in clients {
            acked.extend(client.await.unwrap());
        }
        let stopping = Arc::clone(&engine);
        tokio::task::spawn_blocking(move || stopping.shutdown())
            .await
            .unwrap();
        let Some(image) = power.image() else {
            return Ok(()); // Every event went through before the cut point: nothing to check.
        };
        let found = restart(&image, &config)
            .map_err(|err| format!("seed {seed}: the start was refused: {err}"))?;
        for (seq, id, body) in acked {
            if found.get(&seq) != Some(&(id, body)) {
                return Err(format!(
                    "seed {seed} (cut at {cut_at}): acknowledged seq {seq} lost"
                ));
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_acknowledges_only_what_survives_a_power_cut() {
    for seed in 0..40 {
        engine_run(seed, false).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_over_a_writer_that_answers_before_its_sync_is_caught() {
    let mut failures = 0;
    for seed in 0..40 {
        failures += usize::from(engine_run(seed, true).await.is_err());
    }
    assert!(
        failures > 0,
        "no run lost an acknowledged event without syncs"
    );
}
