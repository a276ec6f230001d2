"""The OpenAI-compatible HTTP API, called with the real `openai` Python SDK against a real gateway
(in-process here; tests/integration/test_http_process.py runs it as `celgate serve`): unary and
streamed completions, tools, JSON schema, celgate's inputs and outputs, and every refusal
raised as the SDK's own exception class."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from gateway.auth import hash_key
from gateway.server import Gateway
from tests.fakes._server import FakeToolCall, Reply, refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model, serve

pytestmark = pytest.mark.integration

KEY = "cg_http_a_" + "a" * 30
LIMITED_KEY = "cg_http_b_" + "b" * 30
BROKE_KEY = "cg_http_c_" + "c" * 30


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
    with refused_url("/v1") as dead:
        config = make_config(
            {
                "local": ollama_model(ollama.url),
                "cloud": openai_model(cloud.url, price=priced),
                "dead": openai_model(dead),
            },
            "local",
            http={"listen": "127.0.0.1:0"},
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
        async with serve(config) as (gw, _):
            yield gw


def sdk(gateway: Gateway, key: str = KEY) -> openai.AsyncOpenAI:
    assert gateway.http is not None
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{gateway.http.port}/v1", api_key=key, max_retries=0
    )


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_unary_completion_with_celgate_headers_and_body(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(content="Paris.", prompt_tokens=9, completion_tokens=3))
    raw = await sdk(gateway).chat.completions.with_raw_response.create(
        model="cloud", messages=user("Capital of France?"), max_completion_tokens=100
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Paris."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "cloud"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 3)
    celgate = (completion.model_extra or {})["celgate"]
    assert completion.celgate == celgate  # type: ignore[attr-defined]  # as the README shows
    assert celgate["model"] == "cloud" and celgate["location"] == "cloud"
    assert celgate["rule"] == "preferred/1"
    assert celgate["cost_usd"] == pytest.approx(3 * 10.0 / 1e6)
    assert raw.headers["x-celgate-decision-id"] == celgate["decision_id"]
    assert raw.headers["x-celgate-model"] == "cloud"
    assert raw.headers["x-celgate-rule"] == "preferred/1"
    assert float(raw.headers["x-celgate-cost-usd"]) == pytest.approx(celgate["cost_usd"])
    assert completion.id == f"chatcmpl-{celgate['decision_id']}"
    # The cap reached the upstream.
    sent = cloud.bodies[-1]
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 100


@pytest.mark.parametrize("model", ["auto", ""])
async def test_auto_or_empty_model_lets_the_policy_decide(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI], model: str
) -> None:
    ollama, cloud = upstreams
    ollama.enqueue(Reply(content="local answer"))
    completion = await sdk(gateway).chat.completions.create(model=model, messages=user("hi"))
    assert completion.model == "local"
    assert completion.choices[0].message.content == "local answer"
    assert cloud.request_count == 0


async def test_stream_ends_with_usage_route_and_done(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(content="one two three four", prompt_tokens=7, completion_tokens=4))
    stream = await sdk(gateway).chat.completions.create(
        model="cloud",
        messages=user("Count"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 4)
    assert (last.model_extra or {})["celgate"]["model"] == "cloud"
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_without_include_usage_has_no_usage_chunk(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    ollama, _ = upstreams
    ollama.enqueue(Reply(content="a b c"))
    stream = await sdk(gateway).chat.completions.create(
        model="local", messages=user("abc"), stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None and c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].model_extra or {})["celgate"]["model"] == "local"


async def test_tool_calls_round_trip(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(tool_calls=(FakeToolCall("get_weather", {"city": "Oslo"}),)))
    cloud.enqueue(Reply(content="It is sunny in Oslo."))
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    client = sdk(gateway)
    first = await client.chat.completions.create(
        model="cloud", messages=user("Weather in Oslo?"), tools=tools, tool_choice="auto"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call: Any = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    sent = cloud.bodies[-1]
    assert sent["tools"][0]["function"]["parameters"] == tools[0]["function"]["parameters"]
    assert sent["tool_choice"] == "auto"

    history: Any = [
        *user("Weather in Oslo?"),
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    second = await client.chat.completions.create(model="cloud", messages=history, tools=tools)
    assert second.choices[0].message.content == "It is sunny in Oslo."
    replayed = cloud.bodies[-1]["messages"]
    assert replayed[1]["tool_calls"][0]["id"] == call.id
    assert replayed[2] == {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'}


async def test_streamed_tool_call(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(tool_calls=(FakeToolCall("lookup", {"id": 7}),)))
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    stream = await sdk(gateway).chat.completions.create(
        model="cloud", messages=user("look it up"), tools=tools, stream=True
    )
    chunks = [chunk async for chunk in stream]
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1
    assert calls[0].function is not None and calls[0].function.name == "lookup"
    assert json.loads(calls[0].function.arguments or "") == {"id": 7}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


class Weather(BaseModel):
    city: str
    sky: str


async def test_json_schema_through_the_sdks_parse_helper(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(content='{"city": "Oslo", "sky": "clear"}'))
    completion = await sdk(gateway).chat.completions.parse(
        model="cloud", messages=user("Weather in Oslo as JSON"), response_format=Weather
    )
    assert completion.choices[0].message.parsed == Weather(city="Oslo", sky="clear")
    sent = cloud.bodies[-1]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Weather"
    assert sent["json_schema"]["strict"] is True
    assert set(sent["json_schema"]["schema"]["properties"]) == {"city", "sky"}


async def test_models_lists_auto_and_the_catalogue(gateway: Gateway) -> None:
    page = await sdk(gateway).models.list()
    ids = [m.id for m in page.data]
    assert ids == ["auto", "local", "cloud", "dead"]
    cloud = next(m for m in page.data if m.id == "cloud")
    assert (cloud.model_extra or {})["celgate"]["clearance"] == "INTERNAL"


async def test_celgate_inputs_from_extra_body_and_headers(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    client = sdk(gateway)
    # Labels from the header name the fallback chain (the test policy reads them): the dead
    # model fails and the cloud model answers, so the label reached the policy.
    cloud.enqueue(Reply(content="from the fallback"))
    completion = await client.chat.completions.create(
        model="dead",
        messages=user("hi"),
        extra_headers={"x-celgate-labels": "fallbacks=cloud, team=a"},
    )
    assert completion.model == "cloud"
    assert (completion.model_extra or {})["celgate"]["attempts"] == 2
    # A declared classification in extra_body is enforced: CONFIDENTIAL never reaches the
    # INTERNAL cloud model.
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await client.chat.completions.create(
            model="cloud",
            messages=user("nothing sensitive in the text"),
            extra_body={"celgate": {"classification": "confidential", "task_type": "chat"}},
        )
    assert denied.value.code == "DATA_RESIDENCY"
    # The same through the header.
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(
            model="cloud",
            messages=user("nothing sensitive in the text"),
            extra_headers={"x-celgate-classification": "RESTRICTED"},
        )
    # Header and body must agree.
    with pytest.raises(openai.BadRequestError) as conflict:
        await client.chat.completions.create(
            model="local",
            messages=user("hi"),
            extra_headers={"x-celgate-task-type": "planning"},
            extra_body={"celgate": {"task_type": "code_generation"}},
        )
    assert conflict.value.param == "celgate.task_type"
    assert cloud.request_count == 1  # only the fallback call


async def test_errors_map_to_the_sdks_exception_classes(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        await sdk(gateway, key="cg_wrong_" + "x" * 30).chat.completions.create(
            model="local", messages=user("hi")
        )
    assert unauthenticated.value.status_code == 401
    assert unauthenticated.value.code == "UNAUTHENTICATED"
    assert unauthenticated.value.type == "authentication_error"

    client = sdk(gateway)
    with pytest.raises(openai.BadRequestError) as invalid:
        await client.chat.completions.create(model="local", messages=user("hi"), temperature=5)
    assert invalid.value.param == "temperature"
    assert invalid.value.code == "INVALID_REQUEST"

    with pytest.raises(openai.NotFoundError) as unknown:
        await client.chat.completions.create(model="gpt-9", messages=user("hi"))
    assert unknown.value.param == "model"
    assert "gpt-9" in unknown.value.message

    with pytest.raises(openai.PermissionDeniedError) as residency:
        await client.chat.completions.create(
            model="cloud", messages=user("CONFIDENTIAL: merger terms")
        )
    assert residency.value.code == "DATA_RESIDENCY"
    assert residency.value.response.headers["x-celgate-decision-id"]
    # The refusal quotes no content.
    assert "merger" not in residency.value.response.text

    with pytest.raises(openai.RateLimitError) as budget:
        await sdk(gateway, BROKE_KEY).chat.completions.create(
            model="cloud", messages=user("hi"), max_tokens=1000
        )
    assert budget.value.code == "BUDGET_EXHAUSTED"
    assert budget.value.type == "insufficient_quota"
    assert budget.value.response.headers["x-should-retry"] == "false"

    limited = sdk(gateway, LIMITED_KEY)
    await limited.chat.completions.create(model="local", messages=user("first"))
    with pytest.raises(openai.RateLimitError) as rate:
        await limited.chat.completions.create(model="local", messages=user("second"))
    assert rate.value.code == "RATE_LIMITED"
    assert int(rate.value.response.headers["retry-after"]) >= 1
    assert int(rate.value.response.headers["retry-after-ms"]) > 0

    with pytest.raises(openai.InternalServerError) as down:
        await client.chat.completions.create(model="dead", messages=user("hi"))
    assert down.value.status_code == 503
    assert down.value.code == "UPSTREAM_UNAVAILABLE"
    assert cloud.request_count == 0


async def test_stream_refusals_are_http_errors_before_the_first_chunk(gateway: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as residency:
        await sdk(gateway).chat.completions.create(
            model="cloud", messages=user("CONFIDENTIAL: merger terms"), stream=True
        )
    assert residency.value.code == "DATA_RESIDENCY"
    with pytest.raises(openai.InternalServerError):
        await sdk(gateway).chat.completions.create(model="dead", messages=user("x"), stream=True)


async def test_failure_mid_stream_is_an_error_event(
    gateway: Gateway, upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    cloud.enqueue(Reply(content="one two three four five six"))
    cloud.fail_mid_stream(after_chunks=2)
    stream = await sdk(gateway).chat.completions.create(
        model="cloud", messages=user("count"), stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as broken:
        async for chunk in stream:
            received.append(chunk)
    assert received, "the first chunks arrived before the failure"
    assert broken.value.code == "UPSTREAM_UNAVAILABLE"
