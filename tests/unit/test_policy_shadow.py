"""The shadow policy holder: evaluation with the live inputs, never raising, its tests run on
load, reload keeping the last good revision, and deferred evaluation off the request path.
(A running gateway with a shadow is in tests/integration/test_policy_shadow.py.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import Config, parse_config
from gateway.policy.shadow import AGREE, DISAGREE, ERROR, REFUSED, ShadowPolicy, ShadowResult
from gateway.policy.whatif import catalogue
from gateway.pricing import Pricing
from gateway.v1 import policy_pb2
from tests.unit.test_policy_replay import CHEAP, config_data, request, usd, write_policy

NOW = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
TO_CHEAP = "    - output: 'RouteDecision{model: \"cheap\"}'\n"
TO_LOCAL = "    - output: 'RouteDecision{model: \"local\"}'\n"
# Fails at evaluation time: the label is absent.
FAILS = "    - output: 'RouteDecision{model: request.labels[\"absent\"]}'\n"


@pytest.fixture
def config() -> Config:
    return parse_config(config_data())


def shadow_of(folder: Path, config: Config) -> ShadowPolicy:
    shadow = ShadowPolicy(folder, config, Pricing.from_config(config))
    shadow.load()
    return shadow


def evaluate(shadow: ShadowPolicy, config: Config, **fields: object) -> ShadowResult:
    models = catalogue(config, shadow.pricing, lambda alias: True)
    return shadow.evaluate(request(**fields), policy_pb2.BudgetState(), models, NOW)


def test_shadow_routes_and_estimates_the_reservation(tmp_path: Path, config: Config) -> None:
    shadow = shadow_of(write_policy(tmp_path / "s", TO_CHEAP), config)
    result = evaluate(shadow, config)
    assert shadow.current is not None
    assert (result.model, result.rule, result.revision) == (
        "cheap",
        "cand/1",
        shadow.current.revision,
    )
    assert result.estimated_cost_usd == pytest.approx(usd(100, 1000, CHEAP), abs=1e-15)
    assert result.agreement("cheap") == AGREE and result.agreement("local") == DISAGREE
    assert result.to_json() == {
        "model": "cheap",
        "rule": "cand/1",
        "revision": shadow.current.revision,
        "estimated_cost_usd": result.estimated_cost_usd,
    }
    refused = evaluate(shadow, config, classification=policy_pb2.CLASSIFICATION_RESTRICTED)
    assert (refused.model, refused.refused, refused.label) == (None, "DATA_RESIDENCY", REFUSED)
    assert refused.agreement(None) == AGREE  # both refuse


def test_a_broken_shadow_records_an_error_and_never_raises(tmp_path: Path, config: Config) -> None:
    missing = shadow_of(tmp_path / "nowhere", config)  # load failure: logged, not raised
    assert missing.current is None and missing.last_error is not None
    result = evaluate(missing, config)
    assert (result.error, result.label, result.agreement("cheap")) == ("no_policy", ERROR, ERROR)
    failing = shadow_of(write_policy(tmp_path / "f", FAILS), config)
    failed = evaluate(failing, config)
    assert (failed.model, failed.refused) == (None, "POLICY_EVALUATION_FAILED")


def test_an_unexpected_failure_is_contained(
    tmp_path: Path, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = shadow_of(write_policy(tmp_path / "s", TO_CHEAP), config)

    def explode(*args: object) -> None:
        raise ZeroDivisionError("request value 4111111111111111")

    monkeypatch.setattr("gateway.policy.shadow.what_if", explode)
    result = evaluate(shadow, config)
    assert result.error == "ZeroDivisionError"
    assert "4111" not in str(result.to_json())  # the kind only, never the text


def test_shadow_tests_run_on_load_and_reload_keeps_the_last_good(
    tmp_path: Path, config: Config
) -> None:
    expects_cheap = """\
section:
  - name: s
    tests:
      - name: cheap
        output: {expr: 'RouteDecision{model: "cheap"}'}
"""
    folder = write_policy(tmp_path / "s", TO_CHEAP, tests=expects_cheap)
    shadow = shadow_of(folder, config)
    first = shadow.current
    assert first is not None
    write_policy(folder, TO_LOCAL)  # its tests now fail: not loaded
    assert shadow.store.reload() is False
    assert shadow.current is first and shadow.last_error is not None
    (folder / "tests.yaml").unlink()
    assert shadow.store.reload() is True
    assert evaluate(shadow, config).model == "local"


async def test_defer_runs_on_the_loop_before_it_is_read(tmp_path: Path, config: Config) -> None:
    shadow = shadow_of(write_policy(tmp_path / "s", TO_CHEAP), config)
    models = catalogue(config, shadow.pricing, lambda alias: True)
    pending = shadow.defer(request(), policy_pb2.BudgetState(), models, NOW)
    assert not pending.done  # nothing evaluated on the caller's path
    await asyncio.sleep(0)
    assert pending.done and pending.result().model == "cheap"
    # Read before the loop ran it (a request refused without awaiting): computed then.
    eager = shadow.defer(request(), policy_pb2.BudgetState(), models, NOW)
    assert eager.result().model == "cheap"


async def test_watch_hot_reloads_the_shadow(tmp_path: Path, config: Config) -> None:
    folder = write_policy(tmp_path / "s", TO_CHEAP)
    shadow = ShadowPolicy(folder, config, Pricing.from_config(config), debounce_ms=20)
    shadow.load()
    stop = asyncio.Event()
    task = asyncio.create_task(shadow.watch(stop))
    try:
        await asyncio.sleep(0.3)
        write_policy(folder, TO_LOCAL)
        for _ in range(100):
            if evaluate(shadow, config).model == "local":
                break
            await asyncio.sleep(0.05)
        assert evaluate(shadow, config).model == "local"
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
