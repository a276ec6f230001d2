"""Budgets through the real gateway: concurrent requests cannot overspend a hard budget, on
SQLite and on Redis, in one gateway or two gateway processes sharing Redis; spend survives a
restart; refusals carry QuotaFailure; Route reports the estimated cost.

Each request asks for 1,000 output tokens at $10 per million (input is free), so its
reservation is exactly $0.01, and the fake upstream answers with exactly 1,000 tokens, so the
settled cost equals the estimate: a $0.50 budget covers exactly 50 requests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import Reply
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import (
    GatewayProcess,
    config_data,
    make_config,
    openai_model,
    serve,
    status_detail,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

PER_REQUEST_USD = 0.01
COVERED = 50


@pytest.fixture
def cloud() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        fake.set_latency(first_byte=0.02)
        fake.enqueue(*[Reply(content="ok", completion_tokens=1000)] * 400)
        yield fake


def budget_config(url: str, ledger: dict[str, Any]) -> dict[str, Any]:
    model = openai_model(url, price={"input_per_mtok": 0.0, "output_per_mtok": 10.0})
    return config_data(
        {"cloud": model},
        "cloud",
        budgets=[{"tenant": "*", "window": "day", "limit_usd": COVERED * PER_REQUEST_USD}],
        ledger=ledger,
    )


def chat() -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="hi")],
        preferred_model="cloud",
        max_tokens=1000,
    )


async def burst(stub: gateway_pb2_grpc.GatewayServiceStub, count: int) -> tuple[int, int]:
    """Send `count` requests at once; (answered, refused for budget)."""

    async def one() -> bool:
        try:
            await stub.Chat(chat(), timeout=30)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            assert (
                status_detail(exc, error_details_pb2.QuotaFailure)
                .violations[0]
                .subject.startswith("tenant:default")
            )
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(count)))
    return sum(results), results.count(False)


async def test_concurrent_requests_cannot_overspend_sqlite(
    cloud: FakeOpenAI, tmp_path: Path
) -> None:
    data = budget_config(cloud.url, {"backend": "sqlite", "path": str(tmp_path / "l.db")})
    async with serve(make_config(data["models"], "cloud", **_rest(data))) as (_, stub):
        answered, refused = await burst(stub, 200)
    assert (answered, refused) == (COVERED, 200 - COVERED)
    assert cloud.request_count == COVERED


async def test_concurrent_requests_cannot_overspend_redis(
    cloud: FakeOpenAI, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The URL comes from the environment, as a Kubernetes Secret would provide it.
    monkeypatch.setenv("CELGATE_TEST_REDIS_URL", redis_server.url)
    data = budget_config(cloud.url, {"backend": "redis", "url_env": "CELGATE_TEST_REDIS_URL"})
    async with serve(make_config(data["models"], "cloud", **_rest(data))) as (_, stub):
        answered, refused = await burst(stub, 200)
    assert (answered, refused) == (COVERED, 200 - COVERED)
    assert cloud.request_count == COVERED


async def test_spend_survives_a_restart_and_route_estimates(
    cloud: FakeOpenAI, tmp_path: Path
) -> None:
    data = budget_config(cloud.url, {"backend": "sqlite", "path": str(tmp_path / "l.db")})
    config = make_config(data["models"], "cloud", **_rest(data))
    async with serve(config) as (_, stub):
        first, _ = await burst(stub, 30)
        route = await stub.Route(pb.RouteRequest.FromString(chat().SerializeToString()))
    assert first == 30
    assert route.route.cost_usd == pytest.approx(PER_REQUEST_USD)
    async with serve(config) as (_, stub):
        second, refused = await burst(stub, 40)
    assert (second, refused) == (COVERED - 30, 40 - (COVERED - 30))


def test_two_gateway_processes_sharing_redis_hold_one_budget(
    cloud: FakeOpenAI, redis_server: RedisServer, tmp_path: Path
) -> None:
    data = budget_config(cloud.url, {"backend": "redis", "url": redis_server.url})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        GatewayProcess(data, tmp_path / "a") as one,
        GatewayProcess(data, tmp_path / "b") as two,
    ):
        start = threading.Barrier(2)

        def run(address: str) -> tuple[int, int]:
            async def go() -> tuple[int, int]:
                async with grpc.aio.insecure_channel(address) as channel:
                    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                    await channel.channel_ready()
                    start.wait()
                    return await burst(stub, 100)

            return asyncio.run(go())

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(run, [one.address, two.address]))
    assert sum(r[0] for r in results) == COVERED
    assert sum(r[1] for r in results) == 200 - COVERED
    assert cloud.request_count == COVERED


def _rest(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in data.items() if k not in ("models", "default_model", "server", "policy")
    }
