"""The off-loop executor: small work inline, large work on a worker thread while the event
loop keeps running, and a per-tenant bound on characters in flight."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.errors import RateLimited
from gateway.offload import Offloader


def _offloader(**kw: int) -> Offloader:
    args = {"min_chars": 100, "max_inflight_chars": 1000, "workers": 2, **kw}
    return Offloader(**args)


def _busy(seconds: float) -> int:
    """Pure-Python CPU work holding the GIL between switch intervals."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


async def test_small_inline_large_on_a_worker() -> None:
    offloader = _offloader()
    here = threading.get_ident()
    try:
        assert await offloader.run("t", 10, threading.get_ident) == here
        assert await offloader.run("t", 500, threading.get_ident) != here
        inline = Offloader(min_chars=100, max_inflight_chars=1000, workers=1, inline=True)
        assert await inline.run("t", 500, threading.get_ident) == here
        inline.close()
    finally:
        offloader.close()


async def test_the_loop_keeps_serving_while_large_work_runs() -> None:
    offloader = _offloader()
    gaps: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(stop))
    try:
        await offloader.run("t", 500, lambda: _busy(0.6))
    finally:
        stop.set()
        await tick
        offloader.close()
    # 0.6 s of CPU work, yet the loop ran every few milliseconds (inline: one 600 ms gap).
    assert len(gaps) > 20
    assert max(gaps) < 0.2, max(gaps)


async def test_inflight_characters_are_bounded_per_tenant() -> None:
    offloader = _offloader(max_inflight_chars=1000)
    release = threading.Event()
    try:
        first = asyncio.ensure_future(offloader.run("a", 600, lambda: release.wait(5)))
        await asyncio.sleep(0.05)
        assert offloader.inflight("a") == 600
        with pytest.raises(RateLimited) as refused:
            await offloader.run("a", 600, lambda: None)
        assert "limits.max_inflight_chars_per_tenant" in refused.value.message
        assert refused.value.reason == "INFLIGHT_LIMIT"
        # Another tenant is not held up by tenant a.
        assert await offloader.run("b", 600, lambda: "b ran") == "b ran"
        release.set()
        assert await first is True
        await asyncio.sleep(0.01)
        assert offloader.inflight("a") == 0
        # A single request above the bound passes when the tenant has nothing in flight.
        assert await offloader.run("a", 5000, lambda: "big") == "big"
    finally:
        release.set()
        offloader.close()


async def test_a_cancelled_caller_stays_counted_until_the_work_ends() -> None:
    offloader = _offloader()
    release = threading.Event()
    try:
        task = asyncio.ensure_future(offloader.run("a", 600, lambda: release.wait(5)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert offloader.inflight("a") == 600  # the worker is still busy with it
        release.set()
        for _ in range(100):
            if offloader.inflight("a") == 0:
                break
            await asyncio.sleep(0.01)
        assert offloader.inflight("a") == 0
    finally:
        release.set()
        offloader.close()
