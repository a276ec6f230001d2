"""Upstream doubles shared by the integration tests: one of each per test module (they are
reset by the tests that script them). Every test under this folder carries the `integration`
marker, so `make unit` (`pytest -m "not integration"`) leaves them out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


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
