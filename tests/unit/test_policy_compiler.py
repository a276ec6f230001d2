"""Compiler: errors with positions, and the CEL Policy semantics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cel_expr_python import cel

from gateway.policy.compiler import PolicyError, PolicyEvaluationError, compile_policy
from gateway.policy.environment import PolicyEnvironment, suite_environment
from gateway.v1 import policy_pb2

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "policy.yaml").write_text(text)
    return tmp_path


def errors(tmp_path: Path, text: str) -> str:
    with pytest.raises(PolicyError) as info:
        compile_policy(write(tmp_path, text))
    return str(info.value)


def evaluate(tmp_path: Path, text: str, **request: object) -> policy_pb2.RouteDecision:
    policy = compile_policy(write(tmp_path, text))
    return policy.evaluate(policy_pb2.PolicyRequest(**request), policy_pb2.BudgetState(), {}, NOW)


def test_undefined_field_has_line_col_and_caret(tmp_path: Path) -> None:
    text = (
        "name: p\n"
        "rule:\n"
        "  match:\n"
        "    - condition: request.complexty > 0.5\n"
        "      output: RouteDecision{}\n"
    )
    message = errors(tmp_path, text)
    assert f"{tmp_path}/policy.yaml:4:25: undefined field 'complexty'" in message
    assert " |     - condition: request.complexty > 0.5\n | ........................^" in message


def test_every_error_of_the_file_at_once(tmp_path: Path) -> None:
    text = """\
name: p
rule:
  variables:
    - name: v
      expression: request.nope
  match:
    - condition: request.tenant
      output: RouteDecision{}
    - condition: budget.utilization > 1
      output: '"a string"'
    - output: 'RouteDecision{model: variables.missing}'
    - output: RouteDecision{}
"""
    message = errors(tmp_path, text)
    assert ":5:26: undefined field 'nope'" in message
    assert ":7:18: condition must be a bool, not STRING" in message
    assert "write 1.0 instead of 1" in message
    assert ":10:16: incompatible output type: STRING, expected gateway.v1.RouteDecision" in message
    assert "undeclared reference to 'variables.missing'" in message
    assert ":12:7: match is unreachable: the match at line 11 always produces an output" in message


def test_output_types_must_agree_without_declared_type(tmp_path: Path) -> None:
    env = PolicyEnvironment(name="t", variables={"x": cel.Type.INT})
    (tmp_path / "policy.yaml").write_text(
        "name: p\nrule:\n  match:\n    - condition: x > 1\n      output: '1'\n"
        "    - rule:\n        match:\n          - output: \"'s'\"\n"
    )
    with pytest.raises(PolicyError) as info:
        compile_policy(tmp_path, env)
    assert (
        ":8:22: incompatible output type: STRING, expected INT (set by the output at line 5)"
        in str(info.value)
    )


def test_first_match_wins_and_rule_id_is_filled(tmp_path: Path) -> None:
    text = """\
name: p
rule:
  match:
    - condition: request.tenant == "a"
      output: 'RouteDecision{model: "first"}'
    - condition: request.tenant.startsWith("a")
      output: 'RouteDecision{model: "second"}'
    - output: 'RouteDecision{model: "last"}'
"""
    assert evaluate(tmp_path, text, tenant="a").rule == "p/1"
    decision = evaluate(tmp_path, text, tenant="ab")
    assert (decision.model, decision.rule) == ("second", "p/2")
    assert evaluate(tmp_path, text, tenant="z").model == "last"


def test_nested_rules_chain_and_shadow(tmp_path: Path) -> None:
    text = """\
name: p
rule:
  variables:
    - name: n
      expression: request.message_count
  match:
    - rule:
        id: big
        variables:
          - name: n
            expression: variables.n * 10
        match:
          - condition: variables.n > 50
            output: 'RouteDecision{model: "big", max_output_tokens: variables.n}'
    - condition: variables.n > 2
      output: 'RouteDecision{model: "medium", max_output_tokens: variables.n}'
    - output: 'RouteDecision{model: "small", max_output_tokens: variables.n}'
"""
    big = evaluate(tmp_path, text, message_count=6)
    assert (big.model, big.max_output_tokens, big.rule) == ("big", 60, "big/1")
    # The nested rule produced nothing: evaluation continues with the parent's next match,
    # where `variables.n` is the parent's (unshadowed) value.
    medium = evaluate(tmp_path, text, message_count=3)
    assert (medium.model, medium.max_output_tokens, medium.rule) == ("medium", 3, "p/2")
    assert evaluate(tmp_path, text, message_count=1).model == "small"


def test_variables_are_lazy_and_evaluated_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def probe(value: int) -> int:
        calls.append(value)
        return value

    decl = cel.FunctionDecl("probe", [cel.Overload("probe_int", cel.Type.INT, [cel.Type.INT])])
    env = PolicyEnvironment(
        name="t",
        variables={"x": cel.Type.INT},
        functions=[decl],
        function_impls={"probe_int": probe},
    )
    (tmp_path / "policy.yaml").write_text(
        "name: p\nrule:\n  variables:\n    - name: v\n      expression: probe(x)\n"
        "  match:\n    - condition: x > 10\n      output: variables.v + variables.v\n"
        "    - output: '0'\n"
    )
    policy = compile_policy(tmp_path, env)
    assert policy.run({"x": 20}) == (0, 40)
    assert calls == [20]
    calls.clear()
    assert policy.run({"x": 1}) == (1, 0)
    assert calls == []


def test_optional_result_when_not_every_path_outputs(tmp_path: Path) -> None:
    text = (
        "name: p\nrule:\n  match:\n    - condition: request.tenant == 'a'\n"
        "      output: 'RouteDecision{model: ''m''}'\n"
    )
    policy = compile_policy(write(tmp_path, text))
    assert policy.total is False
    assert policy.run({"request": policy_pb2.PolicyRequest(tenant="b")}) is None
    with pytest.raises(PolicyEvaluationError, match="no match produced a decision"):
        policy.evaluate(policy_pb2.PolicyRequest(tenant="b"), policy_pb2.BudgetState(), {}, NOW)


def test_evaluation_error_fails_closed_without_request_content(tmp_path: Path) -> None:
    text = (
        "name: p\nrule:\n  match:\n"
        "    - output: 'RouteDecision{model: models[request.requested_model].alias}'\n"
    )
    policy = compile_policy(write(tmp_path, text))
    with pytest.raises(PolicyEvaluationError) as info:
        policy.evaluate(
            policy_pb2.PolicyRequest(requested_model="secret-project-x"),
            policy_pb2.BudgetState(),
            {},
            NOW,
        )
    assert "secret-project-x" not in str(info.value)
    assert "failed to evaluate" in str(info.value)


def test_revision_is_a_content_hash(tmp_path: Path) -> None:
    text = "name: p\nrule:\n  match:\n    - output: RouteDecision{}\n"
    first = compile_policy(write(tmp_path, text))
    again = compile_policy(write(tmp_path, text))
    changed = compile_policy(write(tmp_path, text + "# edit\n"))
    assert first.revision == again.revision != changed.revision
    assert len(first.revision) == 12 and first.source == tmp_path / "policy.yaml"


def test_default_policy_compiles_and_routes() -> None:
    policy = compile_policy(Path(__file__).resolve().parents[2] / "policies" / "routing")
    models = {
        alias: policy_pb2.ModelInfo(alias=alias, healthy=True)
        for alias in ("llama-local", "claude-opus", "gpt-5.5")
    }
    decision = policy.evaluate(
        policy_pb2.PolicyRequest(task_type=policy_pb2.TASK_TYPE_PLANNING),
        policy_pb2.BudgetState(limited=True, utilization=0.95),
        models,
        NOW,
    )
    assert (decision.model, decision.rule) == ("llama-local", "routing/2")


def suite(tmp_path: Path, config: str, text: str) -> PolicyEnvironment:
    (tmp_path / "config.yaml").write_text(config)
    write(tmp_path, text)
    return suite_environment(tmp_path / "config.yaml")


@pytest.mark.parametrize("style", [">", "|"])
def test_multiline_string_in_a_block_evaluates_what_was_checked(tmp_path: Path, style: str) -> None:
    # The expression is type-checked on the file's text; YAML's value of the same block folds
    # (`>`) or dedents (`|`) the line break inside the triple-quoted string. The program must
    # run the checked text, where the string keeps its line break and indentation.
    text = (
        "name: p\nrule:\n  match:\n"
        f"    - output: {style}\n"
        "        RouteDecision{model: \"a\", reason: '''first line\n"
        "          second line'''}\n"
    )
    decision = evaluate(tmp_path, text)
    assert decision.reason == "first line\n          second line"


def test_plain_multiline_scalar_evaluates_what_was_checked(tmp_path: Path) -> None:
    # A plain scalar folds its line break too.
    text = "name: s\nrule:\n  match:\n    - output: string('''one\n        two''')\n"
    environment = suite(tmp_path, SUITE_CONFIG, text)
    fired = compile_policy(tmp_path, environment).run({"csv": ""})
    assert fired is not None and fired[1] == "one\n        two"


def test_redeclaring_a_variable_with_another_type_is_an_overlapping_identifier(
    tmp_path: Path,
) -> None:
    text = """\
name: p
rule:
  variables:
    - name: n
      expression: request.message_count
  match:
    - condition: request.tenant == "a"
      rule:
        variables:
          - name: n
            expression: '"ten"'
        match:
          - output: 'RouteDecision{model: variables.n}'
    - output: RouteDecision{}
"""
    message = errors(tmp_path, text)
    assert (
        ":10:19: invalid variable declaration: overlapping identifier for name 'variables.n'"
        in message
    )
    assert "declared INT, redeclared STRING" in message
    # The same name with the same type is a shadow, which stays allowed.
    same = text.replace("expression: '\"ten\"'", "expression: variables.n * 2").replace(
        "model: variables.n", 'model: "m", max_output_tokens: variables.n'
    )
    compile_policy(write(tmp_path, same))


def test_redeclaring_in_the_same_rule_with_another_type_is_an_error(tmp_path: Path) -> None:
    text = """\
name: p
rule:
  variables:
    - name: n
      expression: "1"
    - name: n
      expression: "'one'"
  match:
    - output: RouteDecision{}
"""
    assert ":6:13: invalid variable declaration: overlapping identifier" in errors(tmp_path, text)


def test_matches_after_an_unconditional_match_are_still_checked(tmp_path: Path) -> None:
    text = """\
name: p
rule:
  match:
    - output: RouteDecision{}
    - condition: request.complexty > 0.5
      output: 'RouteDecision{model: "x"}'
    - rule:
        match:
          - output: 'RouteDecision{modle: "y"}'
"""
    message = errors(tmp_path, text)
    assert ":5:7: match is unreachable: the match at line 4 always produces an output" in message
    assert ":5:25: undefined field 'complexty'" in message
    assert ":7:7: match is unreachable" in message
    assert "modle" in message and ":9:" in message


@pytest.mark.parametrize(
    "condition", ["true", "(true)", "true && true", "((true) || false)", "!false", " true "]
)
def test_always_true_is_judged_on_the_parsed_expression(tmp_path: Path, condition: str) -> None:
    text = (
        "name: p\nrule:\n  match:\n"
        f"    - condition: '{condition}'\n"
        "      output: RouteDecision{}\n"
        "    - output: 'RouteDecision{model: \"x\"}'\n"
    )
    assert ":6:7: match is unreachable: the match at line 4" in errors(tmp_path, text)
    # As the last match it makes every path produce an output: the result is not optional.
    last = f"name: p\nrule:\n  match:\n    - condition: '{condition}'\n"
    last += "      output: RouteDecision{}\n"
    assert compile_policy(write(tmp_path, last)).total


@pytest.mark.parametrize(
    # `1 > 0` is a condition like any other for cel-go (its `errors` suite has one followed by
    # another match), so it neither ends the rule nor makes the next match unreachable.
    "condition",
    ["false", "request.tenant == 'a'", "request.message_count > 0 && true", "1 > 0", "!true"],
)
def test_conditions_that_read_inputs_are_not_always_true(tmp_path: Path, condition: str) -> None:
    text = (
        "name: p\nrule:\n  match:\n"
        f'    - condition: "{condition}"\n'
        "      output: RouteDecision{}\n"
        "    - output: 'RouteDecision{model: \"x\"}'\n"
    )
    policy = compile_policy(write(tmp_path, text))
    assert policy.total and len(policy.matches) == 2


def test_invalid_import_name_is_a_diagnostic_at_its_line(tmp_path: Path) -> None:
    text = (
        "name: p\nimports:\n  - name: gateway.v1.RouteDecision\n  - name: bad import\n"
        "rule:\n  match:\n    - output: 'RouteDecision{modle: 1}'\n"
    )
    message = errors(tmp_path, text)
    assert ":4:11: error configuring import: invalid qualified name: bad import" in message
    # The valid import still applies and the other expressions are still checked.
    assert "modle" in message


SUITE_CONFIG = "name: s\nvariables:\n  - name: csv\n    type_name: string\n"
SPLITS = "name: s\nrule:\n  match:\n    - output: csv.split(',')\n"


def test_strings_extension_only_when_the_suite_config_lists_it(tmp_path: Path) -> None:
    environment = suite(tmp_path, SUITE_CONFIG, SPLITS)
    with pytest.raises(PolicyError, match="undeclared reference to 'split'"):
        compile_policy(tmp_path, environment)
    listed = SUITE_CONFIG + "extensions:\n  - name: strings\n"
    environment = suite(tmp_path, listed, SPLITS)
    fired = compile_policy(tmp_path, environment).run({"csv": "a,b"})
    assert fired is not None and fired[1] == ["a", "b"]


def test_gateway_environment_keeps_the_strings_extension(tmp_path: Path) -> None:
    text = (
        "name: p\nrule:\n  match:\n"
        "    - output: 'RouteDecision{model: request.tenant.split(\"-\")[0]}'\n"
    )
    assert evaluate(tmp_path, text, tenant="acme-eu").model == "acme"


def test_a_function_without_implementation_fails_closed_at_evaluation(tmp_path: Path) -> None:
    environment = PolicyEnvironment(
        name="t",
        variables={"x": cel.Type.STRING},
        functions=[
            cel.FunctionDecl(
                "tier",
                [cel.Overload("tier_string", cel.Type.STRING, [cel.Type.STRING])],
            )
        ],
    )
    policy = compile_policy(
        write(tmp_path, "name: p\nrule:\n  match:\n    - output: tier(x)\n"), environment
    )
    with pytest.raises(PolicyEvaluationError, match="failed to evaluate"):
        policy.run({"x": "a"})
