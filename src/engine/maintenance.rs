//! Housekeeping between groups, on the writer thread: seal an idle old segment, apply retention,
//! rebuild the view from what remains.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::View;
use crate::projector::Projection;
use crate::storage::{retention, LogWriter};

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
