"""CPU-heavy request work off the event loop, bounded per tenant (DESIGN.md, invariant 7).

Inspecting a large request (megabytes of text through Hyperscan, the normalizer and the
analysis) takes from tens of milliseconds to seconds. On the event loop that time is taken
from every other caller; on a worker thread the loop keeps serving: Hyperscan's scan and the
other C parts release the GIL, and Python's switch interval (lowered to 1 ms here) hands the
loop the GIL between the pure-Python steps. One worker is the default: each further worker
is one more thread the loop competes with for the GIL. Small requests stay inline, where a
thread hop would cost more than the work.

Each tenant may have at most `max_inflight_chars` characters of large requests waiting for
or in inspection; more is refused with RESOURCE_EXHAUSTED (a retryable rate limit), so one
caller sending many large requests queues up behind itself, not in front of everybody.
A request is counted until its inspection ends, even when its caller went away meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from gateway.config import LimitsConfig
from gateway.errors import RateLimited, Reason

T = TypeVar("T")

LIMIT_NAME: Final = "limits.max_inflight_chars_per_tenant"
SWITCH_INTERVAL_S: Final = 0.001
# What a refused caller is told to wait: large inspections take about this long.
_RETRY_AFTER_S: Final = 1.0


class Offloader:
    """Runs a callable inline (small input) or on the worker pool (large input)."""

    def __init__(
        self,
        *,
        min_chars: int,
        max_inflight_chars: int,
        workers: int,
        inline: bool = False,
    ) -> None:
        self.min_chars = min_chars
        self.max_inflight_chars = max_inflight_chars
        # inline=True runs everything on the loop (the benchmark's "before" column).
        self.inline = inline
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="celgate-cpu")
        if not inline and sys.getswitchinterval() > SWITCH_INTERVAL_S:
            # While a worker computes in Python, the event loop's thread waits up to the
            # interpreter's switch interval (5 ms by default) for the GIL at every step of
            # every other request; 1 ms keeps those steps short (measured by the stall bench).
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._inflight: dict[str, int] = {}

    @classmethod
    def from_config(cls, limits: LimitsConfig, *, inline: bool = False) -> Offloader:
        return cls(
            min_chars=limits.offload_min_chars,
            max_inflight_chars=limits.max_inflight_chars_per_tenant,
            workers=limits.inspection_workers,
            inline=inline,
        )

    def inflight(self, tenant: str) -> int:
        """Characters of `tenant`'s large requests being inspected now."""
        return self._inflight.get(tenant, 0)

    def _admit(self, tenant: str, size: int) -> None:
        held = self._inflight.get(tenant, 0)
        # A single request above the bound is admitted when nothing else of the tenant is in
        # flight (request size is limited separately), so it is never refused forever.
        if held and held + size > self.max_inflight_chars:
            raise RateLimited(
                f"tenant {tenant!r} has {held} characters of large requests in inspection;"
                f" the limit is {self.max_inflight_chars} ({LIMIT_NAME}). Retry when earlier"
                " requests have finished",
                retry_after_s=_RETRY_AFTER_S,
                reason=Reason.INFLIGHT_LIMIT,
                tenant=tenant,
                limit=LIMIT_NAME,
            )
        self._inflight[tenant] = held + size

    def _release(self, tenant: str, size: int) -> None:
        left = self._inflight.get(tenant, 0) - size
        if left > 0:
            self._inflight[tenant] = left
        else:
            self._inflight.pop(tenant, None)

    async def run(self, tenant: str, size: int, fn: Callable[[], T]) -> T:
        """`fn()` inline when `size` (characters) is small, else on a worker thread, counted
        against `tenant`'s in-flight bound. Raises RateLimited over the bound."""
        if self.inline or size < self.min_chars:
            return fn()
        self._admit(tenant, size)
        loop = asyncio.get_running_loop()
        # The caller's context (its span, its decision record) goes with the work.
        call = functools.partial(contextvars.copy_context().run, fn)
        try:
            work = self._pool.submit(call)
        except BaseException:
            self._release(tenant, size)
            raise

        # Released when the work ends (or is dropped from the queue), not when the caller
        # stops waiting: a cancelled request still occupies a worker until its inspection
        # finishes.
        def done(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                loop.call_soon_threadsafe(self._release, tenant, size)

        work.add_done_callback(done)
        return await asyncio.wrap_future(work)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
