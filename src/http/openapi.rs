//! `GET /api/v2/openapi.json`: the OpenAPI document, generated from the handlers' annotations and
//! the response types themselves, so it cannot drift from what the server sends.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{error, ingest, keys, observe, query, records, replay};

/// The whole API.
#[derive(OpenApi)]
#[openapi(
    info(title = "mcplog", description = "The interaction log of an MCP coordinator."),
    paths(
        ingest::one,
        ingest::batch,
        query::history,
        query::stats,
        records::one,
        records::events,
        query::metrics,
        super::health,
        super::dashboard,
        document,
        keys::revoke,
        replay::replay,
        observe::livez,
        observe::readyz,
        observe::metrics,
    ),
    components(schemas(error::ErrorJson)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v2/openapi.json", tag = "operate",
    responses((status = 200, description = "the OpenAPI document", body = Object)))]
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
