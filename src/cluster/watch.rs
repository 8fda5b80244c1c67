//! The watch: tells the engine, every [`WATCH_INTERVAL`], whether the stream can be reached (the
//! connection to NATS is up and the stream answers) and where it ends, which readiness needs:
//! a node cut off from the stream, or still far behind its end, is not ready.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;

use super::{Cluster, PUBLISH_ATTEMPT_TIMEOUT};
use crate::engine::Engine;

/// How often the watch asks the stream for its state.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A replica the stream's leader has not heard from for this long does not count towards the
/// majority a write needs: a leader cut off from its peers still answers state requests for a
/// while (until Raft makes it step down), though no write can succeed through it.
const PEER_SILENT: Duration = Duration::from_secs(3);
/// How many unanswered state requests in a row mean the stream cannot be reached: one may be lost
/// to a leader's election that the next one outlives.
const WATCH_SILENT_CHECKS: u32 = 2;

/// A task that ends when this is dropped: the watch lives as long as the stream is followed.
pub(super) struct Watching(tokio::task::JoinHandle<()>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Cluster {
    /// Starts watching the stream for `engine`, until the returned guard is dropped.
    pub(super) fn watch(self: &Arc<Self>, engine: &Arc<Engine>) -> Watching {
        Watching(tokio::spawn(
            Arc::clone(self).watch_loop(Arc::clone(engine)),
        ))
    }

    async fn watch_loop(self: Arc<Self>, engine: Arc<Engine>) {
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut silent = 0;
        loop {
            ticks.tick().await;
            let state = self.client.connection_state();
            if state != State::Connected {
                engine.set_shared_log_reachable(Err(format!(
                    "the connection to NATS is {state}; reconnecting"
                )));
                continue;
            }
            match self.stream_end().await {
                Ok(end) => {
                    silent = 0;
                    engine.saw_shared_log_end(end);
                    engine.set_shared_log_reachable(Ok(()));
                }
                Err(why) => {
                    silent += 1;
                    if silent >= WATCH_SILENT_CHECKS {
                        engine.set_shared_log_reachable(Err(format!(
                            "the stream did not answer {silent} requests in a row: {why}"
                        )));
                    }
                }
            }
        }
    }

    /// The position of the stream's last group, or why it could not be read.
    async fn stream_end(&self) -> Result<u64, String> {
        let mut stream = self.stream.clone();
        match tokio::time::timeout(PUBLISH_ATTEMPT_TIMEOUT, stream.info()).await {
            Ok(Ok(info)) => {
                majority(info.cluster.as_ref())?;
                Ok(info.state.last_sequence)
            }
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("no answer".to_owned()),
        }
    }
}

/// Whether the stream's Raft group, as its leader reports it, has a leader and a majority of
/// replicas heard from within [`PEER_SILENT`]; a stream without replicas (`None`) has.
fn majority(cluster: Option<&async_nats::jetstream::stream::ClusterInfo>) -> Result<(), String> {
    let Some(cluster) = cluster else {
        return Ok(());
    };
    if cluster.leader.is_none() {
        return Err("the stream has no leader".to_owned());
    }
    let total = cluster.replicas.len() + 1;
    let live = 1 + cluster
        .replicas
        .iter()
        .filter(|peer| !peer.offline && peer.active < PEER_SILENT)
        .count();
    if live * 2 <= total {
        return Err(format!(
            "the stream's leader hears from {live} of its {total} replicas, no majority"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(leader: bool, active_ms: &[u64]) -> async_nats::jetstream::stream::ClusterInfo {
        let replicas: Vec<_> = active_ms
            .iter()
            .enumerate()
            .map(|(i, ms)| {
                serde_json::json!({"name": format!("n{i}"), "current": true, "active": ms * 1_000_000})
            })
            .collect();
        let mut info = serde_json::json!({"name": "c", "replicas": replicas});
        if leader {
            info["leader"] = "n9".into();
        }
        serde_json::from_value(info).unwrap()
    }

    #[test]
    fn a_write_needs_a_leader_hearing_from_a_majority() {
        assert!(majority(None).is_ok());
        assert!(majority(Some(&cluster(true, &[100, 200]))).is_ok());
        assert!(majority(Some(&cluster(true, &[100, 9000]))).is_ok());
        let lost = majority(Some(&cluster(true, &[9000, 9000]))).unwrap_err();
        assert!(lost.contains("1 of its 3"), "{lost}");
        assert!(majority(Some(&cluster(false, &[100, 100]))).is_err());
    }
}
