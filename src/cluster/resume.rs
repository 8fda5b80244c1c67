//! Where a node's follower goes on at start: the group holding its last local seq, found by a
//! binary search over the stream's authenticated groups (stepping over any other message), so a
//! restart catches up only the tail.

use super::group::{group_of, MAC_HEADER};

/// How many messages from the stream's start an empty node reads to learn whether it shares the
/// other nodes' master secret.
const KEY_CHECK_MESSAGES: u64 = 1024;
use super::{Cluster, ClusterError, BOOTSTRAP_COMMAND};
use crate::engine::replica::{Applied, Group};

impl Cluster {
    /// Where the follower goes on, for a node whose log ends at `local_last` (0: empty): the
    /// stream position to read from, and the state just before it.
    pub async fn resume_point(&self, local_last: u64) -> Result<(u64, Applied), ClusterError> {
        let start = Applied {
            next_seq: 1,
            ..Applied::default()
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
            self.check_keys(state.first_sequence, state.last_sequence)
                .await?;
            return Ok((1, start));
        }
        let last = state.last_sequence;
        let no_group = || {
            ClusterError::Diverged(format!(
                "this node's log holds {local_last} events but the stream holds no group \
                 authenticated under this node's master secret: a cluster node's log must come \
                 from the stream, and every node needs the same security.master_secret"
            ))
        };
        if state.messages == 0 {
            return Err(ClusterError::Diverged(format!(
                "this node's log holds {local_last} events but the stream is empty: a cluster \
                 node's log must come from the stream"
            )));
        }
        if let Some(found) = self
            .resume_from_hint(local_last, state.first_sequence, last)
            .await?
        {
            return Ok(found);
        }
        let (low, first) = self
            .chain_group_from(state.first_sequence, last)
            .await?
            .ok_or_else(no_group)?;
        if first.first_seq > local_last {
            return Err(ClusterError::Diverged(format!(
                "the stream's first group begins at seq {}, after this node's last seq \
                 {local_last}: retention trimmed the stream past this node's history; start it \
                 from a backup of a live node ({BOOTSTRAP_COMMAND})",
                first.first_seq
            )));
        }
        let (low, group) = self.last_group_up_to(low, last, local_last).await?;
        self.resume_at(low, group, local_last, last).await
    }

    /// Resuming at the group `group` found at `low` for a node whose log ends at `local_last`,
    /// unless the node holds events past the stream's end.
    async fn resume_at(
        &self,
        low: u64,
        group: Group,
        local_last: u64,
        last: u64,
    ) -> Result<(u64, Applied), ClusterError> {
        // Past the stream's last group, the node holds events no other node has: it must not
        // follow a history that lacks them.
        let end = group.first_seq + group.frame_count().unwrap_or(0);
        if local_last >= end && self.group_from(low + 1, last).await?.is_none() {
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
                rules: None,
            },
        ))
    }

    /// The resume point found from this node's hint ([`super::hint`]): the group at the hinted
    /// position must have the hinted hash (this node applied it, so it is the chain's, whatever
    /// copies follow), and from there the walk takes each group whose previous-group hash is
    /// the one before's until the group holding `local_last`. `None` when there is no usable
    /// hint, or the walk finds no such group: then the search decides.
    async fn resume_from_hint(
        &self,
        local_last: u64,
        first: u64,
        last: u64,
    ) -> Result<Option<(u64, Applied)>, ClusterError> {
        let Some((mut at, hash)) = self.hint.as_deref().and_then(super::hint::read_hint) else {
            return Ok(None);
        };
        if at < first || at > last {
            return Ok(None);
        }
        let Some((_, mut group)) = self.group_from(at, at).await? else {
            return Ok(None);
        };
        if group.hash() != hash || group.first_seq > local_last {
            return Ok(None);
        }
        let mut position = at + 1;
        loop {
            let end = group.first_seq + group.frame_count().unwrap_or(0);
            if local_last < end {
                return self.resume_at(at, group, local_last, last).await.map(Some);
            }
            // The next group of the chain, stepping over strays and copies.
            let next = loop {
                match self.group_from(position, last).await? {
                    Some((found, next)) if next.prev_hash == group.hash() => {
                        break Some((found, next))
                    }
                    Some((found, _)) => position = found + 1,
                    None => break None,
                }
            };
            let Some((found, next)) = next else {
                return Err(ClusterError::Diverged(format!(
                    "this node's log ends at seq {local_last} but the stream's chain ends at seq \
                     {}: it holds events the stream does not (was the stream recreated?)",
                    end.saturating_sub(1)
                )));
            };
            (at, group) = (found, next);
            position = at + 1;
        }
    }

    /// An empty node would skip every group written under another master secret and then
    /// start a history of its own in the same stream: refuse to start when the first
    /// [`KEY_CHECK_MESSAGES`] messages hold something shaped as a group (it carries a MAC) but no
    /// group this node authenticates.
    async fn check_keys(&self, first: u64, last: u64) -> Result<(), ClusterError> {
        let mut foreign = None;
        for position in first..=last.min(first.saturating_add(KEY_CHECK_MESSAGES - 1)) {
            let Ok(message) = self.stream.get_raw_message(position).await else {
                continue;
            };
            if message.headers.get(MAC_HEADER).is_none() {
                continue;
            }
            match group_of(&message.headers, message.payload, &self.keys) {
                Ok(_) => return Ok(()),
                Err(_) => foreign = foreign.or(Some(position)),
            }
        }
        match foreign {
            None => Ok(()),
            Some(position) => Err(ClusterError::Config(format!(
                "the stream's groups (the first at position {position}) are authenticated under \
                 another master secret than this node's: every node needs the same \
                 security.master_secret (and previous_master_secrets during a rotation)"
            ))),
        }
    }

    /// The last group in `low..=high` that begins at or before `local_last` (the group at `low`
    /// does), and its position: first seqs grow with positions, so a binary search.
    async fn last_group_up_to(
        &self,
        mut low: u64,
        mut high: u64,
        local_last: u64,
    ) -> Result<(u64, Group), ClusterError> {
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            // The first group at `mid` or after; none there, or one beginning later, means none
            // in `mid..=high` begins at or before `local_last`.
            match self.chain_group_from(mid, high).await? {
                Some((at, group)) if group.first_seq <= local_last => low = at,
                _ => high = mid - 1,
            }
        }
        // Checked again: the group at `low` may be gone since (a trim by another node).
        self.group_from(low, low)
            .await?
            .ok_or_else(|| ClusterError::JetStream(format!("the group at position {low} is gone")))
    }

    /// The last position in `low..=high` whose group begins at or before `seq`, or `low` if
    /// none does (retention's trim keeps that group and all after it).
    pub(super) async fn position_holding(
        &self,
        seq: u64,
        low: u64,
        high: u64,
    ) -> Result<u64, ClusterError> {
        match self.chain_group_from(low, high).await? {
            Some((at, group)) if group.first_seq <= seq => {
                Ok(self.last_group_up_to(at, high, seq).await?.0)
            }
            _ => Ok(low),
        }
    }

    /// The first group of the chain at a position in `from..=to`, and that position: an
    /// authenticated group whose previous-group hash is the hash of the authenticated group
    /// before it in the stream (or that has none before it). Anyone who may publish on the
    /// subject can publish an earlier group's message again, MAC and all; such a copy sits after
    /// a group it does not follow, and a search that took it for the chain's would resume, or
    /// trim, at the wrong place (the follower skips copies likewise).
    async fn chain_group_from(
        &self,
        mut from: u64,
        to: u64,
    ) -> Result<Option<(u64, Group)>, ClusterError> {
        while let Some((at, group)) = self.group_from(from, to).await? {
            if self.follows_chain(at, &group).await? {
                return Ok(Some((at, group)));
            }
            tracing::warn!(
                position = at,
                first_seq = group.first_seq,
                "stepping over a copy of an earlier group"
            );
            from = at + 1;
        }
        Ok(None)
    }

    /// Whether `group`, at `position`, is the chain's: looking back over the stream's
    /// authenticated groups, the one it follows (whose hash is its previous-group hash) comes
    /// before any that begins at or after its first seq. A copy sits after its original (or a
    /// later group); copies of older groups between the chain's groups begin earlier and are
    /// passed over. A group with nothing before it begins the stream as it stands.
    async fn follows_chain(&self, position: u64, group: &Group) -> Result<bool, ClusterError> {
        let first = self.stream_state().await?.first_sequence;
        for at in (first..position).rev() {
            if let Some((_, before)) = self.group_from(at, at).await? {
                if before.hash() == group.prev_hash {
                    return Ok(true);
                }
                if before.first_seq >= group.first_seq {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The first authenticated group at a position in `from..=to`, and that position; messages
    /// that are not (or were deleted) are stepped over, as the follower skips them.
    async fn group_from(&self, from: u64, to: u64) -> Result<Option<(u64, Group)>, ClusterError> {
        for position in from..=to {
            let message = match self.stream.get_raw_message(position).await {
                Ok(message) => message,
                Err(err)
                    if err.kind()
                        == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                {
                    continue
                }
                Err(err) => {
                    return Err(ClusterError::JetStream(format!(
                        "reading the message at position {position}: {err}"
                    )))
                }
            };
            match group_of(&message.headers, message.payload, &self.keys) {
                Ok(group) => return Ok(Some((position, group))),
                Err(why) => {
                    tracing::warn!(position, reason = %why, "stepping over a message that is not an authenticated group");
                }
            }
        }
        Ok(None)
    }
}
