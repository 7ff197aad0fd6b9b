"""MessageStreams over one WebSocket: trio-websocket's connection (the client,
and `serve`'s server) and an ASGI connection (hypercorn's `{prefix}/ws`, in
`_asgi_stream`, re-exported here).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import trio
import trio_websocket

from ...runtime import ConnectionClosed, MessageStream, PayloadTooLarge
from ...runtime._protocol import BinaryMessage, message_size, says_binary
from .._gather import remaining_after
from .._web import heartbeat, pong_message
from ._endpoint import (
    ABNORMAL,
    CONNECTION_LOST,
    GOING_AWAY,
    INTERNAL_ERROR,
    NORMAL,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    Endpoint,
    closed_error,
    too_large,
)
from ._frames import FastFrames, message_parts
from ._frames import Parts as _Parts
from ._frames import frame as text_frame
from ._reading import SocketReader

__all__ = [
    "CANCELLED_CLOSE_TIMEOUT",
    "CLOSE_TIMEOUT",
    "IDLE_CHECK",
    "OUTBOX_MAX_BYTES",
    "OUTBOX_MAX_MESSAGES",
    "AsgiWebSocketStream",
    "TrioWebSocketStream",
    "WebSocketStream",
]

_log = logging.getLogger("tether.websocket")
#: Seconds a close waits for what is queued to be sent, then as long again for
#: the peer's close frame, before dropping the socket.
CLOSE_TIMEOUT = 5.0
#: The same, for a client leaving its block because it was cancelled: the
#: caller asked to stop, so the close may not hold it long (0.25 s to send
#: what is queued, 0.25 s for the server's answer; a live server answers in
#: far less, since the connection's reader keeps reading while it closes).
CANCELLED_CLOSE_TIMEOUT = 0.25
#: Seconds between a client's checks for pings that arrived while it was idle.
IDLE_CHECK = 1.0
#: Seconds a close waits when the peer is already known to be unresponsive.
_ABORT_TIMEOUT = 0.5


# ---------------------------------------------------------------------------
# Streams


#: How a server closes its connections when it is shutting down.
_SHUTDOWN = ("the server is shutting down", GOING_AWAY)
#: Messages a stream holds for its writer before senders wait for room.
OUTBOX_MAX_MESSAGES = 64
#: Bytes a stream holds for its writer before senders wait for room (1 MiB).
#: A larger message waits until the outbox is empty, then is queued alone.
OUTBOX_MAX_BYTES = 1024 * 1024
#: How a refused session's close says why, by the refusal's error code (others: 1000).
_REFUSAL_CODES = {
    "unauthorized": POLICY_VIOLATION,
    "forbidden": POLICY_VIOLATION,
    "too-many-requests": TRY_AGAIN_LATER,
    "unavailable": TRY_AGAIN_LATER,
}
#: What `_try_send_now` returns when the message must be queued.
_NOT_SENT: Any = object()
#: The most pieces one `sendmsg` is given (the kernel's IOV_MAX is 1024).
_MAX_PARTS = 1024


def _parts(batch: list[bytes | BinaryMessage], mask: bool) -> _Parts:
    """The frames of `batch` as pieces for `sendmsg`: a binary message's attachments
    as they are (not copied into a frame), the rest joined."""
    parts: _Parts = []
    joined: list[bytes] = []
    for data in batch:
        if type(data) is bytes:
            joined.append(text_frame(data, mask))
            continue
        if joined:
            parts.append(b"".join(joined))
            joined = []
        parts += message_parts(data, mask)  # type: ignore[arg-type]
    if joined:
        parts.append(b"".join(joined))
    return parts


class WebSocketStream(MessageStream):
    """A MessageStream over one WebSocket: text frames, close codes, keepalive.

    Sends do not wait. `send_message` writes a message straight to the socket
    when nothing is queued and the socket takes it (`_try_send_now`);
    otherwise it puts it in the stream's outbox and returns without yielding
    when there is room, and one writer task (`write_loop`) sends the outbox in
    order. On a network socket every send yields to the scheduler; a caller
    or an impl that waited for its own send would make the runtime hand its
    reading over to another task, and concurrent senders would queue on a
    lock. With the outbox, neither happens, and a burst of replies goes out
    back to back.

    The stream's owner either runs `write_loop` for as long as the stream,
    or hands a nursery to `start_writer_in`: then the writer starts with the
    first send that must be queued, so a connection whose sends all went
    straight to the socket (an idle session, a quiet one) has no writer task.

    The outbox is bounded by `OUTBOX_MAX_MESSAGES` and `OUTBOX_MAX_BYTES`;
    senders wait for room beyond either.

    Binary: JSON messages go as text frames, BinaryMessages as binary frames,
    which are sent only to a peer that said `"binary": true` (`binary`: a
    server's stream reads it from the peeked `hello`, `peer_said`; a client's
    from the `welcome`, when `expect_welcome` was called). A binary frame
    received is handed over as its bytes, for `decode`.
    """

    __slots__ = (
        "_close_as_words",
        "_drained",
        "_endpoint",
        "_expect_welcome",
        "_first",
        "_outbox",
        "_prefix",
        "_queued",
        "_room",
        "_send_error",
        "_writer",
        "_writer_nursery",
        "_writer_started",
        "_writing",
        "binary",
        "max_message_size",
    )

    def __init__(
        self, max_message_size: int, prefix: str, endpoint: Endpoint | None = None
    ) -> None:
        self.max_message_size = max_message_size
        self.binary = False  # until the peer says it reads binary frames
        self._expect_welcome = False
        self._endpoint = endpoint  # the server's, on a server's stream
        self._first: bytes | str | BinaryMessage | None = None
        self._prefix = prefix
        # A list, not a deque: an idle connection's empty list costs 56 bytes,
        # a deque over 600, and the writer takes the outbox whole.
        self._outbox: list[bytes | BinaryMessage] = []
        self._queued = 0  # bytes in the outbox
        self._writing = False  # the writer is sending a batch it took
        self._close_as_words: tuple[str | None, int] | None = None
        self._writer = trio.lowlevel.ParkingLot()  # the writer, waiting for work
        self._writer_nursery: trio.Nursery | None = None  # where to start it when needed
        self._writer_started = False
        self._room = trio.lowlevel.ParkingLot()  # senders waiting for room
        self._drained = trio.lowlevel.ParkingLot()  # closers waiting for the outbox
        self._send_error: ConnectionClosed | None = None

    def push_back(self, data: bytes | str | BinaryMessage) -> None:
        """Make `data` the next message received (the peeked hello)."""
        self._first = data

    def peer_said(self, hello: bytes | str | BinaryMessage) -> None:
        """Server side: send binary frames if the peer's `hello` says it reads them."""
        self.binary = says_binary(hello)

    def expect_welcome(self) -> None:
        """Client side: send binary frames if the first message received, the
        server's `welcome`, says it reads them."""
        self._expect_welcome = True

    async def receive_message(self) -> bytes | str | BinaryMessage:
        first = self._first
        if first is not None:
            self._first = None
            await trio.lowlevel.checkpoint()
            data = first
        else:
            data = await self._receive_next()
        if self._expect_welcome:
            self._expect_welcome = False
            self.binary = says_binary(data)
        return data

    @abc.abstractmethod
    async def _receive_next(self) -> bytes | str | BinaryMessage:
        """The next message off the socket (what `receive_message` returns)."""

    def _close_as(self, reason: str | None, code: int) -> tuple[str | None, int]:
        """The reason and code a close goes out with: the first close's, whoever closes later.

        A shutdown's, when the first close comes while shutting down. The
        first close says why (`"frontend too slow"`); a later one (the server
        closing what its session left open) must not replace it.
        """
        words = self._close_as_words
        if words is None:
            if self._endpoint is not None and self._endpoint.shutting_down:
                words = _SHUTDOWN
            else:
                words = (reason, code)
            self._close_as_words = words
        return words

    async def send_message(self, data: bytes | BinaryMessage) -> None:
        size = len(data) if type(data) is bytes else message_size(data)
        if size > self.max_message_size:
            raise too_large(size, self.max_message_size)
        if self._send_error is not None:
            await trio.lowlevel.checkpoint()
            raise self._send_error
        outbox = self._outbox
        if not outbox:
            rest = self._try_send_now(data)
            if rest is None:
                return
            if rest is not _NOT_SENT:
                await self._finish_send(rest)
                return
        # Room for it: under both bounds, or an empty outbox (a message over
        # the byte bound goes alone).
        while outbox and (
            len(outbox) >= OUTBOX_MAX_MESSAGES or self._queued + size > OUTBOX_MAX_BYTES
        ):
            await self._room.park()
            if self._send_error is not None:
                raise self._send_error
        outbox.append(data)
        self._queued += size
        if self._writer:
            self._writer.unpark()
        elif not self._writer_started:
            self._start_writer()

    def start_writer_in(self, nursery: trio.Nursery) -> None:
        """Run the writer in `nursery`, from the first send that has to be queued.

        Instead of running `write_loop` for the stream's whole life: the
        nursery must be the one that owns the stream (its tasks end with it).
        """
        self._writer_nursery = nursery

    def _start_writer(self) -> None:
        nursery = self._writer_nursery
        if nursery is None:
            return  # the owner runs write_loop; it has not begun yet
        self._writer_started = True
        try:
            nursery.start_soon(self.write_loop)
        except RuntimeError:
            # The connection's tasks are over (its nursery is closed): so is
            # the connection, and what was just queued cannot go.
            error = closed_error(None, None, prefix=self._prefix)
            self._fail_sends(error)
            raise error from None

    def _try_send_now(self, data: bytes | BinaryMessage) -> Any:
        """Send `data` at once, without yielding, if the socket allows.

        Returns:
            None when it was sent; `_NOT_SENT` when it must go through the
            outbox; else the send was begun, and the caller finishes it with
            `_finish_send(returned)`.
        """
        return _NOT_SENT

    async def _finish_send(self, rest: Any) -> None:
        raise NotImplementedError  # pragma: no cover - only after a _try_send_now that begins one

    async def write_loop(self) -> None:
        """Send what `send_message` queued, in order, until the socket closes.

        Run it in the nursery that owns the stream, for as long as the stream.
        """
        self._writer_started = True
        outbox = self._outbox
        try:
            while True:
                if not outbox:
                    if self._drained:
                        self._drained.unpark_all()
                    await self._writer.park()
                    continue
                if len(outbox) == 1:
                    batch = [outbox.pop()]
                else:
                    batch = outbox.copy()
                    outbox.clear()
                self._queued = 0
                if self._room:
                    self._room.unpark_all()
                self._writing = True
                try:
                    await self._send_batch(batch)
                finally:
                    self._writing = False
        except ConnectionClosed as exc:
            self._fail_sends(exc)

    def _fail_sends(self, exc: ConnectionClosed) -> None:
        """Closed (or closing): sends raise `exc`, and what is queued is dropped."""
        if self._send_error is None:
            self._send_error = exc
        self._outbox.clear()
        self._queued = 0
        self._room.unpark_all()
        self._drained.unpark_all()

    async def _drain(self) -> None:
        """Wait until the writer has sent everything queued (or cannot)."""
        while (self._outbox or self._writing) and self._send_error is None:
            await self._drained.park()

    async def _send_batch(self, batch: list[bytes | BinaryMessage]) -> None:
        """Send these messages now, one frame each, in order. Raises ConnectionClosed."""
        raise NotImplementedError

    async def keep_alive(self, interval: float, answer_within: float) -> None:
        """Ping every `interval` seconds; close if a ping is not answered in time.

        A connection's own keepalive task; a server runs one `Pinger` for all
        its connections instead, which calls `ping_once`.
        """
        while True:
            await trio.sleep(interval)
            if not await self.ping_once(answer_within):
                return

    async def ping_once(self, answer_within: float) -> bool:
        """Ping the peer; close the connection (1011) if it does not answer within `answer_within`.

        Returns:
            True when the peer answered; False when the connection is closed
            (it was already, or the peer did not answer in time).
        """
        raise NotImplementedError

    async def refuse(self, message: bytes, error_code: str, reason: str) -> None:
        # A refused session: the error, then a close that says why (1008 for
        # an authorization refusal, 1013 "try again later" for a full backend).
        with contextlib.suppress(ConnectionClosed, PayloadTooLarge):
            await self.send_message(message)
        await self.aclose(reason, _REFUSAL_CODES.get(error_code, NORMAL))

    @abc.abstractmethod
    async def aclose(self, reason: str | None = None, code: int = NORMAL) -> None:
        """Close with `code` (1000 by default) and `reason`; see MessageStream.aclose.

        What was queued is sent first (for at most a few seconds).
        """


class TrioWebSocketStream(WebSocketStream):
    """A MessageStream over a trio-websocket connection (either side)."""

    __slots__ = (
        "_closing_step",
        "_hurried",
        "_local_close",
        "_mask",
        "_raw",
        "_reader",
        "_reading",
        "_ws",
    )

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        max_message_size: int,
        prefix: str,
        endpoint: Endpoint | None = None,
        *,
        own_reading: bool = False,
    ) -> None:
        super().__init__(max_message_size, prefix, endpoint)
        self._ws = ws
        # How this side closed it, when it did: trio-websocket records a close
        # it did not receive as (1000, no reason), and receives must say why.
        self._local_close: ConnectionClosed | None = None
        self._reading = False
        self._hurried = False  # the client's caller was cancelled: close quickly
        self._closing_step: trio.CancelScope | None = None
        # Whole data frames are read and written by _frames, not wsproto
        # (a fifth of a call's round trip); wsproto keeps everything else.
        ws._wsproto = FastFrames(ws._wsproto, ws._max_message_size)  # type: ignore[assignment]
        self._mask = ws.is_client
        # The plain socket under the connection, for sends that need no wait
        # (None under TLS: the SSL stream must do its own writing).
        stream = ws._stream
        plain = type(stream) is trio.SocketStream
        raw = getattr(getattr(stream, "socket", None), "_sock", None) if plain else None
        self._raw: socket.socket | None = raw if isinstance(raw, socket.socket) else None
        # `own_reading`: `ws` has no reader task (`serve` starts none); the
        # task that receives reads the socket (see `SocketReader`).
        self._reader: SocketReader | None = None
        if own_reading:
            if self._raw is None:
                raise ValueError("own_reading needs a plain socket under the connection")
            self._reader = SocketReader(ws, self._raw)

    def _closed(self, reason: trio_websocket.CloseReason | None) -> ConnectionClosed:
        """The error for trio-websocket's close `reason` (this side's own, when it closed)."""
        if self._local_close is not None:
            return self._local_close
        if reason is None:
            return closed_error(None, None, prefix=self._prefix)
        if reason.code == ABNORMAL and not reason.reason:
            # trio-websocket's 1006: the socket ended with no close frame.
            # (hypercorn's ASGI disconnect says 1006 for a client's clean
            # close too, so the ASGI stream cannot say this.)
            return closed_error(ABNORMAL, CONNECTION_LOST, prefix=self._prefix)
        return closed_error(reason.code, reason.reason, prefix=self._prefix)

    async def _broken(self) -> ConnectionClosed:
        """The socket failed under a send: trio-websocket records it; the error to raise."""
        await self._ws._abort_web_socket()
        return self._closed(self._ws._close_reason)

    def _try_send_now(self, data: bytes | BinaryMessage) -> Any:
        # A frame that the socket takes at once is written here, with no task
        # switch and no yield: the same saving as the in-process transport's
        # buffered send. The stream lock keeps it whole against trio-websocket's
        # own sends (pongs, close); a socket that takes only part of it is
        # finished by the caller, still holding the lock.
        ws = self._ws
        # trio-websocket sets the close reason before anything leaves OPEN (a
        # close sent, received or refused), so no data frame follows a close.
        if ws._close_reason is not None:
            raise self._closed(ws._close_reason)
        raw = self._raw
        lock = ws._stream_lock
        if raw is None or lock.locked():
            return _NOT_SENT
        if type(data) is bytes:
            frame = text_frame(data, self._mask)
            parts: _Parts | None = None
            size = len(frame)
        else:
            # A binary message goes in pieces, its attachments not copied.
            parts = message_parts(data, self._mask)  # type: ignore[arg-type]
            size = sum([len(part) for part in parts])
        lock.acquire_nowait()
        try:
            sent = raw.send(frame) if parts is None else raw.sendmsg(parts)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # broken: the send in _finish_send reports it
        if sent == size:
            lock.release()
            return None
        return remaining_after([frame] if parts is None else parts, sent)

    async def _finish_send(self, rest: Any) -> None:
        # The frame is on the wire in part: it must be finished before any
        # other, even if the caller is cancelled meanwhile, or the peer would
        # read garbage. So it is shielded; what ends it early is the socket
        # closing (keepalive closes a peer that stopped reading).
        try:
            with trio.CancelScope(shield=True):
                await self._write(rest)
        finally:
            self._ws._stream_lock.release()

    async def _write(self, parts: _Parts) -> None:
        """Write `parts` in order, waiting for room (the stream lock held). Raises ConnectionClosed.

        On a plain socket with `sendmsg` (no joining of the pieces), else
        through the trio stream, joined.
        """
        ws = self._ws
        raw = self._raw
        try:
            if raw is None:
                await ws._stream.send_all(b"".join(parts))
                return
            while True:
                try:
                    sent = raw.sendmsg(parts[:_MAX_PARTS])
                except BlockingIOError:
                    sent = 0
                parts = remaining_after(parts, sent)
                if not parts:
                    return
                await trio.lowlevel.wait_writable(raw)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise await self._broken() from None

    async def _send_batch(self, batch: list[bytes | BinaryMessage]) -> None:
        ws = self._ws
        if ws._close_reason is not None:
            raise self._closed(ws._close_reason)
        # All the frames queued, framed and written in one send: what
        # `send_message` does for one, minus a lock round and a socket write
        # per frame.
        parts = _parts(batch, self._mask)
        async with ws._stream_lock:
            await self._write(parts)

    async def _receive_next(self) -> bytes | str | BinaryMessage:
        self._reading = True
        try:
            return await self._receive()
        finally:
            self._reading = False

    async def answer_pings_while_idle(self, every: float) -> None:
        """Client side: answer a hypercorn server's envelope pings while nobody reads.

        An RPC connection reads only while a call waits for its reply; an idle
        one would leave the server's pings unanswered and be closed as dead.
        Every `every` seconds, while no receive is running, this takes what
        has arrived: pings are answered, and the first other message is kept
        for the next receive.
        """
        reader = self._reader
        if reader is not None:
            await self._read_while_idle(reader, every)
            return
        channel = self._ws._recv_channel
        while True:
            await trio.sleep(every)
            while not self._reading and self._first is None:
                try:
                    data = channel.receive_nowait()
                except trio.WouldBlock:
                    break
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
                if type(data) is str and data[:7] == '{"t":"p' and await self._answer_ping(data):
                    continue
                self._first = data

    async def _read_while_idle(self, reader: SocketReader, every: float) -> None:
        """`answer_pings_while_idle` when the stream reads its own socket.

        With no reader task, nothing reads an idle connection: after `every`
        seconds with no receive running, this task reads (WebSocket pings are
        answered, and so is a close), and a receive that begins meanwhile
        takes its place at once. Envelope pings are answered; the first other
        message is kept for the next receive, and reading goes on (WebSocket
        pings must still be answered: a late reply to a cancelled call must
        not get an idle connection closed as dead) while the reader keeps
        few messages (`SocketReader.read_while_idle`).
        """
        while True:
            await trio.sleep(every)
            while not self._reading:
                if self._first is None:
                    data = reader.take_nowait()
                    if data is not None:
                        if (
                            type(data) is str
                            and data[:7] == '{"t":"p'
                            and await self._answer_ping(data)
                        ):
                            continue
                        self._first = data
                        continue
                if reader.over:
                    return
                if not await reader.read_while_idle():
                    break

    async def _receive(self) -> bytes | str | BinaryMessage:
        ws = self._ws
        get_message = ws.get_message if self._reader is None else self._reader.get_message
        while True:
            try:
                data = await get_message()
            except trio_websocket.ConnectionClosed as exc:
                closed = self._closed(exc.reason)
                self._fail_sends(closed)
                raise closed from None
            if type(data) is str and data[:7] == '{"t":"p' and await self._answer_ping(data):
                continue
            return data

    async def _answer_ping(self, data: str) -> bool:
        """Answer an envelope ping (hypercorn's server sends them); True if it was one."""
        beat = heartbeat(data)
        if beat is None or beat[0] != "ping":
            return False
        with contextlib.suppress(ConnectionClosed):
            await self.send_message(pong_message(beat[1]))  # if closed, the next receive says so
        return True

    async def aclose(self, reason: str | None = None, code: int = NORMAL) -> None:
        await self._close(reason, code, CLOSE_TIMEOUT)

    async def _close(self, reason: str | None, code: int, wait: float) -> None:
        # Shielded so that a close during cancellation (the usual case: a block
        # left by an exception) still tells the peer why; bounded so a peer
        # that does not answer cannot hold us: `wait` to send what is queued
        # (what is left is dropped), `wait` again to send the close frame and
        # read the peer's.
        reason, code = self._close_as(reason, code)
        if self._local_close is None and self._ws.closed is None:
            self._local_close = closed_error(code, reason, prefix=self._prefix)
        closed = self._local_close or closed_error(code, reason, prefix=self._prefix)
        with trio.CancelScope(shield=True):
            with self._bounded(wait):
                await self._drain()
            self._fail_sends(closed)
            with self._bounded(wait):
                if self._reader is None:
                    await self._ws.aclose(code, _fit_reason(reason))
                else:
                    await self._reader.close(code, _fit_reason(reason))

    @contextlib.contextmanager
    def _bounded(self, wait: float) -> Iterator[None]:
        """A step of closing, given `wait` seconds, or less once the caller is cancelled."""
        with trio.move_on_after(CANCELLED_CLOSE_TIMEOUT if self._hurried else wait) as scope:
            self._closing_step = scope
            try:
                yield
            finally:
                self._closing_step = None

    async def notice_cancellation(self) -> None:
        """Client side: run it in the caller's scope, beside the block using the stream.

        When the caller's scope is cancelled, this task is too, and closing
        the stream (as the block is left) no longer waits its full
        `CLOSE_TIMEOUT` for a server that does not answer: each step gets
        `CANCELLED_CLOSE_TIMEOUT`. A task of its own, because the runtime
        closes the stream shielded, where the caller's cancellation cannot be
        seen, and may have begun before this task hears of it.
        """
        try:
            await trio.sleep_forever()
        finally:
            self._hurried = True
            step = self._closing_step
            if step is not None:
                step.deadline = min(step.deadline, trio.current_time() + CANCELLED_CLOSE_TIMEOUT)

    async def hang_up(self) -> None:
        """Server side, once closed: end the TCP connection, at the latest after the close timeout.

        trio-websocket ends it when the close handshake completes. When it
        closed the connection itself (a message over the size limit) it stops
        reading, and a peer that never answers would keep the socket open
        for as long as the server runs.
        """
        ws = self._ws
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws._close_handshake.wait()
        finally:
            await trio.aclose_forcefully(ws._stream)

    async def ping_once(self, answer_within: float) -> bool:
        with trio.move_on_after(answer_within) as scope:
            try:
                await self._ws.ping()
            except trio_websocket.ConnectionClosed:
                return False
        if scope.cancelled_caught:
            _log.info("closing %s: no pong within %s s", self._prefix, answer_within)
            await self._close(
                f"no answer to a ping within {answer_within:g} s",
                INTERNAL_ERROR,
                _ABORT_TIMEOUT,
            )
            return False
        return True


def _fit_reason(reason: str | None) -> str | None:
    """A close reason cut to the 123 bytes a close frame can carry."""
    if reason is None:
        return None
    data = reason.encode()
    if len(data) <= 123:
        return reason
    return data[:120].decode("utf-8", "ignore") + "..."


# The ASGI side (hypercorn's `{prefix}/ws`) is in `_asgi_stream`; re-exported here.
from ._asgi_stream import AsgiWebSocketStream as AsgiWebSocketStream  # noqa: E402
