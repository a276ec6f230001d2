"""Inspection latency: classification + task type + complexity + token estimate.

Prints p50/p99 for a 2 KB and a 100 KB prompt, then pathological inputs at doubling sizes
(time per KB should stay flat: linear). Targets: 2 KB p50 within 2x of the previous engine's
(57 us on the developers' bench), 100 KB <= 1 ms.

`--baseline DIR` also loads the `gateway` package of another checkout (for example
`git worktree add /tmp/old-inspect <commit>`) into the same process and measures both engines
alternately on the same inputs, so the ratio is not skewed by the machine's load. Machines are
shared and noisy: compare figures from one run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

PROSE = (
    "We are migrating the billing service to the new cluster next quarter. The team reviewed "
    "the current deployment, the on-call rota and the incident reports from last month. Please "
    "draft a short summary for the steering group covering risks, owners and the rollback plan. "
    "Ticket volume rose 12% after release 4.18 and the p99 latency budget is 250 ms. "
)

PATHOLOGICAL = {
    "digit run": "1",
    "spaced digits": "1 ",
    "card-like groups": "4111 1111 1111 111 ",
    "email chain": "a@b.cc.",
    "assignments": "password=Xk9#mP2$vL7 ",
    "iban-ish": "AB12 ",
    "colons": ":",
    "base64 run": "QUJD",
    "escapes": "\\u0041\\n",
    "percent": "%41",
    "password prose": "password is ",
}


def load_engine(root: Path) -> tuple[Any, Any, Any, Any]:
    """(Inspector, InspectionConfig, ChatMessage, ChatParams) of the `gateway` package under
    `root`. Modules of a previously loaded `gateway` are removed from `sys.modules` first; the
    classes returned keep working because their functions hold their own module globals."""
    for name in [n for n in sys.modules if n == "gateway" or n.startswith("gateway.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        config = importlib.import_module("gateway.config")
        inspect = importlib.import_module("gateway.inspect")
        try:  # chat types moved from the provider base module to gateway.chat
            base = importlib.import_module("gateway.chat")
        except ModuleNotFoundError:
            base = importlib.import_module("gateway.providers.base")
    finally:
        sys.path.remove(str(root))
    return inspect.Inspector, config.InspectionConfig, base.ChatMessage, base.ChatParams


class Engine:
    def __init__(self, label: str, root: Path) -> None:
        inspector, config, self.message, self.params = load_engine(root)
        started = time.perf_counter()
        self.inspector = inspector(config())
        self.build_ms = (time.perf_counter() - started) * 1e3
        self.label = label

    def prompt(self, size: int) -> Any:
        body = (PROSE * (size // len(PROSE) + 1))[: size - 120]
        user = body + " Contact jane.roe@acme-corp.io or +44 20 7946 0018 about server 10.20.30.40."
        return self.params(
            messages=(
                self.message(
                    role="system", content="You are a careful assistant for the ops team."
                ),
                self.message(role="user", content=user),
            )
        )

    def text(self, text: str) -> Any:
        return self.params(messages=(self.message(role="user", content=text),))


def sample(engine: Engine, params: Any, count: int) -> list[int]:
    out = []
    inspect = engine.inspector.inspect
    for _ in range(count):
        start = time.perf_counter_ns()
        inspect(params)
        out.append(time.perf_counter_ns() - start)
    return out


def measure(
    engines: list[Engine], make: str, arg: Any, seconds: float
) -> list[tuple[float, float]]:
    """Alternate the engines in small batches for `seconds`; (p50, p99) in us for each."""
    inputs = [getattr(e, make)(arg) for e in engines]
    for engine, params in zip(engines, inputs, strict=True):
        sample(engine, params, 30)
    samples: list[list[int]] = [[] for _ in engines]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or min(len(s) for s in samples) < 20:
        for index, (engine, params) in enumerate(zip(engines, inputs, strict=True)):
            samples[index].extend(sample(engine, params, 10))
    out = []
    for values in samples:
        values.sort()
        out.append((values[len(values) // 2] / 1e3, values[int(len(values) * 0.99)] / 1e3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="checkout of the previous engine")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    engines = []
    if args.baseline is not None:
        engines.append(Engine("previous", args.baseline))
    engines.append(Engine("current", ROOT))
    for engine in engines:
        print(f"{engine.label}: Inspector build (Hyperscan compile) {engine.build_ms:.0f} ms")
    for label, size in (("2 KB", 2048), ("100 KB", 102_400)):
        figures = measure(engines, "prompt", size, args.seconds)
        row = "  ".join(
            f"{e.label} p50 {p50:8.1f} us p99 {p99:8.1f} us"
            for e, (p50, p99) in zip(engines, figures, strict=True)
        )
        ratio = (
            f"  current/previous p50 {figures[-1][0] / figures[0][0]:.2f}x"
            if len(engines) > 1
            else ""
        )
        print(f"{label:>7} prompt: {row}{ratio}")
    print("pathological inputs, current engine (us per KB should stay flat as size doubles):")
    current = engines[-1]
    for label, unit in PATHOLOGICAL.items():
        cells: list[str] = []
        for kb in (25, 50, 100):
            text = unit * (kb * 1024 // len(unit))
            ((p50, _),) = measure([current], "text", text, 0.4)
            cells.append(f"{kb:>3} KB {p50 / 1e3:7.2f} ms ({p50 / kb:6.1f} us/KB)")
        print(f"  {label:<17} " + "  ".join(cells))


if __name__ == "__main__":
    main()
