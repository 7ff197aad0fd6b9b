"""A WebSocket stream's outbox is bounded in bytes as well as in messages.

The outbox holds what senders queued for the connection's writer task. It
takes at most `OUTBOX_MAX_MESSAGES` messages and `OUTBOX_MAX_BYTES` bytes;
senders wait for room beyond either, and a message larger than the byte bound
still goes, alone, once the outbox is empty. Tested on the stream's base class
with a writer whose sends the test finishes (a fake for this one layer); the
real streams send large messages in tests/test_websocket_large.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from tether.runtime import ConnectionClosed
from tether.transports.websocket import _streams
from tether.transports.websocket._streams import WebSocketStream

KiB = 1024
MiB = 1024 * KiB


class HeldStream(WebSocketStream):
    """The outbox alone (a fake for this one layer): its writer's sends are the test's to finish.

    Each batch the writer takes waits in `_send_batch` until the test calls `finish_one`.
    """

    def __init__(self) -> None:
        super().__init__(64 * MiB, "held")
        self.batches: list[list[int]] = []  # sizes of the messages of each batch sent
        self._go = trio.Semaphore(0)

    def finish_one(self) -> None:
        self._go.release()

    async def _send_batch(self, batch: list[bytes]) -> None:
        await self._go.acquire()
        self.batches.append([len(item) for item in batch])

    async def _receive_next(self) -> bytes | str:  # pragma: no cover - never read
        await trio.sleep_forever()

    async def aclose(self, reason: str | None = None, code: int = 1000) -> None:
        self._fail_sends(ConnectionClosed("closed", reason=reason))
        await trio.lowlevel.checkpoint()


def queued_bytes(stream: WebSocketStream) -> int:
    return sum(len(item) for item in stream._outbox)


async def test_outbox_holds_at_most_its_byte_bound_and_senders_wait_for_room() -> None:
    bound = _streams.OUTBOX_MAX_BYTES
    assert bound == 1 * MiB  # the documented default
    size = 300 * KiB
    stream = HeldStream()
    sent: list[int] = []

    async def send(n: int) -> None:
        await stream.send_message(bytes([n]) * size)
        sent.append(n)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.write_loop)
            await send(0)  # taken by the writer at once, which then waits
            await trio.testing.wait_all_tasks_blocked()
            for n in range(1, 8):
                nursery.start_soon(send, n)
            await trio.testing.wait_all_tasks_blocked()
            # 3 x 300 KiB fit in 1 MiB; a fourth would not: it waits.
            assert len(stream._outbox) == 3
            assert queued_bytes(stream) <= bound
            assert len(sent) == 4
            for _ in range(4):
                stream.finish_one()
                await trio.testing.wait_all_tasks_blocked()
                assert queued_bytes(stream) <= bound
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert sorted(sent) == list(range(8))
    assert [len(batch) for batch in stream.batches] == [1, 3, 3, 1]


async def test_a_message_over_the_byte_bound_goes_alone_once_the_outbox_is_empty() -> None:
    stream = HeldStream()
    big = bytes(3 * _streams.OUTBOX_MAX_BYTES)
    order: list[str] = []

    async def send(name: str, data: bytes) -> None:
        await stream.send_message(data)
        order.append(name)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.write_loop)
            await send("first", b"x")  # the writer holds it
            await trio.testing.wait_all_tasks_blocked()
            await send("small", b"y" * 100)  # queued
            nursery.start_soon(send, "big", big)
            await trio.testing.wait_all_tasks_blocked()
            assert order == ["first", "small"]  # big waits: the outbox is not empty
            stream.finish_one()  # "first" sent; the writer takes "small"
            await trio.testing.wait_all_tasks_blocked()
            assert order == ["first", "small", "big"]  # queued alone
            assert [len(item) for item in stream._outbox] == [len(big)]
            stream.finish_one()
            stream.finish_one()
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert stream.batches == [[1], [100], [len(big)]]


async def test_a_sender_waiting_for_room_fails_when_the_stream_closes() -> None:
    stream = HeldStream()
    failed: list[Any] = []

    async def send(size: int) -> None:
        with pytest.raises(ConnectionClosed) as caught:
            await stream.send_message(bytes(size))
        failed.append(caught.value)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.write_loop)
            await stream.send_message(b"held")
            await trio.testing.wait_all_tasks_blocked()
            half = _streams.OUTBOX_MAX_BYTES // 2 + 1
            await stream.send_message(bytes(half))
            nursery.start_soon(send, half)
            await trio.testing.wait_all_tasks_blocked()
            assert len(stream._outbox) == 1  # the second half waits for room
            await stream.aclose("bye")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert [error.reason for error in failed] == ["bye"]


def _writers(nursery: trio.Nursery) -> list[trio.lowlevel.Task]:
    return [task for task in nursery.child_tasks if task.name.endswith(".write_loop")]


async def test_a_writer_given_a_nursery_starts_with_the_first_send_that_waits() -> None:
    stream = HeldStream()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            stream.start_writer_in(nursery)
            await trio.testing.wait_all_tasks_blocked()
            assert _writers(nursery) == []  # nothing sent yet: no writer
            await stream.send_message(b"first")
            await stream.send_message(b"second")
            await trio.testing.wait_all_tasks_blocked()
            assert len(_writers(nursery)) == 1  # one writer, started once
            stream.finish_one()  # it took both, in one batch
            await trio.testing.wait_all_tasks_blocked()
            await stream.send_message(b"third")  # the same writer takes it
            await trio.testing.wait_all_tasks_blocked()
            assert len(_writers(nursery)) == 1
            stream.finish_one()
            await trio.testing.wait_all_tasks_blocked()
            assert stream._outbox == []
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert stream.batches == [[5, 6], [5]]


async def test_a_send_queued_once_the_streams_tasks_are_over_fails_as_closed() -> None:
    stream = HeldStream()
    with trio.fail_after(10):
        async with trio.open_nursery() as over:
            pass
        stream.start_writer_in(over)
        with pytest.raises(ConnectionClosed) as caught:
            await stream.send_message(b"too late")
        # Nothing is left queued, and later sends fail the same way.
        assert stream._outbox == []
        with pytest.raises(ConnectionClosed):
            await stream.send_message(b"later")
    assert "held closed" in str(caught.value)
