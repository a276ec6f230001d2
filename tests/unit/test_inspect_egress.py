"""Everything the adapters send is inspected; the secret formats and misses of the egress
review are found; code with non-literal right-hand sides is not; findings carry exact
locations into the request's parts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import pytest

from gateway.chat import (
    ChatMessage,
    ChatParams,
    ResponseFormat,
    ToolCall,
    ToolSpec,
)
from gateway.config import InspectionConfig, ModelConfig
from gateway.inspect import Inspector, Location, part_text, request_parts
from gateway.inspect import segments as seg
from gateway.levels import Level
from gateway.providers.ollama import OllamaProvider
from gateway.providers.openai import OpenAIProvider
from tests.data.egress_cases import CARD, NON_LITERALS, NOT_FOUND, SCOPE, SECRETS


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    return Inspector(InspectionConfig())


def user(text: str) -> ChatParams:
    return ChatParams(messages=(ChatMessage(role="user", content=text),))


def detectors(inspector: Inspector, params: ChatParams) -> dict[str, int]:
    return {f.detector: f.count for f in inspector.inspect(params).findings}


# --- secret formats and in-scope misses -----------------------------------------------------


@pytest.mark.parametrize(("case", "text", "detector"), SECRETS, ids=[c[0] for c in SECRETS])
def test_secret_format_is_found(inspector: Inspector, case: str, text: str, detector: str) -> None:
    result = inspector.inspect(user(text))
    assert detector in result.detectors
    assert result.classification == Level.RESTRICTED


@pytest.mark.parametrize(("case", "text", "detector"), SCOPE, ids=[c[0] for c in SCOPE])
def test_scope_fix_is_found(inspector: Inspector, case: str, text: str, detector: str) -> None:
    assert detector in detectors(inspector, user(text))


@pytest.mark.parametrize(("case", "text", "detector"), SCOPE, ids=[c[0] for c in SCOPE])
def test_scope_fix_is_found_in_a_tool_result(
    inspector: Inspector, case: str, text: str, detector: str
) -> None:
    params = ChatParams(
        messages=(
            ChatMessage(role="user", content="look it up"),
            ChatMessage(role="assistant", tool_calls=(ToolCall("c1", "lookup", "{}"),)),
            ChatMessage(role="tool", content=text, tool_call_id="c1"),
        )
    )
    assert detector in detectors(inspector, params)


@pytest.mark.parametrize("text", NON_LITERALS)
def test_no_secret_rule_on_a_non_literal(inspector: Inspector, text: str) -> None:
    found = detectors(inspector, user(text))
    assert not {d for d in found if d.startswith("secret.")}, found


@pytest.mark.parametrize(("text", "detector"), NOT_FOUND)
def test_precision_cases(inspector: Inspector, text: str, detector: str) -> None:
    assert detector not in detectors(inspector, user(text))


@pytest.mark.parametrize(
    "text",
    [
        "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5",  # well-formed, wrong checksum
        "npm_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",  # Stripe's documentation key
        "sk-ant-api03-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
        "KBHBeksoGMGw==",  # the storage emulator's published key
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "Authorization: Bearer YOUR_TOKEN_HERE",
        "Authorization: Digest username=jane, realm=x",
        "sig=notbase64ofthirtytwobytesatall0000000000",
    ],
)
def test_validators_reject_placeholders_and_bad_checksums(inspector: Inspector, text: str) -> None:
    found = detectors(inspector, user(text))
    assert not {d for d in found if d.startswith("secret.")}, found


@pytest.mark.parametrize(
    "text",
    [
        "password = 'Summer2024'",
        "PASSWORD=Summer2024",
        "export DB_PASSWORD=hunter22",
        'db.password: "Tr0ub4dor"',
        '"password": "weakpass"',
        "password = hunter22",
        'connect(password="hunter22")',
        "mysql_root_password=Tr0ub4dor",
        "password: Summer2024",
    ],
)
def test_literal_passwords_count_even_when_weak(inspector: Inspector, text: str) -> None:
    assert "secret.assignment" in detectors(inspector, user(text))


def test_email_in_url_userinfo_is_a_credential_not_an_address(inspector: Inspector) -> None:
    found = detectors(inspector, user("https://ops:Xk9mQ2vL7pW@crm.acme.io/x"))
    assert "secret.url_credentials" in found and "pii.email" not in found


def test_author_address_in_a_file_header_is_attribution(inspector: Inspector) -> None:
    header = "# Author: Barry Warsaw <barry@python.org>\nimport os\n"
    found = detectors(inspector, user(header))
    assert found == {"pii.email_attribution": 1}
    assert Inspector(InspectionConfig()).inspect(user(header)).classification == Level.INTERNAL
    # The same address in running text is personal data.
    assert "pii.email" in detectors(inspector, user("please call back barry@python.org today"))


# --- everything sent is inspected ---------------------------------------------------------


def full_request(value: str) -> ChatParams:
    """A request with `value` in one place only; see `placements`."""
    return ChatParams(messages=(ChatMessage(role="user", content=value),))


def every_field_request(value: str) -> ChatParams:
    return ChatParams(
        messages=(
            ChatMessage(role="system", content=f"sys {value}", name=f"n {value}"),
            ChatMessage(role="user", content=f"u {value}"),
            ChatMessage(
                role="assistant",
                tool_calls=(
                    ToolCall(f"id {value}", f"fn {value}", json.dumps({"a": f"x {value}"})),
                ),
            ),
            ChatMessage(role="tool", content=f"r {value}", tool_call_id=f"id {value}"),
        ),
        tools=(
            ToolSpec(
                name=f"tool {value}",
                description=f"d {value}",
                parameters={
                    "type": "object",
                    "properties": {
                        f"k {value}": {"type": "string", "enum": [f"e {value}"]},
                        "card": {"type": "string", "default": f"x {value}"},
                    },
                },
            ),
        ),
        tool_choice=f"tool {value}",
        response_format=ResponseFormat(
            type="json_schema",
            schema_name=f"s {value}",
            schema={"type": "object", "description": f"d {value}"},
        ),
        stop=(f"stop {value}", "END"),
    )


def strings(value: Any) -> list[str]:
    """Every string in a JSON-like value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [*strings(k), *strings(v)]]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings(item)]
    return []


MARK = "zq7marker"


def test_request_parts_reach_every_string_field() -> None:
    parts = dict(request_parts(every_field_request(MARK)))
    with_mark = {path for path, text in parts.items() if MARK in text}
    assert with_mark >= {
        "messages[0].content",
        "messages[0].name",
        "messages[1].content",
        "messages[2].tool_calls[0].id",
        "messages[2].tool_calls[0].name",
        "messages[2].tool_calls[0].arguments",
        "messages[3].content",
        "messages[3].tool_call_id",
        "tools[0].name",
        "tools[0].description",
        f'tools[0].parameters["properties"]{{"k {MARK}"}}',
        f'tools[0].parameters["properties"]["k {MARK}"]["enum"][0]',
        'tools[0].parameters["properties"]["card"]["default"]',
        "tool_choice",
        "response_format.schema_name",
        'response_format.schema["description"]',
        "stop[0]",
    }
    assert part_text(every_field_request(MARK), "stop[0]") == f"stop {MARK}"


def test_a_field_added_later_is_inspected_without_a_list_to_update(inspector: Inspector) -> None:
    @dataclasses.dataclass(frozen=True)
    class Extended(ChatParams):
        user_metadata: tuple[str, ...] = ()

    params = Extended(
        messages=(ChatMessage(role="user", content="hi"),), user_metadata=("n", f"card {CARD}")
    )
    assert ("user_metadata[1]", f"card {CARD}") in list(request_parts(params))
    finding = next(f for f in inspector.inspect(params).findings)
    assert finding.detector == "fin.payment_card"
    assert finding.locations == (Location("user_metadata[1]", 5, 24),)


def test_a_value_of_an_unknown_type_fails_closed() -> None:
    @dataclasses.dataclass(frozen=True)
    class Odd(ChatParams):
        blob: object = None

    with pytest.raises(TypeError, match="blob"):
        list(request_parts(Odd(messages=(), blob=b"bytes")))


def _openai_body(params: ChatParams) -> dict[str, Any]:
    model = ModelConfig.model_validate(
        {"provider": "openai", "upstream_model": "gpt-x", "base_url": "http://127.0.0.1:9",
         "location": "cloud", "clearance": "INTERNAL"}
    )  # fmt: skip
    return OpenAIProvider(model, "k")._request(params)


def _ollama_body(params: ChatParams) -> dict[str, Any]:
    model = ModelConfig.model_validate(
        {"provider": "ollama", "upstream_model": "llama", "base_url": "http://127.0.0.1:9",
         "location": "on_prem", "clearance": "RESTRICTED"}
    )  # fmt: skip
    return OllamaProvider(model)._body(params, stream=False)


@pytest.mark.parametrize("serialize", [_openai_body, _ollama_body], ids=["openai", "ollama"])
def test_adapters_send_only_what_the_inspector_reads(serialize: Any) -> None:
    """Every string an adapter puts in the upstream body is a part `request_parts` yields, a
    JSON-decoded piece of one (Ollama sends tool arguments as an object), or a constant of the
    adapter (role names, `function`, the model id)."""
    params = every_field_request(MARK)
    scanned = set()
    for _, text in request_parts(params):
        scanned.add(text)
        for view in seg.derived("p", text):
            scanned.add(view.text)
        with contextlib.suppress(ValueError):
            scanned.update(strings(json.loads(text)))
    body = serialize(params)
    for text in strings(body):
        if MARK in text:
            assert text in scanned, text
    # Everything else is request-independent: the same for a request with other content.
    constants = {s for s in strings(body) if MARK not in s}
    other = {s for s in strings(serialize(every_field_request("other"))) if "other" not in s}
    assert constants == other


# --- locations ------------------------------------------------------------------------------


def located(inspector: Inspector, params: ChatParams) -> dict[str, list[tuple[str, str]]]:
    """detector -> [(part, the part's original text at the location)]."""
    out: dict[str, list[tuple[str, str]]] = {}
    for finding in inspector.inspect(params).findings:
        for loc in finding.locations:
            text = part_text(params, loc.part)
            out.setdefault(finding.detector, []).append((loc.part, text[loc.start : loc.end]))
    return out


def test_locations_point_at_the_values_in_every_field(inspector: Inspector) -> None:
    params = every_field_request(CARD)
    spots = located(inspector, params)["fin.payment_card"]
    assert all(value == CARD for _, value in spots)
    assert {part for part, _ in spots} == {
        part for part, text in request_parts(params) if CARD in text
    }


def test_locations_map_back_through_normalization(inspector: Inspector) -> None:
    fancy = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in CARD)
    text = f"ﬁle \u200bnote: {fancy} and jane.roe@gmail.com"
    spots = located(inspector, user(text))
    assert spots["fin.payment_card"] == [("messages[0].content", fancy)]
    assert spots["pii.email"] == [("messages[0].content", "jane.roe@gmail.com")]


def test_locations_of_secrets_are_the_values_not_the_keys(inspector: Inspector) -> None:
    text = 'password = "Summer2024"\nhttps://ops:Xk9mQ2vL7pW@db.acme.io\nthe pw is hunter22'
    spots = located(inspector, user(text))
    assert spots["secret.assignment"] == [("messages[0].content", "Summer2024")]
    assert spots["secret.url_credentials"] == [("messages[0].content", "Xk9mQ2vL7pW")]
    assert spots["secret.password"] == [("messages[0].content", "hunter22")]


def test_locations_inside_escaped_and_encoded_text(inspector: Inspector) -> None:
    escaped = json.dumps({"cmd": 'export DB_PASSWORD="Xk9mQ2vL7pW"'})
    spots = located(inspector, user(escaped))
    assert spots["secret.assignment"] == [("messages[0].content", "Xk9mQ2vL7pW")]
    token = "cGFzc3dvcmQ9U3VtbWVyMjAyNA=="  # base64 of password=Summer2024
    spots = located(inspector, user(f"blob {token} end"))
    assert spots["secret.assignment"] == [("messages[0].content", token)]
    spots = located(inspector, user("see https://x.io/?email=jane.roe%40gmail.com ok"))
    assert spots["pii.email"] == [("messages[0].content", "jane.roe%40gmail.com")]


def test_value_split_across_messages_has_a_location_in_each(inspector: Inspector) -> None:
    params = ChatParams(
        messages=(
            ChatMessage(role="user", content="card 4539 1488"),
            ChatMessage(role="user", content="0343 6467 thanks"),
        )
    )
    finding = inspector.inspect(params).findings[0]
    assert finding.count == 1
    assert finding.locations == (
        Location("messages[0].content", 5, 14),
        Location("messages[1].content", 0, 9),
    )


def test_the_same_value_in_a_part_and_its_decoded_view_counts_once(inspector: Inspector) -> None:
    text = json.dumps({"a": f"card {CARD}", "b": "x\ny"})
    assert detectors(inspector, user(text)) == {"fin.payment_card": 1}
