//! `GET /api/v2/openapi.json`: the OpenAPI document, generated from the handlers' annotations and
//! the response types themselves, so it cannot drift from what the server sends.

use axum::Json;
use serde_json::{json, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{error, ingest, keys, observe, otlp, query, records, replay};
use crate::event::{
    Action, EVENT_ID_BYTES_MAX, ID_BYTES_MAX, PAYLOAD_DEPTH_MAX, RESERVED_INTERACTION_IDS,
    TIMESTAMP_SECONDS_MAX,
};

/// The whole API.
#[derive(OpenApi)]
#[openapi(
    info(title = "mcplog", description = "The interaction log of an MCP coordinator."),
    paths(
        ingest::one,
        ingest::batch,
        otlp::traces,
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
pub(super) async fn document() -> Json<Value> {
    Json(full_document())
}

/// The generated document, completed with what the annotations cannot say: the event's schema
/// as validation enforces it, and the statuses every operation of a kind can return.
pub fn full_document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    doc["components"]["schemas"]["Event"] = event_schema();
    let event_ref = json!({"$ref": "#/components/schemas/Event"});
    doc["paths"]["/api/v2/interactions"]["post"]["requestBody"]["content"] = json!({
        "application/json": {"schema": event_ref},
    });
    let batch = json!({"type": "array", "items": event_ref, "minItems": 1,
        "description": format!("at most batch_events_max events (default {BATCH_EVENTS_DEFAULT})")});
    doc["paths"]["/api/v2/interactions/batch"]["post"]["requestBody"]["content"] = json!({
        "application/json": {"schema": batch},
        "application/x-ndjson": {"schema": {"type": "string",
            "description": "one Event per line"}},
    });
    let error = |description: &str| {
        json!({"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorJson"}}}})
    };
    for (path, item) in doc["paths"].as_object_mut().expect("paths").iter_mut() {
        for (_, operation) in item.as_object_mut().expect("a path item").iter_mut() {
            let secured = operation.get("security").is_some();
            let has_body = operation.get("requestBody").is_some();
            let responses = operation["responses"].as_object_mut().expect("responses");
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description));
            };
            add(
                "400",
                "an unknown or repeated query parameter, or a bad value",
            );
            if path != "/api/v2/events" {
                add(
                    "503",
                    "request_timeout: the request took longer than request_timeout",
                );
            }
            if secured {
                add("401", "no, unknown, expired, disabled or revoked key");
            }
            if has_body {
                add(
                    "408",
                    "body_timeout: the body did not arrive within body_read_timeout",
                );
                add("413", "the body is over its limit");
                add("415", "a Content-Encoding other than gzip or identity");
            }
        }
    }
    doc
}

/// `batch_events_max`'s default, as the document states it.
const BATCH_EVENTS_DEFAULT: usize = 1000;

/// The event as `event::validate` and the ingest handlers accept it: one shape per action, each
/// with exactly its own payload field and nothing unknown.
fn event_schema() -> Value {
    let id = |what: &str, max: usize| {
        json!({"type": "string", "minLength": 1, "maxLength": max,
            "description": format!("{what}: 1 to {max} bytes of UTF-8 (maxLength counts bytes here); no control, invisible (zero-width, format) or bidi characters; not only white space")})
    };
    let variants: Vec<Value> = Action::ALL
        .iter()
        .map(|action| {
            let mut properties = json!({
                "action": {"type": "string", "enum": [action.wire_name()]},
                "interaction_id": id(
                    &format!("with mcp_id, names the interaction; not {}", RESERVED_INTERACTION_IDS.join(", ")),
                    ID_BYTES_MAX,
                ),
                "mcp_id": id("the MCP server or client the event is about", ID_BYTES_MAX),
                "timestamp": {"type": "number", "exclusiveMinimum": 0, "maximum": TIMESTAMP_SECONDS_MAX,
                    "description": "seconds since the Unix epoch (not milliseconds); at most clock_skew_max (default 1h) ahead of the server's clock"},
                "event_id": id("makes retries idempotent within the mcp_id", EVENT_ID_BYTES_MAX),
            });
            properties[action.payload_field()] = json!({"type": "object",
                "description": format!("any JSON object, nested at most {PAYLOAD_DEPTH_MAX} levels; absent means {{}}")});
            json!({
                "title": action.wire_name(),
                "type": "object",
                "additionalProperties": false,
                "required": ["action", "interaction_id", "mcp_id", "timestamp"],
                "properties": properties,
            })
        })
        .collect();
    json!({"description": "One interaction event. Unknown fields, a payload field of another action and duplicate fields are refused (422).",
        "oneOf": variants})
}
