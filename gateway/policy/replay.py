"""Replay: what a candidate policy would have done with recorded traffic, and what it would
have cost.

`celgate policy replay DIR --decisions FILE` reads decision-log lines, rebuilds each request's
policy inputs (the recorded `PolicyRequest`, budget snapshot, unhealthy models and time; the
catalogue from today's configuration), routes it with the candidate policy exactly as the
gateway would (`whatif.what_if`: evaluate, deny, enforce, reservation estimate) and compares
with what the live policy did.

Costs are today's prices, so a price change between then and now does not pass for a policy
change. A request the live gateway answered is priced from its recorded usage: the live model
with that usage, a different candidate model with the same input tokens and the output tokens
as recorded. A request no model answered (refused, failed) that the candidate would send is
priced by the estimate the gateway reserves with. An unchanged route costs what it cost.

Only Chat and ChatStream lines are replayed: Route is a dry run that spends nothing, and a
request refused before the policy ran (authentication, validation, rate limits) has no
policy inputs. Lines written before the inputs were recorded (format 1) are counted, not
replayed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.chat import Usage
from gateway.config import Config
from gateway.errors import Reason
from gateway.policy.compiler import CompiledPolicy, PolicyError
from gateway.policy.inputs import INPUTS_VERSION, InputsError, decode, parse_time
from gateway.policy.store import PolicyStore
from gateway.policy.whatif import WhatIf, catalogue, output_allowance, what_if
from gateway.pricing import Pricing
from gateway.v1 import policy_pb2

REPLAYED_RPCS = frozenset({"Chat", "ChatStream"})
RESIDENCY = Reason.DATA_RESIDENCY

SKIP_DRY_RUN = "not a Chat or ChatStream call (a Route dry run spends nothing)"
SKIP_FORMAT_1 = "recorded before policy inputs were logged (format 1)"
SKIP_NO_INPUTS = "refused before the policy ran (authentication, validation, limits)"


class ReplayError(Exception):
    """A decision log that cannot be replayed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Window:
    """Which recorded decisions to replay."""

    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None

    def admits(self, when: datetime, tenant: str | None) -> bool:
        if self.since is not None and when < self.since:
            return False
        if self.until is not None and when >= self.until:
            return False
        return self.tenant is None or tenant == self.tenant


def parse_when(text: str, option: str) -> datetime:
    """`2026-11-01` or `2026-11-01T12:00` (UTC unless an offset is given)."""
    try:
        return parse_time(text, option)
    except InputsError:
        raise ReplayError(
            f"{option}: {text!r} is not a date or time; use for example 2026-11-01 or "
            "2026-11-01T12:00:00Z"
        ) from None


def parse_share(text: str, option: str) -> float:
    """`10%` (or `10`) -> 0.10."""
    raw = text.strip().removesuffix("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise ReplayError(f"{option}: {text!r} is not a percentage such as 10%") from None
    if not math.isfinite(value) or value < 0:
        raise ReplayError(f"{option}: {text!r} must be a percentage of 0% or more")
    return value / 100.0


@dataclass(slots=True)
class _Recorded:
    """What the live gateway did with one request, read from its line."""

    line: int
    tenant: str | None
    route: str | None  # the live route's model; None when refused
    refused: str | None
    rule: str | None
    answered: str | None
    usage: Usage | None
    cost_usd: float


def _outcome(model: str | None, refused: str | None) -> str:
    return model if model is not None else f"refused ({refused or 'unknown'})"


@dataclass
class ReplayReport:
    """The comparison, ready for text or JSON."""

    decisions_file: str
    candidate_name: str
    candidate_revision: str
    lines: int = 0
    in_window: int = 0
    replayed: int = 0
    changed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    candidate_rules: Counter[str] = field(default_factory=Counter)
    live_rules: Counter[str] = field(default_factory=Counter)
    refusals_added: Counter[str] = field(default_factory=Counter)
    refusals_removed: Counter[str] = field(default_factory=Counter)
    live_cost_usd: float = 0.0
    candidate_cost_usd: float = 0.0
    estimated: int = 0  # candidate costs taken from the reservation estimate
    priced_as_recorded: int = 0  # live costs of models no longer in the catalogue
    violations: list[str] = field(default_factory=list)

    @property
    def changed_share(self) -> float:
        return self.changed / self.replayed if self.replayed else 0.0

    @property
    def cost_difference_usd(self) -> float:
        return self.candidate_cost_usd - self.live_cost_usd

    @property
    def cost_change(self) -> float | None:
        """The difference as a share of the live cost; None when the live cost is zero."""
        if self.live_cost_usd == 0:
            return None if self.candidate_cost_usd == 0 else math.inf
        return self.cost_difference_usd / self.live_cost_usd

    def gate(self, max_cost_increase: float | None, max_changed: float | None) -> None:
        """Record which limits the candidate exceeds (`violations`)."""
        change = self.cost_change
        if max_cost_increase is not None and change is not None and change > max_cost_increase:
            self.violations.append(
                f"cost increase {_percent(change)} exceeds --max-cost-increase "
                f"{_percent(max_cost_increase)}"
            )
        if max_changed is not None and self.changed_share > max_changed:
            self.violations.append(
                f"changed decisions {_percent(self.changed_share)} exceed --max-changed "
                f"{_percent(max_changed)}"
            )

    def to_json(self) -> dict[str, Any]:
        change = self.cost_change
        return {
            "decisions_file": self.decisions_file,
            "candidate": {"name": self.candidate_name, "revision": self.candidate_revision},
            "lines": self.lines,
            "in_window": self.in_window,
            "replayed": self.replayed,
            "skipped": dict(sorted(self.skipped.items())),
            "changed": self.changed,
            "changed_share": self.changed_share,
            "models": [
                {"live": live, "candidate": cand, "count": count, "changed": live != cand}
                for (live, cand), count in _by_count(self.transitions)
            ],
            "rules": {
                "candidate": dict(_by_count(self.candidate_rules)),
                "live": dict(_by_count(self.live_rules)),
            },
            "refusals": {
                "added": dict(sorted(self.refusals_added.items())),
                "removed": dict(sorted(self.refusals_removed.items())),
            },
            "cost": {
                "live_usd": self.live_cost_usd,
                "candidate_usd": self.candidate_cost_usd,
                "difference_usd": self.cost_difference_usd,
                "difference_share": None if change is None or math.isinf(change) else change,
                "estimated": self.estimated,
                "priced_as_recorded": self.priced_as_recorded,
            },
            "passed": not self.violations,
            "violations": self.violations,
        }

    def write_text(self, out: TextIO) -> None:
        out.write(
            f"candidate {self.candidate_name}@{self.candidate_revision} against "
            f"{self.decisions_file}\n"
        )
        out.write(f"replayed {self.replayed} of {self.in_window} decisions in the window")
        if self.lines != self.in_window:
            out.write(f" ({self.lines} lines read)")
        out.write("\n")
        for reason, count in sorted(self.skipped.items()):
            out.write(f"  skipped {count}: {reason}\n")
        out.write(f"changed {self.changed} ({_percent(self.changed_share)})\n\n")
        if self.transitions:
            rows: list[tuple[str, ...]] = [("LIVE", "CANDIDATE", "COUNT", "")]
            rows += [
                (live, cand, str(count), "changed" if live != cand else "")
                for (live, cand), count in _by_count(self.transitions)
            ]
            _table(rows, out)
            out.write("\n")
        if self.candidate_rules:
            rule_rows: list[tuple[str, ...]] = [("CANDIDATE RULE", "COUNT")]
            rule_rows += [
                (str(rule), str(count)) for rule, count in _by_count(self.candidate_rules)
            ]
            _table(rule_rows, out)
            out.write("\n")
        reasons = sorted(set(self.refusals_added) | set(self.refusals_removed))
        if reasons:
            refusal_rows: list[tuple[str, ...]] = [("REFUSALS", "ADDED", "REMOVED")]
            refusal_rows += [
                (r, str(self.refusals_added[r]), str(self.refusals_removed[r])) for r in reasons
            ]
            _table(refusal_rows, out)
        else:
            out.write("refusals: none added or removed\n")
        change = self.cost_change
        share = "" if change is None else f" ({_percent(change, signed=True)})"
        out.write(
            f"\ncost at today's prices: live ${self.live_cost_usd:.6f}, candidate "
            f"${self.candidate_cost_usd:.6f}, difference "
            f"{_usd(self.cost_difference_usd)}{share}\n"
        )
        if self.estimated:
            out.write(
                f"  {self.estimated} candidate costs are reservation estimates (no recorded "
                "usage to price)\n"
            )
        if self.priced_as_recorded:
            out.write(
                f"  {self.priced_as_recorded} live costs as recorded (model no longer in the "
                "catalogue)\n"
            )
        for violation in self.violations:
            out.write(f"FAIL {violation}\n")


def _by_count(counter: Mapping[Any, int]) -> list[tuple[Any, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], str(item[0])))


def _percent(share: float, *, signed: bool = False) -> str:
    if math.isinf(share):
        return "+inf%" if signed else "inf%"
    return f"{share * 100:+.1f}%" if signed else f"{share * 100:.1f}%"


def _usd(amount: float) -> str:
    return f"-${-amount:.6f}" if amount < 0 else f"+${amount:.6f}"


def _table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; raises ReplayError naming the line."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        try:
            for number, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                try:
                    data = json.loads(text.rstrip("\r\n"))
                except json.JSONDecodeError as exc:
                    raise ReplayError(
                        f"{path}:{number}: not a JSON decision-log line ({exc.msg} at column "
                        f"{exc.colno})"
                    ) from None
                if not isinstance(data, dict):
                    raise ReplayError(
                        f"{path}:{number}: expected a JSON object, got {type(data).__name__}"
                    )
                yield number, data
        except UnicodeDecodeError:
            raise ReplayError(f"{path}: not UTF-8 text") from None


def _usage(value: Any, where: str) -> Usage | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ReplayError(f"{where}: usage: expected an object")
    counts: dict[str, int] = {}
    for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
        count = value.get(name, 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ReplayError(f"{where}: usage.{name}: expected a count, got {count!r}")
        counts[name] = count
    return Usage(**counts)


def _text(data: Mapping[str, Any], name: str, where: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ReplayError(f"{where}: {name}: expected a string, got {type(value).__name__}")
    return value


def _recorded(number: int, data: Mapping[str, Any], where: str) -> _Recorded:
    route = _text(data, "route", where)
    cost = data.get("cost_usd", 0.0)
    if not isinstance(cost, int | float) or isinstance(cost, bool):
        raise ReplayError(f"{where}: cost_usd: expected a number")
    return _Recorded(
        line=number,
        tenant=_text(data, "tenant", where),
        route=route,
        # A request that reached the policy but has no route was refused by it or by
        # enforcement (or no policy was loaded): its reason says which.
        refused=None if route is not None else (_text(data, "reason", where) or "UNKNOWN"),
        rule=_text(data, "rule", where),
        answered=_text(data, "model", where),
        usage=_usage(data.get("usage"), where),
        cost_usd=float(cost),
    )


class Replayer:
    """Replays decision-log lines against one candidate policy."""

    def __init__(self, policy: CompiledPolicy, config: Config, pricing: Pricing) -> None:
        self.policy = policy
        self.config = config
        self.pricing = pricing
        self._catalogues: dict[frozenset[str], Mapping[str, policy_pb2.ModelInfo]] = {}

    def _models(self, unhealthy: frozenset[str]) -> Mapping[str, policy_pb2.ModelInfo]:
        models = self._catalogues.get(unhealthy)
        if models is None:
            models = catalogue(self.config, self.pricing, lambda alias: alias not in unhealthy)
            self._catalogues[unhealthy] = models
        return models

    def replay(self, path: Path, window: Window = Window()) -> ReplayReport:
        report = ReplayReport(str(path), self.policy.name, self.policy.revision)
        for number, data in read_lines(path):
            report.lines += 1
            where = f"{path}:{number}"
            when = _recorded_time(data, where)
            tenant = _text(data, "tenant", where)
            if not window.admits(when, tenant):
                continue
            report.in_window += 1
            if data.get("rpc") not in REPLAYED_RPCS:
                report.skipped[SKIP_DRY_RUN] += 1
                continue
            version = data.get("version", 1)
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ReplayError(f"{where}: version: expected a format number, got {version!r}")
            if version < INPUTS_VERSION:
                report.skipped[SKIP_FORMAT_1] += 1
                continue
            if data.get("policy_inputs") is None:
                report.skipped[SKIP_NO_INPUTS] += 1
                continue
            try:
                inputs = decode(data["policy_inputs"])
            except InputsError as exc:
                raise ReplayError(f"{where}: {exc}") from None
            live = _recorded(number, data, where)
            candidate = what_if(
                self.policy,
                inputs.request,
                inputs.budget,
                self._models(inputs.unhealthy),
                inputs.now,
                self.config,
                self.pricing,
            )
            self._compare(report, live, candidate, inputs.request)
        return report

    def _compare(
        self,
        report: ReplayReport,
        live: _Recorded,
        candidate: WhatIf,
        request: policy_pb2.PolicyRequest,
    ) -> None:
        report.replayed += 1
        live_outcome = _outcome(live.route, live.refused)
        candidate_outcome = _outcome(candidate.model, candidate.refused)
        changed = live_outcome != candidate_outcome
        report.changed += changed
        report.transitions[(live_outcome, candidate_outcome)] += 1
        report.candidate_rules[candidate.rule or "(none: evaluation failed)"] += 1
        if live.rule:
            report.live_rules[live.rule] += 1
        if live.refused != candidate.refused:
            if candidate.refused is not None:
                report.refusals_added[candidate.refused] += 1
            if live.refused is not None:
                report.refusals_removed[live.refused] += 1
        live_cost = self._live_cost(report, live, request)
        report.live_cost_usd += live_cost
        if not changed:
            report.candidate_cost_usd += live_cost
        elif candidate.model is None:
            pass  # refused: nothing is spent
        elif live.usage is not None and live.answered is not None:
            report.candidate_cost_usd += self.pricing.cost(candidate.model, live.usage)
        else:
            report.candidate_cost_usd += candidate.estimated_cost_usd
            report.estimated += 1

    def _live_cost(
        self, report: ReplayReport, live: _Recorded, request: policy_pb2.PolicyRequest
    ) -> float:
        if live.answered is None:
            return 0.0  # refused or failed: nothing was spent
        try:
            if live.usage is not None:
                return self.pricing.cost(live.answered, live.usage)
            # A stream that reported no usage is charged its reservation estimate.
            allowance = output_allowance(self.config, request, 0)
            return self.pricing.estimate_max(
                live.answered, int(request.estimated_input_tokens), allowance
            )
        except KeyError:
            report.priced_as_recorded += 1
            return live.cost_usd


def _recorded_time(data: Mapping[str, Any], where: str) -> datetime:
    try:
        return parse_time(data.get("time"), "time")
    except InputsError as exc:
        raise ReplayError(f"{where}: {exc}") from None


def run_replay(
    policy_dir: Path,
    decisions: Path,
    config: Config,
    out: TextIO,
    *,
    window: Window = Window(),
    output_format: str = "text",
    max_cost_increase: float | None = None,
    max_changed: float | None = None,
) -> int:
    """The `celgate policy replay` command: 0 when the candidate is within the limits, 1 when
    it exceeds one (or does not compile or pass its tests), 2 for unreadable input."""
    store = PolicyStore(policy_dir)
    try:
        store.load()
    except PolicyError as exc:
        out.write(f"FAIL {policy_dir}: the candidate policy does not load\n{exc}\n")
        return 1
    assert store.current is not None
    replayer = Replayer(store.current, config, Pricing.from_config(config))
    report = replayer.replay(decisions, window)
    report.gate(max_cost_increase, max_changed)
    if output_format == "json":
        out.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        report.write_text(out)
    return 1 if report.violations else 0
