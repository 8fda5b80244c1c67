//! Every route of the service, one row each: its path template, its handlers, whether it takes
//! query parameters, whether it streams, whether it ingests. The router, the request metrics'
//! labels and the OpenAPI check are all driven by this table.

use axum::http::Method;
use axum::routing::{get, post, MethodRouter};

use super::{
    dashboard, health, ingest, keys, observe, openapi, otlp, query, records, replay, AppState,
};

/// A route of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST` one event, `GET` history.
    Interactions,
    /// `POST` a batch.
    Batch,
    /// `GET` record counts.
    Stats,
    /// `GET` one record.
    Record,
    /// `GET` one record's stored events.
    RecordEvents,
    /// `GET` performance metrics.
    Metrics,
    /// `GET` health.
    Health,
    /// `GET` the OpenAPI document.
    OpenApi,
    /// `POST` a revocation.
    Revoke,
    /// `GET` the replay stream.
    Replay,
    /// `GET` the dashboard page.
    Dashboard,
    /// `GET` liveness.
    Livez,
    /// `GET` readiness.
    Readyz,
    /// `GET` Prometheus metrics.
    PrometheusMetrics,
    /// `POST` an OTLP trace export.
    OtlpTraces,
}

impl Route {
    /// Every route, in the order metrics list them.
    pub const ALL: [Route; 15] = [
        Route::Interactions,
        Route::Batch,
        Route::Stats,
        Route::Record,
        Route::RecordEvents,
        Route::Metrics,
        Route::Health,
        Route::OpenApi,
        Route::Revoke,
        Route::Replay,
        Route::Dashboard,
        Route::Livez,
        Route::Readyz,
        Route::PrometheusMetrics,
        Route::OtlpTraces,
    ];

    /// The path template, as the router matches it and metrics label it.
    pub const fn path(self) -> &'static str {
        match self {
            Route::Interactions => "/api/v2/interactions",
            Route::Batch => "/api/v2/interactions/batch",
            Route::Stats => "/api/v2/interactions/stats",
            Route::Record => "/api/v2/interactions/{id}",
            Route::RecordEvents => "/api/v2/interactions/{id}/events",
            Route::Metrics => "/api/v2/performance/metrics",
            Route::Health => "/api/v2/health",
            Route::OpenApi => "/api/v2/openapi.json",
            Route::Revoke => "/api/v2/keys/revoke",
            Route::Replay => "/api/v2/events",
            Route::Dashboard => "/dashboard",
            Route::Livez => "/livez",
            Route::Readyz => "/readyz",
            Route::PrometheusMetrics => "/metrics",
            Route::OtlpTraces => "/v1/traces",
        }
    }

    /// The route of a matched path template.
    pub fn of_path(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.path() == path)
    }

    /// Its position in [`Route::ALL`].
    pub fn index(self) -> usize {
        Route::ALL
            .iter()
            .position(|&r| r == self)
            .expect("every route is in ALL")
    }

    /// The handlers of the route.
    pub(super) fn handlers(self) -> MethodRouter<AppState> {
        match self {
            Route::Interactions => post(ingest::one).get(query::history),
            Route::Batch => post(ingest::batch),
            Route::Stats => get(query::stats),
            Route::Record => get(records::one),
            Route::RecordEvents => get(records::events),
            Route::Metrics => get(query::metrics),
            Route::Health => get(health),
            Route::OpenApi => get(openapi::document),
            Route::Revoke => post(keys::revoke),
            Route::Replay => get(replay::replay),
            Route::Dashboard => get(dashboard),
            Route::Livez => get(observe::livez),
            Route::Readyz => get(observe::readyz),
            Route::PrometheusMetrics => get(observe::metrics),
            Route::OtlpTraces => post(otlp::traces),
        }
    }

    /// Whether the route's answer is a stream bounded by its reader and shutdown rather than by
    /// `request_timeout`.
    pub fn streams(self) -> bool {
        self == Route::Replay
    }

    /// Whether its handler for `method` reads query parameters (and refuses unknown or repeated
    /// ones itself); every other route and method takes none.
    pub fn takes_params(self, method: &Method) -> bool {
        match *method {
            Method::GET => matches!(
                self,
                Route::Interactions
                    | Route::Record
                    | Route::RecordEvents
                    | Route::Metrics
                    | Route::Replay
            ),
            Method::POST => self == Route::Batch,
            _ => false,
        }
    }

    /// Whether a request is an ingest, whose refusals `/metrics` counts by reason.
    pub fn ingests(self, method: &Method) -> bool {
        *method == Method::POST
            && matches!(self, Route::Interactions | Route::Batch | Route::OtlpTraces)
    }
}
