"""Policy engine figures: per-decision evaluation of the default policy, and compile time of a
generated 200-match policy. Plain script: `.venv/bin/python bench/bench_policy.py`.
Targets: p50 <= 20 us per evaluation, compile < 200 ms.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.policy import compile_policy
from gateway.v1 import policy_pb2

ROOT = Path(__file__).resolve().parent.parent


def _catalogue() -> dict[str, policy_pb2.ModelInfo]:
    cloud = policy_pb2.LOCATION_CLOUD
    internal = policy_pb2.CLASSIFICATION_INTERNAL
    models = {
        "llama-local": (policy_pb2.LOCATION_ON_PREM, policy_pb2.CLASSIFICATION_RESTRICTED),
        "claude-opus": (cloud, internal),
        "gpt-5.5": (cloud, internal),
        "deepseek-chat": (cloud, internal),
        "gpt-5-mini": (cloud, internal),
    }
    return {
        alias: policy_pb2.ModelInfo(alias=alias, location=loc, clearance=lvl, healthy=True)
        for alias, (loc, lvl) in models.items()
    }


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_evaluate(rounds: int = 20000) -> None:
    policy = compile_policy(ROOT / "policies" / "routing")
    models = _catalogue()
    budget = policy_pb2.BudgetState(limited=True, limit_usd=100.0, utilization=0.4)
    now = datetime.now(UTC)
    cases = {
        "planning (4th match)": policy_pb2.PolicyRequest(
            task_type=policy_pb2.TASK_TYPE_PLANNING, complexity=0.8
        ),
        "general (last match)": policy_pb2.PolicyRequest(
            task_type=policy_pb2.TASK_TYPE_SUMMARIZATION, complexity=0.6
        ),
        "restricted (1st match)": policy_pb2.PolicyRequest(
            classification=policy_pb2.CLASSIFICATION_RESTRICTED
        ),
    }
    for label, request in cases.items():
        for _ in range(500):
            policy.evaluate(request, budget, models, now)
        samples: list[float] = []
        clock = time.perf_counter_ns
        for _ in range(rounds):
            start = clock()
            policy.evaluate(request, budget, models, now)
            samples.append((clock() - start) / 1000)
        print(
            f"evaluate default policy, {label}: p50 {statistics.median(samples):.1f} us, "
            f"p99 {_percentile(samples, 0.99):.1f} us ({rounds} runs)"
        )


def generated_policy(matches: int) -> str:
    lines = [
        "name: generated",
        "rule:",
        "  variables:",
        "    - name: tenant",
        "      expression: request.tenant",
        "    - name: big",
        "      expression: request.estimated_input_tokens > 1000",
        "  match:",
    ]
    for i in range(matches - 1):
        lines += [
            f"    - condition: variables.tenant == 'team-{i}' && variables.big",
            f'      output: \'RouteDecision{{model: "m{i}", fallbacks: ["llama-local"]}}\'',
        ]
    lines.append("    - output: 'RouteDecision{model: \"llama-local\"}'")
    return "\n".join(lines) + "\n"


def bench_compile(matches: int = 200, rounds: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "policy.yaml").write_text(generated_policy(matches))
        times: list[float] = []
        for _ in range(rounds):
            start = time.perf_counter()
            policy = compile_policy(folder)
            times.append((time.perf_counter() - start) * 1000)
        request = policy_pb2.PolicyRequest(
            tenant=f"team-{matches - 2}", estimated_input_tokens=5000
        )
        decision = policy.evaluate(request, policy_pb2.BudgetState(), {}, datetime.now(UTC))
        samples: list[float] = []
        for _ in range(2000):
            start_ns = time.perf_counter_ns()
            policy.evaluate(request, policy_pb2.BudgetState(), {}, datetime.now(UTC))
            samples.append((time.perf_counter_ns() - start_ns) / 1000)
    print(
        f"compile generated {matches}-match policy: median {statistics.median(times):.1f} ms, "
        f"max {max(times):.1f} ms ({rounds} runs); last-but-one match -> {decision.rule}, "
        f"evaluate p50 {statistics.median(samples):.1f} us"
    )


if __name__ == "__main__":
    bench_evaluate()
    bench_compile()
