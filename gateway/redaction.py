"""The redaction stage of the pipeline: which candidates get which redacted request, the
residency re-check of each redacted request, and restoring the answer.

The pure work (placeholders, rebuilding the request, restoring text) is `gateway/redact.py`;
which findings may be redacted at all is `enforce.redaction_floor`. Here, per request:

- one redaction per distinct clearance among the candidates enforcement kept for redaction
  (fallbacks of the same clearance share it, so they get the same redacted request);
- each redacted request is inspected again, with the full inspector, before anything is sent:
  a candidate whose redacted request is still above its clearance is refused;
- the answer of a redacted candidate gets the values back (content, tool-call arguments,
  streamed deltas). The mapping stays in this request's objects and dies with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.chat import ChatParams, ChatResult, Chunk, ToolCall
from gateway.config import ModelConfig
from gateway.enforce import to_redact
from gateway.inspect.findings import Finding
from gateway.levels import Level
from gateway.redact import Redaction, Restorer, StreamRestorer, redact


@dataclass(frozen=True, slots=True)
class Redacted:
    """The request one clearance level may receive: the redaction and the classification its
    own inspection gave it."""

    redaction: Redaction
    classification: Level

    @property
    def params(self) -> ChatParams:
        return self.redaction.params

    @property
    def counts(self) -> tuple[tuple[str, int], ...]:
        """(detector id, distinct values replaced), sorted: what may be shown."""
        return tuple(sorted(self.redaction.counts.items()))


@dataclass(frozen=True, slots=True)
class Refused:
    model: str
    reason: str  # a sentence naming the model and levels, never content


async def redact_candidates(
    chain: Sequence[str],
    marked: Iterable[str],
    models: Mapping[str, ModelConfig],
    params: ChatParams,
    findings: Sequence[Finding],
    reinspect: Callable[[ChatParams], Awaitable[Level]],
) -> tuple[dict[str, Redacted], list[Refused]]:
    """The redacted request of every candidate enforcement marked, and the candidates whose
    redacted request is still above their clearance (or could not be built). `reinspect`
    gives a redacted request's classification: every inspection tier that ran on the original
    must run on it too (it may be a coroutine that runs a tier off the event loop)."""
    marked = frozenset(marked)
    by_clearance: dict[Level, Redacted | None] = {}
    redactions: dict[str, Redacted] = {}
    refused: list[Refused] = []
    for alias in chain:
        if alias not in marked:
            continue
        clearance = models[alias].clearance
        if clearance not in by_clearance:
            by_clearance[clearance] = await _redacted(params, findings, clearance, reinspect)
        done = by_clearance[clearance]
        if done is None:
            refused.append(
                Refused(alias, f"model {alias!r}: a finding above its clearance has no location")
            )
        elif done.classification > clearance:
            refused.append(
                Refused(
                    alias,
                    f"model {alias!r} is cleared for {clearance.name} but the request is "
                    f"{done.classification.name} even when redacted",
                )
            )
        else:
            redactions[alias] = done
    return redactions, refused


async def _redacted(
    params: ChatParams,
    findings: Sequence[Finding],
    clearance: Level,
    reinspect: Callable[[ChatParams], Awaitable[Level]],
) -> Redacted | None:
    try:
        redaction = redact(params, to_redact(findings, clearance))
    except (ValueError, KeyError):
        # A finding the inspector could not locate exactly: nothing safe to send redacted.
        return None
    return Redacted(redaction, await reinspect(redaction.params))


class AnswerRestorer:
    """Puts one request's values back into what its redacted candidate answered."""

    def __init__(self, redacted: Redacted) -> None:
        self._restorer = Restorer(redacted.redaction.mapping)
        self._stream: StreamRestorer | None = None

    @property
    def unrestored(self) -> int:
        return self._restorer.unknown

    def result(self, result: ChatResult) -> ChatResult:
        return dataclasses.replace(
            result,
            content=self._restorer.text(result.content),
            tool_calls=self._calls(result.tool_calls),
        )

    def chunk(self, chunk: Chunk) -> Chunk:
        """A streamed chunk restored; a possible placeholder prefix at the end of the content
        is held until the next chunk, and released with the last one (the finish reason)."""
        if self._stream is None:
            self._stream = self._restorer.stream()
        delta = self._stream.feed(chunk.content_delta)
        if chunk.finish_reason is not None:
            delta += self._stream.finish()
        if delta == chunk.content_delta and not chunk.tool_calls:
            return chunk  # most chunks: nothing to restore, nothing held
        # The constructor, not dataclasses.replace: this runs per chunk.
        return Chunk(
            delta,
            self._calls(chunk.tool_calls),
            chunk.finish_reason,
            chunk.usage,
            chunk.response_model,
        )

    def _calls(self, calls: tuple[ToolCall, ...]) -> tuple[ToolCall, ...]:
        if not calls:
            return calls
        return tuple(
            dataclasses.replace(c, arguments=self._restorer.arguments(c.arguments)) for c in calls
        )
