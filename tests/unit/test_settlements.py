"""Settlements run after the answer and shutdown waits for them; a failed one is logged by
kind, never raised into a finished request."""

from __future__ import annotations

import asyncio

import pytest

from gateway.budget.charging import Settlements


async def test_drain_waits_for_pending_settlements() -> None:
    settlements = Settlements()
    done: list[str] = []

    async def settle(name: str, delay: float) -> bool:
        await asyncio.sleep(delay)
        done.append(name)
        return True

    settlements.start(settle("slow", 0.05))
    settlements.start(settle("fast", 0.0))
    assert done == []  # nothing ran yet: the caller's answer goes first
    await settlements.drain()
    assert sorted(done) == ["fast", "slow"]


async def test_a_failed_settlement_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    settlements = Settlements()

    async def broken() -> bool:
        raise ConnectionError("redis://:secret@10.0.0.1")

    settlements.start(broken())
    await settlements.drain()
    assert "settling a charge failed (ConnectionError)" in caplog.text
    assert "secret" not in caplog.text
