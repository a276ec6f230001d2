"""Accuracy of the personal-data tier (`make eval-inspect`, after the pattern-tier evaluation).

1. Span-level precision / recall / F1 per type on the generated set
   (tests/data/personal_eval.py, seeded): strict (exact boundaries) and relaxed (same type,
   overlapping). The model reads every sample in full here (mode `always`), so these are the
   detectors' own figures. Phones are found by the pattern tier's `pii.phone` patterns and
   libphonenumber validator.
2. Routing outcome on the same set under the bundled config (cloud clearance INTERNAL, mode
   `egress`): identifiable records kept local, name-only samples let through.
3. False alarms on real text built now from files on this machine (never committed): a seeded
   sample of the pattern-tier evaluation's 2 KB chunks of the interpreter's standard library
   and of installed packages' prose documentation (`eval_inspect.code_chunks` /
   `prose_chunks`); the share classified CONFIDENTIAL or above with the tier on, and the share
   the tier adds.

Exits 1 when a target is missed: person F1 >= 0.85, dob recall >= 0.9, address recall >= 0.7,
phone recall >= 0.9 with precision >= 0.95; code <= 0.5%, prose <= 1% CONFIDENTIAL or above
with the tier on.

    python bench/eval_personal.py [--samples N] [--seed S] [--chunks N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hyperscan

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.eval_inspect import Chunk, code_chunks, prose_chunks  # noqa: E402
from gateway.chat import ChatMessage, ChatParams  # noqa: E402
from gateway.config import InspectionConfig  # noqa: E402
from gateway.inspect import Inspector, effective_level, normalize  # noqa: E402
from gateway.inspect.detectors import BUILTINS  # noqa: E402
from gateway.inspect.leads import Led  # noqa: E402
from gateway.inspect.personal import PersonalTier, PersonalUnavailable  # noqa: E402
from gateway.levels import Level  # noqa: E402
from tests.data.personal_eval import TYPES, generate  # noqa: E402

TYPE_OF = {
    "pii.person": "person",
    "pii.address": "address",
    "pii.date_of_birth": "dob",
    "phi.health": "health",
}
TARGETS = {  # (metric, type, minimum)
    ("f1", "person"): 0.85,
    ("recall", "dob"): 0.9,
    ("recall", "address"): 0.7,
    ("recall", "phone"): 0.9,
    ("precision", "phone"): 0.95,
}
CODE_LIMIT, PROSE_LIMIT = 0.005, 0.01


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def p(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    def r(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def f1(self) -> float:
        p, r = self.p(), self.r()
        return 2 * p * r / (p + r) if p + r else 0.0


class PhoneFinder:
    """`pii.phone` spans as the pattern tier finds them: its patterns, its validators, the
    longest valid end per start."""

    def __init__(self, config: InspectionConfig) -> None:
        self.entries = []
        for builtin in BUILTINS:
            if builtin.id != "pii.phone":
                continue
            check = builtin.configure(config) if builtin.configure else builtin.validator
            for pattern in builtin.patterns:
                whole = pattern.expression if isinstance(pattern, Led) else pattern
                self.entries.append((whole, check))
        self.db = hyperscan.Database()
        self.db.compile(
            expressions=[e for e, _ in self.entries],
            ids=list(range(len(self.entries))),
            elements=len(self.entries),
            flags=[hyperscan.HS_FLAG_SOM_LEFTMOST] * len(self.entries),
        )

    def spans(self, text: str) -> list[tuple[int, int]]:
        data = normalize.to_bytes(text)
        hits: list[tuple[int, int, int]] = []

        def collect(pid: int, start: int, end: int, flags: int, ctx: object) -> None:
            hits.append((start, -end, pid))

        self.db.scan(data, match_event_handler=collect)
        found: list[tuple[int, int]] = []
        done: set[int] = set()
        for start, neg_end, pid in sorted(hits):
            if start in done:
                continue
            check = self.entries[pid][1]
            if check is not None and check(data, start, -neg_end):
                done.add(start)
                s, e = _trim(data, start, -neg_end)
                found.append((_char(data, s), _char(data, e)))
        return _disjoint(found)


def _trim(data: bytes, start: int, end: int) -> tuple[int, int]:
    keep = b"0123456789+()"
    while start < end and data[start] not in keep:
        start += 1
    while end > start and data[end - 1] not in keep:
        end -= 1
    return start, end


def _char(data: bytes, offset: int) -> int:
    return len(data[1:offset].decode("utf-8", "ignore"))


def _disjoint(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s < out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out


def params(text: str) -> ChatParams:
    return ChatParams(messages=[ChatMessage(role="user", content=text)])


def score_spans(
    gold: list[tuple[str, int, int]], pred: list[tuple[str, int, int]]
) -> tuple[dict[str, Score], dict[str, Score]]:
    strict = {t: Score() for t in TYPES}
    relaxed = {t: Score() for t in TYPES}
    for kind in TYPES:
        g = [(s, e) for t, s, e in gold if t == kind]
        p = [(s, e) for t, s, e in pred if t == kind]
        exact = set(g) & set(p)
        strict[kind].tp += len(exact)
        strict[kind].fp += len(p) - len(exact)
        strict[kind].fn += len(g) - len(exact)
        matched_g = {x for x in g if any(s < x[1] and x[0] < e for s, e in p)}
        matched_p = {x for x in p if any(s < x[1] and x[0] < e for s, e in g)}
        relaxed[kind].tp += len(matched_g)
        relaxed[kind].fn += len(g) - len(matched_g)
        relaxed[kind].fp += len(p) - len(matched_p)
    return strict, relaxed


def evaluate_set(
    count: int, seed: int
) -> tuple[dict[str, Score], dict[str, Score], dict[str, int]]:
    config = InspectionConfig()
    tier = PersonalTier(config.model_copy(update={"ner": "always"}))
    tier.model.load()
    egress = PersonalTier(config, tier.model)
    inspector = Inspector(config)
    phones = PhoneFinder(config)
    strict = {t: Score() for t in TYPES}
    relaxed = {t: Score() for t in TYPES}
    outcome = {"identifiable": 0, "kept_local": 0, "negative": 0, "negative_cleared": 0}
    for sample in generate(count, seed):
        request = params(sample.text)
        findings = tier.scan(request, full=True)
        pred = [
            (TYPE_OF[f.detector], loc.start, loc.end)
            for f in findings
            if f.detector in TYPE_OF
            for loc in f.locations
        ]
        pred += [("phone", s, e) for s, e in phones.spans(sample.text)]
        st, rl = score_spans(sample.spans, pred)
        for kind in TYPES:
            for into, part in ((strict, st), (relaxed, rl)):
                into[kind].tp += part[kind].tp
                into[kind].fp += part[kind].fp
                into[kind].fn += part[kind].fn
        # Routing outcome as deployed: pattern tier, then the tier in egress mode.
        pattern = inspector.inspect(request).findings
        level = effective_level(None, pattern)
        if level <= Level.INTERNAL:
            level = effective_level(level, egress.scan(request, pattern, ceiling=Level.INTERNAL))
        if sample.template == "negative":
            outcome["negative"] += 1
            outcome["negative_cleared"] += level <= Level.INTERNAL
        else:
            outcome["identifiable"] += 1
            outcome["kept_local"] += level > Level.INTERNAL
    return strict, relaxed, outcome


def sample_chunks(chunks: list[Chunk], limit: int, rng: random.Random) -> list[str]:
    """A seeded sample of the pattern-tier evaluation's real-text chunks (the same corpus, so
    both evaluations speak of the same text); the model makes all of them too slow to read."""
    texts = [chunk.text for chunk in chunks]
    rng.shuffle(texts)
    return texts[:limit]


def false_alarms(chunks: list[str]) -> dict[str, float]:
    config = InspectionConfig()
    inspector = Inspector(config)
    tier = PersonalTier(config)
    tier.model.load()
    base = raised = tier_raised = unavailable = 0
    for chunk in chunks:
        request = params(chunk)
        pattern = inspector.inspect(request).findings
        level = effective_level(None, pattern)
        if level > Level.INTERNAL:
            base += 1
            raised += 1
            continue
        try:
            personal = tier.scan(request, pattern, ceiling=Level.INTERNAL)
        except PersonalUnavailable:
            unavailable += 1
            continue
        if effective_level(level, personal) > Level.INTERNAL:
            raised += 1
            tier_raised += 1
    n = len(chunks) or 1
    return {
        "chunks": len(chunks),
        "pattern": base / n,
        "with_tier": raised / n,
        "tier_added": tier_raised / n,
        "unavailable": unavailable / n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=630)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--chunks", type=int, default=3000)
    args = parser.parse_args()
    started = time.perf_counter()
    strict, relaxed, outcome = evaluate_set(args.samples, args.seed)
    print(f"personal data: {args.samples} generated samples (seed {args.seed}; an upper bound)")
    print(f"{'type':<8} {'strict P':>9} {'R':>6} {'F1':>6}   {'relaxed P':>9} {'R':>6} {'F1':>6}")
    for kind in TYPES:
        s, r = strict[kind], relaxed[kind]
        print(
            f"{kind:<8} {s.p():>9.3f} {s.r():>6.3f} {s.f1():>6.3f}   "
            f"{r.p():>9.3f} {r.r():>6.3f} {r.f1():>6.3f}   (gold {r.tp + r.fn})"
        )
    print(
        f"routing (egress mode, cloud clearance INTERNAL): identifiable samples kept local "
        f"{outcome['kept_local']}/{outcome['identifiable']}; name-only samples cleared "
        f"{outcome['negative_cleared']}/{outcome['negative']}"
    )
    failures = []
    for (metric, kind), minimum in TARGETS.items():
        value = {"f1": relaxed[kind].f1, "recall": relaxed[kind].r, "precision": relaxed[kind].p}
        got = value[metric]()
        if got < minimum:
            failures.append(f"{kind} {metric} {got:.3f} < {minimum}")
    rng = random.Random(args.seed)
    for name, chunks, limit in (
        ("code", sample_chunks(code_chunks(test_suites=False), args.chunks, rng), CODE_LIMIT),
        ("prose", sample_chunks(prose_chunks(), args.chunks, rng), PROSE_LIMIT),
    ):
        fa = false_alarms(chunks)
        print(
            f"false alarms, {name} ({fa['chunks']} chunks of 2 KB): CONFIDENTIAL or above "
            f"{fa['with_tier']:.2%} with the tier (pattern tier alone {fa['pattern']:.2%}, "
            f"added by the tier {fa['tier_added']:.2%}, over the NER budget "
            f"{fa['unavailable']:.2%})"
        )
        # The egress inspection's limits hold with the tier on: the pattern tier's share plus
        # whatever the tier adds (or cannot read) stays under them.
        if fa["with_tier"] + fa["unavailable"] > limit:
            failures.append(
                f"{name}: {fa['with_tier'] + fa['unavailable']:.2%} with the tier > {limit:.1%}"
            )
    print(f"({time.perf_counter() - started:.0f} s)")
    for failure in failures:
        print("MISSED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
