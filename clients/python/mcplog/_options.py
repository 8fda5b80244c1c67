"""The Client's limits: names, units, defaults and checks, in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._events import DEFAULT_PAYLOAD_BYTES_MAX

_MIB = 1024 * 1024
DEFAULT_QUEUE_MAX_BYTES = 16 * _MIB
DEFAULT_BATCH_MAX_BYTES = 1 * _MIB
# backoff_base and backoff_max below this would retry an unreachable server in
# a tight loop (a zero ceiling makes every backoff delay zero).
MIN_BACKOFF_SECONDS = 0.001


@dataclass(frozen=True)
class Limits:
    """Sizes in events or bytes; durations in seconds. See the package README."""

    queue_max_events: int = 10_000
    queue_max_bytes: int = DEFAULT_QUEUE_MAX_BYTES
    batch_max_events: int = 100
    batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES
    linger: float = 0.05
    request_timeout: float = 10.0
    backoff_base: float = 0.1
    backoff_max: float = 10.0
    exit_flush_timeout: float = 5.0
    payload_bytes_max: int = DEFAULT_PAYLOAD_BYTES_MAX

    def __post_init__(self) -> None:
        """ValueError naming the first limit out of its range."""
        for name in ("queue_max_events", "queue_max_bytes", "batch_max_events", "batch_max_bytes"):
            _check_size(name, getattr(self, name))
        _check_size("payload_bytes_max", self.payload_bytes_max)
        durations = ("linger", "request_timeout", "backoff_base", "backoff_max", "exit_flush_timeout")
        for name in durations:
            _check_seconds(name, getattr(self, name))
        for name in ("backoff_base", "backoff_max"):
            value = getattr(self, name)
            require(
                value >= MIN_BACKOFF_SECONDS,
                f"{name} must be at least {MIN_BACKOFF_SECONDS} seconds, got {value!r}",
            )
        for name in durations:
            object.__setattr__(self, name, float(getattr(self, name)))


def require(condition: object, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_size(name: str, value: object) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive int, got {value!r}",
    )


def _check_seconds(name: str, value: object) -> None:
    require(
        isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf,
        f"{name} must be a finite number of seconds >= 0, got {value!r}",
    )
