"""The gateway's two time sources, as injectable types (tests pass fixed or stepping clocks).

`Clock` tells the date: budget windows, the policy's `now`, the decision log's time. `Seconds`
measures intervals on a fixed scale: `time.monotonic` within one process (breakers, in-process
rate limits), `time.time` where processes must agree (the Redis rate limiter).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
Seconds = Callable[[], float]


def utc_now() -> datetime:
    return datetime.now(UTC)
