"""The data-residency invariant as pure functions (gateway/enforce.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ModelConfig
from gateway.enforce import Dropped, enforce, judge, redaction_floor, refusal, to_redact, violation
from gateway.errors import PermissionDenied
from gateway.inspect.findings import Finding, Location
from gateway.levels import Level


def model(location: str, clearance: str) -> ModelConfig:
    data: dict[str, Any] = {
        "provider": "ollama" if location == "on_prem" else "openai",
        "upstream_model": "m",
        "base_url": "http://127.0.0.1:1",
        "location": location,
        "clearance": clearance,
    }
    return ModelConfig.model_validate(data)


MODELS = {
    "local": model("on_prem", "RESTRICTED"),
    "local-conf": model("on_prem", "CONFIDENTIAL"),
    "cloud": model("cloud", "INTERNAL"),
    "cloud-public": model("cloud", "PUBLIC"),
}


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("alias", sorted(MODELS))
def test_violation_iff_clearance_below_classification(alias: str, level: Level) -> None:
    refused = violation(alias, MODELS[alias], level)
    assert (refused is not None) == (MODELS[alias].clearance < level)
    if refused is not None:
        assert alias in refused and level.name in refused


def test_refusal_reasons() -> None:
    assert refusal("nope", MODELS, Level.PUBLIC, None) == (
        "UNKNOWN_MODEL",
        "model 'nope' is not in the catalogue",
    )
    assert refusal("cloud", MODELS, Level.PUBLIC, ["local"])[0] == "MODEL_NOT_ALLOWED"  # type: ignore[index]
    assert refusal("cloud", MODELS, Level.RESTRICTED, None)[0] == "DATA_RESIDENCY"  # type: ignore[index]
    assert refusal("local", MODELS, Level.RESTRICTED, None) is None


def test_compliant_chain_is_kept_in_order_without_duplicates() -> None:
    result = enforce(["cloud", "local", "cloud", "local-conf"], MODELS, Level.INTERNAL)
    assert result.chain == ("cloud", "local", "local-conf")
    assert result.dropped == ()
    assert result.rerouted_from is None


def test_fallbacks_above_their_clearance_are_dropped_and_listed() -> None:
    result = enforce(["local", "cloud", "local-conf", "cloud-public"], MODELS, Level.RESTRICTED)
    assert result.chain == ("local",)
    assert [d.model for d in result.dropped] == ["cloud", "local-conf", "cloud-public"]
    assert all("RESTRICTED" in d.reason for d in result.dropped)


def test_deny_mode_refuses_a_primary_that_is_not_cleared() -> None:
    with pytest.raises(PermissionDenied) as info:
        enforce(["cloud", "local"], MODELS, Level.CONFIDENTIAL)
    error = info.value
    assert error.reason == "DATA_RESIDENCY"
    assert error.metadata == {"model": "cloud", "classification": "CONFIDENTIAL"}
    assert "'cloud'" in error.message and "CONFIDENTIAL" in error.message


def test_reroute_mode_puts_the_first_compliant_model_of_the_order_first() -> None:
    result = enforce(
        ["cloud", "local-conf", "cloud-public"],
        MODELS,
        Level.CONFIDENTIAL,
        on_violation="reroute",
        reroute_order=["cloud-public", "local", "local-conf"],
    )
    assert result.chain == ("local", "local-conf")
    assert result.rerouted_from == "cloud"
    assert result.dropped == (
        Dropped("cloud", violation("cloud", MODELS["cloud"], Level.CONFIDENTIAL) or ""),
        Dropped(
            "cloud-public",
            violation("cloud-public", MODELS["cloud-public"], Level.CONFIDENTIAL) or "",
        ),
    )


def test_reroute_keeps_a_compliant_primary() -> None:
    result = enforce(
        ["cloud"], MODELS, Level.INTERNAL, on_violation="reroute", reroute_order=["local"]
    )
    assert result.chain == ("cloud",) and result.rerouted_from is None


def test_reroute_without_a_compliant_model_is_refused() -> None:
    with pytest.raises(PermissionDenied) as info:
        enforce(
            ["cloud"],
            MODELS,
            Level.RESTRICTED,
            on_violation="reroute",
            reroute_order=["cloud-public", "local-conf"],
        )
    assert info.value.reason == "DATA_RESIDENCY"
    assert info.value.metadata["classification"] == "RESTRICTED"


def test_unknown_primary_is_refused_even_in_reroute_mode() -> None:
    with pytest.raises(PermissionDenied) as info:
        enforce(["ghost"], MODELS, Level.PUBLIC, on_violation="reroute", reroute_order=["local"])
    assert info.value.reason == "UNKNOWN_MODEL"


def test_tenant_allowed_models_narrow_the_chain() -> None:
    result = enforce(["local", "cloud"], MODELS, Level.PUBLIC, allowed=["local"])
    assert result.chain == ("local",)
    with pytest.raises(PermissionDenied) as info:
        enforce(["cloud"], MODELS, Level.PUBLIC, allowed=["local"])
    assert info.value.reason == "MODEL_NOT_ALLOWED"


def test_judge_lists_every_distinct_candidate_with_its_refusal() -> None:
    verdicts = judge(
        ["cloud", "local", "cloud", "nope"], MODELS, Level.RESTRICTED, {"cloud", "local"}
    )
    assert [alias for alias, _ in verdicts] == ["cloud", "local", "nope"]
    assert (verdicts[0][1] is not None and verdicts[0][1][0] == "MODEL_NOT_ALLOWED") or (
        verdicts[0][1] is not None and verdicts[0][1][0] == "DATA_RESIDENCY"
    )
    assert verdicts[1][1] is None
    assert verdicts[2][1] is not None and verdicts[2][1][0] == "UNKNOWN_MODEL"
    # enforce() with the same verdicts decides exactly as it does without them.
    chain = ["local", "cloud"]
    given = enforce(
        chain, MODELS, Level.RESTRICTED, verdicts=judge(chain, MODELS, Level.RESTRICTED)
    )
    assert given == enforce(chain, MODELS, Level.RESTRICTED)


def _finding(detector: str, level: Level, located: bool = True) -> Finding:
    locations = (Location("messages[0].content", 0, 1),) if located else ()
    return Finding(detector, level, 1, locations)


REDACTABLE = ("pii.email", "pii.person")


def test_redaction_floor_keeps_what_cannot_be_redacted() -> None:
    email = _finding("pii.email", Level.CONFIDENTIAL)
    card = _finding("pii.card", Level.RESTRICTED)
    floor = redaction_floor
    assert floor([email], None, REDACTABLE, Level.CONFIDENTIAL) == Level.PUBLIC
    assert floor([email], Level.INTERNAL, REDACTABLE, Level.CONFIDENTIAL) == Level.INTERNAL
    assert floor([email, card], None, REDACTABLE, Level.CONFIDENTIAL) == Level.RESTRICTED
    # above max_level, or with nothing to replace: stays
    assert floor([email], None, REDACTABLE, Level.INTERNAL) == Level.CONFIDENTIAL
    unlocated = _finding("pii.email", Level.CONFIDENTIAL, located=False)
    assert floor([unlocated], None, REDACTABLE, Level.CONFIDENTIAL) == Level.CONFIDENTIAL
    assert to_redact([email, _finding("pii.ip", Level.INTERNAL)], Level.INTERNAL) == (email,)


def test_a_redactable_primary_is_kept_and_marked_instead_of_denied() -> None:
    result = enforce(["cloud", "local"], MODELS, Level.CONFIDENTIAL, redaction_floor=Level.INTERNAL)
    assert result.chain == ("cloud", "local")
    assert result.redacted == frozenset({"cloud"})
    assert result.rerouted_from is None
    # a floor above the cloud's clearance changes nothing: denied as without redaction
    with pytest.raises(PermissionDenied) as denied:
        enforce(["cloud"], MODELS, Level.CONFIDENTIAL, redaction_floor=Level.CONFIDENTIAL)
    assert denied.value.reason == "DATA_RESIDENCY"


def test_redaction_never_lifts_a_model_list_refusal() -> None:
    with pytest.raises(PermissionDenied) as denied:
        enforce(
            ["cloud"],
            MODELS,
            Level.CONFIDENTIAL,
            allowed=["local"],
            redaction_floor=Level.PUBLIC,
        )
    assert denied.value.reason == "MODEL_NOT_ALLOWED"


def test_reroute_prefers_a_cleared_substitute_then_a_redactable_one() -> None:
    cleared = enforce(
        ["cloud-public"],
        MODELS,
        Level.CONFIDENTIAL,
        allowed=["cloud", "local", "cloud-public"],
        on_violation="reroute",
        reroute_order=["cloud", "local"],
        redaction_floor=Level.CONFIDENTIAL,
    )
    assert cleared.chain[0] == "local" and not cleared.redacted
    redacted = enforce(
        ["cloud-public"],
        MODELS,
        Level.CONFIDENTIAL,
        allowed=["cloud", "cloud-public"],
        on_violation="reroute",
        reroute_order=["cloud"],
        redaction_floor=Level.INTERNAL,
    )
    assert redacted.chain == ("cloud",) and redacted.redacted == frozenset({"cloud"})
