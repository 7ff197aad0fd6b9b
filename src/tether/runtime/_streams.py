"""Streams: what an interface declares, what a caller opens, and the callee's half.

An operation may take a stream of items (`chunks: Stream[bytes]`, a client
stream), return one (`def watch(...) -> Stream[Position]`, a server stream), or
both (two-way). On the wire a stream is a sequence of messages under the id of
the call that opened it (docs/wire.md): `item` from the callee, `send` and
`end` from the caller, and credit both ways (`credit` for result items,
`ready` for argument items). The receiver of each direction owns a window
(`StreamWindow`) and grants it in credit; a sender waits for credit before it
sends, so a slow consumer slows its producer and nothing buffers past the
window.

This module holds what every engine shares: the types a user writes
(`Stream`, `StreamWindow`, `open_stream`), the caller's unopened call
(`StreamCall`) and the contract an engine fulfils to carry one (`Exchange`),
and the callee's half of a stream call (`CalleeStream`), which an engine feeds
from its reader and runs the impl through.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs
import trio

from ._errors import ConnectionClosed, InvalidRequest
from ._protocol import Error, Item, Message, Ready, Result
from ._util import check_positive_int

if TYPE_CHECKING:
    from ._interceptors import StreamMessages
    from ._interfaces import Operation

__all__ = [
    "DEFAULT_STREAM_WINDOW",
    "CalleeStream",
    "Exchange",
    "Stream",
    "StreamCall",
    "StreamWindow",
    "check_stream_window",
    "open_stream",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Stream(Protocol[T_co]):
    """A stream of items of type `T`, in an interface's declaration.

    As a return type it makes a server stream; declare the operation with a
    plain `def` (the impl is an async generator)::

        def watch(self, robot_id: str, every: float) -> tether.Stream[Position]: ...

    As a parameter's type it makes a client stream (`async def`, one result)
    or, with a stream result, a two-way stream. At most one parameter may be a
    stream. Any async iterable is one: an async generator, a
    `trio.MemoryReceiveChannel`. A caller opens a stream it gets from a stub
    with `open_stream`.
    """

    def __aiter__(self) -> AsyncIterator[T_co]: ...


def _window_int(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    check_positive_int(attribute.name, value)


@attrs.frozen(slots=True)
class StreamWindow:
    """How much of a stream its receiver takes before its sender must wait.

    The receiver of each direction of a stream grants this window as credit
    and grants more as its application consumes items. A sender waits while it
    has no item credit left, or no byte credit (one item larger than `bytes`
    still goes, alone).

    Attributes:
        items: Items in flight (sent, not yet consumed) at most.
        bytes: Encoded bytes in flight at most (plus one item).
    """

    items: int = attrs.field(default=256, validator=_window_int)
    bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_window_int)


#: The window of a receiver that sets none.
DEFAULT_STREAM_WINDOW = StreamWindow()


def check_stream_window(value: object) -> StreamWindow:
    """Refuse a `stream_window=` that is not a `tether.StreamWindow`.

    Raises:
        ValueError: it is not one (a count of items is `StreamWindow(items=...)`).
    """
    if not isinstance(value, StreamWindow):
        raise ValueError(
            f"stream_window must be a tether.StreamWindow(items=..., bytes=...), got {value!r}"
        )
    return value


# ---------------------------------------------------------------------------
# The caller's side


class Exchange(Protocol):
    """One stream call in flight, as an engine carries it for the caller.

    An engine's `open_call` makes one for the block: it has sent the call (and
    the credit of the caller's window), pumps the argument stream if there is
    one, and on leaving the block cancels the call on the other side unless
    its final reply came.
    """

    async def receive(self) -> Item | Result | Error:
        """The next item of the result stream, or the call's final reply.

        Taking an item gives its credit back to the callee (in batches).

        Raises:
            ConnectionClosed: the connection closed before the final reply.
        """
        ...


#: What a stub's `StreamCall` holds to make its call: the arguments are bound
#: already (a `functools.partial` of the stub's opener); calling it opens the
#: engine's block (`RpcBackend.open_call`, `Streams.open_invoke`).
ExchangeOpener = Callable[[], AbstractAsyncContextManager[Exchange]]


class StreamCall(Generic[T]):
    """What a stub's stream operation returns: a call not made yet.

    `open_stream` makes the call for a block; nothing is sent before. It is a
    `Stream[T]` to the type checker; iterating it outside `open_stream` is an
    error, so that every stream is closed by leaving a block, never by the
    garbage collector.
    """

    __slots__ = ("_open", "_opened", "_operation")

    def __init__(self, operation: Operation, open_: ExchangeOpener) -> None:
        self._operation = operation
        self._open = open_
        self._opened = False

    def __repr__(self) -> str:
        state = "opened" if self._opened else "not opened"
        return f"<StreamCall {self._operation.qualname} ({state})>"

    def __aiter__(self) -> AsyncIterator[T]:
        raise TypeError(
            f"open the stream of {self._operation.qualname} with `async with "
            "tether.open_stream(...) as items:`: a stream is closed by leaving its block"
        )

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[AsyncIterator[T]]:
        """Make the call for the block; yields its items (used by `open_stream`)."""
        if self._opened:
            raise RuntimeError(
                f"this {self._operation.qualname} stream was opened already: call the "
                "operation again for a new stream"
            )
        self._opened = True
        async with self._open() as exchange:
            yield _Items(self._operation, exchange)


class _Items(AsyncIterator[Any]):
    """The caller's iterator over a stream call's results."""

    __slots__ = ("_done", "_exchange", "_operation")

    def __init__(self, operation: Operation, exchange: Exchange) -> None:
        self._operation = operation
        self._exchange = exchange
        self._done = False

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        message = await self._exchange.receive()
        if type(message) is Item:
            return self._operation.decode_output(message.value)
        self._done = True
        if type(message) is Result:
            raise StopAsyncIteration
        assert type(message) is Error
        # Imported here: _client imports this module.
        from ._client import error_for_reply

        raise await error_for_reply(message.error, None)


@asynccontextmanager
async def open_stream(stream: Stream[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Open a stream for the block: `async with tether.open_stream(stub.watch(...)) as items:`.

    For a stream a stub returned, this makes the call; leaving the block
    (at the end, by an exception, or by cancellation) cancels it on the other
    side, whose generator is closed (its `finally` runs). The call's deadline
    is the one in force here, and covers the whole stream.

    Any other async iterable (an impl's generator called directly, in a test)
    is iterated as it is and `aclose()`d when the block ends.

    Errors of the call (the impl raised, the connection closed) are raised by
    the `async for`, as the same exception types a unary call raises.
    """
    if isinstance(stream, StreamCall):
        async with stream.opened() as items:
            yield items
        return
    iterator = aiter(stream)
    try:
        yield iterator
    finally:
        await aclose_if_possible(iterator)


async def aclose_if_possible(iterator: object) -> None:
    """`aclose()` an async iterator that has the method (a generator, a channel)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


# ---------------------------------------------------------------------------
# Credit, on the receiving side of one direction


class Inflow:
    """The receiving end of one direction of a stream: buffered items and credit.

    The reader puts items in (`put`, never waits); the consumer takes them
    (`take_nowait`). The peer may send no more than the credit granted: `put`
    refuses an item sent past it. `consumed` says how much credit to grant
    back once the consumer has taken half a window.
    """

    __slots__ = (
        "allowed_bytes",
        "allowed_items",
        "buffered",
        "ended",
        "error",
        "taken_bytes",
        "taken_items",
        "window",
    )

    def __init__(self, window: StreamWindow) -> None:
        self.window = window
        self.buffered: deque[tuple[Any, int]] = deque()
        #: Credit the peer still holds.
        self.allowed_items = 0
        self.allowed_bytes = 0
        #: Taken since credit was last granted back.
        self.taken_items = 0
        self.taken_bytes = 0
        self.ended = False
        self.error: BaseException | None = None

    def initial_grant(self) -> tuple[int, int]:
        """The whole window, as the first grant (items, bytes)."""
        self.allowed_items += self.window.items
        self.allowed_bytes += self.window.bytes
        return self.window.items, self.window.bytes

    def put(self, value: Any, size: int) -> None:
        """An item the peer sent.

        Raises:
            InvalidRequest: the peer sent it past the credit it was granted.
        """
        if self.allowed_items <= 0 or self.allowed_bytes <= 0:
            raise InvalidRequest(
                "the peer sent a stream item past its credit: a sender waits for credit "
                "(docs/wire.md, flow control)"
            )
        self.allowed_items -= 1
        self.allowed_bytes -= size
        self.buffered.append((value, size))

    def take_nowait(self) -> Any:
        """The next item (raw, as decoded from the wire); the caller checked `buffered`."""
        value, size = self.buffered.popleft()
        self.taken_items += 1
        self.taken_bytes += size
        return value

    def grant_due(self) -> tuple[int, int] | None:
        """Credit to give back now (items, bytes), or None until half a window was taken."""
        window = self.window
        if self.taken_items * 2 < window.items and self.taken_bytes * 2 < window.bytes:
            return None
        items, size = self.taken_items, self.taken_bytes
        self.taken_items = self.taken_bytes = 0
        self.allowed_items += items
        self.allowed_bytes += size
        return items, size


class Outflow:
    """The sending end of one direction of a stream: the credit the receiver granted."""

    __slots__ = ("bytes", "items")

    def __init__(self) -> None:
        self.items = 0
        self.bytes = 0

    def grant(self, items: int, size: int) -> None:
        self.items += items
        self.bytes += size

    def may_send(self) -> bool:
        return self.items > 0 and self.bytes > 0

    def spend(self, size: int) -> None:
        self.items -= 1
        self.bytes -= size


# ---------------------------------------------------------------------------
# The callee's side

#: How an engine sends a stream message for the callee: encodes it (binary
#: when the connection carries binary), sends it, and returns its size.
SendMessage = Callable[[Message], Awaitable[int]]


class CalleeStream:
    """The callee's half of one stream call: its argument items in, its result items out.

    The engine makes one when it prepares a stream call, feeds it from its
    reader (`on_send`, `on_end`, `on_credit`: none of them waits), runs the
    impl through `run`, and calls `close` when the connection ends. The impl
    runs in the call's task, under its context and cancel scope: every item
    the generator yields is produced under the call's ActivityId.
    """

    __slots__ = (
        "_lot",
        "call_id",
        "failure",
        "inflow",
        "messages",
        "operation",
        "outflow",
        "send",
    )

    def __init__(
        self, call_id: int, operation: Operation, window: StreamWindow, send: SendMessage
    ) -> None:
        self.call_id = call_id
        self.operation = operation
        self.send = send
        self.inflow = Inflow(window) if operation.stream_param is not None else None
        self.outflow = Outflow()
        #: Why the reader failed this stream (the caller broke its rules): the
        #: call's answer when its scope stops it (`fail`).
        self.failure: InvalidRequest | None = None
        #: Where each item is reported when interceptors watch (`CallInfo.messages`).
        self.messages: StreamMessages | None = None
        self._lot = trio.lowlevel.ParkingLot()

    # -- from the engine's reader (never waits) -------------------------------------

    def on_send(self, value: Any, size: int) -> None:
        """A `send` for this call.

        Raises:
            InvalidRequest: the operation takes no stream, the stream had ended,
                or the item came past its credit: the engine fails the call.
        """
        inflow = self.inflow
        if inflow is None or inflow.ended:
            raise InvalidRequest(
                f"{self.operation.qualname} takes no more stream items"
                if inflow is not None
                else f"{self.operation.qualname} takes no stream argument"
            )
        inflow.put(value, size)
        self._lot.unpark_all()

    def on_end(self) -> None:
        """An `end` for this call: its argument stream is complete."""
        if self.inflow is not None:
            self.inflow.ended = True
            self._lot.unpark_all()

    def on_credit(self, items: int, size: int) -> None:
        """A `credit` for this call: it may send more result items."""
        self.outflow.grant(items, size)
        self._lot.unpark_all()

    def fail(self, failure: InvalidRequest) -> None:
        """The caller broke the stream's rules: the call's answer is `failure`.

        The engine cancels the call's scope, and answers with `failure` when
        that scope stops it (an impl reading its stream argument gets
        `failure` raised there, and its own error answers). Either way the
        call gets one answer.
        """
        if self.failure is None:
            self.failure = failure
        self.close(failure)

    def close(self, error: BaseException) -> None:
        """The connection ended: a wait for items or credit raises `error`."""
        if self.inflow is not None and self.inflow.error is None:
            self.inflow.error = error
        self._lot.unpark_all()

    # -- the impl's side ---------------------------------------------------------

    async def run(self, handler: Callable[..., Any], args: list[Any]) -> Any:
        """Run the impl: hand it the argument stream, send what it yields.

        Returns:
            The value for the call's `result`: the impl's return value, or
            None for a stream result (which ends with the generator).
        """
        operation = self.operation
        if self.inflow is not None:
            args[operation.stream_param] = _Input(self)  # type: ignore[index]
            items, size = self.inflow.initial_grant()
            await self.send(Ready(self.call_id, items, size))
        if not operation.stream_result:
            return await handler(*args)
        produced = handler(*args)
        if inspect.isawaitable(produced):
            # An `async def` that returns an iterable (not a generator).
            produced = await produced
        iterator = aiter(produced)
        try:
            async for value in iterator:
                await self._emit(operation.encode_output(value))
        finally:
            await aclose_if_possible(iterator)
        return None

    async def _emit(self, value: Any) -> None:
        outflow = self.outflow
        while not outflow.may_send():
            await self._lot.park()
        size = await self.send(Item(self.call_id, value))
        outflow.spend(size)
        if self.messages is not None:
            self.messages.note("sent")

    async def next_input(self) -> Any:
        """The next argument item, structured; StopAsyncIteration at its end."""
        inflow = self.inflow
        assert inflow is not None
        while not inflow.buffered:
            if inflow.error is not None:
                raise inflow.error
            if inflow.ended:
                raise StopAsyncIteration
            await self._lot.park()
        raw = inflow.take_nowait()
        due = inflow.grant_due()
        if due is not None:
            with contextlib.suppress(ConnectionClosed):
                await self.send(Ready(self.call_id, *due))
        if self.messages is not None:
            self.messages.note("received")
        return self.operation.decode_input(raw)


class _Input(AsyncIterator[Any]):
    """The argument stream an impl iterates (`async for chunk in chunks`)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: CalleeStream) -> None:
        self._stream = stream

    def __repr__(self) -> str:
        return f"<stream argument of {self._stream.operation.qualname}>"

    async def __anext__(self) -> Any:
        return await self._stream.next_input()


# ---------------------------------------------------------------------------
# Helpers for engines


def iterate_source(source: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """The iterator of an argument stream (TypeError naming it when it is not async iterable)."""
    if not hasattr(source, "__aiter__"):
        raise TypeError(
            f"a stream argument must be an async iterable (an async generator, a trio "
            f"receive channel), got {type(source).__name__}"
        )
    return aiter(source)
