"""Compiler: errors with positions, and the CEL Policy semantics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cel_expr_python import cel

from gateway.policy.compiler import PolicyError, PolicyEvaluationError, compile_policy
from gateway.policy.environment import PolicyEnvironment
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
