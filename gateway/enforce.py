"""The data-residency invariant (docs/architecture.md, invariant 1) and the tenant's model
list, as pure functions.

Content at classification C never goes to a model whose clearance is below C, and a tenant is
never routed outside its allowed models. This runs on the policy's choice and fallbacks in the
pipeline, and the residency check runs again in the dispatcher right before each call,
independent of the policy: a policy can narrow where data goes, never widen it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

from gateway.config import ModelConfig
from gateway.errors import PermissionDenied, Reason
from gateway.inspect.findings import Finding
from gateway.levels import Level


# Immutable records built on every request: NamedTuples cost a third of a frozen dataclass.
class Dropped(NamedTuple):
    model: str
    reason: str


class Enforced(NamedTuple):
    chain: tuple[str, ...]  # the models that may be tried, in order
    dropped: tuple[Dropped, ...]  # considered and refused, with why
    rerouted_from: str | None  # the policy's choice when enforcement replaced it
    redacted: frozenset[str] = frozenset()  # models of the chain that get the redacted request


def redaction_floor(
    findings: Iterable[Finding],
    declared: Level | None,
    detectors: Collection[str],
    max_level: Level,
) -> Level:
    """The classification the request would have once every redactable finding is replaced:
    a model cleared at this level may receive it redacted. What cannot be redacted (a declared
    level, a finding of another detector, above `max_level`, or without a location) stays."""
    floor = declared or Level.PUBLIC
    for finding in findings:
        redactable = (
            finding.detector in detectors and finding.level <= max_level and finding.locations
        )
        if not redactable and finding.level > floor:
            floor = finding.level
    return floor


def to_redact(findings: Iterable[Finding], clearance: Level) -> tuple[Finding, ...]:
    """The findings a model cleared at `clearance` must not see (all of them redactable when
    `redaction_floor(...) <= clearance`)."""
    return tuple(f for f in findings if f.level > clearance)


# Level names by value: an Enum's `.name` is a descriptor call, and this runs per candidate.
_NAMES = ("", *(level.name for level in Level))


def violation(alias: str, model: ModelConfig, classification: Level) -> str | None:
    """Why `alias` may not receive content at `classification`, or None when it may."""
    if model.clearance >= classification:
        return None
    return (
        f"model {alias!r} is cleared for {_NAMES[model.clearance]} but the request is "
        f"{_NAMES[classification]}"
    )


def refusal(
    alias: str,
    models: Mapping[str, ModelConfig],
    classification: Level,
    allowed: Collection[str] | None,
) -> tuple[str, str] | None:
    """(ErrorInfo reason, message) when `alias` must not be used for this request."""
    model = models.get(alias)
    if model is None:
        return Reason.UNKNOWN_MODEL, f"model {alias!r} is not in the catalogue"
    if allowed is not None and alias not in allowed:
        return Reason.MODEL_NOT_ALLOWED, f"model {alias!r} is not in the tenant's allowed models"
    reason = violation(alias, model, classification)
    return None if reason is None else (Reason.DATA_RESIDENCY, reason)


# A candidate and, when it must not be used, (ErrorInfo reason, message).
Verdict = tuple[str, tuple[str, str] | None]


def judge(
    chain: Sequence[str],
    models: Mapping[str, ModelConfig],
    classification: Level,
    allowed: Collection[str] | None = None,
) -> list[Verdict]:
    """Every distinct candidate of the chain, in order, with its refusal if any."""
    return [
        (alias, refusal(alias, models, classification, allowed)) for alias in dict.fromkeys(chain)
    ]


def enforce(
    chain: Sequence[str],
    models: Mapping[str, ModelConfig],
    classification: Level,
    *,
    allowed: Collection[str] | None = None,
    on_violation: Literal["deny", "reroute"] = "deny",
    reroute_order: Sequence[str] = (),
    verdicts: Sequence[Verdict] | None = None,
    redaction_floor: Level | None = None,
) -> Enforced:
    """Filter the policy's ordered chain (primary first). A candidate refused only for
    residency is kept, marked for redaction, when `redaction_floor` (None: redaction is off)
    is within its clearance. A refused primary is denied, or in reroute mode replaced by the
    first compliant model of `reroute_order`; refused fallbacks are dropped from the chain.
    `verdicts` are `judge(chain, ...)` when the caller already has them (the pipeline records
    them before enforcing)."""
    if verdicts is None:
        verdicts = judge(chain, models, classification, allowed)
    kept: list[str] = []
    dropped: list[Dropped] = []
    redacted: set[str] = set()
    rerouted_from: str | None = None
    primary_reason = ""
    for position, (alias, refused) in enumerate(verdicts):
        if refused is None:
            kept.append(alias)
            continue
        if _redactable(refused, models.get(alias), redaction_floor):
            kept.append(alias)
            redacted.add(alias)
            continue
        dropped.append(Dropped(alias, refused[1]))
        if position > 0:
            continue
        if on_violation == "deny" or refused[0] == Reason.UNKNOWN_MODEL:
            raise PermissionDenied(
                refused[1], reason=refused[0], model=alias, classification=classification.name
            )
        rerouted_from, primary_reason = alias, refused[0]
    if rerouted_from is not None:
        substitute = next(
            (a for a in reroute_order if refusal(a, models, classification, allowed) is None),
            None,
        )
        if substitute is None:
            substitute = next(
                (
                    a
                    for a in reroute_order
                    if _redactable(
                        refusal(a, models, classification, allowed), models.get(a), redaction_floor
                    )
                ),
                None,
            )
            if substitute is not None:
                redacted.add(substitute)
        if substitute is None:
            raise PermissionDenied(
                f"{dropped[0].reason}, and no model in enforcement.reroute_order may receive "
                f"{classification.name} content",
                reason=primary_reason,
                model=rerouted_from,
                classification=classification.name,
            )
        kept = [substitute, *(a for a in kept if a != substitute)]
    if not kept:  # defensive: a refused primary has raised or been replaced above
        raise PermissionDenied(
            f"no candidate model may receive {classification.name} content",
            reason=Reason.NO_CANDIDATE,
            classification=classification.name,
        )
    return Enforced(tuple(kept), tuple(dropped), rerouted_from, frozenset(redacted))


def _redactable(
    refused: tuple[str, str] | None, model: ModelConfig | None, floor: Level | None
) -> bool:
    """A residency refusal that redaction lifts (never a model-list or unknown-model one)."""
    return (
        refused is not None
        and refused[0] == Reason.DATA_RESIDENCY
        and model is not None
        and floor is not None
        and model.clearance >= floor
    )
