"""Interceptors: middleware around every call, on both sides, for RPC and IPC.

An interceptor is an async callable `(call, proceed) -> outcome`. It sees one
call (`CallInfo`: the operation, its arguments and its `RequestContext`), may
change what goes on (`proceed(attrs.evolve(call, context=...))`), refuse it (raise
a tether error), measure it, and sees its outcome (the value `proceed` returns or
the exception it raises).

Chains: the first registered is outermost; the process-wide ones
(`install_interceptor`, for instrumentation) run outside the per-object ones
(`RpcManager(interceptors=)`, `BackendIpc(interceptors=)`, `connect(interceptors=)`).
With none registered, the call paths check two empty tuples and build nothing.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import trio

from ..contexts import RequestContext, using
from ._streams import aclose_if_possible, iterate_source
from ._util import open_service_nursery

if TYPE_CHECKING:
    from ._interfaces import Operation

__all__ = [
    "CallInfo",
    "Installed",
    "Interceptor",
    "Proceed",
    "StreamMessages",
    "client_chain",
    "counted_source",
    "install_interceptor",
    "intercepted_stream",
    "peer_of",
    "run_chain",
    "run_in_context",
    "stream_kind",
    "server_chain",
    "to_interceptors",
]

#: Who a listener of `StreamMessages` hears about: a message this side sent, or received.
Direction = Literal["sent", "received"]


class StreamMessages:
    """The messages of one stream call, as they pass (`CallInfo.messages`).

    Listeners are called synchronously for each item: `fn(direction, index)`,
    where `direction` is "sent" or "received" (from this side's point of view)
    and `index` counts from 0 in each direction. Keep them quick: they run on
    the stream's path.
    """

    __slots__ = ("_listeners", "received", "sent")

    def __init__(self) -> None:
        self._listeners: list[Callable[[Direction, int], object]] = []
        #: Items sent so far.
        self.sent = 0
        #: Items received so far.
        self.received = 0

    def __repr__(self) -> str:
        return f"<StreamMessages sent={self.sent} received={self.received}>"

    def add_listener(self, listener: Callable[[Direction, int], object]) -> None:
        """Call `listener(direction, index)` for each message from now on."""
        self._listeners.append(listener)

    def note(self, direction: Direction) -> None:
        """One message passed (called by the engines)."""
        if direction == "sent":
            index = self.sent
            self.sent += 1
        else:
            index = self.received
            self.received += 1
        for listener in self._listeners:
            listener(direction, index)


@attrs.frozen
class CallInfo:
    """One call, as an interceptor sees it.

    Attributes:
        side: "client" for a call this process makes (or an IPC message it
            sends), "server" for one it serves (or receives).
        kind: "rpc" or "ipc".
        interface: The RPC interface name, or the IPC channel name.
        version: The RPC interface version; None for IPC.
        operation: The operation, or the IPC method name.
        args: The arguments: on a client as called (bound to the parameters, in
            order), on a server as decoded.
        context: On a client, the context the call is sent with (its
            `authorization` is the forwarded one: a connection's own credential
            is added after the interceptors); on a server, the one received (what
            the impl sees as `tether.current_context()`).
        stream: "server" (a result stream), "client" (an argument stream),
            "bidi" (both), or None for a unary call.
        notification: An IPC notification (one-way: its outcome is None).
        peer: On a client, the backend it calls when known (a URL); on a
            server, the remote address when known; else None.
        messages: For a stream call, where its messages are reported; else None.
    """

    side: Literal["client", "server"]
    kind: Literal["rpc", "ipc"]
    interface: str
    version: str | None
    operation: str
    args: tuple[Any, ...]
    context: RequestContext
    stream: Literal["server", "client", "bidi"] | None = None
    notification: bool = False
    peer: str | None = None
    messages: StreamMessages | None = attrs.field(default=None, eq=False)


#: What an interceptor calls to go on with the call (possibly changed).
Proceed = Callable[[CallInfo], Awaitable[Any]]


class Interceptor(Protocol):
    """Middleware around a call: `async def __call__(self, call, proceed) -> outcome`.

    Call `await proceed(call)` (or with `attrs.evolve(call, ...)`) and return what
    it returns; raise a tether error to refuse the call (the peer gets it as
    that error; the impl never runs).
    """

    async def __call__(self, call: CallInfo, proceed: Proceed) -> Any: ...


def stream_kind(op: Operation) -> Any:
    """A stream method's `CallInfo.stream`: "server", "client", "bidi"; None for one value."""
    if op.stream_result:
        return "bidi" if op.stream_param is not None else "server"
    return "client" if op.stream_param is not None else None


def peer_of(url: object) -> str | None:
    """A URL as `CallInfo.peer` shows it: scheme, host, port and path (no userinfo, no query).

    None for what is not a URL: the transport's own check says what is wrong with it.
    """
    if not isinstance(url, str):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def to_interceptors(value: Iterable[Interceptor] | None) -> tuple[Interceptor, ...]:
    """The `interceptors=` argument as a tuple, each checked to be callable.

    Raises:
        TypeError: one of them is not callable.
    """
    if value is None:
        return ()
    chain = tuple(value)
    for interceptor in chain:
        if not callable(interceptor):
            raise TypeError(
                f"an interceptor must be an async callable (call, proceed) -> outcome, "
                f"got {interceptor!r}"
            )
    return chain


class _Installed:
    """The process-wide chains; replaced whole (tuples), so readers need no lock."""

    __slots__ = ("client", "server")

    def __init__(self) -> None:
        self.client: tuple[Interceptor, ...] = ()
        self.server: tuple[Interceptor, ...] = ()


INSTALLED = _Installed()
_install_lock = threading.Lock()


class Installed:
    """The handle `install_interceptor` returns: `uninstall()`, or leave its `with` block."""

    __slots__ = ("_client", "_interceptor", "_server")

    def __init__(self, interceptor: Interceptor, client: bool, server: bool) -> None:
        self._interceptor = interceptor
        self._client = client
        self._server = server

    def __repr__(self) -> str:
        return f"<Installed {self._interceptor!r} client={self._client} server={self._server}>"

    def uninstall(self) -> None:
        """Remove the interceptor from the process; calls already running keep it. Idempotent."""
        with _install_lock:
            if self._client:
                INSTALLED.client = _without(INSTALLED.client, self._interceptor)
            if self._server:
                INSTALLED.server = _without(INSTALLED.server, self._interceptor)
            self._client = self._server = False

    def __enter__(self) -> Installed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()


def _without(chain: tuple[Interceptor, ...], interceptor: Interceptor) -> tuple[Interceptor, ...]:
    for index, found in enumerate(chain):
        if found is interceptor:
            return chain[:index] + chain[index + 1 :]
    return chain


def install_interceptor(
    interceptor: Interceptor, *, client: bool = True, server: bool = True
) -> Installed:
    """Run `interceptor` around every call of this process, RPC and IPC, every transport.

    Process-wide interceptors run outside (before) the ones given to a
    manager, a `BackendIpc` or a connection; among themselves, the first
    installed is outermost. For instrumentation (`tether.otel.instrument`).

    Args:
        interceptor: The async callable `(call, proceed) -> outcome`.
        client: Around calls this process makes and IPC messages it sends.
        server: Around calls it serves and IPC messages it receives.

    Returns:
        A handle: `uninstall()` removes it (also on leaving `with handle:`).

    Raises:
        TypeError: `interceptor` is not callable.
    """
    (checked,) = to_interceptors([interceptor])
    with _install_lock:
        if client:
            INSTALLED.client = (*INSTALLED.client, checked)
        if server:
            INSTALLED.server = (*INSTALLED.server, checked)
    return Installed(checked, client, server)


def client_chain(own: tuple[Interceptor, ...]) -> tuple[Interceptor, ...]:
    """The interceptors around a call this process makes: installed ones outermost."""
    installed = INSTALLED.client
    return installed + own if installed else own


def server_chain(own: tuple[Interceptor, ...]) -> tuple[Interceptor, ...]:
    """The interceptors around a call this process serves: installed ones outermost."""
    installed = INSTALLED.server
    return installed + own if installed else own


async def run_chain(chain: tuple[Interceptor, ...], call: CallInfo, innermost: Proceed) -> Any:
    """Run `call` through `chain` (first outermost), then `innermost`."""
    last = len(chain)

    async def proceed_from(index: int, call: CallInfo) -> Any:
        if not isinstance(call, CallInfo):
            raise TypeError(
                f"an interceptor must pass a tether.CallInfo to proceed(), got {call!r}"
            )
        if index == last:
            return await innermost(call)
        return await chain[index](call, lambda changed: proceed_from(index + 1, changed))

    return await proceed_from(0, call)


async def run_in_context(
    call: CallInfo, original: RequestContext, fn: Callable[[], Awaitable[Any]]
) -> Any:
    """`fn()` with `call.context` current when an interceptor changed it."""
    if call.context is original:
        return await fn()
    with using(call.context):
        return await fn()


class _CountedExchange:
    """An exchange whose received items are reported to `messages`."""

    __slots__ = ("_exchange", "_item", "_messages")

    def __init__(self, exchange: Any, messages: StreamMessages, item: type) -> None:
        self._exchange = exchange
        self._messages = messages
        self._item = item

    async def receive(self) -> Any:
        message = await self._exchange.receive()
        if type(message) is self._item:
            self._messages.note("received")
        return message


class counted_source:
    """An argument stream whose items are reported as sent when the engine takes them.

    Closing it closes the caller's source, as the engine would have.
    """

    __slots__ = ("_iterator", "_messages", "_source")

    def __init__(self, source: AsyncIterable[Any], messages: StreamMessages) -> None:
        self._source = source
        self._iterator: AsyncIterator[Any] | None = None
        self._messages = messages

    def __aiter__(self) -> counted_source:
        return self

    async def __anext__(self) -> Any:
        if self._iterator is None:
            self._iterator = iterate_source(self._source)
        item = await anext(self._iterator)
        self._messages.note("sent")
        return item

    async def aclose(self) -> None:
        await aclose_if_possible(self._iterator if self._iterator is not None else self._source)


@asynccontextmanager
async def intercepted_stream(
    chain: tuple[Interceptor, ...],
    call: CallInfo,
    open_inner: Callable[[CallInfo], AbstractAsyncContextManager[Any]],
    item_type: type,
) -> AsyncIterator[Any]:
    """A caller's stream call for the block, run through `chain`.

    The chain runs in a task of its own: its innermost `proceed` opens the
    call (`open_inner(call)`), hands the exchange to this block, and returns
    None once the block has ended, or raises the exception that ended it. So
    an interceptor wraps the whole stream, and `call.messages` reports each
    item received.
    """
    assert call.messages is not None
    messages = call.messages
    handed, taken = trio.open_memory_channel[_CountedExchange](1)
    block_ended = trio.Event()
    block_error: list[Exception] = []
    chain_error: list[Exception] = []
    chain_scope = trio.CancelScope()

    async def innermost(call: CallInfo) -> None:
        async with open_inner(call) as exchange:
            await handed.send(_CountedExchange(exchange, messages, item_type))
            await block_ended.wait()
            if block_error:
                raise block_error[0]

    async def run() -> None:
        with chain_scope:
            async with handed:
                try:
                    await run_chain(chain, call, innermost)
                except Exception as exc:
                    chain_error.append(exc)

    async with open_service_nursery() as nursery:
        nursery.start_soon(run)
        try:
            exchange = await taken.receive()
        except trio.EndOfChannel:
            exchange = None
        if exchange is not None:
            try:
                yield exchange
            except Exception as exc:
                # The interceptors see how the block ended, as proceed()'s exception.
                block_error.append(exc)
            except BaseException:
                chain_scope.cancel()
                raise
            block_ended.set()
    if block_error:
        if chain_error and chain_error[0] is not block_error[0]:
            raise chain_error[0] from block_error[0]
        raise block_error[0]
    if chain_error:
        raise chain_error[0]
    if exchange is None:
        raise RuntimeError(
            f"an interceptor of {call.interface}.{call.operation} returned without calling "
            "proceed(): a stream call must be proceeded with, or refused by raising"
        )
