"""Upstream doubles shared by the integration tests: one of each per test module (they are
reset by the tests that script them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture(scope="module")
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="module")
def local() -> Iterator[FakeOllama]:
    """A second Ollama, for tests that name their local model `local`."""
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake
