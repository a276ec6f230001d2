"""Precision and recall of every detector on the labelled corpus (`make eval-inspect`).

Counts, not presence: a text expected to hold one card where two are found is one true
positive and one false positive. Exits 1 when a validated detector misses the targets
(recall >= 0.98, precision >= 0.95).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.chat import ChatMessage, ChatParams  # noqa: E402
from gateway.config import InspectionConfig  # noqa: E402
from gateway.inspect import Inspector  # noqa: E402

DATA = ROOT / "tests" / "data"
RECALL_TARGET = 0.98
PRECISION_TARGET = 0.95
# Detectors whose candidates pass a validator (check digits, structure, entropy, ranges).
UNVALIDATED_PREFIXES = ("marker.", "dict.", "regex.")


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def load_corpus() -> list[dict[str, object]]:
    lines = (DATA / "inspect_corpus.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def corpus_inspector() -> Inspector:
    config = json.loads((DATA / "inspect_corpus_config.json").read_text(encoding="utf-8"))
    return Inspector(InspectionConfig.model_validate(config))


def evaluate(inspector: Inspector | None = None) -> dict[str, Score]:
    inspector = inspector or corpus_inspector()
    scores: dict[str, Score] = {}
    for sample in load_corpus():
        text = str(sample["text"])
        expect: dict[str, int] = dict(sample["expect"])  # type: ignore[call-overload]
        params = ChatParams(messages=(ChatMessage(role="user", content=text),))
        found = {f.detector: f.count for f in inspector.inspect(params).findings}
        for detector in set(expect) | set(found):
            score = scores.setdefault(detector, Score())
            want, got = expect.get(detector, 0), found.get(detector, 0)
            score.tp += min(want, got)
            score.fp += max(0, got - want)
            score.fn += max(0, want - got)
            if got < want:
                score.misses.append(str(sample["id"]))
            if got > want:
                score.false_alarms.append(str(sample["id"]))
    return scores


def validated(detector: str) -> bool:
    return not detector.startswith(UNVALIDATED_PREFIXES)


def main() -> int:
    scores = evaluate()
    print(f"{'detector':<26} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>10} {'recall':>7}")
    failed = []
    for detector in sorted(scores):
        s = scores[detector]
        flag = ""
        if validated(detector) and (s.recall < RECALL_TARGET or s.precision < PRECISION_TARGET):
            failed.append(detector)
            flag = "  BELOW TARGET"
        print(
            f"{detector:<26} {s.tp:>4} {s.fp:>4} {s.fn:>4} "
            f"{s.precision:>10.3f} {s.recall:>7.3f}{flag}"
        )
        # Sample ids only: the corpus is synthetic, but the habit is never to print values.
        if s.misses:
            print(f"{'':<26} missed in: {', '.join(s.misses[:8])}")
        if s.false_alarms:
            print(f"{'':<26} false alarms in: {', '.join(s.false_alarms[:8])}")
    total = Score(
        tp=sum(s.tp for s in scores.values()),
        fp=sum(s.fp for s in scores.values()),
        fn=sum(s.fn for s in scores.values()),
    )
    print(f"{'(all detectors)':<26} {total.tp:>4} {total.fp:>4} {total.fn:>4} "
          f"{total.precision:>10.3f} {total.recall:>7.3f}")  # fmt: skip
    print(
        f"targets on validated detectors: recall >= {RECALL_TARGET}, "
        f"precision >= {PRECISION_TARGET}"
    )
    if failed:
        print("below target: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
