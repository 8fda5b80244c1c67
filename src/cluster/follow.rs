//! The follower's half: an ordered consumer reads every message of the stream, in order, and
//! hands it to the engine's follower thread as an authenticated group or why it is not one; a consumer that fails or goes quiet is recreated
//! after the last group delivered.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures_util::StreamExt;

use super::group::group_of;
use super::{
    Cluster, CONSUMER_PULL_EXPIRY, CONSUMER_RETRY_PAUSE, FOLLOW_QUIET_CHECK, FOLLOW_QUIET_CHECKS,
    PUBLISH_ATTEMPT_TIMEOUT,
};
use crate::engine::replica::{Group, GroupFeed};
use crate::engine::Engine;

/// Why reading from one consumer ended.
enum Ended {
    /// The consumer failed or went quiet: create another.
    ConsumerLost,
    /// The follower is gone: stop.
    FollowerGone,
}

impl Cluster {
    /// Reads the stream from `position` on and hands every group to the follower, until the
    /// follower goes away. Runs as a task; a failed consumer is recreated after the last group
    /// delivered.
    pub async fn follow(self: Arc<Self>, mut position: u64, feed: GroupFeed, engine: Arc<Engine>) {
        let _watching = self.watch(&engine);
        loop {
            if let Some(mut messages) = self.consumer(position).await {
                let ended = self
                    .read(&mut messages, &mut position, &feed, &engine)
                    .await;
                if let Ended::FollowerGone = ended {
                    return;
                }
            }
            tokio::time::sleep(CONSUMER_RETRY_PAUSE).await;
        }
    }

    /// An ordered consumer's messages from `position` on, or `None` (logged) if it could not be
    /// created.
    async fn consumer(&self, position: u64) -> Option<consumer::pull::Ordered> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: position,
                },
                // Short pulls make the server's idle heartbeats frequent, so a consumer lost
                // with a stream leader is noticed, and recreated, within seconds.
                max_expires: CONSUMER_PULL_EXPIRY,
                ..Default::default()
            })
            .await;
        match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(messages) => Some(messages),
                Err(err) => {
                    tracing::warn!(error = %err, "reading the cluster's stream failed; retrying");
                    None
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "creating the stream's consumer failed; retrying");
                None
            }
        }
    }

    /// Hands every group `messages` delivers to the follower, `position` following the last
    /// one delivered, until the consumer is lost or the follower gone.
    async fn read(
        &self,
        messages: &mut consumer::pull::Ordered,
        position: &mut u64,
        feed: &GroupFeed,
        engine: &Engine,
    ) -> Ended {
        let mut quiet = 0;
        loop {
            // A consumer can go quiet without an error when the stream's leader moves: after a
            // quiet spell, ask the stream whether it holds groups not delivered yet.
            let message = match tokio::time::timeout(FOLLOW_QUIET_CHECK, messages.next()).await {
                Ok(Some(message)) => {
                    quiet = 0;
                    message
                }
                Ok(None) => return Ended::ConsumerLost,
                Err(_) => {
                    quiet += 1;
                    // Several quiet checks in a row, so a large group still arriving over a slow
                    // link is not mistaken for a lost consumer.
                    if quiet >= FOLLOW_QUIET_CHECKS && self.holds_beyond(*position).await {
                        tracing::warn!(
                            position = *position,
                            "the stream's consumer went quiet with groups left; recreating it"
                        );
                        return Ended::ConsumerLost;
                    }
                    continue;
                }
            };
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    tracing::warn!(error = %err, "the stream's consumer failed; recreating it");
                    return Ended::ConsumerLost;
                }
            };
            let Ok(info) = message.info() else {
                tracing::warn!("a message without JetStream metadata; recreating the consumer");
                return Ended::ConsumerLost;
            };
            let at = info.stream_sequence;
            // Groups skipped: if retention elsewhere trimmed them, this node cannot go on.
            if at > *position {
                if let Some(reason) = self.trimmed_past(*position).await {
                    engine.halt_replica(&reason);
                    return Ended::FollowerGone;
                }
            }
            engine.set_replica_pending(info.pending);
            engine.saw_shared_log_end(at + info.pending);
            let group = match &message.headers {
                Some(headers) => group_of(headers, message.payload.clone(), &self.keys),
                None => Err("no headers".to_owned()),
            };
            if !deliver(feed, at, group).await {
                return Ended::FollowerGone;
            }
            *position = at + 1;
        }
    }

    /// Whether the stream holds a group at `position` or later (false if it cannot tell).
    async fn holds_beyond(&self, position: u64) -> bool {
        let mut stream = self.stream.clone();
        match tokio::time::timeout(PUBLISH_ATTEMPT_TIMEOUT, stream.info()).await {
            Ok(Ok(info)) => info.state.last_sequence >= position,
            _ => false,
        }
    }
}

/// Hands a group to the follower thread, waiting while its feed is full; false once the
/// follower is gone.
async fn deliver(feed: &GroupFeed, position: u64, group: Result<Group, String>) -> bool {
    let mut item = (position, group);
    loop {
        match feed.try_send(item) {
            Ok(()) => return true,
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                item = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
        }
    }
}
