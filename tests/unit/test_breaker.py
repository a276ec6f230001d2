"""Circuit breakers (gateway/providers/breaker.py) with an injected clock. How the dispatcher
uses them is in test_dispatch.py; the end-to-end versions are in
tests/integration/test_fallback.py."""

from __future__ import annotations

import pytest

from gateway.providers.breaker import Breakers, State


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
