"""Replay of a decision log written by a real gateway: a mixed workload (cloud and local
routes, code generation, confidential content, a policy deny, a stream, a dry run and a
request refused before the policy) goes through a running gateway with its decision log in a
file, then `celgate policy replay` re-decides it with a changed policy. The counts and the
cost difference are checked exactly against the usage the fake upstreams reported and the
configured prices.
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from gateway.cli import main
from gateway.config import parse_config
from gateway.policy.replay import SKIP_DRY_RUN, SKIP_NO_INPUTS, run_replay
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import policy_pb2
from tests.fakes._server import Reply
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import ROOT, config_data, ollama_model, openai_model, serve

pytestmark = pytest.mark.integration

CARD = "4111 1111 1111 1111"
CHEAP = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
STRONG = {"input_per_mtok": 10.0, "output_per_mtok": 30.0}

LIVE = """\
name: live
rule:
  id: live
  match:
    - condition: '"deny" in request.labels'
      output: 'RouteDecision{deny: true, reason: "denied by label"}'
    - condition: request.classification > Classification.CLASSIFICATION_INTERNAL
      output: 'RouteDecision{model: "local"}'
    - condition: request.task_type == TaskType.TASK_TYPE_SUMMARIZATION
      output: 'RouteDecision{model: "local"}'
    - output: 'RouteDecision{model: "cheap", fallbacks: ["local"]}'
"""

# Confidential content to the cloud (enforcement refuses it), code generation to `strong`,
# no deny.
CANDIDATE = """\
name: candidate
rule:
  id: candidate
  match:
    - condition: request.classification > Classification.CLASSIFICATION_INTERNAL
      output: 'RouteDecision{model: "cheap"}'
    - condition: request.task_type == TaskType.TASK_TYPE_CODE_GENERATION
      output: 'RouteDecision{model: "strong", fallbacks: ["local"]}'
    - condition: request.task_type == TaskType.TASK_TYPE_SUMMARIZATION
      output: 'RouteDecision{model: "local"}'
    - output: 'RouteDecision{model: "cheap", fallbacks: ["local"]}'
"""


def usd(input_tokens: int, output_tokens: int, price: dict[str, float]) -> float:
    return (
        input_tokens * price["input_per_mtok"] + output_tokens * price["output_per_mtok"]
    ) / 1_000_000


def chat(text: str, **fields: Any) -> pb.ChatRequest:
    return pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=text)], **fields)


def folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "policy.yaml").write_text(text)
    return path


@pytest.fixture
def gateway_data(tmp_path: Path, ollama: FakeOllama, cloud: FakeOpenAI) -> dict[str, Any]:
    ollama.reset()
    cloud.reset()
    models = {
        "local": ollama_model(ollama.url),
        "cheap": openai_model(cloud.url, upstream_model="gpt-5-mini", price=CHEAP),
        "strong": openai_model(cloud.url, upstream_model="gpt-5.5", price=STRONG),
    }
    return config_data(
        models,
        "local",
        policy={"dir": str(folder(tmp_path / "live", LIVE)), "watch": False},
        audit={"decision_log": str(tmp_path / "decisions.jsonl")},
        limits={"estimate_output_tokens": 500},
    )


async def test_replay_of_a_recorded_mixed_workload(
    tmp_path: Path, gateway_data: dict[str, Any], ollama: FakeOllama, cloud: FakeOpenAI
) -> None:
    code = policy_pb2.TASK_TYPE_CODE_GENERATION
    live_usd = strong_usd = 0.0
    async with serve(parse_config(gateway_data, base_dir=ROOT / "config")) as (_, stub):
        # Three general chats on `cheap`: unchanged.
        for i in range(3):
            cloud.enqueue(Reply(content="ok", prompt_tokens=100 + i, completion_tokens=20 + i))
            reply = await stub.Chat(chat(f"question {i}", task_type=policy_pb2.TASK_TYPE_CHAT))
            assert reply.route.model == "cheap"
            live_usd += usd(100 + i, 20 + i, CHEAP)
        # Two code generations on `cheap`: the candidate sends them to `strong`.
        for i in range(2):
            cloud.enqueue(
                Reply(content="def f(): ...", prompt_tokens=300, completion_tokens=400 + i)
            )
            # A label the inspection would flag never reaches the decision log.
            labels = {"team": "search", "card": CARD}
            reply = await stub.Chat(chat("write a parser", task_type=code, labels=labels))
            assert reply.route.model == "cheap"
            live_usd += usd(300, 400 + i, CHEAP)
            strong_usd += usd(300, 400 + i, STRONG)
        # Two summaries on the local model (free): unchanged.
        for _ in range(2):
            ollama.enqueue(Reply(content="short", prompt_tokens=50, completion_tokens=10))
            reply = await stub.Chat(
                chat("summarize this", task_type=policy_pb2.TASK_TYPE_SUMMARIZATION)
            )
            assert reply.route.model == "local"
        # Confidential content stays local; the candidate's cloud route would be refused.
        ollama.enqueue(Reply(content="ok", prompt_tokens=60, completion_tokens=6))
        reply = await stub.Chat(
            chat("the merger terms", classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL)
        )
        assert reply.route.model == "local"
        # Denied by the live policy: never called, so the candidate's route is priced by the
        # estimate the gateway reserves with (its token estimate and max_tokens).
        denied = chat("anything", labels={"deny": "yes"}, max_tokens=50)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Chat(denied)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        dry = await stub.Route(pb.RouteRequest.FromString(chat("anything").SerializeToString()))
        estimated_input = dry.context.estimated_input_tokens
        assert estimated_input > 0
        estimate_usd = usd(estimated_input, 50, CHEAP)
        # A stream on `cheap`, with the usage chunk: unchanged.
        cloud.enqueue(Reply(content="streamed answer", prompt_tokens=70, completion_tokens=30))
        stream = stub.ChatStream(
            pb.ChatStreamRequest(
                messages=[pb.Message(role=pb.ROLE_USER, content="tell me")],
                task_type=policy_pb2.TASK_TYPE_CHAT,
            )
        )
        assert [part async for part in stream][-1].route.model == "cheap"
        live_usd += usd(70, 30, CHEAP)
        # Refused before the policy ran: no policy inputs.
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Chat(chat("x", preferred_model="nonexistent"))

    log = tmp_path / "decisions.jsonl"
    lines = [json.loads(text) for text in log.read_text().splitlines()]
    assert len(lines) == 12
    text = log.read_text()
    assert "merger" not in text and CARD not in text  # inputs, never content
    assert lines[3]["policy_inputs"]["request"]["labels"]["team"] == "search"
    candidate = folder(tmp_path / "candidate", CANDIDATE)
    out = StringIO()
    status = run_replay(
        candidate,
        log,
        parse_config(gateway_data, base_dir=ROOT / "config"),
        out,
        output_format="json",
    )
    assert status == 0
    report = json.loads(out.getvalue())
    assert report["lines"] == 12 and report["replayed"] == 10
    assert report["skipped"] == {SKIP_DRY_RUN: 1, SKIP_NO_INPUTS: 1}
    assert report["changed"] == 4
    assert report["changed_share"] == pytest.approx(0.4)
    table = {(row["live"], row["candidate"]): row["count"] for row in report["models"]}
    assert table == {
        ("cheap", "cheap"): 4,
        ("cheap", "strong"): 2,
        ("local", "local"): 2,
        ("local", "refused (DATA_RESIDENCY)"): 1,
        ("refused (POLICY_DENIED)", "cheap"): 1,
    }
    assert report["rules"]["candidate"] == {
        "candidate/4": 5,
        "candidate/2": 2,
        "candidate/3": 2,
        "candidate/1": 1,
    }
    assert report["rules"]["live"] == {"live/4": 6, "live/3": 2, "live/2": 1, "live/1": 1}
    assert report["refusals"] == {
        "added": {"DATA_RESIDENCY": 1},
        "removed": {"POLICY_DENIED": 1},
    }
    cheap_code = usd(300, 400, CHEAP) + usd(300, 401, CHEAP)
    candidate_usd = live_usd - cheap_code + strong_usd + estimate_usd
    cost = report["cost"]
    assert cost["live_usd"] == pytest.approx(live_usd, rel=1e-12)
    assert cost["candidate_usd"] == pytest.approx(candidate_usd, rel=1e-12)
    assert cost["difference_usd"] == pytest.approx(candidate_usd - live_usd, rel=1e-12)
    assert cost["estimated"] == 1

    # The CI gate, through the command as a pipeline runs it.
    config_path = tmp_path / "celgate.yaml"
    config_path.write_text(yaml.safe_dump(gateway_data))
    args = ["policy", "replay", str(candidate), "--decisions", str(log)]
    args += ["--config", str(config_path)]
    increase = (candidate_usd - live_usd) / live_usd * 100
    assert main([*args, "--max-changed", "40%", f"--max-cost-increase={increase + 1}%"]) == 0
    assert main([*args, "--max-changed", "39%"]) == 1
    assert main([*args, f"--max-cost-increase={increase - 1}%"]) == 1
    # A window that holds none of it, and a tenant that sent none of it.
    assert main([*args, "--since", "2100-01-01", "--max-changed", "0%"]) == 0
    assert main([*args, "--tenant", "nobody", "--max-changed", "0%"]) == 0
