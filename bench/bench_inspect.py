"""Inspection latency: classification + task type + complexity + token estimate.

Prints p50/p99 for a 2 KB and a 100 KB prompt, then pathological inputs at doubling sizes
(time per KB should stay flat: linear). Targets: 2 KB p50 <= 30 us, 100 KB <= 1 ms.
Machines are shared and noisy: compare figures from one run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.chat import ChatMessage, ChatParams
from gateway.config import InspectionConfig
from gateway.inspect import Inspector

PROSE = (
    "We are migrating the billing service to the new cluster next quarter. The team reviewed "
    "the current deployment, the on-call rota and the incident reports from last month. Please "
    "draft a short summary for the steering group covering risks, owners and the rollback plan. "
    "Ticket volume rose 12% after release 4.18 and the p99 latency budget is 250 ms. "
)


def prompt(size: int) -> ChatParams:
    body = (PROSE * (size // len(PROSE) + 1))[: size - 120]
    user = body + " Contact jane.roe@acme-corp.io or +44 20 7946 0018 about server 10.20.30.40."
    return ChatParams(
        messages=(
            ChatMessage(role="system", content="You are a careful assistant for the ops team."),
            ChatMessage(role="user", content=user),
        )
    )


def measure(inspector: Inspector, params: ChatParams, seconds: float) -> tuple[float, float, int]:
    for _ in range(50):
        inspector.inspect(params)
    samples: list[int] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 20:
        start = time.perf_counter_ns()
        inspector.inspect(params)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return samples[len(samples) // 2] / 1e3, samples[int(len(samples) * 0.99)] / 1e3, len(samples)


PATHOLOGICAL = {
    "digit run": "1",
    "spaced digits": "1 ",
    "card-like groups": "4111 1111 1111 111 ",
    "email chain": "a@b.cc.",
    "assignments": "password=Xk9#mP2$vL7 ",
    "iban-ish": "AB12 ",
    "colons": ":",
}


def main() -> None:
    started = time.perf_counter()
    inspector = Inspector(InspectionConfig())
    print(f"Inspector build (Hyperscan compile): {(time.perf_counter() - started) * 1e3:.0f} ms")
    for label, size, seconds, target in (
        ("2 KB", 2048, 2.0, 30.0),
        ("100 KB", 102_400, 2.0, 1000.0),
    ):
        params = prompt(size)
        p50, p99, n = measure(inspector, params, seconds)
        findings = ", ".join(f"{f.detector}x{f.count}" for f in inspector.inspect(params).findings)
        print(f"{label:>7} prompt: p50 {p50:8.1f} us  p99 {p99:8.1f} us  (n={n}, target p50 <= "
              f"{target:.0f} us)  findings: {findings}")  # fmt: skip
    print("pathological inputs (us per KB should stay flat as size doubles):")
    for label, unit in PATHOLOGICAL.items():
        row = []
        for kb in (25, 50, 100):
            text = unit * (kb * 1024 // len(unit))
            params = ChatParams(messages=(ChatMessage(role="user", content=text),))
            p50, _, _ = measure(inspector, params, 0.4)
            row.append(f"{kb:>3} KB {p50 / 1e3:7.2f} ms ({p50 / kb:6.1f} us/KB)")
        print(f"  {label:<17} " + "  ".join(row))


if __name__ == "__main__":
    main()
