# mypy: disable-error-code="empty-body"
# (interface operations are declared with `...` bodies)
"""The stream and binary cases of the RPC conformance suite (`RpcConformance` runs them).

A transport says which kinds of stream it carries with `stream_kinds`; for a
kind it documents it does not carry, the case checks that opening such a
stream is refused with `NotFound` (the family a caller gets for what a backend
cannot serve) instead of running it. Nothing is skipped.

The cases pass `stream_window=` and `max_message_size=` to `connect`: a
transport that carries streams must honour them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import pytest
import trio

from .. import contexts
from ..runtime import (
    ConnectionClosed,
    NotFound,
    PayloadTooLarge,
    RemoteError,
    RpcBackend,
    RpcInterface,
    RpcManager,
    StreamWindow,
    TetherError,
)
from ..runtime._protocol import Call, CallContext, Error, Item
from ..runtime._streams import Stream, open_stream
from ._probe import Probe

__all__ = ["ConformanceStreams", "RpcStreamCases", "StreamsImpl"]

#: Seconds a stream case may take.
STREAM_TIMEOUT = 10.0
#: Seconds the 64 MiB case may take (bytes go raw: well under one, unloaded).
BULK_TIMEOUT = 30.0
#: The bound the issue sets for a cancelled stream's state to be gone on both sides.
CLEANUP_BOUND = 1.0

MiB = 1024 * 1024


class ConformanceStreams(RpcInterface):
    """The stream operations the suite's backend serves beside `ConformanceInterface`."""

    interface_name = "tether.ConformanceStreams"
    interface_version = "1.0.0"

    def count(self, key: str, n: int) -> Stream[int]: ...
    async def total(self, key: str, values: Stream[int]) -> int: ...
    def scale(self, factor: int, values: Stream[int]) -> Stream[int]: ...
    def fail_after(self, n: int, kind: str) -> Stream[int]: ...
    async def take(self, n: int, values: Stream[int]) -> list[int]: ...
    def activities(self, n: int) -> Stream[str]: ...
    def seconds_left(self, key: str) -> Stream[float]: ...
    def chunks(self, key: str, count: int, size: int) -> Stream[bytes]: ...
    async def swallow(self, chunks: Stream[bytes]) -> int: ...


class StreamsImpl(ConformanceStreams):
    """The backend of the stream cases; `probe` carries its signals to the test.

    `produced[key]` counts the items of `count(key, ...)` the stream took (a
    `yield` that returned): the slow-consumer case compares it with what the
    caller consumed.
    """

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.produced: dict[str, int] = {}

    async def count(self, key: str, n: int) -> AsyncIterator[int]:
        self.probe.signal(f"started:{key}")
        self.produced[key] = 0
        try:
            i = 0
            while n < 0 or i < n:
                yield i
                i += 1
                self.produced[key] = i
                self.probe.signal(f"produced:{key}:{i}")
        finally:
            self.probe.signal(f"finally:{key}")

    async def total(self, key: str, values: Stream[int]) -> int:
        self.probe.signal(f"started:{key}")
        total = 0
        try:
            async for value in values:
                total += value
        except BaseException as exc:
            self.probe.signal(f"raised:{key}", type(exc).__name__)
            raise
        finally:
            self.probe.signal(f"finally:{key}")
        return total

    async def scale(self, factor: int, values: Stream[int]) -> AsyncIterator[int]:
        async for value in values:
            yield value * factor

    async def fail_after(self, n: int, kind: str) -> AsyncIterator[int]:
        from ._rpc_suite import raise_error  # it imports this module

        for i in range(n):
            yield i
        await trio.lowlevel.checkpoint()
        raise_error(kind, f"{kind} after {n} items")

    async def take(self, n: int, values: Stream[int]) -> list[int]:
        taken: list[int] = []
        async for value in values:
            taken.append(value)
            if len(taken) == n:
                break
        return taken

    async def activities(self, n: int) -> AsyncIterator[str]:
        for _ in range(n):
            await trio.lowlevel.checkpoint()
            ctx = contexts.current()
            yield ctx.activity_id if ctx is not None else "-"

    async def seconds_left(self, key: str) -> AsyncIterator[float]:
        try:
            yield trio.current_effective_deadline() - trio.current_time()
            await trio.sleep_forever()
        finally:
            self.probe.signal(f"finally:{key}")

    async def chunks(self, key: str, count: int, size: int) -> AsyncIterator[bytes]:
        try:
            for i in range(count):
                yield bytes([i % 256]) * size
        finally:
            self.probe.signal(f"finally:{key}")

    async def swallow(self, chunks: Stream[bytes]) -> int:
        size = 0
        async for chunk in chunks:
            size += len(chunk)
        return size


async def _numbers(n: int, closed: list[bool] | None = None) -> AsyncIterator[int]:
    """0..n-1 (forever when n < 0); appends True to `closed` when it is closed."""
    try:
        i = 0
        while n < 0 or i < n:
            yield i
            i += 1
    finally:
        if closed is not None:
            closed.append(True)


async def _wait_no_streams(manager: RpcManager) -> None:
    """Wait until the backend holds no stream (its bookkeeping may live in another thread
    or run after the generator's `finally`: polled, within the issue's bound)."""
    with trio.fail_after(CLEANUP_BOUND):
        while manager.statistics().open_streams:  # noqa: ASYNC110 - a number, maybe in another thread
            await trio.sleep(0.005)


class RpcStreamCases:
    """The stream and binary cases; mixed into `RpcConformance`."""

    #: The kinds of stream the transport carries ("server", "client", "two-way");
    #: a kind left out is checked to be refused with NotFound.
    stream_kinds: ClassVar[frozenset[str]] = frozenset({"server", "client", "two-way"})

    connect: Callable[..., AbstractAsyncContextManager[RpcBackend]]
    backend_manager: Callable[..., RpcManager]

    def streams_manager(self, probe: Probe | None = None, **kwargs: Any) -> RpcManager:
        """A backend serving `ConformanceStreams` (and the suite's other interfaces)."""
        probe = probe or Probe()
        manager = self.backend_manager(probe, **kwargs)
        manager.register_impl(ConformanceStreams, StreamsImpl(probe))
        return manager

    def open_streams(
        self, manager: RpcManager | None = None, **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return self.connect(
            manager if manager is not None else self.streams_manager(),
            interfaces=[ConformanceStreams],
            **options,
        )

    async def _carried(self, kind: str, client: ConformanceStreams) -> bool:
        """Whether the transport carries `kind`; if not, check that it is refused."""
        if kind in self.stream_kinds:
            return True
        if kind == "client":
            with pytest.raises(NotFound):
                await client.total("refused", _numbers(3))
        else:
            call = client.count("refused", 3) if kind == "server" else client.scale(2, _numbers(3))
            with pytest.raises(NotFound):
                await _collect(call)
        return False

    # -- each kind -------------------------------------------------------------------

    async def test_server_stream_yields_every_item_in_order(self) -> None:
        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams() as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return
                async with open_stream(client.count("k", 1000)) as items:
                    got = [item async for item in items]
                assert got == list(range(1000))
                async with open_stream(client.count("empty", 0)) as items:
                    assert [item async for item in items] == []

    async def test_client_stream_sends_every_item_and_closes_the_source(self) -> None:
        closed: list[bool] = []
        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams() as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("client", client):
                    return
                assert await client.total("k", _numbers(1000, closed)) == sum(range(1000))
                assert closed == [True]
                assert await client.total("empty", _numbers(0)) == 0

    async def test_two_way_stream(self) -> None:
        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams() as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("two-way", client):
                    return
                async with open_stream(client.scale(3, _numbers(500))) as items:
                    got = [item async for item in items]
                assert got == [3 * i for i in range(500)]

    # -- cancellation ---------------------------------------------------------------

    @pytest.mark.parametrize("how", ["leave", "raise", "cancel"])
    async def test_leaving_the_block_cancels_the_generator(self, how: str) -> None:
        probe = Probe()
        manager = self.streams_manager(probe)
        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams(manager) as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return
                with trio.CancelScope() as scope:
                    try:
                        async with open_stream(client.count(how, -1)) as items:
                            async for item in items:
                                if item == 2:
                                    if how == "raise":
                                        raise KeyError(how)
                                    if how == "cancel":
                                        scope.cancel()
                                        await trio.lowlevel.checkpoint()
                                    break
                    except KeyError:
                        pass
                await probe.wait(f"finally:{how}")
                stats = getattr(backend, "statistics", None)
                if stats is not None:
                    assert stats().open_streams == 0
                await _wait_no_streams(manager)
                # Only that stream ended: the connection goes on.
                async with open_stream(client.count("after", 2)) as items:
                    assert [item async for item in items] == [0, 1]

    async def test_an_impl_that_stops_reading_its_stream_early(self) -> None:
        closed: list[bool] = []
        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams() as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("client", client):
                    return
                assert await client.take(3, _numbers(-1, closed)) == [0, 1, 2]
                assert closed == [True]
                assert await client.total("after", _numbers(4)) == 6

    async def test_a_source_that_raises_fails_the_call_with_its_error(self) -> None:
        probe = Probe()

        async def broken() -> AsyncIterator[int]:
            yield 1
            await probe.wait("started:broken")
            raise KeyError("the source broke")

        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams(self.streams_manager(probe)) as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("client", client):
                    return
                with pytest.raises(KeyError, match="the source broke"):
                    await client.total("broken", broken())
                await probe.wait("finally:broken")

    # -- errors ---------------------------------------------------------------------

    @pytest.mark.parametrize("before", [0, 3])
    async def test_error_mid_stream_is_the_unary_error_type(self, before: int) -> None:
        from ._rpc_suite import ConformanceError

        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams() as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return
                got: list[int] = []
                with contexts.activity() as act, pytest.raises(ConformanceError) as caught:
                    await _collect(client.fail_after(before, "application"), got)
                assert got == list(range(before))
                assert caught.value.code == 42
                assert caught.value.reason == f"application after {before} items"
                assert any(act.activity_id in note for note in caught.value.__notes__)
                with pytest.raises(NotFound, match="not-found after"):
                    await _collect(client.fail_after(before, "not-found"))
                with pytest.raises(RemoteError) as internal:
                    await _collect(client.fail_after(before, "internal"))
                assert internal.value.remote_type == "builtins.ValueError"

    # -- flow control ---------------------------------------------------------------

    async def test_slow_consumer_stops_the_producer_at_the_window(self) -> None:
        window = StreamWindow(items=8)
        half = window.items // 2
        probe = Probe()
        manager = self.streams_manager(probe)
        impl = manager.lookup(ConformanceStreams.interface_name)
        assert impl is not None
        produced: dict[str, int] = impl.impl.produced  # type: ignore[attr-defined]
        # A transport without server streams need not take a window.
        options = {"stream_window": window} if "server" in self.stream_kinds else {}
        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams(manager, **options) as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return
                consumed = 0
                async with open_stream(client.count("slow", -1)) as items:
                    await probe.wait(f"produced:slow:{window.items}")
                    while consumed < 40:
                        await anext(items)
                        consumed += 1
                        # Credit goes back in half-window batches: once this
                        # much is granted the producer has sent all it may.
                        allowed = window.items + consumed // half * half
                        await probe.wait(f"produced:slow:{allowed}")
                        assert produced["slow"] <= window.items + consumed
                assert produced["slow"] <= window.items + consumed

    # -- deadlines ------------------------------------------------------------------

    async def test_deadline_covers_the_whole_stream(self) -> None:
        probe = Probe()
        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams(self.streams_manager(probe)) as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return
                with trio.move_on_after(3):
                    async with open_stream(client.seconds_left("caller")) as items:
                        left = await anext(items)
                assert 0 < left <= 3
                # The backend's deadline, not the caller's, ends this one: the
                # call carries 200 ms the caller does not enforce itself.
                call = Call(
                    20_000_000,
                    ConformanceStreams.interface_name,
                    ConformanceStreams.interface_version,
                    "seconds_left",
                    ["backend"],
                    CallContext("raw-stream-activity"),
                    200,
                )
                async with backend.open_call(
                    call, ConformanceStreams.__tether_operations__["seconds_left"], None
                ) as exchange:
                    first = await exchange.receive()
                    assert type(first) is Item
                    assert 0 < first.value <= 0.2
                    last = await exchange.receive()
                assert type(last) is Error
                assert last.error.code == "deadline-exceeded"
                await probe.wait("finally:backend")

    # -- connections ----------------------------------------------------------------

    async def test_dropped_connection_ends_every_stream(self) -> None:
        probe = Probe()
        outcome: list[BaseException] = []
        never = trio.Event()

        async def silent() -> AsyncIterator[int]:
            await never.wait()
            yield 0  # pragma: no cover - never reached

        first = trio.Event()

        async def consume(client: ConformanceStreams) -> None:
            try:
                # One item, then the generator waits forever, and so does this.
                async with open_stream(client.seconds_left("dropped")) as items:
                    async for _ in items:
                        first.set()
            except TetherError as exc:
                outcome.append(exc)

        async def upload(client: ConformanceStreams) -> None:
            try:
                await client.total("reading", silent())
            except TetherError as exc:
                outcome.append(exc)

        with trio.fail_after(STREAM_TIMEOUT):
            async with (
                trio.open_nursery() as nursery,
                self.open_streams(self.streams_manager(probe)) as backend,
            ):
                client = backend.get_client(ConformanceStreams)
                kinds = [k for k in ("server", "client") if await self._carried(k, client)]
                if not kinds:
                    return
                if "server" in kinds:
                    nursery.start_soon(consume, client)
                    await first.wait()
                if "client" in kinds:
                    nursery.start_soon(upload, client)
                    await probe.wait("started:reading")
            if "server" in kinds:
                await probe.wait("finally:dropped")
            if "client" in kinds:
                # The impl waiting for its stream argument heard of the close.
                assert await probe.wait("raised:reading") == "ConnectionClosed"
                await probe.wait("finally:reading")
        assert len(outcome) == len(kinds)
        assert all(isinstance(exc, ConnectionClosed) for exc in outcome)

    async def test_every_item_is_produced_under_the_callers_activity(self) -> None:
        seen_by_source: list[str | None] = []

        async def source() -> AsyncIterator[int]:
            for i in range(5):
                ctx = contexts.current()
                seen_by_source.append(ctx.activity_id if ctx is not None else None)
                yield i

        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams() as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return
                with contexts.activity() as act:
                    async with open_stream(client.activities(20)) as items:
                        seen = [item async for item in items]
                    if "client" in self.stream_kinds:
                        await client.total("activity", source())
        assert seen == [act.activity_id] * 20
        if "client" in self.stream_kinds:
            assert seen_by_source == [act.activity_id] * 5

    async def test_a_thousand_concurrent_streams_on_one_connection(self) -> None:
        results: dict[int, list[int]] = {}
        with trio.fail_after(STREAM_TIMEOUT * 3):
            async with self.open_streams() as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return

                async def one(i: int) -> None:
                    async with open_stream(client.count(f"c{i}", 3)) as items:
                        results[i] = [item + i async for item in items]

                async with trio.open_nursery() as nursery:
                    for i in range(1000):
                        nursery.start_soon(one, i)
        assert results == {i: [i, i + 1, i + 2] for i in range(1000)}

    # -- limits and binary ------------------------------------------------------------

    async def test_64_mib_in_1_mib_items(self) -> None:
        with trio.fail_after(BULK_TIMEOUT):
            async with self.open_streams() as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return
                total = 0
                async with open_stream(client.chunks("bulk", 64, MiB)) as items:
                    async for i, chunk in _enumerate(items):
                        assert chunk == bytes([i]) * MiB
                        total += len(chunk)
                assert total == 64 * MiB

    async def test_an_oversized_item_ends_only_its_stream(self) -> None:
        limit = 64 * 1024
        probe = Probe()
        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams(
                self.streams_manager(probe), max_message_size=limit
            ) as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return
                got: list[bytes] = []
                with pytest.raises(PayloadTooLarge) as caught:
                    await _collect(client.chunks("big", 3, 2 * limit), got)
                assert caught.value.remote
                assert got == []
                await probe.wait("finally:big")
                # A stream carries far more than the limit in total.
                total = 0
                async with open_stream(client.chunks("many", 40, limit // 4)) as items:
                    async for chunk in items:
                        total += len(chunk)
                assert total == 10 * limit
                if "client" in self.stream_kinds:

                    async def one_too_big() -> AsyncIterator[bytes]:
                        yield b"x" * 10
                        yield b"x" * (2 * limit)

                    with pytest.raises(PayloadTooLarge) as sent:
                        await client.swallow(one_too_big())
                    assert not sent.value.remote
                    chunks = [b"y" * (limit // 4)] * 40
                    assert await client.swallow(_items(chunks)) == 10 * limit

    async def test_bytes_items_both_ways(self) -> None:
        with trio.fail_after(STREAM_TIMEOUT):
            async with self.open_streams() as backend:
                client = backend.get_client(ConformanceStreams)
                if not await self._carried("server", client):
                    return
                got = await _collect(client.chunks("both", 4, MiB))
                assert got == [bytes([i]) * MiB for i in range(4)]
                assert all(type(chunk) is bytes for chunk in got)
                if "client" in self.stream_kinds:
                    chunks = [os.urandom(MiB) for _ in range(4)]
                    assert await client.swallow(_items(chunks)) == 4 * MiB


async def _collect(stream: Stream[Any], into: list[Any] | None = None) -> list[Any]:
    """Open `stream` and take all its items (into `into`, kept when it raises)."""
    got = into if into is not None else []
    async with open_stream(stream) as items:
        async for item in items:
            got.append(item)
    return got


async def _enumerate(items: AsyncIterator[Any]) -> AsyncIterator[tuple[int, Any]]:
    i = 0
    async for item in items:
        yield i, item
        i += 1


async def _items(values: Sequence[Any]) -> AsyncIterator[Any]:
    for value in values:
        yield value
