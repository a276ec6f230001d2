"""Circuit breakers, one per model alias.

A model that keeps failing is skipped for a cool-down instead of costing every request a
timeout or a refused connection before its fallback runs. After the cool-down exactly one
request (the probe) is let through: its success closes the breaker, its failure re-opens it for
another cool-down.

Only retryable failures (connection, timeout, 429, 5xx, model not loaded) count against a model.
An attempt that ends without saying anything about the model's health (a bad request, the
caller's own deadline, a cancelled call, a budget refusal) is `neutral`: it neither counts nor
closes, and a probe that ended that way frees the probe slot for the next request.

Everything runs on one event loop, so the state needs no lock. The clock is injectable (and
swappable on a running gateway) so tests drive the cool-down without sleeping.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.clock import Seconds


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Module constants: cheaper on the request path than an Enum class attribute lookup.
_CLOSED, _OPEN = State.CLOSED, State.OPEN


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one attempt. `probe` marks the single attempt of a half-open breaker."""

    alias: str
    probe: bool


class Breaker:
    """The state of one model alias. Use through `Breakers`, which owns the clock."""

    __slots__ = (
        "_board",
        "_failures",
        "_normal",
        "_opened_at",
        "_probe",
        "_probing",
        "alias",
        "state",
    )

    def __init__(self, board: Breakers, alias: str) -> None:
        self._board = board
        self.alias = alias
        self.state = State.CLOSED
        self._failures = 0  # consecutive retryable failures while closed
        self._opened_at = 0.0
        self._probing = False  # a half-open probe is in flight
        # Permits are immutable: two per breaker, so the request path allocates none.
        self._normal = Permit(alias, probe=False)
        self._probe = Permit(alias, probe=True)

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _cooled(self) -> bool:
        return self._board.clock() - self._opened_at >= self._board.cooldown_s

    def available(self) -> bool:
        """Whether an attempt would be let through now (read-only: takes no probe)."""
        state = self.state
        if state is _CLOSED:
            return True
        if state is _OPEN:
            return self._cooled()
        return not self._probing

    def acquire(self) -> Permit | None:
        """A permit for one attempt, or None while the breaker is open or its probe is out."""
        if self.state is _CLOSED:
            return self._normal
        if self.state is _OPEN:
            if not self._cooled():
                return None
            self.state = State.HALF_OPEN
        if self._probing:
            return None
        self._probing = True
        return self._probe

    def success(self, permit: Permit) -> None:
        # Any answer proves the model serves, also one from a call begun before it opened.
        self.state = _CLOSED
        self._failures = 0
        self._probing = False

    def failure(self, permit: Permit) -> None:
        if permit.probe:
            self._open()
            return
        if self.state is not _CLOSED:
            # A call that began before the breaker opened: its failure is old news and must
            # not push the cool-down further out.
            return
        self._failures += 1
        if self._failures >= self._board.failures:
            self._open()

    def neutral(self, permit: Permit) -> None:
        if permit.probe and self.state is State.HALF_OPEN:
            self._probing = False

    def _open(self) -> None:
        self.state = _OPEN
        self._opened_at = self._board.clock()
        self._probing = False
        self._failures = 0


class Breakers:
    """The breakers of a catalogue. `clock` is seconds, monotonic; replace it to drive time."""

    def __init__(
        self,
        aliases: Iterable[str],
        *,
        failures: int,
        cooldown_s: float,
        clock: Seconds = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.by_alias: dict[str, Breaker] = {alias: Breaker(self, alias) for alias in aliases}

    def __getitem__(self, alias: str) -> Breaker:
        return self.by_alias[alias]

    def available(self, alias: str) -> bool:
        breaker = self.by_alias.get(alias)
        return breaker is not None and breaker.available()

    def state(self, alias: str) -> State:
        return self.by_alias[alias].state
