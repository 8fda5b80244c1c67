"""Rate-limited warnings, so a failure that repeats per event (a full queue, a
server outage) cannot flood the application's log."""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("mcplog")

# At most one warning per key per this many seconds; the rest are counted and
# the count is reported with the next warning that gets through.
WARN_INTERVAL_SECONDS = 10.0


class RateLimitedWarner:
    def __init__(self, interval: float = WARN_INTERVAL_SECONDS) -> None:
        self._interval = interval
        # Re-entrant: a signal handler may warn while this thread is inside
        # warn(). The rate limit is best effort, so such an interleaving may at
        # worst log one warning too many or miscount the suppressed ones.
        self._lock = threading.RLock()
        # key -> (monotonic time of the last warning logged, suppressed since)
        self._state: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._state.get(key, (float("-inf"), 0))
            if now - last < self._interval:
                self._state[key] = (last, suppressed + 1)
                return
            self._state[key] = (now, 0)
        if suppressed:
            message += " (%d similar warnings suppressed)"
            args = (*args, suppressed)
        logger.warning(message, *args)
