"""Replay of recorded decisions against a candidate policy: inputs round trip, the route a
candidate would take, counts, refusals, the cost difference priced exactly, the CI gate, and
clear errors for bad logs and options. (The end-to-end replay of a log written by a running
gateway is in tests/integration/test_policy_replay.py.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import Config, InspectionConfig, parse_config
from gateway.inspect.inspector import Inspector
from gateway.policy import compile_policy
from gateway.policy.inputs import INPUTS_VERSION, InputsError, decode, encode, label_guard
from gateway.policy.replay import (
    SKIP_DRY_RUN,
    SKIP_FORMAT_1,
    SKIP_NO_INPUTS,
    Replayer,
    ReplayError,
    Window,
    parse_share,
    parse_when,
    run_replay,
)
from gateway.policy.whatif import catalogue, what_if
from gateway.pricing import Pricing
from gateway.v1 import policy_pb2

NOW = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
# USD per million tokens.
CHEAP = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
STRONG = {"input_per_mtok": 10.0, "output_per_mtok": 30.0}


def config_data() -> dict[str, Any]:
    def cloud(upstream: str, price: dict[str, float]) -> dict[str, Any]:
        return {
            "provider": "openai",
            "upstream_model": upstream,
            "base_url": "http://127.0.0.1:9/v1",
            "location": "cloud",
            "clearance": "INTERNAL",
            "price": price,
        }

    return {
        "models": {
            "local": {
                "provider": "ollama",
                "upstream_model": "llama3.1:8b",
                "base_url": "http://127.0.0.1:9",
                "location": "on_prem",
                "clearance": "RESTRICTED",
            },
            "cheap": cloud("gpt-5-mini", CHEAP),
            "strong": cloud("gpt-5.5", STRONG),
        },
        "default_model": "local",
        "limits": {"estimate_output_tokens": 1000},
        "tenants": {"locked": {"allowed_models": ["local", "cheap"]}},
    }


@pytest.fixture
def config() -> Config:
    return parse_config(config_data())


def write_policy(folder: Path, matches: str, tests: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.yaml").write_text(f"name: cand\nrule:\n  id: cand\n  match:\n{matches}")
    if tests is not None:
        (folder / "tests.yaml").write_text(tests)
    return folder


# Code generation goes to `strong`, confidential data to `strong` too (residency refuses it),
# tenant "denied" is denied, the rest to `cheap`.
CANDIDATE = """\
    - condition: request.tenant == "denied"
      output: 'RouteDecision{deny: true, reason: "no"}'
    - condition: request.classification >= Classification.CLASSIFICATION_CONFIDENTIAL
      output: 'RouteDecision{model: "strong"}'
    - condition: request.task_type == TaskType.TASK_TYPE_CODE_GENERATION
      output: 'RouteDecision{model: "strong", fallbacks: ["local"]}'
    - output: 'RouteDecision{model: "cheap", fallbacks: ["local"]}'
"""


def request(**fields: Any) -> policy_pb2.PolicyRequest:
    base: dict[str, Any] = {
        "tenant": "team-a",
        "task_type": policy_pb2.TASK_TYPE_CHAT,
        "classification": policy_pb2.CLASSIFICATION_PUBLIC,
        "estimated_input_tokens": 100,
    }
    return policy_pb2.PolicyRequest(**{**base, **fields})


def line(
    req: policy_pb2.PolicyRequest,
    *,
    route: str | None,
    model: str | None = None,
    usage: dict[str, int] | None = None,
    reason: str | None = None,
    rule: str = "live/1",
    rpc: str = "Chat",
    time: str = "2026-11-03T10:00:00.000+00:00",
    unhealthy: tuple[str, ...] = (),
) -> dict[str, Any]:
    models = {
        alias: policy_pb2.ModelInfo(alias=alias, healthy=alias not in unhealthy)
        for alias in ("local", "cheap", "strong")
    }
    return {
        "version": INPUTS_VERSION,
        "decision_id": "d",
        "time": time,
        "rpc": rpc,
        "tenant": req.tenant,
        "rule": rule,
        "route": route,
        "model": model,
        "usage": usage,
        "status": "OK" if reason is None else "PERMISSION_DENIED",
        "reason": reason,
        "cost_usd": 0.0,
        "policy_inputs": encode(req, policy_pb2.BudgetState(), models, NOW),
    }


def write_log(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in lines))
    return path


def usd(input_tokens: int, output_tokens: int, price: dict[str, float]) -> float:
    return (
        input_tokens * price["input_per_mtok"] + output_tokens * price["output_per_mtok"]
    ) / 1_000_000


# -- inputs -------------------------------------------------------------------------------------


def test_inputs_round_trip_every_policy_field() -> None:
    req = policy_pb2.PolicyRequest(
        tenant="team-a",
        task_type=policy_pb2.TASK_TYPE_PLANNING,
        classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL,
        declared_classification=policy_pb2.CLASSIFICATION_INTERNAL,
        detectors=["pii.email", "secret.aws_key"],
        complexity=0.625,
        estimated_input_tokens=1234,
        max_output_tokens=99,
        requested_model="cheap",
        labels={"team": "search", "fallbacks": "local"},
        has_tools=True,
        json_output=True,
        streaming=True,
        message_count=7,
        airgapped=True,
        redactable=True,
        redacted_classification=policy_pb2.CLASSIFICATION_PUBLIC,
    )
    # Every field is set, so a field the encoder forgot would fail the comparison.
    assert len(req.ListFields()) == len(policy_pb2.PolicyRequest.DESCRIPTOR.fields)
    budget = policy_pb2.BudgetState(
        limited=True,
        limit_usd=10.0,
        spent_usd=2.5,
        reserved_usd=0.5,
        remaining_usd=7.0,
        utilization=0.3,
        window="month",
        hard=True,
    )
    models = {
        "a": policy_pb2.ModelInfo(healthy=True),
        "b": policy_pb2.ModelInfo(healthy=False),
    }
    recorded = json.loads(json.dumps(encode(req, budget, models, NOW)))
    assert recorded["request"]["task_type"] == "TASK_TYPE_PLANNING"  # enums by name
    back = decode(recorded)
    assert back.request == req
    assert back.budget == budget
    assert back.unhealthy == {"b"}
    assert back.now == NOW


def test_inputs_from_a_newer_gateway_are_read_and_bad_ones_named() -> None:
    data = encode(request(), policy_pb2.BudgetState(), {}, NOW)
    data["request"]["field_from_the_future"] = 1
    data["something_new"] = {"x": 1}
    assert decode(data).request.tenant == "team-a"
    bad = encode(request(), policy_pb2.BudgetState(), {}, NOW)
    bad["request"]["estimated_input_tokens"] = "lots"
    with pytest.raises(InputsError, match=r"policy_inputs\.request"):
        decode(bad)
    with pytest.raises(InputsError, match="now"):
        decode({**data, "now": "yesterday"})


def test_sensitive_labels_are_withheld_from_the_record() -> None:
    guard = label_guard(Inspector(InspectionConfig()))
    card = "4111 1111 1111 1111"
    req = request(labels={"team": "search", "card": card, card: "x"})
    recorded = encode(req, policy_pb2.BudgetState(), {}, NOW, withhold=guard)
    assert recorded["request"]["labels"] == {
        "team": "search",
        "card": "<withheld: fin.payment_card>",
        "<withheld 1>": "<withheld: fin.payment_card>",
    }
    assert "4111" not in json.dumps(recorded)
    assert decode(recorded).request.labels["team"] == "search"


# -- what a candidate would do ------------------------------------------------------------------


def test_what_if_enforces_and_estimates_like_the_gateway(tmp_path: Path, config: Config) -> None:
    policy = compile_policy(write_policy(tmp_path / "c", CANDIDATE))
    pricing = Pricing.from_config(config)
    models = catalogue(config, pricing, lambda alias: True)
    chat = what_if(policy, request(), policy_pb2.BudgetState(), models, NOW, config, pricing)
    assert (chat.model, chat.rule, chat.refused) == ("cheap", "cand/4", None)
    # No max_tokens: the configured output estimate, as the budget stage reserves.
    assert chat.output_tokens == 1000
    assert chat.estimated_cost_usd == pytest.approx(usd(100, 1000, CHEAP), abs=1e-15)
    capped = what_if(
        policy, request(max_output_tokens=50), policy_pb2.BudgetState(), models, NOW, config,
        pricing,
    )  # fmt: skip
    assert capped.estimated_cost_usd == pytest.approx(usd(100, 50, CHEAP), abs=1e-15)
    secret = request(classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL)
    refused = what_if(policy, secret, policy_pb2.BudgetState(), models, NOW, config, pricing)
    assert (refused.model, refused.refused) == (None, "DATA_RESIDENCY")
    denied = what_if(
        policy, request(tenant="denied"), policy_pb2.BudgetState(), models, NOW, config, pricing
    )
    assert (denied.model, denied.refused, denied.rule) == (None, "POLICY_DENIED", "cand/1")
    locked = what_if(
        policy,
        request(tenant="locked", task_type=policy_pb2.TASK_TYPE_CODE_GENERATION),
        policy_pb2.BudgetState(),
        models,
        NOW,
        config,
        pricing,
    )
    assert (locked.model, locked.refused) == (None, "MODEL_NOT_ALLOWED")


def test_what_if_reroutes_when_the_gateway_would(tmp_path: Path) -> None:
    data = config_data()
    data["enforcement"] = {"on_violation": "reroute", "reroute_order": ["local"]}
    config = parse_config(data)
    policy = compile_policy(write_policy(tmp_path / "c", CANDIDATE))
    pricing = Pricing.from_config(config)
    models = catalogue(config, pricing, lambda alias: True)
    secret = request(classification=policy_pb2.CLASSIFICATION_RESTRICTED)
    routed = what_if(policy, secret, policy_pb2.BudgetState(), models, NOW, config, pricing)
    assert (routed.model, routed.refused, routed.estimated_cost_usd) == ("local", None, 0.0)


# -- replay -------------------------------------------------------------------------------------


def test_replay_counts_changes_refusals_and_cost_exactly(tmp_path: Path, config: Config) -> None:
    policy = compile_policy(write_policy(tmp_path / "c", CANDIDATE))
    code = request(task_type=policy_pb2.TASK_TYPE_CODE_GENERATION, estimated_input_tokens=400)
    log = write_log(
        tmp_path / "decisions.jsonl",
        [
            # unchanged: cheap -> cheap, costs what it cost (priced today from usage)
            line(
                request(),
                route="cheap",
                model="cheap",
                usage={"input_tokens": 120, "output_tokens": 30},
            ),
            # changed: cheap -> strong, priced with the recorded usage at strong's prices
            line(
                code,
                route="cheap",
                model="cheap",
                usage={"input_tokens": 410, "output_tokens": 200},
            ),
            # live fell back to local after cheap failed; the route is unchanged: same cost
            line(
                request(),
                route="cheap",
                model="local",
                usage={"input_tokens": 90, "output_tokens": 10},
            ),
            # a residency refusal the candidate adds: confidential content sent to strong
            line(
                request(classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL),
                route="local",
                model="local",
                usage={"input_tokens": 50, "output_tokens": 5},
            ),
            # a live policy deny the candidate removes: nothing was called, so it is priced by
            # the reservation estimate (100 input tokens, max_output_tokens 60)
            line(request(max_output_tokens=60), route=None, reason="POLICY_DENIED"),
            # a deny the candidate keeps
            line(request(tenant="denied"), route=None, reason="POLICY_DENIED"),
            # skipped: a dry run, a format-1 line, a request refused before the policy
            line(request(), route="cheap", rpc="Route"),
            {
                "decision_id": "old",
                "time": "2026-11-01T00:00:00+00:00",
                "rpc": "Chat",
                "tenant": "team-a",
                "model": "cheap",
            },
            {**line(request(), route=None, reason="RATE_LIMITED"), "policy_inputs": None},
        ],
    )
    report = Replayer(policy, config, Pricing.from_config(config)).replay(log)
    assert (report.lines, report.in_window, report.replayed) == (9, 9, 6)
    assert report.skipped == {SKIP_DRY_RUN: 1, SKIP_FORMAT_1: 1, SKIP_NO_INPUTS: 1}
    assert report.changed == 3
    assert report.transitions == {
        ("cheap", "cheap"): 2,
        ("cheap", "strong"): 1,
        ("local", "refused (DATA_RESIDENCY)"): 1,
        ("refused (POLICY_DENIED)", "cheap"): 1,
        ("refused (POLICY_DENIED)", "refused (POLICY_DENIED)"): 1,
    }
    assert report.candidate_rules == {"cand/4": 3, "cand/3": 1, "cand/2": 1, "cand/1": 1}
    assert report.refusals_added == {"DATA_RESIDENCY": 1}
    assert report.refusals_removed == {"POLICY_DENIED": 1}
    live = usd(120, 30, CHEAP) + usd(410, 200, CHEAP) + 0.0 + 0.0
    candidate = usd(120, 30, CHEAP) + usd(410, 200, STRONG) + 0.0 + 0.0 + usd(100, 60, CHEAP)
    assert report.live_cost_usd == pytest.approx(live, abs=1e-15)
    assert report.candidate_cost_usd == pytest.approx(candidate, abs=1e-15)
    assert report.estimated == 1
    result = report.to_json()
    assert result["cost"]["difference_usd"] == pytest.approx(candidate - live, abs=1e-15)
    assert result["changed_share"] == pytest.approx(3 / 6)


def test_replay_window_and_tenant(tmp_path: Path, config: Config) -> None:
    policy = compile_policy(write_policy(tmp_path / "c", CANDIDATE))
    log = write_log(
        tmp_path / "d.jsonl",
        [
            line(request(), route="cheap", time="2026-10-31T23:59:59+00:00"),
            line(request(), route="cheap", time="2026-11-01T00:00:00+00:00"),
            line(request(tenant="other"), route="cheap", time="2026-11-02T00:00:00+00:00"),
            line(request(), route="cheap", time="2026-11-05T00:00:00+00:00"),
        ],
    )
    replayer = Replayer(policy, config, Pricing.from_config(config))
    window = Window(parse_when("2026-11-01", "--since"), parse_when("2026-11-05", "--until"))
    assert replayer.replay(log, window).replayed == 2
    tenant = Window(since=window.since, until=window.until, tenant="team-a")
    assert replayer.replay(log, tenant).replayed == 1


def test_replay_sees_the_recorded_health(tmp_path: Path, config: Config) -> None:
    healthy_only = """\
    - condition: models["cheap"].healthy
      output: 'RouteDecision{model: "cheap"}'
    - output: 'RouteDecision{model: "local"}'
"""
    policy = compile_policy(write_policy(tmp_path / "c", healthy_only))
    log = write_log(
        tmp_path / "d.jsonl",
        [
            line(request(), route="cheap"),
            line(request(), route="local", unhealthy=("cheap",)),
        ],
    )
    report = Replayer(policy, config, Pricing.from_config(config)).replay(log)
    assert report.changed == 0


def test_gate_limits(tmp_path: Path, config: Config) -> None:
    policy = compile_policy(write_policy(tmp_path / "c", CANDIDATE))
    code = request(task_type=policy_pb2.TASK_TYPE_CODE_GENERATION)
    used = {"input_tokens": 100, "output_tokens": 100}
    log = write_log(
        tmp_path / "d.jsonl",
        [line(code, route="cheap", model="cheap", usage=used)]
        + [line(request(), route="cheap", model="cheap", usage=used)] * 19,
    )
    replayer = Replayer(policy, config, Pricing.from_config(config))
    # One change in 20 (5%); cost: 19 * cheap + strong against 20 * cheap.
    increase = (usd(100, 100, STRONG) - usd(100, 100, CHEAP)) / (20 * usd(100, 100, CHEAP))
    report = replayer.replay(log)
    report.gate(max_cost_increase=increase + 0.001, max_changed=0.05)
    assert report.violations == []
    report = replayer.replay(log)
    report.gate(max_cost_increase=increase - 0.001, max_changed=0.049)
    assert len(report.violations) == 2
    assert "cost increase" in report.violations[0] and "changed" in report.violations[1]


def test_cli_replay_json_and_gate_exit_status(tmp_path: Path) -> None:
    (tmp_path / "celgate.yaml").write_text(json.dumps(config_data()))
    folder = write_policy(tmp_path / "cand", CANDIDATE)
    code = request(task_type=policy_pb2.TASK_TYPE_CODE_GENERATION)
    used = {"input_tokens": 100, "output_tokens": 100}
    log = write_log(
        tmp_path / "d.jsonl",
        [
            line(code, route="cheap", model="cheap", usage=used),
            line(request(), route="cheap", model="cheap", usage=used),
        ],
    )
    args = ["policy", "replay", str(folder), "--decisions", str(log)]
    args += ["--config", str(tmp_path / "celgate.yaml")]
    out = StringIO()
    assert run_replay(folder, log, parse_config(config_data()), out, output_format="json") == 0
    result = json.loads(out.getvalue())
    assert result["changed"] == 1 and result["passed"] is True
    assert {"live": "cheap", "candidate": "strong", "count": 1, "changed": True} in result["models"]
    assert main([*args, "--format", "json"]) == 0
    assert main([*args, "--max-changed", "60%", "--max-cost-increase", "1000%"]) == 0
    assert main([*args, "--max-changed", "40%"]) == 1
    assert main([*args, "--max-cost-increase", "10%"]) == 1
    assert main([*args, "--max-changed", "lots"]) == 2


def test_text_report_names_everything(tmp_path: Path, config: Config) -> None:
    folder = write_policy(tmp_path / "cand", CANDIDATE)
    log = write_log(
        tmp_path / "d.jsonl",
        [
            line(
                request(classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL),
                route="local",
                model="local",
                usage={"input_tokens": 5, "output_tokens": 5},
            )
        ],
    )
    out = StringIO()
    status = run_replay(folder, log, config, out, max_changed=0.0)
    text = out.getvalue()
    assert status == 1
    assert "refused (DATA_RESIDENCY)" in text and "changed 1 (100.0%)" in text
    assert "DATA_RESIDENCY  1      0" in text
    assert "FAIL changed decisions 100.0% exceed --max-changed 0.0%" in text


def test_candidate_must_compile_and_pass_its_tests(tmp_path: Path, config: Config) -> None:
    failing_tests = """\
section:
  - name: s
    tests:
      - name: expects_local
        output: {expr: 'RouteDecision{model: "local"}'}
"""
    folder = write_policy(tmp_path / "cand", CANDIDATE, tests=failing_tests)
    log = write_log(tmp_path / "d.jsonl", [])
    out = StringIO()
    assert run_replay(folder, log, config, out) == 1
    assert "does not load" in out.getvalue() and "policy tests failed" in out.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", r"d\.jsonl:1: not a JSON decision-log line"),
        ("[1, 2]\n", r"d\.jsonl:1: expected a JSON object, got list"),
        ('{"time": "soon", "rpc": "Chat"}\n', r"d\.jsonl:1: time: 'soon' is not an RFC 3339"),
    ],
)
def test_bad_log_lines_are_named(
    tmp_path: Path, config: Config, content: str, message: str
) -> None:
    policy = compile_policy(write_policy(tmp_path / "c", CANDIDATE))
    (tmp_path / "d.jsonl").write_text(content)
    with pytest.raises(ReplayError, match=message):
        Replayer(policy, config, Pricing.from_config(config)).replay(tmp_path / "d.jsonl")


def test_bad_usage_and_missing_file_are_named(tmp_path: Path, config: Config) -> None:
    policy = compile_policy(write_policy(tmp_path / "c", CANDIDATE))
    replayer = Replayer(policy, config, Pricing.from_config(config))
    bad = line(request(), route="cheap", model="cheap", usage={"input_tokens": -1})
    with pytest.raises(ReplayError, match=r"d\.jsonl:1: usage\.input_tokens: expected a count"):
        replayer.replay(write_log(tmp_path / "d.jsonl", [bad]))
    with pytest.raises(ReplayError, match=r"missing\.jsonl: cannot read"):
        replayer.replay(tmp_path / "missing.jsonl")


def test_option_parsing() -> None:
    assert parse_share("10%", "--max-cost-increase") == pytest.approx(0.10)
    assert parse_share("2.5", "--max-changed") == pytest.approx(0.025)
    with pytest.raises(ReplayError, match="--max-changed: '-1%' must be"):
        parse_share("-1%", "--max-changed")
    assert parse_when("2026-11-01", "--since") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ReplayError, match="--until: 'tomorrow' is not a date"):
        parse_when("tomorrow", "--until")
