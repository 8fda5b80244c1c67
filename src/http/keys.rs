//! `POST /api/v2/keys/revoke` (admin): revoke a key by the key itself or by its key_id.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::auth::{hex, key_id, parse_key_id, Principal, Role};

/// Bytes a revocation request may take.
const REVOKE_BYTES_MAX: usize = 4096;

/// The answer to a revocation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedJson {
    /// Always `revoked`.
    status: &'static str,
    /// The fingerprint now refused.
    key_id: String,
}

#[utoipa::path(post, path = "/api/v2/keys/revoke", tag = "keys",
    request_body(content = Object, description = "{\"key\": \"...\"} or {\"key_id\": \"<16 hex digits>\"}", content_type = "application/json"),
    responses((status = 200, body = RevokedJson), (status = 401, body = super::ErrorJson), (status = 403, body = super::ErrorJson),
        (status = 422, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RevokedJson>, ApiError> {
    if principal.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an admin key may revoke keys",
        )
        .with_field("authorization"));
    }
    let bytes = super::ingest::read_body(
        &headers,
        body,
        REVOKE_BYTES_MAX,
        "the revocation request limit",
        state.limits.body_read_timeout,
    )
    .await?;
    let invalid = |field: &str, message: &str| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    };
    let request: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the request is not a JSON object: {err}"),
            )
        })?;
    if let Some(other) = request.keys().find(|k| *k != "key" && *k != "key_id") {
        return Err(invalid(other, "unknown field; send key or key_id"));
    }
    let id = match (request.get("key"), request.get("key_id")) {
        (Some(key), None) => key_id(
            key.as_str()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| invalid("key", "key must be a non-empty string"))?,
        ),
        (None, Some(id)) => id
            .as_str()
            .and_then(parse_key_id)
            .ok_or_else(|| invalid("key_id", "key_id must be 16 lower-case hex digits"))?,
        _ => return Err(invalid("key", "send exactly one of key and key_id")),
    };
    state.keys.revoke(id).map_err(|err| {
        tracing::error!(error = %err, "a revocation could not be saved");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the revocation could not be saved",
        )
    })?;
    tracing::info!(key_id = %hex(&id), "key revoked");
    Ok(Json(RevokedJson {
        status: "revoked",
        key_id: hex(&id),
    }))
}
