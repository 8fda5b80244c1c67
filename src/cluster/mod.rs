//! Cluster mode's transport: the shared log of groups is a NATS JetStream stream (replicated by
//! JetStream's Raft). The only module that knows NATS.
//!
//! - One stream (`[cluster] stream`, subject `<stream>.groups`, created denying deletes) holds
//!   one message per group: its frames as the payload, headers [`FIRST_SEQ_HEADER`],
//!   [`PREV_HASH_HEADER`], [`RULES_HEADER`] and [`MAC_HEADER`] (keyed by the shared master
//!   secret), a `Nats-Msg-Id` of the group's chain hash (so a retry after a lost answer is
//!   deduplicated) and `Nats-Expected-Last-Sequence` of the last position this node read (so a
//!   group is stored only right after the history it was planned against; the whole-stream
//!   expectation, since the per-subject one is not serializable under concurrent writers in
//!   nats-server 2.9).
//! - An ordered consumer delivers every message, in order, to the engine's follower: a message
//!   that is not an authenticated group goes as the reason, which the follower skips.
//! - At start the follower resumes at the group holding the node's last local seq, found by a
//!   binary search over the stream, so a restart catches up only the tail.
//! - Retention reaches the stream: once a node's retention deleted its oldest segments, the
//!   groups before the one holding its first seq are purged.
//!
//! `follow.rs` reads the stream for the follower, `resume.rs` finds where it goes on,
//! `publish.rs` appends groups for the publisher, `group.rs` maps a group to a message,
//! `trim.rs` purges what retention deleted, `watch.rs` tells the engine whether the stream can be
//! reached and where it ends (for readiness).

mod follow;
mod group;
mod hint;
mod publish;
mod resume;
mod trim;
mod watch;

use std::str::FromStr;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::ServerAddr;

use crate::engine::replica::SharedLog;

pub use group::{
    group_headers, GroupKeys, FIRST_SEQ_HEADER, MAC_HEADER, PREV_HASH_HEADER, RULES_HEADER,
};
pub use hint::HINT_FILE;

/// JetStream's deduplication window: long enough for any retry of one group.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Room kept in a message for its headers.
pub const HEADER_BYTES_MAX: usize = 1024;
/// How long one attempt to connect to a NATS server may take, at start and on every reconnect.
/// Short: a frozen server still accepts TCP connections (the kernel does) but never sends its
/// greeting, and a reconnect that waits long on it is a write stall; start-up tries again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the client pings a server that has sent nothing. async-nats drops a connection once
/// more than two pings go unanswered, so a silent (frozen, cut off) server is left after about
/// three of these and the client moves to another configured server. async-nats's default (60 s)
/// let a frozen server stall every write for minutes.
const PING_INTERVAL: Duration = Duration::from_secs(1);
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

/// The way back for a node whose history the stream no longer reaches (trimmed by retention),
/// named in the refusals that send the operator there.
const BOOTSTRAP_COMMAND: &str = "`mcplog-seg backup <a live node's data dir> <an empty data \
     dir>`, then start this node on the copy";

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
    /// The node's settings cannot make a cluster node.
    #[error("{0}")]
    Config(String),
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
    /// The keys groups are authenticated with.
    pub group_keys: GroupKeys,
    /// Where this node keeps the hint of its place in the stream (`None`: no hint).
    pub hint: Option<std::path::PathBuf>,
}

/// A connection to the cluster's stream.
pub struct Cluster {
    client: async_nats::Client,
    context: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    keys: GroupKeys,
    hint: Option<std::path::PathBuf>,
}

impl Cluster {
    /// Connects and makes sure the stream exists (creating it with `replicas` copies if not).
    pub async fn connect(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let client = connect_client(config).await?;
        // Short API timeouts: a cluster still electing its leaders answers nothing, and the
        // start-up loop in `ready_stream` asks again.
        let context = jetstream::ContextBuilder::new()
            .timeout(PUBLISH_ATTEMPT_TIMEOUT)
            .build(client.clone());
        let subject = format!("{}.groups", config.stream);
        let stream = ready_stream(&context, config, &subject).await?;
        check_stream(&stream, config, &subject)?;
        Ok(Cluster {
            client,
            context,
            stream,
            subject,
            keys: config.group_keys.clone(),
            hint: config.hint.clone(),
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

    /// The publisher's half: a [`SharedLog`] over this stream.
    pub fn shared_log(&self, runtime: tokio::runtime::Handle) -> Box<dyn SharedLog> {
        Box::new(publish::Publisher {
            context: self.context.clone(),
            subject: self.subject.clone(),
            keys: self.keys.clone(),
            runtime,
            reconnected: None,
        })
    }
}

/// The options every connection attempt uses: the client's name, the timeout, and the token
/// or credentials file configured.
async fn connect_options(
    config: &ClusterConfig,
) -> Result<async_nats::ConnectOptions, ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("mcplog")
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        // No request waits longer than one publish attempt (async-nats's default is 10 s).
        .request_timeout(Some(PUBLISH_ATTEMPT_TIMEOUT))
        .event_callback(|event| async move { log_connection_event(event) });
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    // A user and password in a URL (`nats://user:password@host:4222`), which the client does
    // not take from the URL itself: the shipped NATS configurations give the nodes a user.
    if let Some((user, password)) = url_user(&config.urls) {
        options = options.user_and_password(user, password);
    }
    if let Some(path) = &config.credentials {
        options = options.credentials_file(path).await.map_err(|err| {
            ClusterError::Connect(format!("the credentials file does not load: {err}"))
        })?;
    }
    Ok(options)
}

/// Tells the operator when the connection to NATS drops and comes back (the watch reports it to
/// the engine for readiness).
fn log_connection_event(event: async_nats::Event) {
    match event {
        async_nats::Event::Disconnected => {
            tracing::warn!("the connection to NATS dropped; reconnecting to a configured server")
        }
        async_nats::Event::Connected => tracing::info!("connected to a NATS server"),
        other => tracing::warn!(event = %other, "NATS connection event"),
    }
}

/// The first user and password the URLs carry, as written (use URL-safe characters: letters,
/// digits, `-`, `_`).
fn url_user(urls: &[String]) -> Option<(String, String)> {
    urls.iter().find_map(|url| {
        let addr = ServerAddr::from_str(url.trim()).ok()?;
        Some((addr.username()?.to_owned(), addr.password()?.to_owned()))
    })
}

/// Connects to one of the configured servers, waiting up to [`STREAM_READY_TIMEOUT`] for one
/// to answer: NATS servers started together with this node may not listen yet.
async fn connect_client(config: &ClusterConfig) -> Result<async_nats::Client, ClusterError> {
    let addrs = config
        .urls
        .iter()
        .map(|url| {
            ServerAddr::from_str(url.trim())
                .map_err(|err| ClusterError::Connect(format!("a NATS URL does not parse: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    loop {
        match connect_options(config).await?.connect(addrs.clone()).await {
            Ok(client) => return Ok(client),
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
    }
}

/// The stream, found or created with `replicas` copies; a cluster that has just started may
/// have no JetStream leader yet, so this asks again for up to [`STREAM_READY_TIMEOUT`].
async fn ready_stream(
    context: &jetstream::Context,
    config: &ClusterConfig,
    subject: &str,
) -> Result<stream::Stream, ClusterError> {
    let wanted = stream::Config {
        name: config.stream.clone(),
        subjects: vec![subject.to_owned()],
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        // The log is append-only: no message is taken out of its middle. Purging its head stays
        // possible (retention).
        deny_delete: true,
        ..Default::default()
    };
    let started = Instant::now();
    loop {
        match context.get_or_create_stream(wanted.clone()).await {
            Ok(stream) => return Ok(stream),
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
    }
}

/// A stream that existed before is taken as it is: says where it differs from what this node
/// would have created, and refuses one that does not take the groups' subject.
fn check_stream(
    stream: &stream::Stream,
    config: &ClusterConfig,
    subject: &str,
) -> Result<(), ClusterError> {
    let found = &stream.cached_info().config;
    if found.num_replicas != config.replicas {
        tracing::warn!(
            stream = %config.stream,
            replicas = found.num_replicas,
            configured = config.replicas,
            "the stream exists with another number of replicas; it is used as it is"
        );
    }
    if !found.subjects.iter().any(|s| s == subject) {
        return Err(ClusterError::JetStream(format!(
            "the stream {:?} exists but does not take the subject {subject:?}",
            config.stream
        )));
    }
    if !found.deny_delete {
        tracing::warn!(
            stream = %config.stream,
            "the stream allows deleting messages; mcplog creates it with deny_delete"
        );
    }
    if found.duplicate_window < DUPLICATE_WINDOW {
        tracing::warn!(
            stream = %config.stream,
            duplicate_window_s = found.duplicate_window.as_secs(),
            "the stream's duplicate window is shorter than mcplog's ingest deadline allows for"
        );
    }
    Ok(())
}
