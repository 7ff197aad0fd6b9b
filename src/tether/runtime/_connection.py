"""RPC over a MessageStream: the frontend's connection and the backend's session.

The frontend's `RpcConnection` multiplexes calls by id over one stream; its
waiting callers read the replies in turn (no reader task), and cancelling a
call sends `cancel`. The backend's `serve_rpc_session` reads and runs calls
with the worker tasks of `_workers.Workers`, each call under its context, and
cancels them all when the stream closes: nothing outlives its session.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio

from .. import contexts
from ._binary import BinaryMessage
from ._client import ClientOptions, RpcBackend, check_backend_interfaces, error_from_info
from ._dispatch import Dispatcher, PreparedCall, send_reply
from ._errors import (
    CallNotSent,
    ConnectError,
    ConnectionClosed,
    IncompatibleVersion,
    InvalidRequest,
    PayloadTooLarge,
    TetherError,
    Unavailable,
)
from ._faults import wrap_client_stream
from ._interfaces import Operation, RpcInterface
from ._manager import RpcManager
from ._protocol import (
    PROTOCOL_VERSION,
    Call,
    Cancel,
    Credit,
    End,
    Error,
    Hello,
    InterfaceInfo,
    Item,
    Message,
    Ready,
    Result,
    Send,
    Welcome,
    check_hello,
    decode,
    encode,
    encode_binary,
    message_size,
)
from ._rpc_streams import CallerStream, Pending, abort_park, open_exchange
from ._state import ConnectionState, StateWatch
from ._stream import MessageStream
from ._streams import CalleeStream, Exchange, StreamWindow
from ._util import check_positive_int
from ._workers import Workers

__all__ = [
    "RpcConnection",
    "RpcConnectionStatistics",
    "open_rpc_connection",
    "serve_rpc_session",
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
        "_interfaces",
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
        self._reading = False
        self._closed: ConnectionClosed | None = None
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
        try:
            await self._stream.send_message(data)
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
        except ConnectionClosed as exc:
            # Only the send raises it (a reader hands the close over as a reply):
            # the call did not reach the socket whole, so it cannot have run.
            self._lost(exc)
            raise self._closed_error(call, sent=False) from None
        finally:
            del self._pending[call.id]
            if self._room:
                self._room.unpark()
        reply = pending.reply
        if isinstance(reply, ConnectionClosed):
            raise self._closed_error(call)
        assert reply is not None
        return reply

    async def _send_cancel(self, call_id: int) -> None:
        # Tell the backend to stop the impl: shielded so our own cancellation
        # does not stop the message, bounded so a stuck peer cannot hold us.
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = _CANCEL_SEND_TIMEOUT
            with contextlib.suppress(TetherError):
                await self._stream.send_message(encode(Cancel(call_id)))

    def _closed_error(self, call: Call, *, sent: bool | None = None) -> ConnectionClosed:
        """The error for `call` on this closed connection; `sent=False`: it was never sent."""
        closed = self._closed
        if closed is None:  # pragma: no cover - only reached after a close
            closed = ConnectionClosed("connection to the backend closed")
        # Closed by this side (aclose): plain ConnectionClosed, never retried.
        cls = CallNotSent if sent is False and not self._closed_here else ConnectionClosed
        return cls(
            closed.message,
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

    @property
    def _closed_here(self) -> bool:
        return self._closed is not None and self._closed.reason == _CLOSED_HERE

    def _lost(self, exc: ConnectionClosed) -> None:
        """The stream failed under a send: the connection is over."""
        self._fail_pending(exc.reason or "the connection was lost", exc.close_code)

    def _fail_pending(self, reason: str, close_code: int | None = None) -> None:
        if self._closed is None:
            self._closed = ConnectionClosed(
                f"connection to the backend closed: {reason}",
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
            raise self._closed_error(call) from None
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


# ---------------------------------------------------------------------------
# Backend


class _Session(Workers[PreparedCall]):
    """One frontend's connection on the backend: its calls, run by `Workers`.

    A stream call also has its `CalleeStream` in `streams` while it runs; the
    reader feeds it the caller's `send`, `end` and `credit` messages (without
    waiting), and a stream the caller breaks the rules of (an item past its
    credit) is failed with InvalidRequest (`CalleeStream.fail`).
    """

    __slots__ = ("dispatcher", "session_id", "stream", "streams")

    def __init__(
        self,
        dispatcher: Dispatcher,
        stream: MessageStream,
        nursery: trio.Nursery,
        session_id: str,
        max_in_flight: int,
    ) -> None:
        self.dispatcher = dispatcher
        self.stream = stream
        self.session_id = session_id
        self.streams: dict[int, CalleeStream] = {}
        self.init_workers(nursery, max_in_flight)

    async def send_reply(self, reply: Result | Error) -> None:
        self.sending += 1
        try:
            stream = self.stream
            await send_reply(stream.send_message, reply, stream.max_message_size, stream.binary)
        finally:
            self.sending -= 1

    def prepare(self, call: Call) -> PreparedCall | Error:
        """Check a call; return it ready to run, or the reply that refuses it."""
        if call.id in self.calls:
            exc: TetherError = InvalidRequest(f"call id {call.id} is already in flight")
            return self.dispatcher.error_reply(call.id, exc, call.ctx.activity_id)
        if len(self.calls) >= self.max_in_flight:
            exc = Unavailable(
                f"this session already has {self.max_in_flight} calls in flight: wait for some "
                "to finish",
                retry_after=1,
                overloaded=True,
            )
            return self.dispatcher.error_reply(call.id, exc, call.ctx.activity_id)
        try:
            prepared = self.dispatcher.prepare(call, session_id=self.session_id)
        except TetherError as exc:
            return self.dispatcher.error_reply(call.id, exc, exc.activity_id)
        operation = prepared.operation
        if operation.stream_result or operation.stream_param is not None:
            prepared.stream = CalleeStream(
                call.id,
                operation,
                self.dispatcher.manager.stream_window,
                functools.partial(self.send_stream_message, operation),
            )
        return prepared

    async def send_stream_message(self, operation: Operation, message: Message) -> int:
        """Send a stream's `item` or `ready`; return its size (CalleeStream's `send`)."""
        stream = self.stream
        data = encode_binary(message) if stream.binary else encode(message)
        size = message_size(data)
        try:
            await stream.send_message(data)
        except PayloadTooLarge:
            # Refused before anything was sent: only this stream ends.
            raise PayloadTooLarge(
                f"a stream item of {operation.qualname} encodes to {size} bytes, over "
                f"this connection's limit of {stream.max_message_size}: yield smaller "
                "items (a stream may carry any total)"
            ) from None
        return size

    async def serve_call(
        self,
        call: PreparedCall,
        scope: trio.CancelScope,
        on_yield: Callable[..., object],
        *args: Any,
    ) -> Result | Error:
        stream = call.stream
        if stream is None:
            return await self.dispatcher.run_in(call, scope, on_yield, *args)
        return await self._serve_stream(call, stream, scope, on_yield, *args)

    async def _serve_stream(
        self,
        call: PreparedCall,
        stream: CalleeStream,
        scope: trio.CancelScope,
        on_yield: Callable[..., object],
        *args: Any,
    ) -> Result | Error:
        manager = self.dispatcher.manager
        self.streams[call.id] = stream
        manager.count_stream(1)
        try:
            return await self.dispatcher.run_in(call, scope, on_yield, *args)
        finally:
            del self.streams[call.id]
            manager.count_stream(-1)

    def interrupted(self, call: PreparedCall) -> Error | None:
        stream = call.stream
        if stream is not None and stream.failure is not None:
            # The reader failed it (the caller broke the stream's rules).
            return self.dispatcher.error_reply(call.id, stream.failure, call.context.activity_id)
        return self.dispatcher.interrupted(call)

    def on_stream_message(
        self, message: Send | End | Credit, data: bytes | str | BinaryMessage
    ) -> None:
        """Hand a caller's stream message to its call (never waits); unknown ids are dropped."""
        stream = self.streams.get(message.id)
        if stream is None:
            return  # a stream that ended here: late news
        try:
            if type(message) is Send:
                stream.on_send(message.value, message_size(data))
            elif type(message) is End:
                stream.on_end()
            else:
                assert type(message) is Credit
                stream.on_credit(message.items, message.bytes)
        except InvalidRequest as exc:
            # The caller broke the stream's rules: that call fails, the session goes on.
            stream.fail(exc)
            scope = self.calls.get(message.id)
            if scope is not None:
                scope.cancel()

    async def read_next(self) -> PreparedCall | Error | None:
        """Read until a call is ready to run or a refusal must be sent.

        Returns:
            The call; or the `error` reply refusing a message; or None when the
            stream closed.
        """
        stream = self.stream
        while True:
            try:
                data = await stream.receive_message()
            except ConnectionClosed as exc:
                # The frontend is gone: nothing it started may outlive it. An
                # impl waiting for its stream argument hears it first.
                for callee in self.streams.values():
                    callee.close(
                        ConnectionClosed(
                            f"the frontend's connection closed: {exc.reason or 'closed'}",
                            reason=exc.reason,
                            close_code=exc.close_code,
                        )
                    )
                assert self.nursery is not None
                self.nursery.cancel_scope.cancel()
                return None
            try:
                message = decode(data)
            except InvalidRequest as exc:
                return self.dispatcher.error_reply(exc.details.get("id"), exc, None)
            if type(message) is Call:
                return self.prepare(message)
            if type(message) is Cancel:
                cancelled = self.calls.get(message.id)
                if cancelled is not None:
                    cancelled.cancel()
                continue
            if type(message) is Send or type(message) is Credit or type(message) is End:
                self.on_stream_message(message, data)
                continue
            unexpected = InvalidRequest(
                f"a backend does not accept {type(message).__name__!r} messages on an RPC session"
            )
            return self.dispatcher.error_reply(None, unexpected, None)


async def serve_rpc_session(
    manager: RpcManager | Dispatcher,
    stream: MessageStream,
    *,
    max_in_flight: int = 1024,
) -> None:
    """Serve RPC to one frontend over `stream` until it closes.

    Expects `hello` first and answers `welcome` with what `manager` serves. Each
    call runs in its own task under its RequestContext; `cancel` cancels it.
    When the stream closes, every call still running is cancelled and awaited.

    Args:
        manager: The impls to serve (or a Dispatcher over them).
        stream: The connection.
        max_in_flight: Calls one session may have running at once; more are
            refused with `Unavailable` (too-many-requests).
    """
    dispatcher = manager if isinstance(manager, Dispatcher) else Dispatcher(manager)
    # A session starts with no request context: in-process, this task (or the
    # backend's thread) was spawned from the frontend's, and the frontend's
    # ActivityId and credential must not reach the backend that way.
    with contexts.using(None):
        await _serve_rpc_session(dispatcher, stream, max_in_flight)


async def _serve_rpc_session(
    dispatcher: Dispatcher, stream: MessageStream, max_in_flight: int
) -> None:
    try:
        session_id = await _accept(dispatcher, stream)
        if session_id is None:
            return
        async with trio.open_nursery() as nursery:
            session = _Session(dispatcher, stream, nursery, session_id, max_in_flight)
            session.start_reading()
    finally:
        await stream.aclose()


async def _accept(dispatcher: Dispatcher, stream: MessageStream) -> str | None:
    try:
        data = await stream.receive_message()
    except ConnectionClosed:
        return None
    try:
        hello = check_hello(decode(data), "rpc")
    except TetherError as exc:
        with contextlib.suppress(ConnectionClosed):
            await stream.send_message(encode(dispatcher.error_reply(None, exc, None)))
        return None
    session_id = hello.session_id or str(uuid.uuid4())
    welcome = Welcome(
        PROTOCOL_VERSION,
        session_id,
        interfaces=dispatcher.manager.describe(),
        # "binary": true only to a client that said it (as every tether one does).
        binary=stream.binary and hello.binary,
    )
    try:
        await stream.send_message(encode(welcome))
    except ConnectionClosed:
        return None
    return session_id
