"""`celgate policy check|test`: compile policies and run their tests.yaml (cel-go's format).

A policy is a folder holding `policy.yaml`, optionally `tests.yaml`, and optionally
`config.yaml` (a cel-go environment that replaces the gateway's for that folder, which is how
cel-go's conformance suites run through the same runner). Test output lists every test, every
suite, and the matches no test reached (rule coverage).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from gateway.policy.compiler import (
    POLICY_FILE,
    CompiledPolicy,
    PolicyError,
    PolicyEvaluationError,
    compile_policy,
)
from gateway.policy.environment import (
    EnvironmentConfigError,
    PolicyEnvironment,
    gateway_environment,
    suite_environment,
)
from gateway.v1 import policy_pb2

TESTS_FILE = "tests.yaml"
CONFIG_FILE = "config.yaml"


class TestFileError(Exception):
    """A tests.yaml that cannot be run; the message names the file, test and field."""


@dataclass
class TestResult:
    section: str
    name: str
    passed: bool
    detail: str = ""


@dataclass
class SuiteResult:
    folder: Path
    policy: CompiledPolicy | None = None
    error: str | None = None
    results: list[TestResult] = field(default_factory=list)
    reached: set[int] = field(default_factory=set)
    has_tests: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.passed for r in self.results)


def discover(root: Path) -> list[Path]:
    """Every folder under `root` (or `root` itself) that holds a policy.yaml."""
    root = Path(root)
    if root.is_file():
        return [root.parent]
    return sorted({p.parent for p in root.rglob(POLICY_FILE) if p.is_file()})


def environment_for(folder: Path) -> PolicyEnvironment:
    config = folder / CONFIG_FILE
    return suite_environment(config) if config.is_file() else gateway_environment()


def load_suite(folder: Path) -> tuple[CompiledPolicy, PolicyEnvironment]:
    environment = environment_for(folder)
    return compile_policy(folder, environment), environment


# -- inputs and expected outputs ---------------------------------------------------------------


def _gateway_converters() -> dict[str, Callable[[Any], Any]]:
    def message(cls: type[Message]) -> Callable[[Any], Any]:
        return lambda value: (
            json_format.ParseDict(value, cls()) if isinstance(value, dict) else value
        )

    def models(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            alias: json_format.ParseDict({"alias": alias, **info}, policy_pb2.ModelInfo())
            if isinstance(info, dict)
            else info
            for alias, info in value.items()
        }

    def timestamp(value: Any) -> Any:
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        return value

    return {
        "request": message(policy_pb2.PolicyRequest),
        "budget": message(policy_pb2.BudgetState),
        "models": models,
        "now": timestamp,
    }


# Inputs a gateway policy test may leave out: an empty request and no budget.
_GATEWAY_DEFAULTS: dict[str, Callable[[], Any]] = {
    "request": policy_pb2.PolicyRequest,
    "budget": policy_pb2.BudgetState,
    "models": dict,
    "now": lambda: datetime(2025, 1, 1, tzinfo=UTC),
}


class _Evaluator:
    """Evaluates the `expr` of inputs and expected outputs in the policy's environment."""

    def __init__(self, policy: CompiledPolicy, environment: PolicyEnvironment) -> None:
        self.env = environment.new_env()
        self.gateway = environment.output_type is not None
        self.converters = _gateway_converters() if self.gateway else {}

    def expr(self, source: Any, where: str) -> Any:
        text = str(source)
        try:
            compiled = self.env.compile(text)
        except RuntimeError as exc:
            raise TestFileError(f"{where}: invalid expression: {_first_line(exc)}") from None
        if compiled.return_type().name().startswith("optional"):
            # Optionals cannot cross into Python: unwrap to [] (none) or [value].
            wrapped = f"cel.bind(__e, ({text}), __e.hasValue() ? [__e.value()] : [])"
            result = self.env.compile(wrapped).eval().plain_value()
            if isinstance(result, list):
                return _Optional(result[0] if result else None, bool(result))
        else:
            result = compiled.eval().plain_value()
        if isinstance(result, str) and compiled.return_type().name() != "STRING":
            raise TestFileError(f"{where}: evaluation failed: {result}")
        return result

    def inputs(self, raw: Any, where: str) -> dict[str, Any]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise TestFileError(f"{where}: 'input' must map variable names to value or expr")
        data: dict[str, Any] = {}
        if self.gateway:
            data = {name: make() for name, make in _GATEWAY_DEFAULTS.items()}
        for name, binding in raw.items():
            here = f"{where}: input '{name}'"
            if isinstance(binding, dict) and set(binding) == {"value"}:
                value = binding["value"]
                convert = self.converters.get(name)
                data[name] = convert(value) if convert else value
            elif isinstance(binding, dict) and set(binding) == {"expr"}:
                data[name] = self.expr(binding["expr"], here)
            elif isinstance(binding, dict) and ({"value", "expr"} & set(binding)):
                raise TestFileError(f"{here}: give exactly one of 'value' or 'expr'")
            else:
                # cel-go's older format: the YAML value itself.
                convert = self.converters.get(name)
                data[name] = convert(binding) if convert else binding
        return data

    def expected(self, raw: Any, where: str) -> _Optional:
        if isinstance(raw, dict) and set(raw) == {"value"}:
            return _Optional(raw["value"], True)
        if isinstance(raw, dict) and set(raw) == {"expr"}:
            result = self.expr(raw["expr"], f"{where}: output")
            return result if isinstance(result, _Optional) else _Optional(result, True)
        if isinstance(raw, str):
            result = self.expr(raw, f"{where}: output")
            return result if isinstance(result, _Optional) else _Optional(result, True)
        raise TestFileError(f"{where}: 'output' needs a 'value' or an 'expr'")


@dataclass(frozen=True)
class _Optional:
    value: Any
    present: bool


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _same(actual: Any, expected: Any) -> bool:
    """Equality without Python's bool/int and int/float coercions, which CEL does not have."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, list | tuple) and isinstance(expected, list | tuple):
        return len(actual) == len(expected) and all(
            _same(a, e) for a, e in zip(actual, expected, strict=True)
        )
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            _same(actual[k], expected[k]) for k in actual
        )
    if isinstance(actual, float) and isinstance(expected, float):
        return actual == expected or (math.isnan(actual) and math.isnan(expected))
    if isinstance(actual, int) and isinstance(expected, float):
        return False
    if isinstance(actual, float) and isinstance(expected, int):
        return False
    return bool(actual == expected)


def _show(value: Any) -> str:
    if isinstance(value, Message):
        return f"{value.DESCRIPTOR.name}{{{json_format.MessageToJson(value, indent=None)}}}"
    return repr(value)


def _tests(folder: Path) -> list[tuple[str, str, dict[str, Any]]]:
    path = folder / TESTS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TestFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise TestFileError(
            f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("section"), list):
        raise TestFileError(f"{path}: expected a mapping with a 'section' list")
    out: list[tuple[str, str, dict[str, Any]]] = []
    for s_index, section in enumerate(data["section"], start=1):
        if not isinstance(section, dict) or not isinstance(section.get("tests"), list):
            raise TestFileError(f"{path}: section {s_index} needs a 'tests' list")
        section_name = str(section.get("name", f"section{s_index}"))
        for t_index, test in enumerate(section["tests"], start=1):
            if not isinstance(test, dict):
                raise TestFileError(f"{path}: {section_name}: test {t_index} must be a mapping")
            if "output" not in test:
                name = test.get("name", t_index)
                raise TestFileError(f"{path}: {section_name}/{name}: test needs an 'output'")
            out.append((section_name, str(test.get("name", f"test{t_index}")), test))
    return out


def run_tests(policy: CompiledPolicy, environment: PolicyEnvironment, folder: Path) -> SuiteResult:
    """Run `folder/tests.yaml` against an already compiled policy."""
    suite = SuiteResult(folder, policy, has_tests=(folder / TESTS_FILE).is_file())
    if not suite.has_tests:
        return suite
    try:
        tests = _tests(folder)
        evaluator = _Evaluator(policy, environment)
        for section, name, test in tests:
            where = f"{folder / TESTS_FILE}: {section}/{name}"
            data = evaluator.inputs(test.get("input"), where)
            expected = evaluator.expected(test["output"], where)
            suite.results.append(_run_one(policy, section, name, data, expected, suite.reached))
    except TestFileError as exc:
        suite.error = str(exc)
    return suite


def _run_one(
    policy: CompiledPolicy,
    section: str,
    name: str,
    data: Mapping[str, Any],
    expected: _Optional,
    reached: set[int],
) -> TestResult:
    try:
        fired = policy.run(data)
    except PolicyEvaluationError as exc:
        return TestResult(section, name, False, str(exc))
    if fired is None:
        if not expected.present:
            return TestResult(section, name, True)
        return TestResult(section, name, False, f"no match fired, expected {_show(expected.value)}")
    index, actual = fired
    reached.add(index)
    if not expected.present:
        return TestResult(section, name, False, f"expected no output, got {_show(actual)}")
    want = expected.value
    # The rule id is compared only when the test names one.
    if (
        isinstance(actual, policy_pb2.RouteDecision)
        and isinstance(want, policy_pb2.RouteDecision)
        and want.rule
    ):
        actual.rule = policy.matches[index].id
    if _same(actual, want):
        return TestResult(section, name, True)
    return TestResult(
        section,
        name,
        False,
        f"expected {_show(want)}, got {_show(actual)} (from {policy.matches[index].id})",
    )


def run_suite(folder: Path) -> SuiteResult:
    try:
        policy, environment = load_suite(folder)
    except (PolicyError, EnvironmentConfigError) as exc:
        return SuiteResult(folder, error=str(exc), has_tests=(folder / TESTS_FILE).is_file())
    return run_tests(policy, environment, folder)


# -- command line ------------------------------------------------------------------------------


def run_check(path: Path, out: TextIO) -> int:
    """Compile every policy under `path`; 0 when all compile, 1 otherwise."""
    folders = discover(path)
    if not folders:
        out.write(f"{path}: no {POLICY_FILE} found\n")
        return 1
    failed = 0
    for folder in folders:
        try:
            policy, _ = load_suite(folder)
        except (PolicyError, EnvironmentConfigError) as exc:
            failed += 1
            out.write(f"FAIL {folder}\n{exc}\n")
            continue
        out.write(
            f"ok   {folder} ({policy.name}, revision {policy.revision}, "
            f"{len(policy.matches)} outputs)\n"
        )
    out.write(f"{len(folders) - failed} of {len(folders)} policies compiled\n")
    return 1 if failed else 0


def run_test(path: Path, out: TextIO) -> int:
    """Compile and test every policy under `path`; 0 when everything passes, 1 otherwise."""
    folders = discover(path)
    if not folders:
        out.write(f"{path}: no {POLICY_FILE} found\n")
        return 1
    passed = failed = suites_failed = 0
    for folder in folders:
        suite = run_suite(folder)
        report_suite(suite, out)
        passed += sum(r.passed for r in suite.results)
        failed += sum(not r.passed for r in suite.results)
        suites_failed += not suite.ok
    out.write(
        f"\n{passed} passed, {failed} failed; {len(folders) - suites_failed} of "
        f"{len(folders)} suites ok\n"
    )
    return 1 if suites_failed else 0


def report_suite(suite: SuiteResult, out: TextIO) -> None:
    policy = suite.policy
    title = f"{policy.name}, revision {policy.revision}" if policy else "not compiled"
    out.write(f"\n{suite.folder} ({title})\n")
    for result in suite.results:
        if result.passed:
            out.write(f"  PASS {result.section}/{result.name}\n")
        else:
            out.write(f"  FAIL {result.section}/{result.name}: {result.detail}\n")
    if suite.error:
        out.write("  ERROR " + suite.error.replace("\n", "\n  ") + "\n")
    if policy is None:
        return
    if not suite.has_tests:
        out.write(f"  no {TESTS_FILE}: nothing tested\n")
    total = len(policy.matches)
    out.write(f"  coverage: {len(suite.reached)}/{total} outputs reached\n")
    for index, match in enumerate(policy.matches):
        if index not in suite.reached:
            out.write(
                f"  not reached: {match.id} ({policy.source.name}:{match.line}:{match.col})\n"
            )
