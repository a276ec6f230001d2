"""The budget ledger against real backends: an SQLite file and a real redis-server on loopback."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.budget import Ledger, open_ledger
from gateway.budget.report import run_costs
from gateway.config import Config, LabelsConfig, parse_config
from gateway.errors import BudgetExhausted
from tests.support.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
CENT = 0.01

OpenLedger = Callable[..., AbstractAsyncContextManager[Ledger]]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_config(
    budgets: list[dict[str, Any]], *, backend: str, path: Path, url: str | None, ttl: float = 900
) -> Config:
    ledger: dict[str, Any] = {"backend": backend, "path": str(path), "reservation_ttl_s": ttl}
    if url:
        ledger["url"] = url
    return parse_config(
        {
            "models": {
                "m": {
                    "provider": "openai",
                    "upstream_model": "gpt-5-mini",
                    "base_url": "https://api.openai.com/v1",
                    "location": "cloud",
                    "clearance": "INTERNAL",
                }
            },
            "default_model": "m",
            "budgets": budgets,
            "ledger": ledger,
        }
    )


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    # One server for the module; each test flushes it (starting one per test costs ~50 ms).
    with running_redis() as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Path, str | None]]:
    if request.param == "sqlite":
        yield "sqlite", tmp_path / "var" / "ledger.sqlite3", None
        return
    server: RedisServer = request.getfixturevalue("shared_redis")
    import redis

    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    yield "redis", tmp_path / "unused.sqlite3", server.url


@pytest.fixture
def ledger_factory(backend: tuple[str, Path, str | None]) -> OpenLedger:
    kind, path, url = backend

    @asynccontextmanager
    async def factory(
        budgets: list[dict[str, Any]],
        *,
        clock: Callable[[], datetime] | None = None,
        ttl: float = 900,
    ) -> AsyncIterator[Ledger]:
        config = make_config(budgets, backend=kind, path=path, url=url, ttl=ttl)
        ledger = await open_ledger(config, clock=clock or FakeClock(T0))
        try:
            yield ledger
        finally:
            await ledger.aclose()

    return factory


HALF_DOLLAR = [{"tenant": "*", "window": "day", "limit_usd": 0.5}]


async def test_200_concurrent_reservations_at_most_50_succeed(ledger_factory: OpenLedger) -> None:
    async with ledger_factory(HALF_DOLLAR) as ledger:

        async def attempt() -> bool:
            try:
                await ledger.reserve("acme", {}, CENT)
            except BudgetExhausted:
                return False
            return True

        results = await asyncio.gather(*(attempt() for _ in range(200)))
        assert sum(results) == 50
        state = await ledger.snapshot("acme", {})
        assert state.reserved_usd == pytest.approx(0.5)
        assert state.remaining_usd == 0
        assert state.utilization == pytest.approx(1.0)


async def test_exhausted_error_names_the_budget(ledger_factory: OpenLedger) -> None:
    budgets = [{"tenant": "*", "label": "team", "window": "month", "limit_usd": 1.0}]
    async with ledger_factory(budgets) as ledger:
        reservation = await ledger.reserve("acme", {"team": "search"}, 0.9)
        await ledger.settle(reservation, 0.95, "m", "chat")
        with pytest.raises(BudgetExhausted) as exc:
            await ledger.reserve("acme", {"team": "search"}, 0.1)
    err = exc.value
    assert err.subject == "tenant:acme/label:team=search"
    assert err.reason == "BUDGET_EXHAUSTED"
    assert "monthly budget exhausted for tenant acme, label team=search" in err.message
    assert err.metadata["resets_at"] == "2025-04-01T00:00:00+00:00"
    assert float(err.metadata["remaining_usd"]) == pytest.approx(0.05)


async def test_settle_replaces_the_reservation(ledger_factory: OpenLedger) -> None:
    async with ledger_factory(HALF_DOLLAR) as ledger:
        reservation = await ledger.reserve("acme", {}, 0.2)
        assert (await ledger.snapshot("acme", {})).reserved_usd == pytest.approx(0.2)
        assert await ledger.settle(reservation, 0.05, "m", "chat")
        state = await ledger.snapshot("acme", {})
        assert (state.spent_usd, state.reserved_usd) == (pytest.approx(0.05), 0)
        assert state.remaining_usd == pytest.approx(0.45)
        # Settling twice charges once.
        assert not await ledger.settle(reservation, 0.05, "m", "chat")
        assert (await ledger.snapshot("acme", {})).spent_usd == pytest.approx(0.05)


async def test_release_gives_the_reservation_back(ledger_factory: OpenLedger) -> None:
    async with ledger_factory(HALF_DOLLAR) as ledger:
        reservation = await ledger.reserve("acme", {}, 0.5)
        with pytest.raises(BudgetExhausted):
            await ledger.reserve("acme", {}, CENT)
        await ledger.release(reservation)
        state = await ledger.snapshot("acme", {})
        assert (state.spent_usd, state.reserved_usd) == (0, 0)
        await ledger.reserve("acme", {}, 0.5)


async def test_unsettled_reservations_expire(ledger_factory: OpenLedger) -> None:
    clock = FakeClock(T0)
    async with ledger_factory(HALF_DOLLAR, clock=clock, ttl=60) as ledger:
        await ledger.reserve("acme", {}, 0.5)  # the replica that made it crashes
        with pytest.raises(BudgetExhausted):
            await ledger.reserve("acme", {}, CENT)
        clock.now = T0 + timedelta(seconds=61)
        assert (await ledger.snapshot("acme", {})).reserved_usd == 0
        await ledger.reserve("acme", {}, 0.5)


async def test_late_settle_after_expiry_still_charges(ledger_factory: OpenLedger) -> None:
    clock = FakeClock(T0)
    async with ledger_factory(HALF_DOLLAR, clock=clock, ttl=60) as ledger:
        reservation = await ledger.reserve("acme", {}, 0.3)
        clock.now = T0 + timedelta(seconds=120)
        assert await ledger.settle(reservation, 0.1, "m", "chat")
        state = await ledger.snapshot("acme", {})
        assert (state.spent_usd, state.reserved_usd) == (pytest.approx(0.1), 0)


async def test_day_window_rolls_over_at_utc_midnight(ledger_factory: OpenLedger) -> None:
    clock = FakeClock(datetime(2025, 3, 14, 23, 59, 59, tzinfo=UTC))
    async with ledger_factory(HALF_DOLLAR, clock=clock) as ledger:
        await ledger.settle(await ledger.reserve("acme", {}, 0.5), 0.5, "m", "chat")
        with pytest.raises(BudgetExhausted):
            await ledger.reserve("acme", {}, CENT)
        clock.now = datetime(2025, 3, 15, 0, 0, 0, tzinfo=UTC)
        state = await ledger.snapshot("acme", {})
        assert (state.spent_usd, state.utilization, state.window) == (0, 0, "day")
        await ledger.reserve("acme", {}, 0.5)


async def test_month_window_rolls_over_at_new_year(ledger_factory: OpenLedger) -> None:
    budgets = [{"tenant": "*", "window": "month", "limit_usd": 1.0}]
    clock = FakeClock(datetime(2025, 12, 31, 23, 0, tzinfo=UTC))
    async with ledger_factory(budgets, clock=clock) as ledger:
        await ledger.settle(await ledger.reserve("acme", {}, 1.0), 1.0, "m", "chat")
        clock.now = datetime(2025, 12, 1, 0, 0, tzinfo=UTC) + timedelta(days=30, hours=23)
        with pytest.raises(BudgetExhausted):
            await ledger.reserve("acme", {}, CENT)
        clock.now = datetime(2026, 1, 1, tzinfo=UTC)
        assert (await ledger.snapshot("acme", {})).spent_usd == 0
        # Boundaries are UTC: 2026-01-01 01:00+02:00 is still December 31st in UTC.
        plus_two = datetime.fromisoformat("2026-01-01T01:00:00+02:00")
        assert (await ledger.snapshot("acme", {}, plus_two)).spent_usd == pytest.approx(1.0)


async def test_soft_budget_allows_and_flags(ledger_factory: OpenLedger) -> None:
    budgets = [{"tenant": "*", "window": "day", "limit_usd": 0.1, "mode": "soft"}]
    async with ledger_factory(budgets) as ledger:
        within = await ledger.reserve("acme", {}, 0.1)
        assert not within.over_soft_limit
        beyond = await ledger.reserve("acme", {}, 0.05)
        assert beyond.over_soft_limit
        state = await ledger.snapshot("acme", {})
        assert not state.hard
        assert state.utilization == pytest.approx(1.5)


async def test_free_model_passes_an_exhausted_budget(ledger_factory: OpenLedger) -> None:
    async with ledger_factory(HALF_DOLLAR) as ledger:
        await ledger.settle(await ledger.reserve("acme", {}, 0.5), 0.6, "m", "chat")
        reservation = await ledger.reserve("acme", {}, 0.0)
        assert reservation.amount_usd == 0
        assert await ledger.settle(reservation, 0.0, "llama-local", "chat")
        await ledger.release(reservation)


async def test_no_budget_means_unlimited_but_recorded(ledger_factory: OpenLedger) -> None:
    async with ledger_factory([]) as ledger:
        state = await ledger.snapshot("acme", {})
        assert not state.limited and state.utilization == 0
        reservation = await ledger.reserve("acme", {}, 1e6)
        await ledger.settle(reservation, 2.5, "m", "code_generation")
        [charge] = await ledger.charges()
        assert (charge.tenant, charge.model, charge.cost_usd) == ("acme", "m", 2.5)


async def test_tenant_budget_overrides_the_default(ledger_factory: OpenLedger) -> None:
    budgets = [
        {"tenant": "*", "window": "day", "limit_usd": 0.1},
        {"tenant": "big", "window": "day", "limit_usd": 10.0},
        {"tenant": "*", "window": "month", "limit_usd": 5.0},
    ]
    async with ledger_factory(budgets) as ledger:
        await ledger.reserve("big", {}, 1.0)  # the day default of $0.10 does not apply
        with pytest.raises(BudgetExhausted):
            await ledger.reserve("small", {}, 1.0)
        with pytest.raises(BudgetExhausted) as exc:  # the monthly default still applies
            await ledger.reserve("big", {}, 4.5)
        assert "monthly" in exc.value.message
        # Tenants do not share a "*" budget: each gets its own.
        await ledger.reserve("other", {}, 0.1)


async def test_label_budgets_track_each_value(ledger_factory: OpenLedger) -> None:
    budgets = [{"tenant": "acme", "label": "project", "window": "day", "limit_usd": 0.1}]
    async with ledger_factory(budgets) as ledger:
        await ledger.reserve("acme", {"project": "a"}, 0.1)
        await ledger.reserve("acme", {"project": "b"}, 0.1)
        with pytest.raises(BudgetExhausted):
            await ledger.reserve("acme", {"project": "a"}, CENT)
        # Leaving the label out does not escape the budget: unlabeled requests share one.
        await ledger.reserve("acme", {}, 0.1)
        with pytest.raises(BudgetExhausted):
            await ledger.reserve("acme", {"other": "x"}, CENT)
        assert (await ledger.snapshot("acme", {"project": "b"})).utilization == pytest.approx(1)
        assert not (await ledger.snapshot("zeta", {})).limited


async def test_snapshot_reports_the_tightest_budget(ledger_factory: OpenLedger) -> None:
    budgets = [
        {"tenant": "*", "window": "day", "limit_usd": 1.0, "mode": "soft"},
        {"tenant": "*", "window": "month", "limit_usd": 2.0},
    ]
    async with ledger_factory(budgets) as ledger:
        await ledger.settle(await ledger.reserve("acme", {}, 0.5), 0.5, "m", "chat")
        state = await ledger.snapshot("acme", {})
        assert (state.window, state.hard, state.limit_usd) == ("day", False, 1.0)
        assert state.utilization == pytest.approx(0.5)


async def test_spend_survives_restart(ledger_factory: OpenLedger) -> None:
    async with ledger_factory(HALF_DOLLAR) as ledger:
        await ledger.settle(await ledger.reserve("acme", {}, 0.3), 0.25, "m", "chat")
    async with ledger_factory(HALF_DOLLAR) as ledger:
        assert (await ledger.snapshot("acme", {})).spent_usd == pytest.approx(0.25)
        assert len(await ledger.charges()) == 1


async def test_redis_spend_survives_a_server_restart(tmp_path: Path) -> None:
    with running_redis(persistent=True) as server:
        config = make_config(HALF_DOLLAR, backend="redis", path=tmp_path / "x", url=server.url)
        ledger = await open_ledger(config, clock=FakeClock(T0))
        await ledger.settle(await ledger.reserve("acme", {}, 0.3), 0.25, "m", "chat")
        held = await ledger.reserve("acme", {}, 0.1)
        await ledger.aclose()

        server.restart()

        ledger = await open_ledger(config, clock=FakeClock(T0))
        try:
            state = await ledger.snapshot("acme", {})
            assert state.spent_usd == pytest.approx(0.25)
            assert state.reserved_usd == pytest.approx(0.1)
            await ledger.release(held)
            assert (await ledger.snapshot("acme", {})).reserved_usd == 0
        finally:
            await ledger.aclose()


async def test_sqlite_creates_the_folder_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "ledger.sqlite3"
    config = make_config(HALF_DOLLAR, backend="sqlite", path=path, url=None)
    ledger = await open_ledger(config)
    await ledger.aclose()
    import sqlite3

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


async def test_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    from gateway.errors import Unavailable
    from tests.support.redis_server import _free_port

    url = f"redis://:s3cret@127.0.0.1:{_free_port()}/0"
    config = make_config(HALF_DOLLAR, backend="redis", path=tmp_path / "x", url=url)
    with pytest.raises(Unavailable) as exc:
        await open_ledger(config)
    assert "ledger.url" in exc.value.message
    assert "s3cret" not in exc.value.message


# Two OS processes, each with its own ledger, racing for one budget.
_CHILD = """
import asyncio, sys, time
from gateway.budget import open_ledger
from gateway.config import parse_config
from gateway.errors import BudgetExhausted
import json

config = parse_config(json.loads(sys.argv[1]))
start_at = float(sys.argv[2])

async def main():
    ledger = await open_ledger(config)
    async def attempt():
        try:
            await ledger.reserve("acme", {}, 0.01)
            return 1
        except BudgetExhausted:
            return 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    results = await asyncio.gather(*(attempt() for _ in range(100)))
    await ledger.aclose()
    print(sum(results))

asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_two_processes_hold_the_limit_together(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import json

    ledger: dict[str, Any] = {"backend": kind, "path": str(tmp_path / "ledger.sqlite3")}
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("shared_redis")
        import redis

        client = redis.Redis.from_url(server.url)
        client.flushall()
        client.close()
        ledger["url"] = server.url
    raw = {
        "models": {
            "m": {
                "provider": "ollama",
                "upstream_model": "llama3.1:8b",
                "base_url": "http://127.0.0.1:11434",
                "location": "on_prem",
                "clearance": "RESTRICTED",
            }
        },
        "default_model": "m",
        "budgets": HALF_DOLLAR,
        "ledger": ledger,
    }
    start_at = time.time() + 3.0  # both children are imported and connected by then
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(raw), str(start_at)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    counts = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        counts.append(int(out.strip()))
    assert sum(counts) == 50, counts


async def test_costs_report(
    ledger_factory: OpenLedger, backend: tuple[str, Path, str | None]
) -> None:
    clock = FakeClock(datetime(2025, 3, 1, tzinfo=UTC))
    async with ledger_factory([], clock=clock) as ledger:
        for tenant, model, task, cost, day in [
            ("acme", "gpt-5.5", "code_generation", 0.30, 1),
            ("acme", "claude-opus", "planning", 0.50, 2),
            ("zeta", "gpt-5.5", "chat", 0.10, 3),
            ("zeta", "gpt-5.5", "chat", 0.05, 10),
        ]:
            clock.now = datetime(2025, 3, day, 12, tzinfo=UTC)
            await ledger.settle(await ledger.reserve(tenant, {}, cost), cost, model, task)

    kind, path, url = backend
    config = make_config([], backend=kind, path=path, url=url)
    out, err = io.StringIO(), io.StringIO()
    # run_costs runs its own event loop: call it from a worker thread, as the CLI would.
    status = await asyncio.to_thread(run_costs, config, None, "model", out, err)
    assert status == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["MODEL", "REQUESTS", "COST_USD"]
    assert lines[1].split() == ["claude-opus", "1", "0.500000"]
    assert lines[2].split() == ["gpt-5.5", "3", "0.450000"]
    assert lines[-1].split() == ["TOTAL", "4", "0.950000"]

    out = io.StringIO()
    status = await asyncio.to_thread(run_costs, config, "2025-03-02", "tenant", out, err)
    assert status == 0
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert rows[1] == ["acme", "1", "0.500000"]
    assert rows[2] == ["zeta", "2", "0.150000"]

    err = io.StringIO()
    assert await asyncio.to_thread(run_costs, config, "last tuesday", "tenant", out, err) == 2
    assert "--since" in err.getvalue() and "2025-01-31" in err.getvalue()
    assert await asyncio.to_thread(run_costs, config, None, "colour", out, err) == 2
    assert "--by must be one of tenant, model, task_type" in err.getvalue()


async def test_costs_report_by_a_promoted_label(
    ledger_factory: OpenLedger, backend: tuple[str, Path, str | None]
) -> None:
    clock = FakeClock(datetime(2025, 3, 1, tzinfo=UTC))
    async with ledger_factory([], clock=clock) as ledger:
        for minute, labels, cost in [
            (1, {"project": "atlas", "team": "core"}, 0.30),
            (2, {"project": "borealis"}, 0.20),
            (3, {"project": "atlas"}, 0.10),
            (4, {"team": "core"}, 0.05),  # no project label
            (5, {"project": "cygnus"}, 0.04),  # beyond the cap of two values
            (6, {"project": "jane.roe@acme-corp.io"}, 0.02),  # content never becomes a row
        ]:
            clock.now = datetime(2025, 3, 1, 12, minute, tzinfo=UTC)
            await ledger.settle(await ledger.reserve("acme", labels, cost), cost, "m", "chat")

    kind, path, url = backend
    config = make_config([], backend=kind, path=path, url=url)
    config = config.model_copy(
        update={
            "telemetry": config.telemetry.model_copy(
                update={"labels": LabelsConfig(promote=["project"], max_values=2)}
            )
        }
    )
    out, err = io.StringIO(), io.StringIO()
    status = await asyncio.to_thread(run_costs, config, None, "label:project", out, err)
    assert status == 0, err.getvalue()
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert rows[0] == ["LABEL:PROJECT", "REQUESTS", "COST_USD"]
    assert rows[1:5] == [
        ["atlas", "2", "0.400000"],
        ["borealis", "1", "0.200000"],
        ["other", "2", "0.060000"],
        ["(none)", "1", "0.050000"],
    ]
    assert rows[-1] == ["TOTAL", "6", "0.710000"]
    assert "jane.roe" not in out.getvalue()

    # A label the operator did not promote is refused, saying where to promote it.
    err = io.StringIO()
    assert await asyncio.to_thread(run_costs, config, None, "label:team", out, err) == 2
    assert "'team' is not promoted (telemetry.labels.promote lists: project)" in err.getvalue()
