"""`SocketReader`: a trio-websocket connection read in the task that asks for a message.

trio-websocket reads every connection in a reader task of its own, which
hands each message to whoever called `get_message` through a memory channel:
per message, the reader wakes for the socket, then the receiver wakes for the
channel. With a thousand sessions answering at once, that second hop (and the
task's reads and wsproto's event loop around it) was over half of a
WebSocket server's busy time (`bench.sessions`), twice what a local socket's
session costs, whose reader is the session's own task.

A connection with a `SocketReader` has no reader task (`serve`'s own
connection handler starts none, and the client reads its handshake in the
connecting task). The task that wants the next message reads
the socket itself, without blocking, feeds the bytes to the connection's
frame parser (`_frames.FastFrames`) and acts on what comes out as
trio-websocket's reader would, with trio-websocket's own handlers: a ping is
answered, a pong wakes its `ping()`, a close is answered and ends the
connection; the messages are kept, in order, for this and the next receives.
It waits for the socket only when nothing is kept. A close from this side
(`close`) reads on by itself until the peer's close comes, unless another
task is reading (it then sees the close frame for both). While no receive
runs, `read_while_idle` reads for nobody (a client between calls must still
answer pings and a close), and gives way to the first receive.

Only plain sockets: under TLS the SSL stream must do its own reading.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import trio
import trio_websocket
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import RemoteProtocolError

from ...runtime import InvalidRequest
from ...runtime._binary import BinaryMessage
from ._frames import FastFrames

__all__ = ["IDLE_KEEP_MESSAGES", "SocketReader"]

#: What `_read_and_act` read when it received into a large frame's buffer.
_SOME = b"\x00"

#: Bytes asked of the socket in one read (trio-websocket's receive_buffer_size).
_READ_SIZE = 64 * 1024
#: Messages an idle read (`read_while_idle`) keeps for receives before it stops
#: reading; the connection's pings are answered meanwhile.
IDLE_KEEP_MESSAGES = 4
#: Receives in a row that never waited for the socket, before one yields anyway
#: (a peer flooding us must not starve the other tasks).
_YIELD_EVERY = 64


class SocketReader:
    """Reads `ws`'s socket `sock` for whichever task asks (one at a time).

    Args:
        ws: An open trio-websocket connection without a reader task, whose
            `_wsproto` is a `FastFrames`.
        sock: The plain socket under `ws`'s stream.
    """

    __slots__ = (
        "_discarding",
        "_fresh",
        "_idle",
        "_pending",
        "_read_done",
        "_reading",
        "_sock",
        "_taken",
        "_unyielded",
        "_ws",
    )

    def __init__(self, ws: trio_websocket.WebSocketConnection, sock: socket.socket) -> None:
        self._ws = ws
        self._sock = sock
        # Messages read and not yet taken: _pending[_taken:], in order.
        self._pending: list[str | bytes | BinaryMessage] = []
        self._taken = 0
        # The read under way (a token of its own), if any: one at a time.
        self._reading: object | None = None
        self._read_done: trio.Event | None = None  # set when that read ends (for `close`)
        # An idle read (`read_while_idle`) waiting for the socket: a receive
        # cancels it and reads instead.
        self._idle: trio.CancelScope | None = None
        self._discarding = False  # closed by this side: what comes is dropped
        self._unyielded = 0
        # Frames may have come with the handshake: they are read before the socket.
        self._fresh = True

    @property
    def over(self) -> bool:
        """Nothing more will come: the connection is closed (or closing from this side)."""
        ws = self._ws
        return self._discarding or not ws._reader_running or ws._close_handshake.is_set()

    def take_nowait(self) -> str | bytes | BinaryMessage | None:
        """The next message already read, if any."""
        pending = self._pending
        if not pending or self._discarding:
            return None
        taken = self._taken
        data = pending[taken]
        taken += 1
        if taken == len(pending):
            pending.clear()
            taken = 0
        self._taken = taken
        return data

    async def get_message(self) -> str | bytes | BinaryMessage:
        """The next message, as `WebSocketConnection.get_message` returns it.

        Raises:
            trio_websocket.ConnectionClosed: the connection is closed (or
                closing from this side), and every message the peer sent
                before its close was taken.
        """
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            # Reset by every wait for the socket: only a run of receives that
            # never waited gets here.
            self._unyielded = 0
            await trio.lowlevel.checkpoint()
        while True:
            data = self.take_nowait()
            if data is not None:
                return data
            if self.over:
                # Where trio-websocket's channel would be closed (by this
                # side's close) or ended (by the peer's, or the socket's).
                raise trio_websocket.ConnectionClosed(self._ws._close_reason)
            if self._fresh:
                self._fresh = False
                await self._act()
                continue
            if self._idle is not None:
                self._give_way()
            await self._read()

    def _give_way(self) -> None:
        """Cancel the idle read waiting for the socket: this task reads instead."""
        idle = self._idle
        if idle is not None:
            self._idle = None
            self._reading = None
            # Its wait ends at once (trio aborts it here), so the socket is free.
            idle.cancel()

    async def read_while_idle(self) -> bool:
        """Read once, for no receive: pings are answered, a close too, messages kept.

        For a client whose session reads only while a call waits (RPC): the
        server's pings and close must be answered meanwhile. A receive that
        begins while this waits for the socket takes its place (`_give_way`).

        Messages it reads are kept for the next receive, up to
        `IDLE_KEEP_MESSAGES` (as trio-websocket's reader task filled its
        channel): past that it stops reading, so an idle client's memory stays
        bounded whatever the peer sends.

        Returns:
            False when it did not read: a read is under way, enough messages
            are kept, the connection is over, or a receive took its place.
        """
        if (
            self._reading is not None
            or len(self._pending) - self._taken >= IDLE_KEEP_MESSAGES
            or self.over
        ):
            return False
        with trio.CancelScope() as scope:
            await self._read(scope)
        return not scope.cancel_called

    async def _read(self, idle: trio.CancelScope | None = None) -> None:
        """Read what the socket has (waiting for it if nothing), and act on it.

        One task at a time: the runtime has one reader at a time, `close`
        waits for a read under way (`_read_done`), and an idle read gives way.
        """
        token = self._reading = object()
        try:
            await self._read_and_act(idle)
        finally:
            if self._reading is token:
                self._reading = None
            done = self._read_done
            if done is not None:
                self._read_done = None
                done.set()

    async def _read_and_act(self, idle: trio.CancelScope | None) -> None:
        ws = self._ws
        sock = self._sock
        data = b""
        into: memoryview | None = None
        while True:
            frames: Any = ws._wsproto
            into = frames.wanting() if type(frames) is FastFrames else None
            try:
                if into is None:
                    data = sock.recv(_READ_SIZE)
                else:
                    # The rest of a large frame, straight into its buffer.
                    count = sock.recv_into(into)
                    data = b"" if not count else _SOME
            except BlockingIOError:
                self._unyielded = 0
                self._idle = idle
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    break  # closed under us (by a close from this side)
                finally:
                    given_way = idle is not None and self._idle is not idle
                    if not given_way:
                        self._idle = None
                if given_way:
                    return  # a receive took over (woken, with its cancel still to come)
                continue
            except OSError:
                pass  # reset, or closed: as trio-websocket's BrokenResourceError
            break
        # What trio-websocket's reader task does with what it read.
        if not data:
            if ws._wsproto.state is not ConnectionState.CLOSED:
                self._abort()
            ws._reader_running = False
            return
        if ws._wsproto.state is ConnectionState.CLOSED:
            return
        if into is not None:
            frames.filled(count)
            await self._act()
            return
        try:
            ws._wsproto.receive_data(data)
        except RemoteProtocolError as err:
            if err.event_hint:
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    await ws._send(err.event_hint)
            await ws._close_stream()
        await self._act()

    async def _act(self) -> None:
        """Act on the frame parser's events: every message is kept first, then the rest in order.

        The messages first, without yielding: answering a ping may wait (and
        be cancelled), and must not lose the messages that came after it.
        """
        ws = self._ws
        events: list[Any] = list(ws._wsproto.events())
        others: list[Any] = []
        pending = self._pending
        limit = ws._max_message_size
        for event in events:
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                if event.message_finished and not ws._message_parts and len(event.data) <= limit:
                    if not self._discarding:
                        data = event.data
                        # A binary payload may come as a bytearray: a large
                        # frame's own buffer is parsed where it is, its
                        # attachments copied out once (`_binary_message`).
                        pending.append(data if type(data) is not bytearray else _message(data))
                    continue
                if self._part(event):
                    others.append(event)  # too big: the 1009 close, and nothing after it
                    break
            else:
                others.append(event)
        for event in others:
            kind = type(event)
            try:
                if kind is Ping:
                    # Only an open connection answers: the events were parsed
                    # before any was acted on, so a close that came after the
                    # ping (or ours, sent) may have ended OPEN already, and
                    # wsproto refuses a pong then.
                    if ws._wsproto.state is ConnectionState.OPEN:
                        await ws._handle_ping_event(event)
                elif kind is Pong:
                    await ws._handle_pong_event(event)
                elif kind is CloseConnection:
                    try:
                        await ws._handle_close_connection_event(event)
                    finally:
                        if not ws._close_handshake.is_set():
                            # Cancelled while answering it: closed all the same.
                            self._abort(event.code, event.reason or None)
                elif kind is TextMessage or kind is BytesMessage:
                    await self._too_big()
                    return
            except trio_websocket.ConnectionClosed:
                ws._reader_running = False
                return

    def _part(self, event: Any) -> bool:
        """A message in parts (or a whole one over the limit): whether it went over the limit.

        As trio-websocket's `_handle_message_event`, without its channel.
        """
        ws = self._ws
        ws._message_size += len(event.data)
        ws._message_parts.append(event.data)
        if ws._message_size > ws._max_message_size:
            return True
        if event.message_finished:
            parts: list[Any] = ws._message_parts
            data: Any = b"".join(parts) if type(event) is BytesMessage else "".join(parts)
            ws._message_size = 0
            ws._message_parts = []
            if not self._discarding:
                self._pending.append(data)
        return False

    async def _too_big(self) -> None:
        """Close with 1009 and read no more, as trio-websocket does."""
        ws = self._ws
        err = f"Exceeded maximum message size: {ws._max_message_size} bytes"
        ws._message_size = 0
        ws._message_parts = []
        ws._close_reason = trio_websocket.CloseReason(1009, err)
        self._discard()
        ws._reader_running = False
        await ws._send(CloseConnection(code=1009, reason=err))

    def _abort(self, code: int = 1006, reason: str | None = None) -> None:
        """The connection is over: trio-websocket's `_abort_web_socket`, without yielding.

        It runs in a session's task, which may be cancelled (trio-websocket's
        reader task is not): a close half recorded would leave the connection
        open for good (`hang_up` would wait its whole timeout).
        """
        ws = self._ws
        if ws._wsproto.state is ConnectionState.OPEN:
            ws._wsproto.send(CloseConnection(code=code))
        if ws._close_reason is None:
            ws._close_reason = trio_websocket.CloseReason(code, reason)
        ws._send_channel.close()
        ws._reader_running = False
        ws._close_handshake.set()

    def _discard(self) -> None:
        self._discarding = True
        self._pending.clear()
        self._taken = 0

    async def close(self, code: int, reason: str | None) -> None:
        """Close the connection, as `WebSocketConnection.aclose`: the close frame, then the peer's.

        Reads the socket until the peer's close comes, unless another task
        is reading it (which then sees that close). Bound it from outside.
        """
        ws = self._ws
        if ws._close_reason:
            return
        try:
            if ws._wsproto.state is ConnectionState.OPEN:
                ws._close_reason = trio_websocket.CloseReason(1000, None)
                self._discard()
                await ws._send(CloseConnection(code=code, reason=reason))
            elif ws._wsproto.state in (ConnectionState.CONNECTING, ConnectionState.REJECTING):
                ws._close_handshake.set()
            self._discard()
            while not ws._close_handshake.is_set():
                if not ws._reader_running:
                    await ws._close_handshake.wait()  # as trio-websocket: for the bound
                    break
                if self._idle is not None:
                    self._give_way()
                if self._reading is not None:
                    # Another task reads (a receive the session left running):
                    # it may see the close, or stop first; then this one reads.
                    if self._read_done is None:
                        self._read_done = trio.Event()
                    await self._read_done.wait()
                    continue
                await self._read()
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            await ws._close_stream()


def _message(data: bytearray) -> bytes | BinaryMessage:
    """A binary message received as a bytearray: a BinaryMessage if it is a
    well-formed frame (its attachments copied out of `data` once), else its bytes
    (for `decode` to refuse, as it would have)."""
    if data[:1] == b"\x00":
        try:
            return BinaryMessage.parse(data)
        except InvalidRequest:
            pass
    return bytes(data)
