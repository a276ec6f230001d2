"""Calling the chosen models: the provider per alias, the fallback chain, the deadline.

The residency check runs here again, right before each call, so that no code path between the
policy and the wire can send content to a model not cleared for it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from gateway.config import Config, ModelConfig
from gateway.enforce import violation
from gateway.errors import DeadlineExceeded, PermissionDenied, Unavailable, UpstreamRejected
from gateway.levels import Level
from gateway.providers.base import ChatParams, ChatResult, Chunk, Provider, UpstreamError

log = logging.getLogger(__name__)


def build_provider(alias: str, model: ModelConfig) -> Provider:
    """Create the adapter for one catalogue entry. Raises `LookupError` when the model cannot be
    used (its API key variable is unset); the message names the variable, never a value."""
    if model.provider == "ollama":
        from gateway.providers.ollama import OllamaProvider

        return OllamaProvider(model)
    from gateway.providers.openai import OpenAIProvider

    if model.api_key_env is None:
        # OpenAI-compatible servers without auth (vLLM, llama.cpp) still need a non-empty key.
        return OpenAIProvider(model, api_key="unused")
    key = os.environ.get(model.api_key_env, "")
    if not key:
        raise LookupError(f"environment variable {model.api_key_env} is not set")
    return OpenAIProvider(model, api_key=key)


@dataclass(frozen=True, slots=True)
class Attempt:
    model: str
    error: str | None  # the error kind when this attempt failed


@dataclass(frozen=True, slots=True)
class Answer:
    result: ChatResult
    model: str
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True, slots=True)
class StreamPiece:
    chunk: Chunk
    model: str
    attempts: tuple[Attempt, ...]


class Dispatcher:
    def __init__(self, config: Config) -> None:
        self._models: Mapping[str, ModelConfig] = config.models
        self._max_attempts = config.dispatch.max_attempts
        self._providers: dict[str, Provider] = {}
        self.unavailable: dict[str, str] = {}
        for alias, model in config.models.items():
            try:
                self._providers[alias] = build_provider(alias, model)
            except LookupError as exc:
                self.unavailable[alias] = str(exc)
                log.warning("model %s is unavailable: %s", alias, exc)

    def healthy(self, alias: str) -> bool:
        return alias in self._providers

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()

    def _timeout(self, alias: str, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline expired before a model answered")
        return min(self._models[alias].timeout_s, remaining)

    def _provider(self, alias: str, classification: Level) -> Provider | None:
        reason = violation(alias, self._models[alias], classification)
        if reason is not None:
            # Unreachable when the pipeline enforced first; kept as the last line of defence.
            raise PermissionDenied(reason, reason="DATA_RESIDENCY", model=alias)
        return self._providers.get(alias)

    def _give_up(self, attempts: list[Attempt], last: UpstreamError | None) -> Unavailable:
        tried = ", ".join(a.model for a in attempts) or "none"
        detail = f": {last.message}" if last is not None else ""
        return Unavailable(f"no model could answer (tried {tried}){detail}", models=tried)

    def _check(self, alias: str, exc: UpstreamError, deadline: float) -> None:
        """Raise for failures that must not fall back."""
        if exc.kind == "timeout" and time.monotonic() >= deadline:
            raise DeadlineExceeded(f"the deadline expired while model {alias!r} was answering")
        if not exc.retryable:
            raise UpstreamRejected(
                f"model {alias!r} rejected the request: {exc.message}",
                status=exc.status or 400,
                model=alias,
            )

    async def chat(
        self, chain: Sequence[str], params: ChatParams, classification: Level, deadline: float
    ) -> Answer:
        attempts: list[Attempt] = []
        last: UpstreamError | None = None
        for alias in chain[: self._max_attempts]:
            provider = self._provider(alias, classification)
            if provider is None:
                attempts.append(Attempt(alias, "not_configured"))
                continue
            try:
                result = await provider.chat(params, timeout=self._timeout(alias, deadline))
            except UpstreamError as exc:
                attempts.append(Attempt(alias, exc.kind))
                log.warning("model %s failed (%s); trying the next candidate", alias, exc.kind)
                self._check(alias, exc, deadline)
                last = exc
                continue
            attempts.append(Attempt(alias, None))
            return Answer(result, alias, tuple(attempts))
        raise self._give_up(attempts, last)

    async def stream(
        self, chain: Sequence[str], params: ChatParams, classification: Level, deadline: float
    ) -> AsyncIterator[StreamPiece]:
        """Falls back only until the first chunk has been handed to the caller."""
        attempts: list[Attempt] = []
        last: UpstreamError | None = None
        for alias in chain[: self._max_attempts]:
            provider = self._provider(alias, classification)
            if provider is None:
                attempts.append(Attempt(alias, "not_configured"))
                continue
            # aclosing: an abandoned stream closes its upstream connection at once.
            async with aclosing(
                provider.stream(params, timeout=self._timeout(alias, deadline))
            ) as chunks:
                try:
                    first = await anext(chunks)
                except UpstreamError as exc:
                    attempts.append(Attempt(alias, exc.kind))
                    log.warning("model %s failed (%s); trying the next candidate", alias, exc.kind)
                    self._check(alias, exc, deadline)
                    last = exc
                    continue
                attempts.append(Attempt(alias, None))
                done = tuple(attempts)
                yield StreamPiece(first, alias, done)
                try:
                    async for chunk in chunks:
                        yield StreamPiece(chunk, alias, done)
                except UpstreamError as exc:
                    if exc.kind == "timeout" and time.monotonic() >= deadline:
                        raise DeadlineExceeded(
                            f"the deadline expired while model {alias!r} was streaming"
                        ) from None
                    raise Unavailable(
                        f"model {alias!r} failed after the stream started: {exc.message}",
                        models=alias,
                    ) from None
            return
        raise self._give_up(attempts, last)
