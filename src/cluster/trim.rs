//! Retention reaches the stream: once this node's retention has deleted its oldest segments, the
//! groups they held are purged from the stream too, so an expired payload is no longer readable
//! from NATS and a node that joins later cannot serve it again.
//!
//! The point is the group holding the first seq this node still holds (its last seq when it
//! holds none, so the group a restart resumes from stays). Every node's segments are the same
//! bytes and retention goes by the receive times in them, so every node arrives at the same
//! points in the same order; a purge below the stream's first position changes nothing, so
//! whichever node purges first, the others' purges are no-ops.
//!
//! A node that has not yet applied the purged groups cannot catch up from the stream: at start
//! `resume_point` refuses, and a running follower that finds the stream begins past its next
//! position halts; both name the way back, a backup of a live node ([`BOOTSTRAP_COMMAND`]).

use std::sync::Arc;
use std::time::Duration;

use super::{Cluster, ClusterError, BOOTSTRAP_COMMAND};
use crate::engine::Engine;

/// How often the node looks whether its retention moved the first seq it holds; a look that
/// finds it unchanged asks nothing of NATS.
const TRIM_CHECK: Duration = Duration::from_secs(1);

impl Cluster {
    /// Runs as a task, beside [`Cluster::follow`] reading from `resumed_at`: every
    /// [`TRIM_CHECK`], purges the stream up to the group holding the first seq this node holds,
    /// if that moved. A purge that fails is tried again at the next check.
    pub async fn trim(self: Arc<Self>, engine: Arc<Engine>, resumed_at: u64) {
        // The held seq the stream was last trimmed for: a restart looks once.
        let mut trimmed_for = 0;
        loop {
            let held = engine.first_held_seq();
            let checked = engine.replica_progress().is_some_and(|report| {
                checked_against_stream(report.applied.position, report.halted.is_some(), resumed_at)
            });
            if let Some(seq) = held.filter(|&seq| checked && seq > trimmed_for) {
                match self.trim_before(seq).await {
                    Ok(first) => {
                        engine.set_stream_first_position(first);
                        trimmed_for = seq;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, seq, "trimming the stream failed; retrying")
                    }
                }
            }
            tokio::time::sleep(TRIM_CHECK).await;
        }
    }

    /// Purges every group before the one holding `seq`, never that group or any after it, and
    /// returns the stream's first position then.
    async fn trim_before(&self, seq: u64) -> Result<u64, ClusterError> {
        let state = self.stream_state().await?;
        if state.messages == 0 {
            return Ok(state.first_sequence);
        }
        let keep = self
            .position_holding(seq, state.first_sequence, state.last_sequence)
            .await?;
        if keep <= state.first_sequence {
            return Ok(state.first_sequence);
        }
        let purged = self
            .stream
            .purge()
            .sequence(keep)
            .await
            .map_err(|err| ClusterError::JetStream(format!("purging the stream: {err}")))?
            .purged;
        tracing::info!(
            purged_groups = purged,
            from_position = state.first_sequence,
            first_position = keep,
            first_seq = seq,
            "retention trimmed the stream: it now begins at the group holding this node's first seq"
        );
        Ok(keep)
    }

    /// The stream's state now.
    pub(super) async fn stream_state(
        &self,
    ) -> Result<async_nats::jetstream::stream::State, ClusterError> {
        let mut stream = self.stream.clone();
        Ok(stream
            .info()
            .await
            .map_err(|err| ClusterError::JetStream(format!("reading the stream's state: {err}")))?
            .state
            .clone())
    }

    /// Why a follower expecting `position` cannot go on, if the stream no longer holds it:
    /// retention elsewhere trimmed the groups this node had yet to apply. `None` if it still
    /// holds it (or cannot tell): the follower's own checks decide then.
    pub(super) async fn trimmed_past(&self, position: u64) -> Option<String> {
        let first = match self.stream_state().await {
            Ok(state) => state.first_sequence,
            Err(err) => {
                tracing::warn!(error = %err, "could not tell whether the stream was trimmed");
                return None;
            }
        };
        (first > position).then(|| {
            format!(
                "the stream now begins at position {first}, but this node has yet to apply \
                 position {position}: retention trimmed groups it never applied, so it cannot \
                 catch up from the stream; start it from a backup of a live node \
                 ({BOOTSTRAP_COMMAND})"
            )
        })
    }
}

/// Whether this node's history has been checked against the stream's, so that it may trim: its
/// follower applied the group it resumed from (comparing what it held of it byte for byte) and
/// has not halted. A node whose log is not the stream's (another cluster's, say) halts on its
/// first group, and must not purge what the other nodes still hold before it does.
fn checked_against_stream(applied_position: u64, halted: bool, resumed_at: u64) -> bool {
    !halted && applied_position >= resumed_at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_node_that_applied_the_group_it_resumed_from_and_did_not_halt_trims() {
        assert!(!checked_against_stream(6, false, 7), "not yet");
        assert!(checked_against_stream(7, false, 7));
        assert!(checked_against_stream(9, false, 7));
        assert!(!checked_against_stream(9, true, 7), "halted");
    }
}
