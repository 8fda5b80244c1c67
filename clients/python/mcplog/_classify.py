"""What to do after each attempt to send a batch: the retry rules, and the backoff.

Pure functions of the answer (no I/O, no client state), so that the rules can be
checked case by case: ``clients/retry-cases.json`` is a table of cases that this
package's suite and the TypeScript package's suite both run, which keeps the two
packages' rules the same.

The rule in one line: retry only what the server did not decide on; what it
refused (a 4xx) is refused for good, because the same bytes would be refused again.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from typing import Any

# Retry-After's two forms: delta-seconds ("120", also "1.5") and an HTTP-date in
# the form every sender generates ("Wed, 21 Oct 2026 07:28:00 GMT"). Anything
# else is ignored (the normal backoff applies).
_DELTA_SECONDS = re.compile(r"\d+(\.\d+)?")
_HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")
# A longer Retry-After counts as this long: a proxy's "come back in a year" (or
# a number too large for a float) must not stop delivery for good.
RETRY_AFTER_MAX_SECONDS = 24 * 60 * 60


@dataclass(frozen=True)
class Refusal:
    """One event refused for good, by its index in the batch sent."""

    index: int
    http_status: int | None
    code: str | None
    message: str | None
    field: str | None


@dataclass(frozen=True)
class Settled:
    """The server decided: these events are delivered (stored, or duplicates of
    stored ones), these refused, and these were not stored and go again (an
    all-or-nothing refusal that named the others)."""

    delivered: tuple[int, ...] = ()
    rejected: tuple[Refusal, ...] = ()
    resend: tuple[int, ...] = ()


@dataclass(frozen=True)
class Retry:
    """Nothing was decided: send the same bytes again, not before ``retry_after`` seconds."""

    reason: str
    retry_after: float | None = None


@dataclass(frozen=True)
class Split:
    """413 for a batch of several events: the server's limit is lower than ours."""


@dataclass(frozen=True)
class PartialUnsupported:
    """A server older than ``?partial=true``: send batches all-or-nothing from now on."""


Decision = Settled | Retry | Split | PartialUnsupported


def classify(status: int, retry_after: float | None, body: Any, count: int, partial: bool) -> Decision:
    """The decision for a complete answer to a batch of ``count`` events."""
    if status == 207:
        return _classify_partial(body, count, retry_after)
    if 200 <= status < 300:
        return Settled(delivered=tuple(range(count)))
    if status in (408, 429) or status >= 500 or status < 200 or 300 <= status < 400:
        # 429/503: "come back later"; 408: a timeout; other 5xx (507 disk full, a
        # proxy's 502/504) are not about the events. The server never answers
        # 1xx or 3xx: such an answer is a proxy's or a wrong URL's, and decides
        # nothing (a redirect is not followed: a POST would become a GET).
        hint = " (redirects are not followed: check the url)" if 300 <= status < 400 else ""
        code = _error(body).get("code") or "no error code"
        return Retry(f"HTTP {status} {code}{hint}", retry_after)
    if status == 413 and count > 1:
        return Split()
    error = _error(body)
    if status == 400 and partial and error.get("field") == "partial":
        return PartialUnsupported()
    if not partial and status in (403, 409, 422):
        listed = _listed_refusals(body, error, status, count)
        if listed:
            named = {refusal.index for refusal in listed}
            rest = tuple(i for i in range(count) if i not in named)
            return Settled(rejected=listed, resend=rest)
    # Any other 4xx (401 bad key, 403 role, 400, a 4xx naming no event): the
    # same request would be refused again, so every event of it is refused.
    return Settled(rejected=tuple(_refusal(i, status, error) for i in range(count)))


def classify_failure(error: BaseException) -> Retry:
    """No complete answer (refused, reset, timed out, closed early, an answer too
    large to be the server's): the server may or may not have stored the batch,
    and resending is safe, since a stored event comes back as a duplicate."""
    return Retry(f"{type(error).__name__}: {error}")


def _classify_partial(body: Any, count: int, retry_after: float | None) -> Decision:
    """A 207: one result per event, each naming its event's index."""
    by_index = _results_by_index(body, count)
    if by_index is None:
        return Retry("HTTP 207 without one result per event", retry_after)
    delivered, rejected = [], []
    for index in range(count):
        result = by_index[index]
        if result.get("status") in ("stored", "duplicate"):
            delivered.append(index)
        else:
            status = result.get("http_status")
            rejected.append(_refusal(index, status if isinstance(status, int) else None, _error(result)))
    return Settled(delivered=tuple(delivered), rejected=tuple(rejected))


def _results_by_index(body: Any, count: int) -> dict[int, dict[str, Any]] | None:
    """The 207's results by index, or None unless there is exactly one (an
    object with an int index in range) per event sent."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != count:
        return None
    by_index: dict[int, dict[str, Any]] = {}
    for result in results:
        index = result.get("index") if isinstance(result, dict) else None
        if not _is_int(index) or not 0 <= index < count or index in by_index:
            return None
        by_index[index] = result
    return by_index


def _listed_refusals(body: Any, error: dict[str, Any], status: int, count: int) -> tuple[Refusal, ...]:
    """All-or-nothing mode: the events a 403/409/422 names by index (it stored
    nothing). Indexes out of range are ignored: naming none of the events sent
    must refuse them all, or the batch would be resent unchanged forever."""
    lists = [body.get("errors") if isinstance(body, dict) else None, error.get("errors")]
    found: dict[int, Refusal] = {}
    for entries in lists:
        for entry in entries if isinstance(entries, list) else ():
            index = entry.get("index") if isinstance(entry, dict) else None
            if _is_int(index) and 0 <= index < count:
                found[index] = _refusal(index, status, entry)
    return tuple(found[i] for i in sorted(found))


def _refusal(index: int, http_status: int | None, error: dict[str, Any]) -> Refusal:
    return Refusal(
        index=index,
        http_status=http_status,
        code=_str_or_none(error.get("code")),
        message=_str_or_none(error.get("message")),
        field=_str_or_none(error.get("field")),
    )


def _error(body: Any) -> dict[str, Any]:
    """The mcplog error object of an answer (or of a 207 result), or {}."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (``now``: the wall clock, in
    seconds since the epoch, for the HTTP-date form); None when absent or not
    one of its two forms."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), RETRY_AFTER_MAX_SECONDS)
    if not _HTTP_DATE.fullmatch(text):
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):  # e.g. "Feb 31"
        return None
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_MAX_SECONDS)


def backoff_delay(
    attempt: int, base: float, ceiling: float, retry_after: float | None, fraction: float
) -> float:
    """Seconds before retry ``attempt`` (from 1): exponential backoff with full
    jitter (``fraction`` is uniform in [0, 1)), so that clients retrying against a
    recovering server spread out; never sooner than Retry-After."""
    cap = min(ceiling, base * 2 ** min(attempt - 1, 32))
    return max(fraction * cap, retry_after or 0.0)
