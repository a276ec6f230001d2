"""The HTTP API as operators run it: `celgate serve` in its own process answering the openai SDK;
and over TLS with the gRPC port's certificate, API keys or client certificates (mutual TLS)
naming the tenant exactly as they do on gRPC."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cryptography import x509

from gateway.auth import hash_key
from gateway.config import parse_config
from gateway.server import Gateway, running
from tests.fakes._server import Reply
from tests.fakes.ollama_server import FakeOllama
from tests.harness import TEST_POLICY, GatewayProcess, config_data, free_port, ollama_model
from tests.integration.test_auth_tls import Issued, issue

pytestmark = pytest.mark.integration

KEY = "cg_proc___" + "p" * 30
SPIFFE = "spiffe://cluster/ns/a/sa/app"


def test_celgate_serve_answers_the_openai_sdk(tmp_path: Path) -> None:
    http_port = free_port()
    log = tmp_path / "decisions.jsonl"
    with FakeOllama() as ollama:
        ollama.enqueue(Reply(content="Paris.", prompt_tokens=5, completion_tokens=2))
        ollama.enqueue(Reply(content="one two"))
        data = config_data(
            {"local": ollama_model(ollama.url)},
            "local",
            http={"listen": f"127.0.0.1:{http_port}"},
            auth={"mode": "api_key", "api_keys": [{"tenant": "proc", "sha256": hash_key(KEY)}]},
            audit={"decision_log": str(log)},
        )
        with GatewayProcess(data, tmp_path) as gateway:
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{http_port}/v1", api_key=KEY, max_retries=0
            )
            completion = client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "Capital of France?"}]
            )
            stream = client.chat.completions.create(
                model="local",
                messages=[{"role": "user", "content": "count"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            models = [m.id for m in client.models.list()]
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(
                    base_url=f"http://127.0.0.1:{http_port}/v1", api_key="wrong", max_retries=0
                ).models.list()
            gateway.terminate()
            assert gateway.wait() == 0
    assert completion.choices[0].message.content == "Paris."
    assert text == "one two"
    assert models == ["auto", "local"]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["rpc"], line["tenant"], line["status"]) for line in lines] == [
        ("Chat", "proc", "OK"),
        ("ChatStream", "proc", "OK"),
    ]


def test_http_listener_is_off_unless_configured(tmp_path: Path) -> None:
    data = config_data({"local": ollama_model("http://127.0.0.1:9")}, "local")
    config = parse_config(data, base_dir=tmp_path)
    assert config.http.listen is None


def test_unauthenticated_http_off_loopback_is_refused(tmp_path: Path) -> None:
    data = config_data(
        {"local": ollama_model("http://127.0.0.1:9")}, "local", http={"listen": "0.0.0.0:8080"}
    )
    with pytest.raises(Exception, match=r"http\.listen '0\.0\.0\.0:8080' is not a loopback"):
        parse_config(data, base_dir=tmp_path)


# --- TLS ----------------------------------------------------------------------------------------


def write_pki(directory: Path) -> dict[str, Issued]:
    ca = issue("celgate test CA")
    server = issue(
        "celgate",
        ca,
        server=True,
        sans=[x509.DNSName("localhost")],
    )
    issued = {
        "ca": ca,
        "server": server,
        "known": issue("app", ca, sans=[x509.UniformResourceIdentifier(SPIFFE)]),
        "unmapped": issue("intruder", ca),
    }
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    (directory / "tls.crt").write_bytes(server.cert_pem)
    (directory / "tls.key").write_bytes(server.key_pem)
    for name in ("known", "unmapped"):
        (directory / f"{name}.crt").write_bytes(issued[name].cert_pem)
        (directory / f"{name}.key").write_bytes(issued[name].key_pem)
    return issued


@pytest.fixture
async def tls_gateway(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Gateway, Path]]:
    write_pki(tmp_path)
    mtls = request.param == "mtls"
    tls: dict[str, Any] = {"cert_file": "tls.crt", "key_file": "tls.key"}
    auth: dict[str, Any]
    if mtls:
        tls["client_ca_file"] = "ca.crt"
        auth = {"mode": "mtls", "client_tenants": {SPIFFE: "team-spiffe"}}
    else:
        auth = {"mode": "api_key", "api_keys": [{"tenant": "team-key", "sha256": hash_key(KEY)}]}
    data = {
        "server": {"listen": "127.0.0.1:0", "tls": tls},
        "http": {"listen": "127.0.0.1:0"},
        "auth": auth,
        "models": {"local": ollama_model("http://127.0.0.1:9")},
        "default_model": "local",
        "policy": {"dir": str(TEST_POLICY), "watch": False},
        "ledger": {"path": "ledger.db"},
        "audit": {"decision_log": "decisions.jsonl"},
    }
    async with running(parse_config(data, base_dir=tmp_path)) as gateway:
        yield gateway, tmp_path


def tls_client(
    gateway: Gateway, pki: Path, *, key: str = "unused", cert: str | None = None
) -> openai.AsyncOpenAI:
    assert gateway.http is not None
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert is not None:
        context.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
    return openai.AsyncOpenAI(
        base_url=f"https://localhost:{gateway.http.port}/v1",
        api_key=key,
        max_retries=0,
        http_client=httpx.AsyncClient(verify=context),
    )


@pytest.mark.parametrize("tls_gateway", ["api_key"], indirect=True)
async def test_api_keys_over_tls(tls_gateway: tuple[Gateway, Path]) -> None:
    gateway, pki = tls_gateway
    models = await tls_client(gateway, pki, key=KEY).models.list()
    assert [m.id for m in models.data] == ["auto", "local"]
    with pytest.raises(openai.AuthenticationError):
        await tls_client(gateway, pki, key="wrong").models.list()
    # Plaintext is not served on a TLS port.
    assert gateway.http is not None
    plain = openai.AsyncOpenAI(
        base_url=f"http://localhost:{gateway.http.port}/v1", api_key=KEY, max_retries=0
    )
    with pytest.raises(openai.APIConnectionError):
        await plain.models.list()


@pytest.mark.parametrize("tls_gateway", ["mtls"], indirect=True)
async def test_client_certificates_name_the_tenant(tls_gateway: tuple[Gateway, Path]) -> None:
    gateway, pki = tls_gateway
    # The Route-free probe: a chat the policy sends to an unreachable model fails with 503,
    # but only after authentication, whose tenant the decision log records.
    with pytest.raises(openai.InternalServerError):
        await tls_client(gateway, pki, cert="known").chat.completions.create(
            model="local", messages=[{"role": "user", "content": "hi"}]
        )
    lines = [json.loads(line) for line in (pki / "decisions.jsonl").read_text().splitlines()]
    assert lines[-1]["tenant"] == "team-spiffe"
    with pytest.raises(openai.AuthenticationError) as unmapped:
        await tls_client(gateway, pki, cert="unmapped").models.list()
    assert "client certificate" in unmapped.value.message
    # No certificate at all: the handshake itself fails.
    with pytest.raises(openai.APIConnectionError):
        await tls_client(gateway, pki).models.list()


async def test_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    write_pki(tmp_path)
    data = {
        "server": {"listen": "127.0.0.1:0", "tls": {"cert_file": "tls.crt", "key_file": "tls.key"}},
        "http": {"listen": "127.0.0.1:0"},
        "auth": {"mode": "api_key", "api_keys": [{"tenant": "t", "sha256": hash_key(KEY)}]},
        "models": {"local": ollama_model("http://127.0.0.1:9")},
        "default_model": "local",
        "policy": {"dir": str(TEST_POLICY), "watch": False},
        "ledger": {"path": "ledger.db"},
    }
    async with running(parse_config(data, base_dir=tmp_path)) as gateway:
        await tls_client(gateway, tmp_path, key=KEY).models.list()
        # cert-manager renews: a new CA signs a new pair, written in place.
        renewed = tmp_path / "renewed"
        renewed.mkdir()
        write_pki(renewed)
        for name in ("tls.crt", "tls.key"):
            (tmp_path / name).write_bytes((renewed / name).read_bytes())
        models = await tls_client(gateway, renewed, key=KEY).models.list()
        assert [m.id for m in models.data] == ["auto", "local"]
        with pytest.raises(openai.APIConnectionError):
            await tls_client(gateway, tmp_path, key=KEY).models.list()  # the old CA no longer
