"""The frontend side of RPC: the backend contract, client options, and stubs."""

from __future__ import annotations

import abc
import functools
import itertools
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar, cast

import attrs
import trio

from .. import contexts
from ..contexts import current as current_context
from ._codec import CONVERTER
from ._errors import (
    CallMayHaveRun,
    IncompatibleVersion,
    InvalidRequest,
    NotFound,
    RemoteError,
    TetherError,
    Unavailable,
    error_class_for_code,
    registered_remote_error,
)
from ._interceptors import (
    INSTALLED,
    CallInfo,
    Interceptor,
    StreamMessages,
    client_chain,
    counted_source,
    intercepted_stream,
    run_chain,
    to_interceptors,
)
from ._interfaces import Operation, RpcInterface, require_interface
from ._limits import unsendable
from ._protocol import Call, CallContext, Error, ErrorInfo, InterfaceInfo, Item, Result
from ._retry import DEFAULT_RETRY, RetryPolicy, check_retry, retry_after_too_long, retry_delay
from ._state import ConnectionState, StateWatch
from ._streams import (
    DEFAULT_STREAM_WINDOW,
    Exchange,
    StreamCall,
    StreamWindow,
    aclose_if_possible,
    check_stream_window,
    iterate_source,
)
from ._util import timeout_ms_left
from ._versions import compatibility_advice, is_version_compatible

__all__ = [
    "ClientOptions",
    "RpcBackend",
    "check_backend_interfaces",
    "error_for_reply",
    "error_from_info",
    "make_client",
]

T = TypeVar("T", bound=RpcInterface)

_log = logging.getLogger("tether.client")
_ids = itertools.count(1)
_ALWAYS_CONNECTED = StateWatch()


def _session_id(value: str | None) -> str:
    """A session id as given, or a fresh one."""
    return str(uuid.uuid4()) if value is None else value


@attrs.frozen(slots=True)
class ClientOptions:
    """How a frontend presents itself on every call it makes through a connection.

    Attributes:
        application_id: Sent with every call unless the current context has one.
        application_version: Likewise.
        authorization: The credential this connection sends. When None, the
            current context's authorization (the user's) is forwarded.
        session_id: The session this connection's calls belong to unless the
            current context has one; a fresh UUID by default (or when None).
        stream_window: What this frontend takes of a stream's results before
            the backend must wait (`DEFAULT_STREAM_WINDOW`: 256 items, 4 MiB).
        retry: How calls are retried after a fault, and how a connection that
            can reconnect does (`RetryPolicy()` by default; None for none).
        interceptors: Run around every call through this connection (first
            outermost, inside the process-wide ones), retries included.
        peer: Where the calls go (a URL), for `CallInfo.peer`; None if unknown.
    """

    application_id: str | None = None
    application_version: str | None = None
    authorization: str | None = attrs.field(default=None, repr=False)
    session_id: str = attrs.field(default=None, converter=_session_id)
    stream_window: StreamWindow = attrs.field(
        default=DEFAULT_STREAM_WINDOW, validator=lambda _, __, value: check_stream_window(value)
    )
    retry: RetryPolicy = attrs.field(default=DEFAULT_RETRY, converter=check_retry)
    interceptors: tuple[Interceptor, ...] = attrs.field(default=(), converter=to_interceptors)
    peer: str | None = None


class RpcBackend(abc.ABC):
    """The transport contract on the frontend: somewhere RPC calls can be sent.

    A transport implements `request` and `interfaces`; the runtime builds the
    call (arguments, context, deadline) and reads the reply. `get_client`
    returns typed stubs bound to this backend.
    """

    __slots__ = ()

    @property
    @abc.abstractmethod
    def options(self) -> ClientOptions:
        """How calls through this backend present the frontend."""

    @property
    @abc.abstractmethod
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        """What the backend said it serves when the connection was made."""

    @abc.abstractmethod
    async def request(self, call: Call) -> Result | Error:
        """Send one call and wait for its reply (a `Result` or an `Error` message).

        If the caller is cancelled, the transport tells the backend to cancel
        the call (a `cancel` message, or closing the HTTP request) and lets the
        `trio.Cancelled` propagate.

        Raises:
            TransportError: the connection failed or was closed.
            PayloadTooLarge: the encoded call is over the transport's size limit.
        """

    def open_call(
        self,
        call: Call,
        operation: Operation,
        source: AsyncIterable[Any] | None,
    ) -> AbstractAsyncContextManager[Exchange]:
        """Carry a stream call for the block (STREAMS.md, docs/wire.md).

        Sends `call` and the credit of the caller's window; pumps `source` (the
        argument stream, unstructured item by item with `operation.encode_input`) as the
        callee grants credit, then says it ended; and on leaving the block,
        unless the final reply came, cancels the call on the other side. The
        source is `aclose()`d when the call is done with it. If the source
        raises, the call is cancelled and the source's exception propagates.

        Raises:
            NotFound: this transport does not carry this kind of stream.
            TransportError: the connection failed or was closed.
        """
        raise NotFound(
            f"this connection ({type(self).__name__}) does not carry streams: use the "
            "memory, WebSocket or local transport"
        )

    @property
    def state_watch(self) -> StateWatch:
        """This connection's state. A backend without one is always connected."""
        return _ALWAYS_CONNECTED

    @property
    def state(self) -> ConnectionState:
        """Where the connection is: connected, reconnecting, or closed."""
        return self.state_watch.state

    async def wait_state_change(self, seen: ConnectionState | None = None) -> ConnectionState:
        """Wait until the state is not `seen` (the current one when None), and return it.

        For UIs that show "reconnecting...": pass back what you last saw, and
        no change is missed.
        """
        return await self.state_watch.wait_change(seen)

    def get_client(self, interface: type[T]) -> T:
        """Return a client stub of `interface` whose calls go to this backend.

        Raises:
            NotFound: the backend did not say it serves `interface` on connect.
        """
        if interface.interface_name not in self.interfaces:
            raise NotFound(
                f"this connection was not opened for {interface.interface_name}: list it in "
                "interfaces=[...] when connecting"
            )
        return make_client(interface, self)


def check_backend_interfaces(
    interfaces: Mapping[str, InterfaceInfo], wanted: list[type[RpcInterface]] | tuple[Any, ...]
) -> dict[str, InterfaceInfo]:
    """Check every wanted interface against what a backend describes.

    Returns:
        The backend's description of the wanted interfaces.

    Raises:
        NotFound: the backend does not serve one of them.
        IncompatibleVersion: a version is incompatible; the message names both.
    """
    routed: dict[str, InterfaceInfo] = {}
    for interface in wanted:
        name = interface.interface_name
        info = interfaces.get(name)
        if info is None:
            served = ", ".join(sorted(interfaces)) or "nothing"
            raise NotFound(
                f"backend does not serve {name} (it serves {served}): register an impl of it "
                "on the backend's RpcManager or route it to another backend",
                details={"interface": name},
            )
        try:
            compatible = is_version_compatible(info.version, interface.interface_version)
        except ValueError:
            compatible = False  # the backend's is not a version: the advice says so
        if not compatible:
            raise IncompatibleVersion(
                compatibility_advice(name, info.version, interface.interface_version),
                details={
                    "interface": name,
                    "backend_version": info.version,
                    "client_version": interface.interface_version,
                },
            )
        routed[name] = info
    return routed


def error_from_info(info: ErrorInfo, activity_id: str | None) -> BaseException:
    """Turn an `error` reply into the exception the caller should see."""
    activity = info.activity_id or activity_id
    if info.code == "application":
        cls = registered_remote_error(info.name)
        if cls is not None:
            exc = _rebuild_application_error(cls, info)
            if exc is not None:
                exc.add_note(f"raised by the backend (activity {activity})")
                return exc
    cls = error_class_for_code(info.code)
    if cls is None or cls is RemoteError or info.code == "application":
        return RemoteError(
            info.message,
            remote_type=info.name,
            remote_traceback=info.details.get("traceback"),
            details=info.details,
            activity_id=activity,
        )
    if cls is Unavailable:
        retry = info.details.get("retry_after")
        return Unavailable(
            info.message,
            retry_after=retry if isinstance(retry, (int, float)) else None,
            overloaded=info.code == "too-many-requests",
            details=info.details,
            activity_id=activity,
            remote=True,
        )
    return cls(info.message, details=info.details, activity_id=activity, remote=True)


async def error_for_reply(info: ErrorInfo, activity_id: str | None) -> BaseException:
    """The exception an `error` reply stands for, for the caller to raise.

    A `deadline-exceeded` reply that comes once the caller's own deadline has
    passed is that deadline's doing: the caller sent its time left, and the
    backend ran the call under it. On a busy loop the reply can wake the caller
    before Trio has delivered the expired scope's cancellation, and raising
    `DeadlineExceeded` then would escape `trio.move_on_after`. So the caller
    first passes a checkpoint, where the scope's cancellation is delivered: it
    sees a clean cancel (caught by `move_on_after`, `TooSlowError` from
    `fail_after`). A caller whose deadline has not passed (the backend had a
    shorter one of its own) gets `DeadlineExceeded`.
    """
    if (
        info.code == "deadline-exceeded"
        and trio.current_effective_deadline() <= trio.current_time()
    ):
        await trio.lowlevel.checkpoint()
    return error_from_info(info, activity_id)


def _rebuild_application_error(cls: type[BaseException], info: ErrorInfo) -> BaseException | None:
    fields = info.details.get("fields")
    try:
        if attrs.has(cls) and isinstance(fields, dict):
            return cast(BaseException, CONVERTER.structure(fields, cls))
        args = info.details.get("args")
        if isinstance(args, list):
            return cls(*args)
    except Exception:  # a shape mismatch between the two sides' classes
        _log.warning("could not rebuild remote error %s from %r", info.name, info.details)
    return None


def _make_call(
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Call:
    """The `call` message for a call made now, in the current context."""
    values = op.encode_args(args, kwargs)
    options = backend.options
    ctx = current_context()
    if ctx is None:
        activity_id = contexts.new_activity_id()
        call_ctx = CallContext(
            activity_id,
            options.session_id,
            options.application_id,
            options.application_version,
            options.authorization,
        )
    else:
        # Inside a request or an activity: propagate who the user action is for.
        activity_id = ctx.activity_id
        call_ctx = CallContext(
            activity_id,
            ctx.session_id or options.session_id,
            ctx.application_id or options.application_id,
            ctx.application_version or options.application_version,
            options.authorization or ctx.authorization,
            ctx.metadata,
            ctx.traceparent,
        )
    call = Call(
        next(_ids),
        interface.interface_name,
        interface.interface_version,
        op.name,
        values,
        call_ctx,
        timeout_ms_left(),
    )
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("calling %s (attempt 1)", op.qualname, extra={"activity_id": activity_id})
    return call


def _refused(call: Call, op: Operation) -> TetherError | None:
    """The error for arguments the encoder refused (TypeError), or None if it is not that.

    The encoder refuses an int out of range, a value nested past its limit,
    an object JSON cannot hold, before anything was sent.
    """
    return unsendable(call.args, op.param_names, op.qualname, call.ctx.activity_id)


def _retry_wait(backend: RpcBackend, exc: TetherError, op: Operation, attempt: int) -> float | None:
    """Seconds before the next attempt after `exc`, or None when `exc` is final.

    A connection closed for good (CLOSED: closed here, or lost and not
    reconnecting) is not tried again: another attempt could only fail.
    """
    if backend.state is ConnectionState.CLOSED:
        return None
    return retry_delay(exc, backend.options.retry, op.policy, attempt)


def _final(exc: TetherError, backend: RpcBackend, op: Operation, attempt: int) -> TetherError:
    """The failure the caller sees: a `CallMayHaveRun` says why it was not retried."""
    if type(exc) is not CallMayHaveRun:
        if attempt > 1:
            exc.add_note(f"{op.qualname} was tried {attempt} times")
        too_long = retry_after_too_long(exc, backend.options.retry)
        if too_long is not None and attempt < backend.options.retry.attempts:
            exc.add_note(too_long)
        return exc
    if not op.policy.idempotent:
        why = "it is not idempotent (@tether.idempotent), so it was not retried"
    elif backend.state is ConnectionState.CLOSED:
        why = "the connection is closed for good, so it was not retried"
    elif attempt >= backend.options.retry.attempts:
        why = f"it was tried {attempt} times (retry.attempts)"
    else:
        why = "another try would end past the caller's deadline"
    return CallMayHaveRun(
        f"{exc.message}: {op.qualname} may have run on the backend; {why}",
        reason=exc.reason,
        close_code=exc.close_code,
        details=exc.details,
        activity_id=exc.activity_id,
    )


async def _call(
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Any:
    # A call from a scope that is already cancelled is not sent at all.
    await trio.lowlevel.checkpoint_if_cancelled()
    call = _make_call(backend, interface, op, args, kwargs)
    attempt = 1
    while True:
        try:
            reply = await backend.request(call)
        except TypeError:
            refused = _refused(call, op)
            if refused is None:
                raise
            raise refused from None
        except TetherError as exc:
            wait = _retry_wait(backend, exc, op, attempt)
            if wait is None:
                final = _final(exc, backend, op, attempt)
                if final is exc:
                    raise
                raise final from exc
            failure: TetherError = exc
        else:
            if isinstance(reply, Result):
                return op.decode_result(reply.value)
            error = await error_for_reply(reply.error, call.ctx.activity_id)
            if not isinstance(error, Unavailable):
                raise error
            wait = _retry_wait(backend, error, op, attempt)
            if wait is None:
                raise _final(error, backend, op, attempt)
            failure = error
        attempt += 1
        call = await _retry(call, op, attempt, wait, failure)


async def _retry(
    call: Call, op: Operation, attempt: int, wait: float, failure: TetherError
) -> Call:
    """Wait out the backoff, and return the call to send as attempt `attempt`.

    The same context (ActivityId included) under a new id, with the time
    left now.
    """
    activity_id = call.ctx.activity_id
    _log.info(
        "retrying %s in %.3f s (attempt %d): %s",
        op.qualname,
        wait,
        attempt,
        failure.message,
        extra={"activity_id": activity_id},
    )
    await trio.sleep(wait)
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug(
            "calling %s (attempt %d)", op.qualname, attempt, extra={"activity_id": activity_id}
        )
    return call._replace(id=next(_ids), timeout_ms=timeout_ms_left())


class _HeldSource:
    """A client stream's argument stream, held open across the tries to open the call.

    The transport `aclose()`s what it was given when an opening fails; this
    one only notes it, so that the next try can still send the whole stream.
    The call closes the caller's source itself, once (`release`). `read`
    says whether any item was asked for: from then on the call is not tried
    again, as the items taken cannot be sent twice.
    """

    __slots__ = ("_iterator", "read")

    def __init__(self, source: AsyncIterable[Any]) -> None:
        self._iterator = iterate_source(source)
        self.read = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        self.read = True
        return await anext(self._iterator)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def release(self) -> None:
        await aclose_if_possible(self._iterator)


@asynccontextmanager
async def _open_with_retries(
    backend: RpcBackend, op: Operation, call: Call, source: AsyncIterable[Any] | None
) -> AsyncIterator[Exchange]:
    """Open a stream call for the block, trying again while opening fails.

    The rule: only the opening is retried (a `ConnectError` or `CallNotSent`
    for every operation, a `CallMayHaveRun` for an idempotent one), and only
    while no argument item was read; once the block is entered, no failure
    is retried, since items have come or gone. Every try carries the same
    ActivityId.
    """
    held = _HeldSource(source) if source is not None else None
    attempt = 1
    try:
        while True:
            opener = backend.open_call(call, op, held)
            try:
                exchange = await opener.__aenter__()
            except TypeError:
                refused = _refused(call, op)
                if refused is None:
                    raise
                raise refused from None
            except TetherError as exc:
                wait = (
                    None
                    if held is not None and held.read
                    else _retry_wait(backend, exc, op, attempt)
                )
                if wait is None:
                    final = _final(exc, backend, op, attempt)
                    if final is exc:
                        raise
                    raise final from exc
                attempt += 1
                call = await _retry(call, op, attempt, wait, exc)
                continue
            break
        async with _entered(opener, exchange) as entered:
            yield entered
    finally:
        if held is not None:
            with trio.CancelScope(shield=True):
                await held.release()


@asynccontextmanager
async def _entered(
    opener: AbstractAsyncContextManager[Exchange], exchange: Exchange
) -> AsyncIterator[Exchange]:
    """The block of an opener already entered: its exit sees how the block ended."""
    try:
        yield exchange
    except BaseException as exc:
        if not await opener.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await opener.__aexit__(None, None, None)


async def _call_with_stream(
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Any:
    """A client-stream call: its argument stream goes out, one result comes back."""
    await trio.lowlevel.checkpoint_if_cancelled()
    source = op.stream_source(args, kwargs)
    call = _make_call(backend, interface, op, args, kwargs)
    async with _open_with_retries(backend, op, call, source) as exchange:
        reply = await exchange.receive()
        while type(reply) is Item:
            # Not a stream result: an item is the backend's mistake; skip it.
            _log.warning("ignoring a stream item for %s, which returns one value", op.qualname)
            reply = await exchange.receive()
    if type(reply) is Result:
        return op.decode_result(reply.value)
    assert type(reply) is Error
    raise await error_for_reply(reply.error, call.ctx.activity_id)


def _open_rpc_stream(
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> AbstractAsyncContextManager[Exchange]:
    source = op.stream_source(args, kwargs) if op.stream_param is not None else None
    call = _make_call(backend, interface, op, args, kwargs)
    return _open_with_retries(backend, op, call, source)


def _bound_args(op: Operation, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """A call's arguments bound to the operation's parameters, in order (defaults applied)."""
    if not kwargs and len(args) == len(op.param_names):
        return args
    try:
        bound = op.signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise InvalidRequest(f"{op.qualname}: {exc}") from None
    bound.apply_defaults()
    return tuple(bound.arguments.values())[1:]


def _call_info(
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> CallInfo:
    """What the client's interceptors see of a call made now, in the current context."""
    options = backend.options
    ctx = current_context()
    if ctx is None:
        context = contexts.RequestContext(
            session_id=options.session_id,
            application_id=options.application_id,
            application_version=options.application_version,
            operation=op.qualname,
        )
    else:
        # What `_make_call` sends, but the connection's own credential: it is
        # added after the interceptors, who need not see it.
        context = attrs.evolve(
            ctx,
            session_id=ctx.session_id or options.session_id,
            application_id=ctx.application_id or options.application_id,
            application_version=ctx.application_version or options.application_version,
            operation=op.qualname,
        )
    stream: Any = None
    if op.stream_result:
        stream = "bidi" if op.stream_param is not None else "server"
    elif op.stream_param is not None:
        stream = "client"
    return CallInfo(
        "client",
        "rpc",
        interface.interface_name,
        interface.interface_version,
        op.name,
        _bound_args(op, args, kwargs),
        context,
        stream=stream,
        peer=options.peer,
        messages=StreamMessages() if stream is not None else None,
    )


def _with_counted_source(op: Operation, call: CallInfo) -> tuple[Any, ...]:
    """The call's arguments, its argument stream reporting each item as sent."""
    if op.stream_param is None or call.messages is None:
        return call.args
    args = list(call.args)
    args[op.stream_param] = counted_source(args[op.stream_param], call.messages)
    return tuple(args)


async def _intercepted_call(
    chain: tuple[Interceptor, ...],
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Any:
    """A unary or client-stream call, through the connection's interceptors."""

    async def innermost(call: CallInfo) -> Any:
        with contexts.using(call.context):
            if op.stream_param is None:
                return await _call(backend, interface, op, call.args, {})
            return await _call_with_stream(
                backend, interface, op, _with_counted_source(op, call), {}
            )

    return await run_chain(chain, _call_info(backend, interface, op, args, kwargs), innermost)


def _open_intercepted_stream(
    chain: tuple[Interceptor, ...],
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> AbstractAsyncContextManager[Exchange]:
    """A result-stream call for the block, through the connection's interceptors."""

    def open_inner(call: CallInfo) -> AbstractAsyncContextManager[Exchange]:
        with contexts.using(call.context):
            return _open_rpc_stream(backend, interface, op, _with_counted_source(op, call), {})

    call = _call_info(backend, interface, op, args, kwargs)
    return intercepted_stream(chain, call, open_inner, Item)


def _forwarder(interface: type[RpcInterface], op: Operation) -> Any:
    # Each checks for interceptors first: with none (two empty tuples), the call
    # takes the path it took before they existed, building nothing more.
    if op.stream_result:

        def open_(self: Any, *args: Any, **kwargs: Any) -> Any:
            backend = self._tether_backend
            own = backend.options.interceptors
            if own or INSTALLED.client:
                opener = functools.partial(
                    _open_intercepted_stream,
                    client_chain(own),
                    backend,
                    interface,
                    op,
                    args,
                    kwargs,
                )
            else:
                opener = functools.partial(_open_rpc_stream, backend, interface, op, args, kwargs)
            return StreamCall(op, opener)

        forward: Any = open_
    elif op.stream_param is not None:

        async def call_with_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            backend = self._tether_backend
            own = backend.options.interceptors
            if own or INSTALLED.client:
                return await _intercepted_call(
                    client_chain(own), backend, interface, op, args, kwargs
                )
            return await _call_with_stream(backend, interface, op, args, kwargs)

        forward = call_with_stream
    else:

        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            backend = self._tether_backend
            own = backend.options.interceptors
            if own or INSTALLED.client:
                return await _intercepted_call(
                    client_chain(own), backend, interface, op, args, kwargs
                )
            return await _call(backend, interface, op, args, kwargs)

        forward = call

    forward.__name__ = op.name
    forward.__qualname__ = f"{interface.__qualname__}Client.{op.name}"
    forward.__doc__ = op.function.__doc__
    forward.__signature__ = op.signature
    return forward


_stub_classes: dict[type[RpcInterface], type[Any]] = {}


def make_client(interface: type[T], backend: RpcBackend) -> T:
    """Return a stub of `interface` whose operations call `backend`."""
    require_interface(interface)
    stub_class = _stub_classes.get(interface)
    if stub_class is None:
        namespace: dict[str, Any] = {
            name: _forwarder(interface, op) for name, op in interface.__tether_operations__.items()
        }
        namespace["__slots__"] = ("_tether_backend",)
        namespace["__repr__"] = lambda self: (
            f"<{interface.__qualname__} client of {interface.interface_name} "
            f"{interface.interface_version}>"
        )
        stub_class = type(f"{interface.__qualname__}Client", (interface,), namespace)
        _stub_classes[interface] = stub_class
    stub = object.__new__(stub_class)
    stub._tether_backend = backend
    return stub  # type: ignore[no-any-return]
