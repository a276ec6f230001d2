"""The labelled corpus meets the precision and recall targets on every validated detector."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _eval_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "eval_inspect", ROOT / "bench" / "eval_inspect.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_corpus_covers_every_builtin_detector_and_has_hard_negatives() -> None:
    from gateway.inspect import national_ids
    from gateway.inspect.detectors import BUILTINS

    lines = (ROOT / "tests" / "data" / "inspect_corpus.jsonl").read_text(encoding="utf-8")
    samples = [json.loads(line) for line in lines.splitlines()]
    expected = {d for s in samples for d in s["expect"]}
    # National ids are measured in test_inspect_national_ids.py.
    assert {b.id for b in BUILTINS} - national_ids.IDS <= expected
    assert sum(1 for s in samples if s["kind"] == "negative") >= 100


def test_precision_and_recall_targets() -> None:
    module = _eval_module()
    scores = module.evaluate()
    below = {
        detector: (round(s.precision, 3), round(s.recall, 3))
        for detector, s in scores.items()
        if module.validated(detector)
        and (s.recall < module.RECALL_TARGET or s.precision < module.PRECISION_TARGET)
    }
    assert below == {}
