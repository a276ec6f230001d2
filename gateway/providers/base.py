"""The normalized types every provider adapter speaks, and the Provider protocol.

The pipeline never sees a provider's own types: adapters translate to and from these, and map
their SDK's errors to `UpstreamError`, which says whether trying another model makes sense.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
ResponseFormatType = Literal["text", "json_object", "json_schema"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)  # JSON Schema


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: ResponseFormatType
    schema_name: str = ""
    schema: dict[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ChatParams:
    """One chat request, provider-neutral. The model is chosen separately."""

    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None  # "auto", "none", "required" or a tool name
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # part of input_tokens, when the provider reports it
    reasoning_tokens: int = 0  # part of output_tokens, when the provider reports it


@dataclass(frozen=True, slots=True)
class ChatResult:
    content: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason
    usage: Usage
    response_model: str  # the model id the upstream says answered


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed answer. Tool calls are assembled by the adapter and arrive
    complete; the last chunk carries `finish_reason` and `usage`."""

    content_delta: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    response_model: str = ""


UpstreamErrorKind = Literal[
    "connect",  # refused, reset, DNS: nothing reached the model
    "timeout",
    "rate_limited",  # HTTP 429
    "server",  # HTTP 5xx
    "model_not_loaded",  # Ollama: model not found / not pulled
    "bad_request",  # HTTP 400/422: the request itself is wrong
    "auth",  # HTTP 401/403: our key is wrong
    "not_found",  # HTTP 404 other than a missing model
    "protocol",  # the upstream spoke something we could not read, or failed mid-stream
]

RETRYABLE: frozenset[UpstreamErrorKind] = frozenset(
    {"connect", "timeout", "rate_limited", "server", "model_not_loaded", "protocol"}
)


def function_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    """Tool definitions in the `{"type": "function", ...}` form OpenAI and Ollama share."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
    ]


def kind_for_status(status: int) -> UpstreamErrorKind:
    """The failure kind of an HTTP error status (Ollama's missing model is told apart by its
    adapter, from the message)."""
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    return "bad_request"


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_MAX_MESSAGE = 500


def safe_message(text: str, secret: str = "") -> str:
    """Upstream error text, made safe to pass on: it may echo our key or a URL with
    credentials, and it is cut to a readable length."""
    if secret:
        text = text.replace(secret, "***")
    text = _URL_CREDENTIALS.sub("***@", text)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


class UpstreamError(Exception):
    """A failed upstream call. `message` is safe to show: never a key or a URL credential."""

    def __init__(self, kind: UpstreamErrorKind, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


class Provider(Protocol):
    """One upstream model endpoint. `timeout` is seconds for the whole call (the caller's
    remaining deadline capped by the model's own timeout)."""

    async def chat(self, params: ChatParams, *, timeout: float) -> ChatResult: ...

    def stream(self, params: ChatParams, *, timeout: float) -> AsyncGenerator[Chunk, None]: ...

    async def aclose(self) -> None: ...
