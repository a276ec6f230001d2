"""Message types for a test suite: FileDescriptorSets and .proto files -> a descriptor pool.

cel-go's `pb` and `context_pb` suites use test protos (`google.expr.proto3.test.TestAllTypes`)
that neither the gateway nor cel-expr-python ships. A suite gets them from a binary
FileDescriptorSet (`protoc --include_imports --descriptor_set_out=FILE`) or from .proto files,
compiled at test time with grpcio-tools' bundled protoc when it is installed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import DecodeError

# The well-known types CEL itself uses, present in every suite pool.
_WELL_KNOWN = (
    any_pb2,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
PROTO_SUFFIX = ".proto"
DESCRIPTOR_SUFFIXES = (".binpb", ".pb", ".desc", ".protoset")


class DescriptorError(Exception):
    """Descriptors that cannot be read or compiled; the message names the file."""


def _read_set(path: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DescriptorError(f"{path}: cannot read: {exc.strerror}") from None
    files = descriptor_pb2.FileDescriptorSet()
    try:
        files.ParseFromString(data)
    except DecodeError:
        raise DescriptorError(
            f"{path}: not a binary FileDescriptorSet (write one with "
            "protoc --include_imports --descriptor_set_out=FILE)"
        ) from None
    return list(files.file)


def _compile_protos(
    sources: Sequence[Path], root: Path
) -> list[descriptor_pb2.FileDescriptorProto]:
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped]
    except ImportError:
        raise DescriptorError(
            f"{root}: compiling .proto files needs grpcio-tools; install it, or give a "
            "FileDescriptorSet (protoc --include_imports --descriptor_set_out=FILE)"
        ) from None
    import grpc_tools

    bundled = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        args = [
            "protoc",
            f"-I{root}",
            f"-I{bundled}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *(str(s.relative_to(root)) for s in sources),
        ]
        # protoc writes its diagnostics (file:line:col: message) to stderr itself.
        if protoc.main(args) != 0 or not out.is_file():
            raise DescriptorError(f"{root}: protoc could not compile {len(sources)} .proto file(s)")
        return _read_set(out)


# One `policy test` run hands the same --descriptors to every suite: compile them once.
_CACHE: dict[tuple[str, int], list[descriptor_pb2.FileDescriptorProto]] = {}


def _stamp(path: Path) -> int:
    """Changes when the file, or any .proto under the folder, changes."""
    try:
        if path.is_dir():
            return hash(tuple((str(p), p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))))
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def files_of(path: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    """A FileDescriptorSet file, a .proto file, or a folder of .proto files (recursively)."""
    path = Path(path)
    key = (str(path.resolve()), _stamp(path))
    if key not in _CACHE:
        _CACHE[key] = _files_of(path)
    return _CACHE[key]


def _files_of(path: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    if path.is_dir():
        sources = sorted(path.rglob(f"*{PROTO_SUFFIX}"))
        if not sources:
            raise DescriptorError(f"{path}: no {PROTO_SUFFIX} files")
        return _compile_protos(sources, path)
    if path.suffix == PROTO_SUFFIX:
        return _compile_protos([path], path.parent)
    if not path.is_file():
        raise DescriptorError(f"{path}: no such file")
    return _read_set(path)


def build_pool(paths: Iterable[Path]) -> descriptor_pool.DescriptorPool | None:
    """A pool of the well-known types plus every file of `paths`; None when `paths` is empty."""
    files: list[descriptor_pb2.FileDescriptorProto] = []
    for path in paths:
        files.extend(files_of(path))
    if not files:
        return None
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for module in _WELL_KNOWN:
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
        added.add(proto.name)
    for proto in files:
        if proto.name in added:
            continue
        try:
            pool.Add(proto)
        except (TypeError, ValueError) as exc:
            raise DescriptorError(f"{proto.name}: cannot be added: {exc}") from None
        added.add(proto.name)
    return pool


def suite_descriptor_paths(folder: Path) -> list[Path]:
    """Descriptors a suite folder carries: FileDescriptorSets and .proto files beside it."""
    found = [p for p in sorted(folder.iterdir()) if p.suffix in DESCRIPTOR_SUFFIXES]
    if any(p.suffix == PROTO_SUFFIX for p in folder.iterdir()):
        found.append(folder)
    return found
