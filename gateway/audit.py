"""The decision log: one JSON line per request, for the security team's audit of every routing
decision (docs/architecture.md, "The decision log"). A line says who asked, what the inspection
found (detector ids and levels, never matched values), which policy revision and rule decided,
which candidates were considered and why any were dropped, which model answered after how many
attempts, what it cost and how the request ended, including requests that were refused (policy
deny, residency, budget).

Lines are written synchronously and flushed one by one: an audit record must not sit in a
buffer when the process dies, and one small `write` is a few microseconds. A failed write is
logged and counted, never turned into a failed request.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gateway.outcome import Attempt, Candidate, Outcome
from gateway.policy.inputs import INPUTS_VERSION

log = logging.getLogger(__name__)

# The line format; `celgate policy replay` reads every format up to this one.
LOG_VERSION = INPUTS_VERSION
STDOUT = "stdout"
OFF = "off"
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """The fields of one decision-log line, taken from the request's `Outcome`; None where the
    request never reached that stage (an unauthenticated call has no tenant, a policy deny has
    no model)."""

    decision_id: str
    time: str  # request start, RFC 3339 UTC
    rpc: str  # Chat, ChatStream or Route (the dry run, which calls no model)
    trace_id: str | None = None
    tenant: str | None = None
    classification: str | None = None  # effective: max(declared, detected)
    declared_classification: str | None = None
    detectors: tuple[str, ...] = ()
    task_type: str | None = None
    complexity: float | None = None
    policy_name: str | None = None
    policy_revision: str | None = None
    rule: str | None = None
    candidates: tuple[Candidate, ...] = ()
    model: str | None = None
    # Every candidate the dispatcher reached: `error` is the failure kind (`timeout`,
    # `server`...) or skip reason (`budget`, `circuit_open`...), None when it answered.
    attempts: tuple[Attempt, ...] = ()
    enforcement: str | None = None  # allowed, rerouted, redacted or denied
    cost_usd: float = 0.0
    # True when the cost is (partly) an estimate: a stream that ended early, cancelled or
    # broken, with no usage reported, is charged for what it relayed.
    cost_estimated: bool = False
    latency_ms: float = 0.0
    status: str = "OK"  # the gRPC status code name
    reason: str | None = None  # the ErrorInfo reason when the request failed
    # Detector id -> values replaced by placeholders in what the model got (only when redacted).
    redacted: tuple[tuple[str, int], ...] = ()
    unrestored: int = 0  # placeholder-shaped tokens in the answer that stood for nothing
    # The promoted request labels, as the metrics carry them (telemetry.labels).
    labels: Mapping[str, str] = field(default_factory=dict)
    # Format 2 (docs/policies.md, "Replay"): what the policy saw, the live route's first model
    # (None when refused), the answering call's token usage, the shadow policy's decision.
    policy_inputs: Mapping[str, Any] | None = None
    route: str | None = None
    usage: Mapping[str, int] | None = None
    shadow: Mapping[str, Any] | None = None
    version: int = LOG_VERSION

    @classmethod
    def of(cls, outcome: Outcome, trace_id: str | None) -> DecisionRecord:
        inspection = outcome.inspection
        policy = outcome.policy
        declared = inspection.declared if inspection is not None else None
        return cls(
            decision_id=outcome.call.decision_id,
            time=outcome.call.started.isoformat(timespec="milliseconds"),
            rpc=outcome.call.rpc,
            trace_id=trace_id,
            tenant=outcome.tenant,
            classification=inspection.classification.name if inspection is not None else None,
            declared_classification=declared.name if declared is not None else None,
            detectors=inspection.detectors if inspection is not None else (),
            task_type=inspection.task_type if inspection is not None else None,
            complexity=inspection.complexity if inspection is not None else None,
            policy_name=policy.name if policy is not None else None,
            policy_revision=policy.revision if policy is not None else None,
            rule=policy.rule if policy is not None else None,
            candidates=outcome.candidates,
            model=outcome.model,
            attempts=outcome.attempts,
            enforcement=outcome.enforcement,
            cost_usd=outcome.cost_usd,
            cost_estimated=outcome.cost_estimated,
            latency_ms=round(outcome.duration_s * 1000, 3),
            status=outcome.status,
            reason=outcome.error,
            redacted=outcome.redacted,
            unrestored=outcome.unrestored,
            labels=outcome.labels,
            policy_inputs=outcome.policy_inputs,
            route=outcome.route,
            usage=_usage(outcome.attempts),
            shadow=None if outcome.shadow is None else outcome.shadow.to_json(),
        )

    def to_json(self) -> str:
        # Spelled out rather than dataclasses.asdict, which deep-copies every value and cost
        # more than the rest of the line's work together (bench/bench_telemetry.py).
        line: dict[str, object] = {
            "version": self.version,
            "decision_id": self.decision_id,
            "time": self.time,
            "rpc": self.rpc,
            "trace_id": self.trace_id,
            "tenant": self.tenant,
            "classification": self.classification,
            "declared_classification": self.declared_classification,
            "detectors": list(self.detectors),
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
                {
                    "model": a.model,
                    "error": a.error,
                    "duration_ms": round(a.duration_s * 1000, 3) if a.called else 0.0,
                }
                for a in self.attempts
            ],
            "enforcement": self.enforcement,
            "cost_usd": self.cost_usd,
            "cost_estimated": self.cost_estimated,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "reason": self.reason,
            "labels": dict(self.labels),
            "policy_inputs": self.policy_inputs,
            "route": self.route,
            "usage": self.usage,
            "shadow": self.shadow,
        }
        # Only on redacted requests, so other lines keep their shape.
        if self.redacted:
            line["redacted"] = dict(self.redacted)
            line["unrestored"] = self.unrestored
        return _ENCODER.encode(line)


def _usage(attempts: tuple[Attempt, ...]) -> dict[str, int] | None:
    """The token counts of the call that answered, for pricing a replay."""
    for attempt in attempts:
        usage = attempt.usage
        if attempt.error is None and usage is not None:
            return {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cached_input_tokens": usage.cached_input_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
            }
    return None


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
