"""Regenerate the client's stubs (src/celgate_client/v1/) from ../../proto.

The stubs are protoc's own output with one change: they import `celgate_client.v1` instead of
the server's `gateway.v1`. The serialized descriptors are left untouched (file names
`gateway/v1/*.proto`, package `gateway.v1`), so the client and the server's generated modules
can live in one process: protobuf accepts a file registered twice when both copies are
identical.

Run from anywhere with an interpreter that has grpcio-tools: `python clients/python/generate.py`
(`make proto` does it after regenerating the server's stubs).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTOS = ("gateway/v1/policy.proto", "gateway/v1/gateway.proto")
PACKAGE = "celgate_client.v1"
TARGET = HERE / "src" / "celgate_client" / "v1"

_IMPORT = re.compile(r"^from gateway\.v1 import ", re.MULTILINE)
_MODULE_NAME = re.compile(r"'gateway\.v1\.(\w+_pb2)'")
INIT = '"""Generated from proto/gateway/v1 by clients/python/generate.py. Do not edit."""\n'


def _rewrite(text: str) -> str:
    text = _IMPORT.sub(f"from {PACKAGE} import ", text)
    # The module name protobuf gives the generated classes (their __module__).
    return _MODULE_NAME.sub(rf"'{PACKAGE}.\1'", text)


def generate(target: Path = TARGET) -> list[Path]:
    """Write the stubs into `target` (created, previous *_pb2* files replaced)."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *[str(PROTO_ROOT / p) for p in PROTOS],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        target.mkdir(parents=True, exist_ok=True)
        for stale in target.glob("*_pb2*"):
            stale.unlink()
        written = []
        for source in sorted((out / "gateway" / "v1").iterdir()):
            dest = target / source.name
            dest.write_text(_rewrite(source.read_text()))
            written.append(dest)
        (target / "__init__.py").write_text(INIT)
        written.append(target / "__init__.py")
    shutil.rmtree(target / "__pycache__", ignore_errors=True)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET):
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
