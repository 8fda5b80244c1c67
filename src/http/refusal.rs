//! The one table of how a refusal is answered: for each [`Code`], its HTTP status, the reason
//! `/metrics` counts a refused ingest under, the gRPC status an OTLP/HTTP protobuf client is
//! given, and the `Retry-After` a retryable one carries. README.md's "Errors" table lists the same
//! codes with the same statuses; `tests::the_readme_lists_every_code_with_its_status` holds them
//! together.

use axum::http::StatusCode;

use crate::refusal::Code;

/// Why an ingest request was refused, as `mcplog_ingest_rejected_total{reason}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request or an event in it breaks a rule or a limit.
    Invalid,
    /// No key that may do it.
    Unauthorized,
    /// Over the key's rate.
    RateLimited,
    /// An `event_id` reused, or an interaction full.
    Conflict,
    /// The server cannot take it now.
    Unavailable,
    /// The disk is full.
    NoSpace,
    /// Not a refusal an ingest request gets.
    Other,
}

impl Reason {
    /// The reasons `/metrics` lists, in its order.
    pub const COUNTED: [Reason; 6] = [
        Reason::Invalid,
        Reason::Unauthorized,
        Reason::RateLimited,
        Reason::Conflict,
        Reason::Unavailable,
        Reason::NoSpace,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::Unauthorized => "unauthorized",
            Reason::RateLimited => "rate_limited",
            Reason::Conflict => "conflict",
            Reason::Unavailable => "unavailable",
            Reason::NoSpace => "no_space",
            Reason::Other => "other",
        }
    }
}

/// gRPC status codes OTLP pairs with HTTP statuses (google.rpc.Code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Grpc {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// How a refusal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Its HTTP status.
    pub status: StatusCode,
    /// What `/metrics` counts it as, on an ingest route.
    pub reason: Reason,
    /// Its OTLP/gRPC status.
    pub grpc: Grpc,
    /// Seconds after which a retry may succeed, for the refusals that a retry can cure (a rate
    /// limit computes its own).
    pub retry_after_s: Option<u32>,
}

const fn answer_of(status: StatusCode, reason: Reason, grpc: Grpc) -> Answer {
    Answer {
        status,
        reason,
        grpc,
        retry_after_s: None,
    }
}

const BAD_REQUEST: Answer = answer_of(
    StatusCode::BAD_REQUEST,
    Reason::Invalid,
    Grpc::InvalidArgument,
);
const UNPROCESSABLE: Answer = answer_of(
    StatusCode::UNPROCESSABLE_ENTITY,
    Reason::Invalid,
    Grpc::InvalidArgument,
);
const TOO_LARGE: Answer = answer_of(
    StatusCode::PAYLOAD_TOO_LARGE,
    Reason::Invalid,
    Grpc::InvalidArgument,
);
const UNSUPPORTED: Answer = answer_of(
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    Reason::Invalid,
    Grpc::InvalidArgument,
);
const FORBIDDEN: Answer = answer_of(
    StatusCode::FORBIDDEN,
    Reason::Unauthorized,
    Grpc::PermissionDenied,
);
const UNAUTHORIZED: Answer = answer_of(
    StatusCode::UNAUTHORIZED,
    Reason::Unauthorized,
    Grpc::Unauthenticated,
);
const CONFLICT: Answer = answer_of(StatusCode::CONFLICT, Reason::Conflict, Grpc::AlreadyExists);
const NOT_FOUND: Answer = answer_of(StatusCode::NOT_FOUND, Reason::Other, Grpc::NotFound);
const fn unavailable(retry_after_s: u32) -> Answer {
    Answer {
        retry_after_s: Some(retry_after_s),
        ..answer_of(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::Unavailable,
            Grpc::Unavailable,
        )
    }
}

/// The table.
pub const fn answer(code: Code) -> Answer {
    use Code::*;
    match code {
        MalformedJson | NotUtf8 | UnreadableBody | BadGzip | BadParameter | BadPath | NotABatch
        | BadExport | InvalidSpans => BAD_REQUEST,
        UnsupportedEncoding | UnsupportedMediaType => UNSUPPORTED,
        BodyTimeout => answer_of(
            StatusCode::REQUEST_TIMEOUT,
            Reason::Invalid,
            Grpc::DeadlineExceeded,
        ),
        MethodNotAllowed => answer_of(
            StatusCode::METHOD_NOT_ALLOWED,
            Reason::Other,
            Grpc::Unimplemented,
        ),
        NotFound | UnknownKey => NOT_FOUND,
        EventTooLarge | BodyTooLarge | BatchTooLarge | PayloadTooLarge | TooManySpans => TOO_LARGE,
        // Retrying cannot help: the request must be split.
        OverBurst => answer_of(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::RateLimited,
            Grpc::ResourceExhausted,
        ),
        RateLimited => answer_of(
            StatusCode::TOO_MANY_REQUESTS,
            Reason::RateLimited,
            Grpc::ResourceExhausted,
        ),
        TooManyStreams => Answer {
            retry_after_s: Some(5),
            ..answer_of(
                StatusCode::TOO_MANY_REQUESTS,
                Reason::Other,
                Grpc::ResourceExhausted,
            )
        },
        InteractionFull | Conflict | AmbiguousId | MinSeqAhead | LastAdminKey => CONFLICT,
        EmptyBatch
        | InvalidBatch
        | NotAnObject
        | MissingField
        | UnknownField
        | DuplicateField
        | UnknownAction
        | NotAString
        | NotANumber
        | OutOfRange
        | BlankId
        | SurroundingWhitespace
        | ControlCharacter
        | InvisibleCharacter
        | BadLength
        | ReservedId
        | LooksLikeMilliseconds
        | TimestampInFuture
        | PayloadMismatch
        | NumberOutOfRange
        | LoneSurrogate
        | Noncharacter
        | DuplicateMember
        | TooDeep
        | SecretInId
        | SecretInKey
        | UnreadableJsonInString
        | UnreadablePayload
        | InvalidField => UNPROCESSABLE,
        Unauthorized | KeyRevoked | KeyExpired | KeyReplaced | KeyDisabled | KeyUnknown => {
            UNAUTHORIZED
        }
        Forbidden => FORBIDDEN,
        EventNotRetained => answer_of(StatusCode::GONE, Reason::Other, Grpc::NotFound),
        UnreadableEvent | Internal => answer_of(
            StatusCode::INTERNAL_SERVER_ERROR,
            Reason::Other,
            Grpc::Internal,
        ),
        // An event a timed-out request carried may still be stored: retry with its event_id.
        RequestTimeout | QueueFull | ShuttingDown | ClusterUnavailable | NotYetApplied => {
            unavailable(1)
        }
        // Only an operator changes a node's rules: retrying soon will not help.
        StorageUnavailable | RulesDiffer => unavailable(5),
        InsufficientStorage => Answer {
            retry_after_s: Some(5),
            ..answer_of(
                StatusCode::INSUFFICIENT_STORAGE,
                Reason::NoSpace,
                Grpc::ResourceExhausted,
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of README.md's "Errors" table: each code in backticks with the status of its row.
    fn readme_codes() -> Vec<(String, u16)> {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("\n### Errors\n")
            .nth(1)
            .expect("README.md has an Errors section");
        let mut rows = Vec::new();
        for line in table.lines().skip_while(|l| !l.starts_with('|')) {
            let Some(line) = line.strip_prefix('|') else {
                break;
            };
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let Ok(status) = cells[0].parse::<u16>() else {
                continue;
            };
            for (i, part) in cells[1].split('`').enumerate() {
                if i % 2 == 1 {
                    rows.push((part.to_owned(), status));
                }
            }
        }
        rows
    }

    #[test]
    fn the_readme_lists_every_code_with_its_status() {
        let listed = readme_codes();
        for code in Code::ALL {
            let rows: Vec<u16> = listed
                .iter()
                .filter(|(text, _)| text == code.as_str())
                .map(|(_, status)| *status)
                .collect();
            assert_eq!(
                rows,
                vec![answer(*code).status.as_u16()],
                "README.md's Errors table must list `{code}` once, in the row of its status"
            );
        }
        for (text, _) in &listed {
            assert!(
                Code::ALL.iter().any(|code| code.as_str() == text),
                "README.md's Errors table lists `{text}`, which no refusal has"
            );
        }
    }

    #[test]
    fn retryable_refusals_say_when() {
        for code in Code::ALL {
            let answer = answer(*code);
            if matches!(answer.status.as_u16(), 503 | 507) {
                assert!(answer.retry_after_s.is_some(), "{code}");
            }
        }
    }
}
