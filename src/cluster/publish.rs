//! The publisher's half of the shared log: appends a group with its MAC, JetStream's expected
//! last sequence and its chain hash as the message id.

use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::group::group_headers;
use super::PUBLISH_ATTEMPT_TIMEOUT;
use crate::engine::replica::{Group, ShareError, SharedLog};

/// Publishes groups from the (synchronous) publisher thread on the server's runtime.
pub(super) struct Publisher {
    pub(super) context: jetstream::Context,
    pub(super) subject: String,
    pub(super) keys: super::GroupKeys,
    pub(super) runtime: tokio::runtime::Handle,
    /// When the connection was last moved away from a server without JetStream.
    pub(super) reconnected: Option<Instant>,
}

impl Publisher {
    /// Moves the connection to another server, at most once a [`RECONNECT_PAUSE`]. A server
    /// that answers "no stream" for a stream that exists has no JetStream ready (one just thawed
    /// or restarted, still catching up), and the connection would otherwise stay on it while its
    /// pings are answered.
    async fn leave_server(&mut self) {
        if self
            .reconnected
            .is_some_and(|at| at.elapsed() < RECONNECT_PAUSE)
        {
            return;
        }
        self.reconnected = Some(Instant::now());
        tracing::warn!("the NATS server has no JetStream for the stream; connecting to another");
        if let Err(err) = self.context.client().force_reconnect().await {
            tracing::warn!(error = %err, "reconnecting to NATS failed");
        }
    }
}

/// The least time between two moves away from a server without JetStream.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

impl SharedLog for Publisher {
    fn append(&mut self, group: &Group, after: u64, deadline: Instant) -> Result<u64, ShareError> {
        use jetstream::context::PublishErrorKind;
        let message = jetstream::message::PublishMessage::build()
            .payload(group.frames.clone())
            .headers(group_headers(group, &self.keys))
            .message_id(crate::auth::hex(&group.hash()))
            .expected_last_sequence(after);
        let runtime = self.runtime.clone();
        runtime.block_on(async {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // Never send once the deadline has passed: the caller answers 503 and must not
                // find the group stored after all by an attempt it did not wait for.
                if left.is_zero() {
                    return Err(ShareError::Unavailable("the ingest deadline passed".into()));
                }
                let attempt = async {
                    self.context
                        .send_publish(self.subject.clone(), message.clone())
                        .await?
                        .await
                };
                let reason =
                    match tokio::time::timeout(left.min(PUBLISH_ATTEMPT_TIMEOUT), attempt).await {
                        Ok(Ok(ack)) => return Ok(ack.sequence),
                        Ok(Err(err)) if err.kind() == PublishErrorKind::WrongLastSequence => {
                            return Err(ShareError::Moved)
                        }
                        Ok(Err(err)) if err.kind() == PublishErrorKind::StreamNotFound => {
                            self.leave_server().await;
                            err.to_string()
                        }
                        Ok(Err(err)) => err.to_string(),
                        Err(_) => "no answer from JetStream".to_owned(),
                    };
                tracing::debug!(%reason, after, "publishing a group failed; trying again");
                if Instant::now() + Duration::from_millis(50) >= deadline {
                    return Err(ShareError::Unavailable(reason));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}
