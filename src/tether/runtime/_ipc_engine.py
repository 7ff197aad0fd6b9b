"""The IPC engine: one end of a paired session, the same on the frontend and the backend.

Both ends of a session run the same engine, `Peer`: after the `hello` /
`welcome` handshake either side may `invoke` a method of a channel the other
serves and await the reply, `notify` the other side one-way, and `cancel` an
invoke it made. A message carries no context but an optional ActivityId: the
session is the context.

Reading and running invokes. The incoming side is the same engine as an RPC
backend session's (`_workers.Workers`): one task at a time holds the reader
role. A worker that reads an invoke runs its first step itself, on a reused
cancel scope, and hands the reading to a spare worker only if the method
yields. A caller waiting for its reply takes the role when it is vacant and
reads its own reply (a worker that woke a caller with its reply leaves it the
role); it hands replies for other callers to them, and an invoke from the
other side, with the role, to a worker. So a sequential same-loop invoke costs
two scheduler batches, as an RPC call does; and, since a caller in a loop of
invokes leaves the role lazily (`_ipc_handover`), two task steps.

Tasks. Besides those workers, a session owns a delivery task (runs
notification listeners one at a time, in order: `_ipc_inbox`) and a writer
(sends queued outgoing messages in order: `_ipc_outbox`). When the session
ends every task it started is cancelled and awaited, waiting callers on both
sides fail with `ConnectionClosed`, and handlers and listeners get the close
reason.

Back-pressure. A backend's notifications wait in a per-session queue that the
writer drains; sending one returns at once while the queue has room. When
`max_pending_notifications` are waiting, or the next one would take the queue
past `max_pending_bytes` (a larger one still goes in alone), the sender waits
for room; if none opens within `slow_frontend_timeout` the frontend has
stopped reading, and the session is closed with the reason "frontend too
slow". So backend memory stays bounded, a burst from a fast producer to a
healthy frontend is only slowed down, and a stuck frontend is dropped. On the
receiving side, listeners that fall behind stop the reading once
`max_pending_notifications` or `max_pending_bytes` are waiting, which is how a
slow listener becomes a slow frontend. Either bound costs an integer add and
compare per message. When the session ends, both queues are emptied at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import trio

from .. import contexts
from ..contexts import RequestContext, new_activity_id
from ..contexts._metadata import EMPTY_METADATA
from ._channels import NotificationHandler
from ._client import error_for_reply
from ._connection import _CANCEL_SEND_TIMEOUT, _abort_park, _Pending
from ._dispatch import (
    PreparedCall,
    access_clock,
    access_log,
    encode_reply,
    error_info,
    failure_reply,
    interrupted_reply,
    too_large_reply,
)
from ._drain import SHUTTING_DOWN, shutting_down_error
from ._errors import (
    ConnectionClosed,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TetherError,
    Unavailable,
)
from ._interceptors import INSTALLED, Interceptor, client_chain, server_chain
from ._ipc_handover import Handover
from ._ipc_inbox import DEFAULT_MAX_PENDING_BYTES, Inbox, Listener, Served
from ._ipc_interceptors import invoke_intercepted, notify_intercepted, serve_intercepted
from ._ipc_outbox import Outbox
from ._ipc_streams import Streams
from ._limits import encode_arguments
from ._protocol import (
    Cancel,
    Credit,
    End,
    Error,
    Invoke,
    Item,
    Notify,
    Ready,
    Result,
    Send,
    decode,
    encode,
    message_size,
)
from ._state import ConnectionState, StateWatch
from ._stream import MessageStream
from ._streams import DEFAULT_STREAM_WINDOW, CalleeStream, StreamWindow
from ._util import run_until_it_yields, timeout_ms_left
from ._workers import VACATE, Vacate, Workers

__all__ = [
    "DEFAULT_MAX_PENDING_BYTES",
    "DEFAULT_MAX_PENDING_NOTIFICATIONS",
    "DEFAULT_SLOW_FRONTEND_TIMEOUT",
    "DRAIN_GRACE",
    "Listener",
    "Peer",
    "Served",
]

if TYPE_CHECKING:
    from ._ipc_backend import IpcSession


_log = logging.getLogger("tether.ipc")
#: Default bound of notifications waiting, per session and direction.
DEFAULT_MAX_PENDING_NOTIFICATIONS = 1024
#: Default time a full notification queue may stay full before the session is
#: closed as "frontend too slow".
DEFAULT_SLOW_FRONTEND_TIMEOUT = 5.0
#: After the other side left, how long notifications that already arrived may
#: take to reach their listeners before the session is torn down regardless.
DRAIN_GRACE = 5.0


class Peer(Inbox, Outbox, Handover, Streams, Workers[PreparedCall]):
    """One end of an IPC session; the same engine on the frontend and the backend."""

    def __init__(
        self,
        stream: MessageStream,
        *,
        side: str,
        session_id: str,
        application_id: str | None,
        application_version: str | None,
        served: dict[str, Served],
        listeners: dict[str, list[Listener]],
        max_pending_notifications: int,
        max_in_flight: int,
        development_mode: bool,
        slow_frontend_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
        interceptors: tuple[Interceptor, ...] = (),
    ) -> None:
        self.stream = stream
        #: This end's own interceptors: around what it sends ("client") and
        #: receives ("server"), inside the process-wide ones.
        self.interceptors = interceptors
        self.slow_frontend_timeout = slow_frontend_timeout
        self.side = side  # "frontend" or "backend": whose end this is
        self.other = "backend" if side == "frontend" else "frontend"
        self.session_id = session_id
        self.application_id = application_id
        self.application_version = application_version
        self.served = served
        self.listeners = listeners
        self.notification_handlers: dict[str, list[NotificationHandler]] = {}
        self.max_pending_notifications = max_pending_notifications
        self.max_pending_bytes = max_pending_bytes
        self.max_in_flight = max_in_flight
        self.development_mode = development_mode
        self.session: IpcSession | None = None
        self.token = trio.lowlevel.current_trio_token()
        self.pending: dict[int, _Pending] = {}
        # Invokes from the other side are read and run by `Workers`; their
        # replies being sent (`sending`) count against `max_in_flight`.
        self.init_workers(None, max_in_flight)
        # The stream's end was read (or the session ended): nobody reads again.
        self.reading_over = False
        self.init_handover()
        self.closed_reason: str | None = None
        #: Connected / reconnecting / closed, for a frontend's UI (`FrontendIpc.state`).
        self.state_watch = StateWatch()
        #: The WebSocket close code the session ended with, when it had one.
        self.close_code: int | None = None
        self.closed = trio.Event()
        self.ids = itertools.count(1)
        self.init_outbox()
        self.init_inbox()
        self.init_streams(stream_window)
        self.scope: trio.CancelScope | None = None  # the whole session

    # -- life cycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the session until either side closes it; then tear everything down."""
        try:
            with trio.CancelScope() as self.scope:
                if self.closed_reason is not None:
                    # Closed before it ran (between hello and welcome).
                    self.scope.cancel()
                async with trio.open_nursery() as session:
                    session.start_soon(self._deliver_loop)
                    try:
                        async with trio.open_nursery() as nursery:
                            # Invokes, the workers that read and run them, and
                            # session tasks. When reading ends (the other side
                            # is gone), `read_next` cancels it: notifications
                            # that already arrived are still delivered, in order.
                            self.nursery = nursery
                            nursery.start_soon(self._write_loop)
                            self.start_reading()
                            task_status.started()
                    finally:
                        self.reading_over = True  # no worker can start now
                    self.inbox_closed = True
                    self.deliver_lot.unpark_all()
                    session.cancel_scope.deadline = trio.current_time() + DRAIN_GRACE
        finally:
            self.reading_over = True
            self._mark_closed(f"the {self.side} left the session")
            # Whatever is still queued either way is dropped now, not when the
            # last reference to this session goes (a handler may keep one).
            self.inbox.clear()
            self.inbox_bytes = 0
            reason = self.closed_reason or "closed"
            try:
                with trio.CancelScope(shield=True):
                    await self.stream.aclose(reason)
                self._call_on_close(reason)
            finally:
                self.closed.set()

    def close(self, reason: str) -> None:
        """End the session now: cancel its tasks and close the stream with `reason`.

        Safe to call from any thread: from outside the session's own Trio run
        the close is handed to that run.
        """
        try:
            here = trio.lowlevel.current_trio_token()
        except RuntimeError:
            here = None
        if here is not self.token:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self.close, reason)
            return
        self._mark_closed(reason)
        if self.scope is not None:
            self.scope.cancel()

    def _mark_closed(self, reason: str, close_code: int | None = None) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self.close_code = close_code
        self.state_watch.set(ConnectionState.CLOSED, reason)
        for waiter in self.pending.values():
            if waiter.reply is None:
                waiter.reply = ConnectionClosed(reason, reason=reason, close_code=close_code)
                waiter.wake()
        # Before the session's tasks are cancelled: a handler reading its
        # argument stream hears why.
        self.close_streams(reason, close_code)
        error = self.closed_error(None)
        while self.outbox:
            self.outbox.popleft().done(error)
        self.queued_notifications = 0
        self.queued_bytes = 0
        self.room_lot.unpark_all()
        self.reader_lot.unpark_all()
        self.delivered_lot.unpark_all()

    def _call_on_close(self, reason: str) -> None:
        # Handlers made for this session (a shared one serves on, and is not told).
        hooks = [s.instance.on_close for s in self.served.values() if s.owned]
        for handlers in self.notification_handlers.values():
            hooks += [handler.on_close for handler in handlers]
        for hook in hooks:
            try:
                hook(reason)
            except Exception:
                _log.exception("on_close of %r raised", getattr(hook, "__self__", hook))

    def closed_error(self, activity_id: str | None) -> ConnectionClosed:
        reason = self.closed_reason or "closed"
        return ConnectionClosed(
            f"IPC session {self.session_id} closed: {reason}",
            reason=reason,
            close_code=self.close_code,
            activity_id=activity_id,
        )

    async def wait_closed(self) -> str:
        """Wait until the session has ended and torn down; return why.

        A session that has ended answers from any Trio run; an open one only
        from its own (its events cannot be awaited from another).
        """
        if not self.closed.is_set():
            self.check_run()
        await self.closed.wait()
        return self.closed_reason or "closed"

    def check_run(self) -> None:
        if trio.lowlevel.current_trio_token() is not self.token:
            # Trio objects cannot cross runs: waiting here would hang forever.
            raise RuntimeError(
                f"this IPC session belongs to another Trio run (another thread): use it from "
                f"the {self.side}'s own loop"
            )

    # -- reading ---------------------------------------------------------------

    async def read_next(self, own: _Pending | None = None) -> PreparedCall | Error | Vacate | None:
        """Read until an invoke is ready to run; route replies, notifications and cancels.

        A worker reads with `own` None, a caller waiting for its reply with its
        `_Pending`. Refusals are queued here without waiting (`_refuse`), so
        this never returns an `error` to send.

        Returns:
            An invoke to run; or `VACATE`: for a caller, its reply came; for a
            worker, it woke a caller with its reply, which will take the reading
            over when it calls again (the worker rests); or None when reading
            ends (the other side left, or the session was closed): then the
            invokes and tasks the session started are cancelled.
        """
        stream = self.stream
        while True:
            try:
                data = await stream.receive_message()
            except ConnectionClosed as exc:
                self._mark_closed(
                    exc.reason or f"the {self.other} closed the session", exc.close_code
                )
                break
            try:
                message = decode(data)
            except InvalidRequest as exc:
                self._refuse(exc.details.get("id"), exc, None)
                continue
            kind = type(message)
            if kind is Result or kind is Error:
                reply = cast(Result | Error, message)
                if reply.id is None:
                    assert isinstance(reply, Error)
                    _log.warning(
                        "the %s reported a session error: %.300r", self.other, reply.error.message
                    )
                    continue
                waiter = self.pending.get(reply.id)
                if waiter is not None and waiter.reply is None:
                    waiter.reply = reply
                    if waiter is own:
                        return VACATE  # and `invoke` waits for the notifications
                    if self.inbox:
                        # The notifications that came first run before the caller
                        # resumes (a stream need not yield between messages).
                        # Not cancellable: the reply is read, and must reach it.
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    if waiter.parked:
                        waiter.wake()
                        if own is None:
                            return VACATE
                elif self.streams and self.route_final(reply, own):
                    return VACATE
            elif kind is Invoke:
                call = self._prepare(cast(Invoke, message))
                if call is not None:
                    return call
            elif kind is Notify:
                size = message_size(data)
                self.inbox.append((cast(Notify, message), size))
                self.inbox_bytes += size
                self.notes_read += 1
                if self.deliver_lot:
                    self.deliver_lot.unpark()
                if (
                    len(self.inbox) >= self.max_pending_notifications
                    or self.inbox_bytes >= self.max_pending_bytes
                ) and not await self._wait_for_listeners():
                    break
            elif kind is Cancel:
                scope = self.calls.get(cast(Cancel, message).id)
                if scope is not None:
                    scope.cancel()
            elif kind is Item:
                if self.route_item(cast(Item, message), message_size(data), own):
                    return VACATE
            elif kind is Send or kind is End or kind is Credit:
                self.route_callee(cast(Send | End | Credit, message), message_size(data))
            elif kind is Ready:
                if self.route_ready(cast(Ready, message), own):
                    return VACATE
            else:
                self._refuse(
                    None,
                    InvalidRequest(
                        f"{kind.__name__!r} messages are not part of an open IPC session"
                    ),
                    None,
                )
        self.reading_over = True
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()
        return None

    def _refuse(self, call_id: int | None, exc: TetherError, activity_id: str | None) -> None:
        """Answer a message that cannot be served, without waiting (the reader calls it)."""
        info = error_info(exc, activity_id, development_mode=self.development_mode)
        # When the other side never reads its refusals, _post closes the
        # session; the reader then just stops.
        with contextlib.suppress(ConnectionClosed):
            self._post(encode_reply(Error(call_id, info)), notification=False)

    # -- serving invokes ---------------------------------------------------------

    def _prepare(self, invoke: Invoke) -> PreparedCall | None:
        """Check an invoke; return it ready to run, or refuse it (None)."""
        activity_id = invoke.activity_id or new_activity_id()
        try:
            served = self.served.get(invoke.channel)
            if served is None:
                available = ", ".join(sorted(self.served)) or "none"
                raise NotFound(
                    f"the {self.side} does not serve channel {invoke.channel!r} (it serves "
                    f"{available})",
                    details={"channel": invoke.channel},
                )
            # Looked up in the method table only: a name that is not a declared
            # method (`__init__`, `_private`, `on_close`) is never getattr'd.
            op = served.operations.get(invoke.method)
            if op is None:
                raise NotFound(
                    f"channel {invoke.channel!r} has no method {invoke.method!r}",
                    details={"channel": invoke.channel, "method": invoke.method},
                )
            if invoke.stream is False and (op.stream_result or op.stream_param is not None):
                raise InvalidRequest(
                    f"{op.qualname} is a stream method, and this invoke takes one value "
                    "(call_backend and call_frontend carry one value each way): call it "
                    f"through the typed proxy, `proxy({served.channel.__name__})`, opening "
                    "a stream result with `async with tether.open_stream(...)`",
                    details={"channel": invoke.channel, "method": invoke.method},
                )
            if self.draining:
                raise shutting_down_error()
            if invoke.id in self.calls or (
                self.callee_streams and invoke.id in self.callee_streams
            ):
                raise InvalidRequest(f"invoke id {invoke.id} is already in flight")
            # A reply waiting for the other side to read counts: one that reads
            # nothing cannot make the session hold a task and a reply per invoke.
            if len(self.calls) + self.sending >= self.max_in_flight:
                raise Unavailable(
                    f"this session already has {self.max_in_flight} invokes in flight: wait "
                    "for some to finish",
                    retry_after=1,
                    overloaded=True,
                )
            args = op.decode_args(invoke.args)
        except TetherError as exc:
            self._refuse(invoke.id, exc, activity_id)
            return None
        deadline = None
        if invoke.timeout_ms is not None:
            deadline = trio.current_time() + invoke.timeout_ms / 1000
        context = RequestContext(
            activity_id=activity_id,
            session_id=self.session_id,
            application_id=self.application_id,
            application_version=self.application_version,
            deadline=deadline,
            operation=op.qualname,
            metadata=invoke.metadata,
            traceparent=invoke.traceparent,
        )
        call = PreparedCall(invoke.id, op, getattr(served.instance, op.name), args, context)
        if op.stream_result or op.stream_param is not None:
            call.stream = self.callee_stream(invoke.id, op)
        return call

    async def serve_call(
        self,
        call: PreparedCall,
        scope: trio.CancelScope,
        on_yield: Callable[..., object],
        *args: Any,
    ) -> Result | Error:
        deadline = call.context.deadline
        if deadline is not None:
            scope.deadline = deadline
        try:
            with contexts.using(call.context):
                return await run_until_it_yields(self._serve(call), on_yield, *args)
        finally:
            # The scope serves the worker's next invoke: without this deadline.
            if deadline is not None and not scope.cancel_called:
                scope.deadline = math.inf

    async def _serve(self, call: PreparedCall) -> Result | Error:
        started = call.started = access_clock()
        reply: Result | Error
        try:
            own = self.interceptors
            if own or INSTALLED.server:
                value = await serve_intercepted(self, server_chain(own), call)
            elif call.stream is None:
                value = await call.handler(*call.args)
            else:
                value = await self.serve_stream(call, call.stream)
            reply = Result(call.id, call.operation.encode_result(value))
        except BaseException as raised:
            # Once the session is closed, its end is the news, not this.
            failed = failure_reply(
                call.id,
                raised,
                call.context,
                development_mode=self.development_mode,
                log_internal=self.closed_reason is None,
            )
            if failed is None:
                raise  # trio.Cancelled, KeyboardInterrupt: not the handler's answer
            reply = failed
        if started:
            access_log(call.context, reply.error.code if type(reply) is Error else "ok", started)
        return reply

    async def serve_stream(self, call: PreparedCall, stream: CalleeStream) -> Any:
        try:
            return await stream.run(call.handler, call.args)
        finally:
            # Messages for it from now on are late: dropped.
            if self.callee_streams.get(call.id) is stream:
                del self.callee_streams[call.id]

    def interrupted(self, call: PreparedCall) -> Error | None:
        # The scope stopped it: the caller cancelled, or the deadline passed,
        # or the reader failed its stream (the caller broke the stream's rules).
        stream = call.stream
        if stream is not None and stream.failure is not None:
            activity_id = call.context.activity_id
            info = error_info(stream.failure, activity_id, development_mode=self.development_mode)
            return Error(call.id, info)
        return interrupted_reply(call.id, call.context, call.started)

    async def send_reply(self, reply: Result | Error) -> None:
        # `_dispatch.send_reply`, inline: this runs for every invoke served.
        self.sending += 1
        try:
            data = encode_reply(reply, self.stream.binary)
            try:
                await self.send(data)
            except PayloadTooLarge:
                # Over the limit, nothing was sent: the invoke gets the error.
                with contextlib.suppress(ConnectionClosed):
                    await self.send(
                        too_large_reply(reply.id, message_size(data), self.stream.max_message_size)
                    )
            except ConnectionClosed:
                pass  # the session is ending: nobody waits for the reply
        finally:
            self.sending -= 1
            if self.draining:
                self.check_drained()

    def end_drained(self) -> None:
        # The server drained this session: it ends, telling the frontend why.
        self.close(SHUTTING_DOWN)

    # -- calling the other side ------------------------------------------------

    async def invoke(
        self,
        channel: str,
        method: str,
        args: list[Any],
        names: tuple[str, ...] | None = None,
        *,
        intercepted: bool = False,
    ) -> Any:
        """Invoke `channel.method` on the other side; return the reply's JSON value.

        Args:
            channel: The channel's name.
            method: The method's name.
            args: The unstructured arguments.
            names: The parameters' names when a typed proxy checked `args`;
                None for untyped arguments, which are checked here.
            intercepted: The interceptors have run (this is their innermost step).

        Raises:
            InvalidRequest: an argument cannot be sent; nothing was.
        """
        if not intercepted:
            own = self.interceptors
            if own or INSTALLED.client:
                return await invoke_intercepted(
                    self, client_chain(own), channel, method, args, names
                )
        await trio.lowlevel.checkpoint_if_cancelled()
        if trio.lowlevel.current_trio_token() is not self.token:
            self.check_run()
        context = contexts.current()
        activity_id = context.activity_id if context is not None else None
        if self.closed_reason is not None:
            raise self.closed_error(activity_id)
        call_id = next(self.ids)
        # An untyped invoke (no `names`) says it takes one value: a stream
        # method refuses it at once rather than wait for credit forever.
        data = encode_arguments(
            Invoke(
                call_id,
                channel,
                method,
                args,
                activity_id,
                timeout_ms_left(),
                False if names is None else None,
                context.traceparent if context is not None else None,
                context.metadata if context is not None else EMPTY_METADATA,
            ),
            names,
            binary=self.stream.binary,
        )
        pending = _Pending(trio.lowlevel.current_task())
        self.pending[call_id] = pending
        if self.inbox and self.reader_lot:
            # A reader held by slow listeners (only with notifications
            # waiting) must read our reply.
            self.reader_lot.unpark()
        try:
            await self.send(data)
            while pending.reply is None:
                if self.vacant and not self.handed and self.closed_reason is None:
                    # Take the vacant reader role and read until our reply
                    # comes (inline, not a method: this is every invoke's path).
                    self.vacant = False
                    if self.left_role:
                        self.took_reading()
                    item: PreparedCall | Error | Vacate | None = None
                    try:
                        while pending.reply is None:
                            item = await self.read_next(pending)
                            if item is None or item is VACATE:
                                break
                            if type(item) is PreparedCall:
                                # An invoke from the other side: a worker runs it,
                                # and reads on; this caller waits as below.
                                self.handed.append(item)
                                break
                    except BaseException:
                        # Cancelled while reading: the role goes on now, before
                        # any cancel is sent.
                        self.vacant = True
                        self._wake_reader()
                        raise
                    self.vacant = True
                    if type(item) is PreparedCall:
                        self._wake_reader()
                    elif pending.reply is not None and self.notes_begun < self.notes_read:
                        # Notifications read before the reply reach their listeners
                        # before the invoke returns, as when a reader task woke it.
                        self._wake_reader()
                        await self._wait_for_delivery(self.notes_read)
                else:
                    self.waited()
                    pending.parked = True
                    await trio.lowlevel.wait_task_rescheduled(lambda _: _abort_park(pending))
            if self.vacant:
                # It read its reply, or the reader that woke it left it the
                # reading: someone must take it, unless this task comes back
                # for it first (a caller's next invoke).
                self.leave_reading(
                    len(self.pending) == 1 and not self.handed and not self.parked_roles
                )
        except trio.Cancelled:
            if self.closed_reason is None and pending.reply is None:
                await self._send_cancel(call_id)
            raise
        except ConnectionClosed:
            raise self.closed_error(activity_id) from None
        except PayloadTooLarge as exc:
            exc.activity_id = activity_id
            raise
        finally:
            del self.pending[call_id]
        reply = pending.reply
        if type(reply) is Result:
            return reply.value
        if isinstance(reply, ConnectionClosed):
            raise self.closed_error(activity_id)
        assert type(reply) is Error
        raise await error_for_reply(reply.error, activity_id)

    def _wake_reader(self) -> None:
        """Wake a task to take the vacant reader role: a waiting caller, or a worker.

        A closed session is still read to the stream's end (what the other
        side sent before closing is delivered), by a worker.
        """
        if self.reading_over:
            return
        if not self.handed and self.closed_reason is None:
            if len(self.pending) > 1:
                for waiter in self.pending.values():
                    if waiter.parked and waiter.reply is None:
                        waiter.wake()
                        return
            if self.parked_roles and self.wake_parked_role():
                return
        if self.spares:
            trio.lowlevel.reschedule(self.spares.pop())
            return
        try:
            self.wake_worker()
        except RuntimeError:
            # The nursery closed (the session is being torn down, and its
            # run has not got to say so yet): nothing is read any more.
            self.reading_over = True

    async def _send_cancel(self, call_id: int) -> None:
        # Shielded so our own cancellation does not stop the message, bounded
        # so a stuck peer cannot hold us.
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = _CANCEL_SEND_TIMEOUT
            with contextlib.suppress(TetherError):
                await self.send(encode(Cancel(call_id)))

    async def notify(
        self,
        channel: str,
        method: str,
        args: list[Any],
        names: tuple[str, ...] | None = None,
        *,
        intercepted: bool = False,
    ) -> None:
        """Send a one-way message. A backend queues it; a frontend waits for room.

        `names` and `intercepted` as for `invoke`.
        """
        if not intercepted:
            own = self.interceptors
            if own or INSTALLED.client:
                await notify_intercepted(self, client_chain(own), channel, method, args, names)
                return
        self.check_run()
        context = contexts.current()
        activity_id = context.activity_id if context is not None else None
        data = encode_arguments(
            Notify(channel, method, args, activity_id), names, binary=self.stream.binary
        )
        if self.side == "backend":
            size = message_size(data)
            if size > self.stream.max_message_size:
                raise PayloadTooLarge(
                    f"notification {channel}.{method} encodes to {size} bytes, over the "
                    f"session's limit of {self.stream.max_message_size}",
                    activity_id=activity_id,
                )
            await self._queue_notification(data)
        else:
            await self.send(data)
