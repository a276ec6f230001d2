"""Client code for callers: the Python client's committed stubs match proto/, live beside the
server's without colliding, and the protos carry the package options buf.gen.yaml relies on
for Go and Java; `buf generate` writes Go, Java and TypeScript where buf and the plugins are
installed."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
STUBS = CLIENT / "src" / "celgate_client" / "v1"


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("client_generate", CLIENT / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_client_stubs_are_fresh(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)  # type: ignore[attr-defined]
    names = sorted(p.name for p in written)
    assert "gateway_pb2.py" in names and "gateway_pb2_grpc.py" in names
    committed = sorted(p.name for p in STUBS.iterdir() if p.is_file())
    assert committed == names, "run `make proto` and commit clients/python/src/celgate_client/v1"
    for path in written:
        if (STUBS / path.name).read_bytes() != path.read_bytes():
            pytest.fail(f"{path.name} is stale: run `make proto` and commit the result")


def test_client_stubs_import_their_own_package_only() -> None:
    for path in STUBS.glob("*_pb2*"):
        imports = re.findall(r"^\s*(?:from|import) ([\w.]+)", path.read_text(), re.MULTILINE)
        assert not [name for name in imports if name.split(".")[0] == "gateway"], path.name
        assert "celgate_client.v1" in imports or path.name.startswith("policy_"), path.name


def test_client_and_server_stubs_share_one_process() -> None:
    """The descriptors are identical, so protobuf accepts both registrations, and a message
    built with one decodes with the other."""
    from celgate_client.v1 import gateway_pb2 as client_pb

    from gateway.v1 import gateway_pb2 as server_pb

    # protobuf keeps one class per descriptor: whichever module loaded first made it.
    assert client_pb.ChatRequest.DESCRIPTOR is server_pb.ChatRequest.DESCRIPTOR
    assert client_pb.DESCRIPTOR.serialized_pb == server_pb.DESCRIPTOR.serialized_pb
    sent = client_pb.ChatRequest(
        messages=[client_pb.Message(role=client_pb.ROLE_USER, content="hi")],
        preferred_model="local",
        labels={"team": "a"},
    )
    received = server_pb.ChatRequest.FromString(sent.SerializeToString())
    assert received.messages[0].content == "hi" and received.labels["team"] == "a"


def test_protos_name_go_and_java_packages() -> None:
    from gateway.v1 import gateway_pb2, policy_pb2

    for module in (gateway_pb2, policy_pb2):
        options = module.DESCRIPTOR.GetOptions()
        assert options.go_package == "github.com/celgate/celgate/gen/go/gateway/v1;gatewayv1"
        assert options.java_package == "dev.celgate.gateway.v1"
        assert options.java_multiple_files


def test_buf_gen_yaml_covers_go_java_and_typescript() -> None:
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    assert template["version"] == "v2"
    outs = {plugin["out"] for plugin in template["plugins"]}
    assert outs == {"gen/go", "gen/java", "gen/ts"}
    assert template["inputs"] == [{"directory": "proto"}]


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(ROOT / "node_modules" / ".bin"))


def test_buf_generate_writes_go_java_and_typescript(tmp_path: Path) -> None:
    """Runs where buf and the plugins are installed (buf.gen.yaml says how)."""
    needed = ["buf", "protoc", "protoc-gen-go", "protoc-gen-go-grpc", "protoc-gen-es"]
    needed.append("protoc-gen-grpc-java")
    missing = [name for name in needed if _tool(name) is None]
    if missing:
        pytest.skip("not installed: " + ", ".join(missing))
    path = os.pathsep.join(
        {str(Path(str(_tool(name))).parent) for name in needed} | {os.environ.get("PATH", "")}
    )
    env = {**os.environ, "PATH": path}
    for args in (["buf", "lint"], ["buf", "generate", "-o", str(tmp_path)]):
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    go = (tmp_path / "gen/go/gateway/v1/gateway_grpc.pb.go").read_text()
    assert "package gatewayv1" in go and "GatewayServiceClient" in go
    java = tmp_path / "gen/java/dev/celgate/gateway/v1"
    assert "package dev.celgate.gateway.v1;" in (java / "GatewayServiceGrpc.java").read_text()
    assert (java / "ChatRequest.java").exists()
    ts = (tmp_path / "gen/ts/gateway/v1/gateway_pb.ts").read_text()
    assert "export const GatewayService" in ts
