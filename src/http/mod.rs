//! The HTTP layer (axum): the only module that knows HTTP.
//!
//! [`router`] builds every route over an [`AppState`]; handlers authenticate, read bodies within
//! their limits, call the engine or read the view, and shape JSON. Errors are [`ApiError`].

mod admit;
mod body;
mod error;
mod ingest;
mod keepalive;
mod keys;
mod listen;
mod observe;
mod openapi;
mod otlp;
mod query;
mod records;
mod refusal;
mod replay;
mod route;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

pub use error::{ApiError, ErrorJson, ItemError};
pub use listen::{serve, ConnLimits};
pub use observe::HttpTelemetry;
pub use openapi::ApiDoc;
pub use route::Route;

use crate::auth::{AuthError, Keys, Principal};
use crate::engine::Engine;
use crate::refusal::Code;

/// Request limits, in the units their names say.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single-event body in bytes.
    pub event_bytes_max: usize,
    /// Most events in one batch.
    pub batch_events_max: usize,
    /// Most events one interaction may hold.
    pub interaction_events_max: usize,
    /// Largest batch body in bytes.
    pub batch_bytes_max: usize,
    /// How long an ingest request may take to send its body.
    pub body_read_timeout: Duration,
    /// How long a request on any route but the replay stream may take in all.
    pub request_timeout: Duration,
    /// How often a quiet follow stream sends a heartbeat line.
    pub replay_heartbeat: Duration,
    /// How far past the server's clock an event's timestamp may be.
    pub clock_skew_max: Duration,
    /// Most replay streams one key may have open at once.
    pub replay_streams_per_key_max: usize,
}

/// What every handler shares, behind one `Arc`: axum clones the state for every request, and one
/// reference count costs less than one per field (a profile of single-event ingest showed the
/// per-field clones and drops).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    /// Shares `state` between handlers.
    pub fn new(state: SharedState) -> AppState {
        AppState(Arc::new(state))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct SharedState {
    /// The ingest engine and the view.
    pub engine: Arc<Engine>,
    /// Accepted API keys.
    pub keys: Arc<Keys>,
    /// Request limits.
    pub limits: Limits,
    /// `stale_after` in microseconds.
    pub stale_after_us: u64,
    /// Request metrics.
    pub telemetry: Arc<HttpTelemetry>,
    /// True once shutdown has begun: `/readyz` answers 503 and follow streams end.
    pub draining: Arc<watch::Sender<bool>>,
    /// Replay streams open per key.
    pub replay_streams: Arc<replay::OpenStreams>,
    /// Per-key ingest rate limits.
    pub rate_limits: Arc<crate::ratelimit::RateLimits>,
    /// Redaction applied to every event before it is stored.
    pub redactor: Arc<crate::redact::Redactor>,
    /// `/metrics` needs an auditor or admin key (`api.metrics_auth`).
    pub metrics_auth: bool,
    /// True on a cluster node, whose view may trail seqs another node acknowledged: a read's
    /// `min_seq` beyond this node's log is waited for there, and refused at once on a single node
    /// (which has acknowledged every seq it will ever hold).
    pub cluster_node: bool,
    /// `cluster.ready_lag_groups`: how far behind the stream's end a cluster node is still ready.
    pub ready_lag_groups: u64,
    /// Seals history positions into opaque cursors.
    pub cursors: crate::query::CursorKey,
}

/// Every route of the service. Every route but the replay stream is bounded by
/// `request_timeout`; the stream is bounded by its reader and by shutdown instead.
pub fn router(state: AppState) -> Router {
    let timeout = state.limits.request_timeout;
    let (mut streaming, mut bounded) = (Router::new(), Router::new());
    for route in Route::ALL {
        if route.streams() {
            streaming = streaming.route(route.path(), route.handlers());
        } else {
            bounded = bounded.route(route.path(), route.handlers());
        }
    }
    let bounded = bounded.route_layer(
        tower::ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(
                move |_: axum::BoxError| async move { ApiError::timed_out(timeout) },
            ))
            .layer(tower::timeout::TimeoutLayer::new(timeout)),
    );
    streaming
        .merge(bounded)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn(no_params))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            redact_keys,
        ))
        .layer(axum::middleware::from_fn(otlp::protobuf_refusals))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::track,
        ))
        .layer(axum::middleware::from_fn(keepalive::close_if_unread))
        .with_state(state)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Principal, ApiError> {
        authenticate(&parts.headers, state)
    }
}

/// The caller of a request, from its one `Authorization: Bearer` header.
pub(crate) fn authenticate(
    headers: &header::HeaderMap,
    state: &AppState,
) -> Result<Principal, ApiError> {
    {
        // Two keys would leave which one acts to chance.
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next().ok_or_else(ApiError::unauthorized)?;
        if values.next().is_some() {
            return Err(ApiError {
                message: "send one Authorization header".into(),
                ..ApiError::unauthorized()
            });
        }
        let key = value
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or_else(ApiError::unauthorized)?;
        let now_s = crate::clock::now_us() as f64 / 1e6;
        state.keys.authenticate(key, now_s).map_err(refused_key)
    }
}

/// The 401 for a key that is not (or no longer) accepted.
fn refused_key(err: AuthError) -> ApiError {
    match err {
        AuthError::Unknown => ApiError::unauthorized(),
        other => ApiError {
            message: other.to_string(),
            ..ApiError::unauthorized()
        },
    }
}

/// The caller's key checked again once a request's body has been read: the headers were checked
/// when they arrived, and a body may take up to `body_read_timeout` more, during which the key
/// may be revoked, expire, or stop being the admin key file's. Such a request does nothing.
pub(crate) fn still_accepted(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    let now_s = crate::clock::now_us() as f64 / 1e6;
    state
        .keys
        .still_accepts(principal, now_s)
        .map_err(refused_key)
}

/// Query parameters, refused with a 400 naming the parameter when one is not in `allowed` or
/// appears twice (which value was meant cannot be known).
pub(crate) fn checked_params(
    params: Vec<(String, String)>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    for (i, (name, _)) in params.iter().enumerate() {
        if !allowed.contains(&name.as_str()) {
            let expected = if allowed.is_empty() {
                "this endpoint takes none".to_owned()
            } else {
                format!("expected {}", allowed.join(", "))
            };
            return Err(ApiError::bad_parameter(
                name,
                format!("unknown query parameter {name:?}; {expected}"),
            ));
        }
        if params[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(ApiError::bad_parameter(
                name,
                format!("query parameter {name:?} is given twice"),
            ));
        }
    }
    Ok(params)
}

/// An error body with the redaction patterns applied to each of its strings (so the body stays
/// JSON whatever a configured pattern spans), or `None` if no pattern matched.
fn scrub_strings(redactor: &crate::redact::Redactor, text: &str) -> Option<String> {
    fn walk(redactor: &crate::redact::Redactor, value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => match redactor.scrub(s) {
                Some(clean) => {
                    *s = clean;
                    true
                }
                None => false,
            },
            // Every string is walked: no short circuit.
            serde_json::Value::Array(items) => {
                let mut hit = false;
                for v in items {
                    hit |= walk(redactor, v);
                }
                hit
            }
            serde_json::Value::Object(map) => {
                let mut hit = false;
                for v in map.values_mut() {
                    hit |= walk(redactor, v);
                }
                hit
            }
            _ => false,
        }
    }
    let mut body: serde_json::Value = serde_json::from_str(text).ok()?;
    walk(redactor, &mut body).then(|| body.to_string())
}

/// Most bytes of an answer the key check reads. The answers it reads are built whole in memory by
/// their handlers (an error; a partial batch's 207, at most `batch_events_max` results whose
/// messages quote at most a few hundred bytes of input each), so this bounds one copy of what is
/// held already; it must pass any 207 the largest `batch_events_max` can make, since the events
/// of a 207 are stored before it is answered.
pub(crate) const ERROR_BODY_BYTES_MAX: usize = 1 << 30;

/// No raw key or other secret leaves in an error body, whichever value the client put it in (a
/// parameter, a path, a header, a field name): messages quote what was sent, so every error body
/// is checked here, in one place; keys are replaced by `<a key>`, and what a redaction pattern
/// matches by its marker.
async fn redact_keys(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    // A 207 carries per-event errors, whose messages quote what was sent. Every refusal and 207
    // is JSON (a protobuf refusal is encoded outside this layer, from the JSON checked here).
    let refusal =
        response.status().as_u16() >= 400 || response.status() == StatusCode::MULTI_STATUS;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !refusal || !json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ERROR_BODY_BYTES_MAX).await else {
        return ApiError::new(Code::Internal, "an error body was too large").into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    // Keys by their digests and shapes, then whatever a redaction pattern matches: a secret
    // quoted back (an unknown field's name, a bad action) never leaves either.
    let keyless = state.keys.redact(&text);
    let scrubbed = scrub_strings(&state.redactor, keyless.as_deref().unwrap_or(&text)).or(keyless);
    match scrubbed {
        Some(redacted) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(redacted))
        }
        None => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// Refuses any query parameter on a route that takes none.
async fn no_params(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let takes_params = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|matched| Route::of_path(matched.as_str()))
        .is_some_and(|route| route.takes_params(request.method()));
    if let Some(query) = request.uri().query().filter(|_| !takes_params) {
        let params: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| (p.split('=').next().unwrap_or("").to_owned(), String::new()))
            .collect();
        if let Err(err) = checked_params(params, &[]) {
            return err.into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110 §11.1) and the token is trimmed as keys are everywhere (see `auth::normalize_key`).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| crate::auth::normalize_key(token))
}

/// `GET /dashboard`: one self-contained page (no CDN, fonts or scripts from elsewhere). It is
/// public; its data calls carry the key the user gives it, which never leaves the browser
/// otherwise.
#[utoipa::path(get, path = "/dashboard", tag = "operate",
    responses((status = 200, description = "the dashboard page", content_type = "text/html", body = String)))]
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

/// `GET /api/v2/health`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HealthJson {
    /// `healthy` or `unhealthy`.
    status: &'static str,
    timestamp: f64,
    queue_size: usize,
    processor_running: bool,
    storage_writable: bool,
    /// Why the server is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `GET /api/v2/health`: public. 503 with the reason when the writer cannot store events, or a
/// cluster node refuses them (its rules are not the cluster's).
#[utoipa::path(get, path = "/api/v2/health", tag = "operate",
    responses((status = 200, body = HealthJson), (status = 503, body = HealthJson)))]
async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let engine = &state.engine;
    let running = engine.writer_running();
    let failure = engine.storage_failure();
    let refusal = engine.cluster_refusal();
    let healthy = running && failure.is_none() && refusal.is_none();
    let body = HealthJson {
        status: if healthy { "healthy" } else { "unhealthy" },
        timestamp: crate::clock::now_us() as f64 / 1e6,
        queue_size: engine.queue_size(),
        processor_running: running,
        storage_writable: failure.is_none(),
        reason: (!healthy).then(|| {
            failure
                .or(refusal)
                .unwrap_or_else(|| "the log writer is not running".to_owned())
        }),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
