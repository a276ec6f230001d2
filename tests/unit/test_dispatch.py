"""The dispatcher (gateway/providers/dispatch.py): fallback, circuit breakers, the attempt cap,
the deadline, its own residency check, and the one attempt history it keeps for the request;
with in-memory providers and an injected clock (the end-to-end versions are in
tests/integration/test_fallback.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.chat import ChatMessage, ChatParams, Usage
from gateway.config import Config, parse_config
from gateway.errors import (
    BudgetExhausted,
    DeadlineExceeded,
    PermissionDenied,
    Unavailable,
    UpstreamRejected,
)
from gateway.levels import Level
from gateway.outcome import Attempt
from gateway.providers.dispatch import Dispatcher
from tests.fakes.memory_provider import MemoryProvider


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def config(**dispatch: Any) -> Config:
    def entry(location: str, clearance: str) -> dict[str, Any]:
        return {
            "provider": "ollama" if location == "on_prem" else "openai",
            "upstream_model": "m",
            "base_url": "http://127.0.0.1:1",
            "location": location,
            "clearance": clearance,
        }

    return parse_config(
        {
            "models": {
                "a": entry("on_prem", "RESTRICTED"),
                "b": entry("on_prem", "RESTRICTED"),
                "c": entry("on_prem", "RESTRICTED"),
                "cloud": entry("cloud", "INTERNAL"),
            },
            "default_model": "a",
            "dispatch": {"breaker_failures": 2, "breaker_cooldown_s": 5, **dispatch},
        }
    )


PARAMS = ChatParams(messages=(ChatMessage("user", "hi"),))


def later(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


async def test_open_breaker_is_skipped_as_circuit_open(clock: Clock) -> None:
    a, b = MemoryProvider(["server", "server"]), MemoryProvider()
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a, "b": b})
    for _ in range(2):
        answer = await dispatcher.chat(["a", "b"], PARAMS, Level.PUBLIC, later())
        assert answer.model == "b"
    assert not dispatcher.healthy("a") and dispatcher.healthy("b")
    answer = await dispatcher.chat(["a", "b"], PARAMS, Level.PUBLIC, later())
    assert [(x.model, x.error) for x in answer.attempts] == [("a", "circuit_open"), ("b", None)]
    assert answer.calls == 1
    assert a.calls == 2
    clock.now = 5.0
    assert dispatcher.healthy("a")
    answer = await dispatcher.chat(["a", "b"], PARAMS, Level.PUBLIC, later())
    assert answer.model == "a" and a.calls == 3


async def test_bad_request_returns_at_once_and_is_not_a_model_failure(clock: Clock) -> None:
    a, b = MemoryProvider(["bad_request"] * 5), MemoryProvider()
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a, "b": b})
    for _ in range(5):
        with pytest.raises(UpstreamRejected):
            await dispatcher.chat(["a", "b"], PARAMS, Level.PUBLIC, later())
    assert dispatcher.healthy("a") and b.calls == 0


async def test_the_cap_counts_calls_not_skipped_candidates(clock: Clock) -> None:
    a, b, c = MemoryProvider(["server"] * 2), MemoryProvider(), MemoryProvider()
    dispatcher = Dispatcher(config(max_attempts=2), clock=clock, providers={"a": a, "b": b, "c": c})
    for _ in range(2):  # open a's breaker (b answers)
        await dispatcher.chat(["a", "b"], PARAMS, Level.PUBLIC, later())
    b.errors = ["server"]
    answer = await dispatcher.chat(["a", "b", "c"], PARAMS, Level.PUBLIC, later())
    assert answer.model == "c"  # a was skipped, so b and c fit in two calls
    b.errors, c.errors = ["server"], ["server"]
    with pytest.raises(Unavailable) as info:
        await dispatcher.chat(["b", "c", "a"], PARAMS, Level.PUBLIC, later())
    assert "max_attempts" in info.value.message


async def test_dispatch_refuses_an_uncleared_model_on_every_path(clock: Clock) -> None:
    # As if the pipeline's enforcement had been bypassed: the dispatcher checks on its own.
    a, cloud = MemoryProvider(["connect"] * 10), MemoryProvider()
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a, "cloud": cloud})
    with pytest.raises(PermissionDenied) as info:
        await dispatcher.chat(["a", "cloud"], PARAMS, Level.CONFIDENTIAL, later())
    assert info.value.reason == "DATA_RESIDENCY"
    assert info.value.metadata == {"model": "cloud", "classification": "CONFIDENTIAL"}
    with pytest.raises(PermissionDenied):
        async for _ in dispatcher.stream(["a", "cloud"], PARAMS, Level.RESTRICTED, later()):
            pass
    with pytest.raises(PermissionDenied) as info:
        await dispatcher.chat(["ghost"], PARAMS, Level.PUBLIC, later())
    assert info.value.reason == "UNKNOWN_MODEL"
    assert cloud.calls == 0 and a.calls == 2


async def test_stream_falls_back_only_before_the_first_chunk(clock: Clock) -> None:
    a, b = MemoryProvider(["server"]), MemoryProvider()
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a, "b": b})
    pieces = [p async for p in dispatcher.stream(["a", "b"], PARAMS, Level.PUBLIC, later())]
    assert {p.model for p in pieces} == {"b"}
    a.fail_after = 1
    got: list[str] = []
    with pytest.raises(Unavailable):
        async for piece in dispatcher.stream(["a", "b"], PARAMS, Level.PUBLIC, later()):
            got.append(piece.chunk.content_delta)
    assert got == ["0 "] and b.calls == 1


async def test_an_expired_deadline_calls_nothing(clock: Clock) -> None:
    a = MemoryProvider()
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a})
    with pytest.raises(DeadlineExceeded):
        await dispatcher.chat(["a"], PARAMS, Level.PUBLIC, time.monotonic() - 1)
    assert a.calls == 0


async def test_airgapped_dispatcher_creates_no_cloud_client() -> None:
    # A config that slipped past validation (built in code) still gets no cloud client.
    unsafe = config().model_copy(update={"airgapped": True})
    dispatcher = Dispatcher(unsafe)
    assert set(dispatcher.providers) == {"a", "b", "c"}
    assert "air-gapped" in dispatcher.unavailable["cloud"]
    assert not dispatcher.healthy("cloud")
    await dispatcher.aclose()


class Hooks:
    """Attempt hooks that refuse the budget for the models in `poor` and price each answer."""

    def __init__(self, poor: set[str] | None = None, cost: float = 0.5) -> None:
        self.poor = poor or set()
        self.cost = cost
        self.events: list[tuple[str, str]] = []

    async def begin(self, alias: str) -> None:
        if alias in self.poor:
            raise BudgetExhausted("no budget", subject="tenant:t")
        self.events.append(("begin", alias))

    async def fail(self, alias: str, error: BaseException) -> None:
        self.events.append(("fail", alias))

    async def succeed(self, alias: str, usage: Usage | None) -> float:
        self.events.append(("succeed", alias))
        return self.cost

    async def interrupted(self, alias: str, usage: Usage | None, relayed_chars: int) -> float:
        self.events.append(("interrupted", alias))
        return self.cost

    def skipped(self, alias: str, reason: str) -> None:
        self.events.append(("skipped", alias))


async def test_the_attempt_history_holds_skips_failures_and_the_answer(clock: Clock) -> None:
    a, b, c = MemoryProvider(["server"]), MemoryProvider(), MemoryProvider(usage=Usage(7, 3))
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a, "b": b, "c": c})
    history: list[Attempt] = []
    hooks = Hooks(poor={"b"}, cost=0.25)
    answer = await dispatcher.chat(
        ["a", "b", "c"], PARAMS, Level.PUBLIC, later(), hooks, attempts=history
    )
    assert [(x.model, x.error, x.called) for x in history] == [
        ("a", "server", True),
        ("b", "budget", False),
        ("c", None, True),
    ]
    assert answer.attempts == tuple(history) and answer.calls == 2
    answered = history[-1]
    assert answered.usage == Usage(7, 3) and answered.cost_usd == 0.25
    assert answered.response_model == "m" and answered.finish_reason == "stop"
    assert answered.started_ns > 0 and answered.duration_s >= 0
    assert history[1].started_ns == 0 and history[1].duration_s == 0.0


async def test_the_history_is_kept_when_every_candidate_fails(clock: Clock) -> None:
    a, b = MemoryProvider(["server"]), MemoryProvider(["connect"])
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a, "b": b})
    history: list[Attempt] = []
    with pytest.raises(Unavailable):
        await dispatcher.chat(["a", "b"], PARAMS, Level.PUBLIC, later(), attempts=history)
    assert [(x.model, x.error) for x in history] == [("a", "server"), ("b", "connect")]


async def test_a_stream_attempt_is_recorded_at_its_finish_reason(clock: Clock) -> None:
    a = MemoryProvider(usage=Usage(4, 2))
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a})
    history: list[Attempt] = []
    hooks = Hooks(cost=0.125)
    pieces = [
        p async for p in dispatcher.stream(["a"], PARAMS, Level.PUBLIC, later(), hooks, history)
    ]
    assert [p.calls for p in pieces] == [1, 1, 1, 1]
    (attempt,) = history
    assert (attempt.model, attempt.error, attempt.usage) == ("a", None, Usage(4, 2))
    assert attempt.cost_usd == 0.125 and attempt.finish_reason == "stop"


async def test_an_abandoned_stream_records_its_attempt_as_cancelled(clock: Clock) -> None:
    a = MemoryProvider(chunks=10)
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a})
    history: list[Attempt] = []
    hooks = Hooks()
    stream = dispatcher.stream(["a"], PARAMS, Level.PUBLIC, later(), hooks, history)
    await anext(stream)
    await stream.aclose()  # the caller went away
    assert [(x.model, x.error) for x in history] == [("a", "cancelled")]
    # Output reached the caller: the attempt is charged for it, not released.
    assert hooks.events == [("begin", "a"), ("interrupted", "a")]


async def test_a_stream_broken_after_its_first_chunk_records_the_failure(clock: Clock) -> None:
    a = MemoryProvider()
    a.fail_after = 1
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a})
    history: list[Attempt] = []
    with pytest.raises(Unavailable):
        async for _ in dispatcher.stream(["a"], PARAMS, Level.PUBLIC, later(), attempts=history):
            pass
    assert [(x.model, x.error) for x in history] == [("a", "protocol")]
