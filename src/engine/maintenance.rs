//! Housekeeping between groups, on the writer thread: seal an idle old segment, apply retention,
//! rebuild the view from what remains.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::View;
use crate::projector::Projection;
use crate::storage::{retention, Catalog, LogWriter};

/// Housekeeping the writer thread does between groups: at start, then every `interval`.
#[derive(Debug, Clone, Copy)]
pub struct Maintenance {
    /// How often (`cleanup_interval`).
    pub interval: Duration,
    /// What retention keeps.
    pub policy: retention::Policy,
}

/// Seals an old idle segment (when `seal_idle`), deletes the segments retention selects, and
/// rebuilds the view from what remains, so that it equals what a fresh start would fold. Runs on
/// the thread that owns the writer, so no group is written meanwhile.
///
/// A cluster node does not seal idle segments: its segments must end where every other node's
/// do, so only the groups it applies decide a roll.
pub(super) fn maintain(
    writer: &mut LogWriter,
    view: &RwLock<View>,
    policy: &retention::Policy,
    now_us: u64,
    seal_idle: bool,
) {
    let written = if seal_idle {
        writer.roll_if_old(now_us)
    } else {
        crate::storage::Written {
            result: Ok(()),
            changes: Vec::new(),
        }
    };
    if let Err(err) = written.result {
        tracing::error!(error = %err, "sealing an old segment failed");
    }
    let changes = written.changes;
    if !changes.is_empty() {
        let mut view = view.write().expect("view lock");
        for change in changes {
            view.catalog.apply(change);
        }
    }
    let count = retention::select(&view.read().expect("view lock").catalog, now_us, policy);
    if count == 0 {
        return;
    }
    let started = Instant::now();
    let paths = view.write().expect("view lock").catalog.drop_oldest(count);
    if let Some(dir) = paths[0].parent() {
        if let Err(err) = retention::delete(&paths, dir, writer.disk()) {
            // The files stay until the next run or start; the view no longer serves them.
            tracing::error!(error = %err, "deleting expired segments failed");
        }
    }
    let mut projection = Projection::new();
    let folded = view
        .read()
        .expect("view lock")
        .catalog
        .for_each_event(|event| projection.apply(event));
    if let Err(reason) = folded {
        tracing::error!(%reason, "rebuilding the view after retention failed; keeping the old view");
        return;
    }
    let events = projection.events_total();
    view.write().expect("view lock").projection = projection;
    tracing::info!(
        segments = count,
        events_kept = events,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "retention deleted expired segments"
    );
}

/// The first seq `catalog` holds, or its last seq when retention left it none (only an empty
/// active segment): cluster mode trims the stream before the group holding it, and a restart
/// resumes from the group holding the last seq. `None` before any event.
pub(super) fn first_held_seq(catalog: &Catalog) -> Option<u64> {
    let last = catalog.next_seq() - 1;
    (last > 0).then(|| catalog.first_seq().unwrap_or(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, StoredEvent};
    use crate::storage::{format, open, Disk, LogConfig};

    const T0_US: u64 = 1_790_000_000_000_000;

    /// Retention that deletes every segment leaves the last seq as the point to keep from.
    #[test]
    fn the_first_held_seq_moves_with_retention_and_stops_at_the_last_seq() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            dir: dir.path().to_path_buf(),
            segment_max_bytes: 1 << 20,
            segment_max_age: Duration::from_secs(1),
            disk: Disk::real(),
        };
        let opened = open(&config, T0_US, |_| {}).unwrap();
        let mut writer = opened.writer;
        let view = RwLock::new(View {
            projection: Projection::new(),
            catalog: opened.catalog,
        });
        let held = |view: &RwLock<View>| first_held_seq(&view.read().unwrap().catalog);
        assert_eq!(held(&view), None, "nothing written yet");
        let policy = retention::Policy {
            retention: Duration::from_secs(10),
            max_records: None,
            max_bytes: None,
        };
        // Two writes a minute apart: each its own segment.
        for (first, at) in [(1, T0_US), (4, T0_US + 60_000_000)] {
            let mut frames = Vec::new();
            for n in 0..3 {
                let event = StoredEvent {
                    seq: first + n,
                    write_index: n as u32,
                    received_at_us: at,
                    key_id: [1; 8],
                    action: Action::Progress,
                    timestamp: 1.0,
                    interaction_id: "i",
                    mcp_id: "m",
                    event_id: None,
                    body: r#"{"action":"interaction_progress"}"#,
                };
                format::encode_frame(&event, &mut frames);
            }
            let rolled = writer.roll_if_old(at);
            let written = writer.append_encoded(&frames, at, true);
            written.result.unwrap();
            let mut view = view.write().unwrap();
            for change in rolled.changes.into_iter().chain(written.changes) {
                view.catalog.apply(change);
            }
        }
        assert_eq!(held(&view), Some(1));
        maintain(&mut writer, &view, &policy, T0_US + 5_000_000, false);
        assert_eq!(held(&view), Some(1), "nothing expired yet");
        maintain(&mut writer, &view, &policy, T0_US + 65_000_000, false);
        assert_eq!(held(&view), Some(4), "the first segment expired");
        // Sealed as a single node seals an idle segment, then expired: none held.
        maintain(&mut writer, &view, &policy, T0_US + 600_000_000, true);
        assert_eq!(view.read().unwrap().catalog.first_seq(), None);
        assert_eq!(held(&view), Some(6), "the last seq");
    }
}
