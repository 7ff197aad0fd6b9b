"""RPC over a MessageStream: the frontend's connection and the backend's session.

The frontend's `RpcConnection` multiplexes calls by id over one stream; its
waiting callers read the replies in turn (no reader task), and cancelling a
call sends `cancel`. The backend's `serve_rpc_session` reads and runs calls
with the worker tasks of `_workers.Workers`, each call under its context, and
cancels them all when the stream closes: nothing outlives its session.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio

from ._client import ClientOptions, RpcBackend, check_backend_interfaces, error_from_info
from ._errors import (
    CallMayHaveRun,
    CallNotSent,
    ConnectError,
    ConnectionClosed,
    IncompatibleVersion,
    InvalidRequest,
    PayloadTooLarge,
    TetherError,
)
from ._faults import wrap_client_stream
from ._interfaces import Operation, RpcInterface
from ._progress import ProgressListener, current_listener, deliver
from ._protocol import (
    PROTOCOL_VERSION,
    Call,
    Cancel,
    Credit,
    Error,
    Hello,
    InterfaceInfo,
    Item,
    ProgressReport,
    Ready,
    Result,
    Welcome,
    decode,
    encode,
    encode_binary,
    message_size,
)
from ._rpc_streams import CallerStream, Pending, abort_park, open_exchange
from ._state import ConnectionState, StateWatch
from ._stream import MessageStream
from ._streams import Exchange, StreamWindow
from ._util import check_positive_int

__all__ = [
    "RpcConnection",
    "RpcConnectionStatistics",
    "open_rpc_connection",
]

_log = logging.getLogger("tether.server")
_client_log = logging.getLogger("tether.client")

#: How long a cancelled call (or IPC invoke) may spend telling the other side to stop.
_CANCEL_SEND_TIMEOUT = 1.0

#: How often `RpcConnection.watch` looks whether nobody reads (a call just ended).
WATCH_EVERY = 0.25

# The IPC engine waits on its connection the same way.
_Pending = Pending
_abort_park = abort_park


@attrs.frozen(slots=True)
class RpcConnectionStatistics:
    """What an `RpcConnection` holds at one moment (`RpcConnection.statistics()`).

    Attributes:
        calls_in_flight: Unary calls waiting for their reply.
        open_streams: Stream calls whose block has not ended.
    """

    calls_in_flight: int
    open_streams: int


class RpcConnection(RpcBackend):
    """A frontend's connection to one backend over a MessageStream.

    Made by a transport's `connect`; use `get_client(Interface)` to call it, or
    route interfaces to it with `RpcManager.initialize_client`.

    Replies are read by the callers themselves (leader/follower): one waiting
    caller reads the stream and hands each reply to the caller it belongs to;
    when its own reply arrives it passes the reading on to another waiter. A
    caller whose reply arrives while it reads returns without waiting for
    another task to be scheduled, and the connection needs no reader task.
    """

    __slots__ = (
        "_closed",
        "_closed_here",
        "_interfaces",
        "_listeners",
        "_max_in_flight",
        "_options",
        "_pending",
        "_reading",
        "_room",
        "_state",
        "_stream",
        "_token",
        "_watching",
        "session_id",
    )

    def __init__(
        self, stream: MessageStream, options: ClientOptions, max_in_flight: int | None = None
    ) -> None:
        if max_in_flight is not None:
            check_positive_int("max_in_flight", max_in_flight)
        self._token = trio.lowlevel.current_trio_token()
        self._max_in_flight = max_in_flight if max_in_flight is not None else math.inf
        # Callers waiting for one of the `max_in_flight` places.
        self._room = trio.lowlevel.ParkingLot()
        self._stream = stream
        self._options = options
        self._interfaces: dict[str, InterfaceInfo] = {}
        self._pending: dict[int, Pending | CallerStream] = {}
        # The `on_progress` callbacks of the calls waiting here that have one.
        self._listeners: dict[int, ProgressListener] = {}
        self._reading = False
        self._closed: ConnectionClosed | None = None
        # Closed by `aclose`: calls then fail with plain ConnectionClosed,
        # which is never retried; a lost connection classifies them.
        self._closed_here = False
        # CLOSED once the stream is gone (this connection does not reconnect).
        self._state = StateWatch()
        # The read of `watch`, while it reads for nobody: a caller cancels it to read.
        self._watching: trio.CancelScope | None = None
        self.session_id = options.session_id

    @property
    def options(self) -> ClientOptions:
        return self._options

    @property
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        return self._interfaces

    @property
    def is_closed(self) -> bool:
        """True once the connection closed, from either side."""
        return self._closed is not None

    @property
    def state_watch(self) -> StateWatch:
        """CONNECTED, then CLOSED once closed either way (`reason` says why)."""
        return self._state

    async def _handshake(self, wanted: list[type[RpcInterface]]) -> None:
        options = self._options
        hello = Hello(
            PROTOCOL_VERSION,
            options.session_id,
            options.application_id,
            options.application_version,
            binary=True,  # every stream of ours reads binary frames
        )
        reply = await exchange_hello(self._stream, hello)
        self._interfaces = check_backend_interfaces(reply.interfaces, wanted)

    async def request(self, call: Call) -> Result | Error:
        if trio.lowlevel.current_trio_token() is not self._token:
            # Trio objects cannot cross runs: waiting here would hang forever.
            raise RuntimeError(
                "this connection belongs to another Trio run (another thread): open the "
                "connection in the run that calls through it, e.g. inside the backend's "
                "own loop when the backend runs with thread=True"
            )
        if self._closed is not None:
            raise self._closed_error(call, sent=False)
        while len(self._pending) >= self._max_in_flight:
            # Back-pressure: wait for a place rather than have the backend refuse.
            await self._room.park()
            if self._closed is not None:
                raise self._closed_error(call, sent=False)
        data = encode_binary(call) if self._stream.binary else encode(call)
        pending = Pending(trio.lowlevel.current_task())
        self._pending[call.id] = pending
        listener = current_listener()
        if listener is not None:
            self._listeners[call.id] = listener
        try:
            try:
                await self._stream.send_message(data)
            except ConnectionClosed as exc:
                # A send that fails has not handed the whole message over (a
                # stream raises before or while writing it, never after), so
                # the backend cannot have read it.
                self._lost(exc)
                raise self._closed_error(call, sent=False) from None
            await self._wait(pending)
        except PayloadTooLarge:
            # The stream refused it before sending anything; it stays usable.
            raise PayloadTooLarge(
                f"the call to {call.iface}.{call.op} encodes to {message_size(data)} bytes, over "
                f"this connection's limit of {self._stream.max_message_size}: send less per call",
                activity_id=call.ctx.activity_id,
            ) from None
        except trio.Cancelled:
            if self._closed is None and pending.reply is None:
                await self._send_cancel(call.id)
            raise
        finally:
            del self._pending[call.id]
            if listener is not None:
                del self._listeners[call.id]
            if self._room:
                self._room.unpark()
        reply = pending.reply
        if isinstance(reply, ConnectionClosed):
            raise self._closed_error(call, sent=True)
        assert reply is not None
        return reply

    async def _send_cancel(self, call_id: int) -> None:
        # Tell the backend to stop the impl: shielded so our own cancellation
        # does not stop the message, bounded so a stuck peer cannot hold us.
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = _CANCEL_SEND_TIMEOUT
            with contextlib.suppress(TetherError):
                await self._stream.send_message(encode(Cancel(call_id)))

    def _lost(self, exc: ConnectionClosed) -> None:
        """The stream failed under a send: the connection is lost for every call."""
        self._fail_pending(exc.reason or "the connection was lost", exc.close_code)

    def _closed_error(self, call: Call, *, sent: bool) -> ConnectionClosed:
        """The error of `call` on a closed connection, classified for retries.

        Closed by `aclose`: plain `ConnectionClosed`. Lost: `CallNotSent` if
        the call's message was not handed to the stream (`sent` False), else
        `CallMayHaveRun`.
        """
        closed = self._closed
        if closed is None:  # pragma: no cover - only reached after a close
            closed = ConnectionClosed("connection to the backend closed")
        what = f"{call.iface}.{call.op}"
        error: type[ConnectionClosed]
        if self._closed_here:
            error, message = ConnectionClosed, f"{closed.message}, so {what} was not sent"
        elif sent:
            error = CallMayHaveRun
            message = f"{closed.message} after {what} was sent, before its answer came"
        else:
            error = CallNotSent
            message = f"{closed.message} before {what} was sent: it did not run"
        return error(
            message,
            reason=closed.reason,
            close_code=closed.close_code,
            activity_id=call.ctx.activity_id,
        )

    async def _wait(self, pending: Pending) -> None:
        while pending.reply is None:
            if self._reading:
                watching = self._watching
                if watching is not None:
                    watching.cancel()  # `watch` reads for nobody: it gives way
                pending.parked = True
                await trio.lowlevel.wait_task_rescheduled(lambda _: abort_park(pending))
                continue
            self._reading = True
            try:
                await self._read_until(pending)
            finally:
                self._reading = False
                self._promote_reader()

    async def _read_until(self, pending: Pending) -> None:
        stream = self._stream
        while pending.reply is None:
            try:
                data = await stream.receive_message()
            except ConnectionClosed as exc:
                self._fail_pending(
                    exc.reason or "the backend closed the connection", exc.close_code
                )
                return
            try:
                message = decode(data)
            except InvalidRequest as exc:
                _client_log.warning("dropping a malformed message from the backend: %s", exc)
                continue
            if isinstance(message, (Result, Error)) and message.id is not None:
                waiter = self._pending.get(message.id)
                if waiter is not None and waiter.reply is None:
                    waiter.reply = message
                    waiter.wake()
            elif type(message) is Item or type(message) is Ready:
                # A stream's: an unknown id is a stream that ended here (dropped).
                owner = self._pending.get(message.id)
                if type(owner) is CallerStream:
                    if isinstance(message, Item):
                        owner.on_item(message.value, message_size(data))
                    else:
                        owner.on_ready(message.items, message.bytes)
            elif type(message) is ProgressReport:
                listener = self._listeners.get(message.id)
                if listener is not None:
                    deliver(listener, message.progress)
            elif isinstance(message, Error):
                _client_log.warning(
                    "the backend reported a connection error: %.300r", message.error.message
                )
            else:
                _client_log.warning(
                    "ignoring unexpected %s from the backend", type(message).__name__
                )

    def _promote_reader(self) -> None:
        """Wake one caller still waiting so that it takes over reading."""
        for waiter in self._pending.values():
            if waiter.reply is None and waiter.parked:
                waiter.wake()
                return

    def _fail_pending(self, reason: str, close_code: int | None = None) -> None:
        if self._closed is None:
            verb = "closed" if self._closed_here else "lost"
            self._closed = ConnectionClosed(
                f"the connection to the backend was {verb} ({reason})",
                reason=reason,
                close_code=close_code,
            )
            self._state.set(ConnectionState.CLOSED, reason)
            if self._watching is not None:
                self._watching.cancel()  # its read may wait on a stream that never says so
        for waiter in self._pending.values():
            if waiter.reply is None:
                waiter.reply = self._closed
                waiter.wake()
        self._room.unpark_all()

    # -- streams --------------------------------------------------------------------

    def open_call(
        self,
        call: Call,
        operation: Operation,
        source: AsyncIterable[Any] | None,
    ) -> AbstractAsyncContextManager[Exchange]:
        return open_exchange(self, call, operation, source, self._options.stream_window)

    async def _start_stream(self, call: Call, window: StreamWindow, *, grant: bool) -> CallerStream:
        """Send a stream call and, when it returns a stream (`grant`), the credit of the
        caller's window; register it."""
        if trio.lowlevel.current_trio_token() is not self._token:
            raise RuntimeError(
                "this connection belongs to another Trio run (another thread): open the "
                "stream in the run that opened the connection"
            )
        if self._closed is not None:
            raise self._closed_error(call, sent=False)
        while len(self._pending) >= self._max_in_flight:
            await self._room.park()
            if self._closed is not None:
                raise self._closed_error(call, sent=False)
        state = CallerStream(self, call, window)
        self._pending[call.id] = state
        sent = False
        try:
            data = encode_binary(call) if self._stream.binary else encode(call)
            try:
                await self._stream.send_message(data)
            except PayloadTooLarge:
                raise PayloadTooLarge(
                    f"the call to {call.iface}.{call.op} encodes to {message_size(data)} "
                    f"bytes, over this connection's limit of {self._stream.max_message_size}: "
                    "send less per call",
                    activity_id=call.ctx.activity_id,
                ) from None
            sent = True
            if grant:
                items, size = state.inflow.initial_grant()
                await self._stream.send_message(encode(Credit(call.id, items, size)))
        except ConnectionClosed as exc:
            self._lost(exc)
            await self._end_stream(state)
            raise self._closed_error(call, sent=sent) from None
        except BaseException:
            # A call not sent (refused, or its send cancelled: a cancelled
            # send sends nothing) gets no `cancel` either.
            await self._end_stream(state, sent=sent)
            raise
        return state

    async def _end_stream(self, state: CallerStream, *, sent: bool = True) -> None:
        """Drop a stream call's state; cancel it on the backend unless its final reply came.

        `sent`: False for a call whose message was not sent (nothing to cancel).
        """
        call_id = state.call.id
        if self._pending.get(call_id) is not state:
            return
        del self._pending[call_id]
        if self._room:
            self._room.unpark()
        if sent and state.reply is None and self._closed is None:
            await self._send_cancel(call_id)

    def statistics(self) -> RpcConnectionStatistics:
        """What this connection holds now (read-only numbers)."""
        streams = sum(1 for waiter in self._pending.values() if type(waiter) is CallerStream)
        return RpcConnectionStatistics(
            calls_in_flight=len(self._pending) - streams, open_streams=streams
        )

    async def watch(self, every: float = WATCH_EVERY) -> None:
        """Return once the connection is closed, noticing a loss while no call reads.

        The connection is read by the calls that wait on it; with none, a
        backend that went away would be noticed only at the next call. This
        reads meanwhile (replies come to nobody, a close is seen at once), and
        gives way to a call that needs to read: the call cancels this read
        (`_wait`), and this looks again `every` seconds later. Run by a
        connection that reconnects (`ReconnectingBackend`), in a task of its own.
        """
        watcher = Pending(trio.lowlevel.current_task())
        while self._closed is None:
            if not self._reading:
                self._reading = True
                try:
                    with trio.CancelScope() as scope:
                        self._watching = scope
                        await self._read_until(watcher)  # returns once closed
                finally:
                    self._watching = None
                    self._reading = False
                    self._promote_reader()
                if not scope.cancelled_caught:
                    continue
            # A call reads (or just took over): look again later, or once closed.
            with trio.move_on_after(every):
                await self._state.wait_change(ConnectionState.CONNECTED)

    async def aclose(self) -> None:
        """Close the connection; calls still waiting fail with ConnectionClosed."""
        if self._closed is None:
            self._closed_here = True
        self._fail_pending(_CLOSED_HERE)
        await self._stream.aclose()


_CLOSED_HERE = "closed by this client"


async def exchange_hello(stream: MessageStream, hello: Hello) -> Welcome:
    """Send `hello` and read the backend's answer: its `welcome`, or why it refused.

    Raises:
        ConnectError: the backend answered with something else, or left.
        IncompatibleVersion: it speaks another protocol version.
        TetherError: the refusal the backend sent (NotFound, IncompatibleVersion...).
    """
    await stream.send_message(encode(hello))
    try:
        reply = decode(await stream.receive_message())
    except InvalidRequest as exc:
        raise ConnectError(f"the backend answered the handshake with garbage: {exc}") from None
    except ConnectionClosed as exc:
        raise ConnectError(
            f"the backend closed the connection during the handshake: {exc}"
        ) from None
    if isinstance(reply, Error):
        raise error_from_info(reply.error, None)
    if not isinstance(reply, Welcome):
        raise ConnectError(f"expected 'welcome' from the backend, got {type(reply).__name__}")
    if reply.protocol != PROTOCOL_VERSION:
        raise IncompatibleVersion(
            f"backend speaks tether protocol {reply.protocol}, this frontend speaks "
            f"{PROTOCOL_VERSION}: upgrade the older side"
        )
    return reply


@asynccontextmanager
async def open_rpc_connection(
    stream: MessageStream,
    *,
    interfaces: Iterable[type[RpcInterface]],
    options: ClientOptions | None = None,
    max_in_flight: int | None = None,
) -> AsyncIterator[RpcConnection]:
    """Run the RPC protocol as a frontend over `stream` for the block.

    Sends `hello` and checks the backend's `welcome` against `interfaces`;
    closes the stream when the block ends.

    Args:
        stream: The connection to the backend.
        interfaces: The interfaces to check at connect.
        options: How calls present this frontend.
        max_in_flight: Calls that may wait for replies at once; more wait for
            a place. None: no limit here (the backend's still applies).

    Raises:
        ValueError: `max_in_flight` is not a positive int (nothing was sent).
        IncompatibleVersion: the protocol or an interface version is incompatible.
        NotFound: the backend does not serve one of `interfaces`.
        ConnectError: the backend did not complete the handshake.
    """
    connection = RpcConnection(
        wrap_client_stream(stream),
        options if options is not None else ClientOptions(),
        max_in_flight,
    )
    try:
        await connection._handshake(list(interfaces))
        yield connection
    finally:
        await connection.aclose()
