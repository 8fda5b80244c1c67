//! The one error type of the HTTP layer, and its JSON body:
//! `{"error": {"code": "...", "message": "...", "field": ...}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::refusal;
use crate::engine::SubmitError;
use crate::event::Invalid;
use crate::refusal::Code;

/// An error answer. Its status comes from the table in `refusal.rs` by its code. Messages name
/// values that matter and never a key.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Stable machine-readable code.
    pub code: Code,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
    /// Per-event errors of a batch.
    pub errors: Vec<ItemError>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`), where the table's do not
    /// fit (a rate limit knows when its tokens are back).
    pub retry_after_s: Option<u32>,
}

/// One refused event of a batch.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemError {
    /// Position of the event in the batch, from 0.
    pub index: usize,
    /// Stable code.
    #[schema(value_type = String)]
    pub code: Code,
    /// Explanation.
    pub message: String,
    /// The field at fault.
    pub field: Option<String>,
}

impl ItemError {
    /// Event `index`'s refusal, `err` as that event alone would have been answered.
    pub fn of(index: usize, err: ApiError) -> ItemError {
        ItemError {
            index,
            code: err.code,
            message: err.message,
            field: err.field,
        }
    }

    /// The status the event alone would have been answered with.
    pub fn status(&self) -> StatusCode {
        refusal::answer(self.code).status
    }
}

impl ApiError {
    /// An error with no field.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            field: None,
            errors: Vec::new(),
            retry_after_s: None,
        }
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    /// Its status, from the table.
    pub fn status(&self) -> StatusCode {
        refusal::answer(self.code).status
    }

    /// Seconds after which a retry may succeed, if one may.
    pub fn retry_after_s(&self) -> Option<u32> {
        self.retry_after_s
            .or(refusal::answer(self.code).retry_after_s)
    }

    /// 400 for a query parameter that is unknown or has a bad value.
    pub fn bad_parameter(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(Code::BadParameter, message).with_field(field)
    }

    /// 401 for a missing or unknown key.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            Code::Unauthorized,
            "a valid API key is required: Authorization: Bearer <key>",
        )
        .with_field("authorization")
    }

    /// 403: the key may not do it. `field` names what made it so.
    pub fn forbidden(message: impl Into<String>, field: &str) -> ApiError {
        ApiError::new(Code::Forbidden, message).with_field(field)
    }

    /// 404 for an unknown path or interaction.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(Code::NotFound, what)
    }

    /// 503 for a request that took longer than `request_timeout` in all. An event it carried may
    /// still be stored, so the client is told to retry with the same `event_id`.
    pub fn timed_out(limit: std::time::Duration) -> ApiError {
        ApiError::new(
            Code::RequestTimeout,
            format!(
                "the request took longer than request_timeout ({limit:?}); an event it \
                 carried may still be stored, so retry with the same event_id"
            ),
        )
    }
}

impl From<ItemError> for ApiError {
    /// A request of one event answered as that event's refusal.
    fn from(item: ItemError) -> ApiError {
        ApiError {
            field: item.field,
            ..ApiError::new(item.code, item.message)
        }
    }
}

impl From<Invalid> for ApiError {
    /// An event that failed validation or could not be redacted.
    fn from(invalid: Invalid) -> ApiError {
        ApiError {
            field: invalid.field,
            ..ApiError::new(invalid.code, invalid.message)
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> ApiError {
        let message = err.to_string();
        match err {
            SubmitError::QueueFull { .. } => ApiError::new(Code::QueueFull, message),
            SubmitError::Conflict(conflicts) => {
                let field = conflicts.first().map(|c| c.field.to_owned());
                let errors = conflicts
                    .into_iter()
                    .map(|c| ItemError {
                        index: c.index,
                        code: Code::Conflict,
                        message: c.to_string(),
                        field: Some(c.field.to_owned()),
                    })
                    .collect::<Vec<_>>();
                let message = match errors.as_slice() {
                    [only] => only.message.clone(),
                    _ => message,
                };
                ApiError {
                    field,
                    errors,
                    ..ApiError::new(Code::Conflict, message)
                }
            }
            SubmitError::Storage { no_space: true, .. } => {
                ApiError::new(Code::InsufficientStorage, message)
            }
            SubmitError::Storage { .. } => ApiError::new(Code::StorageUnavailable, message),
            SubmitError::ShuttingDown => ApiError::new(Code::ShuttingDown, message),
            SubmitError::TooLarge { .. } => {
                ApiError::new(Code::PayloadTooLarge, message).with_field("events")
            }
            SubmitError::Unavailable { .. } => ApiError::new(Code::ClusterUnavailable, message),
            SubmitError::RulesDiffer { .. } => ApiError::new(Code::RulesDiffer, message),
            SubmitError::KeyRevoked => {
                ApiError::new(Code::KeyRevoked, message).with_field("authorization")
            }
        }
    }
}

impl From<crate::ratelimit::Limited> for ApiError {
    fn from(limited: crate::ratelimit::Limited) -> ApiError {
        use crate::ratelimit::Limited;
        let message = limited.to_string();
        match limited {
            Limited::Later { retry_after, .. } => ApiError {
                // Whole seconds, rounded up: a client that waits that long finds the tokens.
                retry_after_s: Some(
                    u32::try_from(
                        retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
                    )
                    .unwrap_or(u32::MAX)
                    .max(1),
                ),
                ..ApiError::new(Code::RateLimited, message).with_field("events_per_second")
            },
            Limited::OverBurst { .. } => {
                ApiError::new(Code::OverBurst, message).with_field("burst")
            }
        }
    }
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorJson {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, such as `missing_field` or `queue_full`.
    #[schema(value_type = String)]
    pub code: Code,
    /// Human-readable explanation naming the rule and the values that matter.
    pub message: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
    /// For a batch: every bad event by index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ItemError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after_s = self.retry_after_s();
        let code = self.code;
        let body = ErrorJson {
            error: ErrorDetail {
                code,
                message: self.message,
                field: self.field,
                errors: self.errors,
            },
        };
        let response = (status, axum::Json(body)).into_response();
        refusal_headers(response, code, retry_after_s)
    }
}

/// What every refusal's response carries besides its body, whatever its encoding: `Retry-After`
/// when a retry may succeed, the `Bearer` challenge of a 401, and its code (as an extension, which
/// `/metrics` counts by; it never leaves the server).
pub(super) fn refusal_headers(
    mut response: Response,
    code: Code,
    retry_after_s: Option<u32>,
) -> Response {
    if let Some(seconds) = retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if response.status() == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response.extensions_mut().insert(code);
    response
}
