"""Resuming an IPC session over a new connection: nothing lost, nothing twice.

A resumable session (IPC over WebSocket; docs/ipc.md "Resuming a session")
runs its engine (`Peer`) over a `ResumableStream`, which sits between the
engine and the connection of the moment. Each side counts the messages of
the session it sends and receives (the handshake and the stream's own
messages aside): a WebSocket is ordered, so the n-th message received is the
n-th sent, and the counts need no field in the messages themselves. What a
side sends stays in its replay buffer until the other side acknowledges it
(`{"t":"ack","n":N}`: "I have your first N"), which it does every eighth of
the buffer's bound, from a task of its own.

When the connection drops (it ends without the other side saying `{"t":"bye"}`
first, which is how a side ends a session on purpose), the engine does not
notice: sends go to the replay buffer, receives wait. The frontend connects
again (`keep_connected`, with the backoff of a `RetryPolicy`) and sends a
`hello` with the session's token and how many messages it has received; the
backend (`ResumableSessions.resume`) answers a `welcome` with how many it has,
and each side sends again what the other has not got, in order, before
anything new. A backend keeps the session for `grace` seconds after a drop;
then it ends ("session expired: no connection for 20 s"), and so does a
frontend's attempt to take it back. A replay buffer that stays full (the
other side away, or not reading) for `full_timeout` seconds ends the session
too: memory stays bounded.

Costs on the hot path: a send appends to a deque and counts; a receive counts
and looks at one character for the stream's own messages.
"""

from __future__ import annotations

import collections
import hmac
import logging
import math
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress

import attrs
import orjson
import trio

from ._binary import BinaryMessage, message_size
from ._credentials import Authorization, credential
from ._errors import ConnectError, ConnectionClosed, NotFound, PayloadTooLarge, TetherError
from ._faults import wrap_client_stream
from ._protocol import Error, Hello, encode
from ._protocol_hello import Resume
from ._retry import STABLE_AFTER, RetryPolicy, unfixable
from ._state import ConnectionState, StateWatch
from ._stream import MessageStream

__all__ = [
    "DEFAULT_REPLAY_BYTES",
    "DEFAULT_REPLAY_MESSAGES",
    "DEFAULT_RESUME_GRACE",
    "FINAL_CLOSE_CODES",
    "ResumableSessions",
    "ResumableStream",
    "keep_connected",
]

_log = logging.getLogger("tether.ipc")

#: Seconds a backend keeps a session whose connection dropped.
DEFAULT_RESUME_GRACE = 20.0
#: Messages, and bytes of them, a side keeps for the other until acknowledged.
DEFAULT_REPLAY_MESSAGES = 4096
DEFAULT_REPLAY_BYTES = 16 * 1024 * 1024
#: WebSocket close codes that end a session for good, said by the other side
#: or its server (protocol errors, a refusal, a message too big): resuming
#: would meet the same answer.
FINAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
#: Ended sessions remembered, so a frontend coming back late hears why.
_ENDED_KEPT = 1024
#: Seconds an on-purpose close may take to send its `bye`.
_BYE_TIMEOUT = 1.0

_ACK_PREFIX = b'{"t":"ack","n":'
_BYE = b'{"t":"bye"}'


def _control(data: bytes | str | BinaryMessage) -> bytes | str | None:
    """`data` when it is one of the stream's own messages (`ack`, `bye`), else None.

    Every message of the engine is encoded with its `t` first, and no engine
    message's tag begins with `a` or `b`: one character decides.
    """
    if type(data) is str:
        if data[6:7] in ("a", "b") and data[:6] == '{"t":"':
            return data
    elif type(data) is bytes and data[6:7] in (b"a", b"b") and data[:6] == b'{"t":"':
        return data
    return None


class ResumableStream(MessageStream):
    """A MessageStream that outlives its connections (see the module's docstring).

    Args:
        socket: The connection the session was opened on.
        side: `"frontend"` or `"backend"`: whose end this is.
        grace: Backend: seconds to wait for the frontend after a drop.
        max_messages, max_bytes: The replay buffer's bound.
        full_timeout: Seconds the buffer may stay full before the session ends.
    """

    __slots__ = (
        "_ack_bytes",
        "_ack_every",
        "_acked_out",
        "_busy",
        "_changed",
        "_end",
        "_lost",
        "_peer_bye",
        "_socket",
        "_turn",
        "_unacked_bytes",
        "acked",
        "binary",
        "buffer",
        "buffer_bytes",
        "full_timeout",
        "grace",
        "last_loss",
        "lost_at",
        "max_bytes",
        "max_message_size",
        "max_messages",
        "received",
        "sent",
        "side",
        "state",
    )

    def __init__(
        self,
        socket: MessageStream,
        *,
        side: str,
        grace: float = DEFAULT_RESUME_GRACE,
        max_messages: int = DEFAULT_REPLAY_MESSAGES,
        max_bytes: int = DEFAULT_REPLAY_BYTES,
        full_timeout: float = 5.0,
    ) -> None:
        self._socket: MessageStream | None = socket
        self.side = side
        self.binary = socket.binary
        self.max_message_size = socket.max_message_size
        self.grace = grace
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.full_timeout = full_timeout
        #: Messages this side has sent in the session; the first `acked` of
        #: them the other side has, the rest are in `buffer`.
        self.sent = 0
        self.acked = 0
        self.buffer: collections.deque[tuple[bytes | BinaryMessage, int]] = collections.deque()
        self.buffer_bytes = 0
        #: Messages of the other side's this side has received.
        self.received = 0
        self._acked_out = 0  # what this side last acknowledged
        self._unacked_bytes = 0
        self._ack_every = max(1, max_messages // 8)
        self._ack_bytes = max(1, max_bytes // 8)
        self._busy = False  # a sender holds the turn (numbering = order on the wire)
        self._turn = trio.lowlevel.ParkingLot()  # senders waiting for the turn or room
        self._changed = trio.lowlevel.ParkingLot()  # receiver and `run`, waiting for news
        self._lost: list[MessageStream] = []  # dropped connections still to close
        self._end: ConnectionClosed | None = None
        self._peer_bye = False
        #: When the connection dropped (None while connected), and why.
        self.lost_at: float | None = None
        self.last_loss: str | None = None
        #: The session's state, for `FrontendIpc.state` (the engine's, once it has one).
        self.state = StateWatch()

    # -- MessageStream -----------------------------------------------------------

    async def send_message(self, data: bytes | BinaryMessage) -> None:
        size = len(data) if type(data) is bytes else message_size(data)
        if size > self.max_message_size:
            raise PayloadTooLarge(
                f"message of {size} bytes is over this session's limit of "
                f"{self.max_message_size}: send less at once"
            )
        if self._busy or self._end is not None or self._full(size):
            await self._wait_turn(size)
        self._busy = True
        try:
            self.buffer.append((data, size))
            self.buffer_bytes += size
            self.sent += 1
            socket = self._socket
            if socket is not None:
                try:
                    await socket.send_message(data)
                except ConnectionClosed as exc:
                    # It stays in the buffer: sent again on the next connection.
                    self._drop(socket, exc.reason or str(exc))
                except BaseException:
                    # Cancelled before the connection took it: it was not sent,
                    # and must not be counted (the other side would miscount).
                    self.buffer.pop()
                    self.buffer_bytes -= size
                    self.sent -= 1
                    raise
        finally:
            self._busy = False
            if self._turn:
                self._turn.unpark()

    def _full(self, size: int) -> bool:
        buffer = self.buffer
        return bool(buffer) and (
            len(buffer) >= self.max_messages or self.buffer_bytes + size > self.max_bytes
        )

    async def _wait_turn(self, size: int) -> None:
        full_since: float | None = None
        while True:
            if self._end is not None:
                raise self._end
            full = self._full(size)
            if not full and not self._busy:
                return
            deadline = math.inf
            if full:
                now = trio.current_time()
                if full_since is None:
                    full_since = now
                deadline = full_since + self.full_timeout
                if now >= deadline:
                    away = "away" if self._socket is None else "not reading"
                    self.end(
                        f"replay buffer full: {len(self.buffer)} messages "
                        f"({self.buffer_bytes} bytes) unacknowledged by the {_other(self.side)} "
                        f"for {self.full_timeout:g} s (it is {away}; the bound is "
                        f"{self.max_messages} messages, {self.max_bytes} bytes)"
                    )
                    raise self._end  # type: ignore[misc]
            with trio.move_on_at(deadline):
                await self._turn.park()

    async def receive_message(self) -> bytes | str | BinaryMessage:
        while True:
            if self._end is not None:
                raise self._end
            socket = self._socket
            if socket is None:
                await self._changed.park()
                continue
            try:
                data = await socket.receive_message()
            except ConnectionClosed as exc:
                if socket is self._socket:
                    if self._peer_bye or exc.close_code in FINAL_CLOSE_CODES:
                        self._finish(exc)
                        raise
                    self._drop(socket, exc.reason or str(exc))
                continue
            if socket is not self._socket:
                continue  # a connection already replaced: the other side sends it again
            control = _control(data)
            if control is not None:
                self._on_control(control)
                continue
            self.received += 1
            # Of text, its length in characters: near enough for when to acknowledge.
            self._unacked_bytes += data.size if type(data) is BinaryMessage else len(data)  # type: ignore[arg-type]
            if (
                self.received - self._acked_out >= self._ack_every
                or self._unacked_bytes >= self._ack_bytes
            ):
                self._changed.unpark_all()  # `run` sends the ack
            return data

    def _on_control(self, data: bytes | str) -> None:
        if data[6:7] in ("b", b"b"):
            self._peer_bye = True  # the connection's close that follows is final
            return
        try:
            count = orjson.loads(data)["n"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if type(count) is int:
            self._trim(count)

    def _trim(self, count: int) -> None:
        """The other side has our first `count` messages: forget them."""
        if count > self.sent:
            _log.warning(
                "the %s acknowledged %d messages of this session, which sent %d: ignored",
                _other(self.side),
                count,
                self.sent,
            )
            return
        buffer = self.buffer
        while self.acked < count:
            self.buffer_bytes -= buffer.popleft()[1]
            self.acked += 1
        if self._turn:
            self._turn.unpark_all()

    async def aclose(self, reason: str | None = None) -> None:
        """End the session on purpose: `bye` after everything sent, then close the connection."""
        socket = self._socket
        if socket is not None and self._end is None:
            with trio.move_on_after(_BYE_TIMEOUT):
                while self._busy:
                    await self._turn.park()
                if self._socket is socket:
                    with suppress(ConnectionClosed, PayloadTooLarge):
                        await socket.send_message(_BYE)
        self._finish(ConnectionClosed(reason or "closed", reason=reason))
        if socket is not None:
            await socket.aclose(reason)
        await self._close_lost()

    # -- connections coming and going -------------------------------------------

    def _drop(self, socket: MessageStream, why: str) -> None:
        """`socket` is gone (not closed on purpose): wait for the next one."""
        if socket is not self._socket or self._end is not None:
            return
        self._socket = None
        self._lost.append(socket)
        self.lost_at = trio.current_time()
        self.last_loss = why
        self.state.set(ConnectionState.RECONNECTING, f"connection lost: {why}")
        _log.info("the connection of a resumable IPC session (%s side) dropped: %s", self.side, why)
        self._changed.unpark_all()

    def _finish(self, error: ConnectionClosed) -> None:
        if self._end is None:
            self._end = error
            self._socket = None
        self._changed.unpark_all()
        self._turn.unpark_all()

    def end(self, reason: str) -> None:
        """End the session now with `reason` (expired, refused, tries spent, buffer full)."""
        if self._end is None:
            socket = self._socket
            if socket is not None:
                self._lost.append(socket)
            self._finish(ConnectionClosed(reason, reason=reason))
            _log.info("a resumable IPC session (%s side) ended: %s", self.side, reason)

    @property
    def ended(self) -> bool:
        return self._end is not None

    @property
    def connected(self) -> bool:
        return self._socket is not None

    async def attach(
        self,
        socket: MessageStream,
        peer_received: int,
        greeting: Callable[[int], bytes] | None = None,
    ) -> None:
        """Carry on over `socket`: send `greeting(received)`, then what the other side lacks.

        Raises:
            ConnectionClosed: the session has ended, or `socket` failed (the
                session stays detached).
            ValueError: `peer_received` is not a count the other side can have.
        """
        old = self._socket
        if old is not None:
            self._drop(old, "replaced by a new connection")
        while self._busy and self._end is None:
            await self._turn.park()
        if self._end is not None:
            raise self._end
        if not self.acked <= peer_received <= self.sent:
            raise ValueError(
                f"the {_other(self.side)} says it has {peer_received} messages of this session; "
                f"it acknowledged {self.acked} and {self.sent} were sent"
            )
        self._busy = True
        try:
            self._trim(peer_received)
            if greeting is not None:
                await socket.send_message(greeting(self.received))
            for data, _ in list(self.buffer):
                await socket.send_message(data)
            self._socket = socket
            self.lost_at = None
            self._acked_out = -self._ack_every  # acknowledge at the next message
            self.state.set(ConnectionState.CONNECTED, "resumed")
            _log.info(
                "a resumable IPC session (%s side) resumed; %d messages sent again",
                self.side,
                len(self.buffer),
            )
        finally:
            self._busy = False
            self._changed.unpark_all()
            self._turn.unpark_all()

    async def wait_detached(self, socket: MessageStream | None = None) -> None:
        """Wait until the session has no connection (or not `socket`), or has ended."""
        while (
            self._end is None
            and self._socket is not None
            and self._socket is (socket or self._socket)
        ):
            await self._changed.park()

    async def _close_lost(self) -> None:
        while self._lost:
            socket = self._lost.pop()
            with trio.CancelScope(shield=True), trio.move_on_after(_BYE_TIMEOUT):
                await socket.aclose(self.last_loss)

    async def run(self) -> None:
        """The stream's own work, until the session ends: acknowledgements, closing
        dropped connections, and on a backend the grace period after a drop."""
        try:
            while self._end is None:
                await self._close_lost()
                socket = self._socket
                if socket is None and self.side == "backend" and self.lost_at is not None:
                    with trio.move_on_at(self.lost_at + self.grace):
                        while self._socket is None and self._end is None:
                            await self._changed.park()
                    if self._socket is None:
                        self.end(f"session expired: no connection for {self.grace:g} s")
                    continue
                if (
                    socket is not None
                    and self.received > self._acked_out
                    and (
                        self.received - self._acked_out >= self._ack_every
                        or self._unacked_bytes >= self._ack_bytes
                    )
                ):
                    count = self.received
                    try:
                        await socket.send_message(_ACK_PREFIX + b"%d}" % count)
                    except ConnectionClosed as exc:
                        self._drop(socket, exc.reason or str(exc))
                    else:
                        self._acked_out = count
                        self._unacked_bytes = 0
                    continue
                await self._changed.park()
        finally:
            await self._close_lost()


def _other(side: str) -> str:
    return "backend" if side == "frontend" else "frontend"


# ---------------------------------------------------------------------------
# The frontend: connecting again


async def keep_connected(
    stream: ResumableStream,
    connect: Callable[[str], AbstractAsyncContextManager[MessageStream]],
    hello: Hello,
    token: str,
    retry: RetryPolicy,
    handshake_timeout: float,
    authorization: Authorization = None,
) -> None:
    """The frontend's side: after each drop, connect again and resume, until the session ends.

    `hello` is the session's opening hello, with the session's id (its
    `resume` is filled in each time); `connect` is given that id. Each outage
    gets `retry.attempts` tries, waiting `retry.backoff(n)` before the n-th;
    when they are spent, or the backend refuses (the session expired), the
    session ends with that reason. A credential provider (`authorization`) is
    asked for the resuming hello's credential each time.
    """
    session_id = hello.session_id
    assert session_id is not None, "the resuming hello names its session"
    while True:
        await stream.wait_detached()
        if stream.ended:
            return
        began = trio.current_time()
        last = stream.last_loss or "the connection dropped"
        tries = 0
        while not stream.connected:
            if stream.ended:
                return
            if tries >= retry.attempts:
                stream.end(
                    f"could not resume the session: no connection to the backend after "
                    f"{tries} tries over {trio.current_time() - began:.1f} s (last: {last})"
                )
                return
            tries += 1
            await trio.sleep(retry.backoff(tries))
            try:
                async with connect(session_id) as raw:
                    socket = wrap_client_stream(raw)
                    again = attrs.evolve(
                        hello,
                        channels={},
                        resume=Resume(token, stream.received),
                        authorization=await credential(authorization)
                        if authorization is not None
                        else hello.authorization,
                    )
                    with trio.fail_after(handshake_timeout):
                        count = await _exchange(socket, again)
                    await stream.attach(socket, count)
                    attached = trio.current_time()
                    await stream.wait_detached(socket)
                    if stream.ended:
                        return
                    last = stream.last_loss or last
                    if trio.current_time() - attached >= STABLE_AFTER:
                        # Dropped again later: a new outage, with tries of its own.
                        began = trio.current_time()
                        tries = 0
                    # Dropped as soon as made: a try of the same outage.
            except (ConnectError, ConnectionClosed, trio.TooSlowError) as exc:
                if unfixable(exc):  # a TLS certificate refused: no retry can fix it
                    stream.end(f"could not resume the session: {exc}")
                    return
                last = str(exc) or type(exc).__name__
            except TetherError as exc:
                # The backend refused: the session is over (expired, unknown).
                stream.end(exc.message)
                return
            except ValueError as exc:
                stream.end(f"cannot resume the session: {exc}")
                return


async def _exchange(socket: MessageStream, hello: Hello) -> int:
    """Send the resuming hello; return how many of our messages the backend has.

    Raises:
        ConnectError: the backend left, or answered garbage.
        TetherError: the backend refused to resume.
    """
    from ._connection import exchange_hello  # a cycle at import time otherwise

    welcome = await exchange_hello(socket, hello)
    if welcome.received is None:
        raise ConnectError("the backend did not resume the session (its welcome has no count)")
    return int(welcome.received)


# ---------------------------------------------------------------------------
# The backend: sessions that may be taken back


class ResumableSessions:
    """A server's resumable sessions, by id: what a resuming `hello` is checked against.

    Args:
        grace: Seconds a session waits for its frontend after a drop.
        max_messages, max_bytes: Each session's replay buffer bound.
    """

    def __init__(
        self,
        grace: float = DEFAULT_RESUME_GRACE,
        max_messages: int = DEFAULT_REPLAY_MESSAGES,
        max_bytes: int = DEFAULT_REPLAY_BYTES,
    ) -> None:
        self.grace = grace
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._open: dict[str, tuple[str, ResumableStream, Callable[[int], bytes]]] = {}
        self._ended: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()

    def add(
        self, session_id: str, stream: ResumableStream, greeting: Callable[[int], bytes]
    ) -> str:
        """Keep `stream` resumable; return its token (unguessable: 256 random bits)."""
        token = secrets.token_urlsafe(32)
        self._open[session_id] = (token, stream, greeting)
        return token

    def remove(self, session_id: str, reason: str) -> None:
        entry = self._open.pop(session_id, None)
        if entry is None:
            return
        self._ended[session_id] = (entry[0], reason)
        while len(self._ended) > _ENDED_KEPT:
            self._ended.popitem(last=False)

    def new_stream(self, socket: MessageStream, full_timeout: float) -> ResumableStream:
        return ResumableStream(
            socket,
            side="backend",
            grace=self.grace,
            max_messages=self.max_messages,
            max_bytes=self.max_bytes,
            full_timeout=full_timeout,
        )

    async def resume(self, socket: MessageStream, hello: Hello) -> None:
        """Serve a resuming `hello`: give its session this connection, for as long as it lasts.

        A hello whose token does not match its session (compared in constant
        time), or whose session is unknown or over, is refused with
        `not-found` and the reason, when the token matched an ended session.
        """
        assert hello.resume is not None
        session_id = hello.session_id or ""
        token = hello.resume.token
        entry = self._open.get(session_id)
        refusal: TetherError | None = None
        if entry is None or not hmac.compare_digest(entry[0].encode(), token.encode()):
            ended = self._ended.get(session_id)
            if ended is not None and hmac.compare_digest(ended[0].encode(), token.encode()):
                refusal = NotFound(ended[1])
            else:
                refusal = NotFound(
                    "no session to resume with this id and token: it ended, or never was; "
                    "open a new session"
                )
        else:
            _, stream, greeting = entry
            try:
                await stream.attach(socket, hello.resume.received, greeting)
            except ValueError as exc:
                refusal = NotFound(f"cannot resume the session: {exc}")
                stream.end(str(refusal.message))
            except ConnectionClosed:
                return
            else:
                await stream.wait_detached(socket)
                return
        from ._dispatch import error_info  # a cycle at import time otherwise

        info = error_info(refusal, None, development_mode=False)
        await socket.refuse(encode(Error(None, info)), info.code, info.message)
