"""Streams over an IPC session: both halves of a stream invoke, a part of `Peer`.

The caller's half. `open_invoke` sends the `invoke` (and, for a stream
result, the `credit` of this peer's window), pumps the argument stream (if
any) in a task of the block's nursery as the callee's `ready` credit allows,
then sends `end`; and when the block is left before the final reply, it sends
`cancel` (shielded, bounded, as an invoke does). A `CallerStream` is the
`Exchange` the block gets: `receive()` takes the next item, or the final reply.

A task of a caller stream that waits (the consumer for an item or the final
reply, the pump for credit) takes part in the reading exactly as an invoke's
caller does (`_ipc_engine`): it takes the vacant reader role and reads until
what it waits for has come, and hands invokes from the other side to a worker;
a reader that routes to it what it waits for wakes it (a worker then leaves it
the role). So a session whose only waiting task is a stream consumer never
stalls.

The callee's half. `_prepare` gives a stream invoke a `CalleeStream`
(`_streams`), which runs the handler; its messages go through the outbox in
order with the replies. The reader routes `send`, `end` and `credit` to it
without waiting. Messages for an id that has finished are dropped.

When the session ends every open stream ends: a caller's waits raise
`ConnectionClosed`, and a callee's wait for an argument item raises it
before the session's tasks (the handler's among them) are cancelled.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .. import contexts
from ..contexts._metadata import EMPTY_METADATA
from ._connection import _CANCEL_SEND_TIMEOUT, _Pending
from ._errors import ConnectionClosed, InvalidRequest, PayloadTooLarge, TetherError
from ._limits import encode_arguments
from ._protocol import (
    BinaryMessage,
    Cancel,
    Credit,
    End,
    Error,
    Invoke,
    Item,
    Message,
    Ready,
    Result,
    Send,
    encode,
    encode_binary,
    message_size,
)
from ._stream import MessageStream
from ._streams import (
    CalleeStream,
    Inflow,
    Outflow,
    StreamWindow,
    aclose_if_possible,
    iterate_source,
)
from ._util import open_service_nursery, timeout_ms_left
from ._workers import VACATE

if TYPE_CHECKING:
    from ._interfaces import Operation

__all__ = ["CallerStream", "Streams"]

_log = logging.getLogger("tether.ipc")


class _Role(_Pending):
    """A task of a caller stream that waits: its consumer, or its pump.

    The `_Pending` of an invoke's caller, for the reading machinery; `task` is
    whichever task waits now.
    """

    __slots__ = ("stream",)

    def __init__(self, stream: CallerStream) -> None:
        super().__init__(trio.lowlevel.current_task())
        self.stream = stream


class CallerStream:
    """The caller's half of one stream invoke in flight: an `Exchange` (`_streams`)."""

    __slots__ = (
        "activity_id",
        "call_id",
        "cancel_sent",
        "consumer",
        "failure",
        "final",
        "inflow",
        "operation",
        "outflow",
        "peer",
        "pump",
        "pump_scope",
    )

    def __init__(
        self,
        peer: Streams,
        call_id: int,
        operation: Operation,
        activity_id: str | None,
        window: StreamWindow,
        *,
        pumps: bool,
    ) -> None:
        self.peer = peer
        self.call_id = call_id
        self.operation = operation
        self.activity_id = activity_id
        #: Result items received and not taken (None: the invoke returns one value).
        self.inflow = Inflow(window) if operation.stream_result else None
        #: The callee's credit for argument items (None: no argument stream).
        self.outflow = Outflow() if pumps else None
        #: The final reply; `ConnectionClosed` when the session ended first.
        self.final: Result | Error | ConnectionClosed | None = None
        #: This side failed the stream (the callee sent past its credit).
        self.failure: TetherError | None = None
        self.cancel_sent = False
        self.consumer = _Role(self)
        self.pump = _Role(self)
        self.pump_scope: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<stream invoke {self.call_id} of {self.operation.qualname}>"

    @property
    def done(self) -> bool:
        """The final reply came (or the session ended), or this side failed the stream."""
        return self.final is not None or self.failure is not None

    def has_news(self) -> bool:
        """What the consumer waits for: an item, the final reply, or a failure."""
        inflow = self.inflow
        return self.done or (inflow is not None and bool(inflow.buffered))

    def may_send(self) -> bool:
        """What the pump waits for: credit for an argument item, or the stream's end."""
        outflow = self.outflow
        return self.done or (outflow is not None and outflow.may_send())

    async def receive(self) -> Item | Result | Error:
        """The next result item, or the final reply (`Exchange.receive`).

        Raises:
            ConnectionClosed: the session ended before the final reply.
            InvalidRequest: the callee sent an item past its credit (the
                invoke was cancelled).
        """
        # A cancelled consumer stops here even while items are buffered (the
        # buffer is bounded by the window, so it yields at least once a window).
        await trio.lowlevel.checkpoint_if_cancelled()
        peer = self.peer
        inflow = self.inflow
        while True:
            if inflow is not None and inflow.buffered:
                value = inflow.take_nowait()
                due = inflow.grant_due()
                if due is not None and not self.done:
                    peer.post_stream_message(Credit(self.call_id, *due))
                return Item(self.call_id, value)
            if self.failure is not None:
                raise self.failure
            final = self.final
            if final is not None:
                if isinstance(final, ConnectionClosed):
                    raise peer.closed_error(self.activity_id)
                return final
            await peer.wait_stream(self.consumer, self.has_news)

    def end(self, final: Result | Error | ConnectionClosed) -> None:
        """The final reply came (or the session ended): wake both waiting tasks."""
        if self.final is None:
            self.final = final
        self._wake_all()

    def fail(self, failure: TetherError) -> None:
        """This side fails the stream: cancel the invoke, wake both waiting tasks."""
        if self.done:
            return
        self.failure = failure
        if not self.cancel_sent:
            self.cancel_sent = True
            with contextlib.suppress(ConnectionClosed):
                self.peer.post_stream_message(Cancel(self.call_id))
        self._wake_all()

    def _wake_all(self) -> None:
        peer = self.peer
        peer.wake_role(self.consumer)
        peer.wake_role(self.pump)
        if self.pump_scope is not None:
            self.pump_scope.cancel()


class Streams(abc.ABC):
    """Stream invokes, both halves; a part of `Peer`."""

    # Set by Peer (and its other parts).
    stream: MessageStream
    token: trio.lowlevel.TrioToken
    closed_reason: str | None
    calls: dict[int, trio.CancelScope]
    vacant: bool
    handed: Any
    pending: dict[int, _Pending]
    left_role: bool
    reader_lot: trio.lowlevel.ParkingLot
    inbox: Any
    ids: Any
    development_mode: bool
    other: str

    @abc.abstractmethod
    def closed_error(self, activity_id: str | None) -> ConnectionClosed: ...

    @abc.abstractmethod
    def check_run(self) -> None: ...

    @abc.abstractmethod
    async def send(self, data: bytes | BinaryMessage) -> None: ...

    @abc.abstractmethod
    def _post(self, data: bytes, *, notification: bool) -> None: ...

    @abc.abstractmethod
    async def read_next(self, own: _Pending | None = None) -> Any: ...

    @abc.abstractmethod
    def _wake_reader(self) -> None: ...

    @abc.abstractmethod
    def took_reading(self) -> None: ...

    @abc.abstractmethod
    def waited(self) -> None: ...

    @abc.abstractmethod
    def leave_reading(self, alone: bool) -> None: ...

    @abc.abstractmethod
    def _refuse(self, call_id: int | None, exc: TetherError, activity_id: str | None) -> None: ...

    def init_streams(self, window: StreamWindow) -> None:
        #: The window this peer grants for the items it receives (results of
        #: its invokes, arguments of the invokes it serves).
        self.stream_window = window
        #: Stream invokes this side made, by id.
        self.streams: dict[int, CallerStream] = {}
        #: Stream invokes this side serves, by id, while they run.
        self.callee_streams: dict[int, CalleeStream] = {}
        #: Tasks of caller streams parked in `wait_stream` (insertion-ordered).
        self.parked_roles: dict[_Role, None] = {}

    # -- the caller's side -----------------------------------------------------------

    @asynccontextmanager
    async def open_invoke(
        self,
        channel: str,
        operation: Operation,
        args: list[Any],
        source: AsyncIterable[Any] | None,
    ) -> AsyncIterator[CallerStream]:
        """Make a stream invoke of `channel.<operation>` for the block.

        Args:
            channel: The channel's name.
            operation: The method, declared with a stream.
            args: The unstructured arguments (the stream argument's place None).
            source: The argument stream, or None: pumped in a task of the
                block as credit comes, then `aclose()`d.

        Raises:
            ConnectionClosed: the session is closed, or ended during the block.
            PayloadTooLarge: the invoke, or an argument item, is over the
                session's limit (the stream is cancelled).
            InvalidRequest: an argument, or an argument item, cannot be sent.
        """
        iterator = iterate_source(source) if source is not None else None
        pumping = False
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self.check_run()
            context = contexts.current()
            activity_id = context.activity_id if context is not None else None
            if self.closed_reason is not None:
                raise self.closed_error(activity_id)
            call_id = next(self.ids)
            data = encode_arguments(
                Invoke(
                    call_id,
                    channel,
                    operation.name,
                    args,
                    activity_id,
                    timeout_ms_left(),
                    None,
                    context.traceparent if context is not None else None,
                    context.metadata if context is not None else EMPTY_METADATA,
                ),
                operation.param_names,
            )
            exchange = CallerStream(
                self,
                call_id,
                operation,
                activity_id,
                self.stream_window,
                pumps=iterator is not None,
            )
            self.streams[call_id] = exchange
            try:
                try:
                    await self.send(data)
                    if exchange.inflow is not None:
                        await self.send(encode(Credit(call_id, *exchange.inflow.initial_grant())))
                except ConnectionClosed:
                    raise self.closed_error(activity_id) from None
                except PayloadTooLarge as exc:
                    exc.activity_id = activity_id
                    raise
                async with open_service_nursery() as nursery:
                    if iterator is not None:
                        pumping = True
                        nursery.start_soon(self._pump, exchange, iterator)
                    yield exchange
                    nursery.cancel_scope.cancel()
            finally:
                del self.streams[call_id]
                self.wake_role(exchange.consumer)
                self.wake_role(exchange.pump)
                if (
                    exchange.final is None
                    and not exchange.cancel_sent
                    and self.closed_reason is None
                ):
                    exchange.cancel_sent = True
                    await self._send_stream_cancel(call_id)
        finally:
            if iterator is not None and not pumping:
                # Never pumped (nothing was sent): the call owns it all the same.
                with trio.CancelScope(shield=True):
                    await aclose_if_possible(iterator)

    async def _pump(self, exchange: CallerStream, iterator: AsyncIterator[Any]) -> None:
        """Send the argument stream as the callee's credit allows; then `end`."""
        operation = exchange.operation
        outflow = exchange.outflow
        assert outflow is not None
        call_id = exchange.call_id
        try:
            with trio.CancelScope() as exchange.pump_scope:
                if exchange.done:
                    return
                while True:
                    await self.wait_stream(exchange.pump, exchange.may_send)
                    if exchange.done:
                        return
                    try:
                        value = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                    send = Send(call_id, operation.encode_input(value))
                    data = encode_binary(send) if self.stream.binary else encode(send)
                    size = message_size(data)
                    if size > self.stream.max_message_size:
                        raise PayloadTooLarge(
                            f"an item of the stream argument of {operation.qualname} encodes "
                            f"to {size} bytes, over the session's limit of "
                            f"{self.stream.max_message_size}: send smaller items",
                            activity_id=exchange.activity_id,
                        )
                    await self.send(data)
                    outflow.spend(size)
                await self.send(encode(End(call_id)))
        except ConnectionClosed:
            return  # the session ended: the consumer hears it
        finally:
            exchange.pump_scope = None
            with trio.CancelScope(shield=True):
                await aclose_if_possible(iterator)

    async def wait_stream(self, role: _Role, ready: Callable[[], bool]) -> None:
        """Wait until `ready()`, reading the session meanwhile as an invoke's caller does."""
        role.task = trio.lowlevel.current_task()
        parked_roles = self.parked_roles

        def abort(_: object) -> trio.lowlevel.Abort:
            role.parked = False
            parked_roles.pop(role, None)
            return trio.lowlevel.Abort.SUCCEEDED

        if self.inbox and self.reader_lot:
            # A reader held by slow listeners must read on for us.
            self.reader_lot.unpark()
        while not ready():
            if self.vacant and not self.handed and self.closed_reason is None:
                self.vacant = False
                if self.left_role:
                    self.took_reading()
                item: Any = None
                try:
                    while not ready():
                        item = await self.read_next(role)
                        if item is None or item is VACATE:
                            break
                        # An invoke from the other side: a worker runs it.
                        self.handed.append(item)
                        break
                except BaseException:
                    self.vacant = True
                    self._wake_reader()
                    raise
                self.vacant = True
                if item is not None and item is not VACATE:
                    self._wake_reader()
            else:
                self.waited()
                role.parked = True
                parked_roles[role] = None
                await trio.lowlevel.wait_task_rescheduled(abort)
        if self.vacant:
            self.leave_reading(not self.pending and not self.handed and not self.parked_roles)

    def wake_role(self, role: _Role) -> None:
        """Wake a parked task of a caller stream (its news came, or the reader role is free)."""
        if role.parked:
            role.parked = False
            del self.parked_roles[role]
            trio.lowlevel.reschedule(role.task)

    def wake_parked_role(self) -> bool:
        """Wake a parked stream task to take the vacant reader role; False if none waits."""
        if not self.parked_roles:
            return False
        self.wake_role(next(iter(self.parked_roles)))
        return True

    def post_stream_message(self, message: Message) -> None:
        """Queue a small stream message (credit, cancel) without waiting.

        Raises:
            ConnectionClosed: the session is closed.
        """
        self._post(encode(message), notification=False)

    async def _send_stream_cancel(self, call_id: int) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = _CANCEL_SEND_TIMEOUT
            with contextlib.suppress(TetherError):
                await self.send(encode(Cancel(call_id)))

    # -- routing, from the reader (never waits) --------------------------------------

    def route_item(self, message: Item, size: int, own: _Pending | None) -> bool:
        """A result item; True when the reader (`own`) should return `VACATE`."""
        exchange = self.streams.get(message.id)
        if exchange is None or exchange.done:
            return False  # a late item of a stream that ended: dropped
        inflow = exchange.inflow
        if inflow is None:
            _log.warning(
                "dropping a stream item for %s, which returns one value",
                exchange.operation.qualname,
            )
            return False
        try:
            inflow.put(message.value, size)
        except InvalidRequest:
            exchange.fail(
                InvalidRequest(
                    f"{exchange.operation.qualname}: the {self.other} sent a stream item past "
                    "its credit: the stream is cancelled (a sender waits for credit, "
                    "docs/wire.md)",
                    activity_id=exchange.activity_id,
                )
            )
            return own is exchange.consumer or own is exchange.pump
        consumer = exchange.consumer
        if own is consumer:
            return True
        if consumer.parked:
            self.wake_role(consumer)
            return own is None
        return False

    def route_ready(self, message: Ready, own: _Pending | None) -> bool:
        """Credit for an argument stream; True when the reader (its pump) should return `VACATE`.

        A worker that wakes the pump reads on: the pump sends, and reads only
        once it runs out of credit.
        """
        exchange = self.streams.get(message.id)
        if exchange is None or exchange.outflow is None or exchange.done:
            return False
        exchange.outflow.grant(message.items, message.bytes)
        pump = exchange.pump
        if own is pump:
            return True
        self.wake_role(pump)
        return False

    def route_final(self, reply: Result | Error, own: _Pending | None) -> bool:
        """The final reply of a stream invoke; True when the reader should return `VACATE`."""
        exchange = self.streams.get(reply.id)  # type: ignore[arg-type]
        if exchange is None or exchange.final is not None:
            return False
        woke = exchange.consumer.parked
        exchange.end(reply)
        if own is exchange.consumer or own is exchange.pump:
            return True
        return woke and own is None

    def route_callee(self, message: Send | End | Credit, size: int) -> None:
        """A `send`, `end` or `credit` for a stream invoke this side serves."""
        callee = self.callee_streams.get(message.id)
        if callee is None:
            return  # it finished: dropped
        try:
            kind = type(message)
            if kind is Send:
                callee.on_send(message.value, size)  # type: ignore[union-attr]
            elif kind is End:
                callee.on_end()
            else:
                credit: Credit = message  # type: ignore[assignment]
                callee.on_credit(credit.items, credit.bytes)
        except InvalidRequest as exc:
            # The caller broke the protocol: that invoke fails (its one answer
            # is `exc`, see `CalleeStream.fail`), the session stays.
            del self.callee_streams[message.id]
            callee.fail(exc)
            scope = self.calls.get(message.id)
            if scope is not None:
                scope.cancel()

    def close_streams(self, reason: str, close_code: int | None) -> None:
        """The session ended: every open stream ends with `ConnectionClosed`."""
        for exchange in list(self.streams.values()):
            exchange.end(ConnectionClosed(reason, reason=reason, close_code=close_code))
        if self.callee_streams:
            error = self.closed_error(None)
            for callee in self.callee_streams.values():
                callee.close(error)

    # -- the callee's side -----------------------------------------------------------

    def callee_stream(self, call_id: int, operation: Operation) -> CalleeStream:
        """The callee's half of a stream invoke being prepared (registered until it ends)."""
        callee = CalleeStream(call_id, operation, self.stream_window, self._send_stream_message)
        self.callee_streams[call_id] = callee
        return callee

    async def _send_stream_message(self, message: Message) -> int:
        """Send a callee's stream message (`item`, `ready`) with the replies; its size.

        Raises:
            PayloadTooLarge: an item is over the session's limit (nothing was
                sent): the handler's stream ends with it.
            ConnectionClosed: the session is closed.
        """
        data = encode_binary(message) if self.stream.binary else encode(message)
        size = message_size(data)
        limit = self.stream.max_message_size
        if size > limit:
            raise PayloadTooLarge(
                f"a stream item encodes to {size} bytes, over the session's limit of {limit}: "
                "yield smaller items"
            )
        await self.send(data)
        return size
