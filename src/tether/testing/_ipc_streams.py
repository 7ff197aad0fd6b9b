# mypy: disable-error-code="empty-body"
# (channel methods are declared with `...` bodies)
"""The IPC conformance suite: streams, both ways (STREAMS.md).

Server, client and two-way streams from the frontend to the backend
(`FrontendIpc.proxy`) and from the backend to the frontend (`IpcSession.proxy`
of a channel the frontend serves); cancellation from the caller, errors mid-stream,
flow control (counted exactly, no sleeps), deadlines, the session's end, the
ActivityId of every item, many streams at once, and large ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
import trio

from .. import contexts
from ..runtime import (
    BackendIpc,
    ConnectionClosed,
    FrontendIpc,
    IpcHandler,
    IpcInterface,
    PayloadTooLarge,
    Stream,
    StreamWindow,
    TetherError,
    current_session,
    open_stream,
)
from ._ipc_fixtures import IpcSuiteBase, activity_id
from ._probe import Probe
from ._rpc_suite import TEST_TIMEOUT, ConformanceError

__all__ = ["FrontendStreamingIpc", "IpcStreamTests", "StreamingIpc"]

#: A cap for the tests that move many messages (1,000 streams, 64 MiB).
HEAVY_TIMEOUT = 60.0
#: How long a cancelled stream's generator may take to be closed.
CANCEL_BOUND = 1.0
MIB = 1024 * 1024
#: The frontend's message size limit in the size tests (its sends are refused past it).
SMALL_LIMIT = 64 * 1024


class StreamingIpc(IpcInterface):
    """The streams the suite's backend serves."""

    channel_name = "tether.testing.ipc-streams"
    version = "1.0.0"

    def count(self, n: int) -> Stream[int]: ...
    async def total(self, xs: Stream[int]) -> int: ...
    async def measure(self, texts: Stream[str]) -> int: ...
    def double(self, xs: Stream[int]) -> Stream[int]: ...
    def forever(self, key: str) -> Stream[int]: ...
    async def take(self, key: str, count: int, xs: Stream[int]) -> int: ...
    def fail_after_items(self, n: int, code: int) -> Stream[int]: ...
    def activities(self, n: int) -> Stream[str]: ...
    def deadlines(self, key: str) -> Stream[float]: ...
    def close_after(self, key: str, n: int) -> Stream[int]: ...
    async def read_until_closed(self, key: str, xs: Stream[int]) -> int: ...
    def blobs(self, count: int, size: int) -> Stream[bytes]: ...
    async def open_streams(self) -> int: ...
    async def call_frontend(self, kind: str, n: int) -> list[int]: ...
    async def frontend_activities(self, n: int) -> list[str]: ...
    async def frontend_failure(self, kind: str) -> str: ...


class FrontendStreamingIpc(IpcInterface):
    """Streams a frontend serves, for the backend to call."""

    channel_name = "tether.testing.ipc-frontend-streams"
    version = "1.0.0"

    def count(self, n: int) -> Stream[int]: ...
    async def total(self, xs: Stream[int]) -> int: ...
    def double(self, xs: Stream[int]) -> Stream[int]: ...
    def forever(self) -> Stream[int]: ...
    def activities(self, n: int) -> Stream[str]: ...
    def large(self, size: int) -> Stream[str]: ...
    def fail_after_items(self, n: int) -> Stream[int]: ...


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def deadline_left() -> float:
    deadline = trio.current_effective_deadline()
    return math.inf if deadline == math.inf else deadline - trio.current_time()


class StreamingHandler(IpcHandler, StreamingIpc):
    """The backend of the stream tests; reports through `probe` (it may run in another thread)."""

    probe: ClassVar[Probe]

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def total(self, xs: Stream[int]) -> int:
        return sum([x async for x in xs])

    async def measure(self, texts: Stream[str]) -> int:
        return sum([len(text) async for text in texts])

    async def double(self, xs: Stream[int]) -> AsyncIterator[int]:
        async for x in xs:
            yield 2 * x

    async def forever(self, key: str) -> AsyncIterator[int]:
        sent = 0
        try:
            for i in itertools.count():
                yield i
                # The yield returned: item i has gone.
                sent += 1
                self.probe.signal(f"sent:{key}:{i}")
        finally:
            self.probe.signal(f"finally:{key}", sent)

    async def take(self, key: str, count: int, xs: Stream[int]) -> int:
        try:
            taken = [x async for x in _first(xs, count)]
            self.probe.signal(f"took:{key}", taken)
            await trio.sleep_forever()
        finally:
            self.probe.signal(f"finally:{key}")
        return 0  # pragma: no cover - never reached

    async def fail_after_items(self, n: int, code: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        raise ConformanceError(code=code, reason=f"failed after {n} items")

    async def activities(self, n: int) -> AsyncIterator[str]:
        for _ in range(n):
            await trio.lowlevel.checkpoint()
            yield activity_id() or "none"

    async def deadlines(self, key: str) -> AsyncIterator[float]:
        try:
            while True:
                yield deadline_left()
                await trio.sleep(0.02)
        finally:
            self.probe.signal(f"finally:{key}")

    async def close_after(self, key: str, n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                yield i
            current_session().close(f"closed after {n} items")
            await trio.sleep_forever()
        finally:
            self.probe.signal(f"finally:{key}")

    async def read_until_closed(self, key: str, xs: Stream[int]) -> int:
        seen = 0
        try:
            async for _ in xs:
                seen += 1
                if seen == 2:
                    self.probe.signal(f"read:{key}")
        except ConnectionClosed as exc:
            self.probe.signal(f"input-closed:{key}", exc.reason)
            raise
        return seen

    async def blobs(self, count: int, size: int) -> AsyncIterator[bytes]:
        for i in range(count):
            yield bytes([i % 256]) * size

    async def open_streams(self) -> int:
        # What the engine holds for stream invokes it serves (this one is unary).
        return len(current_session()._peer.callee_streams)

    async def call_frontend(self, kind: str, n: int) -> list[int]:
        frontend = current_session().proxy(FrontendStreamingIpc)
        if kind == "count":
            async with open_stream(frontend.count(n)) as items:
                return [x async for x in items]
        if kind == "total":
            return [await frontend.total(numbers(n))]
        if kind == "double":
            async with open_stream(frontend.double(numbers(n))) as items:
                return [x async for x in items]
        assert kind == "cancel", kind
        async with open_stream(frontend.forever()) as items:
            return [x async for x in _first(items, n)]

    async def frontend_activities(self, n: int) -> list[str]:
        frontend = current_session().proxy(FrontendStreamingIpc)
        async with open_stream(frontend.activities(n)) as items:
            return [activity_id() or "none"] + [x async for x in items]

    async def frontend_failure(self, kind: str) -> str:
        frontend = current_session().proxy(FrontendStreamingIpc)
        got: list[Any] = []
        try:
            if kind == "large":
                stream: Any = frontend.large(2 * SMALL_LIMIT)
            else:
                stream = frontend.fail_after_items(2)
            async with open_stream(stream) as items:
                async for x in items:
                    got.append(x if isinstance(x, int) else len(x))
        except ConformanceError as exc:
            return f"ConformanceError:{exc.code}:{got}"
        except TetherError as exc:
            return f"{type(exc).__name__}:{got}"
        return f"ok:{got}"  # pragma: no cover - the stream must fail


class FrontendStreamingHandler(IpcHandler, FrontendStreamingIpc):
    """What the frontend serves; runs in the test's loop."""

    def __init__(self) -> None:
        self.closed = trio.Event()
        self.sent = 0

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def total(self, xs: Stream[int]) -> int:
        return sum([x async for x in xs])

    async def double(self, xs: Stream[int]) -> AsyncIterator[int]:
        async for x in xs:
            yield 2 * x

    async def forever(self) -> AsyncIterator[int]:
        try:
            for i in itertools.count():
                yield i
                self.sent += 1
        finally:
            self.closed.set()

    async def activities(self, n: int) -> AsyncIterator[str]:
        for _ in range(n):
            await trio.lowlevel.checkpoint()
            yield activity_id() or "none"

    async def large(self, size: int) -> AsyncIterator[str]:
        yield "small"
        yield "x" * size
        yield "never sent"  # pragma: no cover - the stream ended with the large item

    async def fail_after_items(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        raise ConformanceError(code=99, reason="the frontend's stream failed")


async def collect(stream: Stream[Any], into: list[Any]) -> None:
    """Open `stream` and append its items to `into` until it ends (or fails)."""
    async with open_stream(stream) as items:
        async for item in items:
            into.append(item)


async def _first(items: Any, count: int) -> AsyncIterator[Any]:
    """The first `count` items of an async iterator (it is not closed: its owner does)."""
    if count <= 0:
        return
    taken = 0
    async for item in items:
        yield item
        taken += 1
        if taken >= count:
            return


class IpcStreamTests(IpcSuiteBase):
    """Streams over an IPC session, both ways: what every transport must carry."""

    def streams_backend(self, probe: Probe | None = None, **kwargs: Any) -> BackendIpc:
        """A BackendIpc serving `StreamingIpc` (a handler per session)."""
        backend = BackendIpc(**kwargs)

        class Handler(StreamingHandler):
            pass

        Handler.probe = probe if probe is not None else Probe()
        backend.register(Handler)
        return backend

    def open_streams(self, backend: BackendIpc | None = None, **options: Any) -> Any:
        options.setdefault("channels", [StreamingIpc])
        return self.connect_ipc(
            backend if backend is not None else self.streams_backend(), **options
        )

    @staticmethod
    def engine_streams(frontend: FrontendIpc) -> int:
        """Stream invokes the frontend's engine holds (made, or served)."""
        peer = frontend._peer
        return len(peer.streams) + len(peer.callee_streams)

    # -- each kind, frontend -> backend ---------------------------------------------------

    async def test_server_stream_yields_every_item_in_order(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams() as frontend:
                proxy = frontend.proxy(StreamingIpc)
                async with open_stream(proxy.count(1000)) as items:
                    assert [x async for x in items] == list(range(1000))
                async with open_stream(proxy.count(0)) as items:
                    assert [x async for x in items] == []
                assert await proxy.open_streams() == 0
                assert self.engine_streams(frontend) == 0

    async def test_client_stream_sends_every_item(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams() as frontend:
                proxy = frontend.proxy(StreamingIpc)
                assert await proxy.total(numbers(1000)) == sum(range(1000))
                assert await proxy.total(numbers(0)) == 0
                # Any async iterable: a trio channel, closed by its sender.
                send, receive = trio.open_memory_channel[int](10)
                async with send:
                    for i in range(10):
                        send.send_nowait(i)
                assert await proxy.total(receive) == 45
                assert self.engine_streams(frontend) == 0

    async def test_two_way_stream_answers_each_item(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams() as frontend:
                proxy = frontend.proxy(StreamingIpc)
                async with open_stream(proxy.double(numbers(600))) as items:
                    assert [x async for x in items] == [2 * i for i in range(600)]
                assert await proxy.open_streams() == 0

    async def test_a_stream_call_is_opened_with_open_stream_once(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams() as frontend:
                call = frontend.proxy(StreamingIpc).count(3)
                with pytest.raises(TypeError, match="open_stream"):
                    aiter(call)
                async with open_stream(call) as items:
                    assert [x async for x in items] == [0, 1, 2]
                with pytest.raises(RuntimeError, match="opened already"):
                    async with open_stream(call):
                        pass  # pragma: no cover

    # -- each kind, backend -> frontend ---------------------------------------------------

    async def test_backend_streams_from_a_channel_the_frontend_serves(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams() as frontend:
                frontend.register(FrontendStreamingHandler())
                proxy = frontend.proxy(StreamingIpc)
                assert await proxy.call_frontend("count", 700) == list(range(700))
                assert await proxy.call_frontend("total", 700) == [sum(range(700))]
                assert await proxy.call_frontend("double", 500) == [2 * i for i in range(500)]
                assert self.engine_streams(frontend) == 0

    async def test_backend_leaving_its_block_closes_the_frontend_generator(self) -> None:
        handler = FrontendStreamingHandler()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams() as frontend:
                frontend.register(handler)
                proxy = frontend.proxy(StreamingIpc)
                assert await proxy.call_frontend("cancel", 3) == [0, 1, 2]
                with trio.fail_after(CANCEL_BOUND):
                    await handler.closed.wait()
                    while self.engine_streams(frontend):
                        await trio.testing.wait_all_tasks_blocked()
                assert await proxy.call_frontend("count", 2) == [0, 1]

    async def test_backend_hears_the_frontend_stream_error_with_its_fields(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams() as frontend:
                frontend.register(FrontendStreamingHandler())
                proxy = frontend.proxy(StreamingIpc)
                assert await proxy.frontend_failure("error") == "ConformanceError:99:[0, 1]"

    # -- cancellation --------------------------------------------------------------------

    async def test_leaving_the_block_closes_the_backend_generator(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(self.streams_backend(probe)) as frontend:
                proxy = frontend.proxy(StreamingIpc)
                async with open_stream(proxy.forever("leave")) as items:
                    assert [x async for x in _first(items, 3)] == [0, 1, 2]
                assert self.engine_streams(frontend) == 0
                with trio.fail_after(CANCEL_BOUND):
                    await probe.wait("finally:leave")
                    assert await proxy.open_streams() == 0
                assert frontend.is_valid

    async def test_cancelling_the_caller_closes_the_backend_generator(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(self.streams_backend(probe)) as frontend:
                proxy = frontend.proxy(StreamingIpc)
                seen: list[int] = []
                with trio.CancelScope() as scope:
                    async with open_stream(proxy.forever("cancel")) as items:
                        async for x in items:
                            seen.append(x)
                            if x == 4:
                                scope.cancel()
                assert scope.cancelled_caught
                assert seen == [0, 1, 2, 3, 4]
                with trio.fail_after(CANCEL_BOUND):
                    await probe.wait("finally:cancel")
                    assert await proxy.open_streams() == 0
                assert self.engine_streams(frontend) == 0

    async def test_a_failing_source_cancels_the_call_and_raises_its_error(self) -> None:
        probe = Probe()

        async def failing() -> AsyncIterator[int]:
            yield 1
            yield 2
            await probe.wait("took:source")
            raise ValueError("the source broke")

        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(self.streams_backend(probe)) as frontend:
                proxy = frontend.proxy(StreamingIpc)
                with pytest.raises(ValueError, match="the source broke"):
                    await proxy.take("source", 2, failing())
                with trio.fail_after(CANCEL_BOUND):
                    await probe.wait("finally:source")
                    assert await proxy.open_streams() == 0
                assert probe.value("took:source") == [1, 2]

    # -- errors ----------------------------------------------------------------------

    async def test_an_error_mid_stream_reaches_the_caller_with_its_fields(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams() as frontend:
                proxy = frontend.proxy(StreamingIpc)
                seen: list[int] = []
                with pytest.raises(ConformanceError) as caught:
                    await collect(proxy.fail_after_items(3, 7), seen)
                assert seen == [0, 1, 2]
                assert caught.value.code == 7
                assert caught.value.reason == "failed after 3 items"
                none: list[int] = []
                with pytest.raises(ConformanceError) as first:
                    await collect(proxy.fail_after_items(0, 8), none)
                assert first.value.code == 8
                assert none == []
                # Only that stream ended.
                async with open_stream(proxy.count(2)) as items:
                    assert [x async for x in items] == [0, 1]

    async def test_an_item_over_the_size_limit_ends_only_its_stream(self) -> None:
        async def big_second() -> AsyncIterator[str]:
            yield "small"
            yield "x" * 2 * SMALL_LIMIT  # past the frontend's limit

        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(max_message_size=SMALL_LIMIT) as frontend:
                frontend.register(FrontendStreamingHandler())
                proxy = frontend.proxy(StreamingIpc)
                # An argument item the frontend cannot send.
                with pytest.raises(PayloadTooLarge, match="over the session's limit"):
                    await proxy.measure(big_second())
                # A result item the frontend's generator cannot send.
                assert await proxy.frontend_failure("large") == "PayloadTooLarge:[5]"
                assert await proxy.total(numbers(4)) == 6
                assert frontend.is_valid

    # -- flow control -------------------------------------------------------------------

    async def test_a_slow_consumer_stops_the_producer_at_its_item_window(self) -> None:
        probe = Probe()
        window = StreamWindow(items=8, bytes=MIB)
        backend = self.streams_backend(probe)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(backend, stream_window=window) as frontend:
                proxy = frontend.proxy(StreamingIpc)
                async with open_stream(proxy.forever("window")) as items:
                    # Nothing taken: the whole window (8 items) goes, then the
                    # generator's yield waits.
                    await probe.wait("sent:window:7")
                    # Half a window taken: 4 items of credit go back.
                    assert [x async for x in _first(items, 4)] == [0, 1, 2, 3]
                    await probe.wait("sent:window:11")
                    # Less than half a window more: no credit.
                    assert [x async for x in _first(items, 3)] == [4, 5, 6]
                with trio.fail_after(CANCEL_BOUND):
                    sent = await probe.wait("finally:window")
                assert sent == 12

    async def test_a_slow_consumer_stops_the_producer_at_its_byte_window(self) -> None:
        probe = Probe()
        # Every item is larger than the byte window: one at a time.
        window = StreamWindow(items=1000, bytes=1)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(
                self.streams_backend(probe), stream_window=window
            ) as frontend:
                proxy = frontend.proxy(StreamingIpc)
                async with open_stream(proxy.forever("bytes")) as items:
                    await probe.wait("sent:bytes:0")
                    assert [x async for x in _first(items, 1)] == [0]
                    await probe.wait("sent:bytes:1")
                with trio.fail_after(CANCEL_BOUND):
                    sent = await probe.wait("finally:bytes")
                assert sent == 2

    async def test_a_slow_handler_stops_the_pump_at_the_backend_window(self) -> None:
        probe = Probe()
        pulled = 0
        six = trio.Event()

        async def source() -> AsyncIterator[int]:
            nonlocal pulled
            for i in itertools.count():
                pulled += 1
                if pulled == 6:
                    six.set()
                yield i

        backend = self.streams_backend(probe, stream_window=StreamWindow(items=4, bytes=MIB))
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(backend) as frontend:
                proxy = frontend.proxy(StreamingIpc)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(proxy.take, "pump", 2, source())
                    # 4 items of credit, then 2 more once the handler took half.
                    assert await probe.wait("took:pump") == [0, 1]
                    await six.wait()
                    nursery.cancel_scope.cancel()
                with trio.fail_after(CANCEL_BOUND):
                    await probe.wait("finally:pump")
                assert pulled == 6

    # -- deadlines and the session's end ------------------------------------------------

    async def test_the_caller_deadline_covers_the_whole_stream(self) -> None:
        probe = Probe()
        seen: list[float] = []
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(self.streams_backend(probe)) as frontend:
                proxy = frontend.proxy(StreamingIpc)
                with trio.move_on_after(0.5) as scope:
                    async with open_stream(proxy.deadlines("deadline")) as items:
                        async for left in items:
                            seen.append(left)
                assert scope.cancelled_caught
                with trio.fail_after(CANCEL_BOUND):
                    await probe.wait("finally:deadline")
                assert frontend.is_valid
        # Every item, the later ones too, was made under the caller's deadline.
        assert len(seen) >= 2
        assert all(left <= 0.5 for left in seen)
        assert seen[-1] < seen[0]

    async def test_the_session_ending_ends_the_stream_on_both_sides(self) -> None:
        probe = Probe()
        seen: list[int] = []
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(self.streams_backend(probe)) as frontend:
                proxy = frontend.proxy(StreamingIpc)
                with pytest.raises(ConnectionClosed):
                    await collect(proxy.close_after("end", 3), seen)
                await probe.wait("finally:end")
                assert self.engine_streams(frontend) == 0
        assert seen == [0, 1, 2]

    async def test_a_handler_reading_its_input_hears_the_session_end(self) -> None:
        probe = Probe()
        outcome: list[BaseException] = []

        async def endless() -> AsyncIterator[int]:
            yield 1
            yield 2
            await trio.sleep_forever()
            yield 3  # pragma: no cover

        async def call(proxy: StreamingIpc) -> None:
            try:
                await proxy.read_until_closed("input", endless())
            except ConnectionClosed as exc:
                outcome.append(exc)

        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams(self.streams_backend(probe)) as frontend:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, frontend.proxy(StreamingIpc))
                    await probe.wait("read:input")
                    await frontend.aclose()
                assert await probe.wait("input-closed:input")
        assert len(outcome) == 1

    # -- contexts -----------------------------------------------------------------------

    async def test_every_item_is_produced_under_the_call_activity(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_streams() as frontend:
                frontend.register(FrontendStreamingHandler())
                proxy = frontend.proxy(StreamingIpc)
                with contexts.activity() as ctx:
                    async with open_stream(proxy.activities(5)) as items:
                        assert [x async for x in items] == [ctx.activity_id] * 5
                    # Backend -> frontend: the backend handler's activity (the test's).
                    assert await proxy.frontend_activities(4) == [ctx.activity_id] * 5

    # -- scale ----------------------------------------------------------------------------

    async def test_a_thousand_concurrent_streams_on_one_session(self) -> None:
        results: dict[int, list[int]] = {}

        async def one(proxy: StreamingIpc, i: int) -> None:
            async with open_stream(proxy.count(3)) as items:
                results[i] = [x async for x in items]

        with trio.fail_after(HEAVY_TIMEOUT):
            async with self.open_streams() as frontend:
                proxy = frontend.proxy(StreamingIpc)
                async with trio.open_nursery() as nursery:
                    for i in range(1000):
                        nursery.start_soon(one, proxy, i)
                assert await proxy.open_streams() == 0
                assert self.engine_streams(frontend) == 0
        assert results == {i: [0, 1, 2] for i in range(1000)}

    async def test_64_mib_in_1_mib_bytes_items(self) -> None:
        total = 0
        with trio.fail_after(HEAVY_TIMEOUT):
            async with self.open_streams() as frontend:
                proxy = frontend.proxy(StreamingIpc)
                async with open_stream(proxy.blobs(64, MIB)) as items:
                    index = 0
                    async for blob in items:
                        assert len(blob) == MIB
                        assert blob[0] == blob[-1] == index % 256
                        total += len(blob)
                        index += 1
        assert total == 64 * MIB
