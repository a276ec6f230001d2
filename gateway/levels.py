"""Sensitivity levels, ordered. Values equal `gateway.v1.Classification` numbers."""

from __future__ import annotations

from enum import IntEnum
from typing import cast

from gateway.v1 import policy_pb2


class Level(IntEnum):
    PUBLIC = 1
    INTERNAL = 2
    CONFIDENTIAL = 3
    RESTRICTED = 4

    @classmethod
    def parse(cls, name: str) -> Level:
        """`"confidential"` -> `Level.CONFIDENTIAL`; raises ValueError naming the choices."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            choices = ", ".join(level.name for level in cls)
            raise ValueError(
                f"unknown classification {name!r}; expected one of {choices}"
            ) from None

    def proto(self) -> policy_pb2.Classification:
        """The `gateway.v1.Classification` value (the numbers are the same)."""
        return cast(policy_pb2.Classification, int(self))
