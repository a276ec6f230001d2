"""The committed generated code matches proto/: `make proto` was run after the last edit."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["gateway/v1/policy.proto", "gateway/v1/gateway.proto"]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        *[str(ROOT / "proto" / p) for p in PROTOS],
    ]
    assert protoc.main(args) == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc produced nothing"
    for rel in generated:
        committed = ROOT / rel
        if not committed.exists() or committed.read_bytes() != (tmp_path / rel).read_bytes():
            pytest.fail(f"{rel} is stale: run `make proto` and commit the result")


def test_buf_standard_enum_zero_values() -> None:
    from gateway.v1 import gateway_pb2, policy_pb2

    for module in (gateway_pb2, policy_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            assert enum.values[0].number == 0
            assert enum.values[0].name.endswith("_UNSPECIFIED"), enum.name
