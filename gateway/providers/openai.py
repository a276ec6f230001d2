"""The adapter for any OpenAI-compatible Chat Completions endpoint (OpenAI, DeepSeek, vLLM,
Anthropic's compatibility layer, Ollama's /v1), on the official `openai` SDK.

The SDK's own retries are off: retrying and falling back to another model is the dispatcher's
job, and a hidden retry would spend the caller's deadline twice.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
from openai.types.chat import ChatCompletionChunk

from gateway.chat import ChatMessage, ChatParams, ChatResult, Chunk, FinishReason, ToolCall, Usage
from gateway.config import ModelConfig
from gateway.providers.base import UpstreamError, function_tools, kind_for_status, safe_message
from gateway.providers.http import Answer, JsonClient, TransportError

# `params` keys this adapter interprets itself; every other key goes to the upstream as part of
# the request body (for example `reasoning_effort`, `seed`, `service_tier`).
MAX_TOKENS_PARAM = "max_tokens_param"
_MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAIProvider:
    """One model behind an OpenAI-compatible endpoint."""

    def __init__(self, model: ModelConfig, api_key: str, *, output_cap: int | None = None) -> None:
        """`output_cap` is sent as the request's output limit when the caller set none: the
        budget reserves for exactly that many output tokens, so it bounds what is billed."""
        params = dict(model.params)
        max_tokens_field = params.pop(MAX_TOKENS_PARAM, "max_tokens")
        if max_tokens_field not in _MAX_TOKENS_FIELDS:
            raise ValueError(
                f"params.{MAX_TOKENS_PARAM} must be one of {', '.join(_MAX_TOKENS_FIELDS)}, "
                f"not {max_tokens_field!r}"
            )
        self._model = model
        self._api_key = api_key
        self._max_tokens_field: str = max_tokens_field
        self._output_cap = output_cap
        self._extra_body = params
        self._client = openai.AsyncOpenAI(base_url=model.base_url, api_key=api_key, max_retries=0)
        # aiohttp refuses credentials in the URL beside a bearer token; such (proxy) URLs keep
        # the SDK's transport, which is how they have always been sent.
        self._http = (
            None
            if urlsplit(model.base_url).password is not None
            or urlsplit(model.base_url).username is not None
            else JsonClient(model.base_url, {"authorization": f"Bearer {api_key}"})
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self._client.close()

    # The Provider protocol fixes the `timeout` parameter; it bounds the call below.
    async def chat(self, params: ChatParams, *, timeout: float) -> ChatResult:
        body = self._request(params)
        body.update(body.pop("extra_body", None) or {})
        try:
            async with asyncio.timeout(timeout):
                # One POST on a keep-alive aiohttp session, not the SDK: its httpx stack costs
                # several times the CPU for the same call (see providers/http.py).
                if self._http is None:
                    answer = await self._post_via_sdk(body, timeout)
                else:
                    answer = await self._http.post("/chat/completions", body)
        except TimeoutError:
            raise self._timeout(timeout) from None
        except openai.OpenAIError as exc:
            raise self._error(exc, streaming=False) from None
        except TransportError as exc:
            # No answer arrived (refused, reset, dropped): as the SDK reported it, retryable.
            raise UpstreamError("connect", f"cannot reach the upstream: {exc.kind}") from None
        if not 200 <= answer.status < 300:
            raise self._status_error(answer)
        try:
            return _result(answer.json())
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(
                "protocol", f"unreadable chat.completion from the upstream: {type(exc).__name__}"
            ) from None

    async def _post_via_sdk(self, body: dict[str, Any], timeout: float) -> Answer:
        # The SDK's generic `post`, without the typed models of `create`.
        response = await self._client.post(
            "/chat/completions", body=body, cast_to=httpx2.Response, options={"timeout": timeout}
        )
        return Answer(response.status_code, response.content, dict(response.headers))

    def _status_error(self, answer: Answer) -> UpstreamError:
        status, text = answer.status, answer.body.decode("utf-8", "replace")
        try:
            parsed: object = json.loads(text)
        except ValueError:
            parsed = None
        # The SDK's APIStatusError.body is the `error` object when there is one.
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            parsed = parsed["error"]
        message = self._safe(_upstream_message(parsed, text))
        if status == 429:
            retry_after = answer.headers.get("retry-after") or answer.headers.get("Retry-After")
            if retry_after:
                message = f"{message} (retry after {self._safe(retry_after)} s)"
        return UpstreamError(kind_for_status(status), f"HTTP {status}: {message}", status=status)

    async def stream(
        self,
        params: ChatParams,
        *,
        timeout: float,
    ) -> AsyncGenerator[Chunk, None]:
        # One absolute deadline for the whole stream, applied to each wait on the upstream:
        # an `asyncio.timeout` spanning the `yield`s would fire inside the consumer's code.
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                events = await self._client.chat.completions.create(
                    **self._request(params),
                    stream=True,
                    stream_options={"include_usage": True},
                    timeout=timeout,
                )
        except TimeoutError:
            raise self._timeout(timeout) from None
        except openai.OpenAIError as exc:
            raise self._error(exc, streaming=False) from None
        assembler = _StreamAssembler()
        try:
            iterator = events.__aiter__()
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(iterator)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._timeout(timeout) from None
                except openai.OpenAIError as exc:
                    raise self._error(exc, streaming=True) from None
                except (httpx2.HTTPError, ValueError) as exc:
                    raise UpstreamError(
                        "protocol", f"the stream broke off: {type(exc).__name__}"
                    ) from None
                chunk = assembler.feed(event)
                if chunk is not None:
                    yield chunk
            yield assembler.finish()
        finally:
            # Closes the HTTP response, so an abandoned or cancelled stream stops the upstream.
            await events.close()

    def _request(self, params: ChatParams) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self._model.upstream_model,
            "messages": [_message(m) for m in params.messages],
        }
        if params.tools:
            request["tools"] = function_tools(params.tools)
        if params.tool_choice:
            choice = params.tool_choice
            request["tool_choice"] = (
                choice
                if choice in ("auto", "none", "required")
                else {"type": "function", "function": {"name": choice}}
            )
        fmt = params.response_format
        if fmt is not None:
            if fmt.type == "json_schema":
                request["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": fmt.schema_name or "response",
                        "schema": fmt.schema or {},
                        "strict": fmt.strict,
                    },
                }
            else:
                request["response_format"] = {"type": fmt.type}
        if params.temperature is not None:
            request["temperature"] = params.temperature
        if params.top_p is not None:
            request["top_p"] = params.top_p
        cap = params.max_tokens if params.max_tokens is not None else self._output_cap
        if cap is not None:
            request[self._max_tokens_field] = cap
        if params.stop:
            request["stop"] = list(params.stop)
        if self._extra_body:
            request["extra_body"] = self._extra_body
        return request

    def _timeout(self, timeout: float) -> UpstreamError:
        return UpstreamError("timeout", f"no complete answer within {timeout:g} s")

    def _error(self, exc: openai.OpenAIError, *, streaming: bool) -> UpstreamError:
        if isinstance(exc, openai.APITimeoutError):
            return UpstreamError("timeout", "the upstream did not answer in time")
        if isinstance(exc, openai.APIConnectionError):
            if streaming:
                return UpstreamError("protocol", "the connection broke during the stream")
            return UpstreamError("connect", f"cannot reach the upstream: {_cause(exc)}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = self._safe(_upstream_message(exc.body, exc.response.text))
            if status == 429:
                retry_after = exc.response.headers.get("retry-after")
                if retry_after:
                    message = f"{message} (retry after {self._safe(retry_after)} s)"
            return UpstreamError(
                kind_for_status(status), f"HTTP {status}: {message}", status=status
            )
        if isinstance(exc, openai.APIError):
            # An `error` event inside an SSE stream: the SDK raises a bare APIError.
            return UpstreamError("protocol", f"error in the stream: {self._safe(exc.message)}")
        return UpstreamError("protocol", f"unreadable answer: {type(exc).__name__}")

    def _safe(self, text: str) -> str:
        return safe_message(text, self._api_key)


def _cause(exc: BaseException) -> str:
    # The transport error's class says refused vs reset without leaking the address.
    cause = exc.__cause__ or exc.__context__
    return type(cause).__name__ if cause is not None else type(exc).__name__


def _upstream_message(body: object, text: str) -> str:
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
    return text.strip() or "no message"


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
        out["content"] = message.content
        return out
    if message.role == "assistant" and message.tool_calls:
        # OpenAI wants null, not "", beside tool calls.
        out["content"] = message.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    else:
        out["content"] = message.content
    if message.name:
        out["name"] = message.name
    return out


def _finish(reason: str | None) -> FinishReason:
    # Compatible servers sometimes omit or invent reasons; an answer that ended is a stop.
    return _FINISH.get(reason or "stop", "stop")


def _usage(usage: Any) -> Usage | None:
    """Usage from the JSON `usage` object (cached and reasoning tokens when reported)."""
    if not usage:
        return None
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    return Usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        cached_input_tokens=cached or 0,
        reasoning_tokens=reasoning or 0,
    )


def _result(data: Any) -> ChatResult:
    """A `chat.completion` JSON body as the gateway's result."""
    choice = data["choices"][0]
    message = choice["message"]
    calls = tuple(
        ToolCall(
            id=call["id"],
            name=call["function"]["name"],
            arguments=call["function"].get("arguments") or "{}",
        )
        for call in message.get("tool_calls") or ()
        if call.get("type", "function") == "function"
    )
    return ChatResult(
        content=message.get("content") or "",
        tool_calls=calls,
        finish_reason=_finish(choice.get("finish_reason")),
        usage=_usage(data.get("usage")) or Usage(),
        response_model=data.get("model") or "",
        response_id=_response_id(data.get("id")),
    )


_RESPONSE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _response_id(value: Any) -> str:
    """The completion id for `gen_ai.response.id`: kept only when it looks like an id, since it
    goes to telemetry as it came from the upstream."""
    return value if isinstance(value, str) and _RESPONSE_ID.fullmatch(value) else ""


class _StreamAssembler:
    """Turns chat.completion.chunk events into Chunks: content passes through at once, tool
    calls are collected from their deltas and emitted whole with the final chunk."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._model = ""
        self._id = ""

    def feed(self, event: ChatCompletionChunk) -> Chunk | None:
        if event.model:
            self._model = event.model
        if event.id and not self._id:
            self._id = _response_id(event.id)
        if event.usage is not None:
            self._usage = _usage(event.usage.model_dump())
        if not event.choices:
            return None
        choice = event.choices[0]
        for delta in choice.delta.tool_calls or ():
            call = self._calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function is not None:
                if delta.function.name:
                    call["name"] += delta.function.name
                if delta.function.arguments:
                    call["arguments"] += delta.function.arguments
        if choice.finish_reason is not None:
            self._finish = _finish(choice.finish_reason)
        if choice.delta.content:
            return Chunk(content_delta=choice.delta.content, response_model=self._model)
        return None

    def finish(self) -> Chunk:
        if self._finish is None:
            raise UpstreamError("protocol", "the stream ended without a finish reason")
        calls = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call["name"]:
                raise UpstreamError("protocol", "a streamed tool call had no function name")
            # Arguments pass on as the model wrote them, as in a unary answer.
            arguments = call["arguments"] or "{}"
            calls.append(ToolCall(id=call["id"], name=call["name"], arguments=arguments))
        return Chunk(
            tool_calls=tuple(calls),
            finish_reason=self._finish,
            usage=self._usage,
            response_model=self._model,
            response_id=self._id,
        )
