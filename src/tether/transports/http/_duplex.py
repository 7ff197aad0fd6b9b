"""One HTTP/1.1 exchange on a pooled connection whose request body is sent while
its response is read: what a stream call needs (`ConnectionPool.request` sends
the whole request before it reads).

A response body is read into buffers of its own (`recv_into`) that h11
hands back as its `Data` events without copying them (`_BodyBuffer`): a
stream of MiB items would otherwise be copied three times inside h11.

The request body is either whole (`Content-Length`) or chunked, sent piece by
piece as the caller's items come; the response is read as it arrives. Sending
and reading may run in two tasks at once. The connection goes back to the pool
only when both messages were complete; otherwise (the call was cancelled, the
server answered before the body ended) it is closed, which tells the server
the client has gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio
from h11._receivebuffer import ReceiveBuffer

from ...runtime import ConnectionClosed
from .._gather import Parts, remaining_after
from ._pool import _FAILURES, ConnectionPool, Headers, _Connection

__all__ = ["Duplex", "open_duplex"]

#: Bytes asked of the socket per read of a response body: a stream's items
#: may be a MiB each, and every read costs a round through trio and h11.
_BODY_READ_SIZE = 256 * 1024
#: The most pieces one `sendmsg` is given (the kernel's IOV_MAX is 1024).
_MAX_PARTS = 1024


class _BodyBuffer(ReceiveBuffer):
    """h11's receive buffer, minus two copies of a body's bytes.

    Given a bytearray while empty, it keeps that bytearray rather than copying
    it; asked for at least all it holds, it hands it over rather than copying
    it out (twice, in h11's own). What h11 parses is the same.
    """

    def __iadd__(self, byteslike: bytes | bytearray) -> _BodyBuffer:
        if not self._data and type(byteslike) is bytearray:
            self._data = byteslike
        else:
            self._data += byteslike
        return self

    def maybe_extract_at_most(self, count: int) -> bytearray | None:
        data = self._data
        if not data:
            return None
        if count < len(data):
            return self._extract(count)
        self._data = bytearray()
        self._next_line_search = 0
        self._multiple_lines_search = 0
        return data


def _use_body_buffer(state: h11.Connection) -> bool:
    """Give `state` a `_BodyBuffer` if h11 is as expected and its buffer empty; whether it has one.

    Read from and written to h11's private state: a future h11 that moves it
    keeps its own buffer, and bodies are read as before.
    """
    current: Any = getattr(state, "_receive_buffer", None)
    if type(current) is _BodyBuffer:
        return True
    if type(current) is not ReceiveBuffer or current or not hasattr(current, "_data"):
        return False
    state._receive_buffer = _BodyBuffer()
    return True


class Duplex:
    """A request sent in pieces, and its response read as it comes (see the module).

    Made by `open_duplex`; valid inside that block only.
    """

    __slots__ = ("_conn", "_into", "_pool", "_response_ended", "status")

    def __init__(self, pool: ConnectionPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._response_ended = False
        # The body is read into buffers of its own (a plain socket, and h11
        # as expected).
        self._into = type(conn.stream) is trio.SocketStream and _use_body_buffer(conn.h11)
        #: The response's status, once its head came.
        self.status = 0

    @property
    def complete(self) -> bool:
        """Whether both the request and the response were sent and read whole."""
        state = self._conn.h11
        return state.our_state is h11.DONE and state.their_state is h11.DONE

    async def _write(self, event: h11.Request | h11.Data | h11.EndOfMessage, doing: str) -> None:
        conn = self._conn
        try:
            data = conn.h11.send(event)
            if data:
                await conn.stream.send_all(data)
        except _FAILURES as exc:
            raise self._pool._translate(exc, doing, conn) from exc

    async def send_head(self, request: h11.Request, body: bytes | None) -> None:
        """Send the request's head, and its whole body unless it is chunked (None).

        Raises:
            ConnectionClosed: the connection broke.
        """
        await self._write(request, "while sending the request")
        if body is not None:
            if body:
                await self._write(h11.Data(data=body), "while sending the request")
            await self._write(h11.EndOfMessage(), "while sending the request")

    async def send(self, data: bytes) -> None:
        """Send the next piece of a chunked body (waits while the server does not read).

        Raises:
            ConnectionClosed: the connection broke (or the server closed it).
        """
        if data:
            await self._write(h11.Data(data=data), "while sending the request body")

    async def send_pieces(self, pieces: list[bytes]) -> None:
        """Send pieces of a chunked body, in order, one chunk each, without joining them.

        On a plain socket with `sendmsg` (h11 frames each piece without
        copying it); otherwise joined, through the stream.

        Raises:
            ConnectionClosed: the connection broke (or the server closed it).
        """
        conn = self._conn
        try:
            parts: Parts = []
            for piece in pieces:
                if piece:
                    parts += conn.h11.send_with_data_passthrough(h11.Data(data=piece)) or []
            stream = conn.stream
            if type(stream) is not trio.SocketStream or len(parts) > _MAX_PARTS:
                await stream.send_all(b"".join(parts))
                return
            sock = stream.socket
            while parts:
                sent = await sock.sendmsg(parts)
                parts = remaining_after(parts, sent)
        except _FAILURES as exc:
            raise self._pool._translate(exc, "while sending the request body", conn) from exc

    async def end(self) -> None:
        """End a chunked body."""
        await self._write(h11.EndOfMessage(), "while ending the request body")

    async def receive_head(self) -> Headers:
        """Wait for the response's head (as long as the server takes); sets `status`.

        Returns:
            Its headers, names lower-cased.

        Raises:
            ConnectionClosed: the connection broke first, or what came is not HTTP/1.1.
        """
        conn = self._conn
        try:
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    await conn.read()
                elif type(event) is h11.Response:
                    self.status = event.status_code
                    return list(event.headers)
                elif type(event) is not h11.InformationalResponse:
                    raise ConnectionClosed(
                        f"{self._pool._origin} sent {event!r} instead of a response",
                        reason="protocol error",
                    )
        except _FAILURES as exc:
            raise self._pool._translate(exc, "while waiting for the response", conn) from exc

    async def receive_some(self) -> bytes | bytearray:
        """The next piece of the response body, never empty; b"" once it has ended.

        The piece may be a bytearray (h11's own, not copied again).

        Raises:
            ConnectionClosed: the connection broke before the body's end.
        """
        if self._response_ended:
            return b""
        conn = self._conn
        try:
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    if self._into:
                        await self._read_into()
                    else:
                        await conn.read(_BODY_READ_SIZE)
                elif type(event) is h11.Data:
                    if event.data:
                        data: bytes | bytearray = event.data
                        return data
                elif type(event) is h11.EndOfMessage:
                    self._response_ended = True
                    return b""
                else:
                    raise ConnectionClosed(
                        f"{self._pool._origin} sent {event!r} in the middle of a response body",
                        reason="protocol error",
                    )
        except _FAILURES as exc:
            raise self._pool._translate(exc, "while receiving the response", conn) from exc

    async def _read_into(self) -> None:
        """Give h11 the next bytes of the body, received into a buffer of their own."""
        conn = self._conn
        buffer = bytearray(_BODY_READ_SIZE)
        count = await conn.stream.socket.recv_into(buffer)
        if count < len(buffer):
            del buffer[count:]
        if not count:
            conn.eof = True
        conn.h11.receive_data(buffer)  # type: ignore[arg-type]  # kept as it is by the _BodyBuffer


@asynccontextmanager
async def open_duplex(pool: ConnectionPool) -> AsyncIterator[Duplex]:
    """A connection of `pool` for one exchange, in a block (it counts against
    `max_connections`). Leaving the block puts it back if the exchange was
    complete, and closes it otherwise.

    Raises:
        ConnectError: the server could not be reached.
        ConnectionClosed: the pool is closed.
    """
    async with pool._slots:
        conn, _ = await pool._checkout()
        duplex = Duplex(pool, conn)
        try:
            yield duplex
        finally:
            with trio.CancelScope(shield=True):
                if duplex.complete:
                    await pool._release(conn)
                else:
                    await pool._discard(conn)
