//! Start-up and shutdown: lock the data directory, recover the log into a fresh view, start the
//! writer, serve HTTP until a signal, then drain the queue.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::{
    load_or_create_admin_key, master_secrets, AdminReload, KeyError, Keys, SecretFile,
};
use crate::clock::now_us;
use crate::config::Config;
use crate::engine::{tell_revocations, Engine, Maintenance, OnRevocation, View};
use crate::http::{router, AppState, ConnLimits, HttpTelemetry, Limits, SharedState};
use crate::projector::Projection;
use crate::ratelimit::RateLimits;
use crate::redact::Redactor;
use crate::storage::{self, retention, LogConfig, StorageError};

/// Why the server could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The log could not be opened or recovered.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A key, the master secret or the revocation list could not be read or created.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Cluster mode could not start.
    #[error("cluster mode: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The listening socket could not be bound or served.
    #[error("listen on {bind}: {source}")]
    Listen {
        /// The configured address.
        bind: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Runs the server until `shutdown` resolves, then stops taking events, writes and syncs what is
/// queued, and returns. `on_listen` is told the bound address (useful with port 0).
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let _lock = storage::lock_dir(&config.storage.data_dir)?;
    let keys = Arc::new(load_keys(config)?);
    let on_revocation = revoker(&keys);
    let (engine, follow, config) = match &config.cluster.nats_url {
        None => (
            Arc::new(recover(config, on_revocation)?),
            None,
            config.clone(),
        ),
        Some(urls) => {
            let (engine, follow, config) =
                start_cluster(config, urls, &keys, on_revocation).await?;
            (engine, Some(follow), config)
        }
    };
    let config = &config;
    let state = app_state(config, Arc::clone(&engine), keys);
    let watcher = tokio::spawn(watch_admin_key(Arc::clone(&state.keys)));
    let draining = Arc::clone(&state.draining);
    let listen_error = |source| ServerError::Listen {
        bind: config.api.bind.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&config.api.bind)
        .await
        .map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    tracing::info!("listening on http://{addr}");
    on_listen(addr);
    let limits = ConnLimits {
        max_connections: config.api.max_connections,
        header_read_timeout: config.api.header_read_timeout,
        shutdown_grace: config.api.shutdown_grace,
        write_timeout: config.api.write_timeout,
    };
    crate::http::serve(listener, router(state), limits, shutdown, move || {
        // Load balancers see 503 at once; follow streams end.
        draining.send_replace(true);
    })
    .await;
    watcher.abort();
    tracing::info!("shutting down: writing and syncing queued events");
    drain(engine, follow).await;
    tracing::info!("shut down");
    Ok(())
}

/// The keys the server accepts: the admin key file's (made on first start), the static keys,
/// and signed keys under the master secrets, with the revocations in the data directory.
fn load_keys(config: &Config) -> Result<Keys, ServerError> {
    let (admin_key, created) = load_or_create_admin_key(&config.storage.data_dir)?;
    if let Some(path) = created {
        tracing::info!(
            "first start: an admin key was written to {} (mode 0600)",
            path.display()
        );
    }
    let masters = master_secrets(
        config.keys.master_secret.as_deref(),
        &config.keys.previous_master_secrets,
        &config.storage.data_dir,
        SecretFile::Create,
    )?;
    if !masters.previous.is_empty() {
        tracing::info!(
            previous = masters.previous.len(),
            "keys signed with a previous master secret are accepted (security.previous_master_secrets)"
        );
    }
    Ok(Keys::new(
        &admin_key,
        &config.keys.static_keys,
        masters,
        &config.storage.data_dir,
        config.keys.api_key_cache_ttl,
    )?)
}

/// The engine's hook for the revocation records it folds (and start-up's): each revokes its key
/// in `keys`, which also writes it to `<data>/revoked.keys`.
pub fn revoker(keys: &Arc<Keys>) -> OnRevocation {
    let keys = Arc::clone(keys);
    Arc::new(move |revoked| {
        if let Err(err) = keys.revoke(revoked) {
            // Revoked in memory all the same; the next start applies the record again.
            tracing::error!(
                key_id = %crate::hex::encode(&revoked),
                error = %err,
                "a revocation record was applied but could not be written to revoked.keys"
            );
        }
    })
}

/// Writes and syncs what is queued, once the server takes no more events; in cluster mode, the
/// stream is read (`follow`) until the queue is answered.
async fn drain(engine: Arc<Engine>, follow: Option<tokio::task::JoinHandle<()>>) {
    if let Some(follow) = follow {
        // Publishing needs the follower to answer: stop reading the stream only once the queue
        // is answered.
        let drained = Arc::clone(&engine);
        let _ = tokio::task::spawn_blocking(move || drained.close_queue()).await;
        follow.abort();
        let _ = follow.await;
    }
    let drained = Arc::clone(&engine);
    let _ = tokio::task::spawn_blocking(move || drained.shutdown()).await;
}

/// What every handler shares, from the configuration, a started engine and the keys.
pub fn app_state(config: &Config, engine: Arc<Engine>, keys: Arc<Keys>) -> AppState {
    let cursors = crate::query::CursorKey::new(keys.derived_secret("history cursors v1"));
    AppState::new(SharedState {
        engine,
        keys,
        limits: Limits {
            event_bytes_max: config.api.event_bytes_max,
            batch_events_max: config.api.batch_events_max,
            interaction_events_max: config.api.interaction_events_max,
            batch_bytes_max: config.api.batch_bytes_max,
            body_read_timeout: config.api.body_read_timeout,
            request_timeout: config.api.request_timeout,
            replay_heartbeat: config.api.replay_heartbeat,
            clock_skew_max: config.api.clock_skew_max,
            replay_streams_per_key_max: config.api.replay_streams_per_key_max,
        },
        stale_after_us: u64::try_from(config.projection.stale_after.as_micros())
            .unwrap_or(u64::MAX),
        telemetry: Arc::new(HttpTelemetry::default()),
        draining: Arc::new(tokio::sync::watch::channel(false).0),
        replay_streams: Arc::default(),
        rate_limits: Arc::new(RateLimits::new(
            config.rate_limits.role_quotas.clone(),
            config.rate_limits.key_quotas.clone(),
        )),
        redactor: Arc::new(redactor(config)),
        metrics_auth: config.api.metrics_auth,
        cluster_node: config.cluster.nats_url.is_some(),
        ready_lag_groups: config.cluster.ready_lag_groups,
        cursors,
    })
}

/// The redaction rules of the configuration, with the static keys as secrets to redact.
fn redactor(config: &Config) -> Redactor {
    let statics: Vec<&str> = config
        .keys
        .static_keys
        .iter()
        .map(|k| k.key.as_str())
        .collect();
    Redactor::with_secrets(&config.redaction, &statics)
        .expect("the redaction rules compiled when the configuration was read")
}

/// Opens the log in the configured data directory and folds it into a fresh view.
/// Cluster mode: connects to the stream, recovers the local log, finds where to go on in the
/// stream, and starts the engine with its follower reading from there. Returns the engine, the
/// reading task, and the configuration with the batch limits lowered if they would not fit in one
/// NATS message.
async fn start_cluster(
    config: &Config,
    urls: &str,
    keys: &Keys,
    on_revocation: OnRevocation,
) -> Result<(Arc<Engine>, tokio::task::JoinHandle<()>, Config), ServerError> {
    use crate::cluster::{Cluster, ClusterConfig, HEADER_BYTES_MAX};
    use crate::engine::replica::{PublishLimits, FRAME_FIXED_BYTES_MAX};
    let cluster = Cluster::connect(&ClusterConfig {
        urls: urls.split(',').map(str::to_owned).collect(),
        stream: config.cluster.stream.clone(),
        replicas: config.cluster.replicas as usize,
        token: config.cluster.token.clone(),
        credentials: config.cluster.credentials.as_ref().map(Into::into),
        group_keys: group_keys(config, keys)?,
        hint: Some(config.storage.data_dir.join(crate::cluster::HINT_FILE)),
    })
    .await?;
    let version = cluster.server_version();
    warn_about_fsync(&version);
    // A cluster node's seqs come from the stream: a cut at its end skips none, since the stream
    // delivers the cut groups again with the same seqs and bytes.
    let (writer, view, maintenance) = open_log(config, storage::Seqs::FromStream, &on_revocation)?;
    // The writer's, not the catalog's: retention may have left only an empty active segment.
    let local_last = writer.next_seq() - 1;
    let (position, resume) = cluster.resume_point(local_last).await?;
    // A submission must fit one message: its frames hold each body and each event's ids (no
    // longer than the body that spells them) and the fixed fields.
    let group_bytes_max = cluster.max_payload().saturating_sub(HEADER_BYTES_MAX);
    let mut config = config.clone();
    let fits =
        (group_bytes_max.saturating_sub(config.api.batch_events_max * FRAME_FIXED_BYTES_MAX)) / 2;
    if config.api.batch_bytes_max > fits {
        tracing::warn!(
            configured = config.api.batch_bytes_max,
            lowered_to = fits,
            nats_max_payload = cluster.max_payload(),
            "batch_bytes_max lowered so that a batch fits one NATS message; raise max_payload in \
             the NATS servers' configuration to keep it"
        );
        config.api.batch_bytes_max = fits;
        config.api.event_bytes_max = config.api.event_bytes_max.min(fits);
    }
    tracing::info!(
        nats_version = %version,
        stream = %config.cluster.stream,
        resume_position = position,
        local_last_seq = local_last,
        "cluster mode: following the stream"
    );
    let cluster = Arc::new(cluster);
    let (engine, feed) = Engine::start_replicated(
        writer,
        view,
        config.api.queue_events_max,
        maintenance,
        cluster.shared_log(tokio::runtime::Handle::current()),
        resume,
        PublishLimits {
            ingest_deadline: config.cluster.ingest_deadline,
            group_bytes_max,
            rules: rules_policy(&config),
        },
        on_revocation,
    );
    let engine = Arc::new(engine);
    // Reading the stream, trimming it with retention and keeping the position hint run together
    // until shutdown aborts them.
    let trim = Arc::clone(&cluster).trim(Arc::clone(&engine), position);
    let hint = Arc::clone(&cluster).keep_hint(Arc::clone(&engine));
    let read = cluster.follow(position, feed, Arc::clone(&engine));
    let follow = tokio::spawn(async move {
        tokio::join!(read, trim, hint);
    });
    Ok((engine, follow, config))
}

/// The keys groups are authenticated with, derived from the master secret: it must be set, since
/// a secret each node made for itself would have every node skip every other node's groups.
fn group_keys(config: &Config, keys: &Keys) -> Result<crate::cluster::GroupKeys, ServerError> {
    if config.keys.master_secret.is_none() {
        return Err(crate::cluster::ClusterError::Config(
            "cluster mode needs security.master_secret (MCPLOG_MASTER_SECRET), the same on every \
             node: groups are authenticated with a key derived from it"
                .into(),
        )
        .into());
    }
    Ok(crate::cluster::GroupKeys::of(keys))
}

/// This node's rules, fingerprinted with the limits in effect (`event_bytes_max` may have been
/// lowered to fit a NATS message).
fn rules_policy(config: &Config) -> crate::engine::replica::RulesPolicy {
    let fingerprint = crate::engine::replica::fingerprint(
        redactor(config).version(),
        config.api.event_bytes_max,
        config.api.interaction_events_max,
        config.api.clock_skew_max,
    );
    tracing::info!(
        rules = %crate::hex::encode(&fingerprint),
        adopt_rules = config.cluster.adopt_rules,
        "cluster mode: this node's rules fingerprint"
    );
    crate::engine::replica::RulesPolicy {
        fingerprint,
        adopt: config.cluster.adopt_rules,
    }
}

/// JetStream acknowledges before its fsync unless the servers sync every write (`sync_interval:
/// always`, from nats-server 2.10); a client cannot read that setting, so say what it means.
fn warn_about_fsync(version: &str) {
    let before_2_10 = {
        let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) < (2, 10)
    };
    if before_2_10 {
        tracing::warn!(
            nats_version = version,
            "this nats-server acknowledges a write before it is fsynced on its servers: an \
             acknowledged event survives the loss of a minority of NATS servers, and mcplog's \
             own fdatasync on this node, but not a power loss of a majority at once; nats-server \
             2.10 or later with `sync_interval: always` closes that"
        );
    } else {
        tracing::warn!(
            nats_version = version,
            "mcplog cannot read the NATS servers' sync_interval: unless they set \
             `sync_interval: always`, an acknowledged event may be lost if a majority of them \
             lose power at once"
        );
    }
}

/// Opens the log and folds it: the writer, the view and the maintenance policy. Every revocation
/// record in the log is told to `on_revocation`, so a node that lost `revoked.keys`, or took its
/// history from the stream, still refuses the keys the log revokes.
fn open_log(
    config: &Config,
    seqs: storage::Seqs,
    on_revocation: &OnRevocation,
) -> Result<(storage::LogWriter, View, Maintenance), StorageError> {
    let started = Instant::now();
    let log_config = LogConfig {
        dir: config.storage.data_dir.join("segments"),
        segment_max_bytes: config.storage.segment_max_bytes,
        segment_max_age: config.storage.segment_max_age,
        disk: crate::storage::Disk::real(),
    };
    let mut projection = Projection::new();
    let opened = storage::open_with(&log_config, now_us(), seqs, |event| {
        projection.apply(event);
        tell_revocations([event], on_revocation);
    })?;
    tracing::info!(
        events = projection.events_total(),
        interactions = projection.record_count(),
        segments = opened.catalog.segments().len(),
        truncated_bytes = opened.truncated_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "log recovered"
    );
    let view = View {
        projection,
        catalog: opened.catalog,
    };
    let maintenance = Maintenance {
        interval: config
            .storage
            .cleanup_interval
            .max(std::time::Duration::from_millis(100)),
        policy: retention::Policy {
            retention: config.storage.retention,
            max_records: config.storage.max_records,
            max_bytes: config.storage.max_bytes,
        },
    };
    Ok((opened.writer, view, maintenance))
}

/// Recovers the log and starts a single node's engine on it; `on_revocation` is told of every
/// revocation record folded, at start-up and after.
pub fn recover(config: &Config, on_revocation: OnRevocation) -> Result<Engine, StorageError> {
    let (writer, view, maintenance) = open_log(config, storage::Seqs::NeverReuse, &on_revocation)?;
    Ok(Engine::start(
        writer,
        view,
        config.api.queue_events_max,
        maintenance,
        on_revocation,
    ))
}

/// How often `<data>/admin.key` is read again.
pub const ADMIN_KEY_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads `<data>/admin.key` again every [`ADMIN_KEY_POLL`] and at once on SIGHUP, so that a
/// replaced file takes effect, and a deleted one is made again with a new key, without a restart.
async fn watch_admin_key(keys: Arc<Keys>) {
    use tokio::signal::unix::{signal, SignalKind};
    // Without a handler, SIGHUP would end the process.
    let mut hangup = signal(SignalKind::hangup()).ok();
    // A broken file is reported once per distinct fault, not every second.
    let mut last_fault: Option<String> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(ADMIN_KEY_POLL) => {}
            Some(()) = async {
                match hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            } => tracing::info!("SIGHUP: reading admin.key again"),
        }
        let reloading = Arc::clone(&keys);
        let Ok(result) = tokio::task::spawn_blocking(move || reloading.reload_admin_key()).await
        else {
            continue;
        };
        match result {
            Ok(AdminReload::Unchanged) => last_fault = None,
            Ok(AdminReload::Replaced) => {
                last_fault = None;
                tracing::warn!(
                    "admin.key changed: its new key is the admin key from now on, and the previous \
                     one is refused (streams opened with it end)"
                );
            }
            Ok(AdminReload::Recreated(path)) => {
                last_fault = None;
                tracing::warn!(
                    "admin.key was deleted: a new admin key was written to {} (mode 0600), and the \
                     previous one is refused (streams opened with it end)",
                    path.display()
                );
            }
            Err(err) => {
                let fault = err.to_string();
                if last_fault.as_ref() != Some(&fault) {
                    tracing::error!(
                        "admin.key cannot be read ({fault}); the admin key in use is kept"
                    );
                    last_fault = Some(fault);
                }
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
