"""`celgate policy check|test` as a real process: bad inputs are diagnostics, never tracebacks;
suites that must fail, `context_expr` and proto descriptors work from the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT
from tests.unit.test_policy_testing import PROTOS, SUITES, the_three_bad_inputs

pytestmark = pytest.mark.integration


def celgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize("command", ["test", "check"])
def test_bad_import_config_function_and_enum_are_reported_not_raised(
    tmp_path: Path, command: str
) -> None:
    folders = the_three_bad_inputs(tmp_path)
    done = celgate("policy", command, str(tmp_path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert f"{folders['imports'] / 'policy.yaml'}:3:11: error configuring import" in done.stdout
    assert f"{folders['config'] / 'config.yaml'}:8: function overload 'tier_string'" in (
        done.stdout
    )
    if command == "test":  # `check` compiles only: tests.yaml is not read
        assert f"{folders['enum'] / 'tests.yaml'}:6: s/planning: input 'request'" in done.stdout


def test_suites_with_descriptors_context_expr_and_expected_errors() -> None:
    done = celgate("policy", "test", str(SUITES), "--descriptors", str(PROTOS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS context/too_large" in done.stdout
    assert "(must fail to compile)" in done.stdout
    assert "3 of 3 suites ok" in done.stdout
    without = celgate("policy", "test", str(SUITES))
    assert without.returncode == 1
    assert "is unknown: give its descriptors" in without.stdout
    assert "Traceback" not in without.stderr
