"""The wire formats the HTTP surface speaks, each as parse / answer / stream-encode / error-shape
functions, so one handler serves them all over the one pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.chat import ChatResult, Chunk, Route
from gateway.http import chat_completions, messages
from gateway.http.chat_completions import ChatCall
from gateway.http.status import HttpError, anthropic_error

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    return _DUMPS(value).encode()


class StreamEncoder(Protocol):
    def encode(self, chunk: Chunk, route: Route | None) -> bytes: ...

    def done(self) -> bytes: ...

    def error(self, error: HttpError) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Wire:
    name: str
    # The `service` of the request's Call: names its SERVER span (`{service}/Chat`).
    service: str
    parse: Callable[[Any, Mapping[str, str]], ChatCall]
    answer: Callable[[ChatResult, Route], dict[str, Any]]
    encoder: Callable[[str, ChatCall], StreamEncoder]
    shape: Callable[[HttpError], HttpError]
    # A header that carries the API key instead of `Authorization: Bearer` (Anthropic's SDKs
    # send `x-api-key`).
    key_header: str | None = None


class _OpenAIStream:
    """`data: {chunk}` events, ending with `data: [DONE]`; an error is a `data: {error}` event."""

    def __init__(self, decision_id: str, call: ChatCall) -> None:
        self._writer = chat_completions.ChunkWriter(decision_id, call.model, call.include_usage)

    def encode(self, chunk: Chunk, route: Route | None) -> bytes:
        return b"".join(b"data: " + dumps(c) + b"\n\n" for c in self._writer.chunks(chunk, route))

    def done(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, error: HttpError) -> bytes:
        return b"data: " + dumps(error.body) + b"\n\n"


class _AnthropicStream:
    """Named events (`event: message_start` ...), ending with message_stop; an error is an
    `event: error`."""

    def __init__(self, decision_id: str, call: ChatCall) -> None:
        self._writer = messages.EventWriter(decision_id, call.model)

    def encode(self, chunk: Chunk, route: Route | None) -> bytes:
        return b"".join(
            b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"
            for name, data in self._writer.events(chunk, route)
        )

    def done(self) -> bytes:
        return b""

    def error(self, error: HttpError) -> bytes:
        return b"event: error\ndata: " + dumps(anthropic_error(error).body) + b"\n\n"


def _same(error: HttpError) -> HttpError:
    return error


OPENAI = Wire(
    name="openai",
    service="celgate.http.OpenAI",
    parse=chat_completions.parse_chat,
    answer=chat_completions.completion_json,
    encoder=_OpenAIStream,
    shape=_same,
)
ANTHROPIC = Wire(
    name="anthropic",
    service="celgate.http.Anthropic",
    parse=messages.parse_messages,
    answer=messages.message_json,
    encoder=_AnthropicStream,
    shape=anthropic_error,
    key_header="x-api-key",
)
