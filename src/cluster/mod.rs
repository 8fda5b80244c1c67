//! Cluster mode's transport: the shared log of groups is a NATS JetStream stream (replicated by
//! JetStream's Raft). The only module that knows NATS.
//!
//! - One stream (`[cluster] stream`, subject `<stream>.groups`) holds one message per group: its
//!   frames as the payload, headers [`FIRST_SEQ_HEADER`] and [`PREV_HASH_HEADER`], a
//!   `Nats-Msg-Id` of the group's chain hash (so a retry after a lost answer is deduplicated) and
//!   `Nats-Expected-Last-Sequence` of the last group this node applied (so a group is stored only
//!   right after the history it was planned against; the whole-stream expectation, since the
//!   per-subject one is not serializable under concurrent writers in nats-server 2.9).
//! - An ordered consumer delivers every message, in order, to the engine's follower.
//! - At start the follower resumes at the group holding the node's last local seq, found by a
//!   binary search over the stream, so a restart catches up only the tail.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::engine::replica::{Applied, Group, GroupFeed, ShareError, SharedLog};
use crate::engine::Engine;

/// The header carrying a group's first seq, in decimal.
pub const FIRST_SEQ_HEADER: &str = "Mcplog-First-Seq";
/// The header carrying the previous group's chain hash, in hex.
pub const PREV_HASH_HEADER: &str = "Mcplog-Prev-Hash";
/// JetStream's deduplication window: long enough for any retry of one group.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Room kept in a message for its headers.
pub const HEADER_BYTES_MAX: usize = 1024;
/// How long connecting to NATS at start may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long start-up waits for a NATS server to answer, and then for JetStream to create or
/// find the stream.
const STREAM_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one publish attempt waits for JetStream's answer.
const PUBLISH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one pull of the follower's consumer waits; its idle heartbeat is half of it.
const CONSUMER_PULL_EXPIRY: Duration = Duration::from_secs(2);
/// How often a quiet consumer is checked on, and how many quiet checks in a row (while the stream
/// holds more) mean it is lost.
const FOLLOW_QUIET_CHECK: Duration = Duration::from_millis(500);
const FOLLOW_QUIET_CHECKS: u32 = 3;
/// The pause before reading the stream again after the consumer failed.
const CONSUMER_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS could not be reached or refused us.
    #[error("connecting to NATS: {0}")]
    Connect(String),
    /// A JetStream request failed.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// The node's log and the stream disagree.
    #[error("{0}")]
    Diverged(String),
}

/// What the cluster settings say.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs.
    pub urls: Vec<String>,
    /// The stream's name.
    pub stream: String,
    /// Replicas when the stream is created.
    pub replicas: usize,
    /// The authentication token, if any.
    pub token: Option<String>,
    /// A NATS credentials file (user JWT and NKey seed), if any.
    pub credentials: Option<std::path::PathBuf>,
}

/// A connection to the cluster's stream.
pub struct Cluster {
    client: async_nats::Client,
    context: jetstream::Context,
    stream: stream::Stream,
    subject: String,
}

impl Cluster {
    /// Connects and makes sure the stream exists (creating it with `replicas` copies if not).
    pub async fn connect(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let addrs = config
            .urls
            .iter()
            .map(|url| {
                ServerAddr::from_str(url.trim()).map_err(|err| {
                    ClusterError::Connect(format!("a NATS URL does not parse: {err}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let options = || async {
            let mut options = async_nats::ConnectOptions::new()
                .name("mcplog")
                .connection_timeout(CONNECT_TIMEOUT);
            if let Some(token) = &config.token {
                options = options.token(token.clone());
            }
            if let Some(path) = &config.credentials {
                options = options.credentials_file(path).await.map_err(|err| {
                    ClusterError::Connect(format!("the credentials file does not load: {err}"))
                })?;
            }
            Ok::<_, ClusterError>(options)
        };
        // NATS servers started together with this node may not listen yet.
        let started = Instant::now();
        let client = loop {
            match options().await?.connect(addrs.clone()).await {
                Ok(client) => break client,
                // Refused credentials will not get better by waiting.
                Err(err)
                    if started.elapsed() < STREAM_READY_TIMEOUT
                        && !matches!(
                            err.kind(),
                            async_nats::ConnectErrorKind::AuthorizationViolation
                                | async_nats::ConnectErrorKind::Authentication
                                | async_nats::ConnectErrorKind::ServerParse
                        ) =>
                {
                    tracing::info!(error = %err, "waiting for a NATS server to answer");
                    tokio::time::sleep(CONSUMER_RETRY_PAUSE).await;
                }
                Err(err) => return Err(ClusterError::Connect(err.to_string())),
            }
        };
        // Short API timeouts: a cluster still electing its leaders answers nothing, and the
        // start-up loop below asks again.
        let context = jetstream::ContextBuilder::new()
            .timeout(PUBLISH_ATTEMPT_TIMEOUT)
            .build(client.clone());
        let subject = format!("{}.groups", config.stream);
        let wanted = stream::Config {
            name: config.stream.clone(),
            subjects: vec![subject.clone()],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        // A cluster that has just started may have no JetStream leader yet.
        let started = Instant::now();
        let stream = loop {
            match context.get_or_create_stream(wanted.clone()).await {
                Ok(stream) => break stream,
                Err(err) if started.elapsed() < STREAM_READY_TIMEOUT => {
                    tracing::info!(error = %err, "waiting for JetStream to take the stream");
                    tokio::time::sleep(CONSUMER_RETRY_PAUSE).await;
                }
                Err(err) => {
                    return Err(ClusterError::JetStream(format!(
                        "creating the stream {:?}: {err}",
                        config.stream
                    )))
                }
            }
        };
        // A stream that existed before is taken as it is: say where it differs from what this
        // node would have created.
        let found = &stream.cached_info().config;
        if found.num_replicas != config.replicas {
            tracing::warn!(
                stream = %config.stream,
                replicas = found.num_replicas,
                configured = config.replicas,
                "the stream exists with another number of replicas; it is used as it is"
            );
        }
        if !found.subjects.contains(&subject) {
            return Err(ClusterError::JetStream(format!(
                "the stream {:?} exists but does not take the subject {subject:?}",
                config.stream
            )));
        }
        if found.duplicate_window < DUPLICATE_WINDOW {
            tracing::warn!(
                stream = %config.stream,
                duplicate_window_s = found.duplicate_window.as_secs(),
                "the stream's duplicate window is shorter than mcplog's ingest deadline allows for"
            );
        }
        Ok(Cluster {
            client,
            context,
            stream,
            subject,
        })
    }

    /// The largest message the NATS server takes.
    pub fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    /// The version the connected NATS server reports.
    pub fn server_version(&self) -> String {
        self.client.server_info().version
    }

    /// Where the follower goes on, for a node whose log ends at `local_last` (0: empty): the
    /// stream position to read from, and the state just before it.
    pub async fn resume_point(&self, local_last: u64) -> Result<(u64, Applied), ClusterError> {
        let start = Applied {
            position: 0,
            hash: [0; 32],
            next_seq: 1,
            received_at_us: 0,
        };
        let mut stream = self.stream.clone();
        let state = stream
            .info()
            .await
            .map_err(|err| ClusterError::JetStream(format!("reading the stream's state: {err}")))?
            .state
            .clone();
        if local_last == 0 {
            if state.first_sequence > 1 && state.messages > 0 {
                return Err(ClusterError::Diverged(format!(
                    "the stream no longer holds its first groups (it begins at position {}); \
                     an empty node cannot catch up: start it from a backup of another node",
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
        // The last position whose group begins at or before `local_last`: first seqs grow
        // with positions.
        let (mut low, mut high) = (state.first_sequence, state.last_sequence);
        let first = self.group_at(low).await?;
        if first.first_seq > local_last {
            return Err(ClusterError::Diverged(format!(
                "the stream's first group begins at seq {}, after this node's last seq {local_last}",
                first.first_seq
            )));
        }
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            if self.group_at(mid).await?.first_seq <= local_last {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
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

    async fn group_at(&self, position: u64) -> Result<Group, ClusterError> {
        let message = self.stream.get_raw_message(position).await.map_err(|err| {
            ClusterError::JetStream(format!("reading the group at position {position}: {err}"))
        })?;
        group_of(&message.headers, message.payload).map_err(|why| {
            ClusterError::Diverged(format!("the group at position {position}: {why}"))
        })
    }

    /// Whether the stream holds a group at `position` or later (false if it cannot tell).
    async fn holds_beyond(&self, position: u64) -> bool {
        let mut stream = self.stream.clone();
        match tokio::time::timeout(PUBLISH_ATTEMPT_TIMEOUT, stream.info()).await {
            Ok(Ok(info)) => info.state.last_sequence >= position,
            _ => false,
        }
    }

    /// The publisher's half: a [`SharedLog`] over this stream.
    pub fn shared_log(&self, runtime: tokio::runtime::Handle) -> Box<dyn SharedLog> {
        Box::new(Publisher {
            context: self.context.clone(),
            subject: self.subject.clone(),
            runtime,
        })
    }

    /// Reads the stream from `position` on and hands every group to the follower, until the
    /// follower goes away. Runs as a task; a failed consumer is recreated after the last group
    /// delivered.
    pub async fn follow(self: Arc<Self>, mut position: u64, feed: GroupFeed, engine: Arc<Engine>) {
        loop {
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
            let mut messages = match consumer {
                Ok(consumer) => match consumer.messages().await {
                    Ok(messages) => messages,
                    Err(err) => {
                        tracing::warn!(error = %err, "reading the cluster's stream failed; retrying");
                        tokio::time::sleep(CONSUMER_RETRY_PAUSE).await;
                        continue;
                    }
                },
                Err(err) => {
                    tracing::warn!(error = %err, "creating the stream's consumer failed; retrying");
                    tokio::time::sleep(CONSUMER_RETRY_PAUSE).await;
                    continue;
                }
            };
            let mut quiet = 0;
            loop {
                // A consumer can go quiet without an error when the stream's leader moves: after
                // a quiet spell, ask the stream whether it holds groups not delivered yet.
                let message = match tokio::time::timeout(FOLLOW_QUIET_CHECK, messages.next()).await
                {
                    Ok(Some(message)) => {
                        quiet = 0;
                        message
                    }
                    Ok(None) => break,
                    Err(_) => {
                        quiet += 1;
                        // Several quiet checks in a row, so a large group still arriving over a
                        // slow link is not mistaken for a lost consumer.
                        if quiet >= FOLLOW_QUIET_CHECKS && self.holds_beyond(position).await {
                            tracing::warn!(
                                position,
                                "the stream's consumer went quiet with groups left; recreating it"
                            );
                            break;
                        }
                        continue;
                    }
                };
                let message = match message {
                    Ok(message) => message,
                    Err(err) => {
                        tracing::warn!(error = %err, "the stream's consumer failed; recreating it");
                        break;
                    }
                };
                let Ok(info) = message.info() else {
                    tracing::warn!("a message without JetStream metadata; recreating the consumer");
                    break;
                };
                let at = info.stream_sequence;
                engine.set_replica_pending(info.pending);
                let group = match &message.headers {
                    Some(headers) => group_of(headers, message.payload.clone()),
                    None => Err(format!("no {FIRST_SEQ_HEADER} header")),
                };
                if !deliver(&feed, at, group).await {
                    return;
                }
                position = at + 1;
            }
            tokio::time::sleep(CONSUMER_RETRY_PAUSE).await;
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

/// A group from a message's headers and payload, or why it is not one.
fn group_of(headers: &HeaderMap, frames: Bytes) -> Result<Group, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.as_str().to_owned())
            .ok_or(format!("no {name} header"))
    };
    let first_seq = header(FIRST_SEQ_HEADER)?
        .parse::<u64>()
        .map_err(|_| format!("{FIRST_SEQ_HEADER} is not a number"))?;
    let prev_hash = crate::hex::decode_array(&header(PREV_HASH_HEADER)?)
        .ok_or(format!("{PREV_HASH_HEADER} is not 64 hex digits"))?;
    Ok(Group {
        first_seq,
        prev_hash,
        frames,
    })
}

/// The headers of a group's message.
pub fn group_headers(group: &Group) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(FIRST_SEQ_HEADER, group.first_seq.to_string().as_str());
    headers.insert(
        PREV_HASH_HEADER,
        crate::auth::hex(&group.prev_hash).as_str(),
    );
    headers
}

/// Publishes groups from the (synchronous) publisher thread on the server's runtime.
struct Publisher {
    context: jetstream::Context,
    subject: String,
    runtime: tokio::runtime::Handle,
}

impl SharedLog for Publisher {
    fn append(&mut self, group: &Group, after: u64, deadline: Instant) -> Result<u64, ShareError> {
        use jetstream::context::PublishErrorKind;
        let message = jetstream::message::PublishMessage::build()
            .payload(group.frames.clone())
            .headers(group_headers(group))
            .message_id(crate::auth::hex(&group.hash()))
            .expected_last_sequence(after);
        self.runtime.block_on(async {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_survives_its_headers() {
        let group = Group {
            first_seq: 42,
            prev_hash: [7; 32],
            frames: Bytes::from_static(b"frames"),
        };
        let back = group_of(&group_headers(&group), group.frames.clone()).unwrap();
        assert_eq!(back, group);
        let mut bad = group_headers(&group);
        bad.insert(PREV_HASH_HEADER, "zz");
        assert!(group_of(&bad, Bytes::new())
            .unwrap_err()
            .contains(PREV_HASH_HEADER));
        assert!(group_of(&HeaderMap::new(), Bytes::new())
            .unwrap_err()
            .contains(FIRST_SEQ_HEADER));
    }
}
