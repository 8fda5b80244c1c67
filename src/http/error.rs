//! The one error type of the HTTP layer, and its JSON body:
//! `{"error": {"code": "...", "message": "...", "field": ...}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::SubmitError;
use crate::event::Invalid;

/// An error answer. Messages name values that matter and never a key.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
    /// Per-event errors of a batch.
    pub errors: Vec<ItemError>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    pub retry_after_s: Option<u32>,
}

/// One bad event of a batch.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemError {
    /// Position of the event in the batch, from 0.
    pub index: usize,
    /// Stable code.
    pub code: &'static str,
    /// Explanation.
    pub message: String,
    /// The field at fault.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with no field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
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

    /// 400 for a query parameter that is unknown or has a bad value.
    pub fn bad_parameter(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_parameter", message).with_field(field)
    }

    /// 401 for a missing or unknown key.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
        )
        .with_field("authorization")
    }

    /// 404 for an unknown path or interaction.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 503 for a request that took longer than `request_timeout` in all. An event it carried may
    /// still be stored, so the client is told to retry with the same `event_id`.
    pub fn timed_out(limit: std::time::Duration) -> ApiError {
        ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                format!(
                    "the request took longer than request_timeout ({limit:?}); an event it \
                     carried may still be stored, so retry with the same event_id"
                ),
            )
        }
    }

    /// 422 for an event that failed validation.
    pub fn invalid(invalid: Invalid) -> ApiError {
        // Bytes that are not JSON at all are a bad request; JSON that breaks a rule is not
        // processable.
        let status = if invalid.code == "malformed_json" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError {
            field: invalid.field,
            ..ApiError::new(status, invalid.code, invalid.message)
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> ApiError {
        let message = err.to_string();
        match err {
            SubmitError::QueueFull { .. } => ApiError {
                retry_after_s: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", message)
            },
            SubmitError::Conflict(conflicts) => {
                let field = conflicts.first().map(|c| c.field.to_owned());
                let errors = conflicts
                    .into_iter()
                    .map(|c| ItemError {
                        index: c.index,
                        code: "conflict",
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
                    ..ApiError::new(StatusCode::CONFLICT, "conflict", message)
                }
            }
            SubmitError::Storage { no_space: true, .. } => ApiError {
                retry_after_s: Some(5),
                ..ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient_storage",
                    message,
                )
            },
            SubmitError::Storage { .. } => ApiError {
                retry_after_s: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    message,
                )
            },
            SubmitError::ShuttingDown => ApiError {
                retry_after_s: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            },
            SubmitError::TooLarge { .. } => ApiError {
                field: Some("events".to_owned()),
                ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            },
            SubmitError::Unavailable { .. } => ApiError {
                retry_after_s: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    message,
                )
            },
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
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
                    .with_field("events_per_second")
            },
            // Retrying cannot help: the request must be split.
            Limited::OverBurst { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "over_burst", message)
                    .with_field("burst")
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
    pub code: String,
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
        let body = ErrorJson {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
                errors: self.errors,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
