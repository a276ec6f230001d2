"""Parser: structure errors and the file positions of expressions."""

from __future__ import annotations

import pytest

from gateway.policy.parser import PolicyParseError, parse_policy

POLICY = """\
name: p
rule:
  variables:
    - name: a
      expression: "request.tenant"
  match:
    - condition: >
        variables.a == 'x'
      output: 'RouteDecision{model: "m"}'
    - output: RouteDecision{}
"""


def test_positions_of_quoted_block_and_plain_expressions() -> None:
    policy = parse_policy(POLICY, "p.yaml")
    var = policy.rule.variables[0]
    # Double-quoted: CEL column 1 is the character after the quote (file column 20).
    assert var.expression.position(1, 1) == (5, 20)
    cond = policy.rule.matches[0].condition
    assert cond is not None
    # Folded block: content starts on the next line and columns are the file's own.
    assert cond.position(1, 9) == (8, 9)
    assert cond.compact == "variables.a == 'x'"
    plain = policy.rule.matches[1].output
    assert plain is not None and plain.position(1, 15) == (10, 15)


def test_all_structural_errors_are_reported_at_once() -> None:
    text = """\
name: p
extra: 1
rule:
  match:
    - condition: "true"
    - output: "1"
      rule: {match: []}
    - output: ""
"""
    with pytest.raises(PolicyParseError) as info:
        parse_policy(text, "bad.yaml")
    messages = [(d.line, d.message) for d in info.value.diagnostics]
    assert (
        2,
        "unsupported policy field 'extra' (expected name, description, imports, rule)",
    ) in messages
    assert any(line == 5 and "needs an 'output' or a 'rule'" in m for line, m in messages)
    assert any(line == 6 and "both 'output' and 'rule'" in m for line, m in messages)
    assert any(line == 8 and "output is empty" in m for line, m in messages)
    assert str(info.value).startswith("bad.yaml:")


def test_invalid_yaml_names_line_and_column() -> None:
    with pytest.raises(PolicyParseError) as info:
        parse_policy("name: p\nrule: [\n", "x.yaml")
    diag = info.value.diagnostics[0]
    assert diag.path == "x.yaml" and diag.line >= 2 and "invalid YAML" in diag.message


def test_missing_name_and_rule() -> None:
    with pytest.raises(PolicyParseError) as info:
        parse_policy("description: d\n", "x.yaml")
    text = str(info.value)
    assert "policy needs a 'name'" in text and "policy needs a 'rule'" in text
