"""cel-go's conformance sample through the same runner as `celgate policy test`."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from gateway.policy.testing import discover, run_suite, run_test

ROOT = Path(__file__).resolve().parents[2]
# Message types of cel-go's `pb` and `context_pb` suites (a stand-in written for these tests).
DESCRIPTORS = [ROOT / "tests" / "data" / "protos"]


def _sample() -> Path:
    """cel-go's suites: $CELGATE_CONFORMANCE, else the project's shared/ folder beside the
    checkout (where CI and the development machines keep it)."""
    if "CELGATE_CONFORMANCE" in os.environ:
        return Path(os.environ["CELGATE_CONFORMANCE"])
    for shared in (ROOT.parent / "shared", Path("/work/shared")):
        if (shared / "conformance" / "cel-policy").is_dir():
            return shared / "conformance" / "cel-policy"
    return ROOT.parent / "shared" / "conformance" / "cel-policy"


SAMPLE = _sample()
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason="conformance sample not present")


@pytest.mark.parametrize(
    "folder", discover(SAMPLE) if SAMPLE.is_dir() else [], ids=lambda p: p.name
)
def test_suite_passes(folder: Path) -> None:
    suite = run_suite(folder, DESCRIPTORS)
    assert suite.error is None, suite.error
    assert suite.results, "suite has no tests (nor expected errors)"
    failed = [f"{r.section}/{r.name}: {r.detail}" for r in suite.results if not r.passed]
    assert not failed, failed


def test_runner_exit_code_over_the_sample() -> None:
    out = io.StringIO()
    assert run_test(SAMPLE, out, DESCRIPTORS) == 0, out.getvalue()
    assert "0 failed" in out.getvalue()
