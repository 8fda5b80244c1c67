//! Client events: the wire contract (README.md, "Endpoints") and its validation.
//!
//! Validation is a pure function from the client's bytes to a [`ValidEvent`] that borrows from
//! them, so the exact bytes can be stored while the server works with the parsed fields. Every
//! refusal is a [`Invalid`] naming the field and the rule; nothing here knows HTTP.

use std::borrow::Cow;
use std::fmt;

use crate::refusal::Code;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub mod json;
mod revocation;
mod validate;

pub use revocation::{revocation_record, revoked_key, revokes, REVOCATIONS_MCP_ID};

pub use validate::{
    check_clock, check_id, is_invisible, is_single_object, split_batch, validate, BatchItem,
};

/// Longest `interaction_id` or `mcp_id`, in bytes of UTF-8.
pub const ID_BYTES_MAX: usize = 256;
/// Longest client `event_id`, in bytes of UTF-8.
pub const EVENT_ID_BYTES_MAX: usize = 128;
/// Deepest nesting of objects and arrays in a payload, the payload object itself being level 1.
/// One limit for validation, redaction and every reader: the documents the server serves around
/// a payload (a stored body, a record, a history page, `/events`, a replay line) nest it at most
/// four levels deeper, which keeps every one of them within the default limits of common strict
/// parsers (Ruby's 100 levels, serde_json's 127). A stored event that a common reader fails on
/// would poison every replay through it.
pub const PAYLOAD_DEPTH_MAX: usize = 64;
/// Interaction ids that would be read as another route under `/api/v2/interactions/`, or that
/// URL normalisation rewrites, so no record with them could be fetched.
pub const RESERVED_INTERACTION_IDS: [&str; 4] = ["stats", "batch", ".", ".."];
/// Client timestamps above this many seconds look like milliseconds (year 5138 in seconds).
pub const TIMESTAMP_SECONDS_MAX: f64 = 1e11;

/// What happened to an interaction. The order of variants is part of the frame format (postcard
/// writes the variant index), so new actions are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// `interaction_start`
    Start,
    /// `interaction_progress`
    Progress,
    /// `interaction_complete`
    Complete,
    /// `interaction_error`
    Error,
    /// `interaction_cancelled`
    Cancelled,
}

impl Action {
    /// Every action, in frame-format order.
    pub const ALL: [Action; 5] = [
        Action::Start,
        Action::Progress,
        Action::Complete,
        Action::Error,
        Action::Cancelled,
    ];

    /// The `action` string clients send.
    pub fn wire_name(self) -> &'static str {
        match self {
            Action::Start => "interaction_start",
            Action::Progress => "interaction_progress",
            Action::Complete => "interaction_complete",
            Action::Error => "interaction_error",
            Action::Cancelled => "interaction_cancelled",
        }
    }

    /// The payload field that goes with the action.
    pub fn payload_field(self) -> &'static str {
        match self {
            Action::Start => "request_data",
            Action::Progress => "progress_data",
            Action::Complete => "result_data",
            Action::Error => "error_data",
            Action::Cancelled => "cancel_data",
        }
    }

    /// Whether the action ends the interaction.
    pub fn is_terminal(self) -> bool {
        matches!(self, Action::Complete | Action::Error | Action::Cancelled)
    }

    fn from_wire(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.wire_name() == name)
    }
}

/// One stored event, as carried in a frame payload (see `storage::format`).
///
/// The strings borrow from the bytes they were decoded from, so a scan of a mapped segment
/// allocates nothing. `body` is the client's JSON event exactly as it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent<'a> {
    /// Position in the log; strictly increasing, gap-free within the retained log.
    pub seq: u64,
    /// This frame's index within the single write that carried it: `seq - write_index` is the
    /// first seq of that write. Recovery uses it to tell a torn write from later corruption.
    pub write_index: u32,
    /// Server clock at the time of the write, in microseconds since the Unix epoch.
    pub received_at_us: u64,
    /// Fingerprint of the API key that sent the event (never the key itself).
    pub key_id: [u8; 8],
    /// What happened to the interaction.
    pub action: Action,
    /// The client's timestamp, seconds since the Unix epoch.
    pub timestamp: f64,
    /// The interaction this event belongs to.
    #[serde(borrow)]
    pub interaction_id: &'a str,
    /// The MCP server or client that reported it.
    #[serde(borrow)]
    pub mcp_id: &'a str,
    /// The client's idempotency key, if it sent one.
    #[serde(borrow)]
    pub event_id: Option<&'a str>,
    /// The client's JSON event, byte-exact.
    #[serde(borrow)]
    pub body: &'a str,
}

/// One stored event as replay and `mcplog-seg dump` print it, one per line: what the server
/// knows, and the client's event as raw JSON, byte for byte what was sent, except that line
/// breaks become spaces. A line break can only be white space between JSON tokens (inside a
/// string it must be escaped), so the event means the same, and the stream stays one event per
/// line. `GET /api/v2/interactions/{id}/events` gives the exact bytes.
#[derive(Serialize)]
pub struct EventLine<'a> {
    /// The event's seq.
    pub seq: u64,
    /// Server receive time, seconds.
    pub received_at: f64,
    /// Fingerprint of the key that sent it, 16 hex digits.
    pub key_id: String,
    /// The client's JSON event, byte-exact but for line breaks.
    pub event: std::borrow::Cow<'a, RawValue>,
}

impl<'a> EventLine<'a> {
    /// The line for a stored event, or `None` if its body is somehow not JSON.
    pub fn of(event: &StoredEvent<'a>) -> Option<EventLine<'a>> {
        let body = if event.body.contains(['\n', '\r']) {
            let one_line = event.body.replace(['\n', '\r'], " ");
            std::borrow::Cow::Owned(RawValue::from_string(one_line).ok()?)
        } else {
            std::borrow::Cow::Borrowed(serde_json::from_str(event.body).ok()?)
        };
        Some(EventLine {
            seq: event.seq,
            received_at: event.received_at_us as f64 / 1e6,
            key_id: crate::hex::encode(&event.key_id),
            event: body,
        })
    }
}

impl EventLine<'_> {
    /// Appends the line of a stored event, as serializing its [`EventLine`] would give it, and a
    /// newline, without parsing the body again. For readers that checked the frame's CRC and the
    /// segment's hash chain first (`mcplog-seg dump`): ingest stored only valid JSON, and those
    /// checks prove the bytes are the ones stored.
    pub fn write_checked(event: &StoredEvent<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"seq\":");
        serde_json::to_writer(&mut *out, &event.seq).expect("an integer serializes");
        out.extend_from_slice(b",\"received_at\":");
        serde_json::to_writer(&mut *out, &(event.received_at_us as f64 / 1e6))
            .expect("a float serializes");
        out.extend_from_slice(b",\"key_id\":\"");
        out.extend_from_slice(crate::hex::encode(&event.key_id).as_bytes());
        out.extend_from_slice(b"\",\"event\":");
        if memchr::memchr2(b'\n', b'\r', event.body.as_bytes()).is_some() {
            out.extend(
                event
                    .body
                    .bytes()
                    .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
            );
        } else {
            out.extend_from_slice(event.body.as_bytes());
        }
        out.extend_from_slice(b"}\n");
    }
}

/// A client event that passed validation; it borrows the client's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent<'a> {
    /// The action.
    pub action: Action,
    /// The interaction the event belongs to.
    pub interaction_id: Cow<'a, str>,
    /// The reporting MCP.
    pub mcp_id: Cow<'a, str>,
    /// Client timestamp, seconds since the Unix epoch.
    pub timestamp: f64,
    /// Optional idempotency key.
    pub event_id: Option<Cow<'a, str>>,
    /// The client's event exactly as received.
    pub body: &'a str,
}

/// Why an event was refused: the field (if one is to blame), a stable code, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The offending top-level field, or `None` when the event as a whole is wrong.
    pub field: Option<String>,
    /// A stable, machine-readable code such as `missing_field`.
    pub code: Code,
    /// A human-readable explanation naming the rule.
    pub message: String,
}

impl Invalid {
    pub(crate) fn field(field: &str, code: Code, message: impl Into<String>) -> Invalid {
        Invalid {
            field: Some(field.to_owned()),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// The payload object of a stored event (its action's payload field), `Ok(None)` if the client
/// sent none, and `Err` if the stored body is not a JSON object (it was altered after its
/// checksum was made, since ingest stores only valid events).
pub fn payload_of(body: &str, action: Action) -> Result<Option<&RawValue>, NotJson> {
    let fields: validate::Fields<'_> = serde_json::from_str(body).map_err(|_| NotJson)?;
    Ok(fields
        .entries
        .into_iter()
        .find(|(name, _)| name == action.payload_field())
        .map(|(_, value)| value))
}

/// A stored body that is not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

/// An event the writer owns until it is on disk. Its strings share one allocation: a batch of a
/// thousand events would otherwise make four thousand, and free them again.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The action.
    pub action: Action,
    /// Client timestamp in seconds.
    pub timestamp: f64,
    /// interaction_id, mcp_id, event_id (empty if absent) and the body, end to end.
    text: Box<str>,
    /// Where interaction_id, mcp_id and event_id end in `text`.
    ends: [u32; 3],
    has_event_id: bool,
}

impl NewEvent {
    /// An event from its parts. The body is the client's JSON, byte-exact.
    pub fn new(
        action: Action,
        timestamp: f64,
        interaction_id: &str,
        mcp_id: &str,
        event_id: Option<&str>,
        body: &str,
    ) -> NewEvent {
        let parts = [interaction_id, mcp_id, event_id.unwrap_or(""), body];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 3];
        for (i, part) in parts.iter().enumerate() {
            text.push_str(part);
            if let Some(end) = ends.get_mut(i) {
                // Events are bounded far below 4 GiB (`event_bytes_max`).
                *end = u32::try_from(text.len()).expect("an event below 4 GiB");
            }
        }
        NewEvent {
            action,
            timestamp,
            text: text.into_boxed_str(),
            ends,
            has_event_id: event_id.is_some(),
        }
    }

    /// The interaction.
    pub fn interaction_id(&self) -> &str {
        &self.text[..self.ends[0] as usize]
    }

    /// The reporting MCP.
    pub fn mcp_id(&self) -> &str {
        &self.text[self.ends[0] as usize..self.ends[1] as usize]
    }

    /// The idempotency key, if the client sent one.
    pub fn event_id(&self) -> Option<&str> {
        self.has_event_id
            .then(|| &self.text[self.ends[1] as usize..self.ends[2] as usize])
    }

    /// The client's JSON, byte-exact.
    pub fn body(&self) -> &str {
        &self.text[self.ends[2] as usize..]
    }

    /// The event as the log stores it, with what the server adds: its seq, its index in the
    /// write that carries it, the receive time and the sending key's fingerprint.
    pub fn stored(
        &self,
        seq: u64,
        write_index: u32,
        received_at_us: u64,
        key_id: [u8; 8],
    ) -> StoredEvent<'_> {
        StoredEvent {
            seq,
            write_index,
            received_at_us,
            key_id,
            action: self.action,
            timestamp: self.timestamp,
            interaction_id: self.interaction_id(),
            mcp_id: self.mcp_id(),
            event_id: self.event_id(),
            body: self.body(),
        }
    }
}

impl From<&ValidEvent<'_>> for NewEvent {
    fn from(event: &ValidEvent<'_>) -> NewEvent {
        NewEvent::new(
            event.action,
            event.timestamp,
            &event.interaction_id,
            &event.mcp_id,
            event.event_id.as_deref(),
            event.body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_invalid(body: &str, field: Option<&str>, code: &str) {
        let err = validate(body).expect_err(body);
        assert_eq!(err.field.as_deref(), field, "{body}: {err}");
        assert_eq!(err.code.as_str(), code, "{body}: {err}");
    }

    const OK: &str = r#"{"action":"interaction_start","interaction_id":"a","mcp_id":"m","timestamp":1763900000.25,"request_data":{"f":1}}"#;

    #[test]
    fn valid_event_keeps_the_exact_bytes() {
        let ev = validate(OK).unwrap();
        assert_eq!(ev.action, Action::Start);
        assert_eq!(ev.interaction_id, "a");
        assert_eq!(ev.timestamp, 1763900000.25);
        assert_eq!(ev.body, OK);
    }

    #[test]
    fn each_rule_names_its_field() {
        check_invalid("[1]", Some("body"), "not_an_object");
        check_invalid("{", Some("body"), "malformed_json");
        check_invalid(
            r#"{"action":"interaction_done","interaction_id":"a","mcp_id":"m","timestamp":1}"#,
            Some("action"),
            "unknown_action",
        );
        check_invalid(
            r#"{"interaction_id":"a","mcp_id":"m","timestamp":1}"#,
            Some("action"),
            "missing_field",
        );
        check_invalid(
            r#"{"action":"interaction_start","mcp_id":"m","timestamp":1}"#,
            Some("interaction_id"),
            "missing_field",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"","mcp_id":"m","timestamp":1}"#,
            Some("interaction_id"),
            "bad_length",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"a\u0007","mcp_id":"m","timestamp":1}"#,
            Some("interaction_id"),
            "control_character",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"a","mcp_id":7,"timestamp":1}"#,
            Some("mcp_id"),
            "not_a_string",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"a","mcp_id":"m","timestamp":"1"}"#,
            Some("timestamp"),
            "not_a_number",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"a","mcp_id":"m","timestamp":0}"#,
            Some("timestamp"),
            "out_of_range",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"a","mcp_id":"m","timestamp":1763900000250}"#,
            Some("timestamp"),
            "looks_like_milliseconds",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"a","mcp_id":"m","timestamp":1,"result_data":{}}"#,
            Some("result_data"),
            "payload_mismatch",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"a","mcp_id":"m","timestamp":1,"request_data":[]}"#,
            Some("request_data"),
            "not_an_object",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"a","mcp_id":"m","timestamp":1,"colour":1}"#,
            Some("colour"),
            "unknown_field",
        );
        check_invalid(
            r#"{"action":"interaction_start","interaction_id":"a","interaction_id":"b","mcp_id":"m","timestamp":1}"#,
            Some("interaction_id"),
            "duplicate_field",
        );
        let long = "x".repeat(ID_BYTES_MAX + 1);
        check_invalid(
            &format!(
                r#"{{"action":"interaction_start","interaction_id":"{long}","mcp_id":"m","timestamp":1}}"#
            ),
            Some("interaction_id"),
            "bad_length",
        );
        let long = "x".repeat(EVENT_ID_BYTES_MAX + 1);
        check_invalid(
            &format!(
                r#"{{"action":"interaction_start","interaction_id":"a","mcp_id":"m","timestamp":1,"event_id":"{long}"}}"#
            ),
            Some("event_id"),
            "bad_length",
        );
    }

    #[test]
    fn absent_payload_and_every_action_are_accepted() {
        for action in Action::ALL {
            let body = format!(
                r#"{{"action":"{}","interaction_id":"a","mcp_id":"m","timestamp":1,"{}":{{}}}}"#,
                action.wire_name(),
                action.payload_field()
            );
            assert_eq!(validate(&body).unwrap().action, action);
        }
        assert!(validate(
            r#"{"action":"interaction_progress","interaction_id":"a","mcp_id":"m","timestamp":1}"#
        )
        .is_ok());
    }

    #[test]
    fn batches_split_as_array_or_ndjson() {
        let split = |body| {
            split_batch(body, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|item| (item.index, item.text))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            split(r#" [ {"a":1}, {"b": 2} ] "#),
            vec![(0, r#"{"a":1}"#), (1, r#"{"b": 2}"#)]
        );
        // NDJSON items are numbered by line, blank lines included.
        assert_eq!(
            split("{\"a\":1}\n\n{\"b\":2}\n"),
            vec![(0, r#"{"a":1}"#), (2, r#"{"b":2}"#)]
        );
        assert_eq!(split("\r\n \r\n{\"a\":1}\r\n"), vec![(2, r#"{"a":1}"#)]);
        assert!(split_batch("[1,", 10).is_err());
        assert!(is_single_object(" {\"a\":\n 1}\n"));
        assert!(is_single_object("{\"a\":1}"));
        assert!(!is_single_object("{\"a\":1}\n{\"b\":2}"));
        assert!(!is_single_object("[{\"a\":1}]"));
    }

    #[test]
    fn a_batch_past_its_limit_is_refused_at_the_first_item_past_it() {
        let code = |body: &str| {
            split_batch(body, 3)
                .map(|items| items.len())
                .map_err(|e| e.code)
        };
        assert_eq!(code("[0,0,0]"), Ok(3));
        assert_eq!(code("0\n\n0\n0\n"), Ok(3));
        assert_eq!(code("[0,0,0,0]"), Err(Code::BatchTooLarge));
        assert_eq!(code("0\n0\n0\n0"), Err(Code::BatchTooLarge));
        // Refused before the rest is read: what follows the fourth item is never looked at.
        assert_eq!(code("[0,0,0,0,this is not JSON"), Err(Code::BatchTooLarge));
        assert_eq!(code("[0,0,0 this is not JSON"), Err(Code::MalformedJson));
    }
}
