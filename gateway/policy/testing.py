"""`celgate policy check|test`: compile policies and run their tests.yaml (cel-go's format).

A policy is a folder holding `policy.yaml`, optionally `tests.yaml`, and optionally
`config.yaml` (a cel-go environment that replaces the gateway's for that folder, which is how
cel-go's conformance suites run through the same runner). Test output lists every test, every
suite, and the matches no test reached (rule coverage).

A suite that must fail to compile holds `expected_errors.yaml` instead of tests; a suite whose
config names message types of its own gets them from descriptors (`descriptors.py`).
Whatever a suite holds, the runner reports problems as diagnostics naming the file, never as
a traceback: one broken suite must not hide the results of the others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.policy.compiler import (
    POLICY_FILE,
    CompiledPolicy,
    PolicyError,
    PolicyEvaluationError,
    compile_policy,
)
from gateway.policy.descriptors import DescriptorError, build_pool, suite_descriptor_paths
from gateway.policy.environment import (
    EnvironmentConfigError,
    PolicyEnvironment,
    gateway_environment,
    suite_environment,
)
from gateway.policy.parser import Diagnostic
from gateway.v1 import policy_pb2

TESTS_FILE = "tests.yaml"
CONFIG_FILE = "config.yaml"
EXPECTED_ERRORS_FILE = "expected_errors.yaml"

log = logging.getLogger("celgate.policy")


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
    # A suite that must fail to compile: how its diagnostics compared with the expected ones.
    expects_errors: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.passed for r in self.results)


def discover(root: Path) -> list[Path]:
    """Every folder under `root` (or `root` itself) that holds a policy.yaml."""
    root = Path(root)
    if root.is_file():
        return [root.parent]
    return sorted({p.parent for p in root.rglob(POLICY_FILE) if p.is_file()})


def environment_for(folder: Path, descriptors: Sequence[Path] = ()) -> PolicyEnvironment:
    """The gateway's environment, or the folder's `config.yaml` with its message types taken
    from `descriptors` plus the FileDescriptorSets and .proto files in the folder."""
    config = folder / CONFIG_FILE
    if not config.is_file():
        return gateway_environment()
    try:
        pool = build_pool([*descriptors, *suite_descriptor_paths(folder)])
    except DescriptorError as exc:
        raise EnvironmentConfigError(str(exc)) from None
    return suite_environment(config, pool)


def load_suite(
    folder: Path, descriptors: Sequence[Path] = ()
) -> tuple[CompiledPolicy, PolicyEnvironment]:
    environment = environment_for(folder, descriptors)
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
        self.context_type = environment.context_type

    def expr(self, source: Any, where: str) -> Any:
        text = str(source)
        try:
            compiled = self.env.compile(text)
        except (RuntimeError, ValueError) as exc:
            raise TestFileError(f"{where}: invalid expression: {_first_line(exc)}") from None
        try:
            if compiled.return_type().name().startswith("optional"):
                # Optionals cannot cross into Python: unwrap to [] (none) or [value].
                wrapped = f"cel.bind(__e, ({text}), __e.hasValue() ? [__e.value()] : [])"
                result = self.env.compile(wrapped).eval().plain_value()
                if isinstance(result, list):
                    return _Optional(result[0] if result else None, bool(result))
            else:
                result = compiled.eval().plain_value()
        except (RuntimeError, ValueError, TypeError) as exc:
            raise TestFileError(f"{where}: evaluation failed: {_first_line(exc)}") from None
        if isinstance(result, str) and compiled.return_type().name() != "STRING":
            raise TestFileError(f"{where}: evaluation failed: {result}")
        return result

    def inputs(
        self, raw: Any, where: str, lines: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """`lines` maps an input's name to a `where` that points at its own line."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise TestFileError(f"{where}: 'input' must map variable names to value or expr")
        data: dict[str, Any] = {}
        if self.gateway:
            data = {name: make() for name, make in _GATEWAY_DEFAULTS.items()}
        for name, binding in raw.items():
            here = f"{(lines or {}).get(str(name), where)}: input '{name}'"
            if isinstance(binding, dict) and set(binding) == {"value"}:
                data[name] = self.convert(name, binding["value"], here)
            elif isinstance(binding, dict) and set(binding) == {"expr"}:
                data[name] = self.expr(binding["expr"], here)
            elif isinstance(binding, dict) and set(binding) == {"context_expr"}:
                # cel-go's other spelling of `context_expr`: as an input, whatever its name.
                data.update(self.context(binding["context_expr"], here))
            elif isinstance(binding, dict) and ({"value", "expr"} & set(binding)):
                raise TestFileError(f"{here}: give exactly one of 'value' or 'expr'")
            else:
                # cel-go's older format: the YAML value itself.
                data[name] = self.convert(name, binding, here)
        return data

    def convert(self, name: str, value: Any, where: str) -> Any:
        convert = self.converters.get(name)
        if convert is None:
            return value
        try:
            return convert(value)
        except json_format.ParseError as exc:
            # e.g. a misspelled enum name: protobuf's message names the field and the value.
            raise TestFileError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise TestFileError(f"{where}: not a valid {name}: {exc}") from None

    def context(self, source: Any, where: str) -> dict[str, Any]:
        """cel-go's `context_expr`: a message whose fields are the policy's variables."""
        if not self.context_type:
            raise TestFileError(
                f"{where}: context_expr needs a context variable in {CONFIG_FILE} "
                "(context_variable: {type_name: MESSAGE})"
            )
        message = self.expr(source, f"{where}: context_expr")
        if not isinstance(message, Message) or message.DESCRIPTOR.full_name != self.context_type:
            raise TestFileError(f"{where}: context_expr must build a {self.context_type}")
        data: dict[str, Any] = {}
        for fd in message.DESCRIPTOR.fields:
            value = getattr(message, fd.name)
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                value = dict(value)
            elif fd.is_repeated:
                value = list(value)
            data[fd.name] = value
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


@dataclass(frozen=True)
class _Test:
    section: str
    name: str
    body: dict[str, Any]
    line: int  # of the test in tests.yaml (0 when unknown)
    input_lines: dict[str, int]


def _positions(text: str) -> dict[tuple[int, int], tuple[int, dict[str, int]]]:
    """(section index, test index) -> (line of the test, line of each input), 1-based."""
    out: dict[tuple[int, int], tuple[int, dict[str, int]]] = {}
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    sections = _field(root, "section")
    if not isinstance(sections, SequenceNode):
        return out
    for s_index, section in enumerate(sections.value, start=1):
        tests = _field(section, "tests")
        if not isinstance(tests, SequenceNode):
            continue
        for t_index, test in enumerate(tests.value, start=1):
            inputs = _field(test, "input")
            lines: dict[str, int] = {}
            if isinstance(inputs, MappingNode):
                for key, _value in inputs.value:
                    if isinstance(key, ScalarNode):
                        lines[str(key.value)] = key.start_mark.line + 1
            out[(s_index, t_index)] = (test.start_mark.line + 1, lines)
    return out


def _field(node: Node | None, name: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    for key, value in node.value:
        if isinstance(key, ScalarNode) and key.value == name:
            return value  # type: ignore[no-any-return]
    return None


def _tests(folder: Path) -> list[_Test]:
    path = folder / TESTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        positions = _positions(text)
    except OSError as exc:
        raise TestFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TestFileError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise TestFileError(
            f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("section"), list):
        raise TestFileError(f"{path}: expected a mapping with a 'section' list")
    out: list[_Test] = []
    for s_index, section in enumerate(data["section"], start=1):
        if not isinstance(section, dict) or not isinstance(section.get("tests"), list):
            raise TestFileError(f"{path}: section {s_index} needs a 'tests' list")
        section_name = str(section.get("name", f"section{s_index}"))
        for t_index, test in enumerate(section["tests"], start=1):
            line, input_lines = positions.get((s_index, t_index), (0, {}))
            at = f"{path}:{line}" if line else str(path)
            if not isinstance(test, dict):
                raise TestFileError(f"{at}: {section_name}: test {t_index} must be a mapping")
            name = str(test.get("name", f"test{t_index}"))
            if "output" not in test:
                raise TestFileError(f"{at}: {section_name}/{name}: test needs an 'output'")
            out.append(_Test(section_name, name, test, line, input_lines))
    return out


def run_tests(policy: CompiledPolicy, environment: PolicyEnvironment, folder: Path) -> SuiteResult:
    """Run `folder/tests.yaml` against an already compiled policy."""
    suite = SuiteResult(folder, policy, has_tests=(folder / TESTS_FILE).is_file())
    if not suite.has_tests:
        return suite
    try:
        tests = _tests(folder)
        evaluator = _Evaluator(policy, environment)
        for test in tests:
            path = folder / TESTS_FILE
            at = f"{path}:{test.line}" if test.line else str(path)
            where = f"{at}: {test.section}/{test.name}"
            if "context_expr" in test.body:
                if test.body.get("input"):
                    raise TestFileError(f"{where}: give 'input' or 'context_expr', not both")
                data = evaluator.context(test.body["context_expr"], where)
            else:
                lines = {
                    name: f"{path}:{line}: {test.section}/{test.name}"
                    for name, line in test.input_lines.items()
                }
                data = evaluator.inputs(test.body.get("input"), where, lines)
            expected = evaluator.expected(test.body["output"], where)
            suite.results.append(
                _run_one(policy, test.section, test.name, data, expected, suite.reached)
            )
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


def run_suite(folder: Path, descriptors: Sequence[Path] = ()) -> SuiteResult:
    has_tests = (folder / TESTS_FILE).is_file()
    try:
        if (folder / EXPECTED_ERRORS_FILE).is_file():
            return _run_expected_errors(folder, descriptors)
        try:
            policy, environment = load_suite(folder, descriptors)
        except (PolicyError, EnvironmentConfigError, TestFileError) as exc:
            return SuiteResult(folder, error=str(exc), has_tests=has_tests)
        return run_tests(policy, environment, folder)
    except Exception as exc:  # one broken suite must not end the run
        # Anything not foreseen above is still a finding about this suite, not a crash.
        log.debug("suite %s failed unexpectedly", folder, exc_info=True)
        return SuiteResult(
            folder,
            error=f"{folder}: could not be run: {type(exc).__name__}: {_first_line(exc)}",
            has_tests=has_tests,
        )


@dataclass(frozen=True)
class _ExpectedError:
    line: int
    column: int | None
    message: str

    def matches(self, d: Diagnostic) -> bool:
        return (
            d.line == self.line
            and (self.column is None or d.col == self.column)
            and self.message in d.message
        )

    def describe(self) -> str:
        col = f":{self.column}" if self.column is not None else ""
        return f"line {self.line}{col}: {self.message!r}"


def _expected_errors(folder: Path) -> list[_ExpectedError]:
    """`expected_errors.yaml`: `errors: [{line, column (optional), message (a part)}]`."""
    path = folder / EXPECTED_ERRORS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TestFileError(f"{path}: cannot read: {_first_line(exc)}") from None
    items = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise TestFileError(f"{path}: expected a mapping with a non-empty 'errors' list")
    out: list[_ExpectedError] = []
    for index, item in enumerate(items, start=1):
        line, column = (item.get("line"), item.get("column")) if isinstance(item, dict) else (0, 0)
        message = item.get("message", "") if isinstance(item, dict) else None
        if (
            not isinstance(line, int)
            or not (column is None or isinstance(column, int))
            or not isinstance(message, str)
        ):
            raise TestFileError(
                f"{path}: error {index} needs 'line' (int), optional 'column' (int) and "
                "'message' (a part of the message)"
            )
        out.append(_ExpectedError(line, column, message))
    return out


def _run_expected_errors(folder: Path, descriptors: Sequence[Path]) -> SuiteResult:
    """A suite whose policy must fail to compile with exactly the expected diagnostics."""
    suite = SuiteResult(folder, expects_errors=True)
    try:
        expected = _expected_errors(folder)
        try:
            policy, _ = load_suite(folder, descriptors)
        except PolicyError as exc:
            actual = list(exc.diagnostics)
        else:
            suite.policy = policy
            suite.error = (
                f"{folder / POLICY_FILE}: compiled, but {EXPECTED_ERRORS_FILE} expects "
                f"{len(expected)} error(s)"
            )
            return suite
    except (EnvironmentConfigError, TestFileError) as exc:
        suite.error = str(exc)
        return suite
    unmatched = list(actual)
    for want in expected:
        found = next((d for d in unmatched if want.matches(d)), None)
        if found is None:
            suite.results.append(
                TestResult("expected_errors", want.describe(), False, "not reported")
            )
            continue
        unmatched.remove(found)
        suite.results.append(TestResult("expected_errors", want.describe(), True))
    for extra in unmatched:
        suite.results.append(
            TestResult(
                "expected_errors",
                f"line {extra.line}:{extra.col}",
                False,
                f"unexpected error: {extra.message}",
            )
        )
    return suite


# -- command line ------------------------------------------------------------------------------


def run_check(path: Path, out: TextIO, descriptors: Sequence[Path] = ()) -> int:
    """Compile every policy under `path`; 0 when all compile (or fail exactly as their
    expected_errors.yaml says), 1 otherwise."""
    folders = discover(path)
    if not folders:
        out.write(f"{path}: no {POLICY_FILE} found\n")
        return 1
    failed = 0
    for folder in folders:
        if (folder / EXPECTED_ERRORS_FILE).is_file():
            suite = run_suite(folder, descriptors)
            if suite.ok:
                out.write(f"ok   {folder} (fails to compile as expected)\n")
            else:
                failed += 1
                report_suite(suite, out)
            continue
        try:
            policy, _ = load_suite(folder, descriptors)
        except (PolicyError, EnvironmentConfigError, TestFileError) as exc:
            failed += 1
            out.write(f"FAIL {folder}\n{exc}\n")
            continue
        except Exception as exc:  # report, never a traceback
            failed += 1
            out.write(f"FAIL {folder}\n{folder}: {type(exc).__name__}: {_first_line(exc)}\n")
            continue
        out.write(
            f"ok   {folder} ({policy.name}, revision {policy.revision}, "
            f"{len(policy.matches)} outputs)\n"
        )
    out.write(f"{len(folders) - failed} of {len(folders)} policies compiled\n")
    return 1 if failed else 0


def run_test(path: Path, out: TextIO, descriptors: Sequence[Path] = ()) -> int:
    """Compile and test every policy under `path`; 0 when everything passes, 1 otherwise."""
    folders = discover(path)
    if not folders:
        out.write(f"{path}: no {POLICY_FILE} found\n")
        return 1
    passed = failed = suites_failed = 0
    for folder in folders:
        suite = run_suite(folder, descriptors)
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
    if suite.expects_errors:
        title = "must fail to compile"
    out.write(f"\n{suite.folder} ({title})\n")
    for result in suite.results:
        if result.passed:
            out.write(f"  PASS {result.section}/{result.name}\n")
        else:
            out.write(f"  FAIL {result.section}/{result.name}: {result.detail}\n")
    if suite.error:
        out.write("  ERROR " + suite.error.replace("\n", "\n  ") + "\n")
    if policy is None or suite.expects_errors:
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
