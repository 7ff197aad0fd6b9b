"""SocketStream at its edges: closing while sends queue or stall, a hostile close frame.

Real Unix socket pairs; the peer is a plain socket (or a second SocketStream).
"""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from tether.runtime import ConnectionClosed
from tether.transports.local._socket import CLOSE_TIMEOUT, SocketStream

TIMEOUT = 10
_header = struct.Struct(">I")


def _fill(sock: socket.socket) -> None:
    """Send on a non-blocking socket until the kernel takes no more."""
    chunk = b"\0" * 65536
    for _ in range(10_000):
        try:
            sock.send(chunk)
        except BlockingIOError:
            return
    raise AssertionError("the socket never filled")


async def test_aclose_cancelled_while_the_peer_reads_nothing_still_closes_the_socket() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(right, name="test")
    try:
        _fill(stream.socket)  # the peer never reads: no room for the close frame
        with trio.fail_after(TIMEOUT):
            with trio.CancelScope() as scope:
                scope.cancel()
                await stream.aclose("bye")
        # Cancelled, aclose closes at once: the descriptor is released and the
        # peer sees end-of-file rather than a connection that stays open.
        assert stream.socket.fileno() == -1
        assert stream.closed_reason == "bye"
    finally:
        left.close()
        stream.socket.close()


async def test_aclose_behind_a_queued_send_goes_out_when_the_stalled_send_does() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(right, name="test")
    peer = SocketStream(left, name="peer")
    big = b"b" * (4 * 1024 * 1024)  # more than the socket pair buffers
    outcomes: dict[str, object] = {}

    async def send(name: str, data: bytes) -> None:
        try:
            await stream.send_message(data)
            outcomes[name] = "sent"
        except ConnectionClosed as exc:
            outcomes[name] = exc.reason

    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, "big", big)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(send, "queued", b"small")
                await trio.testing.wait_all_tasks_blocked()
                closed = trio.Event()

                async def close() -> None:
                    await stream.aclose("bye")
                    closed.set()

                nursery.start_soon(close)
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
                assert await peer.receive_message() == big
                with pytest.raises(ConnectionClosed) as caught:
                    await peer.receive_message()
                await closed.wait()
                waited = trio.current_time() - start
        assert outcomes == {"big": "sent", "queued": "bye"}
        # The close frame follows the big message, and aclose does not sit out
        # its whole CLOSE_TIMEOUT once there is room.
        assert caught.value.reason == "bye"
        assert waited < CLOSE_TIMEOUT / 2
    finally:
        await peer.aclose()
        await stream.aclose()


async def test_a_close_frame_claiming_a_huge_reason_closes_without_buffering_it() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(right, name="test")
    try:
        # A close frame's reason is at most 123 bytes; this one claims 2 GiB
        # and the peer keeps the connection open, sending on.
        left.sendall(_header.pack(0x8000_0000 | 0x7FFF_FFFF) + b"x" * 1000)
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await stream.receive_message()
        assert stream.socket.fileno() == -1
    finally:
        left.close()
        await stream.aclose()
