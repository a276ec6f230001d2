"""Work a request records but does not wait for: scheduled on the event loop when its inputs
are known, read when the request is recorded.

The shadow policy's evaluation and the encoding of the policy inputs for the decision log are
both needed only in the request's record. Scheduled with `call_soon`, they run while the
request awaits its budget reservation and its upstream, so they add no latency to it; a
request recorded before the loop got to them (refused without awaiting anything) computes
them when read. The inputs must not change in between: they are immutable values or protos
the pipeline no longer writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Deferred(Generic[T]):
    __slots__ = ("_compute", "_done", "_value")

    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute: Callable[[], T] | None = compute
        self._done = False
        self._value: T | None = None

    @classmethod
    def schedule(cls, compute: Callable[[], T]) -> Deferred[T]:
        """Run `compute` on the running loop's next turn (at `result` without a loop)."""
        deferred = cls(compute)
        with contextlib.suppress(RuntimeError):  # no running loop: computed when read
            asyncio.get_running_loop().call_soon(deferred.run)
        return deferred

    @property
    def done(self) -> bool:
        return self._done

    def run(self) -> None:
        compute = self._compute
        if compute is not None:
            self._compute = None
            self._value = compute()
            self._done = True

    def result(self) -> T:
        self.run()
        return self._value  # type: ignore[return-value]  # set by run(), T may include None
