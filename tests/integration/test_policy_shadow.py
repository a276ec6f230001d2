"""A running gateway with a shadow policy (`policy.shadow.dir`): the shadow's decision is
recorded beside the live one in the decision log, on the SERVER span and in the agreement
metric; a broken or failing shadow leaves the live answers unchanged; an edited shadow is
hot-reloaded. Real gRPC, the upstream fakes over HTTP, in-memory OpenTelemetry exporters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway import telemetry as t
from gateway.config import Config
from gateway.policy.shadow import ShadowResult
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import policy_pb2
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model
from tests.integration.test_telemetry import Observed, attrs, matching, observed_gateway

pytestmark = pytest.mark.integration

PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 8.0}
# The live policy is tests/policies/preferred: the preferred model, else `local`.
# The shadow sends everything to `cloud` unless the data is above INTERNAL.
TO_CLOUD = """\
name: shadow
rule:
  id: shadow
  match:
    - condition: request.classification > Classification.CLASSIFICATION_INTERNAL
      output: 'RouteDecision{model: "local"}'
    - output: 'RouteDecision{model: "cloud", fallbacks: ["local"]}'
"""
TO_LOCAL = """\
name: shadow
rule:
  id: shadow
  match:
    - output: 'RouteDecision{model: "local"}'
"""
# Compiles, fails at evaluation time (the label is absent).
FAILS = """\
name: shadow
rule:
  match:
    - output: 'RouteDecision{model: request.labels["absent"]}'
"""


def shadow_folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "policy.yaml").write_text(text)
    return path


def config(ollama: FakeOllama, cloud: FakeOpenAI, shadow: Path | None, **policy: Any) -> Config:
    ollama.reset()
    cloud.reset()
    models = {"local": ollama_model(ollama.url), "cloud": openai_model(cloud.url, price=PRICE)}
    base = make_config(models, "local")
    settings: dict[str, Any] = {"dir": str(base.policy.dir), "watch": False, **policy}
    if shadow is not None:
        settings["shadow"] = {"dir": str(shadow)}
    return make_config(models, "local", policy=settings)


def chat(text: str, **fields: Any) -> pb.ChatRequest:
    return pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=text)], **fields)


CONFIDENTIAL = policy_pb2.CLASSIFICATION_CONFIDENTIAL


async def test_shadow_decisions_are_recorded_beside_the_live_ones(
    tmp_path: Path, ollama: FakeOllama, cloud: FakeOpenAI
) -> None:
    shadow = shadow_folder(tmp_path / "shadow", TO_CLOUD)
    async with observed_gateway(config(ollama, cloud, shadow), tmp_path) as obs:
        stub = obs.stub
        revision = obs.gateway.pipeline.shadow.current.revision  # type: ignore[union-attr]
        for i in range(2):  # live local, shadow cloud
            assert (await stub.Chat(chat(f"hello {i}"))).route.model == "local"
        agreed = await stub.Chat(chat("hi", preferred_model="cloud"))  # both cloud
        assert agreed.route.model == "cloud"
        secret = await stub.Chat(chat("plan", classification=CONFIDENTIAL))  # both local
        assert secret.route.model == "local"
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # live refused, shadow local
            await stub.Chat(chat("plan", classification=CONFIDENTIAL, preferred_model="cloud"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The dry run estimates what the live route reserves; the shadow agrees on the model,
        # so it must have estimated the same reservation.
        dry = await stub.Route(pb.RouteRequest(messages=[chat("hi").messages[0]],
                                               preferred_model="cloud"))  # fmt: skip
        assert dry.route.model == "cloud" and dry.route.cost_usd > 0

        lines = obs.decisions()
        assert [line["shadow"]["model"] for line in lines] == [
            "cloud", "cloud", "cloud", "local", "local", "cloud",
        ]  # fmt: skip
        assert [line["route"] for line in lines] == [
            "local", "local", "cloud", "local", None, "cloud",
        ]  # fmt: skip
        for line in lines:
            assert line["shadow"]["revision"] == revision
            assert line["shadow"]["rule"] in ("shadow/1", "shadow/2")
            assert "refused" not in line["shadow"] and "error" not in line["shadow"]
        assert lines[-1]["shadow"]["estimated_cost_usd"] == pytest.approx(
            dry.route.cost_usd, rel=1e-12
        )
        assert lines[3]["shadow"]["estimated_cost_usd"] == 0.0  # the local model is free

        points = obs.points(t.METRIC_SHADOW_DECISIONS)

        def count(live: str, shadow_model: str, agreement: str) -> int:
            found = matching(
                points,
                celgate__model=live,
                celgate__shadow__model=shadow_model,
                celgate__shadow__agreement=agreement,
            )
            return sum(int(p.value) for p in found)

        assert count("local", "cloud", "disagree") == 2
        assert count("cloud", "cloud", "agree") == 2  # the Chat and the dry run
        assert count("local", "local", "agree") == 1
        assert count("refused", "local", "disagree") == 1
        assert sum(int(p.value) for p in points) == 6

        await obs.settled(6)
        first = attrs(obs.servers()[0])
        assert first[t.CELGATE_SHADOW_MODEL] == "cloud"
        assert first[t.CELGATE_SHADOW_AGREEMENT] == "disagree"
        assert first[t.CELGATE_SHADOW_RULE] == "shadow/2"
        assert first[t.CELGATE_SHADOW_REVISION] == revision
        assert first[t.CELGATE_SHADOW_ESTIMATED_COST] == lines[0]["shadow"]["estimated_cost_usd"]
        # The live decision's own attributes are the live policy's.
        assert first[t.CELGATE_MODEL] == "local"
        assert first[t.CELGATE_POLICY_NAME] == "preferred"


WORKLOAD = [
    chat("hello"),
    chat("hi", preferred_model="cloud"),
    chat("plan", classification=CONFIDENTIAL),
    chat("plan", classification=CONFIDENTIAL, preferred_model="cloud"),
]


async def answers(obs: Observed) -> list[tuple[Any, ...]]:
    """What callers get for WORKLOAD, without the per-request decision id."""
    seen: list[tuple[Any, ...]] = []
    for request in WORKLOAD:
        try:
            reply = await obs.stub.Chat(request)
        except grpc.aio.AioRpcError as exc:
            seen.append(("error", exc.code(), exc.details()))
            continue
        route = pb.RouteInfo()
        route.CopyFrom(reply.route)
        route.decision_id = ""
        seen.append((reply.content, reply.finish_reason, route.SerializeToString()))
    return seen


@pytest.mark.parametrize("broken", ["does not compile", "fails to evaluate", "raises"])
async def test_a_broken_shadow_keeps_the_live_answers_unchanged(
    tmp_path: Path,
    ollama: FakeOllama,
    cloud: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    broken: str,
) -> None:
    async with observed_gateway(config(ollama, cloud, None), tmp_path / "plain") as obs:
        expected = await answers(obs)
    assert [a[0] for a in expected][-1] == "error"  # the workload includes a refusal

    text = {"does not compile": "name: [", "fails to evaluate": FAILS, "raises": TO_CLOUD}
    shadow = shadow_folder(tmp_path / "shadow", text[broken])
    if broken == "raises":

        def explode(*args: object) -> ShadowResult:
            raise RuntimeError("boom")

        monkeypatch.setattr("gateway.policy.shadow.what_if", explode)
    async with observed_gateway(config(ollama, cloud, shadow), tmp_path / "shadowed") as obs:
        assert await answers(obs) == expected
        shadows = [line["shadow"] for line in obs.decisions()]
    assert len(shadows) == len(WORKLOAD)
    for recorded in shadows:
        if broken == "does not compile":
            assert recorded["error"] == "no_policy"
        elif broken == "fails to evaluate":
            assert recorded["refused"] == "POLICY_EVALUATION_FAILED"
        else:
            assert recorded["error"] == "RuntimeError"
        assert recorded["model"] is None


async def test_an_edited_shadow_is_hot_reloaded(
    tmp_path: Path, ollama: FakeOllama, cloud: FakeOpenAI
) -> None:
    shadow = shadow_folder(tmp_path / "shadow", TO_CLOUD)
    async with observed_gateway(config(ollama, cloud, shadow, watch=True), tmp_path) as obs:
        first = await obs.stub.Chat(chat("hello"))
        assert obs.decisions()[-1]["shadow"]["model"] == "cloud"
        old = obs.decisions()[-1]["shadow"]["revision"]
        await asyncio.sleep(0.3)  # the watcher is running
        shadow_folder(shadow, TO_LOCAL)
        for _ in range(100):
            await obs.stub.Chat(chat("hello"))
            if obs.decisions()[-1]["shadow"]["model"] == "local":
                break
            await asyncio.sleep(0.1)
        latest = obs.decisions()[-1]["shadow"]
        assert latest["model"] == "local" and latest["revision"] != old
        assert latest["rule"] == "shadow/1"
        # A broken edit keeps the last good shadow, and the live route never moved.
        shadow_folder(shadow, "name: [")
        await asyncio.sleep(1.0)
        again = await obs.stub.Chat(chat("hello"))
        assert obs.decisions()[-1]["shadow"]["revision"] == latest["revision"]
        assert again.route.model == first.route.model == "local"
