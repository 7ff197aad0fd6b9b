"""Streams type-check under `mypy --strict`: the declaration, the impl and the caller.

The impl's async generator overrides the declaration's `def ... -> Stream[T]`,
a client-stream impl takes `Stream[T]`, and `open_stream` gives the caller an
`AsyncIterator[T]`. Two variants show the check can fail: an item used as the
wrong type, and a list passed where a stream is expected.
"""

from __future__ import annotations

from pathlib import Path

from test_docs_mypy import run_mypy

STREAMS_MODULE = """\
# mypy: disable-error-code="empty-body"
from collections.abc import AsyncIterator

import attrs
import trio

import tether
from tether.transports import memory


@attrs.frozen
class Position:
    x: float
    y: float


class Telemetry(tether.RpcInterface):
    interface_name = "Telemetry"
    interface_version = "1.0.0"

    def watch(self, robot_id: str, every: float) -> tether.Stream[Position]: ...
    async def upload(self, key: str, chunks: tether.Stream[bytes]) -> int: ...
    def steer(self, commands: tether.Stream[Position]) -> tether.Stream[Position]: ...


class TelemetryImpl(Telemetry):
    async def watch(self, robot_id: str, every: float) -> AsyncIterator[Position]:
        while True:
            yield Position(0.0, 0.0)
            await trio.sleep(every)

    async def upload(self, key: str, chunks: tether.Stream[bytes]) -> int:
        total = 0
        async for chunk in chunks:
            total += len(chunk)
        return total

    async def steer(self, commands: tether.Stream[Position]) -> AsyncIterator[Position]:
        async for command in commands:
            yield Position(command.x + 1, command.y)


class Follow(tether.IpcInterface):
    channel_name = "follow"
    version = "1.0.0"

    def follow(self, key: str) -> tether.Stream[int]: ...


class FollowHandler(tether.IpcHandler, Follow):
    async def follow(self, key: str) -> AsyncIterator[int]:
        yield 1


async def chunks() -> AsyncIterator[bytes]:
    yield b"abc"


async def main() -> None:
    manager = tether.RpcManager()
    manager.register_impl(Telemetry, TelemetryImpl)
    async with memory.connect(manager, interfaces=[Telemetry]) as backend:
        telemetry = backend.get_client(Telemetry)
        async with tether.open_stream(telemetry.watch("r1", 0.1)) as positions:
            async for p in positions:
                x: float = p.x
                print(x)
        total: int = await telemetry.upload("k", chunks())
        async with tether.open_stream(telemetry.steer(telemetry.watch("r1", 0.1))) as steered:
            first: Position = await anext(steered)
        print(total, first)
"""


def test_streams_type_check_and_misuse_does_not(tmp_path: Path) -> None:
    wrong_item = STREAMS_MODULE.replace("x: float = p.x", "x: str = p.x")
    wrong_source = STREAMS_MODULE.replace('upload("k", chunks())', 'upload("k", [b"abc"])')
    modules = {"streams": STREAMS_MODULE, "wrong_item": wrong_item, "wrong_source": wrong_source}
    errors = run_mypy(tmp_path, modules)
    assert errors["streams"] == []
    assert [code for _, code, _ in errors["wrong_item"]] == ["assignment"], errors["wrong_item"]
    assert [code for _, code, _ in errors["wrong_source"]] == ["arg-type"], errors["wrong_source"]
