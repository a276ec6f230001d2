"""Route, the dry run, is rate limited by a bucket of its own: a tenant limited to 5 requests
a minute gets 5 Route calls through, not 20, and its chat allowance is untouched (in one
process, and with the buckets in a real Redis shared by replicas)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.v1 import gateway_pb2 as pb
from tests.fakes._server import Reply
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, openai_model, serve, status_detail
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration


def _route() -> pb.RouteRequest:
    return pb.RouteRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="hi")], preferred_model="cloud"
    )


async def _routes(stub: Any, count: int) -> tuple[int, list[grpc.aio.AioRpcError]]:
    passed, refused = 0, []
    for _ in range(count):
        try:
            await stub.Route(_route(), timeout=10)
            passed += 1
        except grpc.aio.AioRpcError as exc:
            refused.append(exc)
    return passed, refused


@pytest.mark.parametrize("backend", ["memory", "redis"])
@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ({"requests_per_minute": 5}, 5),
        ({"requests_per_minute": 5, "route_requests_per_minute": 2}, 2),
    ],
)
async def test_route_is_rate_limited(
    backend: str,
    limit: dict[str, int],
    expected: int,
    request: pytest.FixtureRequest,
    cloud: FakeOpenAI,
) -> None:
    cloud.reset()
    top: dict[str, Any] = {"tenants": {"default": {"rate_limit": limit}}}
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        top["ledger"] = {"backend": "redis", "url": server.url, "journal_path": "/tmp/j.db"}
    config = make_config({"cloud": openai_model(cloud.url)}, "cloud", **top)
    async with serve(config) as (_, stub):
        passed, refused = await _routes(stub, 20)
        assert (passed, len(refused)) == (expected, 20 - expected)
        for exc in refused:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "route_requests_per_minute" in (exc.details() or "")
            retry = status_detail(exc, error_details_pb2.RetryInfo).retry_delay
            assert retry.seconds + retry.nanos / 1e9 > 0
        # Explaining did not use up the chat allowance: all 5 chat calls go through.
        cloud.enqueue(*[Reply(content="ok")] * 5)
        for _ in range(5):
            chat = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="hi")])
            chat.preferred_model = "cloud"
            await stub.Chat(chat, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as sixth:
            await stub.Chat(chat, timeout=10)
        assert "requests_per_minute" in (sixth.value.details() or "")
