//! Start-up and shutdown: lock the data directory, recover the log into a fresh view, start the
//! writer, serve HTTP until a signal, then drain the queue.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::{load_or_create_admin_key, load_or_create_master_secret, KeyError, Keys};
use crate::clock::now_us;
use crate::config::Config;
use crate::engine::{Engine, Maintenance, View};
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
    let _lock = storage::lock_dir(&config.data_dir)?;
    let (admin_key, created) = load_or_create_admin_key(&config.data_dir)?;
    if let Some(path) = created {
        tracing::info!(
            "first start: an admin key was written to {} (mode 0600)",
            path.display()
        );
    }
    let master = load_or_create_master_secret(config.master_secret.as_deref(), &config.data_dir)?;
    let keys = Keys::new(
        &admin_key,
        &config.static_keys,
        master,
        &config.data_dir,
        config.api_key_cache_ttl,
    )?;
    let engine = Arc::new(recover(config)?);
    let state = app_state(config, Arc::clone(&engine), keys);
    let draining = Arc::clone(&state.draining);
    let listen_error = |source| ServerError::Listen {
        bind: config.bind.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    tracing::info!("listening on http://{addr}");
    on_listen(addr);
    let limits = ConnLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        shutdown_grace: config.shutdown_grace,
        write_timeout: config.write_timeout,
    };
    crate::http::serve(listener, router(state), limits, shutdown, move || {
        // Load balancers see 503 at once; follow streams end.
        draining.send_replace(true);
    })
    .await;
    tracing::info!("shutting down: writing and syncing queued events");
    let drained = Arc::clone(&engine);
    let _ = tokio::task::spawn_blocking(move || drained.shutdown()).await;
    tracing::info!("shut down");
    Ok(())
}

/// What every handler shares, from the configuration, a started engine and the keys.
pub fn app_state(config: &Config, engine: Arc<Engine>, keys: Keys) -> AppState {
    AppState::new(SharedState {
        engine,
        keys: Arc::new(keys),
        limits: Limits {
            event_bytes_max: config.event_bytes_max,
            batch_events_max: config.batch_events_max,
            batch_bytes_max: config.batch_bytes_max,
            body_read_timeout: config.body_read_timeout,
            request_timeout: config.request_timeout,
            replay_heartbeat: config.replay_heartbeat,
            clock_skew_max: config.clock_skew_max,
            replay_streams_per_key_max: config.replay_streams_per_key_max,
        },
        stale_after_us: u64::try_from(config.stale_after.as_micros()).unwrap_or(u64::MAX),
        telemetry: Arc::new(HttpTelemetry::default()),
        draining: Arc::new(tokio::sync::watch::channel(false).0),
        replay_streams: Arc::default(),
        rate_limits: Arc::new(RateLimits::new(
            config.role_quotas.clone(),
            config.key_quotas.clone(),
        )),
        redactor: Arc::new(
            Redactor::new(&config.redaction)
                .expect("the redaction rules compiled when the configuration was read"),
        ),
    })
}

/// Opens the log in the configured data directory and folds it into a fresh view.
pub fn recover(config: &Config) -> Result<Engine, StorageError> {
    let started = Instant::now();
    let log_config = LogConfig {
        dir: config.data_dir.join("segments"),
        segment_max_bytes: config.segment_max_bytes,
        segment_max_age: config.segment_max_age,
        disk: crate::storage::Disk::real(),
    };
    let mut projection = Projection::new();
    let opened = storage::open(&log_config, now_us(), |event| projection.apply(event))?;
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
            .cleanup_interval
            .max(std::time::Duration::from_millis(100)),
        policy: retention::Policy {
            retention: config.retention,
            max_records: config.max_records,
            max_bytes: config.max_bytes,
        },
    };
    Ok(Engine::start(
        opened.writer,
        view,
        config.queue_events_max,
        maintenance,
    ))
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
