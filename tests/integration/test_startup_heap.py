"""`celgate serve` keeps the objects start-up built out of later garbage collections
(`server.freeze_startup_heap`): a full collection then walks only what serving allocated."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import Iterator

import pytest

from gateway.server import serve
from tests.harness import make_config, ollama_model


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


async def test_serve_freezes_the_start_up_heap_and_a_full_collection_skips_it(
    thawed: None,
) -> None:
    config = make_config({"local": ollama_model("http://127.0.0.1:9")}, "local")
    assert gc.get_freeze_count() == 0
    task = asyncio.create_task(serve(config))
    deadline = time.monotonic() + 60
    while gc.get_freeze_count() == 0:  # serving: start-up is over
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, "the gateway did not finish starting"
        await asyncio.sleep(0.05)
    frozen = gc.get_freeze_count()
    # The policy, detectors and models of a started gateway: tens of thousands of objects.
    assert frozen > 10_000
    assert len(gc.get_objects()) < frozen / 10  # what a full collection still walks
    os.kill(os.getpid(), signal.SIGTERM)  # drain and stop, as an operator would
    await asyncio.wait_for(task, 30)
