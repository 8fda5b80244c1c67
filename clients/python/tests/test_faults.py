"""Faults: server down, 503 + Retry-After, a connection killed mid-batch, a
full queue, process exit with pending events, fork, a signal handler that
emits while the client is busy."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import mcplog
from _faultproxy import FORWARD, FORWARD_THEN_HANG_UP, Answer, FaultProxy
from _server import free_port, unique, writer_key

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # clients/python, holds mcplog/


def emit_lifecycle(client: mcplog.Client, iid: str, progress_steps: int) -> int:
    """start, progress x N, complete; returns the number of events emitted."""
    client.emit("start", iid, request_data={"tool": "t"})
    for step in range(progress_steps):
        client.emit("progress", iid, progress_data={"step": step})
    client.emit("complete", iid, result_data={"ok": True})
    return progress_steps + 2


def assert_stored_exactly_once(server, expected: dict[str, int]) -> None:
    """Each interaction holds exactly its events, and no event_id is stored twice."""
    for iid, count in expected.items():
        record = server.record(iid)
        assert record["metadata"]["event_count"] == count, iid
        assert record["status"] == "completed", iid
    replayed = Counter(e["event_id"] for e in server.replay() if e["interaction_id"] in expected)
    assert sum(replayed.values()) == sum(expected.values())
    assert set(replayed.values()) == {1}


# (a) -------------------------------------------------------------------------


def test_events_emitted_while_the_server_is_down_arrive_after_it_starts(make_server, make_client):
    port = free_port()
    client = make_client(f"http://127.0.0.1:{port}", backoff_base=0.05, backoff_max=0.5)
    iid = unique("late")
    count = emit_lifecycle(client, iid, 3)

    time.sleep(0.5)  # several refused attempts
    assert client.flush(0) == mcplog.FlushResult(delivered=0, rejected=0, dropped=0, pending=count)

    server = make_server(port).start()
    assert client.flush(15) == mcplog.FlushResult(delivered=count, rejected=0, dropped=0, pending=0)
    assert_stored_exactly_once(server, {iid: count})


# (b) -------------------------------------------------------------------------

BUSY = json.dumps({"error": {"code": "queue_full", "message": "try later", "field": None}}).encode()


def test_503_with_retry_after_is_retried_no_sooner_than_asked(server, make_client):
    def policy(index: int, path: str):
        if index == 0:
            return Answer(503, BUSY, (("Content-Type", "application/json"), ("Retry-After", "1")))
        return FORWARD

    with FaultProxy(server.url, policy) as proxy:
        # A tiny backoff base: any wait of about 1 s comes from Retry-After.
        client = make_client(proxy.url, backoff_base=0.01)
        iid = unique("busy")
        count = emit_lifecycle(client, iid, 2)
        assert client.flush(15).delivered == count

    assert len(proxy.seen) == 2
    assert proxy.seen[1].at - proxy.seen[0].at >= 0.95
    assert proxy.seen[1].body == proxy.seen[0].body  # the same bytes again
    assert_stored_exactly_once(server, {iid: count})


# (c) -------------------------------------------------------------------------


def test_connection_killed_after_the_server_stored_the_batch_loses_and_duplicates_nothing(
    server, make_client
):
    def policy(index: int, path: str):
        return FORWARD_THEN_HANG_UP if index == 0 else FORWARD

    with FaultProxy(server.url, policy) as proxy:
        client = make_client(proxy.url, backoff_base=0.05, linger=0.2)
        expected = {unique(f"killed{n}"): 0 for n in range(4)}
        for iid in expected:
            expected[iid] = emit_lifecycle(client, iid, 3)
        result = client.flush(15)

    total = sum(expected.values())
    assert (result.delivered, result.rejected, result.pending) == (total, 0, 0)
    # Sent twice, byte-identical: the server answers the resend as duplicates.
    assert len(proxy.seen) == 2
    assert proxy.seen[1].body == proxy.seen[0].body
    assert_stored_exactly_once(server, expected)


# (d) -------------------------------------------------------------------------


def test_full_queue_drops_counts_and_warns_without_blocking(make_client, caplog):
    caplog.set_level(logging.WARNING, logger="mcplog")
    client = make_client(f"http://127.0.0.1:{free_port()}", queue_max_events=5, backoff_base=0.05)
    iid = unique("full")

    started = time.monotonic()
    accepted = [client.emit("progress", iid, progress_data={"i": i}) for i in range(500)]
    elapsed = time.monotonic() - started

    assert elapsed < 0.5  # emit never waits for room
    result = client.flush(0)
    assert result.dropped == accepted.count(False)
    assert result.pending == accepted.count(True)
    assert result.dropped >= 500 - 10  # room for the queue plus one in-flight batch
    full_warnings = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full_warnings) == 1  # rate-limited, not one per event


# (e) -------------------------------------------------------------------------

EXIT_SCRIPT = """
import sys, mcplog
url, key, mcp_id, iid, count, exit_timeout = sys.argv[1:]
client = mcplog.Client(
    url, key, mcp_id, exit_flush_timeout=float(exit_timeout), backoff_base=0.05, backoff_max=0.2
)
client.emit("start", iid, request_data={"n": int(count)})
for i in range(int(count) - 2):
    client.emit("progress", iid, progress_data={"i": i})
client.emit("complete", iid, result_data={"ok": True})
# No flush(), no close(): the exit hook must deliver (or report) the events.
"""


def run_script(script: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``script`` in a fresh interpreter; returns it and its wall time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=30
    )
    return proc, time.monotonic() - started


def run_exit_script(
    url: str, iid: str, count: int, exit_timeout: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    return run_script(
        EXIT_SCRIPT, url, writer_key("exit_mcp"), "exit_mcp", iid, str(count), str(exit_timeout)
    )


def test_exit_delivers_pending_events(server):
    iid = unique("exit")
    proc, _ = run_exit_script(server.url, iid, 50, 5.0)
    assert proc.returncode == 0, proc.stderr
    assert_stored_exactly_once(server, {iid: 50})


def test_exit_with_the_server_unreachable_gives_up_after_exit_flush_timeout(make_client):
    proc, elapsed = run_exit_script(f"http://127.0.0.1:{free_port()}", unique("exit-down"), 20, 1.0)
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 1.0 + 2.5  # the 1 s exit flush, plus interpreter start-up and slack
    assert "exiting with 20 events not delivered" in proc.stderr


EXIT_MANY_SCRIPT = """
import sys, mcplog
down_url, live_url, key, mcp_id, iid, clients_down, exit_timeout = sys.argv[1:]
for n in range(int(clients_down)):
    client = mcplog.Client(down_url, key, mcp_id, exit_flush_timeout=float(exit_timeout))
    client.emit("start", f"{iid}-down{n}")
# A long linger: this client's events go out at exit only if the exit flush
# gets every worker sending at once, whichever client it waits for first.
live = mcplog.Client(live_url, key, mcp_id, exit_flush_timeout=float(exit_timeout), linger=60.0)
live.emit("start", iid)
live.emit("complete", iid)
"""


def test_exit_waits_for_all_clients_together_not_one_after_another(server):
    clients_down, exit_timeout = 4, 1.0
    iid = unique("exit-many")
    proc, elapsed = run_script(
        EXIT_MANY_SCRIPT,
        f"http://127.0.0.1:{free_port()}",
        server.url,
        writer_key("exit_mcp"),
        "exit_mcp",
        iid,
        str(clients_down),
        str(exit_timeout),
    )
    assert proc.returncode == 0, proc.stderr
    # One shared exit_flush_timeout (one after another would take 4 s).
    assert elapsed < exit_timeout + 2.5
    assert proc.stderr.count("exiting with 1 events not delivered") == clients_down
    assert_stored_exactly_once(server, {iid: 2})


# (f) -------------------------------------------------------------------------


# Forking while the worker thread runs is exactly the case under test (3.12+ warns about it).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_gets_a_fresh_queue_and_worker(server, make_client):
    # A long linger keeps the parent's events queued (not sent) until a flush.
    client = make_client(server.url, mcp_id="fork_mcp", linger=60.0)
    parent_iid, child_iid = unique("parent"), unique("child")
    client.emit("start", parent_iid)
    assert client.flush(10).delivered == 1  # the parent's worker thread is running now
    client.emit("progress", parent_iid, progress_data={"queued": "before fork"})
    client.emit("progress", parent_iid, progress_data={"queued": "before fork"})
    assert client.flush(0).pending == 2

    pid = os.fork()
    if pid == 0:  # child: the parent's worker thread does not exist here
        code = 1
        try:
            # Fresh queue and counters: the parent's queued events are not here.
            code = 2 if client.flush(0) != mcplog.FlushResult(0, 0, 0, 0) else 3
            emit_lifecycle(client, child_iid, 1)
            result = client.flush(10)
            # Fresh counters: the parent's delivered event is not counted here.
            code = 0 if result == mcplog.FlushResult(3, 0, 0, 0) else 4
        finally:
            os._exit(code)

    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The events queued before the fork stayed with the parent, which delivers
    # them (once: the child did not send them too).
    client.emit("complete", parent_iid)
    assert client.flush(10) == mcplog.FlushResult(delivered=4, rejected=0, dropped=0, pending=0)
    assert_stored_exactly_once(server, {child_iid: 3, parent_iid: 4})


# (g) -------------------------------------------------------------------------

SIGNAL_SCRIPT = """
import collections, json, signal, sys, threading, mcplog
url, key, mcp_id, iid = sys.argv[1:]
client = mcplog.Client(url, key, mcp_id)
seen = {}

def handler(signum, frame):
    seen["nested"] = client._queue._sections.is_holder()
    seen["emit"] = client.emit("progress", iid, progress_data={"from": "signal handler"})
    seen["flush_pending"] = client.flush(10).pending  # cannot wait here, must not hang

class InterruptedQueue(collections.deque):
    # The signal lands while emit() holds the client's lock, half-way through queueing.
    armed = True

    def append(self, item):
        if self.armed:
            self.armed = False
            signal.raise_signal(signal.SIGUSR1)  # the Python handler runs before this returns
        super().append(item)

signal.signal(signal.SIGUSR1, handler)
client._queue._items = InterruptedQueue()
client.emit("start", iid, request_data={})
client.emit("complete", iid, result_data={})
seen["close"] = list(client.close(10))
print(json.dumps(seen))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_emit_from_a_signal_handler_that_interrupted_emit_does_not_deadlock(server):
    iid = unique("signal")
    proc, _ = run_script(SIGNAL_SCRIPT, server.url, writer_key("demo_mcp"), "demo_mcp", iid)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["nested"] is True  # the handler really ran inside the client
    assert seen["emit"] is True
    assert seen["flush_pending"] == 1  # its own event, handed off, not admitted yet
    assert seen["close"] == [3, 0, 0, 0]
    events = server.events(iid)
    assert [e["action"] for e in events] == [
        "interaction_start",
        "interaction_progress",
        "interaction_complete",
    ]


# A server without partial mode (older releases) ------------------------------

NO_PARTIAL = json.dumps(
    {"error": {"code": "bad_parameter", "message": 'unknown query parameter "partial"', "field": "partial"}}
).encode()


def test_server_without_partial_mode_gets_all_or_nothing_batches(server, make_client):
    def policy(index: int, path: str):
        if "partial=true" in path:
            return Answer(400, NO_PARTIAL, (("Content-Type", "application/json"),))
        return FORWARD

    rejections: list[mcplog.Rejection] = []
    with FaultProxy(server.url, policy) as proxy:
        client = make_client(proxy.url, linger=2.0, on_rejected=rejections.append)
        iid = unique("nopartial")
        client.emit("start", iid)
        client.emit("start", " spaces ")
        client.emit("complete", iid)
        result = client.flush(10)

    assert (result.delivered, result.rejected, result.pending) == (2, 1, 0)
    assert [r.event["interaction_id"] for r in rejections] == [" spaces "]
    # partial refused -> whole batch refused (422, nothing stored) -> valid events resent.
    assert ["partial=true" in seen.path for seen in proxy.seen] == [True, False, False]
    assert_stored_exactly_once(server, {iid: 2})
