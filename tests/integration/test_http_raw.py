"""The HTTP API with raw requests: malformed input gets a 400 (or 404/405/413) in OpenAI's error
shape naming the field, never a stack trace; the limits are the gRPC surface's; authentication
refuses what gRPC refuses; the SSE framing is exact."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from gateway.auth import hash_key
from gateway.server import Gateway
from tests.fakes._server import Reply
from tests.fakes.ollama_server import FakeOllama
from tests.harness import make_config, ollama_model, serve

pytestmark = pytest.mark.integration

KEY = "cg_raw____" + "r" * 30
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
async def base(ollama: FakeOllama) -> AsyncIterator[str]:
    ollama.reset()
    config = make_config(
        {"local": ollama_model(ollama.url)},
        "local",
        http={"listen": "127.0.0.1:0"},
        auth={"mode": "api_key", "api_keys": [{"tenant": "raw", "sha256": hash_key(KEY)}]},
        server={"listen": "127.0.0.1:0", "max_message_bytes": 4096},
        limits={"max_message_chars": 100},
    )
    async with serve(config) as (gateway, _):
        yield _base(gateway)


def _base(gateway: Gateway) -> str:
    assert gateway.http is not None
    return f"http://127.0.0.1:{gateway.http.port}"


async def post(
    url: str, data: bytes | str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers={**AUTH, **(headers or {})}) as response,
    ):
        return response.status, dict(response.headers), await response.json(content_type=None)


def chat(**fields: Any) -> str:
    return json.dumps({"model": "local", "messages": [{"role": "user", "content": "hi"}], **fields})


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ("{not json", None, "not valid JSON"),
        ("[1, 2]", "body", "must be an object"),
        (json.dumps({"model": "local"}), "messages", "must be an array"),
        (json.dumps({"messages": []}), "messages", "at least one message"),
        (
            json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}),
            "messages[0].role",
            "must be",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": 7}]}),
            "messages[0].content",
            "must be an array",
        ),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}
                    ]
                }
            ),
            "messages[0].content[0].type",
            "only 'text'",
        ),
        (chat(logit_bias={"1": 2}), "logit_bias", "not supported"),
        (chat(n=2), "n", "n must be 1"),
        (chat(stream="yes"), "stream", "true or false"),
        (chat(temperature="hot"), "temperature", "must be a number"),
        (chat(max_tokens=1.5), "max_tokens", "must be an integer"),
        (chat(tools=[{"type": "retrieval"}]), "tools[0].type", "must be 'function'"),
        (chat(response_format={"type": "xml"}), "response_format.type", "must be"),
        (
            chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
            "response_format.json_schema.name",
            "is required",
        ),
        (chat(celgate={"classification": "SECRET"}), "celgate.classification", "must be one"),
        (chat(celgate={"tenant": "other"}), "celgate.tenant", "not a celgate input"),
        # The gRPC surface's limits (limits.max_message_chars is 100 here).
        (
            json.dumps({"messages": [{"role": "user", "content": "x" * 101}]}),
            "messages[0].content",
            "the limit is 100",
        ),
    ],
)
async def test_malformed_input_is_a_400_naming_the_field(
    base: str, ollama: FakeOllama, body: str, param: str | None, says: str
) -> None:
    status, _, payload = await post(f"{base}/v1/chat/completions", body)
    assert status == 400, payload
    error = payload["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "INVALID_REQUEST"
    assert error["param"] == param
    assert says in error["message"]
    assert payload["celgate"]["reason"] == "INVALID_REQUEST"
    assert "Traceback" not in json.dumps(payload)
    assert ollama.request_count == 0


async def test_bad_header_inputs(base: str) -> None:
    status, _, payload = await post(
        f"{base}/v1/chat/completions", chat(), {"x-celgate-labels": "no-equals-sign"}
    )
    assert status == 400 and payload["error"]["param"] == "x-celgate-labels"
    status, _, payload = await post(
        f"{base}/v1/chat/completions", chat(), {"x-celgate-task-type": "juggling"}
    )
    assert status == 400 and payload["error"]["param"] == "x-celgate-task-type"


async def test_deeply_nested_json_is_a_400(base: str) -> None:
    deep = "[" * 1500 + "]" * 1500
    status, _, payload = await post(f"{base}/v1/chat/completions", deep)
    assert status == 400 and "too deeply" in payload["error"]["message"]
    schema = "{" + '"a":{' * 150 + "}" * 150 + "}"
    tools = f'[{{"type": "function", "function": {{"name": "f", "parameters": {schema}}}}}]'
    body = chat()[:-1] + f', "tools": {tools}}}'
    status, _, payload = await post(f"{base}/v1/chat/completions", body)
    assert status == 400, payload
    assert payload["error"]["param"] == "tools[0].parameters_json"


async def test_oversized_body_is_413(base: str) -> None:
    status, _, payload = await post(f"{base}/v1/chat/completions", "x" * 5000)
    assert status == 413
    assert "max_message_bytes" in payload["error"]["message"]


async def test_unknown_path_and_wrong_method(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/chat/completions", headers=AUTH) as response:
            assert response.status == 405
            assert (await response.json())["error"]["code"] == "METHOD_NOT_ALLOWED"
        async with session.post(f"{base}/v1/embeddings", headers=AUTH, data="{}") as response:
            assert response.status == 404
            assert (await response.json())["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"bearer {KEY}x"},
    ],
)
async def test_authentication_is_required(base: str, headers: dict[str, str]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/v1/chat/completions", data=chat(), headers=headers) as response,
    ):
        payload = await response.json()
        assert response.status == 401
        assert payload["error"]["code"] == "UNAUTHENTICATED"
        assert response.headers["x-celgate-decision-id"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/v1/models", headers=headers) as response,
    ):
        assert response.status == 401


async def test_two_credentials_are_refused(base: str) -> None:
    headers = [("Authorization", f"Bearer {KEY}"), ("Authorization", f"Bearer {KEY}")]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/v1/chat/completions", data=chat(), headers=headers) as response,
    ):
        assert response.status == 401


async def test_sse_framing(base: str, ollama: FakeOllama) -> None:
    ollama.enqueue(Reply(content="a b"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/v1/chat/completions",
            data=chat(stream=True, stream_options={"include_usage": True}),
            headers=AUTH,
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-celgate-decision-id"]
        text = (await response.read()).decode()
    events = text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["total_tokens"] > 0
    assert payloads[-1]["celgate"]["decision_id"] == response.headers["x-celgate-decision-id"]
    assert {p["id"] for p in payloads} == {f"chatcmpl-{response.headers['x-celgate-decision-id']}"}
