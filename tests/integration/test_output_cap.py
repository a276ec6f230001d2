"""A hard budget holds when callers set no `max_tokens`: the output cap the budget reserves for
(`limits.estimate_output_tokens`) is the cap sent upstream, in the field each model's config
names (OpenAI `max_tokens` or `max_completion_tokens`, Ollama `options.num_predict`).

The upstream doubles here generate 20,000 output tokens unless the request caps them, as a
real model would, and report what they generated as usage. The assertion sums that reported
usage, priced, against the budget and the ledger.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.budget import open_ledger
from gateway.config import Config
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import Reply
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model, serve

pytestmark = pytest.mark.integration

UNCAPPED_TOKENS = 20_000
CAP = 4096
BUDGET_USD = 0.05
OUTPUT_PER_MTOK = 2.5  # 4,096 tokens: $0.01024 (four fit in $0.05); 20,000: $0.05 each


class _Generated:
    """What the double reported as output tokens, summed (thread-safe: it runs in a thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tokens: list[int] = []

    def add(self, tokens: int) -> int:
        with self._lock:
            self.tokens.append(tokens)
        return tokens


def _cap(value: Any) -> int:
    return min(UNCAPPED_TOKENS, int(value)) if isinstance(value, int) else UNCAPPED_TOKENS


class LongWindedOpenAI(FakeOpenAI):
    """Generates 20,000 tokens unless `max_tokens` / `max_completion_tokens` says less."""

    def __init__(self) -> None:
        super().__init__()
        self.generated = _Generated()

    def _usage(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        tokens = self.generated.add(_cap(cap))
        return super()._usage(body, Reply(content=reply.content, completion_tokens=tokens))


class LongWindedOllama(FakeOllama):
    """Generates 20,000 tokens unless `options.num_predict` says less."""

    def __init__(self) -> None:
        super().__init__()
        self.generated = _Generated()

    def _final(self, body: dict[str, Any], reply: Reply, message: dict[str, Any]) -> dict[str, Any]:
        tokens = self.generated.add(_cap((body.get("options") or {}).get("num_predict")))
        return super()._final(body, Reply(content=reply.content, completion_tokens=tokens), message)


def _config(model: dict[str, Any], tmp: Path) -> Config:
    return make_config(
        {"m": {**model, "price": {"input_per_mtok": 0.0, "output_per_mtok": OUTPUT_PER_MTOK}}},
        "m",
        budgets=[{"tenant": "*", "window": "day", "limit_usd": BUDGET_USD, "mode": "hard"}],
        ledger={"backend": "sqlite", "path": str(tmp / "ledger.sqlite3")},
        limits={"estimate_output_tokens": CAP},
    )


def _request() -> pb.ChatRequest:
    # No max_tokens: the caller leaves the output length to the gateway.
    return pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="write a lot")], preferred_model="m"
    )


async def _call(stub: gateway_pb2_grpc.GatewayServiceStub) -> bool:
    try:
        await stub.Chat(_request(), timeout=30)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
        return False
    return True


async def _spent(config: Config) -> float:
    ledger = await open_ledger(config)
    try:
        return sum(c.cost_usd for c in await ledger.charges())
    finally:
        await ledger.aclose()


def _double(kind: str, field: str) -> Any:
    return LongWindedOpenAI() if kind == "openai" else LongWindedOllama()


@pytest.mark.parametrize(
    ("kind", "field"),
    [("openai", "max_tokens"), ("openai", "max_completion_tokens"), ("ollama", "num_predict")],
)
@pytest.mark.parametrize("concurrent", [False, True], ids=["3-sequential", "50-concurrent"])
async def test_hard_budget_holds_without_max_tokens(
    kind: str, field: str, concurrent: bool, tmp_path: Path
) -> None:
    with _double(kind, field) as fake:
        if kind == "openai":
            model = openai_model(fake.url, params={"max_tokens_param": field})
        else:
            model = ollama_model(fake.url)
        config = _config(model, tmp_path)
        async with serve(config) as (gateway, stub):
            if concurrent:
                answered = sum(await asyncio.gather(*(_call(stub) for _ in range(50))))
            else:
                answered = sum([await _call(stub) for _ in range(3)])
            await gateway.pipeline.settlements.drain()
        # The cap went upstream in the model's field.
        for body in fake.bodies:
            sent = body["options"]["num_predict"] if kind == "ollama" else body[field]
            assert sent == CAP
        billed_usd = sum(fake.generated.tokens) * OUTPUT_PER_MTOK / 1e6
        ledger_usd = await _spent(config)
    assert answered == len(fake.generated.tokens) >= 3
    # What the upstream says it generated never exceeds the hard budget ...
    assert billed_usd <= BUDGET_USD + 1e-12
    # ... and the ledger charged exactly that.
    assert ledger_usd == pytest.approx(billed_usd, abs=1e-9)
