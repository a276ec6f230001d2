"""The fallback chain, circuit breakers and the deadline, end to end: the real gateway over real
gRPC, the upstream doubles over real HTTP with injected failures. Whatever fails, sensitive
content never reaches the cloud double (counted at the double)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from gateway.server import Gateway
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import Failure, Planned, refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import ROOT, make_config, ollama_model, openai_model, serve

pytestmark = pytest.mark.integration

Stub = gateway_pb2_grpc.GatewayServiceStub
SSN = "123-45-6789"


def fullwidth(text: str) -> str:
    """Digits as their full-width forms (U+FF10..U+FF19), which NFKC folds back."""
    return text.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})


class ManualClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def local2() -> Iterator[FakeOllama]:
    fake = FakeOllama()
    with fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(local: FakeOllama, local2: FakeOllama, cloud: FakeOpenAI) -> None:
    for fake in (local, local2, cloud):
        fake.reset()


def catalogue(local: FakeOllama, local2: FakeOllama, cloud: FakeOpenAI) -> dict[str, Any]:
    return {
        "local": ollama_model(local.url),
        "local2": ollama_model(local2.url, upstream_model="qwen3:8b"),
        "cloud": openai_model(cloud.url),
    }


@pytest.fixture
async def gateway(
    local: FakeOllama, local2: FakeOllama, cloud: FakeOpenAI
) -> AsyncIterator[tuple[Gateway, Stub, ManualClock]]:
    config = make_config(
        catalogue(local, local2, cloud),
        "local",
        dispatch={"max_attempts": 3, "breaker_failures": 3, "breaker_cooldown_s": 30},
    )
    clock = ManualClock()
    async with serve(config) as (gw, stub):
        gw.pipeline.dispatcher.breakers.clock = clock
        yield gw, stub, clock


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


def secret_request(fallbacks: str) -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[user(f"Update the record for SSN {SSN}.")], labels={"fallbacks": fallbacks}
    )


async def health(stub: Stub) -> dict[str, bool]:
    reply = await stub.ListModels(pb.ListModelsRequest())
    return {m.alias: m.healthy for m in reply.models}


# -- fallbacks and residency ------------------------------------------------------------------


async def test_down_local_primary_never_falls_back_to_the_cloud(
    local2: FakeOllama, cloud: FakeOpenAI
) -> None:
    with refused_url() as dead:
        models = {
            "local": ollama_model(dead),
            "local2": ollama_model(local2.url, upstream_model="qwen3:8b"),
            "cloud": openai_model(cloud.url),
        }
        async with serve(make_config(models, "local")) as (_, stub):
            # Sensitive: the cloud fallback is skipped, the on-prem one answers.
            reply = await stub.Chat(secret_request("cloud,local2"))
            assert (reply.route.model, reply.route.attempts) == ("local2", 2)
            # Sensitive with only the cloud left: UNAVAILABLE, nothing sent.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Chat(secret_request("cloud"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            details = info.value.details() or ""
            assert "local: connect" in details and "cloud" not in details
            assert "127.0.0.1" not in details and "http" not in details
            # Not sensitive: the same chain does use the cloud (the fallback works).
            public = await stub.Chat(
                pb.ChatRequest(messages=[user("Capital of France?")], labels={"fallbacks": "cloud"})
            )
            assert public.route.model == "cloud"
    assert cloud.request_count == 1
    assert cloud.bodies[0]["messages"][-1]["content"] == "Capital of France?"
    assert local2.request_count == 1


@pytest.mark.parametrize("failure", ["503", "429", "model_not_loaded", "drop"])
async def test_retryable_failure_falls_back_to_the_next_allowed_model(
    gateway: tuple[Gateway, Stub, ManualClock],
    local: FakeOllama,
    local2: FakeOllama,
    cloud: FakeOpenAI,
    failure: str,
) -> None:
    if failure == "drop":
        local.drop_next()
    elif failure == "model_not_loaded":
        local.fail_next(404, message='model "llama3.1:8b" not found, try pulling it first')
    else:
        local.fail_next(int(failure))
    _, stub, _ = gateway
    reply = await stub.Chat(secret_request("cloud,local2"))
    assert (reply.route.model, reply.route.attempts) == ("local2", 2)
    assert local.request_count == 1 and local2.request_count == 1
    assert cloud.request_count == 0


async def test_bad_request_returns_at_once_and_does_not_trip_the_breaker(
    gateway: tuple[Gateway, Stub, ManualClock], local: FakeOllama, local2: FakeOllama
) -> None:
    local.fail_next(400, count=5, message="invalid tool schema")
    _, stub, _ = gateway
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(pb.ChatRequest(messages=[user("hi")], labels={"fallbacks": "local2"}))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert local.request_count == 5 and local2.request_count == 0
    assert (await health(stub))["local"]
    reply = await stub.Chat(pb.ChatRequest(messages=[user("hi")]))
    assert reply.route.model == "local" and local.request_count == 6


async def test_attempt_cap_bounds_the_chain(
    local: FakeOllama, local2: FakeOllama, cloud: FakeOpenAI
) -> None:
    config = make_config(catalogue(local, local2, cloud), "local", dispatch={"max_attempts": 2})
    local.fail_next(503)
    local2.fail_next(503)
    async with serve(config) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(
                pb.ChatRequest(messages=[user("hi")], labels={"fallbacks": "local2,cloud"})
            )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "max_attempts" in (info.value.details() or "")
    assert (local.request_count, local2.request_count, cloud.request_count) == (1, 1, 0)


async def test_deadline_bounds_the_chain(
    local: FakeOllama, local2: FakeOllama, cloud: FakeOpenAI
) -> None:
    # Each model would wait 5 s for an answer; each takes its own 0.4 s timeout, so the chain
    # alone would run 1.2 s. The caller's 0.6 s deadline cuts it inside the second attempt.
    models = {
        "local": ollama_model(local.url, timeout_s=0.4),
        "local2": ollama_model(local2.url, upstream_model="qwen3:8b", timeout_s=0.4),
        "cloud": openai_model(cloud.url, timeout_s=0.4),
    }
    for fake in (local, local2, cloud):
        fake.set_latency(first_byte=5.0)
    config = make_config(models, "local", dispatch={"max_attempts": 3, "breaker_failures": 1})
    async with serve(config) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(
                pb.ChatRequest(messages=[user("hi")], labels={"fallbacks": "local2,cloud"}),
                timeout=0.6,
            )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The first model's own timeout counts against it; the second was cut by the caller's
        # deadline, which says nothing about that model.
        assert await health(stub) == {"local": False, "local2": True, "cloud": True}
    assert local.request_count == 1 and local2.request_count == 1
    assert cloud.request_count == 0
    assert local2.wait_for_disconnects(1)


# -- circuit breakers -------------------------------------------------------------------------


async def test_breaker_opens_skips_probes_and_recovers(
    gateway: tuple[Gateway, Stub, ManualClock],
    local: FakeOllama,
    local2: FakeOllama,
    cloud: FakeOpenAI,
) -> None:
    _, stub, clock = gateway
    local.fail_next(503, count=3)
    for _ in range(3):
        reply = await stub.Chat(secret_request("cloud,local2"))
        assert reply.route.model == "local2"
    assert local.request_count == 3
    assert not (await health(stub))["local"]

    # Open: the local model is skipped without a call, for sensitive content too.
    reply = await stub.Chat(secret_request("cloud,local2"))
    assert reply.route.model == "local2"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(secret_request("cloud"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "local: circuit_open" in (info.value.details() or "")
    assert local.request_count == 3

    # Still open just before the cool-down ends.
    clock.advance(29.9)
    await stub.Chat(secret_request("local2"))
    assert local.request_count == 3 and not (await health(stub))["local"]

    # Cool-down over: one probe; it fails, so the breaker re-opens for a full cool-down.
    clock.advance(0.1)
    assert (await health(stub))["local"]
    local.fail_next(503)
    reply = await stub.Chat(secret_request("local2"))
    assert reply.route.model == "local2" and local.request_count == 4
    assert not (await health(stub))["local"]
    await stub.Chat(secret_request("local2"))
    assert local.request_count == 4

    # Next cool-down: the probe succeeds and the breaker closes.
    clock.advance(30)
    reply = await stub.Chat(secret_request("local2"))
    assert reply.route.model == "local" and local.request_count == 5
    assert (await health(stub))["local"]
    reply = await stub.Chat(secret_request("local2"))
    assert reply.route.model == "local" and local.request_count == 6
    assert cloud.request_count == 0


async def test_half_open_breaker_lets_exactly_one_probe_through(
    gateway: tuple[Gateway, Stub, ManualClock], local: FakeOllama, local2: FakeOllama
) -> None:
    _, stub, clock = gateway
    local.fail_next(503, count=3)
    for _ in range(3):
        await stub.Chat(pb.ChatRequest(messages=[user("hi")], labels={"fallbacks": "local2"}))
    clock.advance(30)
    local.reset()
    local2.reset()
    local.set_latency(first_byte=0.5)  # the probe is still out while the others arrive
    replies = await asyncio.gather(
        *(
            stub.Chat(pb.ChatRequest(messages=[user("hi")], labels={"fallbacks": "local2"}))
            for _ in range(8)
        )
    )
    assert local.request_count == 1
    assert sorted(r.route.model for r in replies) == ["local"] + ["local2"] * 7
    assert (await health(stub))["local"]


async def test_policy_routes_around_an_open_breaker(local: FakeOllama, cloud: FakeOpenAI) -> None:
    # The test policy keeps only the healthy models of its chain a, b, local.
    models = {
        "a": openai_model(cloud.url, upstream_model="deepseek-chat"),
        "b": openai_model(cloud.url, upstream_model="gpt-5.5"),
        "local": ollama_model(local.url),
    }
    config = make_config(
        models,
        "local",
        policy={"dir": str(ROOT / "tests" / "policies" / "healthy"), "watch": False},
        dispatch={"breaker_failures": 1, "breaker_cooldown_s": 30},
    )
    clock = ManualClock()
    route_request = pb.RouteRequest(messages=[user("Write a sort function")])
    async with serve(config) as (gw, stub):
        gw.pipeline.dispatcher.breakers.clock = clock
        first = await stub.Route(route_request)
        assert (first.decision.model, list(first.decision.fallbacks)) == ("a", ["b", "local"])
        cloud.fail_next(503)
        reply = await stub.Chat(pb.ChatRequest(messages=[user("Write a sort function")]))
        assert reply.route.model == "b"
        assert [body["model"] for body in cloud.bodies] == ["deepseek-chat", "gpt-5.5"]
        assert not (await health(stub))["a"]
        route = await stub.Route(route_request)
        assert (route.decision.model, list(route.decision.fallbacks)) == ("b", ["local"])
        await stub.Chat(pb.ChatRequest(messages=[user("Write a sort function")]))
        assert [body["model"] for body in cloud.bodies][-1] == "gpt-5.5"
        clock.advance(30)
        assert (await stub.Route(route_request)).decision.model == "a"
    assert cloud.request_count == 3
    assert local.request_count == 0


# -- streaming --------------------------------------------------------------------------------


async def test_stream_falls_back_before_the_first_chunk_never_to_the_cloud(
    gateway: tuple[Gateway, Stub, ManualClock],
    local: FakeOllama,
    local2: FakeOllama,
    cloud: FakeOpenAI,
) -> None:
    _, stub, _ = gateway
    request = pb.ChatStreamRequest(
        messages=[user(f"Summarize the file of SSN {SSN}.")], labels={"fallbacks": "cloud,local2"}
    )
    local.fail_next(503)
    parts = [part async for part in stub.ChatStream(request)]
    assert parts[-1].route.model == "local2"
    # An error line before any content: still before the first chunk.
    local.fail_mid_stream(0)
    parts = [part async for part in stub.ChatStream(request)]
    assert parts[-1].route.model == "local2"
    # No on-prem fallback left: UNAVAILABLE, and the cloud is never tried.
    only_cloud = pb.ChatStreamRequest(messages=request.messages, labels={"fallbacks": "cloud"})
    local.fail_next(503)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [part async for part in stub.ChatStream(only_cloud)]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert local.request_count == 3 and local2.request_count == 2
    assert cloud.request_count == 0


async def test_stream_failure_after_the_first_chunk_does_not_fall_back(
    gateway: tuple[Gateway, Stub, ManualClock], local: FakeOllama, local2: FakeOllama
) -> None:
    _, stub, _ = gateway
    local.enqueue("one two three four five six")
    local.fail_mid_stream(2)
    received: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for part in stub.ChatStream(
            pb.ChatStreamRequest(messages=[user("count")], labels={"fallbacks": "local2"})
        ):
            received.append(part.content_delta)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "after the stream started" in (info.value.details() or "")
    assert "".join(received) == "one two "
    assert local2.request_count == 0


# -- chaos ------------------------------------------------------------------------------------


class _Flaky:
    """Mixed into a fake: each chat request fails at random (seeded) in one of several ways."""

    rng: random.Random
    rate: float

    def plan(self) -> Planned:
        planned: Planned = super().plan()  # type: ignore[misc]
        with self._lock:  # type: ignore[attr-defined]
            roll, kind = self.rng.random(), self.rng.choice(["503", "429", "drop", "500"])
        if roll >= self.rate:
            return planned
        failure = Failure("drop") if kind == "drop" else Failure("status", status=int(kind))
        return dataclasses.replace(planned, failure=failure)


class FlakyOllama(_Flaky, FakeOllama):
    def __init__(self, seed: int, rate: float) -> None:
        super().__init__()
        self.rng, self.rate = random.Random(seed), rate


class FlakyOpenAI(_Flaky, FakeOpenAI):
    def __init__(self, seed: int, rate: float) -> None:
        super().__init__()
        self.rng, self.rate = random.Random(seed), rate


def _sensitive(i: int, rng: random.Random) -> list[pb.Message]:
    tag = f"req-s-{i:03d}"
    variant = rng.randrange(5)
    if variant == 0:
        return [pb.Message(role=pb.ROLE_SYSTEM, content=f"{tag} customer SSN {SSN}"), user("hi")]
    if variant == 1:
        return [
            user(f"{tag} which key?"),
            pb.Message(role=pb.ROLE_ASSISTANT, content="AKIAZ7Q3XK2M5P8RTW4N"),
            user("thanks"),
        ]
    if variant == 2:
        return [user(f"{tag} SSN {fullwidth(SSN)}")]
    if variant == 3:
        return [user(f"{tag} SSN 123\u200b-45-\u200b6789")]
    call = pb.ToolCall(id="c1", name="file", arguments=json.dumps({"ssn": SSN, "tag": tag}))
    return [
        user("file it"),
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
        pb.Message(role=pb.ROLE_TOOL, content="ok", tool_call_id="c1", name="file"),
    ]


SECRET_MARKERS = ("req-s-", "6789", fullwidth("6789"), "AKIAZ7Q3XK2M5P8RTW4N")


async def test_concurrent_mixed_requests_under_random_failures_never_leak() -> None:
    rng = random.Random(5)
    with FlakyOllama(seed=11, rate=0.35) as local, FlakyOpenAI(seed=12, rate=0.35) as cloud:
        models = {"local": ollama_model(local.url), "cloud": openai_model(cloud.url)}
        config = make_config(
            models,
            "local",
            dispatch={"max_attempts": 3, "breaker_failures": 4, "breaker_cooldown_s": 0.05},
        )
        async with serve(config) as (_, stub):
            requests: list[tuple[bool, pb.ChatRequest]] = []
            for i in range(200):
                sensitive = rng.random() < 0.5
                fallbacks = rng.choice(["cloud", "", "cloud,local"])
                messages = (
                    _sensitive(i, rng)
                    if sensitive
                    else [user(f"req-p-{i:03d} what is the capital of France?")]
                )
                # Some ask for the cloud by name; the rest start on-prem.
                preferred = "cloud" if not sensitive and rng.random() < 0.3 else ""
                labels = {"fallbacks": fallbacks} if fallbacks else {}
                requests.append(
                    (
                        sensitive,
                        pb.ChatRequest(messages=messages, labels=labels, preferred_model=preferred),
                    )
                )

            async def send(request: pb.ChatRequest) -> pb.ChatResponse | grpc.StatusCode:
                try:
                    return await stub.Chat(request, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            outcomes = await asyncio.gather(*(send(r) for _, r in requests))

        bodies = [json.dumps(b, ensure_ascii=False) for b in cloud.bodies]
        assert bodies, "the cloud double was never reached: the test would prove nothing"
        for body in bodies:
            for marker in SECRET_MARKERS:
                assert marker not in body
        answered_by = {"local": 0, "cloud": 0}
        unavailable = {True: 0, False: 0}
        for (sensitive, _), outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, grpc.StatusCode):
                assert outcome == grpc.StatusCode.UNAVAILABLE, (sensitive, outcome)
                unavailable[sensitive] += 1
                continue
            answered_by[outcome.route.model] += 1
            if sensitive:
                assert outcome.route.model == "local"
        # The failures really happened, on both sides, and the fallbacks really answered.
        assert unavailable[True] > 0 and unavailable[False] > 0
        assert answered_by["local"] > 0 and answered_by["cloud"] > 0
        assert local.request_count > 0
