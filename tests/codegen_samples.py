# mypy: disable-error-code="empty-body"
"""Interfaces for tests/test_codegen*.py: unions that hold bytes, recursion, awkward names."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Literal

import attrs

import tether


@attrs.frozen
class Blob:
    """Raw content and its name."""

    kind: Literal["blob"]
    data: bytes
    name: str = ""


@attrs.frozen
class Link:
    kind: Literal["link"]
    url: str


@dataclasses.dataclass
class Tree:
    """A tree of labels: it holds itself."""

    label: str
    ident: uuid.UUID
    created: datetime.datetime | None = None
    children: list[Tree] = dataclasses.field(default_factory=list)


@tether.remote_error
class QuotaExceeded(Exception):
    """Not an attrs class: it crosses with its args."""


class Storage(tether.RpcInterface):
    """Stores blobs and links. A comment with */ in it stays a comment."""

    interface_name = "test.Storage"
    interface_version = "2.1.0"

    async def put(self, item: Blob | Link, default: bool = False) -> uuid.UUID:
        """Store `item`; `default` makes it the default one."""

    async def get(self, ident: uuid.UUID) -> Blob | Link | None: ...

    async def pack(
        self, parts: dict[str, list[bytes]], day: datetime.date
    ) -> tuple[bytes, int]: ...

    async def grow(self, root: Tree) -> Tree: ...

    def upload(self, options: str, chunks: tether.Stream[Blob]) -> tether.Stream[int]: ...


class Ticks(tether.NotificationInterface):
    channel_name = "test.ticks"

    async def tick(self, n: int, raw: bytes | None) -> None: ...


#: A list target: written in this order.
BOTH = (Ticks, Storage)
