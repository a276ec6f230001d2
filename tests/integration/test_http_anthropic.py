"""The Anthropic Messages API (`POST /v1/messages`) with the real `anthropic` Python SDK against a
real gateway: text, system prompts, streaming events, tool use and tool results, and refusals
raised as the SDK's own exception classes, through the same pipeline as gRPC."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest

from gateway.auth import hash_key
from gateway.server import Gateway
from tests.fakes._server import FakeToolCall, Reply
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model, serve

pytestmark = pytest.mark.integration

KEY = "cg_anthro_" + "a" * 30
LIMITED_KEY = "cg_anthrol" + "l" * 30


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOllama, FakeOpenAI]]:
    with FakeOllama() as ollama, FakeOpenAI() as cloud:
        yield ollama, cloud


@pytest.fixture
async def gateway(upstreams: tuple[FakeOllama, FakeOpenAI]) -> AsyncIterator[Gateway]:
    ollama, cloud = upstreams
    ollama.reset()
    cloud.reset()
    config = make_config(
        {"local": ollama_model(ollama.url), "cloud": openai_model(cloud.url)},
        "local",
        http={"listen": "127.0.0.1:0"},
        auth={
            "mode": "api_key",
            "api_keys": [
                {"tenant": "team-a", "sha256": hash_key(KEY)},
                {"tenant": "team-b", "sha256": hash_key(LIMITED_KEY)},
            ],
        },
        tenants={"team-b": {"rate_limit": {"requests_per_minute": 1}}},
    )
    async with serve(config) as (gw, _):
        yield gw


def sdk(gateway: Gateway, key: str = KEY) -> anthropic.AsyncAnthropic:
    assert gateway.http is not None
    # The SDK sends the key as `x-api-key`.
    return anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{gateway.http.port}", api_key=key, max_retries=0
    )


async def test_message_with_system_prompt(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(content="Paris.", prompt_tokens=11, completion_tokens=2))
    raw = await sdk(gateway).messages.with_raw_response.create(
        model="cloud",
        max_tokens=64,
        system="Answer in one word.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}],
    )
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "Paris."
    assert message.stop_reason == "end_turn"
    assert message.model == "cloud"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 2)
    assert raw.headers["x-celgate-model"] == "cloud"
    assert (message.model_extra or {})["celgate"]["decision_id"] == raw.headers[
        "x-celgate-decision-id"
    ]
    sent = cloud.bodies[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Answer in one word."}
    assert sent["max_completion_tokens" if "max_completion_tokens" in sent else "max_tokens"] == 64


async def test_streaming_events(gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]) -> None:
    ollama, _ = upstreams
    ollama.enqueue(Reply(content="one two three", prompt_tokens=3, completion_tokens=3))
    async with sdk(gateway).messages.stream(
        model="auto", max_tokens=32, messages=[{"role": "user", "content": "Count"}]
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert final.content[0].type == "text" and final.content[0].text == "one two three"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


async def test_tool_use_round_trip(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(tool_calls=(FakeToolCall("get_weather", {"city": "Oslo"}),)))
    cloud.enqueue(Reply(content="Sunny."))
    tools: Any = [
        {
            "name": "get_weather",
            "description": "Weather by city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    client = sdk(gateway)
    first = await client.messages.create(
        model="cloud",
        max_tokens=64,
        tools=tools,
        tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    )
    assert first.stop_reason == "tool_use"
    use: Any = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Oslo"}
    assert cloud.bodies[-1]["tools"][0]["function"]["parameters"] == tools[0]["input_schema"]

    second = await client.messages.create(
        model="cloud",
        max_tokens=64,
        tools=tools,
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "clear"}],
            },
        ],
    )
    assert second.content[0].type == "text" and second.content[0].text == "Sunny."
    replayed = cloud.bodies[-1]["messages"]
    assert replayed[1]["tool_calls"][0]["id"] == use.id
    assert json.loads(replayed[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert replayed[2] == {"role": "tool", "tool_call_id": use.id, "content": "clear"}


async def test_streamed_tool_use(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(tool_calls=(FakeToolCall("lookup", {"id": 7}),)))
    tools: Any = [{"name": "lookup", "input_schema": {"type": "object"}}]
    async with sdk(gateway).messages.stream(
        model="cloud", max_tokens=16, tools=tools, messages=[{"role": "user", "content": "look"}]
    ) as stream:
        final = await stream.get_final_message()
    use: Any = final.content[0]
    assert use.type == "tool_use" and use.name == "lookup" and use.input == {"id": 7}
    assert final.stop_reason == "tool_use"


async def test_refusals_raise_the_sdks_exceptions(gateway: Gateway) -> None:
    def user(text: str) -> Any:
        return [{"role": "user", "content": text}]

    with pytest.raises(anthropic.AuthenticationError) as unauthenticated:
        await sdk(gateway, "wrong").messages.create(
            model="local", max_tokens=8, messages=user("hi")
        )
    assert unauthenticated.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]

    client = sdk(gateway)
    with pytest.raises(anthropic.PermissionDeniedError) as residency:
        await client.messages.create(
            model="cloud", max_tokens=8, messages=user("CONFIDENTIAL: merger terms")
        )
    body: Any = residency.value.body
    assert body["error"]["type"] == "permission_error"
    assert body["celgate"]["reason"] == "DATA_RESIDENCY"

    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(model="claude-9", max_tokens=8, messages=user("hi"))
    with pytest.raises(anthropic.BadRequestError) as invalid:
        await client.messages.create(
            model="local", max_tokens=8, messages=user("hi"), temperature=1.5
        )
    assert "temperature" in invalid.value.message

    limited = sdk(gateway, LIMITED_KEY)
    await limited.messages.create(model="local", max_tokens=8, messages=user("first"))
    with pytest.raises(anthropic.RateLimitError) as rate:
        await limited.messages.create(model="local", max_tokens=8, messages=user("second"))
    assert int(rate.value.response.headers["retry-after"]) >= 1
    assert rate.value.body["celgate"]["reason"] == "RATE_LIMITED"  # type: ignore[index]


async def test_streamed_refusal_before_the_first_event_is_an_http_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.PermissionDeniedError):
        async with sdk(gateway).messages.stream(
            model="cloud",
            max_tokens=8,
            messages=[{"role": "user", "content": "CONFIDENTIAL: merger terms"}],
        ) as stream:
            await stream.get_final_message()


async def test_max_tokens_is_required(gateway: Gateway) -> None:
    assert gateway.http is not None
    with pytest.raises(anthropic.BadRequestError) as missing:
        await sdk(gateway).post(
            "/v1/messages",
            body={"model": "local", "messages": [{"role": "user", "content": "hi"}]},
            cast_to=object,
        )
    assert "max_tokens" in missing.value.message
