"""Calling the chosen models: the provider per alias, the fallback chain, the deadline, and
the per-attempt hooks that reserve and settle budget.

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
from typing import Protocol

from gateway.config import Config, ModelConfig
from gateway.enforce import violation
from gateway.errors import (
    BudgetExhausted,
    DeadlineExceeded,
    PermissionDenied,
    Unavailable,
    UpstreamRejected,
)
from gateway.levels import Level
from gateway.providers.base import ChatParams, ChatResult, Chunk, Provider, UpstreamError, Usage

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


class AttemptHooks(Protocol):
    """Called around each upstream attempt (the budget's reserve and settle stages)."""

    async def begin(self, alias: str) -> None: ...

    async def fail(self, alias: str, error: BaseException) -> None: ...

    async def succeed(self, alias: str, usage: Usage | None) -> None: ...


class _NoHooks:
    async def begin(self, alias: str) -> None:
        return None

    async def fail(self, alias: str, error: BaseException) -> None:
        return None

    async def succeed(self, alias: str, usage: Usage | None) -> None:
        return None


NO_HOOKS: AttemptHooks = _NoHooks()


@dataclass(frozen=True, slots=True)
class Attempt:
    model: str
    error: str | None  # why this attempt failed, None when it answered


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


class _Chain:
    """Bookkeeping of one request's walk down its candidates."""

    def __init__(self, dispatcher: Dispatcher, deadline: float) -> None:
        self.dispatcher = dispatcher
        self.deadline = deadline
        self.attempts: list[Attempt] = []
        self.last: UpstreamError | None = None
        self.budget: BudgetExhausted | None = None

    def timeout(self, alias: str) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline expired before a model answered")
        return min(self.dispatcher.models[alias].timeout_s, remaining)

    async def enter(
        self, alias: str, classification: Level, hooks: AttemptHooks
    ) -> Provider | None:
        """The provider to try next, with its budget reserved; None to skip this candidate."""
        provider = self.dispatcher.provider(alias, classification)
        if provider is None:
            self.attempts.append(Attempt(alias, "not_configured"))
            return None
        try:
            await hooks.begin(alias)
        except BudgetExhausted as exc:
            # A cheaper (or free) fallback may still fit the budget.
            self.attempts.append(Attempt(alias, "budget"))
            self.budget = exc
            return None
        return provider

    def failed(self, alias: str, exc: UpstreamError) -> None:
        """Record a failed attempt; raise when the failure must not fall back."""
        self.attempts.append(Attempt(alias, exc.kind))
        if exc.kind == "timeout" and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(f"the deadline expired while model {alias!r} was answering")
        if not exc.retryable:
            raise UpstreamRejected(
                f"model {alias!r} rejected the request: {exc.message}",
                status=exc.status or 400,
                model=alias,
            )
        log.warning("model %s failed (%s); trying the next candidate", alias, exc.kind)
        self.last = exc

    def give_up(self) -> Exception:
        if self.budget is not None and self.last is None:
            return self.budget
        tried = ", ".join(a.model for a in self.attempts) or "none"
        detail = f": {self.last.message}" if self.last is not None else ""
        return Unavailable(f"no model could answer (tried {tried}){detail}", models=tried)


class Dispatcher:
    def __init__(self, config: Config) -> None:
        self.models: Mapping[str, ModelConfig] = config.models
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

    def provider(self, alias: str, classification: Level) -> Provider | None:
        reason = violation(alias, self.models[alias], classification)
        if reason is not None:
            # Unreachable when the pipeline enforced first; kept as the last line of defence.
            raise PermissionDenied(reason, reason="DATA_RESIDENCY", model=alias)
        return self._providers.get(alias)

    async def chat(
        self,
        chain: Sequence[str],
        params: ChatParams,
        classification: Level,
        deadline: float,
        hooks: AttemptHooks = NO_HOOKS,
    ) -> Answer:
        walk = _Chain(self, deadline)
        for alias in chain[: self._max_attempts]:
            provider = await walk.enter(alias, classification, hooks)
            if provider is None:
                continue
            try:
                result = await provider.chat(params, timeout=walk.timeout(alias))
            except UpstreamError as exc:
                await hooks.fail(alias, exc)
                walk.failed(alias, exc)
                continue
            except BaseException as exc:
                await hooks.fail(alias, exc)
                raise
            await hooks.succeed(alias, result.usage)
            walk.attempts.append(Attempt(alias, None))
            return Answer(result, alias, tuple(walk.attempts))
        raise walk.give_up()

    async def stream(
        self,
        chain: Sequence[str],
        params: ChatParams,
        classification: Level,
        deadline: float,
        hooks: AttemptHooks = NO_HOOKS,
    ) -> AsyncIterator[StreamPiece]:
        """Falls back only until the first chunk has been handed to the caller."""
        walk = _Chain(self, deadline)
        for alias in chain[: self._max_attempts]:
            provider = await walk.enter(alias, classification, hooks)
            if provider is None:
                continue
            settled = False
            error: BaseException | None = None
            try:
                # aclosing: an abandoned stream closes its upstream connection at once.
                async with aclosing(provider.stream(params, timeout=walk.timeout(alias))) as chunks:
                    try:
                        first = await anext(chunks)
                    except UpstreamError as exc:
                        error = exc
                        walk.failed(alias, exc)
                        continue
                    walk.attempts.append(Attempt(alias, None))
                    done = tuple(walk.attempts)
                    chunk = first
                    try:
                        while True:
                            if chunk.finish_reason is not None:
                                await hooks.succeed(alias, chunk.usage)
                                settled = True
                            yield StreamPiece(chunk, alias, done)
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        return
                    except UpstreamError as exc:
                        error = exc
                        if exc.kind == "timeout" and time.monotonic() >= deadline:
                            raise DeadlineExceeded(
                                f"the deadline expired while model {alias!r} was streaming"
                            ) from None
                        raise Unavailable(
                            f"model {alias!r} failed after the stream started: {exc.message}",
                            models=alias,
                        ) from None
            except BaseException as exc:
                error = exc
                raise
            finally:
                if not settled:
                    await hooks.fail(alias, error or Unavailable("the stream ended early"))
        raise walk.give_up()
