"""PolicyStore: load, reload, last known good, file watching."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from gateway.policy import PolicyError, PolicyStore


def policy(model: str) -> str:
    return f"name: p\nrule:\n  match:\n    - output: 'RouteDecision{{model: \"{model}\"}}'\n"


TESTS = """\
section:
  - name: s
    tests:
      - name: routes_to_a
        output: {expr: 'RouteDecision{model: "a"}'}
"""


def test_load_then_valid_reload_swaps(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(policy("a"))
    seen: list[tuple[str | None, str | None]] = []
    store = PolicyStore(tmp_path, on_change=lambda p, e: seen.append((p and p.revision, e)))
    store.load()
    first = store.current
    assert first is not None and store.last_error is None
    assert store.reload() is False  # unchanged content: nothing to do
    (tmp_path / "policy.yaml").write_text(policy("b"))
    assert store.reload() is True
    assert store.current is not None and store.current.revision != first.revision
    assert len(seen) == 2 and seen[-1][1] is None


def test_invalid_policy_keeps_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "policy.yaml").write_text(policy("a"))
    store = PolicyStore(tmp_path)
    store.load()
    good = store.current
    (tmp_path / "policy.yaml").write_text(policy("a").replace("RouteDecision{", "RouteDecison{"))
    assert store.reload() is False
    assert store.current is good
    assert store.last_error is not None and "policy.yaml:4:" in store.last_error
    assert "policy reload failed, still serving revision" in caplog.text
    (tmp_path / "policy.yaml").write_text(policy("c"))
    assert store.reload() is True and store.last_error is None


def test_failing_tests_keep_last_good(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(policy("a"))
    (tmp_path / "tests.yaml").write_text(TESTS)
    store = PolicyStore(tmp_path)
    store.load()
    good = store.current
    (tmp_path / "policy.yaml").write_text(policy("b"))
    assert store.reload() is False
    assert store.current is good
    assert store.last_error is not None and "1 of 1 policy tests failed" in store.last_error


def test_initial_load_failure_raises(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("name: p\n")
    store = PolicyStore(tmp_path)
    with pytest.raises(PolicyError, match="policy needs a 'rule'"):
        store.load()
    assert store.current is None and store.last_error is not None


async def _wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for reload"
        await asyncio.sleep(0.05)


async def test_watch_reloads_on_change_and_configmap_swap(tmp_path: Path) -> None:
    # Kubernetes layout: policy.yaml -> ..data/policy.yaml, ..data -> ..v1 (swapped atomically).
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "policy.yaml").write_text(policy("a"))
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/policy.yaml", tmp_path / "policy.yaml")
    store = PolicyStore(tmp_path, debounce_ms=50)
    store.load()
    stop = asyncio.Event()
    task = asyncio.create_task(store.watch(stop))
    try:
        await asyncio.sleep(0.3)
        (tmp_path / "..v2").mkdir()
        (tmp_path / "..v2" / "policy.yaml").write_text(policy("b"))
        os.symlink("..v2", tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        await _wait_for(lambda: store.current is not None and "b" in _model(store))
        (tmp_path / "..v2" / "policy.yaml").write_text("name: broken\n")
        await _wait_for(lambda: store.last_error is not None)
        assert "b" in _model(store)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def _model(store: PolicyStore) -> str:
    from datetime import UTC, datetime

    from gateway.v1 import policy_pb2

    assert store.current is not None
    decision = store.current.evaluate(
        policy_pb2.PolicyRequest(), policy_pb2.BudgetState(), {}, datetime.now(UTC)
    )
    return decision.model


async def test_watch_outlives_a_reload_that_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "policy.yaml").write_text(policy("a"))
    store = PolicyStore(tmp_path, debounce_ms=50)
    store.load()
    real = store.reload
    calls: list[int] = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("not foreseen")
        return real()

    monkeypatch.setattr(store, "reload", flaky)
    stop = asyncio.Event()
    task = asyncio.create_task(store.watch(stop))
    try:
        await asyncio.sleep(0.3)
        (tmp_path / "policy.yaml").write_text(policy("b"))
        await _wait_for(lambda: bool(calls))
        assert "policy reload failed unexpectedly; still watching" in caplog.text
        (tmp_path / "policy.yaml").write_text(policy("c"))
        await _wait_for(lambda: _model(store) == "c")
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_watch_restarts_when_the_folder_is_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "policy.yaml").write_text(policy("a"))
    store = PolicyStore(folder, debounce_ms=50)
    store.load()
    stop = asyncio.Event()
    task = asyncio.create_task(store.watch(stop, retry_s=0.1))
    try:
        await asyncio.sleep(0.3)
        shutil.rmtree(folder)
        await _wait_for(lambda: store.last_error is not None)
        assert _model(store) == "a"  # the last good revision keeps serving
        folder.mkdir()
        (folder / "policy.yaml").write_text(policy("b"))
        await _wait_for(lambda: _model(store) == "b" and store.last_error is None)
        assert "is gone; waiting for it" in caplog.text
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def test_unexpected_load_failure_is_a_policy_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "policy.yaml").write_text(policy("a"))
    store = PolicyStore(tmp_path)

    def broken(*_args: object) -> None:
        raise KeyError("internal")

    monkeypatch.setattr("gateway.policy.store.compile_policy", broken)
    with pytest.raises(PolicyError, match="could not be loaded: KeyError"):
        store.load()
    assert store.last_error is not None and "policy.yaml:1:1" in store.last_error


def test_a_config_yaml_in_the_served_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(policy("a"))
    store = PolicyStore(tmp_path)
    store.load()
    (tmp_path / "config.yaml").write_text("name: s\nvariables:\n  - name: x\n    type_name: int\n")
    assert store.reload() is False
    assert store.last_error is not None
    assert "config.yaml:1:1: the gateway serves policies in its own environment" in (
        store.last_error
    )
    (tmp_path / "config.yaml").unlink()
    assert store.reload() is True and store.last_error is None
