"""A caller that goes away mid-stream over HTTP stops the upstream call, the request is recorded
as cancelled and its reservation is settled, as when a gRPC caller cancels."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.fakes._server import Reply
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, openai_model, serve

pytestmark = pytest.mark.integration


async def test_disconnect_mid_stream_cancels_upstream_and_is_recorded(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    with FakeOpenAI() as cloud:
        cloud.set_latency(between_chunks=0.2)
        cloud.enqueue(Reply(content=" ".join(f"w{i}" for i in range(40))))
        priced = {"input_per_mtok": 0.0, "output_per_mtok": 10.0}
        config = make_config(
            {"local": openai_model(cloud.url, price=priced)},
            "local",
            http={"listen": "127.0.0.1:0"},
            audit={"decision_log": str(log)},
            budgets=[{"tenant": "*", "window": "day", "limit_usd": 100}],
        )
        async with serve(config) as (gateway, _):
            assert gateway.http is not None
            url = f"http://127.0.0.1:{gateway.http.port}/v1/chat/completions"
            body = {"messages": [{"role": "user", "content": "count"}], "stream": True}
            async with aiohttp.ClientSession() as session:
                response = await session.post(url, json=body)
                assert response.status == 200
                await response.content.readuntil(b"\n\n")  # the first chunk
                response.close()  # the caller goes away
            assert await asyncio.to_thread(cloud.wait_for_disconnects, 1, 5.0)
            for _ in range(50):
                if log.exists() and log.read_text().strip():
                    break
                await asyncio.sleep(0.1)
            await gateway.pipeline.settlements.drain()
            budget = await gateway.pipeline.ledger.snapshot("default", {})
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["status"] == "CANCELLED"
    assert record["rpc"] == "ChatStream"
    assert record["attempts"][0]["error"] == "cancelled"
    # The reservation is settled, not left holding the budget (as for a cancelled gRPC stream).
    assert budget.reserved_usd == 0
    assert cloud.completed == 0
