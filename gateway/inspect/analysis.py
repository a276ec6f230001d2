"""Task type, complexity and input token estimate: deterministic, from the request alone.

See docs/inspection.md for the rules and the reasoning behind each weight.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hyperscan

from gateway.chat import ChatParams
from gateway.v1 import policy_pb2

TaskType = int  # a gateway.v1.TaskType value

CHAT: TaskType = policy_pb2.TASK_TYPE_CHAT
CODE_GENERATION: TaskType = policy_pb2.TASK_TYPE_CODE_GENERATION
PLANNING: TaskType = policy_pb2.TASK_TYPE_PLANNING
SUMMARIZATION: TaskType = policy_pb2.TASK_TYPE_SUMMARIZATION
EXTRACTION: TaskType = policy_pb2.TASK_TYPE_EXTRACTION
TOOL_USE: TaskType = policy_pb2.TASK_TYPE_TOOL_USE
STRUCTURED_OUTPUT: TaskType = policy_pb2.TASK_TYPE_STRUCTURED_OUTPUT
TRANSLATION: TaskType = policy_pb2.TASK_TYPE_TRANSLATION
REASONING: TaskType = policy_pb2.TASK_TYPE_REASONING

_LANGS = (
    r"python|javascript|typescript|java|golang|go|rust|c\+\+|c#|kotlin|swift|ruby|php|scala"
    r"|bash|shell|sql|html|css|react|terraform|dockerfile|yaml"
)
_ARTIFACTS = (
    r"code|function|class|method|script|program|module|endpoint|query|regex|unit tests?"
    r"|test cases?|api|component|library|cli|makefile|migration|" + _LANGS
)

# (cue group, expression). Each expression reports at most once per scan (SINGLEMATCH), so
# a group's score is the number of distinct cues present, never the number of repetitions.
_VOCABULARY: tuple[tuple[str, str], ...] = (
    (
        "code",
        rf"\b(?:write|create|generate|implement|fix|refactor|debug|optimi[sz]e|port|convert"
        rf"|rewrite|add)(?:\s+[\w\-]+){{0,4}}\s+(?:{_ARTIFACTS})\b",
    ),
    (
        "code",
        r"\b(?:refactor|stack ?trace|traceback|segfault|compiler? error|syntax error"
        r"|null pointer|pull request|code review|unit tests?)\b",
    ),
    ("translation", r"\btranslat(?:e|es|ed|ing|ion)\b"),
    (
        "summarization",
        r"\b(?:summari[sz](?:e|es|ing|ation)|summary|tl;?dr|recap|condense"
        r"|key (?:points|takeaways)|main points)\b",
    ),
    (
        "extraction",
        r"\b(?:extract|pull out|parse out|list all|find all|identify all"
        r"|named entities|fill in the fields)\b",
    ),
    (
        "planning",
        r"\b(?:plan|planning|roadmap|milestones?|timeline|itinerary|project plan"
        r"|break (?:it |this )?down into|rollout|strategy)\b",
    ),
    ("syntax", r"```"),
    ("syntax", r"\bdef [A-Za-z_]\w*\("),
    ("syntax", r"\bfunction [A-Za-z_$][\w$]*\s*\("),
    ("syntax", r"#include\s*<"),
    ("syntax", r"\b(?:public|private) static\b"),
    ("syntax", r"\bconsole\.log\("),
    ("syntax", r"^\s*(?:import|from) [a-z_][\w.]* ?"),
    ("syntax", r"\bSELECT\b[^;]{1,200}\bFROM\b"),
    ("reasoning", r"\b(?:prove|proof|derive|deduce|theorem|lemma)\b"),
    ("reasoning", r"\b(?:solve|calculate|compute|equation|probability)\b"),
    (
        "reasoning",
        r"\b(?:step[- ]by[- ]step|think (?:carefully|through)|reason (?:about|through))\b",
    ),
    ("reasoning", r"\b(?:why (?:does|is|do|are)|explain why|root cause)\b"),
    ("reasoning", r"\b(?:puzzle|riddle|paradox)\b"),
    ("multistep", r"\b(?:first|firstly)\b.{0,200}\b(?:then|next|finally|afterwards)\b"),
    ("multistep", r"\b(?:compare|contrast|trade-?offs?|pros and cons)\b"),
    ("multistep", r"\b(?:analy[sz]e|analysis|evaluate|assess|critique)\b"),
    ("multistep", r"\b(?:in detail|comprehensive|thorough(?:ly)?|exhaustive)\b"),
    ("multistep", r"\b(?:constraints?|requirements?|edge cases?)\b"),
    ("multistep", r"\b(?:design|architecture|architect)\b"),
)

# First cue group found wins, in this order; explicit verbs beat the mere presence of code.
_TASK_ORDER: tuple[tuple[str, TaskType], ...] = (
    ("code", CODE_GENERATION),
    ("translation", TRANSLATION),
    ("summarization", SUMMARIZATION),
    ("extraction", EXTRACTION),
    ("planning", PLANNING),
    ("syntax", CODE_GENERATION),
    ("reasoning", REASONING),
)

# Complexity weights, summing to 1. See docs/inspection.md.
WEIGHTS: dict[str, float] = {
    "length": 0.25,
    "reasoning": 0.20,
    "code": 0.15,
    "turns": 0.10,
    "structure": 0.10,
    "output": 0.10,
    "tools": 0.10,
}

# Token estimate: ~4 characters per token for ASCII text (English prose and code in the
# cl100k/o200k family), and a non-ASCII character costs about one extra half token per
# continuation byte (so ~0.75 per Cyrillic/Greek letter, ~1.25 per CJK character).
CHARS_PER_TOKEN = 4.0
TOKENS_PER_EXTRA_BYTE = 0.5
TOKENS_PER_MESSAGE = 4  # role and delimiters in the chat template
TOKENS_PER_REQUEST = 3  # the assistant turn's priming
TOKENS_PER_TOOL = 8


@dataclass(frozen=True, slots=True)
class Cues:
    """Cue groups present in the last user message and in the system messages."""

    user: frozenset[str]
    system: frozenset[str]
    distinct: int  # distinct reasoning + multi-step cues anywhere in the instructions


class Vocabulary:
    """The cue patterns, compiled once per process (`shared()`); scanning is safe from any
    thread."""

    _shared: Vocabulary | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> Vocabulary:
        # The cues do not depend on the config, so config reloads reuse the compiled database.
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def __init__(self) -> None:
        flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH
        self._groups = tuple(group for group, _ in _VOCABULARY)
        self._database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._database.compile(
            expressions=[expr.encode() for _, expr in _VOCABULARY],
            ids=list(range(len(_VOCABULARY))),
            elements=len(_VOCABULARY),
            flags=[
                flags | (hyperscan.HS_FLAG_MULTILINE if "^" in e else 0) for _, e in _VOCABULARY
            ],
        )
        self._local = threading.local()

    def cues(self, user: bytes, system: bytes) -> Cues:
        return self.cues_in(user + b"\n" + system, len(user))

    def cues_of(self, user: str, system: str) -> Cues:
        """As `cues`, from the texts: one encoding of both."""
        split = len(user) if user.isascii() else len(user.encode("utf-8", "replace"))
        return self.cues_in((user + "\n" + system).encode("utf-8", "replace"), split)

    def cues_in(self, data: bytes, split: int) -> Cues:
        """`data`: the user message's UTF-8 (`split` bytes), a newline, the system messages'."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._database)
        # One scan: user text first, so a cue's first (and only) report lands in the user part
        # whenever the user message has it.
        found: list[tuple[int, int]] = []
        self._database.scan(data, match_event_handler=_collect, context=found, scratch=scratch)
        if not found:
            return _NO_CUES
        groups = self._groups
        in_user: set[str] = set()
        in_system: set[str] = set()
        distinct = 0
        for pattern, end in found:
            group = groups[pattern]
            (in_user if end <= split else in_system).add(group)
            if group in _COMPLEXITY_GROUPS:
                distinct += 1
        return Cues(frozenset(in_user), frozenset(in_system), distinct)


_COMPLEXITY_GROUPS = frozenset({"reasoning", "multistep"})
_NO_CUES = Cues(frozenset(), frozenset(), 0)


def _collect(pattern: int, start: int, end: int, flags: int, found: Any) -> None:
    """Hyperscan's match callback: `found` is the scan's list of (pattern, end)."""
    found.append((pattern, end))


def task_type(params: ChatParams, cues: Cues, hint: int = 0) -> TaskType:
    """The caller's hint wins; then tools, a JSON response format, then vocabulary cues."""
    if hint:
        return hint
    if params.tools and params.tool_choice != "none":
        return TOOL_USE
    if params.response_format is not None and params.response_format.type != "text":
        return STRUCTURED_OUTPUT
    for groups in (cues.user, cues.system):
        for group, task in _TASK_ORDER:
            if group in groups:
                return task
    return CHAT


def _saturate(value: float, full: float) -> float:
    return min(1.0, max(0.0, value / full))


def _log_scale(value: float, low: float, high: float) -> float:
    """0 at or below `low`, 1 at or above `high`, logarithmic between: doubling a prompt matters
    as much at 1k tokens as at 16k."""
    if value <= low:
        return 0.0
    return min(1.0, math.log(value / low) / math.log(high / low))


# List items, numbered steps, headings and table rows at the start of a line: at the start of
# the text, and after each newline. Searched as "a newline, then the marker" rather than with
# `^` and MULTILINE: `re` then jumps from newline to newline instead of trying every
# character, and the possessive `*+` does not give back indentation that cannot be followed by
# a marker anyway (~5x faster on code, where most lines are indented).
_MARKER = r"[ \t]*+(?:[-*+#|]|\d{1,2}[.)])"
_STRUCTURE_START = re.compile(_MARKER)
_STRUCTURE_LINE = re.compile("\n" + _MARKER)


def _structure(text: str) -> int:
    # `in` finds a byte with memchr; `count` walks the whole text (~20x slower on 2 KB).
    questions = text.count("?") if "?" in text else 0
    extra = questions - 1 if questions > 1 else 0
    if "\n" not in text:
        return extra
    first = 1 if _STRUCTURE_START.match(text) is not None else 0
    return first + len(_STRUCTURE_LINE.findall(text)) + extra


def complexity_features(
    params: ChatParams, cues: Cues, instructions: Sequence[str], tokens: int
) -> dict[str, float]:
    """Each feature in [0, 1]; see docs/inspection.md for what each one stands for."""
    turns = 0
    for m in params.messages:
        if m.role == "user" or m.role == "assistant":
            turns += 1
    if cues is _NO_CUES:
        code = 0.0
    else:
        user, system = cues.user, cues.system
        if "syntax" in user or "syntax" in system:
            code = 1.0
        else:
            code = 0.6 if "code" in user or "code" in system else 0.0
    fmt = params.response_format
    schema = 0.0
    if fmt is not None:
        schema = 0.5 if fmt.type == "json_schema" else 0.25 if fmt.type == "json_object" else 0.0
    structure = 0
    for text in instructions:
        structure += _structure(text)
    return {
        "length": _log_scale(tokens, 64, 32_000),
        "reasoning": _saturate(cues.distinct, 6),
        "code": code,
        "turns": _saturate(turns - 1, 12),
        "structure": _saturate(structure, 12),
        "output": _log_scale(params.max_tokens or 0, 256, 32_768),
        "tools": min(1.0, len(params.tools) / 8 + schema),
    }


def complexity(features: dict[str, float]) -> float:
    # Rounded so that the same request always yields the same float, whatever the summation.
    weights = WEIGHTS
    return round(sum([weights[name] * value for name, value in features.items()]), 4)


def estimate_input_tokens(text: str, data_len: int, params: ChatParams) -> int:
    """`text` is the normalized conversation; `data_len` its UTF-8 length."""
    extra_bytes = max(0, data_len - len(text))
    estimate = len(text) / CHARS_PER_TOKEN + extra_bytes * TOKENS_PER_EXTRA_BYTE
    estimate += TOKENS_PER_MESSAGE * len(params.messages) + TOKENS_PER_REQUEST
    for tool in params.tools:
        schema = json.dumps(tool.parameters, separators=(",", ":")) if tool.parameters else ""
        size = len(tool.name) + len(tool.description) + len(schema)
        estimate += TOKENS_PER_TOOL + size / CHARS_PER_TOKEN
    if params.response_format is not None and params.response_format.schema:
        estimate += len(json.dumps(params.response_format.schema)) / CHARS_PER_TOKEN
    return math.ceil(estimate)
