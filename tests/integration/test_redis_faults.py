"""The shared ledger under faults, with a real redis-server: a frozen Redis (SIGSTOP) fails
Route and Chat within the Redis timeout and the gateway recovers on SIGCONT; Redis going away
between reserve and settle leaves no answered call uncharged (the local journal is replayed
when Redis is back, by the same process or by the next one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.budget.ledger import NANOS_PER_USD
from gateway.budget.redis import RedisLedger
from gateway.config import parse_config
from gateway.v1 import gateway_pb2 as pb
from tests.fakes._server import Reply
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import ROOT, config_data, make_config, openai_model, serve
from tests.support.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

# $1 per million output tokens, input free: 1,000 output tokens cost exactly $0.001.
PRICE = {"input_per_mtok": 0.0, "output_per_mtok": 1.0}


@pytest.fixture
def cloud() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    with running_redis(persistent=True) as server:
        yield server


def redis_config(url: str, redis_url: str, tmp: Path, **top: Any) -> dict[str, Any]:
    data = config_data(
        {"cloud": openai_model(url, price=PRICE)},
        "cloud",
        budgets=[{"tenant": "*", "window": "day", "limit_usd": 100.0}],
        ledger={
            "backend": "redis",
            "url": redis_url,
            "redis_timeout_s": 0.25,
            "journal_path": str(tmp / "journal.sqlite3"),
        },
        **top,
    )
    return data


def _config(data: dict[str, Any]) -> Any:
    return make_config(data["models"], data["default_model"], **_rest(data))


def _rest(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("models", "default_model")}


def chat(max_tokens: int = 1000) -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="hi")],
        preferred_model="cloud",
        max_tokens=max_tokens,
    )


def route() -> pb.RouteRequest:
    return pb.RouteRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="hi")], preferred_model="cloud"
    )


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def _timed(call: Any) -> tuple[float, grpc.StatusCode, str]:
    start = time.monotonic()
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return time.monotonic() - start, exc.code(), exc.details() or ""
    return time.monotonic() - start, grpc.StatusCode.OK, ""


async def test_frozen_redis_fails_route_and_chat_fast_then_recovers(
    cloud: FakeOpenAI, redis_server: RedisServer, tmp_path: Path
) -> None:
    data = redis_config(
        cloud.url,
        redis_server.url,
        tmp_path,
        tenants={"default": {"rate_limit": {"requests_per_minute": 1000}}},
    )
    async with serve(_config(data)) as (_, stub):
        assert (await _timed(stub.Route(route(), timeout=45)))[1] == grpc.StatusCode.OK
        redis_server.freeze()
        try:
            for call in (stub.Route(route(), timeout=45), stub.Chat(chat(), timeout=45)):
                elapsed, code, details = await _timed(call)
                assert code == grpc.StatusCode.UNAVAILABLE, details
                # One 250 ms Redis timeout, not the caller's 45 s deadline.
                assert elapsed < 2.0, elapsed
                assert "did not answer within 250 ms" in details
                assert "redis://" not in details
            # Many at once: none waits on another's stuck connection.
            start = time.monotonic()
            results = await asyncio.gather(
                *(_timed(stub.Route(route(), timeout=45)) for _ in range(20))
            )
            assert {code for _, code, _ in results} == {grpc.StatusCode.UNAVAILABLE}
            assert time.monotonic() - start < 3.0
        finally:
            redis_server.thaw()
        # SIGCONT: the next calls succeed without a restart.
        deadline = time.monotonic() + 5
        while True:
            _, code, details = await _timed(stub.Route(route(), timeout=5))
            if code == grpc.StatusCode.OK or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert code == grpc.StatusCode.OK, details
        cloud.enqueue(Reply(content="ok", completion_tokens=1000))
        answer = await stub.Chat(chat(), timeout=10)
        assert answer.route.cost_usd == pytest.approx(0.001)


async def test_answered_calls_are_charged_when_redis_goes_away_before_settle(
    cloud: FakeOpenAI, persistent_redis: RedisServer, tmp_path: Path
) -> None:
    """Five calls reserve, Redis stops while they are with the model, they are answered; the
    settlements wait in the journal and reach Redis when it is back."""
    data = redis_config(cloud.url, persistent_redis.url, tmp_path)
    cloud.set_latency(first_byte=1.0)
    cloud.enqueue(*[Reply(content="ok", completion_tokens=700 + i) for i in range(5)])
    async with serve(_config(data)) as (gateway, stub):
        ledger = gateway.pipeline.ledger
        assert isinstance(ledger, RedisLedger)
        calls = [asyncio.ensure_future(stub.Chat(chat(), timeout=20)) for _ in range(5)]
        assert await until(lambda: cloud.request_count == 5)
        await asyncio.to_thread(persistent_redis.stop)
        answers = await asyncio.gather(*calls)
        assert len(answers) == 5
        await gateway.pipeline.settlements.drain()
        assert ledger.journal is not None and len(ledger.journal) == 5
        await asyncio.to_thread(persistent_redis.start)
        journal = ledger.journal
        assert await until(lambda: len(journal) == 0)
        charges = await ledger.charges()
        state = await ledger.snapshot("default", {})
    reported = sum(a.usage.output_tokens for a in answers)
    assert reported == sum(700 + i for i in range(5))
    assert len(charges) == 5
    # What the upstream reported as usage is what the ledger holds, to the nano-dollar.
    assert round(sum(c.cost_usd for c in charges) * NANOS_PER_USD) == reported * 1000
    assert state.spent_usd == pytest.approx(reported / 1e6)
    assert state.reserved_usd == 0


async def test_journal_is_replayed_by_the_next_process(tmp_path: Path) -> None:
    """A gateway stopped during the outage leaves its settlements on disk; the next ledger
    that opens the journal writes them, and replaying twice charges once."""
    with running_redis(persistent=True) as server:
        data = config_data(
            {"cloud": openai_model("http://127.0.0.1:9/v1", price=PRICE)},
            "cloud",
            budgets=[{"tenant": "*", "window": "day", "limit_usd": 1.0}],
            ledger={
                "backend": "redis",
                "url": server.url,
                "journal_path": str(tmp_path / "journal.sqlite3"),
            },
        )
        config = parse_config(data, base_dir=ROOT / "config")
        first = RedisLedger(config, server.url)
        await first.open()
        held = await first.reserve("team-a", {}, 0.5)
        await asyncio.to_thread(server.stop)
        assert await first.settle(held, 0.25, "cloud", "chat", now=datetime.now(UTC))
        assert first.journal is not None and len(first.journal) == 1
        await first.aclose()  # Redis still away: the entry stays on disk

        await asyncio.to_thread(server.start)
        second = RedisLedger(config, server.url)
        await second.open()
        try:
            assert await second.replay() == 0
            state = await second.snapshot("team-a", {})
            assert state.spent_usd == pytest.approx(0.25)
            assert state.reserved_usd == 0
            # Settling the same reservation again (a second replay) is refused by Redis.
            assert not await second.settle(held, 0.25, "cloud", "chat")
            assert len(await second.charges()) == 1
        finally:
            await second.aclose()
