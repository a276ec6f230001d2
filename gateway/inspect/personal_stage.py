"""The egress inspection stage: when and how the personal-data tier runs inside a request.

`inspection.ner`:
- `egress` (default): only when the policy's chain holds a cloud candidate that the pattern
  tier's classification still clears; the tier is then asked whether anything lifts the
  request above the highest such clearance. Local routes pay nothing.
- `always`: on every request, reading all text (findings visible to the policy every time).
- `off`: never.

The rules run on the event loop (microseconds; requests over 16 KB in a worker thread); the
model runs in the stage's own worker threads (it holds the CPU for milliseconds), a tenant
using at most half of them. When the tier cannot finish (model missing or broken, text over
`inspection.personal.max_chars`) the request
gets a finding `personal.<reason>` one level above the highest cloud clearance: it is not
cleared for the cloud (fail closed), and the reason is in the decision log's detectors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from gateway.chat import ChatParams
from gateway.config import InspectionConfig, ModelConfig
from gateway.inspect.findings import Finding
from gateway.inspect.inspector import Inspection, effective_level
from gateway.inspect.personal import PersonalTier, PersonalUnavailable, Scan, request_parts
from gateway.levels import Level

log = logging.getLogger(__name__)

UNAVAILABLE_PREFIX = "personal."
# Up to this many characters the rules run on the event loop (tens of microseconds); larger
# requests take their rules to a worker thread too.
_INLINE_CHARS = 16_384


class PersonalStage:
    """One per pipeline: the tier, its model (loaded on first need, in a worker thread) and
    the worker threads."""

    def __init__(self, inspection: InspectionConfig, models: Mapping[str, ModelConfig]) -> None:
        self.mode = inspection.ner
        self.tier = PersonalTier(inspection)
        self._models = models
        self._executor: ThreadPoolExecutor | None = None
        self._workers = inspection.personal.workers
        # One caller cannot stall another: a tenant holds at most half the workers (at least
        # one); its further requests wait for its own turn, not in front of everyone's.
        self._per_tenant = max(1, self._workers // 2)
        self._tenants: dict[str, asyncio.Semaphore] = {}

    def ceiling(self, classification: Level, candidates: Sequence[str]) -> Level | None:
        """The highest clearance among the chain's cloud candidates that the classification
        still fits (None: no such candidate, the tier need not run in `egress` mode)."""
        best: Level | None = None
        for alias in candidates:
            model = self._models.get(alias)
            if model is None or model.location != "cloud" or model.clearance < classification:
                continue
            if best is None or model.clearance > best:
                best = model.clearance
        return best

    def wanted(self, classification: Level, candidates: Sequence[str]) -> bool:
        if self.mode == "off":
            return False
        if self.mode == "always":
            return True
        ceiling = self.ceiling(classification, candidates)
        # A cloud model cleared for everything cannot be refused by anything the tier finds.
        return ceiling is not None and ceiling < Level.RESTRICTED

    async def inspect(
        self,
        params: ChatParams,
        inspection: Inspection,
        candidates: Sequence[str],
        tenant: str = "",
        reach: Level | None = None,
    ) -> Inspection:
        """`inspection` with the tier's findings added and the classification recomputed.
        `reach` is the level the request can get down to (its redaction floor, when redaction
        is on): cloud candidates cleared for that level are the ones the tier guards."""
        ceiling = self.ceiling(reach or inspection.classification, candidates)
        full = self.mode == "always"
        loop = asyncio.get_running_loop()
        turn = self._tenants.get(tenant)
        if turn is None:
            turn = self._tenants[tenant] = asyncio.Semaphore(self._per_tenant)
        try:
            # The rules run here (microseconds per KB; large texts in a worker); only the model
            # goes to the worker threads, a tenant at a time per worker.
            def prepare() -> Scan:
                return self.tier.prepare(
                    params, inspection.findings, ceiling=ceiling, full=full or ceiling is None
                )

            size = sum(len(p.text) for p in request_parts(params))
            scan = prepare() if size <= _INLINE_CHARS else await self._offload(prepare)
            if scan.needs_model:
                async with turn:
                    findings = await loop.run_in_executor(
                        self._pool(), lambda: self.tier.finish(scan)
                    )
            else:
                findings = self.tier.finish(scan)
        except PersonalUnavailable as exc:
            log.warning("personal-data tier could not run (%s): not cleared for the cloud", exc)
            level = Level(min(int(Level.RESTRICTED), int(ceiling or Level.INTERNAL) + 1))
            findings = (Finding(UNAVAILABLE_PREFIX + exc.reason, level, 1),)
        if not findings:
            return inspection
        merged = inspection.findings + findings
        return dataclasses.replace(
            inspection,
            findings=merged,
            classification=effective_level(inspection.declared, merged),
        )

    async def _offload(self, prepare: Callable[[], Scan]) -> Scan:
        return await asyncio.get_running_loop().run_in_executor(self._pool(), prepare)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="celgate-ner")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
