"""The decision log: one JSON line per request, for the security team's audit of every routing
decision (issue 8). A line says who asked, what the inspection found (detector ids and levels,
never matched values), which policy revision and rule decided, which candidates were considered
and why any were dropped, which model answered after how many attempts, what it cost and how the
request ended, including requests that were refused (policy deny, residency, budget).

Lines are written synchronously and flushed one by one: an audit record must not sit in a
buffer when the process dies, and one small `write` is a few microseconds. A failed write is
logged and counted, never turned into a failed request.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)

STDOUT = "stdout"
OFF = "off"
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model the policy named: kept in the chain, or dropped by enforcement with the reason
    (a sentence naming the model and the levels, never content)."""

    model: str
    allowed: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One upstream attempt (or a candidate skipped because its budget could not be reserved):
    `error` is the failure kind (`timeout`, `server`, `budget`...), None when it answered."""

    model: str
    error: str | None
    duration_ms: float


@dataclass(slots=True)
class DecisionRecord:
    """The fields of one decision-log line; None where the request never reached that stage
    (an unauthenticated call has no tenant, a policy deny has no model)."""

    decision_id: str
    time: str  # request start, RFC 3339 UTC
    rpc: str  # Chat, ChatStream or Route (the dry run, which calls no model)
    trace_id: str | None = None
    tenant: str | None = None
    classification: str | None = None  # effective: max(declared, detected)
    declared_classification: str | None = None
    detectors: list[str] = field(default_factory=list)
    task_type: str | None = None
    complexity: float | None = None
    policy_name: str | None = None
    policy_revision: str | None = None
    rule: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    model: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    enforcement: str | None = None  # allowed, rerouted or denied
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    status: str = "OK"  # the gRPC status code name
    reason: str | None = None  # the ErrorInfo reason when the request failed

    def to_json(self) -> str:
        # Spelled out rather than dataclasses.asdict, which deep-copies every value and cost
        # more than the rest of the line's work together (bench/bench_telemetry.py).
        line = {
            "decision_id": self.decision_id,
            "time": self.time,
            "rpc": self.rpc,
            "trace_id": self.trace_id,
            "tenant": self.tenant,
            "classification": self.classification,
            "declared_classification": self.declared_classification,
            "detectors": self.detectors,
            "task_type": self.task_type,
            "complexity": self.complexity,
            "policy_name": self.policy_name,
            "policy_revision": self.policy_revision,
            "rule": self.rule,
            "candidates": [
                {"model": c.model, "allowed": c.allowed, "reason": c.reason}
                for c in self.candidates
            ],
            "model": self.model,
            "attempts": [
                {"model": a.model, "error": a.error, "duration_ms": a.duration_ms}
                for a in self.attempts
            ],
            "enforcement": self.enforcement,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "reason": self.reason,
        }
        return _ENCODER.encode(line)


class DecisionLog:
    """Appends decision records as JSON lines to a stream (stdout or a file)."""

    def __init__(self, stream: TextIO, *, owned: bool, on_error: Callable[[], None] | None = None):
        self._stream = stream
        self._owned = owned
        self._lock = threading.Lock()  # records may come from the policy thread one day
        self.on_error = on_error
        self._failed = False

    @classmethod
    def open(cls, destination: str, base_dir: Path = Path(".")) -> DecisionLog | None:
        """`stdout`, `off` (None: no log) or a file path, appended to (created with its parent
        directories). Raises OSError when the file cannot be opened: better at start-up than a
        silently missing audit trail."""
        if destination == OFF:
            return None
        if destination == STDOUT:
            return cls(sys.stdout, owned=False)
        path = Path(destination)
        if not path.is_absolute():
            path = (base_dir / path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path.open("a", encoding="utf-8"), owned=True)

    def write(self, record: DecisionRecord) -> None:
        line = record.to_json() + "\n"
        try:
            with self._lock:
                self._stream.write(line)
                self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            if self.on_error is not None:
                self.on_error()
            if not self._failed:  # once, not per request: a full disk would flood the log
                log.error("decision log write failed: %s", exc)
                self._failed = True
            return
        self._failed = False

    def close(self) -> None:
        with self._lock:
            if self._owned:
                self._stream.close()
            else:
                self._stream.flush()
