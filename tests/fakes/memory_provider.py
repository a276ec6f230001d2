"""An in-memory `Provider` for unit tests: answers at once (no network), or raises scripted
upstream errors first. The end-to-end tests use the HTTP fakes beside it instead."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from gateway.chat import ChatParams, ChatResult, Chunk, Usage
from gateway.providers.base import UpstreamError, UpstreamErrorKind


class MemoryProvider:
    """Answers `content` in `chunks` pieces (streams) or at once (chat), with `usage`. `errors`
    are raised by the next calls, one each; `fail_after` breaks a stream after that many
    chunks. `received` keeps the parameters of every call."""

    def __init__(
        self,
        errors: list[UpstreamErrorKind] | None = None,
        chunks: int = 3,
        *,
        usage: Usage | None = None,
        response_model: str = "m",
    ) -> None:
        self.errors = list(errors or [])
        self.calls = 0
        self.chunks = chunks
        self.fail_after: int | None = None
        self.usage = usage or Usage(1, 1)
        self.response_model = response_model
        self.received: list[ChatParams] = []
        self.closed = False

    def _next_error(self, params: ChatParams) -> None:
        self.calls += 1
        self.received.append(params)
        if self.errors:
            raise UpstreamError(self.errors.pop(0), "scripted", status=400)

    async def chat(self, params: ChatParams, *, timeout: float) -> ChatResult:
        self._next_error(params)
        return ChatResult("ok", (), "stop", self.usage, self.response_model)

    async def stream(self, params: ChatParams, *, timeout: float) -> AsyncGenerator[Chunk, None]:
        self._next_error(params)
        for i in range(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise UpstreamError("protocol", "broke")
            yield Chunk(content_delta=f"{i} ")
        yield Chunk(finish_reason="stop", usage=self.usage, response_model=self.response_model)

    async def aclose(self) -> None:
        self.closed = True
