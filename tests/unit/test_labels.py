"""Promoted request labels: the allow-list, the cap on distinct values, and values that look like
content never becoming a label value."""

from __future__ import annotations

import threading

import pytest

from gateway.config import InspectionConfig, LabelsConfig, parse_config
from gateway.labels import OTHER, LabelPromoter, content_screen, promoter_for

SCREEN = content_screen(InspectionConfig())


def test_only_listed_keys_are_promoted() -> None:
    promoter = LabelPromoter(["project", "team"], 10)
    assert promoter.promote({"project": "atlas", "feature": "search", "route": "x"}) == {
        "project": "atlas"
    }
    assert promoter.promote({}) == {}
    assert LabelPromoter([], 10).promote({"project": "atlas"}) == {}


def test_values_beyond_the_cap_are_other_and_kept_values_stay() -> None:
    promoter = LabelPromoter(["project"], 2)
    seen = [promoter.promote({"project": v})["project"] for v in ("a", "b", "c", "a", "d", "b")]
    assert seen == ["a", "b", OTHER, "a", OTHER, "b"]


def test_the_cap_is_per_key() -> None:
    promoter = LabelPromoter(["project", "team"], 1)
    assert promoter.promote({"project": "a", "team": "x"}) == {"project": "a", "team": "x"}
    assert promoter.promote({"project": "b", "team": "x"}) == {"project": OTHER, "team": "x"}


@pytest.mark.parametrize(
    "value",
    [
        "jane.roe@acme-corp.io",  # not identifier-shaped
        "John Smith",
        "4111111111111111",  # a card number: identifier-shaped, caught by the detectors
        "123-45-6789",  # a US SSN
        "DE89370400440532013000",  # an IBAN
        "AKIA2E0A8F3B244C9986",  # an AWS access key id
        "x" * 65,
        "",
        "-leading",
    ],
)
def test_values_that_may_carry_content_are_other(value: str) -> None:
    promoter = LabelPromoter(["project"], 50, SCREEN)
    assert promoter.promote({"project": value}) == {"project": OTHER}


@pytest.mark.parametrize("value", ["atlas", "team-7", "checkout_v2", "eu.west:prod", "a/b+c"])
def test_identifier_values_pass(value: str) -> None:
    assert LabelPromoter(["project"], 50, SCREEN).promote({"project": value}) == {"project": value}


def test_refused_values_do_not_use_up_the_cap() -> None:
    promoter = LabelPromoter(["project"], 1, SCREEN)
    assert promoter.promote({"project": "jane.roe@acme-corp.io"}) == {"project": OTHER}
    assert promoter.promote({"project": "atlas"}) == {"project": "atlas"}


def test_a_failing_screen_refuses_without_failing_the_request() -> None:
    def broken(value: str) -> bool:
        raise RuntimeError("detector down")

    promoter = LabelPromoter(["project"], 5, broken)
    assert promoter.promote({"project": "atlas"}) == {"project": OTHER}


def test_concurrent_promotion_never_keeps_more_than_the_cap() -> None:
    promoter = LabelPromoter(["project"], 10)
    results: list[str] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        for i in range(200):
            value = promoter.promote({"project": f"v{(offset + i) % 100}"})["project"]
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work, args=(n * 7,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results) - {OTHER}) == 10


def test_promoter_for_reads_the_config() -> None:
    config = parse_config(
        {
            "models": {
                "m": {
                    "provider": "ollama",
                    "upstream_model": "llama3.1:8b",
                    "base_url": "http://127.0.0.1:11434",
                    "location": "on_prem",
                    "clearance": "RESTRICTED",
                }
            },
            "default_model": "m",
            "telemetry": {"labels": {"promote": ["project"], "max_values": 3}},
        }
    )
    promoter = promoter_for(config)
    assert promoter.keys == ("project",) and promoter.max_values == 3
    assert promoter.promote({"project": "4111111111111111"}) == {"project": OTHER}
    assert LabelsConfig().promote == [] and LabelsConfig().max_values == 50
