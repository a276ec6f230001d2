"""Task type inference, complexity and the token estimate."""

from __future__ import annotations

import pytest

from gateway.chat import ChatMessage, ChatParams, ResponseFormat, ToolSpec
from gateway.config import InspectionConfig
from gateway.inspect import Inspector, analysis
from gateway.v1 import policy_pb2


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    return Inspector(InspectionConfig())


def chat(text: str, *, system: str = "", **kwargs: object) -> ChatParams:
    messages = [ChatMessage(role="system", content=system)] if system else []
    messages.append(ChatMessage(role="user", content=text))
    return ChatParams(messages=tuple(messages), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Write a Python function that parses ISO dates", policy_pb2.TASK_TYPE_CODE_GENERATION),
        ("Why does this fail?\n```\nx = 1/0\n```", policy_pb2.TASK_TYPE_CODE_GENERATION),
        ("Translate this paragraph into German: good morning", policy_pb2.TASK_TYPE_TRANSLATION),
        ("Summarize the meeting notes below in five bullets", policy_pb2.TASK_TYPE_SUMMARIZATION),
        ("Extract every invoice number and amount from this text", policy_pb2.TASK_TYPE_EXTRACTION),
        ("Draft a rollout plan with milestones for Q3", policy_pb2.TASK_TYPE_PLANNING),
        ("Prove that the square root of 2 is irrational", policy_pb2.TASK_TYPE_REASONING),
        ("Hi! How was your weekend?", policy_pb2.TASK_TYPE_CHAT),
    ],
)
def test_task_type_from_vocabulary(inspector: Inspector, text: str, task: int) -> None:
    assert inspector.inspect(chat(text)).task_type == task


def test_hint_wins(inspector: Inspector) -> None:
    params = chat("Summarize this", tools=(ToolSpec(name="search"),))
    result = inspector.inspect(params, task_hint=policy_pb2.TASK_TYPE_REASONING)
    assert result.task_type == policy_pb2.TASK_TYPE_REASONING


def test_tools_then_json_then_vocabulary(inspector: Inspector) -> None:
    tools = (ToolSpec(name="search", parameters={"type": "object"}),)
    json_format = ResponseFormat(type="json_schema", schema_name="x", schema={"type": "object"})
    assert (
        inspector.inspect(chat("Summarize", tools=tools)).task_type == policy_pb2.TASK_TYPE_TOOL_USE
    )
    assert (
        inspector.inspect(chat("Summarize", tools=tools, tool_choice="none")).task_type
        == policy_pb2.TASK_TYPE_SUMMARIZATION
    )
    assert (
        inspector.inspect(chat("Summarize", response_format=json_format)).task_type
        == policy_pb2.TASK_TYPE_STRUCTURED_OUTPUT
    )


def test_user_message_outranks_system_prompt(inspector: Inspector) -> None:
    params = chat("Translate 'cat' to French", system="You write Python code for a living.")
    assert inspector.inspect(params).task_type == policy_pb2.TASK_TYPE_TRANSLATION
    params = chat("hello there", system="You summarize documents.")
    assert inspector.inspect(params).task_type == policy_pb2.TASK_TYPE_SUMMARIZATION


def test_history_and_tool_results_do_not_set_the_task(inspector: Inspector) -> None:
    params = ChatParams(
        messages=(
            ChatMessage(role="user", content="hello"),
            ChatMessage(role="assistant", content="I can translate and summarize."),
            ChatMessage(role="tool", content="extract all fields", tool_call_id="1"),
            ChatMessage(role="user", content="how are you?"),
        )
    )
    assert inspector.inspect(params).task_type == policy_pb2.TASK_TYPE_CHAT


def test_complexity_bounded_deterministic_and_ordered(inspector: Inspector) -> None:
    simple = inspector.inspect(chat("hi")).complexity
    hard_params = chat(
        "First analyze the trade-offs, then design the architecture step by step and prove the "
        "invariants hold. Consider all edge cases and constraints in detail.\n"
        + "\n".join(f"{n}. requirement {n}?" for n in range(1, 10))
        + "\n```python\ndef f(x):\n    return x\n```\n"
        + "context " * 3000,
        max_tokens=16_000,
        tools=tuple(ToolSpec(name=f"t{i}") for i in range(4)),
    )
    hard = inspector.inspect(hard_params).complexity
    assert 0.0 <= simple < 0.1 < 0.7 < hard <= 1.0
    assert inspector.inspect(hard_params).complexity == hard


def test_complexity_weights_sum_to_one() -> None:
    assert sum(analysis.WEIGHTS.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("word " * 400, 400, 600),  # English: ~4 characters per token
        ("数据" * 500, 1000, 1600),  # CJK: ~1-1.5 tokens per character
    ],
)
def test_token_estimate_is_in_the_expected_range(
    inspector: Inspector, text: str, low: int, high: int
) -> None:
    assert low <= inspector.inspect(chat(text)).estimated_input_tokens <= high


def test_token_estimate_counts_tools_and_messages(inspector: Inspector) -> None:
    base = inspector.inspect(chat("hello")).estimated_input_tokens
    tools = (ToolSpec(name="lookup", description="Look a thing up", parameters={"type": "object"}),)
    assert inspector.inspect(chat("hello", tools=tools)).estimated_input_tokens > base + 8
