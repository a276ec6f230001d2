"""The adapter for a local (or cluster) Ollama server, on the official `ollama` SDK.

The request body is built here and sent through the SDK's transport rather than through
`AsyncClient.chat`: `chat()` re-validates tools and messages into its own pydantic models,
which silently drops nested JSON Schema (`properties` of an object property, `minimum`,
`additionalProperties`, ...) and unknown top-level fields, so tool schemas and `params` would
not reach the model as written. The SDK still does the streaming HTTP, the NDJSON parsing, the
response types and its error classes; a unary call is one POST on the gateway's aiohttp client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama
from ollama import ChatResponse

from gateway.chat import ChatMessage, ChatParams, ChatResult, Chunk, FinishReason, ToolCall, Usage
from gateway.config import ModelConfig
from gateway.providers.base import (
    UpstreamError,
    UpstreamErrorKind,
    function_tools,
    kind_for_status,
    safe_message,
)
from gateway.providers.http import JsonClient, TransportError

# `params` keys that are top-level fields of Ollama's /api/chat body; `options` (a mapping) is
# merged into the body's options, and any other key is taken as one option (e.g. `num_ctx`).
TOP_LEVEL_PARAMS = frozenset({"think", "keep_alive", "logprobs", "top_logprobs"})

# The SDK client's headers a unary call sends too (content-type is the JSON client's own).
_FORWARDED_HEADERS = frozenset({"authorization", "user-agent", "accept"})

# What the SDK and its transport raise for a failed call; ValueError and TypeError cover an
# unreadable body (bad JSON, or JSON that does not fit the SDK's response model).
_FAILURES = (
    ollama.ResponseError,
    ollama.RequestError,
    httpx.HTTPError,
    ConnectionError,
    ValueError,
    TypeError,
)


def _kind(status: int, message: str) -> UpstreamErrorKind:
    if status == 404 and "model" in message and "not found" in message:
        return "model_not_loaded"
    return kind_for_status(status)


def call_id(index: int, name: str, arguments: str) -> str:
    """Ollama gives tool calls no ids; derive one from the call so a replay gets the same."""
    digest = hashlib.sha256(f"{index}\0{name}\0{arguments}".encode()).hexdigest()
    return f"call_{digest[:24]}"


class OllamaProvider:
    """One model served by Ollama."""

    def __init__(self, model: ModelConfig, *, output_cap: int | None = None) -> None:
        """`output_cap` is sent as `num_predict` when the caller set no max_tokens: the budget
        reserves for exactly that many output tokens, so it bounds what is billed."""
        self._model = model
        self._output_cap = output_cap
        self._top_level: dict[str, Any] = {}
        self._options: dict[str, Any] = {}
        for key, value in model.params.items():
            if key in TOP_LEVEL_PARAMS:
                self._top_level[key] = value
            elif key == "options":
                if not isinstance(value, dict):
                    raise ValueError("params.options must be a mapping of Ollama options")
                self._options.update(value)
            else:
                self._options[key] = value
        self._client = ollama.AsyncClient(host=model.base_url)
        # Unary calls go over one keep-alive aiohttp session (providers/http.py): the SDK's
        # httpx stack costs several times the CPU. Same URL and headers as the SDK's client
        # (its OLLAMA_API_KEY bearer included); URLs with credentials keep the SDK's transport.
        sdk_http = self._client._client
        base = str(sdk_http.base_url)
        split = urlsplit(base)
        self._http = (
            None
            if split.username is not None or split.password is not None
            else JsonClient(
                base,
                {k: v for k, v in sdk_http.headers.items() if k.lower() in _FORWARDED_HEADERS},
            )
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self._client.close()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated

    # The Provider protocol fixes the `timeout` parameter; it bounds the call below.
    async def chat(self, params: ChatParams, *, timeout: float) -> ChatResult:
        body = self._body(params, stream=False)
        try:
            async with asyncio.timeout(timeout):
                response = await self._post_chat(body)
        except TimeoutError:
            raise _timeout(timeout) from None
        except TransportError as exc:
            raise UpstreamError("connect", f"cannot reach the upstream: {exc.kind}") from None
        except _FAILURES as exc:
            raise _error(exc, started=False) from None
        calls = _tool_calls(response, 0)
        return ChatResult(
            content=response.message.content or "",
            tool_calls=calls,
            finish_reason=_finish(response.done_reason, bool(calls)),
            usage=_usage(response),
            response_model=response.model or "",
        )

    async def _post_chat(self, body: dict[str, Any]) -> ChatResponse:
        if self._http is None:
            response: ChatResponse = await self._client._request(
                ChatResponse, "POST", "/api/chat", json=body
            )
            return response
        answer = await self._http.post("/api/chat", body)
        if not 200 <= answer.status < 300:
            # What the SDK raises for the same answer, so `_error` maps both alike.
            raise ollama.ResponseError(answer.body.decode("utf-8", "replace"), answer.status)
        return ChatResponse.model_validate_json(answer.body)

    async def stream(
        self,
        params: ChatParams,
        *,
        timeout: float,
    ) -> AsyncGenerator[Chunk, None]:
        # One absolute deadline for the whole stream, applied to each wait on the upstream:
        # an `asyncio.timeout` spanning the `yield`s would fire inside the consumer's code.
        deadline = asyncio.get_running_loop().time() + timeout
        lines = await self._client._request(
            ChatResponse, "POST", "/api/chat", json=self._body(params, stream=True), stream=True
        )
        calls: list[ToolCall] = []
        model = ""
        started = False
        try:
            iterator = lines.__aiter__()
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        line = await anext(iterator)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise _timeout(timeout) from None
                except _FAILURES as exc:
                    raise _error(exc, started=started) from None
                started = True
                model = line.model or model
                calls.extend(_tool_calls(line, len(calls)))
                if line.done:
                    yield Chunk(
                        content_delta=line.message.content or "",
                        tool_calls=tuple(calls),
                        finish_reason=_finish(line.done_reason, bool(calls)),
                        usage=_usage(line),
                        response_model=model,
                    )
                    return
                if line.message.content:
                    yield Chunk(content_delta=line.message.content, response_model=model)
            raise UpstreamError("protocol", "the stream ended without its final done line")
        finally:
            # Closing the SDK's generator closes the HTTP response: an abandoned or cancelled
            # stream stops the model instead of letting it generate for nobody.
            if isinstance(lines, AsyncGenerator):
                await lines.aclose()

    def _body(self, params: ChatParams, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model.upstream_model,
            "messages": _messages(params.messages),
            "stream": stream,
        }
        # Ollama has no tool_choice: "none" is honoured by not offering the tools; "required"
        # or a tool name cannot be enforced and leaves the choice to the model.
        if params.tools and params.tool_choice != "none":
            body["tools"] = function_tools(params.tools)
        fmt = params.response_format
        if fmt is not None and fmt.type == "json_object":
            body["format"] = "json"
        elif fmt is not None and fmt.type == "json_schema":
            body["format"] = fmt.schema or {"type": "object"}
        options = dict(self._options)
        if params.temperature is not None:
            options["temperature"] = params.temperature
        if params.top_p is not None:
            options["top_p"] = params.top_p
        cap = params.max_tokens if params.max_tokens is not None else self._output_cap
        if cap is not None:
            # Ollama's default (-1) generates until the model stops: never leave it unset.
            options["num_predict"] = cap
        if params.stop:
            options["stop"] = list(params.stop)
        if options:
            body["options"] = options
        body.update(self._top_level)
        return body


def _messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            item["tool_calls"] = [
                {"function": {"name": call.name, "arguments": _arguments(call)}}
                for call in message.tool_calls
            ]
            tool_names.update((call.id, call.name) for call in message.tool_calls)
        if message.role == "tool":
            # Ollama matches a tool result to its call by the tool's name, not by an id.
            name = message.name or tool_names.get(message.tool_call_id, "")
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except (ValueError, RecursionError):  # RecursionError: nested beyond the parser's stack
        value = None
    if not isinstance(value, dict):
        raise UpstreamError(
            "bad_request",
            f"arguments of tool call {call.name!r} must be a JSON object for Ollama",
        )
    return value


def _tool_calls(response: ChatResponse, first_index: int) -> tuple[ToolCall, ...]:
    calls = []
    for offset, call in enumerate(response.message.tool_calls or ()):
        arguments = json.dumps(dict(call.function.arguments), separators=(",", ":"))
        index = first_index + offset
        calls.append(
            ToolCall(
                id=call_id(index, call.function.name, arguments),
                name=call.function.name,
                arguments=arguments,
            )
        )
    return tuple(calls)


def _finish(done_reason: str | None, has_calls: bool) -> FinishReason:
    if done_reason == "length":
        return "length"
    # Ollama reports "stop" after tool calls; the normalized answer says why it stopped.
    return "tool_calls" if has_calls else "stop"


def _usage(response: ChatResponse) -> Usage:
    return Usage(
        input_tokens=response.prompt_eval_count or 0,
        output_tokens=response.eval_count or 0,
    )


def _timeout(timeout: float) -> UpstreamError:
    return UpstreamError("timeout", f"no complete answer within {timeout:g} s")


def _error(exc: Exception, *, started: bool) -> UpstreamError:
    if isinstance(exc, ollama.ResponseError):
        message = safe_message(str(exc.error))
        if exc.status_code < 0:
            # The SDK raises a status-less ResponseError for an {"error": ...} stream line.
            return UpstreamError("protocol", f"error in the stream: {message}")
        status = exc.status_code
        return UpstreamError(_kind(status, message), f"HTTP {status}: {message}", status=status)
    if isinstance(exc, ollama.RequestError):
        return UpstreamError("bad_request", safe_message(str(exc.error)))
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError("timeout", "the upstream did not answer in time")
    if isinstance(exc, httpx.TransportError | ConnectionError):
        # Refused or reset before the answer began: nothing usable reached us, try elsewhere.
        # Once lines have arrived, a broken connection is a broken stream.
        if started:
            return UpstreamError("protocol", f"the stream broke off: {type(exc).__name__}")
        return UpstreamError("connect", f"cannot reach the upstream: {type(exc).__name__}")
    return UpstreamError("protocol", f"unreadable answer from the upstream: {type(exc).__name__}")
