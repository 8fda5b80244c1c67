"""Client basics against the real server: what is stored, rejections, redaction, bad input."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time

import pytest

import mcplog
from _faultproxy import FORWARD, FaultProxy
from _server import WRITER_KEY, unique

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_start_progress_complete_is_stored_as_a_completed_record(server, make_client):
    client = make_client(server.url)
    iid = unique("basic")
    t0 = time.time()
    assert client.emit("start", iid, request_data={"tool": "search", "arguments": {"q": "élan"}})
    assert client.emit("interaction_progress", iid, progress_data={"done": 1, "of": 2})
    assert client.emit("progress", iid, progress_data={"done": 2, "of": 2})
    assert client.emit("complete", iid, result_data={"hits": [1, 2, 3]})

    result = client.flush(10)
    assert result == mcplog.FlushResult(delivered=4, rejected=0, dropped=0, pending=0)

    record = server.record(iid)
    assert record["status"] == "completed"
    assert record["mcp_id"] == "demo_mcp"
    assert record["request_data"] == {"tool": "search", "arguments": {"q": "élan"}}
    assert [p["data"] for p in record["progress_updates"]] == [{"done": 1, "of": 2}, {"done": 2, "of": 2}]
    assert record["result_data"] == {"hits": [1, 2, 3]}
    assert record["metadata"]["event_count"] == 4

    events = server.events(iid)
    assert [e["action"] for e in events] == [
        "interaction_start",
        "interaction_progress",
        "interaction_progress",
        "interaction_complete",
    ]
    for event in events:  # stamped by emit: a UUIDv7 event_id and "now"
        assert UUID7.match(event["event_id"])
        assert t0 - 1 <= event["timestamp"] <= time.time() + 1
    assert len({e["event_id"] for e in events}) == 4


def test_explicit_timestamp_and_event_id_are_kept(server, make_client):
    client = make_client(server.url)
    iid = unique("explicit")
    client.emit("start", iid, request_data={}, timestamp=1_700_000_000.25, event_id="my-event-1")
    client.emit("error", iid, error_data={"message": "nope", "type": "X"})
    assert client.flush(10).delivered == 2
    first = server.events(iid)[0]
    assert first["timestamp"] == 1_700_000_000.25
    assert first["event_id"] == "my-event-1"
    assert server.record(iid)["status"] == "failed"


def test_rejected_events_are_reported_and_the_rest_of_the_batch_is_stored(server, make_client):
    rejections: list[mcplog.Rejection] = []
    with FaultProxy(server.url, lambda index, path: FORWARD) as proxy:  # to see the requests
        # A long linger and one flush: all five events go out as one batch.
        client = make_client(proxy.url, linger=2.0, on_rejected=rejections.append)
        good = unique("batch")
        client.emit("start", good, request_data={"n": 1})
        client.emit("start", " spaces ", request_data={"n": 2})
        client.emit("start", "stats", request_data={"n": 3})
        client.emit("progress", good, progress_data={"n": 4})
        client.emit("complete", good, result_data={"n": 5})
        result = client.flush(10)

    assert (result.delivered, result.rejected, result.pending) == (3, 2, 0)
    # One request, in partial mode; the rejected events were not sent again.
    assert [seen.path for seen in proxy.seen] == ["/api/v2/interactions/batch?partial=true"]
    assert sorted(r.event["interaction_id"] for r in rejections) == [" spaces ", "stats"]
    for rejection in rejections:
        assert rejection.http_status == 422
        assert rejection.code and rejection.message
        assert rejection.field == "interaction_id"
    record = server.record(good)
    assert record["status"] == "completed"
    assert record["metadata"]["event_count"] == 3


def test_server_speaks_partial_batch_mode(server):
    """The client relies on ?partial=true (207 with one result per event)."""
    body = json.dumps(
        [
            {
                "action": "interaction_start",
                "interaction_id": unique("p"),
                "mcp_id": "demo_mcp",
                "timestamp": time.time(),
            },
            {
                "action": "interaction_start",
                "interaction_id": "stats",
                "mcp_id": "demo_mcp",
                "timestamp": time.time(),
            },
        ]
    ).encode()
    status, answer = server.request("POST", "/api/v2/interactions/batch?partial=true", body, key=WRITER_KEY)
    assert status == 207, answer
    results = json.loads(answer)["results"]
    assert [r["status"] for r in results] == ["stored", "error"]


def test_redacted_fields_never_reach_the_server(server, make_client):
    client = make_client(server.url, redact=["password", "API_KEY"])
    iid = unique("redact")
    secret = "hunter2-do-not-store"
    client.emit(
        "start",
        iid,
        request_data={
            "user": "ana",
            "password": secret,
            "nested": [{"Password": secret, "ok": 1}, {"deeper": {"api_key": secret}}],
        },
    )
    client.emit("complete", iid, result_data={"echo": {"password": secret}})
    assert client.flush(10).delivered == 2

    raw = server.events_raw(iid)
    assert secret.encode() not in raw
    start = server.events(iid)[0]["request_data"]
    assert start == {
        "user": "ana",
        "password": "[redacted]",
        "nested": [{"Password": "[redacted]", "ok": 1}, {"deeper": {"api_key": "[redacted]"}}],
    }
    assert server.record(iid)["result_data"] == {"echo": {"password": "[redacted]"}}


def test_oversized_payload_is_replaced_by_a_marker(server, make_client):
    client = make_client(server.url, payload_bytes_max=1000)
    iid = unique("big")
    client.emit("start", iid, request_data={"blob": "x" * 5000})
    assert client.flush(10).delivered == 1
    size = len(json.dumps({"blob": "x" * 5000}, separators=(",", ":")))
    assert server.record(iid)["request_data"] == {"truncated": True, "bytes": size}


def test_emit_never_raises_on_bad_input(server, make_client, caplog):
    caplog.set_level(logging.WARNING, logger="mcplog")
    client = make_client(server.url, redact=["secret"])
    loop: dict = {}
    loop["self"] = loop  # circular: cannot be serialized (nor redacted)
    bad_calls = [
        lambda: client.emit("explode", "x"),
        lambda: client.emit(None, "x"),
        lambda: client.emit("start", 42),
        lambda: client.emit("start", None),
        lambda: client.emit("start", "x", request_data=[1, 2]),
        lambda: client.emit("start", "x", request_data="text"),
        lambda: client.emit("start", "x", result_data={}),  # wrong payload for the action
        lambda: client.emit("start", "x", bogus=1),
        lambda: client.emit("start", "x", timestamp="yesterday"),
        lambda: client.emit("start", "x", timestamp=math.nan),
        lambda: client.emit("start", "x", timestamp=True),
        lambda: client.emit("start", "x", event_id=7),
        lambda: client.emit("start", "x", request_data={"v": math.inf}),
        lambda: client.emit("start", "x", request_data=loop),
    ]
    for call in bad_calls:
        assert call() is False
    result = client.flush(5)
    assert result == mcplog.FlushResult(delivered=0, rejected=0, dropped=len(bad_calls), pending=0)
    assert any("invalid event" in r.getMessage() for r in caplog.records)

    # Values that are not JSON are logged as text rather than dropped.
    iid = unique("lenient")
    assert client.emit("start", iid, request_data={"when": time, "tags": {"a"}, "raw": b"hi"})
    assert client.flush(10).delivered == 1
    data = server.record(iid)["request_data"]
    assert data["tags"] == ["a"] and data["raw"] == "hi" and "module" in data["when"]


def test_emit_of_the_wrong_shape_is_dropped_not_raised(server, make_client, caplog):
    caplog.set_level(logging.WARNING, logger="mcplog")
    client = make_client(server.url)
    iid = unique("shape")
    wrong_shape = [
        lambda: client.emit("start", iid, {"tool": "t"}),  # the payload as a positional dict
        lambda: client.emit("start", iid, "extra", "args"),
        lambda: client.emit("start"),
        lambda: client.emit(),
        lambda: client.emit("start", iid, action="complete"),  # given twice
        lambda: client.emit("start", iid, interaction_id="other"),
        lambda: client.emit(interaction_id=iid),
        lambda: client.emit("start", iid, self=client),
    ]
    for call in wrong_shape:
        assert call() is False
    assert client.flush(5) == mcplog.FlushResult(delivered=0, rejected=0, dropped=len(wrong_shape), pending=0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("pass the payload by name, e.g. request_data=" in m for m in messages)
    assert len([m for m in messages if "invalid event" in m]) == 1  # rate-limited

    # The documented shapes, by position and by name, still work.
    assert client.emit("start", iid, request_data={"tool": "t"})
    assert client.emit(action="complete", interaction_id=iid, result_data={"ok": True})
    assert client.flush(10).delivered == 2
    assert server.record(iid)["status"] == "completed"


def test_zero_backoff_is_refused(server):
    for option in ("backoff_base", "backoff_max"):
        with pytest.raises(ValueError, match=option):
            mcplog.Client(server.url, WRITER_KEY, "demo_mcp", **{option: 0})


def test_emit_after_close_is_dropped(server, make_client):
    client = make_client(server.url)
    iid = unique("closed")
    client.emit("start", iid)
    assert client.close(5).delivered == 1
    assert client.emit("complete", iid) is False
    assert client.flush(0).dropped == 1
    assert server.record(iid)["status"] == "started"


def test_concurrent_emitters_lose_nothing(server, make_client):
    client = make_client(server.url, batch_max_events=50)
    iid = unique("threads")
    client.emit("start", iid)
    per_thread, threads = 100, 4

    def worker(n: int) -> None:
        for i in range(per_thread):
            client.emit("progress", iid, progress_data={"thread": n, "i": i})

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    client.emit("complete", iid)
    result = client.flush(20)
    total = 2 + per_thread * threads
    assert (result.delivered, result.pending, result.dropped) == (total, 0, 0)
    record = server.record(iid)
    assert record["metadata"]["event_count"] == total
    assert record["status"] == "completed"


def test_progress_outside_a_tool_call_is_a_no_op():
    assert mcplog.progress({"step": 1}) is False


def test_bad_key_and_foreign_mcp_id_are_rejected_not_retried(server):
    rejections: list[mcplog.Rejection] = []
    report = rejections.append
    bad_key = mcplog.Client(server.url, "not-a-key-0123456789abcdef", "demo_mcp", on_rejected=report)
    foreign = mcplog.Client(server.url, WRITER_KEY, "fork_mcp", on_rejected=report)
    try:
        bad_key.emit("start", unique("badkey"))
        foreign.emit("start", unique("foreign"))
        assert bad_key.flush(10) == mcplog.FlushResult(delivered=0, rejected=1, dropped=0, pending=0)
        assert foreign.flush(10) == mcplog.FlushResult(delivered=0, rejected=1, dropped=0, pending=0)
    finally:
        bad_key.close(0)
        foreign.close(0)
    assert sorted(r.http_status for r in rejections) == [401, 403]
