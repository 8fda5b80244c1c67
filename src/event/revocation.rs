//! Revocation records: a key revocation carried by the log as an ordinary frame, so that it is
//! hash-chained, replicated, replayed and dumped like any event (storage-format.md, "Revocation
//! records").
//!
//! A record's `mcp_id` is [`REVOCATIONS_MCP_ID`], which validation refuses from clients, and its
//! body carries a `revocation` member, which clients cannot send (unknown members are refused).
//! Only both together make a revocation record, so no event a client stored, even under a
//! version that did not reserve the name, is ever taken for one.

use serde::Deserialize;

use super::{Action, NewEvent, StoredEvent};

/// The `mcp_id` of revocation records, reserved: no client event may use it.
pub const REVOCATIONS_MCP_ID: &str = "mcplog.keys";

/// The record revoking `revoked` (a key id), at `now_s` (the server's clock) in whole seconds:
/// the frame's receive time is exact to the microsecond, and a whole number keeps every record
/// the same size. Its `interaction_id` is the revoked key id in hex, so that an admin finds every
/// revocation of a key under one id; the key id that sends it (the revoking admin's) is the
/// frame's `key_id`.
pub fn revocation_record(revoked: [u8; 8], now_s: f64) -> NewEvent {
    let timestamp = now_s.floor();
    let id = crate::hex::encode(&revoked);
    let action = Action::Progress;
    let body = format!(
        r#"{{"action":"{}","interaction_id":"{id}","mcp_id":"{REVOCATIONS_MCP_ID}","timestamp":{},"revocation":{{"key_id":"{id}"}}}}"#,
        action.wire_name(),
        serde_json::Value::from(timestamp),
    );
    NewEvent::new(action, timestamp, &id, REVOCATIONS_MCP_ID, None, &body)
}

/// The key id a revocation record about to be stored revokes (only the server makes events
/// under [`REVOCATIONS_MCP_ID`]; ingest refuses it from clients).
pub fn revokes(event: &NewEvent) -> Option<[u8; 8]> {
    if event.mcp_id() != REVOCATIONS_MCP_ID {
        return None;
    }
    crate::hex::decode_array(event.interaction_id())
}

/// The key id a stored event revokes, if it is a revocation record: its `mcp_id` is
/// [`REVOCATIONS_MCP_ID`] and its body has a `revocation` member whose `key_id` (16 lower-case
/// hex digits) is also its `interaction_id`. Any other event, `None`.
pub fn revoked_key(event: &StoredEvent<'_>) -> Option<[u8; 8]> {
    if event.mcp_id != REVOCATIONS_MCP_ID {
        return None;
    }
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        revocation: Option<Member<'a>>,
    }
    #[derive(Deserialize)]
    struct Member<'a> {
        key_id: &'a str,
    }
    let body: Body<'_> = serde_json::from_str(event.body).ok()?;
    let key_id = body.revocation?.key_id;
    if key_id != event.interaction_id {
        return None;
    }
    crate::hex::decode_array(key_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(event: &NewEvent) -> StoredEvent<'_> {
        event.stored(7, 0, 1_000, [9; 8])
    }

    #[test]
    fn a_record_names_the_revoked_key_and_nothing_else_does() {
        let record = revocation_record([0xab; 8], 1_765_000_000.5);
        assert_eq!(
            record.body(),
            r#"{"action":"interaction_progress","interaction_id":"abababababababab","mcp_id":"mcplog.keys","timestamp":1765000000.0,"revocation":{"key_id":"abababababababab"}}"#
        );
        assert_eq!(revoked_key(&stored(&record)), Some([0xab; 8]));
        // A client event under the reserved name (an older version stored it) is no record.
        let client = NewEvent::new(
            Action::Progress,
            1.0,
            "abababababababab",
            REVOCATIONS_MCP_ID,
            None,
            r#"{"action":"interaction_progress","interaction_id":"abababababababab","mcp_id":"mcplog.keys","timestamp":1}"#,
        );
        assert_eq!(revoked_key(&stored(&client)), None);
        // The member under another mcp_id, or naming another key than the interaction: no record.
        let elsewhere = NewEvent::new(
            Action::Progress,
            1.0,
            "abababababababab",
            "m",
            None,
            record.body(),
        );
        assert_eq!(revoked_key(&stored(&elsewhere)), None);
        let mismatched = NewEvent::new(
            Action::Progress,
            1.0,
            "cdcdcdcdcdcdcdcd",
            REVOCATIONS_MCP_ID,
            None,
            record.body(),
        );
        assert_eq!(revoked_key(&stored(&mismatched)), None);
    }

    #[test]
    fn a_record_is_a_valid_event_but_for_its_reserved_name_and_member() {
        let record = revocation_record([1; 8], 1_765_000_000.0);
        let err = crate::event::validate(record.body()).expect_err("a client cannot send it");
        assert_eq!(err.field.as_deref(), Some("mcp_id"));
        let without = record
            .body()
            .replace(r#","revocation":{"key_id":"0101010101010101"}"#, "");
        let err = crate::event::validate(&without).expect_err("the reserved mcp_id");
        assert_eq!(err.field.as_deref(), Some("mcp_id"));
        assert_eq!(err.code.as_str(), "reserved_id");
        let renamed = record.body().replace(REVOCATIONS_MCP_ID, "m");
        let err = crate::event::validate(&renamed).expect_err("the server-only member");
        assert_eq!(err.field.as_deref(), Some("revocation"));
    }
}
