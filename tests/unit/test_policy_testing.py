"""The tests.yaml runner: output, coverage and exit codes."""

from __future__ import annotations

import io
from pathlib import Path

from gateway.policy.testing import discover, run_check, run_test

ROOT = Path(__file__).resolve().parents[2]

POLICY = """\
name: p
rule:
  match:
    - condition: request.tenant == "a"
      output: 'RouteDecision{model: "alpha"}'
    - condition: request.tenant == "b"
      output: 'RouteDecision{model: "beta"}'
    - output: 'RouteDecision{model: "other"}'
"""

TESTS = """\
section:
  - name: tenants
    tests:
      - name: alpha
        input:
          request: {value: {tenant: a}}
        output:
          expr: 'RouteDecision{model: "alpha", rule: "p/1"}'
      - name: other
        input:
          request: {expr: 'PolicyRequest{tenant: "z"}'}
        output: {expr: 'RouteDecision{model: "other"}'}
"""


def make(tmp_path: Path, policy: str, tests: str | None = None) -> Path:
    folder = tmp_path / "nested" / "p"
    folder.mkdir(parents=True)
    (folder / "policy.yaml").write_text(policy)
    if tests is not None:
        (folder / "tests.yaml").write_text(tests)
    return folder


def test_passing_suite_reports_each_test_and_unreached_matches(tmp_path: Path) -> None:
    make(tmp_path, POLICY, TESTS)
    out = io.StringIO()
    assert run_test(tmp_path, out) == 0
    text = out.getvalue()
    assert "PASS tenants/alpha" in text and "PASS tenants/other" in text
    assert "coverage: 2/3 outputs reached" in text
    assert "not reached: p/2 (policy.yaml:6:7)" in text
    assert "2 passed, 0 failed; 1 of 1 suites ok" in text


def test_failing_test_exits_one_with_expected_and_actual(tmp_path: Path) -> None:
    wrong = TESTS.replace('model: "other"}', 'model: "beta"}')
    make(tmp_path, POLICY, wrong)
    out = io.StringIO()
    assert run_test(tmp_path, out) == 1
    text = out.getvalue()
    assert "FAIL tenants/other: expected RouteDecision" in text
    assert '"model":"beta"' in text.replace(" ", "") and "(from p/3)" in text


def test_wrong_expected_rule_id_fails(tmp_path: Path) -> None:
    make(tmp_path, POLICY, TESTS.replace('rule: "p/1"', 'rule: "p/2"'))
    assert run_test(tmp_path, io.StringIO()) == 1


def test_check_broken_policy_exits_one_with_position(tmp_path: Path) -> None:
    make(tmp_path, POLICY.replace("request.tenant ==", "request.tenantt =="))
    out = io.StringIO()
    assert run_check(tmp_path, out) == 1
    assert "policy.yaml:4:25: undefined field 'tenantt'" in out.getvalue()
    assert run_test(tmp_path, io.StringIO()) == 1


def test_check_ok_and_empty_directory(tmp_path: Path) -> None:
    make(tmp_path, POLICY)
    out = io.StringIO()
    assert run_check(tmp_path, out) == 0
    assert "1 of 1 policies compiled" in out.getvalue()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_check(empty, io.StringIO()) == 1


def test_bad_tests_file_is_reported(tmp_path: Path) -> None:
    make(
        tmp_path, POLICY, "section:\n  - name: s\n    tests:\n      - name: t\n        input: {}\n"
    )
    out = io.StringIO()
    assert run_test(tmp_path, out) == 1
    assert "s/t: test needs an 'output'" in out.getvalue()


def test_default_policy_suite_passes_with_full_coverage() -> None:
    out = io.StringIO()
    assert run_test(ROOT / "policies", out) == 0, out.getvalue()
    assert "coverage: 8/8 outputs reached" in out.getvalue()
    assert discover(ROOT / "policies") == [ROOT / "policies" / "routing"]


def test_optional_none_expected(tmp_path: Path) -> None:
    policy = POLICY.replace("    - output: 'RouteDecision{model: \"other\"}'\n", "")
    tests = TESTS.replace("expr: 'RouteDecision{model: \"other\"}'", "expr: optional.none()")
    make(
        tmp_path,
        policy,
        tests.replace(
            '\n          expr: \'RouteDecision{model: "alpha", rule: "p/1"}\'',
            "\n          expr: 'optional.of(RouteDecision{model: \"alpha\"})'",
        ),
    )
    out = io.StringIO()
    assert run_test(tmp_path, out) == 0, out.getvalue()
