"""Detectors, effective classification, evasions, message roles, and value secrecy."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading

import pytest

from gateway.chat import ChatMessage, ChatParams, ToolCall
from gateway.config import InspectionConfig
from gateway.errors import InternalError
from gateway.inspect import Inspector, normalize
from gateway.inspect import validators as v
from gateway.inspect.classification import Classifier
from gateway.levels import Level
from tests.data.egress_cases import GITHUB

CARD = "4111 1111 1111 1111"
SSN = "123-45-6789"
EMAIL = "jane.roe@acme-corp.io"


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    return Inspector(
        InspectionConfig.model_validate(
            {
                "dictionaries": [
                    {"id": "codenames", "level": "CONFIDENTIAL", "terms": ["Project Falcon", "C++"]}
                ],
                "patterns": [{"id": "ticket", "level": "INTERNAL", "regex": r"TICKET-\d+"}],
            }
        )
    )


def fullwidth(text: str) -> str:
    """ASCII to its full-width compatibility form (U+FF01..U+FF5E), as an evasion would."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def user(text: str) -> ChatParams:
    return ChatParams(messages=(ChatMessage(role="user", content=text),))


def found(inspector: Inspector, params: ChatParams) -> dict[str, int]:
    return {f.detector: f.count for f in inspector.inspect(params).findings}


# --- effective classification -------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "text", "expected"),
    [
        (None, "hello", Level.PUBLIC),
        (Level.RESTRICTED, "hello", Level.RESTRICTED),
        (Level.PUBLIC, f"my ssn is {SSN}", Level.RESTRICTED),
        (Level.INTERNAL, f"mail {EMAIL}", Level.CONFIDENTIAL),
        (Level.CONFIDENTIAL, "server 10.1.2.3", Level.CONFIDENTIAL),
    ],
)
def test_declared_never_lowers_detected(
    inspector: Inspector, declared: Level | None, text: str, expected: Level
) -> None:
    result = inspector.inspect(user(text), declared=declared)
    assert result.classification == expected
    assert result.declared == declared


def test_finding_levels_follow_defaults_and_overrides() -> None:
    config = InspectionConfig.model_validate(
        {"levels": {"pii.email": "RESTRICTED"}, "disabled": ["net.private_ip"]}
    )
    result = Inspector(config).inspect(user(f"{EMAIL} on 10.1.2.3"))
    assert [(f.detector, f.level, f.count) for f in result.findings] == [
        ("pii.email", Level.RESTRICTED, 1)
    ]


# --- detectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        (f"reach me at {EMAIL}.", "pii.email"),
        ("call +44 20 7946 0018 today", "pii.phone"),
        ("call (415) 867-5309", "pii.phone"),
        (f"SSN {SSN}", "gov.us_ssn"),
        ("NI number AB 12 34 56 C", "gov.uk_nino"),
        (f"card {CARD} exp 12/26", "fin.payment_card"),
        ("amex 3782-822463-10005", "fin.payment_card"),
        ("IBAN GB82 WEST 1234 5698 7654 32 THE END", "fin.iban"),
        ("iban de89370400440532013000", "fin.iban"),
        ("host 8.8.8.8:53", "net.ipv4"),
        ("host [2606:4700:4700::1111]:443", "net.ipv6"),
        ("db at 192.168.1.20", "net.private_ip"),
        ("link fe80::1ff:fe23:4567:890a%eth0", "net.private_ip"),
        ("key AKIAZ3MXQ7PLW4NB5RTY here", "secret.aws_access_key"),
        ("-----BEGIN EC PRIVATE KEY-----\n" + "A" * 20 + "b" * 44, "secret.private_key"),
        (
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0."
            "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
            "secret.jwt",
        ),
        (f"token {GITHUB}", "secret.github_token"),
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "secret.slack_token"),
        ('password = "Xk9#mP2$vL7q"', "secret.assignment"),
        ("postgres://admin:S3cr3tPw@db.corp.local:5432/app", "secret.url_credentials"),
        ("CONFIDENTIAL - board only", "marker.confidential"),
        ("INTERNAL\nONLY", "marker.internal_only"),
        ("status of project  falcon?", "dict.codenames"),
        ("we use C++ here", "dict.codenames"),
        ("see TICKET-12345", "regex.ticket"),
    ],
)
def test_detector_finds(inspector: Inspector, text: str, detector: str) -> None:
    assert found(inspector, user(text)).get(detector) == 1


@pytest.mark.parametrize(
    "text",
    [
        "Order #4111111111111112 shipped",  # fails Luhn
        "id 550e8400-e29b-41d4-a716-446655440000",
        "version 1.2.3.4 and v2.10.3.1",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "at 2024-01-15 10:30:45 and 12:30:45",
        "write to user@example.com or a@b.test",
        "docs use 192.0.2.10, 2001:db8::1, 127.0.0.1",
        "AKIAIOSFODNN7EXAMPLE",
        "password=<your password> api_key=${API_KEY} password: ********",
        "SSN 000-12-3456 666-12-3456 912-34-5678 123-00-4567 123-45-0000",
        "IBAN GB83 WEST 1234 5698 7654 32",  # wrong check digits
        "confidential and Restricted in prose, UNRESTRICTED, NONCONFIDENTIAL",
        "falconry and bluebirds; TICKET-",
        "icon@2x.png std::vector Face::Bead 00:1A:2B:3C:4D:5E",
        "-----BEGIN PRIVATE KEY----- ... -----END PRIVATE KEY-----",
    ],
)
def test_hard_negatives(inspector: Inspector, text: str) -> None:
    assert found(inspector, user(text)) == {}


def test_counts_occurrences_once_each(inspector: Inspector) -> None:
    counts = found(
        inspector, user(f"{CARD} and 5555555555554444, {CARD}; client_secret=Zq8#Lm2!Vx9k")
    )
    assert counts == {"fin.payment_card": 3, "secret.assignment": 1}


def test_phone_inside_a_validated_id_is_not_a_phone(inspector: Inspector) -> None:
    assert found(inspector, user("SSN 049-01-9104 and IBAN NO93 8601 1117 947")) == {
        "gov.us_ssn": 1,
        "fin.iban": 1,
    }


# --- every message role ------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        ChatMessage(role="system", content=f"escalate to {EMAIL}"),
        ChatMessage(role="user", content=f"escalate to {EMAIL}"),
        ChatMessage(role="assistant", content=f"I wrote to {EMAIL}"),
        ChatMessage(role="tool", content=json.dumps({"owner": EMAIL}), tool_call_id="c1"),
        ChatMessage(
            role="assistant",
            tool_calls=(ToolCall(id="c1", name="send", arguments=json.dumps({"to": EMAIL})),),
        ),
        ChatMessage(role="assistant", tool_calls=(ToolCall(id="c1", name=EMAIL, arguments="{}"),)),
        ChatMessage(role="user", content="hi", name=EMAIL),
    ],
    ids=["system", "user", "assistant", "tool", "tool-args", "tool-name", "name"],
)
def test_every_role_is_inspected(inspector: Inspector, message: ChatMessage) -> None:
    params = ChatParams(messages=(ChatMessage(role="user", content="hello"), message))
    assert found(inspector, params) == {"pii.email": 1}


# --- evasions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        ("card " + fullwidth(CARD), "fin.payment_card"),
        ("mail jane\u200b.roe@\u200dacme-corp.io", "pii.email"),  # zero-width
        ("ssn 123\u201145\u20116789", "gov.us_ssn"),  # non-breaking hyphens
        ("card 4111\u00a01111\u00a01111\u00a01111", "fin.payment_card"),  # NBSP
        ("ssn " + "".join(chr(0xE0000 + ord(c)) for c in SSN), "gov.us_ssn"),  # tag smuggling
        ("key " + fullwidth("AKIAZ3MXQ7PLW4NB5RTY"), "secret.aws_access_key"),
        (
            "C\u00adO\u00adN\u00adF\u00adI\u00adD\u00adE\u00adN\u00adT\u00adI\u00adA\u00adL",
            "marker.confidential",
        ),
    ],
)
def test_evasions_in_scope(inspector: Inspector, text: str, detector: str) -> None:
    assert found(inspector, user(text)).get(detector) == 1


def test_json_escapes_in_tool_arguments_are_decoded(inspector: Inspector) -> None:
    args = '{"to": "jane.roe\\u0040acme-corp.io"}'
    params = ChatParams(
        messages=(
            ChatMessage(role="assistant", tool_calls=(ToolCall(id="1", name="f", arguments=args),)),
        )
    )
    assert found(inspector, params) == {"pii.email": 1}


def test_private_key_in_json_arguments_with_escaped_newlines(inspector: Inspector) -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\n" + "MIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn" * 3
    args = json.dumps({"key": key})
    params = ChatParams(
        messages=(
            ChatMessage(role="assistant", tool_calls=(ToolCall(id="1", name="f", arguments=args),)),
        )
    )
    assert found(inspector, params) == {"secret.private_key": 1}


def test_value_split_across_messages_at_a_separator_is_found(inspector: Inspector) -> None:
    params = ChatParams(
        messages=(
            ChatMessage(role="user", content="my card is 4111 1111"),
            ChatMessage(role="user", content="1111 1111 thanks"),
        )
    )
    assert found(inspector, params) == {"fin.payment_card": 1}


def test_private_key_split_across_messages_is_found(inspector: Inspector) -> None:
    params = ChatParams(
        messages=(
            ChatMessage(role="user", content="-----BEGIN OPENSSH PRIVATE KEY-----"),
            ChatMessage(
                role="user", content="b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAA"
            ),
        )
    )
    assert found(inspector, params) == {"secret.private_key": 1}


def test_value_split_inside_a_token_is_out_of_scope(inspector: Inspector) -> None:
    # Documented: messages are joined with a space, never glued, so a value cut mid-token is
    # two fragments. Gluing would invent words no message contains.
    params = ChatParams(
        messages=(
            ChatMessage(role="user", content="jane.roe@"),
            ChatMessage(role="user", content="acme-corp.io"),
        )
    )
    assert found(inspector, params) == {}


# --- secrecy -----------------------------------------------------------------------------

SECRETS = [CARD.replace(" ", ""), SSN, EMAIL, "Xk9#mP2$vL7q", "AKIAZ3MXQ7PLW4NB5RTY"]


def test_no_matched_value_in_findings_repr_or_logs(
    inspector: Inspector, caplog: pytest.LogCaptureFixture
) -> None:
    text = f"{CARD} {SSN} {EMAIL} password='Xk9#mP2$vL7q' AKIAZ3MXQ7PLW4NB5RTY"
    with caplog.at_level(logging.DEBUG):
        result = inspector.inspect(user(text))
    assert len(result.findings) == 5
    rendered = repr(result) + str(result) + caplog.text + repr(result.findings)
    for value in [*SECRETS, CARD]:
        assert value not in rendered
    for finding in result.findings:
        # Locations are offsets (never values) and stay out of the repr.
        assert set(finding.__slots__) == {"detector", "level", "count", "locations"}
        assert "locations" not in repr(finding)


def test_validator_failure_fails_closed_without_the_value(
    inspector: Inspector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(data: bytes, start: int, end: int) -> bool:
        data[start:end].decode("ascii")  # raises UnicodeDecodeError quoting the bytes
        return True

    classifier = inspector._classifier
    patterns = tuple(
        dataclasses.replace(p, validator=broken) if p.detector == "gov.us_ssn" else p
        for p in classifier._patterns_by_id
    )
    monkeypatch.setattr(classifier, "_patterns_by_id", patterns)
    with pytest.raises(InternalError) as info:
        inspector.inspect(user(f"ssn\u00e9{SSN}\u00e9"))
    assert info.value.reason == "INSPECTION_FAILED"
    assert "gov.us_ssn" in str(info.value)
    assert SSN not in str(info.value) and info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_scan_failure_fails_closed(inspector: Inspector, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = inspector._classifier

    class Broken:
        def scan(self, *args: object, **kwargs: object) -> None:
            import hyperscan

            raise hyperscan.error("scratch in use")

    monkeypatch.setattr(classifier, "_databases", (Broken(),))
    with pytest.raises(InternalError):
        inspector.inspect(user("hello"))


# --- configuration errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("regex", "needle"),
    [("(abc", "parenthesis"), ("(?<=a)b", "lookaround"), ("a*", "empty")],
)
def test_invalid_operator_regex_names_the_pattern(regex: str, needle: str) -> None:
    config = InspectionConfig.model_validate(
        {
            "patterns": [
                {"id": "ok", "level": "INTERNAL", "regex": "x"},
                {"id": "broken", "level": "INTERNAL", "regex": regex},
            ]
        }
    )
    with pytest.raises(ValueError, match=r"inspection\.patterns\[1\] \(id 'broken'\)") as info:
        Classifier(config)
    assert needle in str(info.value).lower()


@pytest.mark.parametrize("field", ["levels", "disabled"])
def test_unknown_detector_in_config_is_an_error(field: str) -> None:
    value: object = {"pii.emial": "PUBLIC"} if field == "levels" else ["pii.emial"]
    config = InspectionConfig.model_validate({field: value})
    with pytest.raises(ValueError, match=rf"inspection\.{field}: unknown detector 'pii.emial'"):
        Classifier(config)


def test_duplicate_dictionary_id_is_an_error() -> None:
    d = {"id": "names", "level": "INTERNAL", "terms": ["a"]}
    with pytest.raises(ValueError, match="used twice"):
        Classifier(InspectionConfig.model_validate({"dictionaries": [d, d]}))


# --- robustness --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1" * 200_000,
        "1 " * 100_000,
        "4111-" * 40_000,
        "a@b." * 50_000,
        "password=" * 20_000,
        "AB12" * 50_000,
        ":" * 100_000,
        "-----BEGIN PRIVATE KEY-----" * 5_000,
    ],
    ids=[
        "digits",
        "spaced-digits",
        "card-prefixes",
        "email-chain",
        "assignments",
        "iban-ish",
        "colons",
        "pem",
    ],
)
def test_pathological_inputs_complete(inspector: Inspector, text: str) -> None:
    result = inspector.inspect(user(text))
    assert 0.0 <= result.complexity <= 1.0


def test_concurrent_inspection_from_threads(inspector: Inspector) -> None:
    errors: list[BaseException] = []
    results: list[dict[str, int]] = []

    def work() -> None:
        try:
            for _ in range(50):
                results.append(found(inspector, user(f"{EMAIL} {SSN}")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(r == {"pii.email": 1, "gov.us_ssn": 1} for r in results) and len(results) == 200


def test_validators_directly() -> None:
    assert v.luhn_ok(b"79927398713") and not v.luhn_ok(b"79927398710")
    assert v.iban_mod97("GB82WEST12345698765432") and not v.iban_mod97("GB82WEST12345698765433")
    assert v.shannon_entropy(b"aaaa") == 0.0 and v.shannon_entropy(b"abcd") == 2.0


def test_card_after_a_short_digit_group_and_no_candidates_outside_the_schemes(
    inspector: Inspector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Candidates start at a scheme prefix (2-6): a leading "12" no longer hides the card.
    assert [f.detector for f in inspector.inspect(user(f"ref 12 {CARD} ok")).findings] == [
        "fin.payment_card"
    ]
    calls: list[int] = []
    original = v.payment_card

    def counting(data: bytes, start: int, end: int) -> bool:
        calls.append(end)
        return original(data, start, end)

    classifier = inspector._classifier
    patterns = tuple(
        dataclasses.replace(p, validator=counting) if p.detector == "fin.payment_card" else p
        for p in classifier._patterns_by_id
    )
    monkeypatch.setattr(classifier, "_patterns_by_id", patterns)
    assert inspector.inspect(user("1 " * 2000)).findings == ()
    assert calls == []


def test_classifiers_with_the_same_patterns_share_their_compiled_databases() -> None:
    first, second = Classifier(InspectionConfig()), Classifier(InspectionConfig())
    assert first._databases[0] is second._databases[0]
    other = Classifier(InspectionConfig(markers={"PROJECT BLUE": Level.RESTRICTED}))
    assert other._databases[0] is not first._databases[0]
    assert other.scan(normalize.to_bytes("see PROJECT BLUE")) != ()
