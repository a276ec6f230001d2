"""The gateway end to end: a real grpc.aio server on loopback, real gRPC channels, and the
upstream doubles speaking OpenAI's SSE and Ollama's NDJSON over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.server import Gateway
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import FakeToolCall, Reply, refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model, serve, status_detail

pytestmark = pytest.mark.integration

Stub = gateway_pb2_grpc.GatewayServiceStub


@pytest.fixture
async def gateway(ollama: FakeOllama, cloud: FakeOpenAI) -> AsyncIterator[tuple[Gateway, Stub]]:
    ollama.reset()
    cloud.reset()
    with refused_url("/v1") as dead:
        config = make_config(
            {
                "local": ollama_model(ollama.url),
                "cloud": openai_model(cloud.url),
                "dead": openai_model(dead),
                "nokey": openai_model(cloud.url, api_key_env="CELGATE_TEST_KEY_NEVER_SET"),
            },
            "local",
        )
        async with serve(config) as pair:
            yield pair


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


async def test_health_serving_and_reflection(gateway: tuple[Gateway, Stub]) -> None:
    gw, _ = gateway
    async with grpc.aio.insecure_channel(gw.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "gateway.v1.GatewayService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # Reflection, as grpcurl uses it.
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [reply async for reply in reflection.ServerReflectionInfo(iter([ask]))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert "gateway.v1.GatewayService" in names


@pytest.mark.parametrize("model", ["local", "cloud"])
async def test_chat_returns_content_usage_and_route(
    gateway: tuple[Gateway, Stub], ollama: FakeOllama, cloud: FakeOpenAI, model: str
) -> None:
    fake = ollama if model == "local" else cloud
    fake.enqueue(Reply(content="Paris is the capital.", prompt_tokens=12, completion_tokens=5))
    _, stub = gateway
    reply = await stub.Chat(
        pb.ChatRequest(messages=[user("Capital of France?")], preferred_model=model)
    )
    assert reply.content == "Paris is the capital."
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (12, 5)
    assert reply.finish_reason == pb.FINISH_REASON_STOP
    assert reply.route.model == model
    assert reply.route.attempts == 1
    assert reply.route.decision_id
    assert fake.request_count == 1


@pytest.mark.parametrize("model", ["local", "cloud"])
async def test_chat_stream_returns_deltas_then_usage(
    gateway: tuple[Gateway, Stub], ollama: FakeOllama, cloud: FakeOpenAI, model: str
) -> None:
    fake = ollama if model == "local" else cloud
    fake.enqueue(Reply(content="one two three four", prompt_tokens=7, completion_tokens=4))
    _, stub = gateway
    parts = [
        part
        async for part in stub.ChatStream(
            pb.ChatStreamRequest(messages=[user("Count")], preferred_model=model)
        )
    ]
    assert len(parts) > 2
    assert "".join(p.content_delta for p in parts) == "one two three four"
    last = parts[-1]
    assert last.finish_reason == pb.FINISH_REASON_STOP
    assert (last.usage.input_tokens, last.usage.output_tokens) == (7, 4)
    assert last.route.model == model
    assert not any(p.HasField("route") for p in parts[:-1])
    if model == "cloud":
        assert fake.bodies[-1]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("model", ["local", "cloud"])
async def test_tool_calls_round_trip(
    gateway: tuple[Gateway, Stub], ollama: FakeOllama, cloud: FakeOpenAI, model: str
) -> None:
    fake = ollama if model == "local" else cloud
    fake.enqueue(Reply(tool_calls=(FakeToolCall("get_weather", {"city": "Oslo"}),)), "It is sunny.")
    _, stub = gateway
    tool = pb.Tool(
        name="get_weather",
        description="Weather by city",
        parameters_json=json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}),
    )
    first = await stub.Chat(
        pb.ChatRequest(messages=[user("Weather in Oslo?")], tools=[tool], preferred_model=model)
    )
    assert first.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    (call,) = first.tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    assert call.id
    second = await stub.Chat(
        pb.ChatRequest(
            messages=[
                user("Weather in Oslo?"),
                pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
                pb.Message(
                    role=pb.ROLE_TOOL, tool_call_id=call.id, name=call.name, content="sunny"
                ),
            ],
            tools=[tool],
            preferred_model=model,
        )
    )
    assert second.content == "It is sunny."
    sent = fake.bodies[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assistant, result = sent["messages"][1], sent["messages"][2]
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    assert result["role"] == "tool" and result["content"] == "sunny"


async def test_json_schema_response_format_reaches_upstream(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI, ollama: FakeOllama
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    fmt = pb.ResponseFormat(
        type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        schema_name="answer",
        json_schema=json.dumps(schema),
    )
    _, stub = gateway
    for model in ("cloud", "local"):
        await stub.Chat(
            pb.ChatRequest(messages=[user("q")], response_format=fmt, preferred_model=model)
        )
    assert cloud.bodies[-1]["response_format"]["json_schema"]["schema"] == schema
    assert ollama.bodies[-1]["format"] == schema


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ChatRequest(), "messages"),
        (pb.ChatRequest(messages=[pb.Message(role=7, content="x")]), "messages[0].role"),
        (pb.ChatRequest(messages=[user("x")], preferred_model="nope"), "preferred_model"),
        (pb.ChatRequest(messages=[user("x" * 1_000_001)]), "messages[0].content"),
    ],
)
async def test_bad_input_is_invalid_argument(
    gateway: tuple[Gateway, Stub], ollama: FakeOllama, request_: pb.ChatRequest, field: str
) -> None:
    _, stub = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (info.value.details() or "")
    assert status_detail(info.value, error_details_pb2.ErrorInfo).metadata["field"] == field
    assert ollama.request_count == 0


async def test_unreachable_upstream_is_unavailable_naming_the_alias(
    gateway: tuple[Gateway, Stub],
) -> None:
    _, stub = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(pb.ChatRequest(messages=[user("hi")], preferred_model="dead"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    details = info.value.details() or ""
    assert "dead" in details
    assert "127.0.0.1" not in details and "http" not in details
    assert status_detail(info.value, error_details_pb2.ErrorInfo).domain == "celgate"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (404, grpc.StatusCode.NOT_FOUND),
        (401, grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_upstream_4xx_maps_to_matching_status(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI, status: int, code: grpc.StatusCode
) -> None:
    cloud.fail_next(status, message=f"upstream says {status}")
    _, stub = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(pb.ChatRequest(messages=[user("hi")], preferred_model="cloud"))
    assert info.value.code() == code
    assert f"upstream says {status}" in (info.value.details() or "")


async def test_upstream_5xx_is_unavailable(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    cloud.fail_next(503, count=5)
    _, stub = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(pb.ChatRequest(messages=[user("hi")], preferred_model="cloud"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_expired_deadline_cancels_the_upstream_request(
    gateway: tuple[Gateway, Stub], ollama: FakeOllama
) -> None:
    ollama.set_latency(first_byte=3.0)
    _, stub = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(pb.ChatRequest(messages=[user("slow")]), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Waited for off the loop: the gateway runs on this loop and closes the socket on it.
    assert await asyncio.to_thread(ollama.wait_for_disconnects, 1, 5.0)
    assert ollama.completed == 0


async def test_list_models_shows_the_catalogue(gateway: tuple[Gateway, Stub]) -> None:
    _, stub = gateway
    reply = await stub.ListModels(pb.ListModelsRequest())
    assert {m.alias for m in reply.models} == {"local", "cloud", "dead", "nokey"}
    local = next(m for m in reply.models if m.alias == "local")
    assert local.provider == "ollama" and local.healthy
    nokey = next(m for m in reply.models if m.alias == "nokey")
    assert not nokey.healthy  # its key variable is unset


async def test_route_names_the_model_a_call_would_reach(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    request = pb.RouteRequest(
        messages=[user("hi")], preferred_model="nokey", labels={"fallbacks": "local"}
    )
    reply = await stub.Route(request)
    assert reply.decision.model == "nokey"  # what the policy chose
    assert reply.route.model == "local"  # where a call would go: nokey has no key
    assert [c.model for c in reply.candidates if c.allowed] == ["nokey", "local"]
    answer = await stub.Chat(pb.ChatRequest.FromString(request.SerializeToString()))
    assert answer.route.model == "local" and answer.route.attempts == 1
    assert cloud.request_count == 0


async def test_messages_over_the_size_limit_are_refused(ollama: FakeOllama) -> None:
    ollama.reset()
    config = make_config(
        {"local": ollama_model(ollama.url)},
        "local",
        server={"listen": "127.0.0.1:0", "max_message_bytes": 64 * 1024},
    )
    async with serve(config) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(pb.ChatRequest(messages=[user("x" * 100_000)]))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stub.Chat(pb.ChatRequest(messages=[user("small")]))).content
    assert ollama.request_count == 1
