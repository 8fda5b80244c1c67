"""Building one wire event: validation, stamping, redaction, serialization.

Everything here is pure (no I/O, no shared state), so it runs on the caller's
thread inside ``Client.emit`` before the event touches the queue.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

# Wire action name -> the one payload field that action carries.
PAYLOAD_FIELDS: dict[str, str] = {
    "interaction_start": "request_data",
    "interaction_progress": "progress_data",
    "interaction_complete": "result_data",
    "interaction_error": "error_data",
    "interaction_cancelled": "cancel_data",
}

# Short forms accepted by emit(), e.g. emit("start", ...).
SHORT_ACTIONS: dict[str, str] = {
    "start": "interaction_start",
    "progress": "interaction_progress",
    "complete": "interaction_complete",
    "error": "interaction_error",
    "cancelled": "interaction_cancelled",
}

REDACTED = "[redacted]"

# The server refuses single events above 1 MiB; the envelope (ids, action,
# timestamp) is far below 8 KiB, so this payload limit keeps every event
# acceptable to a default server.
DEFAULT_PAYLOAD_BYTES_MAX = 1024 * 1024 - 8 * 1024


class InvalidEvent(ValueError):
    """An emit() call that can never produce a valid event (counted as dropped)."""


def uuid7() -> str:
    """A UUIDv7 (RFC 9562) string: 48-bit Unix milliseconds, then 74 random bits.

    Time-ordered ids keep the server's event_id index append-friendly; the
    stdlib only has uuid7 from Python 3.14 on.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return str(uuid.UUID(int=value))


def resolve_action(action: object) -> str:
    if isinstance(action, str):
        if action in PAYLOAD_FIELDS:
            return action
        if action in SHORT_ACTIONS:
            return SHORT_ACTIONS[action]
    raise InvalidEvent(f"unknown action {action!r}")


def redact(value: Any, names: frozenset[str]) -> Any:
    """Copy ``value`` with every mapping entry whose key is in ``names``
    (compared case-insensitively) replaced by ``"[redacted]"``, at any depth.

    Returns a new structure so the caller's objects are never mutated.
    """
    if not names:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and k.casefold() in names else redact(v, names)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v, names) for v in value]
    return value


def _json_fallback(obj: Any) -> Any:
    """Make common non-JSON values loggable instead of dropping the whole event:
    pydantic models (tool arguments/results) dump to JSON data, sets become
    lists, bytes are decoded, anything else becomes its str()."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", "replace")
    return str(obj)


def to_json(value: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON and the server would refuse
    # the event, so fail here where the caller gets a warning.
    return json.dumps(
        value,
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
        default=_json_fallback,
    )


def _check_timestamp(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent(f"timestamp must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidEvent("timestamp must be finite")
    return float(value)


def build_event(
    action: object,
    interaction_id: object,
    mcp_id: str,
    fields: Mapping[str, Any],
    *,
    redact_names: frozenset[str],
    payload_bytes_max: int,
) -> bytes:
    """Validate one emit() call and return the event serialized as UTF-8 JSON.

    The bytes are produced once here and resent unchanged on every retry: the
    server deduplicates by event_id only when the body is byte-identical.
    Raises InvalidEvent for a call that can never be valid.
    """
    wire_action = resolve_action(action)
    if not isinstance(interaction_id, str):
        raise InvalidEvent(f"interaction_id must be a str, got {type(interaction_id).__name__}")
    payload_field = PAYLOAD_FIELDS[wire_action]
    unknown = set(fields) - {payload_field, "timestamp", "event_id"}
    if unknown:
        raise InvalidEvent(
            f"{wire_action} takes only {payload_field}, timestamp and event_id; got {sorted(unknown)}"
        )

    payload = fields.get(payload_field)
    if payload is None:
        payload = {}
    if not isinstance(payload, Mapping):
        raise InvalidEvent(f"{payload_field} must be a dict, got {type(payload).__name__}")

    timestamp = fields.get("timestamp")
    event_id = fields.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise InvalidEvent(f"event_id must be a str, got {type(event_id).__name__}")

    envelope = {
        "action": wire_action,
        "interaction_id": interaction_id,
        "mcp_id": mcp_id,
        "timestamp": time.time() if timestamp is None else _check_timestamp(timestamp),
        "event_id": uuid7() if event_id is None else event_id,
    }
    payload_json = _payload_json(redact(payload, redact_names), payload_bytes_max)
    # Splice the payload in rather than serializing the whole event again:
    # the payload may be large and has already been serialized once to size it.
    head = to_json(envelope).encode()
    return b"".join((head[:-1], b',"', payload_field.encode(), b'":', payload_json, b"}"))


def _payload_json(payload: Any, payload_bytes_max: int) -> bytes:
    data = to_json(payload).encode()
    if len(data) > payload_bytes_max:
        # Keep the event (the interaction's lifecycle still matters) but not
        # a payload the server would refuse.
        return to_json({"truncated": True, "bytes": len(data)}).encode()
    return data


# emit()'s "argument not passed", told apart from an explicit None. Any-typed so
# it can default the str parameters.
MISSING: Any = object()


def call_arguments(
    action: object, interaction_id: object, extra: tuple[Any, ...], fields: dict[str, Any]
) -> tuple[object, object]:
    """``emit``'s action and interaction_id, whether passed by position or by
    name; InvalidEvent for a call of any other shape."""
    if extra:
        # A positional dict is most likely the payload; which field it was
        # meant for is a guess, so it is refused with a hint rather than stored.
        hint = " (pass the payload by name, e.g. request_data={...})" if isinstance(extra[0], Mapping) else ""
        raise InvalidEvent(f"emit() takes 2 positional arguments but {2 + len(extra)} were given{hint}")
    return _by_position_or_name("action", action, fields), _by_position_or_name(
        "interaction_id", interaction_id, fields
    )


def _by_position_or_name(name: str, positional: object, fields: dict[str, Any]) -> object:
    named = fields.pop(name, MISSING)
    if positional is MISSING and named is MISSING:
        raise InvalidEvent(f"emit() is missing {name}")
    if positional is not MISSING and named is not MISSING:
        raise InvalidEvent(f"emit() got {name} twice, by position and by name")
    return positional if named is MISSING else named
