# mypy: disable-error-code="empty-body"
"""Interfaces `tether codegen typescript` refuses, each for one reason (tests/test_codegen*.py)."""

from __future__ import annotations

import attrs

import tether
from tether import BackendIpc
from tether.testing._rpc_samples import Point as SamplePoint


@attrs.frozen
class Node:
    data: bytes
    next: Node | None = None


class HoldsRecursiveBytes(tether.RpcInterface):
    interface_name = "bad.Recursive"
    interface_version = "1.0.0"

    async def first(self, node: Node) -> None: ...


@attrs.frozen
class Point:
    lat: float
    lon: float


class TwoPoints(tether.RpcInterface):
    interface_name = "bad.TwoPoints"
    interface_version = "1.0.0"

    async def join(self, a: Point, b: SamplePoint) -> None: ...


class SameCamelCase(tether.IpcInterface):
    channel_name = "bad.camel"
    version = "1.0.0"

    async def get_x(self) -> int: ...

    async def getX(self) -> int: ...


@attrs.frozen
class Record:
    key: str


class ShadowsRecord(tether.RpcInterface):
    interface_name = "bad.Record"
    interface_version = "1.0.0"

    async def keep(self, record: Record) -> None: ...


@attrs.frozen
class Photo:
    pixels: bytes


@attrs.frozen
class Sound:
    samples: bytes
    rate: int


class AmbiguousBytes(tether.RpcInterface):
    interface_name = "bad.Ambiguous"
    interface_version = "1.0.0"

    async def either(self, value: Photo | Sound) -> None: ...


#: Not interfaces.
EMPTY: list[type] = []
NAMES = ["HoldsRecursiveBytes"]
BACKEND = BackendIpc()
