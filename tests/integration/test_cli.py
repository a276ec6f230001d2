"""The `celgate` command as a newcomer uses it, each run as a real process."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes._server import Reply
from tests.fakes.ollama_server import FakeOllama
from tests.harness import ROOT, GatewayProcess, config_data, ollama_model, serve_once

pytestmark = pytest.mark.integration


def celgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_route_chat_models_and_costs(ollama: FakeOllama, tmp_path: Path) -> None:
    ollama.reset()
    ollama.enqueue(Reply(content="Hello from the local model."))
    data = config_data(
        {"local": ollama_model(ollama.url), "other": ollama_model("http://127.0.0.1:9")},
        "local",
    )
    with GatewayProcess(data, tmp_path) as gateway:
        route = celgate("route", "--target", gateway.address, "email jane.roe@acme-corp.io")
        assert route.returncode == 0, route.stderr
        assert "model=local" in route.stdout and "rule=preferred/2" in route.stdout
        assert "detected pii.email x1" in route.stdout
        assert "jane.roe" not in route.stdout  # findings never carry the value
        assert ollama.request_count == 0  # the dry run calls no model

        chat = celgate("chat", "--target", gateway.address, "Say hello")
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.startswith("Hello from the local model.")
        assert "model=local" in chat.stdout

        refused = celgate("chat", "--target", gateway.address, "--model", "nope", "hi")
        assert refused.returncode == 1
        assert "INVALID_ARGUMENT" in refused.stderr and "preferred_model" in refused.stderr

        models = celgate("models", "--config", str(gateway.config_path))
        assert models.returncode == 0
        assert models.stdout.splitlines()[1].split()[:4] == [
            "local",
            "ollama",
            "llama3.1:8b",
            "on_prem",
        ]
    costs = celgate("costs", "--config", str(gateway.config_path), "--by", "model")
    assert costs.returncode == 0, costs.stderr
    assert "local" in costs.stdout


def test_policy_check_points_at_the_broken_line(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "policy.yaml").write_text(
        "name: broken\nrule:\n  match:\n    - condition: request.complexty > 0.5\n"
        '      output: >\n        RouteDecision{model: "x"}\n'
    )
    done = celgate("policy", "check", str(tmp_path))
    assert done.returncode == 1
    assert f"{folder / 'policy.yaml'}:4:" in done.stdout + done.stderr
    assert "complexty" in done.stdout + done.stderr
    ok = celgate("policy", "test", str(ROOT / "policies"))
    assert ok.returncode == 0, ok.stdout
    assert "coverage" in ok.stdout


def test_keys_new_prints_a_key_and_its_config_line() -> None:
    done = celgate("keys", "new", "--tenant", "team-a")
    assert done.returncode == 0
    assert "cg_" in done.stdout and "sha256:" in done.stdout


def test_start_up_failures_are_one_line_without_a_trace(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    data = config_data({"local": ollama_model("http://127.0.0.1:9")}, "local")
    data["server"]["listen"] = f"127.0.0.1:{port}"
    with taken:
        busy = serve_once(data, tmp_path)
    assert busy.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr

    data["server"]["listen"] = "127.0.0.1:0"
    data["ledger"] = {"backend": "redis", "url": f"redis://:s3cret-pass@127.0.0.1:{port}/0"}
    redis_down = serve_once(data, tmp_path)
    assert redis_down.returncode == 1
    assert "ledger.url" in redis_down.stderr and "unreachable" in redis_down.stderr
    assert "s3cret-pass" not in redis_down.stderr and "Traceback" not in redis_down.stderr

    data["ledger"] = {"backend": "redis", "url_env": "CELGATE_TEST_UNSET_REDIS_URL"}
    unset = serve_once(data, tmp_path)
    assert unset.returncode == 2
    assert "ledger.url_env: environment variable CELGATE_TEST_UNSET_REDIS_URL is not set" in (
        unset.stderr
    )
