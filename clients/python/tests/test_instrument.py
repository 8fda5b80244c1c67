"""ToolCall on its own, with a fake client: the order of the events of one interaction."""

from __future__ import annotations

import threading
import time
from typing import Any

from mcplog._instrument import ToolCall

# How long the fake client's progress emit takes: long enough for the test's
# finish to run meanwhile if ToolCall let it.
SLOW_EMIT_SECONDS = 0.1


class RecordingClient:
    """Stands in for mcplog.Client. Records each action when its emit returns,
    as the real client queues it at the end of emit; progress emits are slow."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.progress_started = threading.Event()
        self._lock = threading.Lock()

    def emit(self, action: str, interaction_id: str, **fields: Any) -> bool:
        if action == "interaction_progress":
            self.progress_started.set()
            time.sleep(SLOW_EMIT_SECONDS)
        with self._lock:
            self.actions.append(action)
        return True


def in_thread(target: Any, *args: Any) -> list[Any]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(target(*args)))
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    return result


def test_no_progress_is_recorded_after_the_terminal_event():
    client = RecordingClient()
    call = ToolCall(client, "t", {}, capture_arguments=True, capture_results=True)  # type: ignore[arg-type]
    call.start()

    # Progress already being emitted when the call finishes goes first...
    reporter = threading.Thread(target=call.progress, args=({"step": 1},))
    reporter.start()
    assert client.progress_started.wait(5)
    call.complete({"ok": True})
    reporter.join(5)

    # ...and progress reported from another thread after it is not recorded.
    assert in_thread(call.progress, {"step": 2}) == [False]
    assert in_thread(call.sdk_progress, 3, 3, "late") == [False]
    assert client.actions == ["interaction_start", "interaction_progress", "interaction_complete"]
