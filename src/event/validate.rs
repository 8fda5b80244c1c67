//! Validation: client bytes to a [`ValidEvent`] or an [`Invalid`] naming the field, and batch
//! splitting. Pure functions; the one rule that needs the server's clock takes it as a value.

use std::borrow::Cow;
use std::fmt;

use crate::refusal::Code;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::revocation::REVOCATIONS_MCP_ID;
use super::{
    Action, Invalid, ValidEvent, EVENT_ID_BYTES_MAX, ID_BYTES_MAX, PAYLOAD_DEPTH_MAX,
    RESERVED_INTERACTION_IDS, TIMESTAMP_SECONDS_MAX,
};

/// Validates one client event given as the raw JSON text of an object.
pub fn validate(body: &str) -> Result<ValidEvent<'_>, Invalid> {
    let fields = top_level(body)?;
    let read = Read::from_entries(&fields.entries)?;
    let action = action_field(read.action.ok_or_else(|| missing("action"))?)?;
    for (field, value) in read.payloads {
        check_payload(action, field, value)?;
    }
    let interaction_id = read
        .interaction_id
        .ok_or_else(|| missing("interaction_id"))?;
    check_not_reserved(&interaction_id)?;
    Ok(ValidEvent {
        action,
        interaction_id,
        mcp_id: read.mcp_id.ok_or_else(|| missing("mcp_id"))?,
        timestamp: read.timestamp.ok_or_else(|| missing("timestamp"))?,
        event_id: read.event_id,
        body,
    })
}

/// The body's top-level members, refused if it is not a JSON object or names one twice.
fn top_level(body: &str) -> Result<Fields<'_>, Invalid> {
    let fields: Fields<'_> = serde_json::from_str(body).map_err(|err| {
        let code = if err.is_data() {
            Code::NotAnObject
        } else {
            Code::MalformedJson
        };
        // The body as a whole is at fault, named as the body is everywhere else.
        Invalid {
            field: Some("body".to_owned()),
            code,
            message: format!("the event is not a JSON object: {err}"),
        }
    })?;
    if let Some(name) = &fields.duplicate {
        let name = shown(name);
        return Err(Invalid::field(
            &name,
            Code::DuplicateField,
            format!("field {name:?} appears twice"),
        ));
    }
    Ok(fields)
}

/// The top-level fields as read, each checked on its own, in the order the client sent them.
#[derive(Default)]
struct Read<'a> {
    action: Option<&'a RawValue>,
    interaction_id: Option<Cow<'a, str>>,
    mcp_id: Option<Cow<'a, str>>,
    timestamp: Option<f64>,
    event_id: Option<Cow<'a, str>>,
    /// Every payload field present (an event carries only its action's), with its value.
    payloads: Vec<(&'static str, &'a RawValue)>,
}

impl<'a> Read<'a> {
    fn from_entries(entries: &[(Cow<'a, str>, &'a RawValue)]) -> Result<Read<'a>, Invalid> {
        let mut read = Read::default();
        for &(ref name, value) in entries {
            match name.as_ref() {
                "action" => read.action = Some(value),
                "interaction_id" => read.interaction_id = Some(id_field("interaction_id", value)?),
                "mcp_id" => read.mcp_id = Some(mcp_id_field(value)?),
                "timestamp" => read.timestamp = Some(timestamp_field(value)?),
                "event_id" => read.event_id = Some(event_id_field(value)?),
                other => match Action::ALL.into_iter().find(|a| a.payload_field() == other) {
                    Some(a) => read.payloads.push((a.payload_field(), value)),
                    None => {
                        let other = shown(other);
                        return Err(Invalid::field(
                            &other,
                            Code::UnknownField,
                            format!("unknown field {other:?}; allowed: action, interaction_id, mcp_id, timestamp, event_id and the action's payload field"),
                        ));
                    }
                },
            }
        }
        Ok(read)
    }
}

/// A payload field: the action's own, a JSON object, read strictly.
fn check_payload(action: Action, field: &str, value: &RawValue) -> Result<(), Invalid> {
    if field != action.payload_field() {
        return Err(Invalid::field(
            field,
            Code::PayloadMismatch,
            format!(
                "{field} does not go with action {}; its payload field is {}",
                action.wire_name(),
                action.payload_field()
            ),
        ));
    }
    if !value.get().trim_start().starts_with('{') {
        return Err(Invalid::field(
            field,
            Code::NotAnObject,
            format!("{field} must be a JSON object"),
        ));
    }
    // One strict reading for validation and redaction alike: what passes here, the redactor
    // can read to the end.
    if let Err(err) = super::json::check(value.get(), PAYLOAD_DEPTH_MAX) {
        return Err(Invalid::field(field, err.code(), format!("{field} {err}")));
    }
    Ok(())
}

/// Refuses an interaction id that names a route.
fn check_not_reserved(interaction_id: &str) -> Result<(), Invalid> {
    if RESERVED_INTERACTION_IDS.contains(&interaction_id) {
        return Err(Invalid::field(
            "interaction_id",
            Code::ReservedId,
            format!(
                "interaction_id {interaction_id:?} is reserved (it names a route: {})",
                RESERVED_INTERACTION_IDS.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Most characters of a client's value an error message quotes: names and numbers are
/// unbounded in JSON, and an answer listing a thousand refused events must stay small.
const QUOTED_CHARS_MAX: usize = 64;

/// A client's value as a message quotes it: whole if short, else its start and an ellipsis.
pub(super) fn shown(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS_MAX) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

fn missing(field: &str) -> Invalid {
    Invalid::field(field, Code::MissingField, format!("{field} is required"))
}

fn string_field<'a>(field: &str, value: &'a RawValue) -> Result<Cow<'a, str>, Invalid> {
    let s: Cow<'a, str> = serde_json::from_str(value.get()).map_err(|_| {
        Invalid::field(field, Code::NotAString, format!("{field} must be a string"))
    })?;
    Ok(s)
}

fn action_field(value: &RawValue) -> Result<Action, Invalid> {
    let name = string_field("action", value)?;
    Action::from_wire(&name).ok_or_else(|| {
        let allowed: Vec<_> = Action::ALL.iter().map(|a| a.wire_name()).collect();
        Invalid::field(
            "action",
            Code::UnknownAction,
            format!(
                "unknown action {:?}; expected one of {}",
                shown(&name),
                allowed.join(", ")
            ),
        )
    })
}

fn bounded_text<'a>(field: &str, value: &'a RawValue, max: usize) -> Result<Cow<'a, str>, Invalid> {
    let s = string_field(field, value)?;
    check_id(field, &s, max)?;
    Ok(s)
}

/// The rules every id (`interaction_id`, `mcp_id`, `event_id`, and a key's mcp_id) follows, so
/// that two ids that look alike are alike: 1 to `max` bytes; no control, invisible or
/// direction-changing character; not only white space, and no white space at either end.
pub fn check_id(field: &str, s: &str, max: usize) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > max {
        return Err(Invalid::field(
            field,
            Code::BadLength,
            format!(
                "{field} must be 1 to {max} bytes of UTF-8, got {} bytes",
                s.len()
            ),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::field(
            field,
            Code::ControlCharacter,
            format!("{field} contains a control character"),
        ));
    }
    if let Some(c) = s.chars().find(|&c| is_invisible(c)) {
        return Err(Invalid::field(
            field,
            Code::InvisibleCharacter,
            format!(
                "{field} contains U+{:04X}, an invisible or direction-changing character that would display as another id",
                u32::from(c)
            ),
        ));
    }
    if s.chars().all(char::is_whitespace) {
        return Err(Invalid::field(
            field,
            Code::BlankId,
            format!("{field} is only white space"),
        ));
    }
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return Err(Invalid::field(
            field,
            Code::SurroundingWhitespace,
            format!("{field} begins or ends with white space, which would display as another id"),
        ));
    }
    Ok(())
}

/// Characters that draw nothing or reorder what follows: Unicode's format characters (bidi
/// embeddings, overrides and isolates, zero-width spaces and joiners, the byte-order mark,
/// prepended number signs, tag characters), line and paragraph separators, the blank fillers
/// that render as nothing (Hangul and Khitan fillers, the blank Braille pattern), and
/// noncharacters.
pub fn is_invisible(c: char) -> bool {
    let code = u32::from(c);
    matches!(code,
        0x00AD | 0x034F | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890 | 0x0891 | 0x08E2
        | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F | 0x200B..=0x200F
        | 0x2028..=0x202E | 0x2060..=0x206F | 0x2800 | 0x3164 | 0xFDD0..=0xFDEF | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x16FE4 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
        || code & 0xFFFE == 0xFFFE
}

/// Refuses a timestamp further than `skew_max_s` ahead of the server's clock `now_s`: such an
/// event would sort above every real one in history for as long as it is kept.
pub fn check_clock(timestamp: f64, now_s: f64, skew_max_s: f64) -> Result<(), Invalid> {
    if timestamp > now_s + skew_max_s {
        return Err(Invalid::field(
            "timestamp",
            Code::TimestampInFuture,
            format!(
                "timestamp {timestamp} is {:.0} s ahead of the server's clock; at most clock_skew_max ({skew_max_s} s) is accepted",
                timestamp - now_s
            ),
        ));
    }
    Ok(())
}

fn id_field<'a>(field: &str, value: &'a RawValue) -> Result<Cow<'a, str>, Invalid> {
    bounded_text(field, value, ID_BYTES_MAX)
}

/// An `mcp_id`, refused when it is the one revocation records use: a client event under it
/// would read as the server's own.
fn mcp_id_field(value: &RawValue) -> Result<Cow<'_, str>, Invalid> {
    let mcp_id = id_field("mcp_id", value)?;
    if mcp_id == REVOCATIONS_MCP_ID {
        return Err(Invalid::field(
            "mcp_id",
            Code::ReservedId,
            format!(
                "mcp_id {REVOCATIONS_MCP_ID:?} is reserved for the server's revocation records"
            ),
        ));
    }
    Ok(mcp_id)
}

fn event_id_field(value: &RawValue) -> Result<Cow<'_, str>, Invalid> {
    bounded_text("event_id", value, EVENT_ID_BYTES_MAX)
}

fn timestamp_field(value: &RawValue) -> Result<f64, Invalid> {
    let not_a_number = || {
        Invalid::field(
            "timestamp",
            Code::NotANumber,
            "timestamp must be a number of seconds since the Unix epoch",
        )
    };
    let text = value.get();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(not_a_number());
    }
    let seconds: f64 = serde_json::from_str(text).map_err(|_| not_a_number())?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(Invalid::field(
            "timestamp",
            Code::OutOfRange,
            format!("timestamp must be finite and > 0, got {}", shown(text)),
        ));
    }
    if seconds > TIMESTAMP_SECONDS_MAX {
        return Err(Invalid::field(
            "timestamp",
            Code::LooksLikeMilliseconds,
            format!("timestamp {} is above {TIMESTAMP_SECONDS_MAX:e}: it looks like milliseconds; send seconds since the Unix epoch", shown(text)),
        ));
    }
    Ok(seconds)
}

/// The top-level members of a JSON object in order, kept raw, noting the first duplicate name.
pub(super) struct Fields<'a> {
    pub(super) entries: Vec<(Cow<'a, str>, &'a RawValue)>,
    duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Fields {
                    entries: Vec::new(),
                    duplicate: None,
                };
                while let Some((name, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    if fields.duplicate.is_none() && fields.entries.iter().any(|(n, _)| *n == name)
                    {
                        fields.duplicate = Some(name.to_string());
                    }
                    fields.entries.push((name, value));
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// One event of a batch body: its raw text and where it stands in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchItem<'a> {
    /// Its position, from 0: in a JSON array the element's, in NDJSON the line's (blank lines
    /// count), so that a client can find the event its outcome is about in what it sent.
    pub index: usize,
    /// The event's raw JSON text.
    pub text: &'a str,
}

/// Splits a batch body into its events: a JSON array, or NDJSON (one event per non-blank line).
/// Which one is decided by the first non-blank byte. A body of more than `max` events is refused
/// (`batch_too_large`) as soon as the one past `max` is met: a small body of tiny items (`[0,0,…]`)
/// never costs more than `max` items' worth of memory.
pub fn split_batch(body: &str, max: usize) -> Result<Vec<BatchItem<'_>>, Invalid> {
    let too_many = || Invalid {
        field: Some("body".to_owned()),
        code: Code::BatchTooLarge,
        message: format!("the batch holds more than batch_events_max ({max}) events"),
    };
    let trimmed = body.trim_start();
    if !trimmed.starts_with('[') {
        let mut items = Vec::new();
        for (index, line) in body.lines().enumerate() {
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            if items.len() == max {
                return Err(too_many());
            }
            items.push(BatchItem { index, text });
        }
        return Ok(items);
    }
    let past_max = std::cell::Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_str(body);
    let items = serde::de::DeserializeSeed::deserialize(
        AtMost {
            max,
            past_max: &past_max,
        },
        &mut deserializer,
    )
    .and_then(|items| deserializer.end().map(|()| items));
    match items {
        Ok(items) => Ok(items
            .into_iter()
            .enumerate()
            .map(|(index, item)| BatchItem {
                index,
                text: item.get(),
            })
            .collect()),
        Err(_) if past_max.get() => Err(too_many()),
        Err(err) => Err(Invalid {
            field: Some("body".to_owned()),
            code: Code::MalformedJson,
            message: format!("the batch is not a JSON array of events: {err}"),
        }),
    }
}

/// A JSON array's elements, unparsed, refused once there are more than `max`.
struct AtMost<'c> {
    max: usize,
    past_max: &'c std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for AtMost<'_> {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for AtMost<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.max {
                self.past_max.set(true);
                return Err(serde::de::Error::custom(
                    "more events than batch_events_max",
                ));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// Whether a batch body is one JSON object as a whole (on one line or spread over several): the
/// body of a single event, not an array of them. As NDJSON it would be a batch of one event (if
/// on one line) or of broken lines (if not), so it is refused unless the client said NDJSON.
pub fn is_single_object(body: &str) -> bool {
    let trimmed = body.trim();
    trimmed.starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok()
}
