"""When the personal-data tier runs inside a request, and what it does to the inspection."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from gateway.chat import ChatMessage, ChatParams
from gateway.config import Config, parse_config
from gateway.inspect import Inspector
from gateway.inspect.personal import NerModel
from gateway.inspect.personal_stage import PersonalStage
from gateway.levels import Level

EXAMPLE = (
    "Patient Maria Gonzalez, born 2/7/1961, lives at 41 Birch Lane, Springfield; diagnosed "
    "with type 2 diabetes, summarize her chart"
)


def config(**inspection: Any) -> Config:
    model = {"provider": "openai", "base_url": "http://127.0.0.1:9", "upstream_model": "m"}
    return parse_config(
        {
            "models": {
                "local": {**model, "location": "on_prem", "clearance": "RESTRICTED"},
                "cloud": {**model, "location": "cloud", "clearance": "INTERNAL"},
                "trusted": {**model, "location": "cloud", "clearance": "RESTRICTED"},
            },
            "default_model": "local",
            "inspection": inspection,
        }
    )


def stage(**inspection: Any) -> PersonalStage:
    cfg = config(**inspection)
    return PersonalStage(cfg.inspection, cfg.models)


def user(text: str) -> ChatParams:
    return ChatParams(messages=[ChatMessage(role="user", content=text)])


def test_egress_runs_only_for_a_cloud_candidate_the_patterns_cleared() -> None:
    egress = stage()
    assert egress.wanted(Level.PUBLIC, ["local", "cloud"])
    assert egress.ceiling(Level.PUBLIC, ["local", "cloud"]) == Level.INTERNAL
    assert not egress.wanted(Level.PUBLIC, ["local"])  # local routes pay nothing
    assert not egress.wanted(Level.CONFIDENTIAL, ["cloud", "local"])  # already not cleared
    assert not egress.wanted(Level.PUBLIC, ["trusted"])  # nothing can refuse it
    assert stage(ner="always").wanted(Level.PUBLIC, ["local"])
    assert not stage(ner="off").wanted(Level.PUBLIC, ["cloud"])


async def test_the_tier_raises_the_classification() -> None:
    cfg = config()
    params = user(EXAMPLE)
    inspection = Inspector(cfg.inspection).inspect(params)
    assert inspection.classification == Level.PUBLIC
    personal = PersonalStage(cfg.inspection, cfg.models)
    try:
        raised = await personal.inspect(params, inspection, ["cloud", "local"])
    finally:
        personal.close()
    assert raised.classification == Level.CONFIDENTIAL
    assert {"pii.person", "pii.date_of_birth", "pii.address", "phi.health"} <= set(raised.detectors)
    assert raised.task_type == inspection.task_type


@pytest.mark.parametrize(
    ("inspection", "detector"),
    [
        ({"ner_model": "/nonexistent/model"}, "personal.model_unavailable"),
        ({"personal": {"max_chars": 200}}, "personal.over_budget"),
    ],
)
async def test_a_tier_that_cannot_run_fails_closed(
    inspection: dict[str, Any], detector: str
) -> None:
    cfg = config(**inspection)
    params = user(EXAMPLE + " " + "More notes follow here. " * 20)
    before = Inspector(cfg.inspection).inspect(params)
    personal = PersonalStage(cfg.inspection, cfg.models)
    try:
        after = await personal.inspect(params, before, ["cloud"])
    finally:
        personal.close()
    assert after.detectors[-1] == detector
    assert after.classification == Level.CONFIDENTIAL  # one above the cloud's INTERNAL


class HeldModel(NerModel):
    """A model that holds every text of tenant `alpha` until released (the real model's speed
    would make the test's timing depend on the machine)."""

    def __init__(self) -> None:
        super().__init__("held")
        self.release = threading.Event()
        self.reading = 0

    def entities(self, text: str) -> list[tuple[str, int, int]]:
        if "alpha" in text:
            self.reading += 1
            assert self.release.wait(30)
        return []


async def test_one_tenant_cannot_hold_every_model_worker() -> None:
    cfg = config(personal={"workers": 2})
    personal = PersonalStage(cfg.inspection, cfg.models)
    held = HeldModel()
    personal.tier.model = held
    inspector = Inspector(cfg.inspection)

    async def ask(tenant: str) -> object:
        params = user(f"{tenant}: {EXAMPLE}")
        return await personal.inspect(params, inspector.inspect(params), ["cloud"], tenant)

    try:
        flood = [asyncio.create_task(ask("alpha")) for _ in range(3)]
        await asyncio.sleep(0.2)
        # Two workers, a tenant holds at most one: the flood reads one text at a time ...
        assert held.reading == 1
        # ... and another tenant's request is served while the flood waits.
        await asyncio.wait_for(ask("beta"), timeout=10)
        assert not any(task.done() for task in flood)
        held.release.set()
        await asyncio.wait_for(asyncio.gather(*flood), timeout=10)
        assert held.reading == 3
    finally:
        held.release.set()
        personal.close()
