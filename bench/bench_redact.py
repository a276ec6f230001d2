"""Redact and restore figures.

1. The added cost of redaction per request: for a support ticket of about 2 KB with an e-mail
   address and a phone number, each repeated across turns, a tool call and a tool result, what
   the pipeline does on top of an ordinary request when a candidate gets it redacted: the
   redaction floor, building the redacted request, inspecting it again, and restoring the
   answer (content and a tool call). Shown beside the first inspection of the same request
   (which every request pays), measured alternately in the same run.
2. Restoring a streamed answer, per chunk: `AnswerRestorer.chunk` on a 400-chunk answer (one
   word per chunk, a placeholder every 10 words, some split across chunks), against the same
   chunks passed through untouched.

    .venv/bin/python bench/bench_redact.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.chat import ChatMessage, ChatParams, ChatResult, Chunk, ToolCall, Usage
from gateway.config import InspectionConfig, parse_config
from gateway.enforce import redaction_floor
from gateway.inspect import Inspector
from gateway.levels import Level
from gateway.redaction import AnswerRestorer, redact_candidates

EMAIL = "jane.roe@gmail.com"
PHONE = "+1 415-555-0132"
FILLER = (
    "The customer reports that the last invoice charged the annual plan twice and asks for a "
    "refund of the second charge. They upgraded in March and the proration looks wrong. "
)
DETECTORS = ("pii.email", "pii.phone", "pii.person")


def ticket() -> ChatParams:
    body = FILLER * 6
    return ChatParams(
        messages=(
            ChatMessage("system", "You answer support tickets politely and precisely."),
            ChatMessage("user", f"Ticket from {EMAIL} (phone {PHONE}): {body}"),
            ChatMessage("assistant", f"I will look up {EMAIL} first."),
            ChatMessage(
                "assistant",
                tool_calls=(ToolCall("c1", "lookup", json.dumps({"email": EMAIL})),),
            ),
            ChatMessage(
                "tool",
                json.dumps({"customer": {"email": EMAIL, "phone": PHONE, "plan": "annual"}}),
                tool_call_id="c1",
            ),
            ChatMessage("user", f"Draft the reply to {EMAIL}; offer a call on {PHONE}."),
        )
    )


def timed(fn: Callable[[], object], seconds: float) -> list[float]:
    """Per-call times (us) in batches of 20, alternating with nothing else."""
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(20):
            fn()
        samples.append((time.perf_counter() - start) / 20 * 1e6)
    return samples


def interleaved(
    fns: dict[str, Callable[[], object]], seconds: float, rounds: int = 10
) -> dict[str, list[float]]:
    """Alternate the functions in short slices so the machine's load hits them alike."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            out[name] += timed(fn, seconds / rounds / len(fns))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    inspector = Inspector(InspectionConfig())
    config = parse_config(
        {
            "models": {
                "local": {
                    "provider": "ollama",
                    "upstream_model": "m",
                    "base_url": "http://127.0.0.1:1",
                    "location": "on_prem",
                    "clearance": "RESTRICTED",
                },
                "cloud": {
                    "provider": "openai",
                    "upstream_model": "m",
                    "base_url": "http://127.0.0.1:1",
                    "location": "cloud",
                    "clearance": "INTERNAL",
                },
            },
            "default_model": "local",
        }
    )
    params = ticket()
    size = sum(
        len(m.content) + sum(len(c.arguments) for c in m.tool_calls) for m in params.messages
    )
    inspection = inspector.inspect(params)
    answer = ChatResult(
        "Dear customer, we refunded <EMAIL_1>'s second charge; call us back on <PHONE_1>. " * 4,
        (ToolCall("c2", "send", json.dumps({"to": "<EMAIL_1>", "body": "Refund issued"})),),
        "tool_calls",
        Usage(),
        "m",
    )

    def first_inspection() -> object:
        return inspector.inspect(params)

    async def reinspect(p: ChatParams) -> Level:
        return inspector.inspect(p).classification

    loop = asyncio.new_event_loop()

    def redaction() -> object:
        floor = redaction_floor(inspection.findings, None, DETECTORS, Level.CONFIDENTIAL)
        assert floor <= Level.INTERNAL
        redactions, refused = loop.run_until_complete(
            redact_candidates(
                ("cloud", "local"), {"cloud"}, config.models, params, inspection.findings, reinspect
            )
        )
        assert not refused
        return AnswerRestorer(redactions["cloud"]).result(answer)

    figures = interleaved({"inspect": first_inspection, "redact": redaction}, args.seconds)
    base = statistics.median(figures["inspect"])
    added = statistics.median(figures["redact"])
    print(f"request: {size} characters, findings {[f.detector for f in inspection.findings]}")
    print(f"first inspection (every request)        p50 {base:8.1f} us")
    print(
        f"added by redaction (floor, redact, re-inspect, restore) p50 {added:8.1f} us "
        f"({added / base:.2f}x the first inspection)"
    )

    redactions, _ = loop.run_until_complete(
        redact_candidates(
            ("cloud",), {"cloud"}, config.models, params, inspection.findings, reinspect
        )
    )
    redacted = redactions["cloud"]
    words: list[str] = []
    for i in range(400):
        if i % 10 == 5:
            words.append("<EMAIL_1> " if i % 20 == 5 else "<PHO")  # a placeholder split in two
            if i % 20 != 5:
                words.append("NE_1> ")
        else:
            words.append(f"word{i} ")
    chunks = [Chunk(content_delta=w) for w in words] + [Chunk(finish_reason="stop")]

    def restore_stream() -> object:
        restorer = AnswerRestorer(redacted)
        return [restorer.chunk(c) for c in chunks]

    def pass_through() -> object:
        return list(chunks)

    stream = interleaved({"restore": restore_stream, "plain": pass_through}, args.seconds)
    per_chunk = (
        (statistics.median(stream["restore"]) - statistics.median(stream["plain"]))
        / len(chunks)
        * 1000
    )
    print(f"restoring a streamed answer: {per_chunk:.0f} ns per chunk ({len(chunks)} chunks)")


if __name__ == "__main__":
    main()
