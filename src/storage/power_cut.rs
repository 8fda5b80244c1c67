//! Simulated power loss under the real writer: many seeded runs, each cut at a random operation
//! (a group's write or sync, a footer, a segment's creation or its directory sync), then a start
//! from what the cut left, itself cut at each operation of start-up's own in turn (a torn tail's
//! quarantined copy, its record, its truncation, the removal of a segment that never got its
//! header, a new segment), each time followed by a last start from what that left. Every acknowledged event must
//! be there, byte-exact, and no start may be refused. A writer that acknowledges before its
//! fdatasync fails this.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::disk::sim::Power;
use super::{open, Disk, LogConfig};
use crate::event::{Action, StoredEvent};

/// Runs.
const SEEDS: u64 = 300;
/// An operation the power was cut at: its kind and its file.
type CutOp = (&'static str, PathBuf);

/// The files a cut left, by their path under the data directory.
type Image = BTreeMap<PathBuf, Vec<u8>>;

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// A log in a new directory on a supply cut at a random operation below `cut_before`.
struct Simulated {
    dir: tempfile::TempDir,
    power: Arc<Power>,
    cut_at: u64,
    config: LogConfig,
}

impl Simulated {
    fn new(rng: &mut u64, seed: u64, first_cut: u64, cut_before: u64, segment_max: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cut_at = first_cut + next(rng) % cut_before;
        let power = Power::new(cut_at, seed);
        let config = LogConfig {
            dir: dir.path().join("segments"),
            segment_max_bytes: segment_max,
            segment_max_age: Duration::from_secs(3600),
            disk: power.disk(),
        };
        Simulated {
            dir,
            power,
            cut_at,
            config,
        }
    }

    /// The image the cut left, by path under the data directory.
    fn image(&self) -> Option<Image> {
        Some(under(self.dir.path(), self.power.image()?))
    }
}

/// An image's paths made relative to `root`.
fn under(root: &Path, image: BTreeMap<PathBuf, Vec<u8>>) -> Image {
    image
        .into_iter()
        .map(|(path, bytes)| (path.strip_prefix(root).unwrap().to_path_buf(), bytes))
        .collect()
}

/// Writes an image's files into `root`.
fn lay_out(image: &Image, root: &Path) {
    std::fs::create_dir_all(root.join("segments")).unwrap();
    for (path, content) in image {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// What one run did: the operations of start-up's own that a cut landed on.
struct Outcome {
    start_up_cuts: Vec<CutOp>,
}

/// One run: writes until the power is cut, then starts from the image, cut at each operation of
/// that start in turn, each time followed by one more start. Returns why the run failed, if it
/// did.
fn run(seed: u64, lying_syncs: bool) -> Result<Outcome, String> {
    let mut rng = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let segment_max = 1024 + next(&mut rng) % 3072;
    let sim = Simulated::new(&mut rng, seed, 1, 120, segment_max);
    let acked = write_until_cut(&sim, &mut rng, lying_syncs);
    let image = sim.image().ok_or("the power was never cut")?;
    let mut start_up_cuts = Vec::new();
    for start_cut_at in 1.. {
        let case = format!(
            "seed {seed} (cut at {}, start cut at {start_cut_at})",
            sim.cut_at
        );
        let (left, cut_op) = start_cut(&image, &sim.config, start_cut_at, seed)
            .map_err(|err| format!("{case}: the start was refused: {err}"))?;
        let found = restart(&left, &sim.config)
            .map_err(|err| format!("{case}: the start after it was refused: {err}"))?;
        for (seq, id, body) in &acked {
            if found.get(seq) != Some(&(id.clone(), body.clone())) {
                return Err(format!("{case}: acknowledged seq {seq} is lost or altered"));
            }
        }
        if !found.keys().copied().eq(1..=found.len() as u64) {
            return Err(format!("{case}: the recovered seqs have a gap"));
        }
        match cut_op {
            Some(op) => start_up_cuts.push(op),
            None => break,
        }
    }
    Ok(Outcome { start_up_cuts })
}

/// Appends random groups until the power is cut; returns (seq, interaction id, body) of every
/// acknowledged event.
fn write_until_cut(
    sim: &Simulated,
    rng: &mut u64,
    lying_syncs: bool,
) -> Vec<(u64, String, String)> {
    let mut acked = Vec::new();
    let Ok(mut opened) = open(&sim.config, 1, |_| {}) else {
        return acked;
    };
    if lying_syncs {
        sim.power.lie_on_syncs();
    }
    for group in 0..10_000u64 {
        let first = opened.writer.next_seq();
        let count = 1 + next(rng) % 5;
        let texts: Vec<(String, String)> = (0..count)
            .map(|i| {
                let pad = "x".repeat((next(rng) % 300) as usize);
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
    acked
}

/// Starts from `image` on a supply that is cut at operation `cut_at` of the start itself.
/// Returns what the disk then holds (the cut's image, or every file when the start finished
/// first) and the operation the cut landed on.
fn start_cut(
    image: &Image,
    config: &LogConfig,
    cut_at: u64,
    seed: u64,
) -> Result<(Image, Option<CutOp>), super::StorageError> {
    let root = tempfile::tempdir().unwrap();
    lay_out(image, root.path());
    let files = image
        .iter()
        .map(|(p, b)| (root.path().join(p), b.as_slice()));
    let power = Power::restore(cut_at, seed, files);
    let config = LogConfig {
        dir: root.path().join("segments"),
        disk: power.disk(),
        ..config.clone()
    };
    // Later than the first run's clock, as a real restart is: its quarantined copies get new names.
    let started = open(&config, 2_000_000, |_| {});
    match power.image() {
        Some(cut) => Ok((under(root.path(), cut), power.cut_op())),
        None => {
            started?;
            Ok((read_tree(root.path()), None))
        }
    }
}

/// Every file under `root` but the lock, by its path under `root`.
fn read_tree(root: &Path) -> Image {
    let mut image = Image::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name() != Some(super::LOCK_FILE_NAME.as_ref()) {
                let bytes = std::fs::read(&path).unwrap();
                image.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    image
}

/// Starts a fresh machine from the image a cut left, on the real disk; returns every event it
/// holds by seq, as (interaction id, body).
fn restart(
    image: &Image,
    config: &LogConfig,
) -> Result<BTreeMap<u64, (String, String)>, super::StorageError> {
    let restored = tempfile::tempdir().unwrap();
    lay_out(image, restored.path());
    let real = LogConfig {
        dir: restored.path().join("segments"),
        disk: Disk::real(),
        ..config.clone()
    };
    let mut found = BTreeMap::new();
    open(&real, 3_000_000, |e| {
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

/// The second cut lands inside start-up's own work: its truncation of a torn tail, the removal of
/// a segment that never got its header, the quarantined copy of cut bytes and the record of the
/// cut. An operation that went around the `Disk` seam (a `std::fs` call in start-up) is never
/// cut, and this fails.
#[test]
fn power_cuts_land_inside_start_ups_own_truncation_removal_copy_and_record() {
    let mut reached = BTreeSet::new();
    for seed in 0..SEEDS {
        for (op, path) in run(seed, false).unwrap().start_up_cuts {
            let file = match path.file_name().and_then(|n| n.to_str()) {
                Some(super::repair::REPAIRS_FILE) => "repairs.jsonl",
                Some(name) if name.ends_with(".seg") => "segment",
                _ if path.parent().and_then(Path::file_name)
                    == Some(super::repair::QUARANTINE_DIR.as_ref()) =>
                {
                    "quarantine"
                }
                _ => "directory",
            };
            reached.insert((op, file));
        }
    }
    for expected in [
        ("set_len", "segment"),
        ("remove", "segment"),
        ("create", "quarantine"),
        ("write", "quarantine"),
        ("write", "repairs.jsonl"),
    ] {
        assert!(
            reached.contains(&expected),
            "no start-up was cut at {expected:?}; reached {reached:?}"
        );
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
async fn engine_run(seed: u64, lying_syncs: bool) -> Result<(), String> {
    let mut rng = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let sim = Simulated::new(&mut rng, seed, 8, 150, 2048);
    let Ok(opened) = open(&sim.config, 1, |_| {}) else {
        return Ok(());
    };
    if lying_syncs {
        sim.power.lie_on_syncs();
    }
    let acked = submit_until_cut(opened).await;
    let Some(image) = sim.image() else {
        return Ok(()); // Every event went through before the cut point: nothing to check.
    };
    let found = restart(&image, &sim.config)
        .map_err(|err| format!("seed {seed}: the start was refused: {err}"))?;
    for (seq, id, body) in acked {
        if found.get(&seq) != Some(&(id, body)) {
            return Err(format!(
                "seed {seed} (cut at {}): acknowledged seq {seq} lost",
                sim.cut_at
            ));
        }
    }
    Ok(())
}

/// Runs an engine over the opened log with eight clients submitting until the power is cut;
/// returns (seq, interaction id, body) of every acknowledged event.
async fn submit_until_cut(opened: super::Opened) -> Vec<(u64, String, String)> {
    use crate::engine::{Engine, Maintenance, NewEvent, View};
    use crate::projector::Projection;
    use crate::storage::retention;

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
    let engine = Arc::new(Engine::start(
        opened.writer,
        view,
        10_000,
        maintenance,
        Arc::new(|_| {}),
    ));
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
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .unwrap();
    acked
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
