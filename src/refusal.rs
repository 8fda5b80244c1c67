//! Every refusal the service can answer, as data: one [`Code`] per reason, each spelled once, here.
//! Layers below HTTP (validation, redaction, the engine, rate limits, keys) name the code of what
//! they refuse; the HTTP layer's table (`http/refusal.rs`) gives each code its status, metric
//! reason and OTLP status, and README.md lists each code once (a test holds the three together).

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $text:literal,)*) => {
        /// A refusal's stable, machine-readable code (the JSON error's `code`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            /// Every code, in the order they are declared.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as clients see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    // Requests: their framing, encoding and parameters.
    /// The body is not JSON at all.
    MalformedJson = "malformed_json",
    /// The body is not UTF-8.
    NotUtf8 = "not_utf8",
    /// The body could not be read from the connection.
    UnreadableBody = "unreadable_body",
    /// A gzip body that does not decompress.
    BadGzip = "bad_gzip",
    /// A `Content-Encoding` other than gzip or identity, or more than one.
    UnsupportedEncoding = "unsupported_encoding",
    /// A `Content-Type` the endpoint does not take.
    UnsupportedMediaType = "unsupported_media_type",
    /// An unknown, repeated or bad query parameter.
    BadParameter = "bad_parameter",
    /// A path segment that does not parse.
    BadPath = "bad_path",
    /// The body did not arrive within `body_read_timeout`.
    BodyTimeout = "body_timeout",
    /// The request took longer than `request_timeout` in all.
    RequestTimeout = "request_timeout",
    /// A method the endpoint does not take.
    MethodNotAllowed = "method_not_allowed",
    /// An unknown path or interaction.
    NotFound = "not_found",

    // Limits.
    /// An event over `event_bytes_max`.
    EventTooLarge = "event_too_large",
    /// A body over its endpoint's byte limit (`batch_bytes_max`, the OTLP or revocation limit).
    BodyTooLarge = "body_too_large",
    /// A batch over `batch_events_max`.
    BatchTooLarge = "batch_too_large",
    /// A batch that cannot be published as one cluster message.
    PayloadTooLarge = "payload_too_large",
    /// More events in one request than the key's rate-limit burst.
    OverBurst = "over_burst",
    /// The key is over its rate limit now.
    RateLimited = "rate_limited",
    /// The key has `replay_streams_per_key_max` replay streams open.
    TooManyStreams = "too_many_streams",
    /// The interaction holds `interaction_events_max` events.
    InteractionFull = "interaction_full",

    // Batches and OTLP exports as a whole.
    /// One JSON object posted as a batch.
    NotABatch = "not_a_batch",
    /// A batch with no event.
    EmptyBatch = "empty_batch",
    /// An all-or-nothing batch with an invalid event (its `errors` list them).
    InvalidBatch = "invalid_batch",
    /// An OTLP body that is not an export request.
    BadExport = "bad_export",
    /// An OTLP export with more spans than one request may hold.
    TooManySpans = "too_many_spans",
    /// An OTLP export none of whose spans could be stored.
    InvalidSpans = "invalid_spans",

    // An event's rules (validation).
    /// The body is JSON but not an object.
    NotAnObject = "not_an_object",
    /// A field the event must have is absent.
    MissingField = "missing_field",
    /// A field the event may not have.
    UnknownField = "unknown_field",
    /// A field given twice.
    DuplicateField = "duplicate_field",
    /// An action that is not one of the five.
    UnknownAction = "unknown_action",
    /// A field that must be a string is not.
    NotAString = "not_a_string",
    /// A field that must be a number is not.
    NotANumber = "not_a_number",
    /// A number outside its field's range.
    OutOfRange = "out_of_range",
    /// An id that is empty or only white space.
    BlankId = "blank_id",
    /// An id with white space around it.
    SurroundingWhitespace = "surrounding_whitespace",
    /// An id with a control character.
    ControlCharacter = "control_character",
    /// An id with an invisible character.
    InvisibleCharacter = "invisible_character",
    /// An id longer than its limit.
    BadLength = "bad_length",
    /// An id the service keeps for itself.
    ReservedId = "reserved_id",
    /// A timestamp that reads as milliseconds.
    LooksLikeMilliseconds = "looks_like_milliseconds",
    /// A timestamp past the server's clock by more than `clock_skew_max`.
    TimestampInFuture = "timestamp_in_future",
    /// A payload field that does not belong to the event's action.
    PayloadMismatch = "payload_mismatch",
    /// A payload number that overflows a double.
    NumberOutOfRange = "number_out_of_range",
    /// A payload string with an unpaired surrogate escape.
    LoneSurrogate = "lone_surrogate",
    /// A payload string with a Unicode noncharacter.
    Noncharacter = "noncharacter",
    /// A payload object naming a member twice.
    DuplicateMember = "duplicate_member",
    /// A payload nested deeper than allowed.
    TooDeep = "too_deep",

    // Redaction: secrets it cannot remove.
    /// A secret in an id, which redaction may not change.
    SecretInId = "secret_in_id",
    /// A secret in a payload member's name.
    SecretInKey = "secret_in_key",
    /// JSON held in a string that redaction cannot read.
    UnreadableJsonInString = "unreadable_json_in_string",
    /// A payload redaction cannot read.
    UnreadablePayload = "unreadable_payload",

    // Keys and roles.
    /// No, unknown, expired, disabled or revoked key.
    Unauthorized = "unauthorized",
    /// A role or key that may not do it.
    Forbidden = "forbidden",
    /// A revocation naming a key this server never issued or met.
    UnknownKey = "unknown_key",
    /// A revocation that would leave no working admin key.
    LastAdminKey = "last_admin_key",
    /// A revocation request field with a bad value.
    InvalidField = "invalid_field",
    /// A stream's key was revoked.
    KeyRevoked = "key_revoked",
    /// A stream's key expired.
    KeyExpired = "key_expired",
    /// A stream's admin key was replaced in the admin key file.
    KeyReplaced = "key_replaced",
    /// A stream's key was disabled.
    KeyDisabled = "key_disabled",
    /// A stream's key is no longer known.
    KeyUnknown = "key_unknown",

    // Storage and reads.
    /// An `event_id` reused with another body.
    Conflict = "conflict",
    /// An interaction id that names interactions of several mcp_ids.
    AmbiguousId = "ambiguous_id",
    /// A read's `min_seq` beyond every seq a single node has stored.
    MinSeqAhead = "min_seq_ahead",
    /// A read's `min_seq` this cluster node has not applied yet.
    NotYetApplied = "not_yet_applied",
    /// An event of the interaction was deleted by retention.
    EventNotRetained = "event_not_retained",
    /// A stored event that fails its checksum or is not JSON.
    UnreadableEvent = "unreadable_event",
    /// The ingest queue is full.
    QueueFull = "queue_full",
    /// The log cannot be written now.
    StorageUnavailable = "storage_unavailable",
    /// The disk is full.
    InsufficientStorage = "insufficient_storage",
    /// The server is shutting down.
    ShuttingDown = "shutting_down",
    /// Cluster mode: the stream does not answer.
    ClusterUnavailable = "cluster_unavailable",
    /// Cluster mode: this node's redaction rules or limits differ from the cluster's.
    RulesDiffer = "rules_differ",
    /// A fault of the server itself.
    Internal = "internal",
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn every_code_is_spelled_once_in_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} is spelled twice");
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{text} is not snake_case"
            );
        }
    }
}
