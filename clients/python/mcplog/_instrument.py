"""What both middlewares share: one tool call = one interaction.

``ToolCall`` emits ``interaction_start``, any number of
``interaction_progress``, then exactly one of ``interaction_complete``,
``interaction_error`` or ``interaction_cancelled``. ``run_tool_call`` drives
it around the SDK's ``call_next``; each SDK module only adapts how it reads
the tool name, arguments and result.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from ._client import Client
from ._context import current_call, running
from ._events import uuid7

logger = logging.getLogger("mcplog")

T = TypeVar("T")

# JSON-RPC "invalid params": what both SDKs answer for arguments that fail validation.
INVALID_PARAMS = -32602


class ToolCall:
    """The interaction of one tool call. Safe to use from several threads (a
    sync tool runs in a worker thread and may report progress from there)."""

    def __init__(
        self,
        client: Client,
        tool: str,
        arguments: Any,
        *,
        capture_arguments: bool,
        capture_results: bool,
    ) -> None:
        self.client = client
        self.tool = tool
        self.arguments = arguments
        self.capture_arguments = capture_arguments
        self.capture_results = capture_results
        self.interaction_id = uuid7()
        # Held while emitting (emit never blocks), so that no progress can be
        # queued after the terminal event. Re-entrant so that a signal handler
        # reporting progress while this thread emits cannot deadlock.
        self._lock = threading.RLock()
        self._finished = False

    def start(self) -> None:
        request: dict[str, Any] = {"tool": self.tool}
        if self.capture_arguments:
            request["arguments"] = dict(self.arguments) if isinstance(self.arguments, Mapping) else {}
        self.client.emit("interaction_start", self.interaction_id, request_data=request)

    def progress(self, data: Mapping[str, Any]) -> bool:
        if not isinstance(data, Mapping):
            logger.warning("mcplog.progress() takes a dict, got %s; ignored", type(data).__name__)
            return False
        with self._lock:
            if self._finished:  # e.g. a background task reporting after the call returned
                return False
            return self.client.emit("interaction_progress", self.interaction_id, progress_data=data)

    def sdk_progress(self, progress: Any, total: Any, message: Any) -> bool:
        return self.progress({"progress": progress, "total": total, "message": message})

    def complete(self, result_data: Mapping[str, Any]) -> None:
        self._finish("interaction_complete", result_data=result_data if self.capture_results else {})

    def fail(self, message: str, type_: str, code: int | None = None) -> None:
        error: dict[str, Any] = {"message": message, "type": type_}
        if code is not None:
            error["code"] = code
        self._finish("interaction_error", error_data=error)

    def fail_with(self, exc: BaseException) -> None:
        self.fail(*describe_exception(exc))

    def cancel(self, reason: str = "cancelled") -> None:
        self._finish("interaction_cancelled", cancel_data={"reason": reason})

    def _finish(self, action: str, **fields: Any) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self.client.emit(action, self.interaction_id, **fields)


def describe_exception(exc: BaseException) -> tuple[str, str, int | None]:
    """(message, type, JSON-RPC code or None) for error_data."""
    error = getattr(exc, "error", None)  # mcp's MCPError carries an ErrorData
    code = getattr(error, "code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        message = getattr(error, "message", None)
        return (message if isinstance(message, str) else str(exc)), type(exc).__name__, code
    if type(exc).__name__ == "ValidationError" and type(exc).__module__.startswith("pydantic"):
        return str(exc), type(exc).__name__, INVALID_PARAMS
    return (str(exc) or type(exc).__name__), type(exc).__name__, None


def is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, asyncio.CancelledError):
        return True
    try:  # trio's Cancelled, when the server runs on trio through anyio
        import anyio

        return isinstance(exc, anyio.get_cancelled_exc_class())
    except Exception:
        return False


async def run_tool_call(
    call: ToolCall,
    session: Any,
    invoke: Callable[[], Awaitable[T]],
    finish: Callable[[ToolCall, T], None],
) -> T:
    """Run ``invoke()`` (the SDK's call_next) as one interaction.

    ``finish`` turns the SDK's result into the end event (complete, or error
    for an ``isError`` result). Exceptions and cancellation are recorded and
    re-raised unchanged: the middleware observes, it never alters the call.
    """
    call.start()
    tap_session_progress(session)
    with running(call):
        try:
            result = await invoke()
        except BaseException as exc:
            if is_cancellation(exc):
                call.cancel()
            else:
                call.fail_with(exc)
            raise
    try:
        finish(call, result)
    except Exception:
        logger.exception("mcplog: could not record the result of tool %r", call.tool)
        call.complete({})  # still close the interaction
    return result


# ---- the SDK's own progress reports -------------------------------------------

_TAPPED = "_mcplog_progress_tapped"
_PROGRESS_METHODS = ("report_progress", "send_progress_notification")


def tap_session_progress(session: Any) -> None:
    """Record progress the tool reports through the SDK, as well as via
    ``mcplog.progress``.

    Both SDKs send it through ``mcp.server.session.ServerSession``:
    ``report_progress(progress, total, message)`` (mcp's ``Context``) and
    ``send_progress_notification(token, progress, total, message)`` (fastmcp's
    ``Context``). We wrap these two methods on the session *instance*; the
    wrapper looks up the call through the ContextVar at report time, so it is
    right even if a session were shared by concurrent calls, and it is left
    in place (idempotent) because the SDKs build one session per request.
    """
    if session is None or getattr(session, _TAPPED, False):
        return
    try:
        for name in _PROGRESS_METHODS:
            original = getattr(session, name, None)
            if original is not None and inspect.iscoroutinefunction(original):
                setattr(session, name, _progress_tap(original))
        setattr(session, _TAPPED, True)
    except Exception:  # an SDK change must not break tool calls
        logger.debug("mcplog: cannot observe SDK progress on %r", session, exc_info=True)


def _progress_tap(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    async def tapped(*args: Any, **kwargs: Any) -> Any:
        call = current_call()
        if isinstance(call, ToolCall):
            try:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                values = bound.arguments
                call.sdk_progress(values.get("progress"), values.get("total"), values.get("message"))
            except Exception:
                logger.debug("mcplog: could not read an SDK progress report", exc_info=True)
        return await original(*args, **kwargs)

    return tapped
