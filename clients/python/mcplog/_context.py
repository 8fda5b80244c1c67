"""The tool call currently running, as seen from inside the tool.

The middleware sets a ContextVar around ``call_next``; tools (and tasks or
worker threads they start, which copy the context) read it through
``mcplog.progress``. A ContextVar rather than a global: concurrent tool calls
on one event loop each see their own call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Protocol

logger = logging.getLogger("mcplog")


class ProgressSink(Protocol):
    def progress(self, data: Mapping[str, Any]) -> bool: ...


_current_call: ContextVar[ProgressSink | None] = ContextVar("mcplog_current_call", default=None)


def current_call() -> ProgressSink | None:
    return _current_call.get()


@contextlib.contextmanager
def running(call: ProgressSink) -> Iterator[None]:
    token = _current_call.set(call)
    try:
        yield
    finally:
        _current_call.reset(token)


def progress(data: Mapping[str, Any]) -> bool:
    """Record progress (a dict, stored as the event's ``progress_data``) for
    the tool call the mcplog middleware is running now.

    Returns False, doing nothing, when called outside such a call; never raises.
    """
    call = _current_call.get()
    if call is None:
        return False
    try:
        return call.progress(data)
    except Exception:  # logging must never break the tool
        logger.debug("mcplog: progress() failed", exc_info=True)
        return False
