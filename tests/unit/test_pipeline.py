"""The pipeline without a server: plain requests in, plain values and one outcome out, with
in-memory providers (tests/fakes/memory_provider.py), the test routing policy, an SQLite
ledger and the in-process rate limiter."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.budget import open_ledger
from gateway.chat import ChatMessage, ChatParams, ChatRequest, Route, Usage
from gateway.config import Config
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.levels import Level
from gateway.outcome import Call, Ending, Outcome, Progress
from gateway.pipeline import Pipeline
from gateway.policy import PolicyStore
from gateway.pricing import Pricing
from gateway.providers.dispatch import Dispatcher
from gateway.ratelimit import open_rate_limiter
from tests.fakes.memory_provider import MemoryProvider
from tests.harness import make_config, ollama_model, openai_model

ROOT = Path(__file__).resolve().parent.parent.parent
UNREACHABLE = "http://127.0.0.1:1"
CARD = "Pay 4111 1111 1111 1111 to DE89370400440532013000 today"


class RecordingLimiter:
    """The in-process limiter, remembering what it was charged."""

    def __init__(self, config: Config) -> None:
        self.inner = open_rate_limiter(config)
        self.checked: list[int] = []
        self.corrected: list[int] = []
        self.closed = False

    async def check(self, tenant: str, estimated_tokens: int, now: float | None = None) -> None:
        self.checked.append(estimated_tokens)
        await self.inner.check(tenant, estimated_tokens, now)

    async def correct(self, tenant: str, delta_tokens: int, now: float | None = None) -> None:
        self.corrected.append(delta_tokens)
        await self.inner.correct(tenant, delta_tokens, now)

    async def check_route(self, tenant: str, now: float | None = None) -> None:
        await self.inner.check_route(tenant, now)

    def reload(self, config: Config) -> None:
        self.inner.reload(config)

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


@dataclass
class Rig:
    pipeline: Pipeline
    providers: dict[str, MemoryProvider]
    limiter: RecordingLimiter
    closed: bool = False


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    config = make_config(
        {
            "local": ollama_model(UNREACHABLE),
            "backup": ollama_model(UNREACHABLE),
            "cloud": openai_model(
                UNREACHABLE, price={"input_per_mtok": 2.0, "output_per_mtok": 8.0}
            ),
        },
        "local",
    )
    providers = {
        "local": MemoryProvider(usage=Usage(12, 5)),
        "backup": MemoryProvider(usage=Usage(3, 1)),
        "cloud": MemoryProvider(usage=Usage(100, 10), response_model="gpt-5-mini-2026"),
    }
    policies = PolicyStore(config.resolve(config.policy.dir))
    policies.load()
    limiter = RecordingLimiter(config)
    pipeline = Pipeline(
        config,
        Dispatcher(config, providers=providers),
        policies,
        limiter,
        await open_ledger(config),
        Pricing.from_config(config),
    )
    rig = Rig(pipeline, providers, limiter)
    yield rig
    if not rig.closed:
        await pipeline.aclose()


def request(text: str = "Capital of France?", **fields: Any) -> ChatRequest:
    return ChatRequest(ChatParams(messages=(ChatMessage("user", text),)), **fields)


def progress(rpc: str = "Chat") -> Progress:
    call = Call.start(rpc, service="test", system="test", carrier={})
    started = Progress(call)
    started.tenant = "default"
    return started


def ended(started: Progress, error: BaseException | None = None) -> Outcome:
    code = grpc.StatusCode.OK if error is None else grpc.StatusCode.PERMISSION_DENIED
    return started.outcome(Ending(code.name, code.value[0], False, error))


async def test_chat_takes_a_plain_request_and_returns_plain_values(rig: Rig) -> None:
    started = progress()
    result, route = await rig.pipeline.chat(request(), 1e12, started)
    assert result.content == "ok" and result.usage == Usage(12, 5)
    assert route == Route(
        model="local",
        provider="ollama",
        upstream_model="llama3.1:8b",
        location="on_prem",
        rule="preferred/2",
        classification=Level.PUBLIC,
        cost_usd=0.0,
        policy_name="preferred",
        policy_revision=route.policy_revision,
        decision_id=started.call.decision_id,
        attempts=1,
        rerouted=False,
    )
    outcome = ended(started)
    assert outcome.model == "local" and outcome.enforcement == "allowed"
    assert outcome.policy is not None and outcome.policy.rule == "preferred/2"
    assert outcome.inspection is not None and outcome.inspection.task_type == "chat"
    assert [(a.model, a.error, a.usage) for a in outcome.attempts] == [
        ("local", None, Usage(12, 5))
    ]
    assert outcome.error is None and outcome.status == "OK"


async def test_the_route_reports_the_cost_the_attempt_was_charged(rig: Rig) -> None:
    started = progress()
    _, route = await rig.pipeline.chat(request(preferred_model="cloud"), 1e12, started)
    expected = (100 * 2.0 + 10 * 8.0) / 1e6
    assert route.cost_usd == pytest.approx(expected) and route.location == "cloud"
    outcome = ended(started)
    assert outcome.cost_usd == pytest.approx(expected)
    assert outcome.attempts[0].cost_usd == pytest.approx(expected)
    assert outcome.attempts[0].response_model == "gpt-5-mini-2026"


async def test_a_fallback_is_one_history_shared_by_the_route_and_the_outcome(rig: Rig) -> None:
    rig.providers["local"].errors = ["server"]
    started = progress()
    _, route = await rig.pipeline.chat(request(labels={"fallbacks": "backup"}), 1e12, started)
    assert route.model == "backup" and route.attempts == 2
    outcome = ended(started)
    assert [(a.model, a.error) for a in outcome.attempts] == [("local", "server"), ("backup", None)]
    assert outcome.calls == route.attempts


async def test_stream_yields_chunks_and_the_route_with_the_last(rig: Rig) -> None:
    started = progress("ChatStream")
    pieces = [p async for p in rig.pipeline.stream(request(streaming=True), 1e12, started)]
    assert [route for _, route in pieces[:-1]] == [None, None, None]
    chunk, route = pieces[-1]
    assert chunk.finish_reason == "stop" and route is not None and route.model == "local"
    outcome = ended(started)
    assert outcome.model == "local"
    assert [(a.model, a.error, a.finish_reason) for a in outcome.attempts] == [
        ("local", None, "stop")
    ]


async def test_residency_refusal_leaves_every_candidate_explained(rig: Rig) -> None:
    started = progress()
    with pytest.raises(PermissionDenied) as info:
        await rig.pipeline.chat(request(CARD, preferred_model="cloud"), 1e12, started)
    assert info.value.reason == "DATA_RESIDENCY"
    assert rig.providers["cloud"].calls == 0
    outcome = ended(started, info.value)
    assert outcome.enforcement == "denied" and outcome.error == "DATA_RESIDENCY"
    assert outcome.blocked == (("cloud", "DATA_RESIDENCY"),)
    (candidate,) = outcome.candidates
    assert candidate.model == "cloud" and not candidate.allowed
    assert outcome.inspection is not None
    assert outcome.inspection.classification is Level.RESTRICTED
    assert outcome.inspection.detectors == ("fin.iban", "fin.payment_card")
    assert outcome.model is None and outcome.attempts == ()


async def test_route_is_a_dry_run(rig: Rig) -> None:
    started = progress("Route")
    plan, route = await rig.pipeline.route(request(preferred_model="cloud"), started)
    assert route.model == "cloud" and route.attempts == 0 and route.cost_usd > 0
    assert plan.chain == ("cloud",)
    assert all(p.calls == 0 for p in rig.providers.values())
    assert rig.limiter.checked == []
    outcome = ended(started)
    assert outcome.routed == "cloud" and outcome.model is None


async def test_an_unknown_model_is_refused_before_anything_runs(rig: Rig) -> None:
    started = progress()
    with pytest.raises(InvalidRequest) as info:
        await rig.pipeline.chat(request(preferred_model="nope"), 1e12, started)
    assert info.value.field == "preferred_model"
    assert started.inspection is None and started.policy is None


async def test_one_token_estimate_for_rate_limits_and_the_budget(rig: Rig) -> None:
    """The rate limit is charged the estimate the budget reserve prices: input tokens plus
    the output cap (max_tokens, else limits.estimate_output_tokens)."""
    started = progress()
    plan = await rig.pipeline.plan(request(), started)
    default_cap = rig.pipeline.config.limits.estimate_output_tokens
    assert plan.output_tokens == default_cap
    assert plan.estimated_tokens == plan.inspection.estimated_input_tokens + default_cap
    await rig.pipeline.chat(request(), 1e12, progress())
    await rig.pipeline.chat(
        ChatRequest(
            ChatParams(messages=(ChatMessage("user", "Capital of France?"),), max_tokens=7)
        ),
        1e12,
        progress(),
    )
    assert rig.limiter.checked == [
        plan.estimated_tokens,
        plan.inspection.estimated_input_tokens + 7,
    ]
    # Corrected to the real usage (12 + 5 tokens) afterwards.
    assert rig.limiter.corrected[0] == 17 - plan.estimated_tokens


async def test_aclose_closes_the_providers_and_the_stores(rig: Rig) -> None:
    await rig.pipeline.aclose()
    rig.closed = True
    assert all(p.closed for p in rig.providers.values())
    assert rig.limiter.closed


# -- the layers ------------------------------------------------------------------------------


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_pipeline_knows_no_api_types() -> None:
    used = imports(ROOT / "gateway" / "pipeline.py")
    assert "gateway.v1.gateway_pb2" not in used
    assert not any(name.startswith(("gateway.convert", "gateway.service", "grpc")) for name in used)


def test_telemetry_does_not_reach_into_the_budget_or_the_pipeline() -> None:
    for path in (ROOT / "gateway" / "telemetry").glob("*.py"):
        used = imports(path)
        assert not any(
            name.startswith(("gateway.budget", "gateway.pipeline", "gateway.service"))
            for name in used
        ), path.name


async def test_the_tenant_ceiling_holds_after_the_personal_data_tier_raises_the_level() -> None:
    # The pattern tier finds nothing here; the personal-data tier (run because the chain holds
    # a cloud candidate) finds a patient with a birth date and a diagnosis: CONFIDENTIAL, above
    # what this tenant may send at all.
    config = make_config(
        {"local": ollama_model(UNREACHABLE), "cloud": openai_model(UNREACHABLE)},
        "local",
        tenants={"default": {"max_declared_classification": "INTERNAL"}},
    )
    providers = {"local": MemoryProvider(), "cloud": MemoryProvider()}
    policies = PolicyStore(config.resolve(config.policy.dir))
    policies.load()
    pipeline = Pipeline(
        config,
        Dispatcher(config, providers=providers),
        policies,
        RecordingLimiter(config),
        await open_ledger(config),
        Pricing.from_config(config),
    )
    text = (
        "Patient Maria Gonzalez, born 2/7/1961, lives at 41 Birch Lane, Springfield; "
        "diagnosed with type 2 diabetes, summarize her chart"
    )
    try:
        assert pipeline.inspect(request(text)).classification <= Level.INTERNAL
        started = progress()
        with pytest.raises(PermissionDenied) as info:
            await pipeline.chat(request(text, preferred_model="cloud"), 1e12, started)
        assert info.value.reason == "CLASSIFICATION_CEILING"
        assert "CONFIDENTIAL" in str(info.value) and "Maria" not in str(info.value)
        assert providers["cloud"].calls == 0 and providers["local"].calls == 0
        # Within the ceiling the same tenant is served.
        await pipeline.chat(
            request("Capital of France?", preferred_model="cloud"), 1e12, progress()
        )
        assert providers["cloud"].calls + providers["local"].calls == 1
    finally:
        await pipeline.aclose()
