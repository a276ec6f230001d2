"""Circuit breakers (gateway/providers/breaker.py) and how the dispatcher uses them, with an
injected clock and in-memory providers (no network: the end-to-end versions are in
tests/integration/test_fallback.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from gateway.chat import ChatMessage, ChatParams, ChatResult, Chunk, Usage
from gateway.config import Config, parse_config
from gateway.errors import DeadlineExceeded, PermissionDenied, Unavailable, UpstreamRejected
from gateway.levels import Level
from gateway.providers.base import UpstreamError, UpstreamErrorKind
from gateway.providers.breaker import Breakers, State
from gateway.providers.dispatch import Dispatcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def board(clock: Clock) -> Breakers:
    return Breakers(["m"], failures=3, cooldown_s=10, clock=clock)


def fail(board: Breakers, times: int = 1) -> None:
    for _ in range(times):
        permit = board["m"].acquire()
        assert permit is not None
        board["m"].failure(permit)


def test_consecutive_failures_open_the_breaker(board: Breakers) -> None:
    fail(board, 2)
    assert board.state("m") is State.CLOSED and board.available("m")
    fail(board)
    assert board.state("m") is State.OPEN
    assert not board.available("m")
    assert board["m"].acquire() is None


def test_a_success_resets_the_count(board: Breakers) -> None:
    fail(board, 2)
    permit = board["m"].acquire()
    assert permit is not None
    board["m"].success(permit)
    fail(board, 2)
    assert board.state("m") is State.CLOSED


def test_neutral_outcomes_do_not_count(board: Breakers) -> None:
    for _ in range(10):
        permit = board["m"].acquire()
        assert permit is not None
        board["m"].neutral(permit)
    assert board.state("m") is State.CLOSED


def test_one_probe_after_the_cool_down_and_success_closes(board: Breakers, clock: Clock) -> None:
    fail(board, 3)
    clock.now = 9.999
    assert board["m"].acquire() is None
    clock.now = 10.0
    assert board.available("m")
    probe = board["m"].acquire()
    assert probe is not None and probe.probe
    assert board.state("m") is State.HALF_OPEN
    assert board["m"].acquire() is None  # exactly one probe
    assert not board.available("m")
    board["m"].success(probe)
    assert board.state("m") is State.CLOSED
    permit = board["m"].acquire()
    assert permit is not None and not permit.probe


def test_a_failed_probe_reopens_for_a_full_cool_down(board: Breakers, clock: Clock) -> None:
    fail(board, 3)
    clock.now = 15.0
    probe = board["m"].acquire()
    assert probe is not None
    board["m"].failure(probe)
    assert board.state("m") is State.OPEN
    clock.now = 24.9
    assert board["m"].acquire() is None
    clock.now = 25.0
    assert board["m"].acquire() is not None


def test_a_neutral_probe_frees_the_slot(board: Breakers, clock: Clock) -> None:
    fail(board, 3)
    clock.now = 10.0
    probe = board["m"].acquire()
    assert probe is not None
    board["m"].neutral(probe)
    assert board.state("m") is State.HALF_OPEN
    again = board["m"].acquire()
    assert again is not None and again.probe


def test_late_failures_of_calls_begun_before_opening_do_not_extend_it(
    board: Breakers, clock: Clock
) -> None:
    early = [board["m"].acquire() for _ in range(5)]
    for permit in early[:3]:
        assert permit is not None
        board["m"].failure(permit)
    clock.now = 9.0
    for permit in early[3:]:
        assert permit is not None
        board["m"].failure(permit)
    clock.now = 10.0
    assert board["m"].acquire() is not None


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Breakers(["m"], failures=0, cooldown_s=1)
    with pytest.raises(ValueError):
        Breakers(["m"], failures=1, cooldown_s=0)


# -- the dispatcher -------------------------------------------------------------------------


class Memory:
    """An in-memory Provider: answers at once, or raises the scripted errors first."""

    def __init__(self, errors: list[UpstreamErrorKind] | None = None, chunks: int = 3) -> None:
        self.errors = list(errors or [])
        self.calls = 0
        self.chunks = chunks
        self.fail_after: int | None = None

    def _next_error(self) -> None:
        self.calls += 1
        if self.errors:
            raise UpstreamError(self.errors.pop(0), "scripted", status=400)

    async def chat(self, params: ChatParams, *, timeout: float) -> ChatResult:
        self._next_error()
        return ChatResult("ok", (), "stop", Usage(1, 1), "m")

    async def stream(self, params: ChatParams, *, timeout: float) -> AsyncGenerator[Chunk, None]:
        self._next_error()
        for i in range(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise UpstreamError("protocol", "broke")
            yield Chunk(content_delta=f"{i} ")
        yield Chunk(finish_reason="stop", usage=Usage(1, 1))

    async def aclose(self) -> None:
        return None


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
    a, b = Memory(["server", "server"]), Memory()
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
    a, b = Memory(["bad_request"] * 5), Memory()
    dispatcher = Dispatcher(config(), clock=clock, providers={"a": a, "b": b})
    for _ in range(5):
        with pytest.raises(UpstreamRejected):
            await dispatcher.chat(["a", "b"], PARAMS, Level.PUBLIC, later())
    assert dispatcher.healthy("a") and b.calls == 0


async def test_the_cap_counts_calls_not_skipped_candidates(clock: Clock) -> None:
    a, b, c = Memory(["server"] * 2), Memory(), Memory()
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
    a, cloud = Memory(["connect"] * 10), Memory()
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
    a, b = Memory(["server"]), Memory()
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
    a = Memory()
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
