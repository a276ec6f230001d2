"""Precision and recall of every detector on the labelled corpus (`make eval-inspect`), and
false-positive rates on real code and prose built at evaluation time from files on the machine.

Counts, not presence: a text expected to hold one card where two are found is one true
positive and one false positive. The labelled corpus is made of the formats the detectors were
written for, so its figures are an upper bound. The false-positive corpora (the interpreter's
standard library in 2 KB chunks, installed packages' READMEs and docs) are read from disk on
each run and never stored; only the counts and redacted examples are printed.

Exits 1 when a validated detector misses the targets (recall >= 0.98, precision >= 0.95), when
more than 0.5% of library code chunks or 1% of prose chunks classify CONFIDENTIAL or above, or
when a password/secret rule fires on a non-literal (a value outside every string literal and
comment of the Python file, as `tokenize` reads it).
"""

from __future__ import annotations

import argparse
import io
import json
import site
import sys
import sysconfig
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.chat import ChatMessage, ChatParams  # noqa: E402
from gateway.config import InspectionConfig  # noqa: E402
from gateway.inspect import Inspector  # noqa: E402
from gateway.levels import Level  # noqa: E402

DATA = ROOT / "tests" / "data"
RECALL_TARGET = 0.98
PRECISION_TARGET = 0.95
# Detectors whose candidates pass a validator (check digits, structure, entropy, ranges).
UNVALIDATED_PREFIXES = ("marker.", "dict.", "regex.")


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def load_corpus() -> list[dict[str, object]]:
    lines = (DATA / "inspect_corpus.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def corpus_inspector() -> Inspector:
    config = json.loads((DATA / "inspect_corpus_config.json").read_text(encoding="utf-8"))
    return Inspector(InspectionConfig.model_validate(config))


def evaluate(inspector: Inspector | None = None) -> dict[str, Score]:
    inspector = inspector or corpus_inspector()
    scores: dict[str, Score] = {}
    for sample in load_corpus():
        text = str(sample["text"])
        expect: dict[str, int] = dict(sample["expect"])  # type: ignore[call-overload]
        params = ChatParams(messages=(ChatMessage(role="user", content=text),))
        found = {f.detector: f.count for f in inspector.inspect(params).findings}
        for detector in set(expect) | set(found):
            score = scores.setdefault(detector, Score())
            want, got = expect.get(detector, 0), found.get(detector, 0)
            score.tp += min(want, got)
            score.fp += max(0, got - want)
            score.fn += max(0, want - got)
            if got < want:
                score.misses.append(str(sample["id"]))
            if got > want:
                score.false_alarms.append(str(sample["id"]))
    return scores


def validated(detector: str) -> bool:
    return not detector.startswith(UNVALIDATED_PREFIXES)


# --- false positives on real text built at evaluation time ---------------------------------

CHUNK = 2048
CODE_TARGET = 0.005  # share of code chunks at CONFIDENTIAL or above
PROSE_TARGET = 0.01
SECRET_RULES = ("secret.assignment", "secret.password")
_TEST_DIRS = {"test", "tests", "idle_test"}


@dataclass
class Chunk:
    source: str  # file path, for the report
    text: str
    offset: int  # of the chunk in its file
    literal_spans: list[tuple[int, int]] | None = None  # file offsets of strings and comments


@dataclass
class FalsePositives:
    chunks: int = 0
    flagged: int = 0  # CONFIDENTIAL or above
    restricted: int = 0
    by_detector: Counter[str] = field(default_factory=Counter)
    non_literal: int = 0  # RESTRICTED from a secret rule whose value is code, not a literal
    examples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.flagged / self.chunks if self.chunks else 0.0


def _literal_spans(source: str) -> list[tuple[int, int]]:
    """Offsets of every string literal and comment in a Python file (tokenize), so a secret
    rule's value can be told literal (inside one) or code (outside)."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    spans = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type in (tokenize.STRING, tokenize.COMMENT) or (
                token.type == getattr(tokenize, "FSTRING_MIDDLE", -1)
            ):
                (row, col), (end_row, end_col) = token.start, token.end
                spans.append((starts[row - 1] + col, starts[end_row - 1] + end_col))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []
    return spans


def code_chunks(*, test_suites: bool) -> list[Chunk]:
    """2 KB chunks of the interpreter's standard library (.py files), with or without its
    test suites."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[Chunk] = []
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts)
        if "site-packages" in parts or bool(parts & _TEST_DIRS) != test_suites:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        spans = _literal_spans(source)
        name = str(path.relative_to(root))
        out.extend(
            Chunk(name, source[i : i + CHUNK], i, spans) for i in range(0, len(source), CHUNK)
        )
    return out


def prose_chunks(*, examples: bool = False) -> list[Chunk]:
    """2 KB chunks of installed packages' documentation: the long descriptions (READMEs) in
    their METADATA, and their .md / .rst files; with `examples`, only the files under an
    `examples` directory instead (command reference pages: sample output with sample keys)."""
    roots = {Path(p).resolve() for p in (sysconfig.get_paths()["purelib"], *site.getsitepackages())}
    roots |= {Path(sys.base_prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                   "site-packages").resolve()}  # fmt: skip
    seen: set[Path] = set()
    out: list[Chunk] = []
    for root in sorted(r for r in roots if r.is_dir()):
        files = [*root.glob("*.dist-info/METADATA"), *root.rglob("*.md"), *root.rglob("*.rst")]
        for path in sorted(files):
            real = path.resolve()
            if real in seen or not real.is_file() or ("examples" in real.parts) != examples:
                continue
            if path.parent.name.startswith("celgate"):
                # This project's own README shows what it flags, on purpose: not a sample.
                continue
            seen.add(real)
            text = real.read_text(encoding="utf-8", errors="replace")
            if path.name == "METADATA":  # headers (Author-email: ...) are not prose
                text = text.split("\n\n", 1)[1] if "\n\n" in text else ""
            out.extend(
                Chunk(
                    path.name if path.name != "METADATA" else path.parent.name,
                    text[i : i + CHUNK],
                    i,
                )
                for i in range(0, len(text), CHUNK)
                if text[i : i + CHUNK].strip()
            )
    return out


def false_positives(inspector: Inspector, chunks: list[Chunk]) -> FalsePositives:
    result = FalsePositives(chunks=len(chunks))
    for chunk in chunks:
        params = ChatParams(messages=(ChatMessage(role="user", content=chunk.text),))
        inspection = inspector.inspect(params)
        if inspection.classification < Level.CONFIDENTIAL:
            continue
        result.flagged += 1
        result.restricted += inspection.classification == Level.RESTRICTED
        for finding in inspection.findings:
            if finding.level < Level.CONFIDENTIAL:
                continue
            result.by_detector[finding.detector] += 1
            for loc in finding.locations[:1]:
                if finding.detector in SECRET_RULES and chunk.literal_spans is not None:
                    start, end = chunk.offset + loc.start, chunk.offset + loc.end
                    inside = any(s <= start and end <= e for s, e in chunk.literal_spans)
                    result.non_literal += not inside
                if len(result.examples) < 40:
                    # Redacted: the value itself is never printed, only its surroundings.
                    before = chunk.text[max(0, loc.start - 30) : loc.start]
                    after = chunk.text[loc.end : loc.end + 12]
                    shown = f"{before}[{finding.detector}]{after}".replace("\n", "\\n")
                    result.examples.append(f"{chunk.source}: {shown}")
    return result


def report_false_positives(inspector: Inspector, examples: int) -> bool:
    ok = True
    print()
    print("false positives on text built now from files on this machine (2 KB chunks):")
    header = f"{'corpus':<36} {'chunks':>7} {'>=CONF':>7} {'rate':>7} {'RESTR':>6}"
    print(f"{header} {'non-literal':>11}  target")
    corpora = (
        ("stdlib library modules (code)", code_chunks(test_suites=False), CODE_TARGET, True),
        ("stdlib test suites (code)", code_chunks(test_suites=True), CODE_TARGET, False),
        ("installed packages' docs (prose)", prose_chunks(), PROSE_TARGET, True),
        ("packages' command examples", prose_chunks(examples=True), PROSE_TARGET, False),
    )
    for label, chunks, target, gated in corpora:
        fp = false_positives(inspector, chunks)
        verdict = "ok" if fp.rate <= target and fp.non_literal == 0 else "ABOVE TARGET"
        if not gated:
            verdict = "(reported)" if fp.non_literal == 0 else "non-literal hit"
        ok &= verdict in ("ok", "(reported)")
        print(f"{label:<36} {fp.chunks:>7} {fp.flagged:>7} {fp.rate:>7.2%} {fp.restricted:>6} "
              f"{fp.non_literal:>11}  <= {target:.1%} {verdict}")  # fmt: skip
        print(f"{'':<36} by detector: {dict(fp.by_detector.most_common())}")
        for line in fp.examples[:examples]:
            print(f"{'':<38}{line}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description="precision/recall and false-positive rates")
    parser.add_argument("--labelled-only", action="store_true", help="skip the disk corpora")
    parser.add_argument("--examples", type=int, default=5, help="redacted examples per corpus")
    args = parser.parse_args()
    scores = evaluate()
    print(f"{'detector':<26} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>10} {'recall':>7}")
    failed = []
    for detector in sorted(scores):
        s = scores[detector]
        flag = ""
        if validated(detector) and (s.recall < RECALL_TARGET or s.precision < PRECISION_TARGET):
            failed.append(detector)
            flag = "  BELOW TARGET"
        print(
            f"{detector:<26} {s.tp:>4} {s.fp:>4} {s.fn:>4} "
            f"{s.precision:>10.3f} {s.recall:>7.3f}{flag}"
        )
        # Sample ids only: the corpus is synthetic, but the habit is never to print values.
        if s.misses:
            print(f"{'':<26} missed in: {', '.join(s.misses[:8])}")
        if s.false_alarms:
            print(f"{'':<26} false alarms in: {', '.join(s.false_alarms[:8])}")
    total = Score(
        tp=sum(s.tp for s in scores.values()),
        fp=sum(s.fp for s in scores.values()),
        fn=sum(s.fn for s in scores.values()),
    )
    print(f"{'(all detectors)':<26} {total.tp:>4} {total.fp:>4} {total.fn:>4} "
          f"{total.precision:>10.3f} {total.recall:>7.3f}")  # fmt: skip
    print(
        f"targets on validated detectors: recall >= {RECALL_TARGET}, "
        f"precision >= {PRECISION_TARGET}"
    )
    if failed:
        print("below target: " + ", ".join(failed))
    print("(the labelled corpus holds the formats the detectors were written for: an upper bound)")
    fp_ok = (
        True
        if args.labelled_only
        else report_false_positives(Inspector(InspectionConfig()), args.examples)
    )
    return 0 if not failed and fp_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
