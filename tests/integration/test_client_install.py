"""The Python client distribution installs into a fresh virtual environment (uv, from
clients/python) and calls a gateway running as its own process: chat, chat_stream, route and
list_models through both wrappers, and a refusal raised with its ErrorInfo. The server's
`gateway` package is not importable there, so nothing leans on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.auth import hash_key
from tests.fakes._server import Reply
from tests.fakes.ollama_server import FakeOllama
from tests.harness import ROOT, GatewayProcess, config_data, ollama_model

pytestmark = pytest.mark.integration

KEY = "cg_install_" + "k" * 30

SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.util, json, sys

    import celgate_client
    from celgate_client import AsyncClient, Client, PermissionDenied, Unauthenticated

    target, key = sys.argv[1], sys.argv[2]
    out = {"gateway_importable": importlib.util.find_spec("gateway") is not None,
           "installed_at": celgate_client.__file__}

    with Client(target, api_key=key) as client:
        reply = client.chat("Capital of France?", task_type="chat", labels={"team": "a"})
        out["chat"] = [reply.content, reply.route.model, bool(reply.route.decision_id)]
        parts = list(client.chat_stream([{"role": "user", "content": "Count"}]))
        out["stream"] = ["".join(p.content_delta for p in parts), parts[-1].route.model]
        plan = client.route("Summarize", classification="restricted")
        out["route"] = [plan.route.model, plan.context.classification, plan.context.tenant]
        out["models"] = sorted(m.alias for m in client.list_models())
        try:
            client.chat("hello", model="not-a-model")
        except celgate_client.InvalidArgument as error:
            out["invalid"] = [error.reason, error.bad_request.field_violations[0].field]

    async def run_async():
        async with AsyncClient(target, api_key=key) as client:
            reply = await client.chat("again")
            out["async_chat"] = reply.content
            out["async_stream"] = "".join(
                [p.content_delta async for p in client.chat_stream("stream again")]
            )
        async with AsyncClient(target, api_key="wrong") as stranger:
            try:
                await stranger.list_models()
            except Unauthenticated as error:
                out["unauthenticated"] = [error.code.name, error.reason, error.error_info.domain]

    asyncio.run(run_async())
    print(json.dumps(out))
    """
)


def _uv() -> str:
    for candidate in (ROOT / ".tools" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("uv is needed (make sets it up in .tools/)")


def _install(venv: Path) -> Path:
    uv = _uv()
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    subprocess.run(
        [uv, "venv", "-q", str(venv), "--python", sys.executable],
        check=True,
        env=env,
        timeout=120,
    )
    install = [uv, "pip", "install", "-q", "--python", str(python), str(ROOT / "clients/python")]
    # The uv cache usually has every wheel; the index is asked only when it does not.
    done = subprocess.run(
        [*install, "--offline"], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return python


def test_client_installs_into_a_clean_venv_and_calls_the_gateway(tmp_path: Path) -> None:
    python = _install(tmp_path / "venv")
    with FakeOllama() as ollama:
        ollama.enqueue(
            Reply(content="Paris."),
            Reply(content="one two three"),
            Reply(content="again"),
            Reply(content="streamed again"),
        )
        data = config_data(
            {"local": ollama_model(ollama.url)},
            "local",
            auth={"mode": "api_key", "api_keys": [{"tenant": "team-i", "sha256": hash_key(KEY)}]},
        )
        with GatewayProcess(data, tmp_path) as gateway:
            done = subprocess.run(
                [str(python), "-c", SCRIPT, gateway.address, KEY],
                # Not the checkout: only what the venv installed is importable.
                cwd=tmp_path,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                capture_output=True,
                text=True,
                timeout=120,
            )
    assert done.returncode == 0, done.stderr + gateway.output()
    out = json.loads(done.stdout)
    assert out["gateway_importable"] is False
    assert out["installed_at"].startswith(str(tmp_path / "venv"))
    assert out["chat"] == ["Paris.", "local", True]
    assert out["stream"] == ["one two three", "local"]
    assert out["route"] == ["local", 4, "team-i"]  # RESTRICTED, declared by the caller
    assert out["models"] == ["local"]
    assert out["invalid"] == ["INVALID_REQUEST", "preferred_model"]
    assert out["async_chat"] == "again"
    assert out["async_stream"] == "streamed again"
    assert out["unauthenticated"] == ["UNAUTHENTICATED", "UNAUTHENTICATED", "celgate"]
