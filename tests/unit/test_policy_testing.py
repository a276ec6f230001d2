"""The tests.yaml runner: output, coverage and exit codes."""

from __future__ import annotations

import io
import shutil
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


SUITES = ROOT / "tests" / "data" / "policy_suites"
PROTOS = ROOT / "tests" / "data" / "protos"

BAD_IMPORT = """\
name: p
imports:
  - name: "gateway.v1.Route Decision"
rule:
  match:
    - output: 'RouteDecision{model: "a"}'
"""

UNIMPLEMENTED_CONFIG = """\
name: s
variables:
  - name: x
    type_name: string
functions:
  - name: tier
    overloads:
      - id: tier_string
        args:
          - type_name: string
        return:
          type_name: string
"""

MISSPELLED_ENUM_TESTS = """\
section:
  - name: s
    tests:
      - name: planning
        input:
          request:
            value: {task_type: TASK_TYPE_PLANING}
        output: {expr: 'RouteDecision{model: "alpha"}'}
"""


def the_three_bad_inputs(tmp_path: Path) -> dict[str, Path]:
    """A bad import name, a config function without implementation, a misspelled enum."""
    folders = {name: tmp_path / name for name in ("imports", "config", "enum")}
    for folder in folders.values():
        folder.mkdir()
    (folders["imports"] / "policy.yaml").write_text(BAD_IMPORT)
    (folders["config"] / "config.yaml").write_text(UNIMPLEMENTED_CONFIG)
    (folders["config"] / "policy.yaml").write_text(
        "name: s\nrule:\n  match:\n    - output: tier(x)\n"
    )
    (folders["config"] / "tests.yaml").write_text(
        "section:\n  - name: s\n    tests:\n      - name: t\n"
        "        input: {x: {value: a}}\n        output: {value: b}\n"
    )
    (folders["enum"] / "policy.yaml").write_text(POLICY)
    (folders["enum"] / "tests.yaml").write_text(MISSPELLED_ENUM_TESTS)
    return folders


def test_bad_import_unimplemented_function_and_enum_are_diagnostics(tmp_path: Path) -> None:
    folders = the_three_bad_inputs(tmp_path)
    out = io.StringIO()
    assert run_test(tmp_path, out) == 1
    text = out.getvalue()
    assert f"{folders['imports'] / 'policy.yaml'}:3:11: error configuring import: " in text
    assert f"{folders['config'] / 'config.yaml'}:8: function overload 'tier_string'" in text
    assert "no implementation" in text
    assert f"{folders['enum'] / 'tests.yaml'}:6: s/planning: input 'request'" in text
    assert "TASK_TYPE_PLANING" in text
    assert "0 passed, 0 failed; 0 of 3 suites ok" in text
    check = io.StringIO()
    assert run_check(tmp_path, check) == 1
    assert "error configuring import" in check.getvalue() and "tier_string" in check.getvalue()


def test_suite_that_must_fail_to_compile(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_test(SUITES / "must_fail", out) == 0, out.getvalue()
    assert "(must fail to compile)" in out.getvalue()
    assert run_check(SUITES / "must_fail", io.StringIO()) == 0

    folder = tmp_path / "must_fail"
    shutil.copytree(SUITES / "must_fail", folder)
    expected = folder / "expected_errors.yaml"
    # An expected error that is not reported, and a reported one that is not expected.
    expected.write_text(expected.read_text().replace("line: 14\n    column: 7", "line: 15"))
    out = io.StringIO()
    assert run_test(folder, out) == 1
    assert "FAIL expected_errors/line 15: 'unreachable': not reported" in out.getvalue()
    assert "FAIL expected_errors/line 14:7: unexpected error: match is unreachable" in (
        out.getvalue()
    )
    # A policy that compiles fails a suite that expects errors.
    (folder / "policy.yaml").write_text("name: ok\nrule:\n  match:\n    - output: labels\n")
    out = io.StringIO()
    assert run_test(folder, out) == 1
    assert "compiled, but expected_errors.yaml expects 3 error(s)" in out.getvalue()


def test_context_expr_and_proto_files_as_descriptors() -> None:
    out = io.StringIO()
    assert run_test(SUITES, out, [PROTOS]) == 0, out.getvalue()
    text = out.getvalue()
    assert "PASS context/repeated_enum" in text and "PASS context/map_field" in text
    assert "PASS as_input/context_expr_as_an_input" in text
    assert "PASS refused/bar" in text
    assert "3 of 3 suites ok" in text


def test_a_file_descriptor_set_as_descriptors(tmp_path: Path) -> None:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    descriptors = tmp_path / "test.binpb"
    args = ["protoc", f"-I{PROTOS}", "--include_imports", f"--descriptor_set_out={descriptors}"]
    assert protoc.main([*args, "test_all_types.proto"]) == 0
    out = io.StringIO()
    assert run_test(SUITES / "proto_input", out, [descriptors]) == 0, out.getvalue()
    # A set beside the suite's config.yaml is picked up without the option.
    folder = tmp_path / "proto_input"
    shutil.copytree(SUITES / "proto_input", folder)
    shutil.copy(descriptors, folder / "types.binpb")
    assert run_test(folder, io.StringIO()) == 0


def test_missing_or_broken_descriptors_are_diagnostics(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_test(SUITES / "proto_input", out) == 1
    assert "config.yaml:10: message type 'google.expr.proto3.test.TestAllTypes' is unknown" in (
        out.getvalue()
    )
    junk = tmp_path / "junk.binpb"
    junk.write_bytes(b"\xff\xff not a descriptor set")
    out = io.StringIO()
    assert run_test(SUITES / "proto_input", out, [junk]) == 1
    assert f"{junk}: not a binary FileDescriptorSet" in out.getvalue()


def test_context_expr_without_a_context_variable_is_reported(tmp_path: Path) -> None:
    make(
        tmp_path,
        POLICY,
        "section:\n  - name: s\n    tests:\n      - name: t\n"
        "        context_expr: 'PolicyRequest{}'\n        output: {expr: 'optional.none()'}\n",
    )
    out = io.StringIO()
    assert run_test(tmp_path, out) == 1
    assert "tests.yaml:4: s/t: context_expr needs a context variable" in out.getvalue()
