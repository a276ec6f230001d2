"""Redaction and restoring as pure functions: placeholders, the request rebuilt, answers and
streams restored."""

from __future__ import annotations

import json

import pytest

from gateway.chat import ChatMessage, ChatParams, ToolCall, ToolSpec
from gateway.inspect.findings import Finding, Location
from gateway.inspect.parts import request_parts
from gateway.levels import Level
from gateway.redact import Restorer, placeholder_type, redact, replace_parts


def finding(detector: str, params: ChatParams, value: str) -> Finding:
    """A finding locating every occurrence of `value` in the request, as the inspector would."""
    locations = []
    for part, text in request_parts(params):
        at = text.find(value)
        while at != -1:
            locations.append(Location(part, at, at + len(value)))
            at = text.find(value, at + 1)
    return Finding(detector, Level.CONFIDENTIAL, len(locations), tuple(locations))


def test_placeholder_types_come_from_the_detector_id() -> None:
    assert placeholder_type("pii.email") == "EMAIL"
    assert placeholder_type("pii.date_of_birth") == "DATE_OF_BIRTH"
    assert placeholder_type("phi.health") == "HEALTH"


def test_same_value_same_placeholder_across_messages_tool_calls_and_results() -> None:
    email, other = "jane.roe@gmail.com", "max@example.org"
    params = ChatParams(
        messages=(
            ChatMessage("user", f"Write to {email} and cc {other}."),
            ChatMessage(
                "assistant",
                tool_calls=(ToolCall("c1", "send", json.dumps({"to": email})),),
            ),
            ChatMessage("tool", f"sent to {email}", tool_call_id="c1"),
        )
    )
    result = redact(
        params, [finding("pii.email", params, email), finding("pii.email", params, other)]
    )
    sent = "\n".join(text for _, text in request_parts(result.params))
    assert email not in sent and other not in sent
    assert result.params.messages[0].content == "Write to <EMAIL_1> and cc <EMAIL_2>."
    assert json.loads(result.params.messages[1].tool_calls[0].arguments) == {"to": "<EMAIL_1>"}
    assert result.params.messages[2].content == "sent to <EMAIL_1>"
    assert result.counts == {"pii.email": 2}
    assert dict(result.mapping) == {"<EMAIL_1>": email, "<EMAIL_2>": other}


def test_placeholders_never_collide_with_text_already_in_the_request() -> None:
    params = ChatParams(messages=(ChatMessage("user", "Template: <PERSON_1>. Customer: Ann Lee"),))
    result = redact(params, [finding("pii.person", params, "Ann Lee")])
    assert result.params.messages[0].content == "Template: <PERSON_1>. Customer: <PERSON_2>"
    assert Restorer(result.mapping).text("Dear <PERSON_2>") == "Dear Ann Lee"


def test_overlapping_findings_are_replaced_whole() -> None:
    params = ChatParams(messages=(ChatMessage("user", "call Ann Lee at ann.lee@corp.example"),))
    email = finding("pii.email", params, "ann.lee@corp.example")
    name = finding("pii.person", params, "Ann Lee at ann")
    result = redact(params, [email, name])
    text = result.params.messages[0].content
    assert "ann.lee" not in text and "Ann" not in text
    assert Restorer(result.mapping).text(text) == params.messages[0].content


def test_json_escaped_values_map_to_the_plain_value() -> None:
    params = ChatParams(
        messages=(
            ChatMessage("user", "José Ruiz called"),
            ChatMessage("tool", '{"name": "Jos\\u00e9 Ruiz"}', tool_call_id="t"),
        )
    )
    plain = finding("pii.person", params, "José Ruiz")
    escaped = finding("pii.person", params, "Jos\\u00e9 Ruiz")
    result = redact(params, [plain, escaped])
    assert result.params.messages[0].content == "<PERSON_1> called"
    assert json.loads(result.params.messages[1].content) == {"name": "<PERSON_1>"}


def test_a_finding_without_location_cannot_be_redacted() -> None:
    params = ChatParams(messages=(ChatMessage("user", "x"),))
    with pytest.raises(ValueError, match="no location"):
        redact(params, [Finding("pii.email", Level.CONFIDENTIAL, 1)])
    with pytest.raises(ValueError, match="outside"):
        redact(params, [Finding("pii.email", Level.CONFIDENTIAL, 1, (Location("x", 0, 1),))])


def test_replace_parts_reaches_schemas_and_dict_keys() -> None:
    params = ChatParams(
        messages=(ChatMessage("user", "hi"),),
        tools=(ToolSpec("f", parameters={"properties": {"secret": {"default": "v"}}}),),
    )
    paths = dict(request_parts(params))
    key_path = next(p for p in paths if p.endswith('{"secret"}'))
    default_path = next(p for p in paths if p.endswith('["default"]'))
    rebuilt = replace_parts(params, {key_path: "k", default_path: "d"})
    assert rebuilt.tools[0].parameters == {"properties": {"k": {"default": "d"}}}
    assert params.tools[0].parameters == {"properties": {"secret": {"default": "v"}}}
    with pytest.raises(KeyError):
        replace_parts(params, {"messages[9].content": "x"})


def test_restore_arguments_stays_valid_json() -> None:
    restorer = Restorer({"<PERSON_1>": 'Ann "the boss" Lee'})
    restored = restorer.arguments('{"to": "<PERSON_1>"}')
    assert json.loads(restored) == {"to": 'Ann "the boss" Lee'}


def test_invented_or_mangled_placeholders_are_left_and_counted() -> None:
    restorer = Restorer({"<EMAIL_1>": "a@b.example"})
    assert restorer.text("<EMAIL_1>, <EMAIL_7>, <PHONE_1>") == "a@b.example, <EMAIL_7>, <PHONE_1>"
    assert restorer.unknown == 2


def test_stream_restores_a_placeholder_split_at_every_position() -> None:
    mapping = {"<EMAIL_1>": "jane@corp.example", "<PERSON_12>": "Ann Lee"}
    answer = "Hi <PERSON_12>, mail <EMAIL_1> now <x> 3 < 4 <EMAIL_1>"
    expected = "Hi Ann Lee, mail jane@corp.example now <x> 3 < 4 jane@corp.example"
    for i in range(len(answer) + 1):
        for j in range(i, len(answer) + 1):
            stream = Restorer(mapping).stream()
            chunks = [answer[:i], answer[i:j], answer[j:]]
            out = "".join(stream.feed(c) for c in chunks) + stream.finish()
            assert out == expected, (i, j)


def test_stream_holds_back_only_a_possible_placeholder_prefix() -> None:
    stream = Restorer({"<EMAIL_1>": "a@b.example"}).stream()
    assert stream.feed("see <EM") == "see "  # could still become <EMAIL_1>
    assert stream.feed("PTY> and <") == "<EMPTY> and "  # not a prefix any more: released
    assert stream.feed("b") == "<b"
    assert stream.feed("<EMAIL_1>!") == "a@b.example!"
    assert stream.finish() == ""


def test_every_occurrence_of_a_redacted_value_is_replaced_even_where_it_was_not_flagged() -> None:
    """The inspector may rate the same value lower in one place (an address as an attribution
    in a tool result) or miss it there: it must not go out verbatim beside its placeholder."""
    email = "josé.roe@gmail.com"
    params = ChatParams(
        messages=(
            ChatMessage("user", f"Ticket from {email}."),
            ChatMessage(
                "assistant", tool_calls=(ToolCall("c1", "find", json.dumps({"to": email})),)
            ),
            ChatMessage(
                "tool", json.dumps({"contact": email}, ensure_ascii=False), tool_call_id="c1"
            ),
        )
    )
    only_first = Finding(
        "pii.email", Level.CONFIDENTIAL, 1, (Location("messages[0].content", 12, 12 + len(email)),)
    )
    result = redact(params, [only_first])
    sent = "\n".join(text for _, text in request_parts(result.params))
    assert email not in sent and json.dumps(email)[1:-1] not in sent
    assert sent.count("<EMAIL_1>") == 3
    assert result.counts == {"pii.email": 1}
    assert json.loads(result.params.messages[1].tool_calls[0].arguments) == {"to": "<EMAIL_1>"}
