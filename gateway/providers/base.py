"""The Provider protocol and the upstream failure type every adapter speaks.

The pipeline never sees a provider's own types: adapters translate the chat values of
`gateway.chat` to and from their wire format, and map their SDK's errors to `UpstreamError`,
which says whether trying another model makes sense.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any, Literal, Protocol

from gateway.chat import ChatParams, ChatResult, Chunk, ToolSpec

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
