"""The redaction stage: which candidates get which redacted request, the residency re-check of
the redacted request (in the stage and in the dispatcher), and restoring answers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gateway.chat import ChatMessage, ChatParams, ChatResult, Chunk, ToolCall, Usage
from gateway.config import parse_config
from gateway.errors import PermissionDenied
from gateway.inspect.findings import Finding, Location
from gateway.levels import Level
from gateway.providers.dispatch import Dispatcher, Variant
from gateway.redaction import AnswerRestorer, redact_candidates
from tests.fakes.memory_provider import MemoryProvider

EMAIL = "jane.roe@gmail.com"
PARAMS = ChatParams(messages=(ChatMessage("user", f"Ticket from {EMAIL}."),))
FINDING = Finding(
    "pii.email", Level.CONFIDENTIAL, 1, (Location("messages[0].content", 12, 12 + len(EMAIL)),)
)


def entry(location: str, clearance: str) -> dict[str, Any]:
    return {
        "provider": "ollama" if location == "on_prem" else "openai",
        "upstream_model": "m",
        "base_url": "http://127.0.0.1:1",
        "location": location,
        "clearance": clearance,
    }


CONFIG = parse_config(
    {
        "models": {
            "local": entry("on_prem", "RESTRICTED"),
            "cloud": entry("cloud", "INTERNAL"),
            "cloud2": entry("cloud", "INTERNAL"),
            "public": entry("cloud", "PUBLIC"),
        },
        "default_model": "local",
    }
)


async def level(value: Level) -> Level:
    return value


async def public(params: ChatParams) -> Level:
    return Level.PUBLIC


async def test_one_redaction_per_clearance_shared_by_fallbacks_and_inspected_again() -> None:
    inspected: list[ChatParams] = []

    async def reinspect(params: ChatParams) -> Level:
        inspected.append(params)
        return Level.PUBLIC

    redactions, refused = await redact_candidates(
        ["cloud", "cloud2", "public", "local"],
        {"cloud", "cloud2", "public"},
        CONFIG.models,
        PARAMS,
        [FINDING],
        reinspect,
    )
    assert refused == []
    assert redactions["cloud"] is redactions["cloud2"]  # the same redacted request
    assert "local" not in redactions  # a cleared candidate gets the original
    assert len(inspected) == 2  # INTERNAL and PUBLIC: once per distinct clearance
    assert all(EMAIL not in p.messages[0].content for p in inspected)
    assert redactions["cloud"].counts == (("pii.email", 1),)


async def test_a_redacted_request_still_above_clearance_is_refused() -> None:
    redactions, refused = await redact_candidates(
        ["cloud", "local"],
        {"cloud"},
        CONFIG.models,
        PARAMS,
        [FINDING],
        lambda params: level(Level.CONFIDENTIAL),  # the second inspection still finds one
    )
    assert redactions == {}
    assert [r.model for r in refused] == ["cloud"]
    assert "CONFIDENTIAL even when redacted" in refused[0].reason
    assert EMAIL not in refused[0].reason


async def test_a_finding_without_a_location_refuses_the_candidate() -> None:
    _, refused = await redact_candidates(
        ["cloud"],
        {"cloud"},
        CONFIG.models,
        PARAMS,
        [Finding("pii.email", Level.CONFIDENTIAL, 1)],
        public,
    )
    assert [r.model for r in refused] == ["cloud"]


async def test_the_dispatcher_sends_each_candidate_its_own_request_and_checks_its_level() -> None:
    cloud, local = MemoryProvider(["server"]), MemoryProvider()
    dispatcher = Dispatcher(CONFIG, providers={"cloud": cloud, "local": local})
    redacted = ChatParams(messages=(ChatMessage("user", "Ticket from <EMAIL_1>."),))
    answer = await dispatcher.chat(
        ["cloud", "local"],
        PARAMS,
        Level.CONFIDENTIAL,
        time.monotonic() + 30,
        variants={"cloud": Variant(redacted, Level.PUBLIC)},
    )
    assert answer.model == "local"
    assert cloud.received == [redacted]
    assert local.received == [PARAMS]
    # A variant whose own classification is above the model's clearance is refused at the
    # call, whatever the pipeline decided.
    with pytest.raises(PermissionDenied) as info:
        await dispatcher.chat(
            ["cloud"],
            PARAMS,
            Level.CONFIDENTIAL,
            time.monotonic() + 30,
            variants={"cloud": Variant(redacted, Level.CONFIDENTIAL)},
        )
    assert info.value.reason == "DATA_RESIDENCY"
    assert len(cloud.received) == 1
    # Without a variant the original request's classification applies.
    with pytest.raises(PermissionDenied):
        await dispatcher.chat(["cloud"], PARAMS, Level.CONFIDENTIAL, time.monotonic() + 30)


async def _restorer() -> AnswerRestorer:
    redactions, _ = await redact_candidates(
        ["cloud"], {"cloud"}, CONFIG.models, PARAMS, [FINDING], public
    )
    return AnswerRestorer(redactions["cloud"])


async def test_answers_get_the_values_back_in_content_and_tool_arguments() -> None:
    restorer = await _restorer()
    result = restorer.result(
        ChatResult(
            "Write to <EMAIL_1>.",
            (ToolCall("c", "send", json.dumps({"to": "<EMAIL_1>"})),),
            "tool_calls",
            Usage(),
            "m",
        )
    )
    assert result.content == f"Write to {EMAIL}."
    assert json.loads(result.tool_calls[0].arguments) == {"to": EMAIL}
    assert restorer.unrestored == 0


async def test_a_stream_releases_what_it_held_with_the_last_chunk() -> None:
    restorer = await _restorer()
    first = restorer.chunk(Chunk(content_delta="Ends with <EMA"))
    assert first.content_delta == "Ends with "
    last = restorer.chunk(Chunk(finish_reason="stop", usage=Usage()))
    assert last.content_delta == "<EMA"  # never became a placeholder: released as it was
