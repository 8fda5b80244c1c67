//! Where a node's follower goes on at start: the group holding its last local seq, found by a
//! binary search over the stream, so a restart catches up only the tail.

use super::group::group_of;
use super::{Cluster, ClusterError, BOOTSTRAP_COMMAND};
use crate::engine::replica::{Applied, Group};

impl Cluster {
    /// Where the follower goes on, for a node whose log ends at `local_last` (0: empty): the
    /// stream position to read from, and the state just before it.
    pub async fn resume_point(&self, local_last: u64) -> Result<(u64, Applied), ClusterError> {
        let start = Applied {
            position: 0,
            hash: [0; 32],
            next_seq: 1,
            received_at_us: 0,
        };
        let state = self.stream_state().await?;
        if local_last == 0 {
            if state.first_sequence > 1 && state.messages > 0 {
                return Err(ClusterError::Diverged(format!(
                    "the stream no longer holds its first groups (it begins at position {}); \
                     an empty node cannot catch up: start it from a backup of a live node \
                     ({BOOTSTRAP_COMMAND})",
                    state.first_sequence
                )));
            }
            return Ok((1, start));
        }
        if state.messages == 0 {
            return Err(ClusterError::Diverged(format!(
                "this node's log holds {local_last} events but the stream is empty: a cluster \
                 node's log must come from the stream"
            )));
        }
        let first = self.group_at(state.first_sequence).await?;
        if first.first_seq > local_last {
            return Err(ClusterError::Diverged(format!(
                "the stream's first group begins at seq {}, after this node's last seq \
                 {local_last}: retention trimmed the stream past this node's history; start it \
                 from a backup of a live node ({BOOTSTRAP_COMMAND})",
                first.first_seq
            )));
        }
        let low = self
            .position_holding(local_last, state.first_sequence, state.last_sequence)
            .await?;
        let group = self.group_at(low).await?;
        // Past the stream's last group, the node holds events no other node has: it must not
        // follow a history that lacks them.
        let end = group.first_seq + group.frame_count().unwrap_or(0);
        if low == state.last_sequence && local_last >= end {
            return Err(ClusterError::Diverged(format!(
                "this node's log ends at seq {local_last} but the stream's last group ends at \
                 seq {}: it holds events the stream does not (was the stream recreated?)",
                end.saturating_sub(1)
            )));
        }
        Ok((
            low,
            Applied {
                position: low - 1,
                hash: group.prev_hash,
                next_seq: group.first_seq,
                received_at_us: 0,
            },
        ))
    }

    /// The last position in `low..=high` whose group begins at or before `seq` (`low` if none
    /// does), by a binary search: first seqs grow with positions.
    pub(super) async fn position_holding(
        &self,
        seq: u64,
        mut low: u64,
        mut high: u64,
    ) -> Result<u64, ClusterError> {
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            if self.group_at(mid).await?.first_seq <= seq {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        Ok(low)
    }

    pub(super) async fn group_at(&self, position: u64) -> Result<Group, ClusterError> {
        let message = self.stream.get_raw_message(position).await.map_err(|err| {
            ClusterError::JetStream(format!("reading the group at position {position}: {err}"))
        })?;
        group_of(&message.headers, message.payload).map_err(|why| {
            ClusterError::Diverged(format!("the group at position {position}: {why}"))
        })
    }
}
