"""One caller cannot stall the others: while a large request is being inspected, small calls
are answered (the inspection runs on a worker thread, not on the event loop), and one tenant's
large requests in flight are bounded (RESOURCE_EXHAUSTED beyond the bound) without touching
another tenant.

The large request's inspection is held open by the test (it waits for an event the test sets
only after a small call was answered), so "while" is exact, not a matter of timing: with
inspection on the event loop the small call could not be answered at all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.auth import hash_key
from gateway.v1 import gateway_pb2 as pb
from tests.fakes._server import refused_url
from tests.harness import make_config, ollama_model, serve, status_detail

pytestmark = pytest.mark.integration

LARGE = 50_000  # characters; above offload_min_chars below
KEY_A, KEY_B = "cg_tenant_a_" + "a" * 30, "cg_tenant_b_" + "b" * 30


def _route(chars: int) -> pb.RouteRequest:
    return pb.RouteRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="word " * (chars // 5))],
        preferred_model="local",
    )


def _auth(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def _hold_large_inspections(gateway: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make inspections of large requests wait for `release()`; record their threads."""
    inspector = gateway.pipeline.inspector
    original = inspector.inspect
    gate = threading.Event()
    started = threading.Event()
    threads: list[str] = []

    def held(params: Any, **kwargs: Any) -> Any:
        if sum(len(m.content) for m in params.messages) >= LARGE:
            threads.append(threading.current_thread().name)
            started.set()
            gate.wait(10)
        return original(params, **kwargs)

    monkeypatch.setattr(inspector, "inspect", held)
    held.started = started  # type: ignore[attr-defined]
    held.threads = threads  # type: ignore[attr-defined]
    gateway.held = held
    return gate.set


async def test_small_calls_are_answered_while_a_large_one_is_inspected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with refused_url() as url:
        config = make_config(
            {"local": ollama_model(url)},
            "local",
            limits={"offload_min_chars": 10_000, "max_inflight_chars_per_tenant": 120_000},
            auth={
                "mode": "api_key",
                "api_keys": [
                    {"tenant": "team-a", "sha256": hash_key(KEY_A)},
                    {"tenant": "team-b", "sha256": hash_key(KEY_B)},
                ],
            },
        )
        async with serve(config) as (gateway, stub):
            release = _hold_large_inspections(gateway, monkeypatch)
            try:
                first = asyncio.ensure_future(
                    stub.Route(_route(LARGE), metadata=_auth(KEY_A), timeout=30)
                )
                assert await asyncio.to_thread(gateway.held.started.wait, 10)
                # The large inspection is in progress; small calls of both tenants answer.
                for key in (KEY_A, KEY_B):
                    small = await stub.Route(_route(100), metadata=_auth(key), timeout=5)
                    assert small.route.model == "local"
                # Tenant a's second large request fits its bound (100,000 of 120,000
                # characters); the third does not, tenant b's does.
                second = asyncio.ensure_future(
                    stub.Route(_route(LARGE), metadata=_auth(KEY_A), timeout=30)
                )
                await asyncio.sleep(0.2)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Route(_route(LARGE), metadata=_auth(KEY_A), timeout=5)
                other = asyncio.ensure_future(
                    stub.Route(_route(LARGE), metadata=_auth(KEY_B), timeout=30)
                )
            finally:
                release()
            for call in (first, second, other):
                assert (await call).route.model == "local"
        assert all(name.startswith("celgate-cpu") for name in gateway.held.threads)
        assert len(gateway.held.threads) == 3
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limits.max_inflight_chars_per_tenant" in (refused.value.details() or "")
    info = status_detail(refused.value, error_details_pb2.ErrorInfo)
    assert info.reason == "INFLIGHT_LIMIT"
