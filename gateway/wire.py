"""Requests that are not valid protobuf: which field is wrong, in words a caller can act on.

gRPC hands the gateway raw bytes; when they do not parse (truncated, a string field holding
bytes that are not UTF-8, nesting beyond protobuf's recursion limit), the protobuf runtime
says only "Error parsing message". `explain` walks the wire format against the message's
descriptor and names the first field it cannot read (`messages[2].content: is not valid
UTF-8`), so the caller gets INVALID_ARGUMENT naming the field instead of an internal error.
Nothing of the field's content is ever quoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

M = TypeVar("M", bound=Message)

# protobuf's own default recursion limit for parsing.
MAX_DEPTH = 100

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True, slots=True)
class Malformed:
    """Stands in for a request that could not be parsed; the handler refuses it."""

    field: str
    problem: str


class _Bad(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def _varint(data: bytes, pos: int, end: int, path: str, what: str) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end:
            raise _Bad(path, f"truncated {what}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Bad(path, f"malformed {what} (longer than 10 bytes)")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _walk(descriptor: Descriptor, data: bytes, pos: int, end: int, prefix: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Bad(prefix or "(message)", f"is nested more than {MAX_DEPTH} levels deep")
    seen: dict[int, int] = {}
    while pos < end:
        tag, pos = _varint(data, pos, end, prefix or "(message)", "field tag")
        number, wire = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number)
        if field is None:
            name = _join(prefix, f"<unknown field {number}>")
        else:
            index = seen.get(number, 0)
            seen[number] = index + 1
            repeated = field.is_repeated
            name = _join(prefix, f"{field.name}[{index}]" if repeated else field.name)
        if number == 0:
            raise _Bad(prefix or "(message)", "holds a field numbered 0 (not protobuf)")
        if wire == _VARINT:
            _, pos = _varint(data, pos, end, name, "number")
        elif wire in (_I64, _I32):
            pos += 8 if wire == _I64 else 4
            if pos > end:
                raise _Bad(name, "truncated fixed-width number")
        elif wire == _LEN:
            length, pos = _varint(data, pos, end, name, "length")
            if pos + length > end:
                raise _Bad(name, "length runs past the end of the message (truncated)")
            if field is not None:
                _check_value(field, data, pos, pos + length, name, depth)
            pos += length
        elif wire in (_SGROUP, _EGROUP):
            raise _Bad(name, "uses the group encoding, which these messages never use")
        else:
            raise _Bad(name, f"has an invalid wire type {wire}")


def _check_value(
    field: FieldDescriptor, data: bytes, start: int, end: int, name: str, depth: int
) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(name, "is not valid UTF-8 text") from None
    elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        _walk(field.message_type, data, start, end, name, depth + 1)


def explain(descriptor: Descriptor, data: bytes) -> Malformed:
    """The first field of `data` that cannot be read as `descriptor`'s message."""
    try:
        _walk(descriptor, data, 0, len(data), "", 0)
    except _Bad as bad:
        return Malformed(bad.path, bad.problem)
    return Malformed("(message)", f"is not a valid {descriptor.full_name} message")


class SafeDeserializer(Generic[M]):
    """A gRPC request deserializer that never raises: unparseable bytes become `Malformed`."""

    def __init__(self, message_type: type[M]) -> None:
        self._type = message_type

    def __call__(self, data: bytes) -> M | Malformed:
        try:
            return self._type.FromString(data)
        except (DecodeError, RecursionError, ValueError):
            return explain(cast(Descriptor, self._type.DESCRIPTOR), data)
