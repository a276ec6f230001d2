"""A stream that ends early is charged: the caller cancels after 39 of 40 chunks, or the
upstream breaks off after 20. No usage arrives in either case, so the charge is the estimate
of what was relayed (the input estimate plus the relayed output) and the decision log says
the cost was estimated. Each content chunk of the doubles is one word of 4 characters, which
the gateway estimates as one token and the doubles count as one token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.budget import open_ledger
from gateway.config import Config
from gateway.v1 import gateway_pb2 as pb
from tests.fakes._server import FakeServer, Reply
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model, serve

pytestmark = pytest.mark.integration

WORDS = 40
CONTENT = "tok " * WORDS  # 40 chunks of 4 characters: one estimated token each
PER_TOKEN_USD = 0.001  # input and output: $1,000 per million tokens


@pytest.fixture(params=["openai", "ollama"])
def upstream(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeServer]]:
    fake: FakeServer = FakeOpenAI() if request.param == "openai" else FakeOllama()
    with fake:
        yield request.param, fake


def _config(kind: str, url: str, tmp: Path) -> Config:
    model = openai_model(url) if kind == "openai" else ollama_model(url)
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
    return make_config(
        {"m": {**model, "price": price}},
        "m",
        budgets=[{"tenant": "*", "window": "day", "limit_usd": 100.0}],
        ledger={"backend": "sqlite", "path": str(tmp / "ledger.sqlite3")},
        audit={"decision_log": str(tmp / "decisions.jsonl")},
    )


def _request() -> pb.ChatStreamRequest:
    return pb.ChatStreamRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="count to forty")],
        preferred_model="m",
        max_tokens=100,
    )


async def _charges(config: Config) -> list[float]:
    ledger = await open_ledger(config)
    try:
        return [c.cost_usd for c in await ledger.charges()]
    finally:
        await ledger.aclose()


def _decisions(tmp: Path) -> list[dict[str, Any]]:
    lines = (tmp / "decisions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


async def _input_estimate(stub: Any) -> int:
    route = await stub.Route(pb.RouteRequest.FromString(_request().SerializeToString()))
    return int(route.context.estimated_input_tokens)


async def test_a_cancelled_stream_is_charged_for_what_was_relayed(
    upstream: tuple[str, FakeServer], tmp_path: Path
) -> None:
    kind, fake = upstream
    fake.enqueue(Reply(content=CONTENT, completion_tokens=WORDS))
    fake.set_latency(between_chunks=0.05)
    config = _config(kind, fake.url, tmp_path)
    async with serve(config) as (gateway, stub):
        input_tokens = await _input_estimate(stub)
        call = stub.ChatStream(_request(), timeout=30)
        received = 0
        async for piece in call:
            received += len(piece.content_delta) // 4
            if received >= WORDS - 1:
                break
        call.cancel()
        assert await asyncio.to_thread(fake.wait_for_disconnects, 1)
        await asyncio.sleep(0.2)
        await gateway.pipeline.settlements.drain()
    charges = await _charges(config)
    assert received == WORDS - 1
    assert len(charges) == 1
    # The gateway relayed 39 chunks, or the 40th too if it was on its way when the caller
    # left; never nothing, never the whole reservation.
    relayed = round(charges[0] / PER_TOKEN_USD) - input_tokens
    assert relayed in (WORDS - 1, WORDS), (charges, input_tokens)
    assert charges[0] >= (input_tokens + received) * PER_TOKEN_USD - 1e-12
    line = [d for d in _decisions(tmp_path) if d["rpc"] == "ChatStream"][-1]
    assert line["status"] == "CANCELLED"
    assert line["cost_usd"] == pytest.approx(charges[0])
    assert line["cost_estimated"] is True


async def test_a_broken_stream_is_charged_for_what_was_relayed(
    upstream: tuple[str, FakeServer], tmp_path: Path
) -> None:
    kind, fake = upstream
    fake.enqueue(Reply(content=CONTENT, completion_tokens=WORDS))
    # OpenAI's first event is the role chunk with no content: 21 events = 20 content chunks.
    fake.fail_mid_stream(21 if kind == "openai" else 20, drop_connection=True)
    config = _config(kind, fake.url, tmp_path)
    async with serve(config) as (gateway, stub):
        input_tokens = await _input_estimate(stub)
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as broke:
            async for piece in stub.ChatStream(_request(), timeout=30):
                received += len(piece.content_delta) // 4
        await gateway.pipeline.settlements.drain()
    assert broke.value.code() == grpc.StatusCode.UNAVAILABLE
    assert received == 20
    charges = await _charges(config)
    assert charges == [pytest.approx((input_tokens + 20) * PER_TOKEN_USD)]
    line = [d for d in _decisions(tmp_path) if d["rpc"] == "ChatStream"][-1]
    assert line["status"] == "UNAVAILABLE"
    assert line["cost_usd"] == pytest.approx(charges[0])
    assert line["cost_estimated"] is True


async def test_a_complete_stream_is_charged_its_reported_usage(
    upstream: tuple[str, FakeServer], tmp_path: Path
) -> None:
    kind, fake = upstream
    fake.enqueue(Reply(content=CONTENT, prompt_tokens=7, completion_tokens=WORDS))
    config = _config(kind, fake.url, tmp_path)
    async with serve(config) as (gateway, stub):
        async for _ in stub.ChatStream(_request(), timeout=30):
            pass
        await gateway.pipeline.settlements.drain()
    assert await _charges(config) == [pytest.approx((7 + WORDS) * PER_TOKEN_USD)]
    line = [d for d in _decisions(tmp_path) if d["rpc"] == "ChatStream"][-1]
    assert line["cost_estimated"] is False
