"""The caller's half of an RPC stream call over a MessageStream (`RpcConnection.open_call`).

An `RpcConnection` has no reader task: the tasks that wait on it read the
stream in turn (leader/follower, `RpcConnection._wait`). A stream call takes
part the same way. Its consumer, waiting for the next item, and its pump,
waiting for credit to send the next argument item, each wait as a `Pending`
of their own; the reader wakes them (`CallerStream.on_item`, `on_ready`) and,
when none of them has anything to wait for, one of them reads. So a stream
never needs another task to read for it, and nothing deadlocks when it is the
only waiter.

Flow control (STREAMS.md section 2): the caller grants its window for result
items when it sends the call and gives credit back in half-window batches as
its application takes items; an item past that credit fails the stream. The
pump sends an argument item only while it holds the credit the callee gave
(`ready`), and pulls the next item from its source only then.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._errors import ConnectionClosed, InvalidRequest, PayloadTooLarge
from ._protocol import (
    Call,
    Credit,
    End,
    Error,
    Item,
    Result,
    Send,
    encode,
    encode_binary,
    message_size,
)
from ._streams import Inflow, Outflow, StreamWindow, aclose_if_possible, iterate_source
from ._util import open_service_nursery

if TYPE_CHECKING:
    from ._connection import RpcConnection
    from ._interfaces import Operation

__all__ = ["WOKEN", "CallerStream", "Pending", "abort_park", "open_exchange"]


class Pending:
    """One task waiting on an RpcConnection: for a call's reply, or for news of its stream."""

    __slots__ = ("parked", "reply", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.parked = False
        self.reply: Result | Error | ConnectionClosed | None = None

    def wake(self) -> None:
        """Reschedule the caller if it is parked waiting (its reply, or its turn to read)."""
        if self.parked:
            self.parked = False
            trio.lowlevel.reschedule(self.task)


def abort_park(pending: Pending) -> trio.lowlevel.Abort:
    pending.parked = False
    return trio.lowlevel.Abort.SUCCEEDED


#: What a stream's waiter gets as its "reply": something happened to the
#: stream, look again (an item, credit, the final reply, the close).
WOKEN = Result(-1, None)


class CallerStream:
    """One stream call in flight on an RpcConnection, as the caller holds it (an `Exchange`).

    It sits in the connection's table of pending calls under the call's id, so
    it counts as one call against `max_in_flight`, the reader hands it its
    final reply (`reply`, then `wake`) as it does a unary call's, and a closed
    connection fails it with the rest.
    """

    __slots__ = (
        "body_scope",
        "call",
        "connection",
        "consumer",
        "failure",
        "inflow",
        "outflow",
        "pump",
        "pump_scope",
        "reply",
        "source_error",
    )

    def __init__(self, connection: RpcConnection, call: Call, window: StreamWindow) -> None:
        self.connection = connection
        self.call = call
        #: The final reply (`result` or `error`), or the connection's close.
        self.reply: Result | Error | ConnectionClosed | None = None
        self.inflow = Inflow(window)
        self.outflow = Outflow()
        #: The tasks waiting: for an item or the final reply, for credit.
        self.consumer: Pending | None = None
        self.pump: Pending | None = None
        self.pump_scope: trio.CancelScope | None = None
        self.body_scope: trio.CancelScope | None = None
        #: Why the stream failed on this side (the callee sent past its credit).
        self.failure: BaseException | None = None
        #: What the argument stream raised (or its items, encoding or sending).
        self.source_error: BaseException | None = None

    # -- from the connection's reader (never waits) -----------------------------------

    @property
    def parked(self) -> bool:
        """Whether one of its tasks waits for its turn to read (`_promote_reader`)."""
        consumer, pump = self.consumer, self.pump
        return (consumer is not None and consumer.parked) or (pump is not None and pump.parked)

    def wake(self) -> None:
        """Something happened to the whole stream: its final reply came, the connection
        closed, or a waiter must take over the reading: its tasks look again."""
        if self.reply is not None and self.pump_scope is not None:
            # The call is over: nothing more of the argument stream is wanted.
            self.pump_scope.cancel()
        _nudge(self.consumer)
        _nudge(self.pump)

    def on_item(self, value: Any, size: int) -> None:
        """An `item` of the result stream."""
        if self.reply is not None or self.failure is not None:
            return  # the stream is over here: late items are dropped
        try:
            self.inflow.put(value, size)
        except InvalidRequest as exc:
            exc.activity_id = self.call.ctx.activity_id
            self.failure = exc
            if self.pump_scope is not None:
                self.pump_scope.cancel()
            _nudge(self.pump)
        _nudge(self.consumer)

    def on_ready(self, items: int, size: int) -> None:
        """A `ready`: the callee takes that many more argument items and bytes."""
        self.outflow.grant(items, size)
        _nudge(self.pump)

    # -- the consumer -----------------------------------------------------------

    async def receive(self) -> Item | Result | Error:
        """The next item of the result stream, or the call's final reply (`Exchange`)."""
        # A cancelled consumer stops here even while items are buffered (the
        # buffer is bounded by the window, so it yields at least once a window).
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            inflow = self.inflow
            if inflow.buffered:
                return await self._take(inflow)
            if self.failure is not None:
                raise self.failure
            reply = self.reply
            if reply is not None:
                if isinstance(reply, ConnectionClosed):
                    raise self.connection._closed_error(self.call, sent=True)
                return reply
            waiter = self.consumer = Pending(trio.lowlevel.current_task())
            try:
                await self.connection._wait(waiter)
            finally:
                self.consumer = None

    async def _take(self, inflow: Inflow) -> Item:
        size = inflow.buffered[0][1]
        value = inflow.take_nowait()
        if self.reply is None:
            due = inflow.grant_due()
            if due is not None:
                try:
                    await self.connection._stream.send_message(encode(Credit(self.call.id, *due)))
                except ConnectionClosed:
                    pass  # the reader will see the close; the item is still good
                except BaseException:
                    # Cancelled: a cancelled send did not send (Trio's rule), so
                    # the item and the credit go back as they were, for the
                    # next `receive` to take and grant again.
                    items, nbytes = due
                    inflow.allowed_items -= items
                    inflow.allowed_bytes -= nbytes
                    inflow.taken_items = items - 1
                    inflow.taken_bytes = nbytes - size
                    inflow.buffered.appendleft((value, size))
                    raise
        return Item(self.call.id, value)

    # -- the pump ------------------------------------------------------------------

    async def pump_source(
        self, iterator: AsyncIterator[Any], encode_item: Callable[[Any], Any]
    ) -> None:
        """Send the argument stream as the callee grants credit; then `end`.

        Runs in a task of the call's nursery, under `pump_scope`. What the
        source raises (or its items' encoding, or a send refusing an item too
        large) is kept in `source_error` and the call's block is cancelled, so
        that the call raises it as itself.
        """
        assert self.pump_scope is not None
        try:
            with self.pump_scope:
                await self._pump(iterator, encode_item)
        except ConnectionClosed:
            pass  # the consumer hears of it from the reader
        except Exception as exc:
            self._source_failed(exc)
        finally:
            # Outside `pump_scope`: a call that is over still closes its source.
            try:
                await aclose_if_possible(iterator)
            except Exception as exc:
                self._source_failed(exc)

    def _source_failed(self, exc: BaseException) -> None:
        if self.source_error is None:
            self.source_error = exc
        if self.body_scope is not None:
            self.body_scope.cancel()

    async def _pump(self, iterator: AsyncIterator[Any], encode_item: Callable[[Any], Any]) -> None:
        connection = self.connection
        stream = connection._stream
        call_id = self.call.id
        outflow = self.outflow
        while True:
            while not outflow.may_send():
                if self.reply is not None or self.failure is not None:
                    return
                waiter = self.pump = Pending(trio.lowlevel.current_task())
                try:
                    await connection._wait(waiter)
                finally:
                    self.pump = None
            try:
                value = await anext(iterator)
            except StopAsyncIteration:
                await stream.send_message(encode(End(call_id)))
                return
            message = Send(call_id, encode_item(value))
            data = encode_binary(message) if stream.binary else encode(message)
            size = message_size(data)
            try:
                await stream.send_message(data)
            except PayloadTooLarge:
                raise PayloadTooLarge(
                    f"an item of the stream argument of {self.call.iface}.{self.call.op} "
                    f"encodes to {size} bytes, over this connection's limit of "
                    f"{stream.max_message_size}: send smaller items",
                    activity_id=self.call.ctx.activity_id,
                ) from None
            outflow.spend(size)


def _nudge(waiter: Pending | None) -> None:
    if waiter is not None and waiter.reply is None:
        waiter.reply = WOKEN
        waiter.wake()


@asynccontextmanager
async def open_exchange(
    connection: RpcConnection,
    call: Call,
    operation: Operation,
    source: AsyncIterable[Any] | None,
    window: StreamWindow,
) -> AsyncIterator[CallerStream]:
    """`RpcConnection.open_call`: carry one stream call for the block."""
    iterator = iterate_source(source) if source is not None else None
    try:
        # A stream opened from a cancelled scope sends nothing at all.
        await trio.lowlevel.checkpoint_if_cancelled()
        state = await connection._start_stream(call, window, grant=operation.stream_result)
        try:
            async with open_service_nursery() as nursery:
                state.body_scope = nursery.cancel_scope
                if iterator is not None:
                    state.pump_scope = trio.CancelScope()
                    nursery.start_soon(state.pump_source, iterator, operation.encode_input)
                    iterator = None  # the pump closes it
                try:
                    yield state
                finally:
                    if state.pump_scope is not None:
                        state.pump_scope.cancel()
            if state.source_error is not None:
                raise state.source_error
        finally:
            await connection._end_stream(state)
    finally:
        if iterator is not None:
            # Never pumped (nothing was sent): the call owns it all the same.
            with trio.CancelScope(shield=True):
                await aclose_if_possible(iterator)
