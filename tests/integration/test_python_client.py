"""The Python client distribution (clients/python, import name `celgate_client`) against a real
gateway: both wrappers call every RPC, and refusals arrive as exceptions carrying the server's
ErrorInfo, BadRequest, QuotaFailure and RetryInfo details."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from celgate_client import (
    AsyncClient,
    Client,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from celgate_client.v1 import gateway_pb2 as cpb

from gateway.auth import hash_key
from gateway.server import Gateway
from tests.fakes._server import FakeToolCall, Reply
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model
from tests.harness import serve as serve_gateway

pytestmark = pytest.mark.integration

KEY = "cg_client_" + "a" * 30
LIMITED_KEY = "cg_limited_" + "b" * 30
BROKE_KEY = "cg_broke___" + "c" * 30


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOllama, FakeOpenAI]]:
    with FakeOllama() as ollama, FakeOpenAI() as cloud:
        yield ollama, cloud


@pytest.fixture
async def gateway(upstreams: tuple[FakeOllama, FakeOpenAI]) -> AsyncIterator[Gateway]:
    ollama, cloud = upstreams
    ollama.reset()
    cloud.reset()
    priced = {"input_per_mtok": 0.0, "output_per_mtok": 10.0}
    config = make_config(
        {"local": ollama_model(ollama.url), "cloud": openai_model(cloud.url, price=priced)},
        "local",
        auth={
            "mode": "api_key",
            "api_keys": [
                {"tenant": "team-a", "sha256": hash_key(KEY)},
                {"tenant": "team-b", "sha256": hash_key(LIMITED_KEY)},
                {"tenant": "team-c", "sha256": hash_key(BROKE_KEY)},
            ],
        },
        tenants={"team-b": {"rate_limit": {"requests_per_minute": 1}}},
        budgets=[{"tenant": "team-c", "window": "day", "limit_usd": 0.001}],
    )
    async with serve_gateway(config) as (gw, _):
        yield gw


async def test_async_client_calls_every_rpc(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    ollama, cloud = upstreams
    cloud.enqueue(Reply(content="Paris.", prompt_tokens=9, completion_tokens=2))
    ollama.enqueue(Reply(content="one two three", prompt_tokens=4, completion_tokens=3))
    async with AsyncClient(gateway.address, api_key=KEY) as client:
        reply = await client.chat(
            "Capital of France?", model="cloud", labels={"project": "atlas"}, max_tokens=50
        )
        assert reply.content == "Paris."
        assert reply.route.model == "cloud"
        assert reply.route.decision_id
        assert (reply.usage.input_tokens, reply.usage.output_tokens) == (9, 2)

        parts = [p async for p in client.chat_stream([{"role": "user", "content": "Count"}])]
        assert "".join(p.content_delta for p in parts) == "one two three"
        assert parts[-1].finish_reason == cpb.FINISH_REASON_STOP
        assert parts[-1].route.model == "local"

        plan = await client.route("Summarize this", classification="CONFIDENTIAL")
        assert plan.route.model == "local"
        assert plan.context.tenant == "team-a"
        assert plan.context.declared_classification == 3  # CONFIDENTIAL

        models = await client.list_models()
    assert {m.alias for m in models} == {"local", "cloud"}
    # Route and ListModels reached no upstream.
    assert cloud.request_count == 1 and ollama.request_count == 1


async def test_sync_client_sends_tools_and_schema(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(tool_calls=(FakeToolCall("get_weather", {"city": "Oslo"}),)))
    cloud.enqueue(Reply(content='{"answer": "sunny"}'))
    tool = {
        "name": "get_weather",
        "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}

    def calls() -> tuple[cpb.ChatResponse, cpb.ChatResponse]:
        with Client(gateway.address, api_key=KEY) as client:
            first = client.chat("Weather in Oslo?", model="cloud", tools=[tool])
            second = client.chat(
                "Answer as JSON",
                model="cloud",
                response_format={"type": "json_schema", "name": "reply", "schema": schema},
            )
            return first, second

    first, second = await asyncio.to_thread(calls)
    assert first.finish_reason == cpb.FINISH_REASON_TOOL_CALLS
    assert first.tool_calls[0].name == "get_weather"
    assert json.loads(first.tool_calls[0].arguments) == {"city": "Oslo"}
    assert cloud.bodies[0]["tools"][0]["function"]["parameters"] == tool["parameters"]
    assert second.content == '{"answer": "sunny"}'
    assert cloud.bodies[1]["response_format"]["json_schema"]["schema"] == schema


async def test_sync_stream(gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]) -> None:
    ollama, _ = upstreams
    ollama.enqueue(Reply(content="alpha beta gamma"))

    def stream() -> list[cpb.ChatStreamResponse]:
        with Client(gateway.address, api_key=KEY) as client:
            return list(client.chat_stream("Say three words"))

    parts = await asyncio.to_thread(stream)
    assert "".join(p.content_delta for p in parts) == "alpha beta gamma"
    assert parts[-1].route.model == "local"


async def test_refusals_raise_typed_errors_with_details(gateway: Gateway) -> None:
    async with AsyncClient(gateway.address, api_key="cg_wrong_" + "x" * 30) as stranger:
        with pytest.raises(Unauthenticated) as unauthenticated:
            await stranger.chat("hello")
    assert unauthenticated.value.reason == "UNAUTHENTICATED"
    assert unauthenticated.value.error_info is not None
    assert unauthenticated.value.error_info.domain == "celgate"

    async with AsyncClient(gateway.address, api_key=KEY) as client:
        with pytest.raises(InvalidArgument) as invalid:
            await client.chat("hello", temperature=5.0)
        # Data residency: CONFIDENTIAL content never goes to the INTERNAL cloud model.
        with pytest.raises(PermissionDenied) as residency:
            await client.chat("CONFIDENTIAL: the merger terms", model="cloud")
    assert invalid.value.bad_request is not None
    assert invalid.value.bad_request.field_violations[0].field == "temperature"
    assert residency.value.reason == "DATA_RESIDENCY"
    assert residency.value.decision_id

    async with AsyncClient(gateway.address, api_key=BROKE_KEY) as broke:
        with pytest.raises(ResourceExhausted) as budget:
            await broke.chat("hello", model="cloud", max_tokens=1000)
    assert budget.value.reason == "BUDGET_EXHAUSTED"
    assert budget.value.quota_failure is not None
    assert budget.value.quota_failure.violations[0].subject
    assert budget.value.retry_after is None

    def limited() -> ResourceExhausted:
        with Client(gateway.address, api_key=LIMITED_KEY) as client:
            client.chat("first")
            with pytest.raises(ResourceExhausted) as second:
                client.chat("second")
            return second.value

    rate = await asyncio.to_thread(limited)
    assert rate.reason == "RATE_LIMITED"
    assert rate.retry_info is not None
    assert rate.retry_after is not None and rate.retry_after > 0
