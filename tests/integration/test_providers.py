"""Both provider adapters against both upstream doubles: real HTTP on loopback, real SDKs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.chat import ChatMessage, ChatParams, Chunk, ResponseFormat, ToolCall, ToolSpec
from gateway.config import ModelConfig
from gateway.providers.base import Provider, UpstreamError
from gateway.providers.ollama import OllamaProvider
from gateway.providers.openai import OpenAIProvider
from tests.fakes._server import FakeServer, FakeToolCall, Reply, refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.integration

API_KEY = "sk-celgate-test-0123456789abcdef"
HELLO = ChatParams(messages=(ChatMessage("user", "What is two plus two?"),))
WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city",
    {
        "type": "object",
        "properties": {
            "place": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                "required": ["city"],
            },
            "days": {"type": "integer", "minimum": 1},
        },
        "required": ["place"],
        "additionalProperties": False,
    },
)


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def ollama_fake() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@dataclass
class Target:
    """One adapter kind and the fake it talks to."""

    kind: str
    fake: FakeServer

    def model(self, *, base_url: str | None = None, **params: Any) -> ModelConfig:
        return ModelConfig(
            provider="openai" if self.kind == "openai" else "ollama",
            upstream_model="gpt-5.5" if self.kind == "openai" else "llama3.1:8b",
            base_url=base_url or self.fake.url,
            location="cloud" if self.kind == "openai" else "on_prem",
            clearance="INTERNAL",
            params=params,
        )

    def provider(self, model: ModelConfig | None = None) -> Provider:
        model = model or self.model()
        if self.kind == "openai":
            return OpenAIProvider(model, API_KEY)
        return OllamaProvider(model)


@pytest.fixture(params=["openai", "ollama"])
def target(
    request: pytest.FixtureRequest, openai_fake: FakeOpenAI, ollama_fake: FakeOllama
) -> Target:
    fake: FakeServer = openai_fake if request.param == "openai" else ollama_fake
    fake.reset()
    return Target(request.param, fake)


@pytest.fixture
async def provider(target: Target) -> AsyncIterator[Provider]:
    provider = target.provider()
    yield provider
    await provider.aclose()


async def collect(provider: Provider, params: ChatParams, timeout: float = 5) -> list[Chunk]:
    return [chunk async for chunk in provider.stream(params, timeout=timeout)]


async def expect_error(call: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await call
    return info.value


async def stream_error(provider: Provider, params: ChatParams, timeout: float = 5) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await collect(provider, params, timeout)
    return info.value


# -- answers -----------------------------------------------------------------------------------


async def test_unary_content_and_usage(target: Target, provider: Provider) -> None:
    target.fake.enqueue(Reply("Four.", prompt_tokens=14, completion_tokens=2))
    result = await provider.chat(HELLO, timeout=5)
    assert result.content == "Four."
    assert result.finish_reason == "stop"
    assert result.tool_calls == ()
    assert (result.usage.input_tokens, result.usage.output_tokens) == (14, 2)
    assert result.response_model == target.model().upstream_model


async def test_openai_reports_cached_and_reasoning_tokens(openai_fake: FakeOpenAI) -> None:
    openai_fake.reset()
    provider = Target("openai", openai_fake).provider()
    reply = Reply("ok", prompt_tokens=100, completion_tokens=40, cached_tokens=64)
    openai_fake.enqueue(dataclasses.replace(reply, reasoning_tokens=30), reply)
    unary = await provider.chat(HELLO, timeout=5)
    assert (unary.usage.cached_input_tokens, unary.usage.reasoning_tokens) == (64, 30)
    streamed = (await collect(provider, HELLO))[-1].usage
    assert streamed is not None
    assert (streamed.input_tokens, streamed.cached_input_tokens) == (100, 64)
    assert openai_fake.bodies[-1]["stream_options"] == {"include_usage": True}
    await provider.aclose()


async def test_stream_content_then_final_chunk(target: Target, provider: Provider) -> None:
    target.fake.enqueue(Reply("Two plus two is four.", prompt_tokens=9, completion_tokens=6))
    chunks = await collect(provider, HELLO)
    assert len(chunks) > 2, "content arrives in pieces"
    assert "".join(c.content_delta for c in chunks) == "Two plus two is four."
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 6)
    assert final.response_model == target.model().upstream_model
    assert target.fake.bodies[-1]["stream"] is True


async def test_length_finish_reason(target: Target, provider: Provider) -> None:
    target.fake.enqueue(
        Reply("Two plus", finish_reason="length"), Reply("Two", finish_reason="length")
    )
    assert (await provider.chat(HELLO, timeout=5)).finish_reason == "length"
    assert (await collect(provider, HELLO))[-1].finish_reason == "length"


# -- tools and formats -------------------------------------------------------------------------


async def test_tool_call_round_trip(target: Target, provider: Provider) -> None:
    call = FakeToolCall("get_weather", {"place": {"city": "Oslo"}, "days": 2})
    target.fake.enqueue(Reply(tool_calls=(call,)), Reply(tool_calls=(call,)))
    asked = ChatParams(messages=HELLO.messages, tools=(WEATHER,), tool_choice="auto")

    result = await provider.chat(asked, timeout=5)
    assert result.finish_reason == "tool_calls"
    (got,) = result.tool_calls
    assert got.name == "get_weather"
    assert json.loads(got.arguments) == {"place": {"city": "Oslo"}, "days": 2}
    assert got.id

    streamed = await collect(provider, asked)
    (streamed_call,) = streamed[-1].tool_calls
    assert streamed[-1].finish_reason == "tool_calls"
    assert streamed_call.name == got.name
    assert json.loads(streamed_call.arguments) == json.loads(got.arguments)
    assert all(not c.tool_calls for c in streamed[:-1]), "tool calls arrive complete, at the end"

    # The whole tool schema, nested parts included, reached the upstream as written.
    tools = target.fake.bodies[0]["tools"]
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER.description,
                "parameters": WEATHER.parameters,
            },
        }
    ]

    target.fake.enqueue("It is sunny in Oslo.")
    follow_up = ChatParams(
        messages=(
            *HELLO.messages,
            ChatMessage("assistant", tool_calls=(got,)),
            ChatMessage("tool", '{"sky": "clear"}', tool_call_id=got.id),
        ),
        tools=(WEATHER,),
    )
    answer = await provider.chat(follow_up, timeout=5)
    assert answer.content == "It is sunny in Oslo."
    sent = target.fake.bodies[-1]["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[2]["content"] == '{"sky": "clear"}'
    if target.kind == "openai":
        assert sent[1]["tool_calls"][0]["id"] == got.id
        assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"])["days"] == 2
        assert sent[2]["tool_call_id"] == got.id
    else:
        # Ollama takes arguments as an object and matches results by tool name.
        assert sent[1]["tool_calls"][0]["function"]["arguments"]["days"] == 2
        assert sent[2]["tool_name"] == "get_weather"


async def test_ollama_call_ids_are_stable(ollama_fake: FakeOllama) -> None:
    ollama_fake.reset()
    provider = Target("ollama", ollama_fake).provider()
    call = FakeToolCall("get_weather", {"place": {"city": "Oslo"}})
    ollama_fake.enqueue(Reply(tool_calls=(call, call)), Reply(tool_calls=(call, call)))
    first = (await provider.chat(HELLO, timeout=5)).tool_calls
    second = (await collect(provider, HELLO))[-1].tool_calls
    assert [c.id for c in first] == [c.id for c in second]
    assert first[0].id != first[1].id
    await provider.aclose()


SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


@pytest.mark.parametrize(
    ("fmt", "openai_expected", "ollama_expected"),
    [
        (ResponseFormat("json_object"), {"type": "json_object"}, "json"),
        (
            ResponseFormat("json_schema", schema_name="sum", schema=SCHEMA, strict=True),
            {
                "type": "json_schema",
                "json_schema": {"name": "sum", "schema": SCHEMA, "strict": True},
            },
            SCHEMA,
        ),
    ],
)
async def test_json_formats_reach_the_upstream(
    target: Target,
    provider: Provider,
    fmt: ResponseFormat,
    openai_expected: dict[str, Any],
    ollama_expected: Any,
) -> None:
    params = ChatParams(messages=HELLO.messages, response_format=fmt)
    await provider.chat(params, timeout=5)
    await collect(provider, params)
    for body in target.fake.bodies:
        if target.kind == "openai":
            assert body["response_format"] == openai_expected
        else:
            assert body["format"] == ollama_expected


async def test_sampling_options_and_params(target: Target) -> None:
    extra = (
        {"reasoning_effort": "low"}
        if target.kind == "openai"
        else {
            "think": False,
            "keep_alive": "5m",
            "num_ctx": 8192,
            "options": {"seed": 7},
        }
    )
    provider = target.provider(target.model(**extra))
    params = ChatParams(
        messages=(ChatMessage("system", "Be brief."), *HELLO.messages),
        temperature=0.2,
        top_p=0.9,
        max_tokens=64,
        stop=("END",),
    )
    await provider.chat(params, timeout=5)
    body = target.fake.bodies[-1]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    if target.kind == "openai":
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 64)
        assert body["stop"] == ["END"]
        assert body["reasoning_effort"] == "low"
    else:
        assert body["options"] == {
            "seed": 7,
            "num_ctx": 8192,
            "temperature": 0.2,
            "top_p": 0.9,
            "num_predict": 64,
            "stop": ["END"],
        }
        assert (body["think"], body["keep_alive"]) == (False, "5m")
    await provider.aclose()


async def test_openai_max_completion_tokens_param(openai_fake: FakeOpenAI) -> None:
    openai_fake.reset()
    target = Target("openai", openai_fake)
    provider = target.provider(target.model(max_tokens_param="max_completion_tokens"))
    await provider.chat(ChatParams(messages=HELLO.messages, max_tokens=32), timeout=5)
    body = openai_fake.bodies[-1]
    assert body["max_completion_tokens"] == 32
    assert "max_tokens" not in body and "max_tokens_param" not in body
    with pytest.raises(ValueError, match="max_tokens_param"):
        OpenAIProvider(target.model(max_tokens_param="tokens"), API_KEY)
    await provider.aclose()


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "bad_request"),
        (422, "bad_request"),
        (401, "auth"),
        (403, "auth"),
        (404, "not_found"),
        (429, "rate_limited"),
        (500, "server"),
        (503, "server"),
    ],
)
async def test_status_maps_to_kind(
    target: Target, provider: Provider, status: int, kind: str
) -> None:
    target.fake.fail_next(status, count=2, message=f"upstream says {status}")
    unary = await expect_error(provider.chat(HELLO, timeout=5))
    streamed = await stream_error(provider, HELLO)
    for error in (unary, streamed):
        assert (error.kind, error.status) == (kind, status)
        assert f"upstream says {status}" in error.message
    assert unary.retryable == (kind in ("rate_limited", "server"))


async def test_rate_limit_says_when_to_retry(openai_fake: FakeOpenAI) -> None:
    openai_fake.reset()
    provider = Target("openai", openai_fake).provider()
    openai_fake.fail_next(429, retry_after=7)
    error = await expect_error(provider.chat(HELLO, timeout=5))
    assert error.kind == "rate_limited"
    assert "retry after 7 s" in error.message
    await provider.aclose()


async def test_unknown_model(target: Target) -> None:
    model = target.model().model_copy(update={"upstream_model": "no-such-model"})
    provider = target.provider(model)
    error = await expect_error(provider.chat(HELLO, timeout=5))
    assert error.status == 404
    if target.kind == "ollama":
        assert error.kind == "model_not_loaded"
        assert error.retryable
        assert 'model "no-such-model" not found' in error.message
    else:
        assert error.kind == "not_found"
    assert (await stream_error(provider, HELLO)).kind == error.kind
    await provider.aclose()


async def test_wrong_key_is_auth_and_never_echoed(openai_fake: FakeOpenAI) -> None:
    openai_fake.reset()
    target = Target("openai", openai_fake)
    wrong = "sk-wrong-key-that-must-not-leak-42"
    provider = OpenAIProvider(target.model(), wrong)
    error = await expect_error(provider.chat(HELLO, timeout=5))
    assert error.kind == "auth"
    # Even an upstream that echoes the whole key gets it scrubbed.
    openai_fake.fail_next(400, message=f"bad key {wrong} for https://user:pw@example.com/v1")
    echoed = await expect_error(provider.chat(HELLO, timeout=5))
    assert wrong not in echoed.message and "user:pw" not in echoed.message
    assert "***" in echoed.message
    await provider.aclose()


async def test_refused_port_is_connect(target: Target) -> None:
    with refused_url(target.fake.url_suffix) as url:
        provider = target.provider(target.model(base_url=url))
        for error in (
            await expect_error(provider.chat(HELLO, timeout=5)),
            await stream_error(provider, HELLO),
        ):
            assert error.kind == "connect"
            assert error.retryable
            assert "127.0.0.1" not in error.message
        await provider.aclose()


async def test_dropped_connection_before_answer_is_connect(
    target: Target, provider: Provider
) -> None:
    target.fake.drop_next(2)
    assert (await expect_error(provider.chat(HELLO, timeout=5))).kind == "connect"
    assert (await stream_error(provider, HELLO)).kind == "connect"


@pytest.mark.parametrize("drop", [False, True])
async def test_failure_mid_stream_is_protocol(
    target: Target, provider: Provider, drop: bool
) -> None:
    target.fake.enqueue("one two three four five six")
    target.fake.fail_mid_stream(3, message="the model runner crashed", drop_connection=drop)
    seen: list[Chunk] = []
    with pytest.raises(UpstreamError) as info:
        async for chunk in provider.stream(HELLO, timeout=5):
            seen.append(chunk)
    assert info.value.kind == "protocol"
    assert info.value.retryable
    assert seen and all(c.finish_reason is None for c in seen), "content came before the break"
    if not drop:
        assert "the model runner crashed" in info.value.message


async def test_timeout_before_first_byte(target: Target, provider: Provider) -> None:
    target.fake.set_latency(first_byte=3.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    error = await expect_error(provider.chat(HELLO, timeout=0.3))
    assert error.kind == "timeout"
    assert loop.time() - started < 2.5
    assert await asyncio.to_thread(target.fake.wait_for_disconnects, 1)


async def test_timeout_bounds_the_whole_stream(target: Target, provider: Provider) -> None:
    target.fake.enqueue(" ".join(["word"] * 50))
    target.fake.set_latency(between_chunks=0.05)
    seen: list[Chunk] = []
    with pytest.raises(UpstreamError) as info:
        async for chunk in provider.stream(HELLO, timeout=0.5):
            seen.append(chunk)
    assert info.value.kind == "timeout"
    assert seen, "the stream had started: the deadline covers all of it, not the first byte"
    assert await asyncio.to_thread(target.fake.wait_for_disconnects, 1)
    assert target.fake.completed == 0


async def test_cancelling_a_call_closes_the_upstream_request(
    target: Target, provider: Provider
) -> None:
    target.fake.set_latency(first_byte=5.0)
    task = asyncio.create_task(provider.chat(HELLO, timeout=30))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(target.fake.wait_for_disconnects, 1)


async def test_abandoning_a_stream_closes_the_upstream_request(
    target: Target, provider: Provider
) -> None:
    target.fake.enqueue(" ".join(["word"] * 50))
    target.fake.set_latency(between_chunks=0.05)

    async def read_slowly() -> None:
        # How the dispatcher holds a stream: closed on exit, whatever ends the task.
        async with contextlib.aclosing(provider.stream(HELLO, timeout=30)) as stream:
            async for _ in stream:
                await asyncio.sleep(10)  # the caller's deadline expires while it holds it

    task = asyncio.create_task(read_slowly())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(target.fake.wait_for_disconnects, 1)
    assert target.fake.completed == 0


async def test_ollama_rejects_non_object_arguments(ollama_fake: FakeOllama) -> None:
    ollama_fake.reset()
    provider = Target("ollama", ollama_fake).provider()
    bad = ToolCall("call_1", "get_weather", "[1, 2]")
    params = ChatParams(messages=(*HELLO.messages, ChatMessage("assistant", tool_calls=(bad,))))
    error = await expect_error(provider.chat(params, timeout=5))
    assert error.kind == "bad_request"
    assert ollama_fake.request_count == 0
    await provider.aclose()


@pytest.mark.parametrize(
    "body",
    [{"object": "chat.completion"}, {"choices": []}, {"choices": [{"finish_reason": "stop"}]}],
)
async def test_openai_unreadable_completion_is_protocol(body: dict[str, Any]) -> None:
    """A 200 whose body is not a chat.completion (a misconfigured proxy) is a protocol error,
    so the dispatcher may fall back."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    model = ModelConfig(
        provider="openai",
        upstream_model="gpt-5.5",
        base_url=f"http://127.0.0.1:{port}/v1",
        location="cloud",
        clearance="INTERNAL",
    )
    provider = OpenAIProvider(model, API_KEY)
    try:
        with pytest.raises(UpstreamError) as info:
            await provider.chat(HELLO, timeout=5)
        assert info.value.kind == "protocol" and info.value.retryable
    finally:
        await provider.aclose()
        await runner.cleanup()
