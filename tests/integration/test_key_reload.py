"""Reloading API keys on a running `celgate serve` process: a key revoked by SIGHUP stays
revoked through later key-file changes (every reload starts from the files as they are now),
and the key-file watcher reacts to the file itself, including a Kubernetes Secret's symlink
swap, never to other files written in its folder (the decision log, a log file)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from gateway.auth import hash_key
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes.ollama_server import FakeOllama
from tests.harness import GatewayProcess, config_data, ollama_model

pytestmark = pytest.mark.integration

KEEP = "cg_keep_" + "k" * 30
REVOKE = "cg_revoke_" + "r" * 30
FILE_KEY = "cg_file_" + "f" * 30
NEW_KEY = "cg_new_" + "n" * 30
RELOADED = "API keys reloaded"


@pytest.fixture(scope="module")
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


def tenant_of(address: str, key: str) -> str | None:
    """The tenant the gateway maps `key` to, or None when it refuses the key."""
    with grpc.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = pb.RouteRequest(messages=[pb.Message(role=pb.ROLE_USER, content="x")])
        try:
            response = stub.Route(
                request, metadata=(("authorization", f"Bearer {key}"),), timeout=5
            )
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc.details()
            return None
        return str(response.context.tenant)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        threading.Event().wait(0.05)
    return check()


def test_a_revoked_key_never_comes_back(ollama: FakeOllama, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys" / "api-keys"
    keys_file.parent.mkdir()
    keys_file.write_text(f"team-c {hash_key(FILE_KEY)}\n")
    data = config_data(
        {"local": ollama_model(ollama.url)},
        "local",
        auth={
            "mode": "api_key",
            "api_keys": [
                {"tenant": "team-a", "sha256": hash_key(KEEP)},
                {"tenant": "team-b", "sha256": hash_key(REVOKE)},
            ],
            "api_keys_file": str(keys_file),
        },
    )
    with GatewayProcess(data, tmp_path) as gateway:
        address = gateway.address
        assert gateway.proc is not None
        assert tenant_of(address, REVOKE) == "team-b"
        # Revoke the inline key: edit the config, SIGHUP.
        on_disk = yaml.safe_load(gateway.config_path.read_text())
        on_disk["auth"]["api_keys"] = on_disk["auth"]["api_keys"][:1]
        gateway.config_path.write_text(yaml.safe_dump(on_disk))
        gateway.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: tenant_of(address, REVOKE) is None)
        # Any edit of the key file reloads the keys, from the config file as it is now.
        keys_file.write_text(f"team-c {hash_key(FILE_KEY)}\nteam-d {hash_key(NEW_KEY)}\n")
        assert eventually(lambda: tenant_of(address, NEW_KEY) == "team-d")
        assert tenant_of(address, REVOKE) is None
        assert tenant_of(address, KEEP) == "team-a"
        # A key removed from the key file stays out through a SIGHUP too.
        keys_file.write_text(f"team-d {hash_key(NEW_KEY)}\n")
        assert eventually(lambda: tenant_of(address, FILE_KEY) is None)
        gateway.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: gateway.output().count("access settings reloaded") >= 2)
        assert tenant_of(address, FILE_KEY) is None
        assert tenant_of(address, REVOKE) is None
        assert tenant_of(address, NEW_KEY) == "team-d"
        # A broken config file does not hold up a key-file revocation.
        gateway.config_path.write_text("models: [this is not a mapping\n")
        keys_file.write_text("# nobody\n")
        assert eventually(lambda: tenant_of(address, NEW_KEY) is None)
        assert tenant_of(address, REVOKE) is None
        assert tenant_of(address, KEEP) == "team-a"


def _secret_version(folder: Path, name: str, text: str) -> Path:
    version = folder / name
    version.mkdir()
    (version / "api-keys").write_text(text)
    return version


def _swap_data(folder: Path, version: Path) -> None:
    """What the kubelet does on a Secret update: point `..data` at the new version folder
    with an atomic rename of a fresh symlink, then delete the old version."""
    tmp = folder / "..data_tmp"
    tmp.symlink_to(version.name)
    old = os.readlink(folder / "..data")
    os.replace(tmp, folder / "..data")
    for child in (folder / old).iterdir():
        child.unlink()
    (folder / old).rmdir()


def test_key_watcher_reacts_to_the_file_only(ollama: FakeOllama, tmp_path: Path) -> None:
    folder = tmp_path / "secret"
    folder.mkdir()
    first = _secret_version(folder, "..2026_01_01", f"team-a {hash_key(KEEP)}\n")
    (folder / "..data").symlink_to(first.name)
    (folder / "api-keys").symlink_to("..data/api-keys")
    data = config_data(
        {"local": ollama_model(ollama.url)},
        "local",
        auth={"mode": "api_key", "api_keys_file": str(folder / "api-keys")},
        # The decision log is written into the key file's folder, one line per request.
        audit={"decision_log": str(folder / "decisions.jsonl")},
    )
    with GatewayProcess(data, tmp_path) as gateway:
        address = gateway.address
        for i in range(20):
            assert tenant_of(address, KEEP) == "team-a"
            (folder / "app.log").write_text(f"line {i}\n")
            threading.Event().wait(0.05)
        assert (folder / "decisions.jsonl").stat().st_size > 0
        threading.Event().wait(0.5)
        assert gateway.output().count(RELOADED) == 0, gateway.output()[-2000:]
        # The Secret is updated: the new key works, the old one is refused, one reload.
        second = _secret_version(folder, "..2026_01_02", f"team-b {hash_key(NEW_KEY)}\n")
        _swap_data(folder, second)
        assert eventually(lambda: tenant_of(address, NEW_KEY) == "team-b")
        assert tenant_of(address, KEEP) is None
        for i in range(10):
            tenant_of(address, NEW_KEY)
            (folder / "app.log").write_text(f"more {i}\n")
        threading.Event().wait(0.5)
        assert gateway.output().count(RELOADED) == 1, gateway.output()[-2000:]
