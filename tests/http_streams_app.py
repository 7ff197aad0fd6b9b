"""The stream interface the HTTP stream tests serve (in the test process, or in a
child: `python tests/http_streams_app.py` serves it on 127.0.0.1 and prints
`url <url>`, then `item <n>` as `forever` yields, for a test that kills it).
Not a test module itself.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

import tether
from tether.transports import http


@attrs.frozen
class Position:
    x: float
    y: float


@tether.remote_error(name="tests.http_streams.RobotLost")
@attrs.define
class RobotLost(Exception):
    robot_id: str
    last_seen: int


class Telemetry(tether.RpcInterface):
    interface_name = "HttpTelemetry"
    interface_version = "1.0.0"

    def watch(self, robot_id: str, count: int) -> tether.Stream[Position]:
        """`count` positions of a robot."""

    def forever(self, key: str, size: int) -> tether.Stream[str]:
        """Numbers 0, 1, 2... as text padded to `size` characters, until cancelled."""

    def lose(self, robot_id: str, after: int) -> tether.Stream[int]:
        """`after` numbers, then RobotLost."""

    def blobs(self, count: int, size: int) -> tether.Stream[bytes]:
        """`count` blobs of `size` bytes."""

    async def upload(self, key: str, chunks: tether.Stream[bytes]) -> int:
        """The total length of the chunks."""

    async def total(self, numbers: tether.Stream[int]) -> int:
        """The sum of the numbers."""

    async def gated(self, key: str, chunks: tether.Stream[bytes]) -> int:
        """The total length of the chunks, read once the test opens the gate."""

    async def first(self, numbers: tether.Stream[int]) -> int:
        """The first number; the rest are not read."""

    def steer(self, commands: tether.Stream[Position]) -> tether.Stream[Position]:
        """Each command, applied (a two-way stream)."""


class Tracker:
    """What the impls did, for the tests to wait on."""

    def __init__(self) -> None:
        self.produced: dict[str, int] = {}
        self.closed: dict[str, trio.Event] = {}
        self.activity_ids: list[str | None] = []
        self.taken: dict[str, int] = {}
        self.on_item: Any = None
        self.gates: dict[str, trio.Event] = {}

    def gate(self, key: str) -> trio.Event:
        return self.gates.setdefault(key, trio.Event())

    def closed_event(self, key: str) -> trio.Event:
        return self.closed.setdefault(key, trio.Event())


class TelemetryImpl(Telemetry):
    tracker = Tracker()

    async def watch(self, robot_id: str, count: int) -> AsyncIterator[Position]:
        for n in range(count):
            context = tether.contexts.current()
            self.tracker.activity_ids.append(context.activity_id if context else None)
            yield Position(float(n), float(len(robot_id)))

    async def forever(self, key: str, size: int) -> AsyncIterator[str]:
        tracker = self.tracker
        tracker.produced[key] = 0
        closed = tracker.closed_event(key)
        try:
            n = 0
            while True:
                yield f"{n:>{size}}"
                n += 1
                tracker.produced[key] = n
                if tracker.on_item is not None:
                    tracker.on_item(key, n)
        finally:
            closed.set()

    async def lose(self, robot_id: str, after: int) -> AsyncIterator[int]:
        for n in range(after):
            yield n
        raise RobotLost(robot_id, after)

    async def blobs(self, count: int, size: int) -> AsyncIterator[bytes]:
        blob = bytes(range(256)) * (size // 256) + bytes(size % 256)
        for _ in range(count):
            yield blob

    async def upload(self, key: str, chunks: tether.Stream[bytes]) -> int:
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            self.tracker.taken[key] = self.tracker.taken.get(key, 0) + 1
        return size

    async def total(self, numbers: tether.Stream[int]) -> int:
        return sum([n async for n in numbers])

    async def gated(self, key: str, chunks: tether.Stream[bytes]) -> int:
        tracker = self.tracker
        try:
            await tracker.gate(key).wait()
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                tracker.taken[key] = tracker.taken.get(key, 0) + 1
            return size
        finally:
            tracker.closed_event(key).set()

    async def first(self, numbers: tether.Stream[int]) -> int:
        async for n in numbers:
            return n
        return -1

    async def steer(self, commands: tether.Stream[Position]) -> AsyncIterator[Position]:
        async for command in commands:
            yield command


def manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Telemetry, TelemetryImpl())
    return manager


async def main() -> None:
    TelemetryImpl.tracker.on_item = lambda key, n: print(f"item {n}", flush=True)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(http.serve, manager(), "127.0.0.1", 0))
        print(f"url {url}", flush=True)


if __name__ == "__main__":
    trio.run(main)
