"""The upstream doubles speak the real wire formats: raw bytes checked with a plain HTTP client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes._server import FakeToolCall, Reply, refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def ollama_fake() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(openai_fake: FakeOpenAI, ollama_fake: FakeOllama) -> None:
    openai_fake.reset()
    ollama_fake.reset()


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi there"}], **extra}


def sse_events(raw: bytes) -> list[str]:
    text = raw.decode()
    assert text.endswith("\n\n"), "every SSE event ends with a blank line"
    events = text[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: "), event
    return [event.removeprefix("data: ") for event in events]


# -- OpenAI ----------------------------------------------------------------------------------


def test_openai_unary_completion_shape(openai_fake: FakeOpenAI) -> None:
    openai_fake.enqueue(Reply("Four.", cached_tokens=2, reasoning_tokens=7, completion_tokens=9))
    response = httpx.post(f"{openai_fake.url}/chat/completions", json=chat_body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-5.5"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Four.",
        "refusal": None,
        "annotations": [],
    }
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == 9
    assert usage["total_tokens"] == usage["prompt_tokens"] + 9
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 7
    assert openai_fake.bodies == [chat_body()]
    assert openai_fake.completed == 1


def test_openai_unary_tool_calls_have_null_content(openai_fake: FakeOpenAI) -> None:
    openai_fake.enqueue(Reply(tool_calls=(FakeToolCall("get_weather", {"city": "Oslo"}),)))
    body = httpx.post(f"{openai_fake.url}/chat/completions", json=chat_body()).json()
    message = body["choices"][0]["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_stream_bytes_with_usage_and_split_tool_call(openai_fake: FakeOpenAI) -> None:
    openai_fake.enqueue(
        Reply("Let me look.", tool_calls=(FakeToolCall("get_weather", {"city": "Oslo"}),))
    )
    body = chat_body(stream=True, stream_options={"include_usage": True})
    response = httpx.post(f"{openai_fake.url}/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert content == "Let me look."
    tool_deltas = [d for c in chunks[:-1] for d in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert len(tool_deltas) > 2, "arguments arrive over several deltas"
    assert tool_deltas[0]["id"].startswith("call_")
    assert tool_deltas[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert all("id" not in d and "name" not in d["function"] for d in tool_deltas[1:])
    assert "".join(d["function"]["arguments"] for d in tool_deltas) == '{"city":"Oslo"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_openai_stream_without_include_usage_has_no_usage_chunk(openai_fake: FakeOpenAI) -> None:
    response = httpx.post(f"{openai_fake.url}/chat/completions", json=chat_body(stream=True))
    events = sse_events(response.content)
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_openai_models(openai_fake: FakeOpenAI) -> None:
    body = httpx.get(f"{openai_fake.url}/models").json()
    assert body["object"] == "list"
    assert {m["id"] for m in body["data"]} >= {"gpt-5.5", "gpt-5-mini"}


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_openai_injected_errors(openai_fake: FakeOpenAI, status: int) -> None:
    openai_fake.fail_next(status, retry_after=3 if status == 429 else None)
    response = httpx.post(f"{openai_fake.url}/chat/completions", json=chat_body())
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if status == 429:
        assert response.headers["retry-after"] == "3"
        assert error["code"] == "rate_limit_exceeded"
    # The failure is used up: the next request succeeds.
    assert httpx.post(f"{openai_fake.url}/chat/completions", json=chat_body()).status_code == 200


def test_openai_validation_and_unknown_model(openai_fake: FakeOpenAI) -> None:
    url = f"{openai_fake.url}/chat/completions"
    missing = httpx.post(url, json={"model": "gpt-5.5"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"
    unknown = httpx.post(url, json=chat_body(model="gpt-0"))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    garbage = httpx.post(url, content=b"{nope", headers={"content-type": "application/json"})
    assert garbage.status_code == 400


def test_openai_checks_the_key_when_given() -> None:
    with FakeOpenAI(api_key="sk-right-key-1234") as fake:
        url = f"{fake.url}/chat/completions"
        wrong = httpx.post(url, json=chat_body(), headers={"Authorization": "Bearer sk-wrong-9999"})
        assert wrong.status_code == 401
        assert "sk-wrong-9999" not in wrong.text, "like OpenAI, the key is shown masked"
        right = httpx.post(
            url, json=chat_body(), headers={"Authorization": "Bearer sk-right-key-1234"}
        )
        assert right.status_code == 200


def test_openai_mid_stream_error_event(openai_fake: FakeOpenAI) -> None:
    openai_fake.enqueue("one two three four five")
    openai_fake.fail_mid_stream(3, message="overloaded")
    response = httpx.post(f"{openai_fake.url}/chat/completions", json=chat_body(stream=True))
    events = sse_events(response.content)
    assert len(events) == 4
    assert json.loads(events[-1])["error"]["message"] == "overloaded"
    assert "[DONE]" not in events


def test_drop_and_mid_stream_drop_reset_the_connection(openai_fake: FakeOpenAI) -> None:
    openai_fake.drop_next()
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{openai_fake.url}/chat/completions", json=chat_body())
    openai_fake.fail_mid_stream(2, drop_connection=True)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{openai_fake.url}/chat/completions", json=chat_body(stream=True))
    assert openai_fake.request_count == 2
    assert openai_fake.disconnects == 0, "a drop by the fake is not a client disconnect"


def test_latency_and_client_disconnect_is_counted(openai_fake: FakeOpenAI) -> None:
    openai_fake.set_latency(first_byte=2.0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{openai_fake.url}/chat/completions", json=chat_body(), timeout=0.2)
    assert openai_fake.wait_for_disconnects(1)
    assert openai_fake.completed == 0


def test_disconnect_during_stream_is_counted(openai_fake: FakeOpenAI) -> None:
    openai_fake.enqueue("a b c d e f g h i j")
    openai_fake.set_latency(between_chunks=0.2)
    with httpx.stream(
        "POST", f"{openai_fake.url}/chat/completions", json=chat_body(stream=True)
    ) as response:
        for _ in response.iter_bytes():
            break
    assert openai_fake.wait_for_disconnects(1)


def test_enqueue_is_fifo_then_default_is_deterministic(openai_fake: FakeOpenAI) -> None:
    openai_fake.enqueue("first", "second")
    url = f"{openai_fake.url}/chat/completions"
    answers = [
        httpx.post(url, json=chat_body()).json()["choices"][0]["message"]["content"]
        for _ in range(4)
    ]
    assert answers[:2] == ["first", "second"]
    assert answers[2] == answers[3] == openai_fake.default_content


# -- Ollama ----------------------------------------------------------------------------------


def ollama_body(**extra: Any) -> dict[str, Any]:
    return {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_ollama_ndjson_stream_bytes(ollama_fake: FakeOllama) -> None:
    ollama_fake.enqueue(Reply("Hello you", tool_calls=(FakeToolCall("add", {"a": 1, "b": 2}),)))
    response = httpx.post(f"{ollama_fake.url}/api/chat", json=ollama_body())
    assert response.headers["content-type"] == "application/x-ndjson"
    raw = response.content
    assert raw.endswith(b"}\n")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert "".join(line["message"]["content"] for line in lines) == "Hello you"
    (call,) = [c for line in lines for c in line["message"].get("tool_calls", ())]
    assert call == {"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}, "no id"
    final = lines[-1]
    assert final["done_reason"] == "stop"
    for key in ("total_duration", "prompt_eval_count", "eval_count", "eval_duration"):
        assert isinstance(final[key], int)


def test_ollama_unary(ollama_fake: FakeOllama) -> None:
    ollama_fake.enqueue(Reply("Done.", finish_reason="length", prompt_tokens=11))
    body = httpx.post(f"{ollama_fake.url}/api/chat", json=ollama_body(stream=False)).json()
    assert body["message"] == {"role": "assistant", "content": "Done."}
    assert body["done"] is True
    assert body["done_reason"] == "length"
    assert body["prompt_eval_count"] == 11


def test_ollama_tags_and_errors(ollama_fake: FakeOllama) -> None:
    tags = httpx.get(f"{ollama_fake.url}/api/tags").json()
    assert [m["name"] for m in tags["models"]] == list(ollama_fake.models)
    missing = httpx.post(f"{ollama_fake.url}/api/chat", json=ollama_body(model="phi9"))
    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "phi9" not found, try pulling it first'}
    ollama_fake.fail_next(503)
    busy = httpx.post(f"{ollama_fake.url}/api/chat", json=ollama_body())
    assert busy.status_code == 503
    assert set(busy.json()) == {"error"}


def test_ollama_error_line_mid_stream(ollama_fake: FakeOllama) -> None:
    ollama_fake.enqueue("one two three four")
    ollama_fake.fail_mid_stream(2, message="model runner crashed")
    response = httpx.post(f"{ollama_fake.url}/api/chat", json=ollama_body())
    lines = [json.loads(line) for line in response.content.splitlines()]
    assert len(lines) == 3
    assert lines[-1] == {"error": "model runner crashed"}


# -- helpers ---------------------------------------------------------------------------------


def test_refused_url_refuses() -> None:
    with refused_url("/v1") as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        with pytest.raises(httpx.ConnectError):
            httpx.get(url)


def test_runs_as_a_module() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ollama_server", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/api/tags").status_code == 200
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        process.terminate()
        assert process.wait(10) == 0
