"""The shadow policy's cost on the request path, against the live policy evaluation's own.

Plain script: `.venv/bin/python bench/bench_shadow.py`. Target (the shadow/replay issue): the
shadow's request-path cost <= the live policy evaluation's cost.

Per round, interleaved so the noisy machine affects all three alike, on the bundled
configuration (genai-prices catalogue) with the default policy serving and a candidate
(code generation moved to gpt-5.5) as the shadow:
- live: `CompiledPolicy.evaluate`, what the pipeline's decide stage runs;
- shadow, full: `ShadowPolicy.evaluate` (evaluate, deny, enforce, reservation estimate), the
  CPU the shadow costs per request wherever it runs;
- shadow, request path: what the request itself waits for: `ShadowPolicy.defer` at decide
  time (the evaluation then runs on the event loop while the request awaits its reservation
  and upstream), and at record time reading the result, its decision-log entry, the agreement
  count (read by the metric reader when it collects) and the span attributes;
- policy inputs: recording what the policy saw for replay (every request, shadow or not;
  the label guard included): the full encoding, and its request-path part (it is deferred
  the same way).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from gateway.config import load_config
from gateway.inspect.inspector import Inspector
from gateway.policy import compile_policy
from gateway.policy.deferred import Deferred
from gateway.policy.inputs import encode, label_guard
from gateway.policy.shadow import PendingShadow, ShadowPolicy
from gateway.policy.whatif import catalogue
from gateway.pricing import Pricing
from gateway.telemetry.instruments import Instruments
from gateway.v1 import policy_pb2

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "code generation (5th match)": policy_pb2.PolicyRequest(
        tenant="team-a", task_type=policy_pb2.TASK_TYPE_CODE_GENERATION, complexity=0.6,
        estimated_input_tokens=800, labels={"team": "search"},
    ),
    "general (last match)": policy_pb2.PolicyRequest(
        tenant="team-a", task_type=policy_pb2.TASK_TYPE_SUMMARIZATION, complexity=0.6,
        estimated_input_tokens=800, labels={"team": "search"},
    ),
    "restricted (1st match)": policy_pb2.PolicyRequest(
        tenant="team-a", classification=policy_pb2.CLASSIFICATION_RESTRICTED,
        estimated_input_tokens=800, labels={"team": "search"},
    ),
}  # fmt: skip


def _candidate(folder: Path) -> Path:
    text = (ROOT / "policies" / "routing" / "policy.yaml").read_text()
    changed = text.replace('model: "deepseek-chat",', 'model: "gpt-5.5",', 1)
    assert changed != text, "the default policy no longer routes code generation to deepseek"
    (folder / "policy.yaml").write_text(changed)
    return folder


def _record(pending: PendingShadow, live_model: str | None, instruments: Instruments) -> None:
    """The record-time part of the shadow, as telemetry/record.py and audit.py do it."""
    shadow = pending.result()
    shadow.to_json()
    agreement = shadow.agreement(live_model)
    instruments.shadow_decisions[(live_model or "refused", shadow.label, agreement)] += 1
    attributes: dict[str, Any] = {
        "celgate.shadow.model": shadow.label,
        "celgate.shadow.agreement": agreement,
        "celgate.shadow.estimated_cost": shadow.estimated_cost_usd,
        "celgate.shadow.rule": shadow.rule or "",
        "celgate.shadow.revision": shadow.revision or "",
    }
    assert attributes


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(rounds: int = 5000) -> None:
    config = load_config(ROOT / "config" / "celgate.yaml")
    pricing = Pricing.from_config(config)
    live = compile_policy(ROOT / "policies" / "routing")
    with tempfile.TemporaryDirectory() as tmp:
        shadow = ShadowPolicy(_candidate(Path(tmp)), config, pricing, run_tests=False)
        shadow.load()
    assert shadow.current is not None
    models = catalogue(config, pricing, lambda alias: True)
    reader = InMemoryMetricReader()
    instruments = Instruments(MeterProvider(metric_readers=[reader]).get_meter("bench"))
    withhold = label_guard(Inspector(config.inspection))
    budget = policy_pb2.BudgetState(limited=True, limit_usd=100.0, utilization=0.4)
    now = datetime.now(UTC)
    clock = time.perf_counter_ns
    for label, request in CASES.items():
        live_us: list[float] = []
        full_us: list[float] = []
        path_us: list[float] = []
        inputs_us: list[float] = []
        inputs_path_us: list[float] = []
        for round_ in range(rounds + 500):
            t0 = clock()
            decision = live.evaluate(request, budget, models, now)
            t1 = clock()
            shadow.evaluate(request, budget, models, now)
            t2 = clock()
            pending = shadow.defer(request, budget, models, now)
            t3 = clock()
            await asyncio.sleep(0)  # the loop runs the deferred evaluation (not timed)
            t4 = clock()
            _record(pending, decision.model, instruments)
            t5 = clock()
            encode(request, budget, models, now, withhold=withhold)
            t6 = clock()
            inputs = Deferred.schedule(
                lambda: encode(request, budget, models, now, withhold=withhold)  # noqa: B023
            )
            t7 = clock()
            await asyncio.sleep(0)
            t8 = clock()
            inputs.result()
            t9 = clock()
            assert pending.result().error is None
            if round_ >= 500:  # warm-up
                live_us.append((t1 - t0) / 1000)
                full_us.append((t2 - t1) / 1000)
                path_us.append((t3 - t2 + t5 - t4) / 1000)
                inputs_us.append((t6 - t5) / 1000)
                inputs_path_us.append((t7 - t6 + t9 - t8) / 1000)
        live_p50 = statistics.median(live_us)
        full_p50 = statistics.median(full_us)
        path_p50 = statistics.median(path_us)
        print(
            f"{label}: live evaluate p50 {live_p50:.1f} us (p99 {_percentile(live_us, 0.99):.1f});"
            f" shadow full p50 {full_p50:.1f} us ({full_p50 / live_p50:.2f}x live);"
            f" shadow request path p50 {path_p50:.2f} us "
            f"(p99 {_percentile(path_us, 0.99):.2f}; {path_p50 / live_p50:.2f}x live);"
            f" policy inputs for replay: full p50 {statistics.median(inputs_us):.1f} us, request"
            f" path p50 {statistics.median(inputs_path_us):.2f} us"
        )


if __name__ == "__main__":
    asyncio.run(bench())
