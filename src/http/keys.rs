//! `POST /api/v2/keys/revoke` (admin): revoke a key by the key itself or by its key_id, by storing
//! a revocation record in the log (storage-format.md, "Revocation records"), whose folding on
//! every node revokes it.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use super::body::{read_body, BodyLimit};
use super::{ApiError, AppState};
use crate::auth::{
    hex, key_id, normalize_key, parse_key_id, AuthError, Principal, Revocation, Role,
};
use crate::refusal::Code;

/// Bytes a revocation request may take.
const REVOKE_BYTES_MAX: usize = 4096;

/// The answer to a revocation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedJson {
    /// `revoked`, or `already_revoked` when it was.
    status: &'static str,
    /// The fingerprint now refused.
    key_id: String,
}

#[utoipa::path(post, path = "/api/v2/keys/revoke", tag = "keys",
    request_body(content = Object, description = "{\"key\": \"...\"} or {\"key_id\": \"<16 hex digits>\"}, with \"force\": true to revoke a key this server never met", content_type = "application/json"),
    responses((status = 200, body = RevokedJson), (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson),
        (status = 403, body = super::ErrorJson), (status = 404, description = "a key or key_id this server never issued or met", body = super::ErrorJson),
        (status = 408, body = super::ErrorJson), (status = 409, description = "the last admin key", body = super::ErrorJson),
        (status = 413, body = super::ErrorJson), (status = 415, body = super::ErrorJson), (status = 422, body = super::ErrorJson),
        (status = 503, description = "the revocation record was not acknowledged (queue full, storage or the cluster unavailable); a retry is safe, and answers already_revoked if it was stored after all", body = super::ErrorJson),
        (status = 507, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RevokedJson>, ApiError> {
    if principal.role != Role::Admin {
        return Err(ApiError::forbidden(
            "only an admin key may revoke keys",
            "authorization",
        ));
    }
    let limit = BodyLimit {
        bytes: REVOKE_BYTES_MAX,
        name: "the revocation request limit",
        code: Code::BodyTooLarge,
    };
    let bytes = read_body(&headers, body, limit, state.limits.body_read_timeout).await?;
    super::still_accepted(&state, &principal)?;
    let request = parse(&bytes)?;
    let now_s = crate::clock::now_us() as f64 / 1e6;
    let (id, field) = resolve(&state, request, now_s)?;
    // This node's turn, from the last-admin check until the record is applied here.
    let _turn = state.keys.revocation_turn().await;
    match state.keys.check_revocation(&id, &principal, now_s) {
        Revocation::WouldLockOut => {
            return Err(ApiError::new(
                Code::LastAdminKey,
                "revoking this key would leave no working admin key; mint another (mcplog keygen --role admin) and revoke this one with it, or add a static admin key",
            )
            .with_field(field))
        }
        Revocation::AlreadyRevoked => return Ok(answer("already_revoked", &id)),
        Revocation::Allowed => {}
    }
    // The revocation is a record in the log, submitted like an event: answered once it is
    // durable and applied on this node (in cluster mode, once the stream holds it and this
    // node's follower folded it), which revoked the key here.
    let record = crate::event::revocation_record(id, now_s);
    state.engine.submit(vec![record], principal.key_id).await?;
    tracing::info!(key_id = %hex(&id), "key revoked");
    Ok(answer("revoked", &id))
}

fn answer(status: &'static str, id: &crate::auth::KeyId) -> Json<RevokedJson> {
    Json(RevokedJson {
        status,
        key_id: hex(id),
    })
}

/// What a revocation names, and whether to record it even if this server never met the key.
struct Request {
    fields: serde_json::Map<String, serde_json::Value>,
    force: bool,
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(Code::InvalidField, message).with_field(field)
}

/// The request's JSON, with no field but `key`, `key_id` and `force`.
fn parse(bytes: &[u8]) -> Result<Request, ApiError> {
    // serde's message quotes the value it choked on, which may be a key: only say where.
    let request: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|err| {
            ApiError::new(
                Code::MalformedJson,
                format!(
                    "the request is not a JSON object {{\"key\": ...}} or {{\"key_id\": ...}} (line {}, column {})",
                    err.line(),
                    err.column()
                ),
            )
        })?;
    // The unknown name is not echoed: a key pasted as a name would be.
    if request
        .keys()
        .any(|k| !["key", "key_id", "force"].contains(&k.as_str()))
    {
        return Err(invalid(
            "body",
            "the request has a field other than key, key_id and force",
        ));
    }
    let force = match request.get("force") {
        None => false,
        Some(value) => value
            .as_bool()
            .ok_or_else(|| invalid("force", "force must be true or false"))?,
    };
    Ok(Request {
        fields: request,
        force,
    })
}

/// The key id a request names, and the field that named it: refused when this server never
/// issued, accepted or stored the key, unless forced.
fn resolve(
    state: &AppState,
    Request {
        fields: request,
        force,
    }: Request,
    now_s: f64,
) -> Result<(crate::auth::KeyId, &'static str), ApiError> {
    Ok(match (request.get("key"), request.get("key_id")) {
        (Some(key), None) => {
            let key = key
                .as_str()
                .map(normalize_key)
                .filter(|k| !k.is_empty())
                .ok_or_else(|| invalid("key", "key must be a non-empty string"))?;
            // A key this server would not accept anyway (not even as expired or revoked) is
            // not one it can revoke: say so rather than store a fingerprint of a typo.
            if !force && matches!(state.keys.authenticate(key, now_s), Err(AuthError::Unknown)) {
                return Err(ApiError::new(
                    Code::UnknownKey,
                    "this server does not accept that key; nothing was revoked (send \"force\": true to record it anyway)",
                )
                .with_field("key"));
            }
            (key_id(key), "key")
        }
        (None, Some(id)) => {
            let id = id
                .as_str()
                .and_then(parse_key_id)
                .ok_or_else(|| invalid("key_id", "key_id must be 16 lower-case hex digits"))?;
            let seen_in_log = state.engine.view().projection.knows_key(&id);
            if !force && !state.keys.knows(&id) && !seen_in_log {
                return Err(ApiError::new(
                    Code::UnknownKey,
                    format!(
                        "no key with key_id {} was issued by this server's configuration, accepted since it started, or wrote an event; nothing was revoked (a signed key minted but never used: revoke it by the key, or send \"force\": true)",
                        hex(&id)
                    ),
                )
                .with_field("key_id"));
            }
            (id, "key_id")
        }
        _ => return Err(invalid("key", "send exactly one of key and key_id")),
    })
}
