"""The SQLite ledger when another process holds the file (another worker's transaction): the
transaction is retried on the event loop, and waits on the ledger's thread only when the lock
outlasts the retries. Another connection's `BEGIN IMMEDIATE` stands in for the other process:
SQLite's locks are per connection."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.budget.sqlite import SqliteLedger
from tests.integration.test_ledger import make_config

pytestmark = pytest.mark.integration

BUDGET = [{"tenant": "*", "window": "day", "limit_usd": 0.5}]


class CountingExecutor(ThreadPoolExecutor):
    """The ledger's thread, counting the work handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SqliteLedger]:
    path = tmp_path / "ledger.sqlite3"
    config = make_config(BUDGET, backend="sqlite", path=path, url=None)
    opened = SqliteLedger(config, path)
    await opened.open()
    opened._executor = CountingExecutor()
    yield opened
    await opened.aclose()


def hold_lock(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as another worker's transaction has it
    return other


async def test_a_briefly_locked_file_is_retried_on_the_loop(ledger: SqliteLedger) -> None:
    executor = ledger._executor
    assert isinstance(executor, CountingExecutor)
    other = hold_lock(ledger.path)
    loop = asyncio.get_running_loop()
    loop.call_later(0.001, other.execute, "COMMIT")  # a short transaction elsewhere
    reservations = await asyncio.gather(*(ledger.reserve("acme", {}, 0.01) for _ in range(20)))
    assert len(reservations) == 20
    assert executor.submitted == 0  # nobody waited on the ledger's thread
    other.close()
    # Exact as ever: the 20 holds count against the budget.
    snapshot = await ledger.snapshot("acme", {}, ledger._clock())
    assert snapshot.utilization == pytest.approx(0.4)


async def test_a_lock_that_outlasts_the_retries_is_waited_for_on_the_thread(
    ledger: SqliteLedger,
) -> None:
    executor = ledger._executor
    assert isinstance(executor, CountingExecutor)
    other = hold_lock(ledger.path)
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, other.execute, "COMMIT")
    ticks = 0

    async def ticking() -> None:  # the loop keeps serving while the reservation waits
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(ticking())
    reservation = await ledger.reserve("acme", {}, 0.01)
    ticker.cancel()
    other.close()
    assert reservation.amount_usd == pytest.approx(0.01)
    assert executor.submitted >= 1
    assert ticks >= 10
