"""The inspect stage: classification, task type, complexity and token estimate of a request."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.chat import ChatParams
from gateway.config import InspectionConfig
from gateway.inspect import analysis, normalize, segments
from gateway.inspect.classification import Classifier
from gateway.inspect.findings import Finding
from gateway.inspect.parts import parts_list
from gateway.levels import Level


@dataclass(frozen=True, slots=True)
class Inspection:
    """What the policy may know about a request's content. Never holds content."""

    findings: tuple[Finding, ...]
    declared: Level | None
    classification: Level  # effective: max(declared, detected, PUBLIC)
    task_type: int  # gateway.v1.TaskType value
    complexity: float  # [0, 1]
    estimated_input_tokens: int

    @property
    def detectors(self) -> tuple[str, ...]:
        return tuple(f.detector for f in self.findings)


def effective_level(declared: Level | None, findings: tuple[Finding, ...]) -> Level:
    """Classification only goes up: the caller can raise it, never declare below a finding."""
    level = declared or Level.PUBLIC  # PUBLIC is the lowest level
    for finding in findings:
        if finding.level > level:
            level = finding.level
    return level


class Inspector:
    """Built once at start-up (and on config reload): compiles the Hyperscan databases.

    Raises ValueError naming the config field when an operator pattern, dictionary term or
    detector name in the config is unusable.
    """

    def __init__(self, config: InspectionConfig) -> None:
        self._classifier = Classifier(config)
        self._vocabulary = analysis.Vocabulary.shared()

    @property
    def detector_levels(self) -> dict[str, Level]:
        return self._classifier.detector_levels

    def is_clean(self, text: str) -> bool:
        """True when no pattern-tier detector finds anything in `text` (a short value such as
        a request label, not a request). Raises like `inspect` when a detector fails."""
        return not self._classifier.scan(normalize.to_bytes(text))

    def inspect(
        self, params: ChatParams, *, declared: Level | None = None, task_hint: int = 0
    ) -> Inspection:
        """Raises `gateway.errors.InternalError` when a detector fails (fail closed)."""
        # Each non-ASCII text is normalized once, whichever reader needs it first.
        normalized = normalize.Memo()
        # Every string the adapters may send, read structurally from the request.
        scan = segments.buffer(parts_list(params), normalized)
        findings = self._classifier.scan(scan)
        text = normalize.request_text(params, normalized)

        user, system = normalize.instruction_text(params, normalized)
        cues = self._vocabulary.cues_of(user, system)
        size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
        tokens = analysis.estimate_input_tokens(text, size, params)
        features = analysis.complexity_features(params, cues, (user, system), tokens)
        return Inspection(
            findings=findings,
            declared=declared,
            classification=effective_level(declared, findings),
            task_type=analysis.task_type(params, cues, task_hint),
            complexity=analysis.complexity(features),
            estimated_input_tokens=tokens,
        )

    def findings_in(self, text: str) -> tuple[Finding, ...]:
        """The pattern tier's findings in one short text (a label, for example), for callers
        that must not record a value the gateway treats as sensitive."""
        return self._classifier.scan(segments.buffer([("text", text)]))
