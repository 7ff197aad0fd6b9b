"""The dispatcher: from a decoded `call` to the reply, on the backend.

`prepare` does the synchronous checks (route, version, arguments) and builds the
RequestContext; the transport then sets that context and spawns a task that
awaits `run`. Splitting the two lets the transport set the context *before* it
spawns the impl task, as Trio copies the context at spawn.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..contexts import RequestContext, new_activity_id, using
from ._codec import CONVERTER, dumps
from ._credentials import AUTHORIZE_REFUSAL
from ._errors import (
    ConnectionClosed,
    DeadlineExceeded,
    IncompatibleVersion,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RemoteError,
    TetherError,
    TransportError,
    Unauthorized,
    remote_error_name,
)
from ._interceptors import (
    INSTALLED,
    CallInfo,
    Interceptor,
    StreamMessages,
    run_chain,
    run_in_context,
    server_chain,
    stream_kind,
)
from ._interfaces import Operation
from ._limits import why_unsendable, within_limits
from ._manager import RpcManager
from ._progress import ProgressSink, reporting_call
from ._protocol import (
    BinaryMessage,
    Call,
    Error,
    ErrorInfo,
    Result,
    encode,
    encode_binary,
    message_size,
)
from ._streams import CalleeStream
from ._util import collapse_exception_group, run_until_it_yields
from ._versions import compatibility_advice, is_version_compatible, parse_version

__all__ = [
    "Dispatcher",
    "PreparedCall",
    "access_clock",
    "access_line",
    "access_log",
    "encode_reply",
    "error_info",
    "failure_reply",
    "interrupted_reply",
    "too_large_reply",
]

_log = logging.getLogger("tether.server")
_access = logging.getLogger("tether.access")
#: (interface, client version) pairs a dispatcher remembers: the versions are
#: the clients', so a client sending a new one each time must not grow it.
_VERSIONS_REMEMBERED = 1024


class PreparedCall:
    """A call that passed the checks: ready to run under its context."""

    # A plain slotted class: made once per call, on the hot path.
    __slots__ = (
        "args",
        "context",
        "handler",
        "id",
        "operation",
        "peer",
        "progress",
        "started",
        "stream",
    )

    def __init__(
        self,
        id: int,
        operation: Operation,
        handler: Callable[..., Awaitable[Any]],
        args: list[Any],
        context: RequestContext,
    ) -> None:
        self.id = id
        self.operation = operation
        self.handler = handler
        self.args = args
        self.context = context
        #: When `Dispatcher.run` started it (`access_clock`), for its access line.
        self.started = -1.0
        #: The callee's half of a stream call (set by the engine that prepares
        #: one); None for a unary call.
        self.stream: CalleeStream | None = None
        #: Where `tether.report_progress` in the impl sends its reports (set by
        #: the transport that runs the call); None: they go nowhere.
        self.progress: ProgressSink | None = None
        #: The caller's address when the transport knows it (`CallInfo.peer`).
        self.peer: str | None = None


def error_info(exc: BaseException, activity_id: str | None, *, development_mode: bool) -> ErrorInfo:
    """Describe an exception for an `error` reply (DESIGN.md section 5)."""
    if isinstance(exc, TetherError) and not isinstance(exc, (TransportError, RemoteError)):
        return ErrorInfo(
            exc.code, exc.status, type(exc).__name__, exc.message, exc.details, activity_id
        )
    name = remote_error_name(exc)
    if name is not None:
        return ErrorInfo("application", 422, name, str(exc), _application_details(exc), activity_id)
    details: dict[str, Any] = {}
    if development_mode:
        details["traceback"] = "".join(traceback.format_exception(exc))
    remote_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return ErrorInfo("internal", 500, remote_type, str(exc), details, activity_id)


def _application_details(exc: BaseException) -> dict[str, Any]:
    # Fields or arguments the codec cannot carry (JSON cannot hold them, or a
    # nan that would arrive as null): the client gets a RemoteError instead.
    if attrs.has(type(exc)):
        try:
            fields = CONVERTER.unstructure(exc)
        except Exception:  # a field the codec cannot carry: send what we can
            fields = None
        if fields is None or not within_limits(fields):
            _log.warning("remote error %r has fields the codec cannot carry", exc)
            return {}
        return {"fields": fields}
    try:
        dumps(exc.args)
    except TypeError:
        pass
    else:
        if within_limits(exc.args):
            return {"args": list(exc.args)}
    _log.warning("remote error %r has args the codec cannot carry", exc)
    return {}


def encode_reply(message: Result | Error, binary: bool = False) -> bytes | BinaryMessage:
    """Encode a reply; a reply JSON cannot hold becomes an error for the same request.

    Never raises for a reply: the request gets an answer and the session goes on.
    A result over the codec's limits (an int out of range, nested too deep) is
    `bad-request`, as the client's own check of the result would say.

    `binary`: for a stream that takes binary (`encode_binary`); else JSON.
    """
    encode_as = encode_binary if binary else encode
    if type(message) is Error and not within_limits(message.error.details):
        # A nan or inf in the details would arrive as null: send none.
        _log.warning(
            "details of an error for request %s dropped: over the codec's limits", message.id
        )
        message = Error(message.id, attrs.evolve(message.error, details={}))
    try:
        return encode_as(message)
    except TypeError as exc:
        if isinstance(message, Error):
            # Details JSON cannot hold (an impl's `details=` or an application
            # error's args): send the error without them.
            _log.warning("details of an error for request %s dropped: %s", message.id, exc)
            return encode(Error(message.id, attrs.evolve(message.error, details={})))
        found = None if within_limits(message.value) else why_unsendable(message.value, "result")
        if found is not None:
            path, why = found
            _log.warning("reply to request %s cannot be sent: %s", message.id, why)
            info = ErrorInfo(
                "bad-request",
                400,
                "InvalidRequest",
                f"the result cannot be sent: {why}",
                {"path": path},
            )
        else:
            # The impl returned something the codec left as-is and JSON cannot
            # hold (its return annotation lied): report it, do not crash the session.
            _log.error("reply to request %s cannot be encoded: %s", message.id, exc)
            info = ErrorInfo("internal", 500, "TypeError", f"cannot encode the result: {exc}")
        return encode(Error(message.id, info))


def too_large_reply(call_id: int | None, size: int, limit: int) -> bytes:
    """The `payload-too-large` error that replaces a reply over the stream's limit."""
    info = ErrorInfo(
        "payload-too-large",
        413,
        "PayloadTooLarge",
        f"the reply encodes to {size} bytes, over the connection's limit of {limit}: "
        "ask for less per call",
    )
    return encode(Error(call_id, info))


async def send_reply(
    send: Callable[[bytes | BinaryMessage], Awaitable[None]],
    reply: Result | Error,
    limit: int,
    binary: bool = False,
) -> None:
    """Encode `reply` and send it; one over `limit` fails that request, not the session.

    The stream refuses a message over its limit before sending anything, so
    the request gets `payload-too-large` instead. A closed stream is the
    session ending: nobody waits for the reply. `binary` as for `encode_reply`.
    """
    data = encode_reply(reply, binary)
    try:
        await send(data)
    except PayloadTooLarge:
        with contextlib.suppress(ConnectionClosed):
            await send(too_large_reply(reply.id, message_size(data), limit))
    except ConnectionClosed:
        pass


def failure_reply(
    call_id: int,
    raised: BaseException,
    context: RequestContext,
    *,
    development_mode: bool,
    log_internal: bool = True,
) -> Error | None:
    """The error reply for what a handler raised (DESIGN.md section 5).

    A group with one real cause answers with that cause. An unexpected
    exception (code `internal`) is logged with its traceback unless
    `log_internal` is false.

    Returns:
        The reply; None when `raised` is not the handler's answer (trio.Cancelled,
        KeyboardInterrupt): the caller re-raises it then.
    """
    exc = collapse_exception_group(raised) if isinstance(raised, BaseExceptionGroup) else raised
    if not isinstance(exc, Exception):
        return None
    info = error_info(exc, context.activity_id, development_mode=development_mode)
    if info.code == "internal" and log_internal:
        _log.error("%s raised %s", context.operation, info.name, exc_info=exc)
    return Error(call_id, info)


def interrupted_reply(call_id: int, context: RequestContext, started: float) -> Error | None:
    """The reply for a request whose cancel scope interrupted it (and its access line).

    Returns:
        `deadline-exceeded` when the request's deadline has passed; None when
        the caller cancelled it (nobody waits for a reply then).
    """
    deadline = context.deadline
    if deadline is not None and trio.current_time() >= deadline:
        access_log(context, "deadline-exceeded", started)
        exc = DeadlineExceeded(
            f"{context.operation} did not finish before the deadline the caller set",
            activity_id=context.activity_id,
        )
        return Error(call_id, error_info(exc, context.activity_id, development_mode=False))
    access_log(context, "cancelled", started)
    return None


class Dispatcher:
    """Runs calls against a manager's impls and turns outcomes into replies."""

    __slots__ = ("_compatible", "manager")

    def __init__(self, manager: RpcManager) -> None:
        self.manager = manager
        # (interface, client version) -> compatible: the version rule is pure,
        # so each pair is parsed and compared once (the first 1,024 pairs).
        self._compatible: dict[tuple[str, str], bool] = {}

    def prepare(self, call: Call, *, session_id: str | None = None) -> PreparedCall:
        """Check a call and build its RequestContext.

        Args:
            call: The decoded call.
            session_id: The connection's session, used when the call carries none.

        Raises:
            NotFound, IncompatibleVersion, InvalidRequest: the call cannot run;
                the error carries the call's activity_id.
        """
        ctx = call.ctx
        activity_id = ctx.activity_id or new_activity_id()
        try:
            registration = self.manager.lookup(call.iface)
            if registration is None:
                raise NotFound(
                    f"this backend does not serve {call.iface}",
                    details={"interface": call.iface},
                )
            key = (call.iface, call.ver)
            compatible = self._compatible.get(key)
            if compatible is None:
                try:
                    parse_version(call.ver)
                except ValueError as exc:
                    raise InvalidRequest(str(exc), details={"field": "ver"}) from None
                compatible = is_version_compatible(registration.info.version, call.ver)
                if len(self._compatible) < _VERSIONS_REMEMBERED:
                    self._compatible[key] = compatible
            if not compatible:
                raise IncompatibleVersion(
                    compatibility_advice(call.iface, registration.info.version, call.ver),
                    details={
                        "interface": call.iface,
                        "backend_version": registration.info.version,
                        "client_version": call.ver,
                    },
                )
            # Looked up in the operation table only: a name that is not a declared
            # operation (`__init__`, `_private`, an attribute) is never getattr'd.
            operation = registration.operations.get(call.op)
            if operation is None:
                raise NotFound(
                    f"{call.iface} has no operation {call.op!r}",
                    details={"interface": call.iface, "operation": call.op},
                )
            args = operation.decode_args(call.args)
        except TetherError as exc:
            exc.activity_id = activity_id
            raise
        deadline = None
        if call.timeout_ms is not None:
            deadline = trio.current_time() + call.timeout_ms / 1000
        context = RequestContext(
            activity_id=activity_id,
            session_id=ctx.session_id or session_id,
            application_id=ctx.application_id,
            application_version=ctx.application_version,
            authorization=ctx.authorization,
            deadline=deadline,
            operation=operation.qualname,
            metadata=ctx.metadata,
            traceparent=ctx.traceparent,
        )
        return PreparedCall(call.id, operation, registration.handlers[call.op], args, context)

    def error_reply(
        self, call_id: int | None, exc: BaseException, activity_id: str | None
    ) -> Error:
        """The `error` reply for an exception raised while preparing or running a call."""
        return Error(
            call_id, error_info(exc, activity_id, development_mode=self.manager.development_mode)
        )

    async def run(self, prepared: PreparedCall) -> Result | Error:
        """Run a prepared call in the current task and return its reply.

        Must be awaited in a task whose context is `prepared.context`, inside a
        cancel scope that the transport keeps for this call: the transport sets
        the call's deadline on it and cancels it when the caller goes away. When
        that scope interrupts the call, `trio.Cancelled` propagates from here and
        the transport asks `interrupted` for the reply.

        Returns:
            The reply: a result, or the error the impl raised, mapped to its
            code (DESIGN.md section 5).
        """
        context = prepared.context
        started = prepared.started = access_clock()
        reply: Result | Error
        # `report_progress` in the impl (and the tasks it starts) finds its call here.
        reporting = reporting_call.set(prepared)
        try:
            own = self.manager.interceptors
            if own or INSTALLED.server:
                value = await self._intercepted(prepared, server_chain(own))
            else:
                if self.manager.authorize is not None:
                    await self._authorize(context)
                if prepared.stream is None:
                    value = await prepared.handler(*prepared.args)
                else:
                    value = await prepared.stream.run(prepared.handler, prepared.args)
            reply = Result(prepared.id, prepared.operation.encode_result(value))
        except BaseException as raised:
            failed = failure_reply(
                prepared.id,
                raised,
                context,
                development_mode=self.manager.development_mode,
                log_internal=not _heard_of_the_close(prepared, raised),
            )
            if failed is None:
                raise  # trio.Cancelled, KeyboardInterrupt: not the impl's answer
            reply = failed
        finally:
            reporting_call.reset(reporting)
        if started:
            access_log(context, reply.error.code if isinstance(reply, Error) else "ok", started)
        return reply

    async def _intercepted(self, prepared: PreparedCall, chain: tuple[Interceptor, ...]) -> Any:
        """Run a prepared call's authorization and impl inside the interceptors.

        What an interceptor changes takes effect: a context becomes the impl's
        current one (so its downstream calls carry it), arguments are the impl's.
        """
        context = prepared.context
        operation = prepared.operation
        stream = prepared.stream
        kind = stream_kind(operation) if stream is not None else None
        if stream is not None:
            stream.messages = StreamMessages()
        registration = self.manager.lookup(operation.interface_name)
        call = CallInfo(
            "server",
            "rpc",
            operation.interface_name,
            registration.info.version if registration is not None else None,
            operation.name,
            tuple(prepared.args),
            context,
            stream=kind,
            peer=prepared.peer,
            messages=stream.messages if stream is not None else None,
        )

        async def innermost(call: CallInfo) -> Any:
            return await run_in_context(call, context, lambda: self._authorized(prepared, call))

        return await run_chain(chain, call, innermost)

    async def _authorized(self, prepared: PreparedCall, call: CallInfo) -> Any:
        if self.manager.authorize is not None:
            await self._authorize(call.context)
        args = list(call.args)
        if prepared.stream is None:
            return await prepared.handler(*args)
        return await prepared.stream.run(prepared.handler, args)

    async def run_in(
        self,
        prepared: PreparedCall,
        scope: trio.CancelScope,
        on_yield: Callable[..., object],
        *args: Any,
    ) -> Result | Error:
        """`run` as a transport's task does it: under `scope`, in the call's context.

        The call's deadline is set on `scope` for the run (and taken off again
        after, so a scope reused by the next call starts without it), and
        `on_yield(*args)` is called once, just before the call first waits: a
        call that never waits pays for nothing the transport would set up then
        (a watcher task, handing its reading over to another task).
        """
        deadline = prepared.context.deadline
        if deadline is not None:
            scope.deadline = deadline
        try:
            with using(prepared.context):
                return await run_until_it_yields(self.run(prepared), on_yield, *args)
        finally:
            if deadline is not None and not scope.cancel_called:
                scope.deadline = math.inf

    async def _authorize(self, context: RequestContext) -> None:
        """Run the manager's hook; a refusal is marked as this step's (`AUTHORIZE_REFUSAL`).

        The mark tells a client that nothing ran, so that it may send the
        request again with a refreshed credential (`_credentials`).
        """
        assert self.manager.authorize is not None
        key, value = AUTHORIZE_REFUSAL
        try:
            allowed = await self.manager.authorize(context)
        except Unauthorized as exc:
            exc.details.setdefault(key, value)
            raise
        if not allowed:
            raise Unauthorized(
                f"{context.operation} refused by the authorization hook",
                details={key: value},
            )

    def interrupted(self, prepared: PreparedCall) -> Error | None:
        """The reply for a call whose cancel scope interrupted it.

        Returns:
            `deadline-exceeded` when the call's deadline has passed; None when
            the caller cancelled it (nobody waits for a reply then).
        """
        return interrupted_reply(prepared.id, prepared.context, prepared.started)


def _heard_of_the_close(prepared: PreparedCall, raised: BaseException) -> bool:
    """Whether an impl raised the close of its connection, from its stream argument.

    Not an error of the impl's own: the session is ending, and nobody reads
    the reply.
    """
    stream = prepared.stream
    return stream is not None and stream.inflow is not None and stream.inflow.error is raised


def access_clock() -> float:
    """When a request starts, for `access_log`: 0.0 when the access log is off (no clock read)."""
    return time.perf_counter() if _access.isEnabledFor(logging.INFO) else 0.0


def access_log(context: RequestContext, outcome: str, started: float) -> None:
    """One line per request; `started` is 0.0 when INFO was off at the start, -1.0 if unknown.

    The request's fields go on the record explicitly: the line may be written
    after the request's context was left (a call its caller cancelled).
    """
    access_line(
        context.operation or "-",
        outcome,
        started,
        activity_id=context.activity_id,
        session_id=context.session_id,
        application_id=context.application_id,
    )


def access_line(
    operation: str,
    outcome: str,
    started: float,
    *,
    activity_id: str | None,
    session_id: str | None,
    application_id: str | None,
) -> None:
    """The access line of one request: `<operation> <outcome> <duration>ms`.

    The record carries `activity_id`, `session_id`, `application_id` and
    `operation` (as `ContextFilter` names them), `outcome` and `duration_ms`
    (None when unknown). `started` is as for `access_log`.
    """
    if not started or not _access.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "activity_id": activity_id,
        "session_id": session_id,
        "application_id": application_id,
        "operation": operation,
        "outcome": outcome,
        "duration_ms": None,
    }
    if started < 0:
        _access.info("%s %s", operation, outcome, extra=fields)
    else:
        elapsed = fields["duration_ms"] = (time.perf_counter() - started) * 1000
        _access.info("%s %s %.2fms", operation, outcome, elapsed, extra=fields)
