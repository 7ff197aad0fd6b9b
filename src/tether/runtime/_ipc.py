"""IPC: one frontend paired with one backend for the life of a session.

Both ends of a session run the same engine, `_Peer`: after the `hello` /
`welcome` handshake either side may `invoke` a method of a channel the other
serves and await the reply, `notify` the other side one-way, and `cancel` an
invoke it made. A message carries no context but an optional ActivityId: the
session is the context.

Tasks. A session owns three kinds of task in its nursery: the reader (routes
replies, starts one task per incoming invoke, queues incoming notifications), a
delivery task (runs notification listeners one at a time, in order), and a
writer (sends queued outgoing messages in order). When the session ends every
task it started is cancelled and awaited, waiting callers on both sides fail
with `ConnectionClosed`, and handlers and listeners get the close reason.

Back-pressure. A backend's notifications wait in a per-session queue that the
writer drains; sending one returns at once while the queue has room. When
`max_pending_notifications` are waiting, the sender waits for room; if none
opens within `slow_frontend_timeout` the frontend has stopped reading, and the
session is closed with the reason "frontend too slow". So backend memory stays
bounded, a burst from a fast producer to a healthy frontend is only slowed
down, and a stuck frontend is dropped. On the receiving side, listeners that
fall behind stop the reader once `max_pending_notifications` are waiting,
which is how a slow listener becomes a slow frontend.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import itertools
import logging
import math
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast, overload

import trio

from .. import contexts
from ..contexts import RequestContext, new_activity_id
from ._channels import (
    IpcHandler,
    IpcInterface,
    NotificationHandler,
    NotificationInterface,
    channel_operations,
    require_channel,
)
from ._client import error_from_info
from ._codec import CONVERTER
from ._connection import _CANCEL_SEND_TIMEOUT, _abort_park, _Pending, exchange_hello
from ._dispatch import (
    access_clock,
    access_log,
    encode_reply,
    error_info,
    failure_reply,
    interrupted_reply,
    send_reply,
)
from ._errors import (
    ConnectionClosed,
    IncompatibleVersion,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TetherError,
    Unavailable,
)
from ._interfaces import Operation, unimplemented
from ._protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Error,
    Hello,
    Invoke,
    Notify,
    Result,
    Welcome,
    check_hello,
    decode,
    encode,
)
from ._stream import MessageStream
from ._util import check_positive_int, open_service_nursery, timeout_ms_left
from ._versions import compatibility_advice, is_version_compatible

__all__ = [
    "DEFAULT_MAX_PENDING_NOTIFICATIONS",
    "DEFAULT_SLOW_FRONTEND_TIMEOUT",
    "BackendIpc",
    "FrontendIpc",
    "IpcSession",
    "Listener",
    "current_session",
    "open_ipc_connection",
    "serve_ipc_session",
]

C = TypeVar("C", bound=IpcInterface)
N = TypeVar("N", bound=NotificationInterface)
H = TypeVar("H", bound=IpcHandler)

#: A raw listener: called with the method name and the (JSON) arguments.
Listener = Callable[..., Awaitable[None] | None]

_log = logging.getLogger("tether.ipc")
_access = logging.getLogger("tether.access")

#: Default bound of notifications waiting, per session and direction.
DEFAULT_MAX_PENDING_NOTIFICATIONS = 1024
#: Default time a full notification queue may stay full before the session is
#: closed as "frontend too slow".
DEFAULT_SLOW_FRONTEND_TIMEOUT = 5.0
#: After the other side left, how long notifications that already arrived may
#: take to reach their listeners before the session is torn down regardless.
DRAIN_GRACE = 5.0

_current_session: contextvars.ContextVar[IpcSession | None] = contextvars.ContextVar(
    "tether_ipc_session", default=None
)


def current_session() -> IpcSession:
    """Return the IPC session of the frontend being served.

    Available in an `IpcHandler` method, a listener on the backend, and any
    task they start.

    Raises:
        RuntimeError: called outside a backend's IPC session.
    """
    session = _current_session.get()
    if session is None:
        raise RuntimeError(
            "tether.current_session() is only available on a backend, inside an IpcHandler "
            "method, a listener, or a task started from one"
        )
    return session


class _Served:
    """A channel one side serves: its declaration, its method table and the handler."""

    __slots__ = ("channel", "instance", "operations", "owned")

    def __init__(self, channel: type[IpcInterface], instance: Any, *, owned: bool) -> None:
        self.channel = channel
        self.instance = instance
        self.operations = channel_operations(channel)
        self.owned = owned  # made for this session: told when it ends


class _Queued:
    """An outgoing message waiting for the writer."""

    __slots__ = ("data", "error", "notification", "sent")

    def __init__(self, data: bytes, sent: trio.Event | None, *, notification: bool) -> None:
        self.data = data
        self.sent = sent  # set when written, for a sender that waits
        self.notification = notification
        self.error: TetherError | None = None

    def done(self, error: TetherError | None = None) -> None:
        self.error = error
        if self.sent is not None:
            self.sent.set()


class _Peer:
    """One end of an IPC session; the same engine on the frontend and the backend."""

    def __init__(
        self,
        stream: MessageStream,
        *,
        side: str,
        session_id: str,
        application_id: str | None,
        application_version: str | None,
        served: dict[str, _Served],
        listeners: dict[str, list[Listener]],
        max_pending_notifications: int,
        max_in_flight: int,
        development_mode: bool,
        slow_frontend_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
    ) -> None:
        self.stream = stream
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
        self.max_in_flight = max_in_flight
        self.development_mode = development_mode
        self.session: IpcSession | None = None
        self.token = trio.lowlevel.current_trio_token()
        self.pending: dict[int, _Pending] = {}
        self.calls: dict[int, trio.CancelScope] = {}
        self.closed_reason: str | None = None
        #: The WebSocket close code the session ended with, when it had one.
        self.close_code: int | None = None
        self.closed = trio.Event()
        self.ids = itertools.count(1)
        self.outbox: deque[_Queued] = deque()
        self.queued_notifications = 0
        self.writing = False
        self.writer_lot = trio.lowlevel.ParkingLot()
        self.room_lot = trio.lowlevel.ParkingLot()  # senders waiting for queue room
        # Notifications received, waiting for the delivery task.
        self.inbox: deque[Notify] = deque()
        self.inbox_closed = False
        self.deliver_lot = trio.lowlevel.ParkingLot()  # the delivery task, inbox empty
        self.reader_lot = trio.lowlevel.ParkingLot()  # the reader, inbox full
        self.nursery: trio.Nursery | None = None  # invokes and session tasks
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
                    async with trio.open_nursery() as nursery:
                        self.nursery = nursery
                        nursery.start_soon(self._write_loop)
                        task_status.started()
                        await self._read_loop()
                        # The other side is gone: stop the invokes and tasks
                        # it started; notifications that already arrived are
                        # still delivered, in order.
                        nursery.cancel_scope.cancel()
                    self.inbox_closed = True
                    self.deliver_lot.unpark_all()
                    session.cancel_scope.deadline = trio.current_time() + DRAIN_GRACE
        finally:
            self._mark_closed(f"the {self.side} left the session")
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
        for waiter in self.pending.values():
            if waiter.reply is None:
                waiter.reply = ConnectionClosed(reason, reason=reason, close_code=close_code)
                waiter.wake()
        error = self.closed_error(None)
        while self.outbox:
            self.outbox.popleft().done(error)
        self.queued_notifications = 0
        self.room_lot.unpark_all()
        self.reader_lot.unpark_all()

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

    async def _read_loop(self) -> None:
        stream = self.stream
        while True:
            try:
                data = await stream.receive_message()
            except ConnectionClosed as exc:
                self._mark_closed(
                    exc.reason or f"the {self.other} closed the session", exc.close_code
                )
                return
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
                        "the %s reported a session error: %s", self.other, reply.error.message
                    )
                    continue
                waiter = self.pending.get(reply.id)
                if waiter is not None and waiter.reply is None:
                    waiter.reply = reply
                    waiter.wake()
            elif kind is Invoke:
                self._start(cast(Invoke, message))
            elif kind is Notify:
                self.inbox.append(cast(Notify, message))
                if self.deliver_lot:
                    self.deliver_lot.unpark()
                full = len(self.inbox) >= self.max_pending_notifications
                if full and not await self._wait_for_listeners():
                    return
            elif kind is Cancel:
                scope = self.calls.get(cast(Cancel, message).id)
                if scope is not None:
                    scope.cancel()
            else:
                self._refuse(
                    None,
                    InvalidRequest(
                        f"{kind.__name__!r} messages are not part of an open IPC session"
                    ),
                    None,
                )

    async def _wait_for_listeners(self) -> bool:
        """The listeners are `max_pending_notifications` behind: stop reading for a while.

        Not reading is how back-pressure reaches the other side. But a reply
        may be behind the notifications, and a listener (or anyone) waiting for
        it would wait forever: so while a call of ours awaits its reply, the
        reader goes on, holding up to `_overdraft(bound)` more notifications.
        Listeners that make no room for `slow_frontend_timeout` are stuck: the
        session is closed.

        Returns:
            False when the session was closed.
        """
        bound = self.max_pending_notifications
        hard_bound = bound + _overdraft(bound)
        with trio.move_on_after(self.slow_frontend_timeout):
            while len(self.inbox) >= bound and self.closed_reason is None:
                if self.pending and len(self.inbox) < hard_bound:
                    return True
                await self.reader_lot.park()
                # Woken by room in the inbox, or by a call that now awaits a reply.
        if self.closed_reason is not None:
            return False
        if len(self.inbox) < bound:
            return True
        reason = f"{self.side} too slow"
        _log.warning(
            "closing IPC session %s: %s (its listeners have %d notifications waiting)",
            self.session_id,
            reason,
            len(self.inbox),
        )
        self.close(reason)
        return False

    def _refuse(self, call_id: int | None, exc: TetherError, activity_id: str | None) -> None:
        """Answer a message that cannot be served, without waiting (the reader calls it)."""
        info = error_info(exc, activity_id, development_mode=self.development_mode)
        # When the other side never reads its refusals, _post closes the
        # session; the reader then just stops.
        with contextlib.suppress(ConnectionClosed):
            self._post(encode_reply(Error(call_id, info)), notification=False)

    # -- serving invokes ---------------------------------------------------------

    def _start(self, invoke: Invoke) -> None:
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
            if invoke.id in self.calls:
                raise InvalidRequest(f"invoke id {invoke.id} is already in flight")
            if len(self.calls) >= self.max_in_flight:
                raise Unavailable(
                    f"this session already has {self.max_in_flight} invokes in flight: wait "
                    "for some to finish",
                    retry_after=1,
                    overloaded=True,
                )
            args = op.decode_args(invoke.args)
        except TetherError as exc:
            self._refuse(invoke.id, exc, activity_id)
            return
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
        )
        scope = trio.CancelScope(deadline=math.inf if deadline is None else deadline)
        self.calls[invoke.id] = scope
        handler = getattr(served.instance, op.name)
        assert self.nursery is not None
        # Set before spawning: Trio copies the context into the new task.
        with contexts.using(context):
            self.nursery.start_soon(self._serve, invoke.id, op, handler, args, context, scope)

    async def _serve(
        self,
        call_id: int,
        op: Operation,
        handler: Callable[..., Awaitable[Any]],
        args: list[Any],
        context: RequestContext,
        scope: trio.CancelScope,
    ) -> None:
        started = access_clock()
        reply: Result | Error | None = None
        try:
            with scope:
                try:
                    value = await handler(*args)
                    reply = Result(call_id, op.encode_result(value))
                except BaseException as raised:
                    # Once the session is closed, its end is the news, not this.
                    reply = failure_reply(
                        call_id,
                        raised,
                        context,
                        development_mode=self.development_mode,
                        log_internal=self.closed_reason is None,
                    )
                    if reply is None:
                        raise  # trio.Cancelled, KeyboardInterrupt: not the handler's answer
        finally:
            del self.calls[call_id]
        if reply is None:
            # The scope stopped it: the caller cancelled, or the deadline passed.
            reply = interrupted_reply(call_id, context, started)
        elif started:
            access_log(context, reply.error.code if type(reply) is Error else "ok", started)
        if reply is not None:
            await self._reply(reply)

    async def _reply(self, reply: Result | Error) -> None:
        await send_reply(self.send, reply, self.stream.max_message_size)

    # -- delivering notifications -----------------------------------------------

    async def _deliver_loop(self) -> None:
        inbox = self.inbox
        while True:
            while not inbox:
                if self.inbox_closed:
                    return
                await self.deliver_lot.park()
            notify = inbox.popleft()
            if self.reader_lot:
                self.reader_lot.unpark()
            await self._deliver(notify)

    async def _deliver(self, notify: Notify) -> None:
        context = RequestContext(
            activity_id=notify.activity_id or new_activity_id(),
            session_id=self.session_id,
            application_id=self.application_id,
            application_version=self.application_version,
            operation=f"{notify.channel}.{notify.method}",
        )
        with contexts.using(context):
            handled = False
            served = self.served.get(notify.channel)
            if served is not None:
                op = served.operations.get(notify.method)
                if op is not None:
                    # A one-way message to a served channel: run the method, drop its result.
                    handled = True
                    await self._run_listener(
                        op, getattr(served.instance, op.name), notify.args, context
                    )
            for handler in tuple(self.notification_handlers.get(notify.channel, ())):
                op = channel_operations(type(handler)).get(notify.method)
                if op is None:
                    _log.warning(
                        "%s has no notification %r; ignored",
                        type(handler).__qualname__,
                        notify.method,
                    )
                    continue
                handled = True
                await self._run_listener(op, getattr(handler, op.name), notify.args, context)
            for listener in tuple(self.listeners.get(notify.channel, ())):
                handled = True
                await self._run_listener(None, listener, [notify.method, *notify.args], context)
            if not handled:
                _log.debug("no listener for %s.%s", notify.channel, notify.method)

    async def _run_listener(
        self,
        op: Operation | None,
        listener: Callable[..., Any],
        args: list[Any],
        context: RequestContext,
    ) -> None:
        try:
            if op is not None:
                args = op.decode_args(args)
            result = listener(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A listener's failure is its own: the session and the other
            # listeners go on. The record carries the sender's ActivityId.
            _log.exception(
                "listener %s for %s raised (activity %s)",
                getattr(listener, "__qualname__", repr(listener)),
                context.operation,
                context.activity_id,
            )

    # -- writing ---------------------------------------------------------------

    async def _queue_notification(self, data: bytes) -> None:
        """Queue a notification for the writer; wait (boundedly) while the queue is full."""
        if self.queued_notifications >= self.max_pending_notifications:
            with trio.move_on_after(self.slow_frontend_timeout):
                while (
                    self.queued_notifications >= self.max_pending_notifications
                    and self.closed_reason is None
                ):
                    await self.room_lot.park()
            if self.queued_notifications >= self.max_pending_notifications:
                if self.closed_reason is None:
                    reason = f"{self.other} too slow"
                    _log.warning(
                        "closing IPC session %s: %s (%d notifications waited %.1fs for it)",
                        self.session_id,
                        reason,
                        self.queued_notifications,
                        self.slow_frontend_timeout,
                    )
                    self.close(reason)
                raise self.closed_error(None)
        self._post(data, notification=True)

    def _post(self, data: bytes, *, notification: bool) -> None:
        """Queue a message for the writer without waiting (notifications, refusals)."""
        if self.closed_reason is not None:
            raise self.closed_error(None)
        if notification:
            self.queued_notifications += 1
        elif len(self.outbox) >= self.max_pending_notifications + self.max_in_flight:
            # Refusals pile up only when the other side sends and never reads.
            self.close(f"{self.other} too slow")
            raise self.closed_error(None)
        self.outbox.append(_Queued(data, None, notification=notification))
        self.writer_lot.unpark_all()

    async def send(self, data: bytes) -> None:
        """Send one message in order with everything queued before it; waits for room.

        Raises:
            ConnectionClosed: the session is closed.
            PayloadTooLarge: over the stream's limit; nothing was sent.
        """
        if self.closed_reason is not None:
            raise self.closed_error(None)
        if len(data) > self.stream.max_message_size:
            raise PayloadTooLarge(
                f"message of {len(data)} bytes is over the session's limit of "
                f"{self.stream.max_message_size}"
            )
        if not self.outbox and not self.writing:
            # Nothing queued ahead of it: send it from here, no task switch.
            self.writing = True
            try:
                await self.stream.send_message(data)
            except ConnectionClosed as exc:
                self._mark_closed(
                    exc.reason or f"the {self.other} closed the session", exc.close_code
                )
                raise self.closed_error(None) from None
            finally:
                self.writing = False
                if self.outbox:
                    self.writer_lot.unpark_all()
            return
        item = _Queued(data, trio.Event(), notification=False)
        self.outbox.append(item)
        self.writer_lot.unpark_all()
        assert item.sent is not None
        await item.sent.wait()
        if item.error is not None:
            raise item.error

    async def _write_loop(self) -> None:
        outbox = self.outbox
        while True:
            while not outbox or self.writing:
                await self.writer_lot.park()
            item = outbox.popleft()
            if item.notification:
                self.queued_notifications -= 1
                if self.room_lot:
                    self.room_lot.unpark()
            self.writing = True
            try:
                await self.stream.send_message(item.data)
            except ConnectionClosed as exc:
                self._mark_closed(
                    exc.reason or f"the {self.other} closed the session", exc.close_code
                )
                item.done(self.closed_error(None))
                return
            except PayloadTooLarge as exc:
                _log.error("dropping an outgoing message: %s", exc)
                item.done(exc)
                continue
            except BaseException:
                # Cancelled mid-send (the session is ending): whoever waits for
                # this message must hear so, as for the messages still queued.
                item.done(self.closed_error(None))
                raise
            finally:
                self.writing = False
            item.done()

    # -- calling the other side ------------------------------------------------

    async def invoke(self, channel: str, method: str, args: list[Any]) -> Any:
        """Invoke `channel.method` on the other side; return the reply's JSON value."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self.check_run()
        context = contexts.current()
        activity_id = context.activity_id if context is not None else None
        if self.closed_reason is not None:
            raise self.closed_error(activity_id)
        call_id = next(self.ids)
        try:
            data = encode(Invoke(call_id, channel, method, args, activity_id, timeout_ms_left()))
        except TypeError as exc:
            raise InvalidRequest(
                f"the arguments of {channel}.{method} cannot be sent: {exc}",
                activity_id=activity_id,
            ) from None
        pending = _Pending(trio.lowlevel.current_task())
        self.pending[call_id] = pending
        if self.reader_lot:
            self.reader_lot.unpark()  # a reader held by slow listeners must read our reply
        try:
            await self.send(data)
            while pending.reply is None:
                pending.parked = True
                await trio.lowlevel.wait_task_rescheduled(lambda _: _abort_park(pending))
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
        raise error_from_info(reply.error, activity_id)

    async def _send_cancel(self, call_id: int) -> None:
        # Shielded so our own cancellation does not stop the message, bounded
        # so a stuck peer cannot hold us.
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = _CANCEL_SEND_TIMEOUT
            with contextlib.suppress(TetherError):
                await self.send(encode(Cancel(call_id)))

    async def notify(self, channel: str, method: str, args: list[Any]) -> None:
        """Send a one-way message. A backend queues it; a frontend waits for room."""
        self.check_run()
        context = contexts.current()
        activity_id = context.activity_id if context is not None else None
        try:
            data = encode(Notify(channel, method, args, activity_id))
        except TypeError as exc:
            raise InvalidRequest(
                f"the arguments of {channel}.{method} cannot be sent: {exc}",
                activity_id=activity_id,
            ) from None
        if self.side == "backend":
            if len(data) > self.stream.max_message_size:
                raise PayloadTooLarge(
                    f"notification {channel}.{method} encodes to {len(data)} bytes, over the "
                    f"session's limit of {self.stream.max_message_size}",
                    activity_id=activity_id,
                )
            await self._queue_notification(data)
        else:
            await self.send(data)


def _overdraft(bound: int) -> int:
    """Notifications a reader may hold past its bound while a call awaits its reply."""
    return max(bound, 1024)


# ---------------------------------------------------------------------------
# Typed proxies


def _plain(args: tuple[Any, ...]) -> list[Any]:
    """Unstructure untyped arguments by their runtime types (for the untyped calls)."""
    return [CONVERTER.unstructure(arg) for arg in args]


def _invoker(channel: type[IpcInterface], op: Operation) -> Any:
    async def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        values = op.encode_args(args, kwargs)
        value = await self._tether_peer.invoke(channel.channel_name, op.name, values)
        return op.decode_result(value)

    return _named(forward, channel, op, "Proxy")


def _notifier(channel: type[NotificationInterface], op: Operation) -> Any:
    async def forward(self: Any, *args: Any, **kwargs: Any) -> None:
        values = op.encode_args(args, kwargs)
        await self._tether_peer.notify(channel.channel_name, op.name, values)

    return _named(forward, channel, op, "Notifier")


def _named(forward: Any, channel: type, op: Operation, suffix: str) -> Any:
    forward.__name__ = op.name
    forward.__qualname__ = f"{channel.__qualname__}{suffix}.{op.name}"
    forward.__doc__ = op.function.__doc__
    forward.__signature__ = op.signature
    return forward


_proxy_classes: dict[tuple[type, str], type[Any]] = {}


def _make_proxy(channel: type[Any], peer: _Peer, kind: str) -> Any:
    key = (channel, kind)
    cls = _proxy_classes.get(key)
    if cls is None:
        make = _invoker if kind == "Proxy" else _notifier
        namespace: dict[str, Any] = {
            name: make(channel, op) for name, op in channel_operations(channel).items()
        }
        namespace["__slots__"] = ("_tether_peer",)
        namespace["__repr__"] = lambda self: (
            f"<{channel.__qualname__} {kind.lower()} on channel {channel.channel_name}>"
        )
        cls = type(f"{channel.__qualname__}{kind}", (channel,), namespace)
        _proxy_classes[key] = cls
    proxy = object.__new__(cls)
    proxy._tether_peer = peer
    return proxy


def _remover(table: dict[str, list[Any]], key: str, item: Any) -> Callable[[], None]:
    table.setdefault(key, []).append(item)

    def remove() -> None:
        items = table.get(key)
        if items is not None and item in items:
            items.remove(item)
            if not items:
                del table[key]

    return remove


def _check_listener(channel: object, fn: object) -> None:
    if not isinstance(channel, str) or not channel:
        raise TypeError(f"a channel name must be a non-empty string, got {channel!r}")
    if not callable(fn):
        raise TypeError(f"a listener must be callable, got {fn!r}")


# ---------------------------------------------------------------------------
# Backend


class IpcSession:
    """The backend's end of one paired session: its frontend, and how to reach it.

    `tether.current_session()` returns it inside a handler. Notifications and
    calls made through it reach this session's frontend only.
    """

    __slots__ = ("_peer",)

    def __init__(self, peer: _Peer) -> None:
        self._peer = peer

    def __repr__(self) -> str:
        state = "open" if self.is_open else f"closed: {self.closed_reason}"
        return f"<IpcSession {self.id} ({state})>"

    @property
    def id(self) -> str:
        """The session id (unguessable; made by the backend)."""
        return self._peer.session_id

    @property
    def application_id(self) -> str | None:
        """What the frontend said it is in its `hello`."""
        return self._peer.application_id

    @property
    def application_version(self) -> str | None:
        """The frontend application's version, from its `hello`."""
        return self._peer.application_version

    @property
    def is_open(self) -> bool:
        """True until the session ends."""
        return self._peer.closed_reason is None

    @property
    def closed_reason(self) -> str | None:
        """Why the session ended, or None while it is open."""
        return self._peer.closed_reason

    def notifier(self, channel: type[N]) -> N:
        """A typed sender of `channel`'s notifications to this session's frontend.

        Each call queues the message and returns at once while the session's
        queue has room; messages arrive in order. When `max_pending_notifications`
        are waiting, the call waits for room; if none opens within the
        backend's `slow_frontend_timeout`, the session is closed ("frontend too
        slow") and the call raises `ConnectionClosed`.

        Raises:
            TypeError: `channel` is not a NotificationInterface declaration.
        """
        require_channel(channel, NotificationInterface)
        return cast(N, _make_proxy(channel, self._peer, "Notifier"))

    def proxy(self, channel: type[C]) -> C:
        """A typed caller of a channel this session's frontend serves (`FrontendIpc.register`).

        Raises:
            TypeError: `channel` is not an IpcInterface declaration.
        """
        require_channel(channel, IpcInterface)
        return cast(C, _make_proxy(channel, self._peer, "Proxy"))

    async def send(self, channel: str, method: str, *args: Any) -> None:
        """Queue a one-way message to this session's frontend (untyped `notifier`).

        Raises:
            ConnectionClosed: the session is closed, or this send closed it (too slow).
            PayloadTooLarge: the message is over the session's size limit.
        """
        await self._peer.notify(channel, method, _plain(args))

    async def call_frontend(self, channel: str, method: str, *args: Any) -> Any:
        """Invoke a method the frontend serves and return its JSON result (untyped `proxy`)."""
        return await self._peer.invoke(channel, method, _plain(args))

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run `fn(*args)` as a task owned by this session: cancelled when it ends.

        The task runs in the caller's context (its ActivityId) and sees this
        session as `current_session()`. An exception it raises is logged.
        """
        self._peer.check_run()
        nursery = self._peer.nursery
        if nursery is None or not self.is_open:
            raise self._peer.closed_error(None)
        nursery.start_soon(_logged, self._peer, fn, args)

    def close(self, reason: str = "closed by the backend") -> None:
        """End the session: cancel its tasks, and tell the frontend `reason`."""
        self._peer.close(reason)

    async def wait_closed(self) -> str:
        """Wait until the session has ended and torn down; return why it ended.

        Raises:
            RuntimeError: the session is still open, and this is another Trio
                run than the session's (its events cannot be awaited here).
        """
        return await self._peer.wait_closed()


async def _logged(peer: _Peer, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    # Its own session, whoever started it (another session's handler, say).
    _current_session.set(peer.session)
    try:
        await fn(*args)
    except Exception as exc:
        if isinstance(exc, ConnectionClosed) and peer.closed_reason is not None:
            # Ended by its own session's end: that is the news, not this.
            _log.debug("a session task (%s) ended with its session: %s", fn, exc.reason)
        else:
            _log.exception("a session task (%s) raised", getattr(fn, "__qualname__", fn))


class _Registration:
    __slots__ = ("channel", "factory", "shared")

    def __init__(self, channel: type[IpcInterface], handler: Any) -> None:
        self.channel = channel
        self.shared = None if isinstance(handler, type) else handler
        self.factory = handler if isinstance(handler, type) else None


def _handler_channel(handler: Any) -> type[IpcInterface]:
    cls = handler if isinstance(handler, type) else type(handler)
    if not (
        isinstance(cls, type) and issubclass(cls, IpcHandler) and issubclass(cls, IpcInterface)
    ):
        raise TypeError(
            f"{cls!r} is not an IpcHandler: declare it as "
            "'class MyHandler(tether.IpcHandler, MyIpcInterface)'"
        )
    channel = cls.__tether_channel__
    assert channel is not None
    missing = unimplemented(cls, channel.__tether_operations__)
    if missing:
        raise TypeError(
            f"{cls.__qualname__} does not implement {', '.join(missing)} of channel "
            f"{channel.channel_name}"
        )
    return channel


class BackendIpc:
    """The backend's IPC: the channels it serves and the sessions of its frontends.

    Register `IpcHandler` classes, then serve it over a transport
    (`memory.connect_ipc(backend_ipc)`, and later HTTP or WebSocket). Each
    connected frontend gets its own `IpcSession`.

    Args:
        max_pending_notifications: Notifications a session may have waiting for
            a slow frontend before it is closed with "frontend too slow"; also
            how many one-way messages from the frontend may wait for listeners.
        max_in_flight: Invokes one session may have running at once; more are
            refused with `Unavailable` (too-many-requests).
        max_sessions: Sessions open at once; more are refused with `Unavailable`.
        slow_frontend_timeout: Seconds a sender may wait for room in a full
            notification queue; then the session is closed ("frontend too slow").
        development_mode: Send tracebacks of unexpected handler errors to the
            frontend (never in production).
    """

    def __init__(
        self,
        *,
        max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
        max_in_flight: int = 1024,
        max_sessions: int = 1024,
        slow_frontend_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
        development_mode: bool = False,
    ) -> None:
        check_positive_int("max_pending_notifications", max_pending_notifications)
        check_positive_int("max_in_flight", max_in_flight)
        check_positive_int("max_sessions", max_sessions)
        self.max_pending_notifications = max_pending_notifications
        self.max_in_flight = max_in_flight
        if not isinstance(slow_frontend_timeout, (int, float)) or not slow_frontend_timeout > 0:
            raise ValueError(
                f"slow_frontend_timeout must be a positive number of seconds, got "
                f"{slow_frontend_timeout!r}"
            )
        self.max_sessions = max_sessions
        self.slow_frontend_timeout = float(slow_frontend_timeout)
        self.development_mode = development_mode
        self._registrations: dict[str, _Registration] = {}
        self._listeners: dict[str, list[Listener]] = {}
        # Sessions may run in another thread (the in-process transport's
        # thread=True), so the table is guarded.
        self._lock = threading.Lock()
        self._sessions: dict[str, IpcSession] = {}
        self._opening = 0  # places reserved by sessions being opened

    @overload
    def register(self, handler: type[H]) -> type[H]: ...
    @overload
    def register(self, handler: H) -> H: ...

    def register(self, handler: type[H] | H) -> type[H] | H:
        """Serve a channel with `handler`; usable as a class decorator.

        Args:
            handler: An `IpcHandler` subclass (instantiated with no arguments for
                each session) or an instance (shared by every session).

        Returns:
            `handler`, unchanged.

        Raises:
            TypeError: `handler` is not an IpcHandler of an IpcInterface, leaves a
                method unimplemented, or its channel is already registered.
        """
        channel = _handler_channel(handler)
        name = channel.channel_name
        if name in self._registrations:
            raise TypeError(f"channel {name!r} is already registered; unregister it first")
        self._registrations[name] = _Registration(channel, handler)
        return handler

    def unregister(self, channel: type[IpcInterface] | str) -> None:
        """Stop serving `channel` to new sessions; open sessions keep it."""
        name = channel if isinstance(channel, str) else channel.channel_name
        self._registrations.pop(name, None)

    @property
    def channels(self) -> dict[str, str]:
        """The channels served: name -> version."""
        return {name: reg.channel.version for name, reg in self._registrations.items()}

    @property
    def sessions(self) -> tuple[IpcSession, ...]:
        """The sessions open now."""
        with self._lock:
            return tuple(self._sessions.values())

    @property
    def is_valid(self) -> bool:
        """True when called inside an open session (so `send` has a frontend to reach)."""
        session = _current_session.get()
        return session is not None and session.is_open

    def add_listener(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Call `listener(method, *args)` for each one-way message a frontend sends on `channel`.

        Args:
            channel: The channel name.
            listener: A function or coroutine function; it gets the method name
                and the JSON arguments. `current_session()` is the sender's.

        Returns:
            A function that removes the listener.
        """
        _check_listener(channel, listener)
        return _remover(self._listeners, channel, listener)

    async def send(self, channel: str, method: str, *args: Any) -> None:
        """Send a one-way message to the frontend of the current session.

        Raises:
            RuntimeError: not inside a session (see `current_session`).
            ConnectionClosed: the session is closed.
        """
        await current_session().send(channel, method, *args)

    def _reserve(self) -> None:
        """Hold a place for a session being opened, or refuse it (one step, under the lock)."""
        with self._lock:
            if len(self._sessions) + self._opening >= self.max_sessions:
                raise Unavailable(
                    f"this backend already has {self.max_sessions} IPC sessions open: try "
                    "again later",
                    retry_after=1,
                    overloaded=True,
                )
            self._opening += 1

    def _release(self) -> None:
        """Give back a place reserved for a session that did not open."""
        with self._lock:
            self._opening -= 1

    def _add(self, session: IpcSession) -> None:
        """Turn a reserved place into an open session."""
        with self._lock:
            self._opening -= 1
            self._sessions[session.id] = session

    def _remove(self, session: IpcSession) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)


async def serve_ipc_session(backend: BackendIpc, stream: MessageStream) -> None:
    """Serve one frontend's IPC session over `stream` until either side ends it.

    Expects `hello` (mode "ipc") first, checks every channel it lists against
    what `backend` serves, answers `welcome`, then runs the session. When it
    ends, every task it started has been cancelled and awaited, and the stream
    is closed with the reason.
    """
    # A session starts with no request context: in-process, this task (or the
    # backend's thread) was spawned from the frontend's, and the frontend's
    # ActivityId and credential must not reach the backend that way.
    with contexts.using(None):
        await _serve_ipc_session(backend, stream)


async def _serve_ipc_session(backend: BackendIpc, stream: MessageStream) -> None:
    try:
        accepted = await _accept(backend, stream)
        if accepted is None:
            return
        hello, served = accepted
        peer = _Peer(
            stream,
            side="backend",
            session_id=str(uuid.uuid4()),
            application_id=hello.application_id,
            application_version=hello.application_version,
            served=served,
            listeners=backend._listeners,
            max_pending_notifications=backend.max_pending_notifications,
            max_in_flight=backend.max_in_flight,
            development_mode=backend.development_mode,
            slow_frontend_timeout=backend.slow_frontend_timeout,
        )
        session = IpcSession(peer)
        peer.session = session
        # Listed before the frontend hears `welcome`, so that it is there the
        # moment the frontend can act.
        backend._add(session)
        token = _current_session.set(session)
        try:
            # What was checked and made for this session, even if the backend's
            # registrations changed since.
            channels = {name: entry.channel.version for name, entry in served.items()}
            welcome = Welcome(PROTOCOL_VERSION, peer.session_id, channels)
            try:
                await stream.send_message(encode(welcome))
            except BaseException as exc:
                # Ended before the session opened: its handlers were made, so
                # they are told, as they would be at any other end.
                if isinstance(exc, ConnectionClosed):
                    peer._call_on_close("the frontend left before the session opened")
                    return
                peer._call_on_close("the backend stopped before the session opened")
                raise
            await peer.run()
        finally:
            _current_session.reset(token)
            backend._remove(session)
    finally:
        await stream.aclose()


async def _accept(
    backend: BackendIpc, stream: MessageStream
) -> tuple[Hello, dict[str, _Served]] | None:
    try:
        data = await stream.receive_message()
    except ConnectionClosed:
        return None
    try:
        hello = check_hello(decode(data), "ipc")
        registrations = dict(backend._registrations)
        versions = {name: reg.channel.version for name, reg in registrations.items()}
        for name, version in hello.channels.items():
            _check_served(
                versions, name, version, advice=": register an IpcHandler for it on the backend"
            )
        backend._reserve()
        served: dict[str, _Served] = {}
        for name, registration in registrations.items():
            instance = registration.shared
            if registration.factory is not None:
                try:
                    instance = registration.factory()
                except BaseException as exc:
                    backend._release()
                    if not isinstance(exc, Exception):
                        raise
                    _log.exception("creating %s for a new session failed", registration.factory)
                    for made in served.values():  # the handlers made so far are told
                        if made.owned:
                            with contextlib.suppress(Exception):
                                made.instance.on_close("the session could not be opened")
                    raise Unavailable(
                        f"the backend could not start a session: creating the handler of "
                        f"{name!r} failed ({type(exc).__name__})"
                    ) from None
            served[name] = _Served(
                registration.channel, instance, owned=registration.factory is not None
            )
    except TetherError as exc:
        info = error_info(exc, None, development_mode=False)
        with contextlib.suppress(ConnectionClosed):
            await stream.send_message(encode(Error(None, info)))
        return None
    return hello, served


# ---------------------------------------------------------------------------
# Frontend


def _check_served(
    channels: Mapping[str, str], name: str, version: str | None, *, advice: str = ""
) -> None:
    """Check a channel against what the backend serves (a version of None: any).

    Raises:
        NotFound: it does not serve `name` (the message ends with `advice`).
        IncompatibleVersion: it serves a version incompatible with `version`.
    """
    served = channels.get(name)
    if served is None:
        available = ", ".join(sorted(channels)) or "none"
        raise NotFound(
            f"backend does not serve channel {name!r} (it serves {available}){advice}",
            details={"channel": name},
        )
    if version is not None and not is_version_compatible(served, version):
        raise IncompatibleVersion(
            compatibility_advice(f"channel {name!r}", served, version),
            details={"channel": name, "backend_version": served, "client_version": version},
        )


class FrontendIpc:
    """The frontend's end of a paired session with one backend.

    Made by a transport's `connect_ipc`; valid for the `async with` block.
    Call the backend with `proxy(Channel)` (typed) or `call_backend` (untyped),
    receive its notifications with `add_notification_handler` (typed) or
    `add_listener` (untyped), and serve channels the backend calls with
    `register`.
    """

    __slots__ = ("_channels", "_peer")

    def __init__(self, peer: _Peer, channels: Mapping[str, str]) -> None:
        self._peer = peer
        self._channels = dict(channels)

    def __repr__(self) -> str:
        state = "open" if self.is_valid else f"closed: {self.closed_reason}"
        return f"<FrontendIpc session {self.session_id} ({state})>"

    @property
    def session_id(self) -> str:
        """The session's id, made by the backend."""
        return self._peer.session_id

    @property
    def channels(self) -> Mapping[str, str]:
        """The channels the backend serves: name -> version."""
        return self._channels

    @property
    def is_valid(self) -> bool:
        """True while the session is open."""
        return self._peer.closed_reason is None

    @property
    def closed_reason(self) -> str | None:
        """Why the session ended (`"frontend too slow"`, ...), or None while open."""
        return self._peer.closed_reason

    def proxy(self, channel: type[C]) -> C:
        """A typed caller of `channel` on the backend (mypy checks the calls).

        Raises:
            TypeError: `channel` is not an IpcInterface declaration.
            NotFound: the backend does not serve it.
            IncompatibleVersion: it serves an incompatible version.
        """
        require_channel(channel, IpcInterface)
        _check_served(self._channels, channel.channel_name, channel.version)
        return cast(C, _make_proxy(channel, self._peer, "Proxy"))

    def notifier(self, channel: type[N]) -> N:
        """A typed sender of one-way messages of `channel` to the backend."""
        require_channel(channel, NotificationInterface)
        return cast(N, _make_proxy(channel, self._peer, "Notifier"))

    async def call_backend(self, channel: str, method: str, *args: Any) -> Any:
        """Invoke `channel.method(*args)` on the backend and return its result as JSON.

        The untyped form of `proxy`: arguments are converted by their runtime
        types, and the result is returned as decoded JSON (dicts, lists, ...).

        Raises:
            NotFound: the backend does not serve `channel`, or it has no `method`.
            InvalidRequest: the arguments do not fit the method (details say which).
            ConnectionClosed: the session ended before the reply came.
            TetherError: any other error the handler raised, by its code.
        """
        _check_served(self._channels, channel, None)
        return await self._peer.invoke(channel, method, _plain(args))

    async def send(self, channel: str, method: str, *args: Any) -> None:
        """Send a one-way message to the backend; waits only while the backend is behind.

        Raises:
            ConnectionClosed: the session is closed.
        """
        await self._peer.notify(channel, method, _plain(args))

    def add_listener(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Call `listener(method, *args)` for every notification on `channel`.

        Returns:
            A function that removes the listener.
        """
        _check_listener(channel, listener)
        return _remover(self._peer.listeners, channel, listener)

    def add_notification_handler(self, handler: NotificationHandler) -> Callable[[], None]:
        """Deliver the notifications of the handler's channel to its methods, typed.

        Returns:
            A function that removes the handler.

        Raises:
            TypeError: `handler` is not a NotificationHandler instance.
        """
        if not (
            isinstance(handler, NotificationHandler) and isinstance(handler, NotificationInterface)
        ):
            raise TypeError(
                f"{handler!r} is not a NotificationHandler: pass an instance of "
                "'class MyListener(tether.NotificationHandler, MyEvents)'"
            )
        return _remover(self._peer.notification_handlers, handler.channel_name, handler)

    def register(self, handler: IpcHandler | type[IpcHandler]) -> Callable[[], None]:
        """Serve a channel on the frontend, for the backend to call (`IpcSession.proxy`).

        Args:
            handler: An IpcHandler instance, or a class (instantiated once).

        Returns:
            A function that stops serving it.
        """
        channel = _handler_channel(handler)
        name = channel.channel_name
        served = self._peer.served
        if name in served:
            raise TypeError(f"channel {name!r} is already served by this frontend")
        instance = handler() if isinstance(handler, type) else handler
        entry = _Served(channel, instance, owned=True)
        served[name] = entry

        def remove() -> None:
            if served.get(name) is entry:
                del served[name]

        return remove

    async def wait_closed(self) -> str:
        """Wait until the session has ended; return why."""
        return await self._peer.wait_closed()

    async def aclose(self) -> None:
        """End the session; calls still waiting fail with ConnectionClosed."""
        self._peer.close("closed by the frontend")
        await self._peer.wait_closed()


@asynccontextmanager
async def open_ipc_connection(
    stream: MessageStream,
    *,
    channels: Iterable[type[IpcInterface]] = (),
    application_id: str | None = None,
    application_version: str | None = None,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
) -> AsyncIterator[FrontendIpc]:
    """Run the IPC protocol as the frontend over `stream` for the block.

    Sends `hello` with the channels this frontend will use; the backend checks
    each one before the session opens.

    Args:
        stream: The connection to the backend.
        channels: The channels to check at connect.
        application_id: Who the frontend is; the backend's contexts carry it.
        application_version: That application's version.
        max_pending_notifications: Notifications that may wait for this
            frontend's listeners before it stops reading.
        slow_listener_timeout: Seconds the listeners may leave that queue full
            (making no room at all) before the session is closed as "frontend
            too slow".

    Raises:
        NotFound: the backend does not serve one of `channels`.
        IncompatibleVersion: a channel's (or the protocol's) version is incompatible.
        ConnectError: the backend did not complete the handshake.
    """
    wanted = list(channels)
    for channel in wanted:
        require_channel(channel, IpcInterface)
    check_positive_int("max_pending_notifications", max_pending_notifications)
    if not isinstance(slow_listener_timeout, (int, float)) or not slow_listener_timeout > 0:
        raise ValueError(
            f"slow_listener_timeout must be a positive number of seconds, got "
            f"{slow_listener_timeout!r}"
        )
    hello = Hello(
        PROTOCOL_VERSION,
        None,
        application_id,
        application_version,
        {channel.channel_name: channel.version for channel in wanted},
        mode="ipc",
    )
    try:
        reply = await exchange_hello(stream, hello)
        for channel in wanted:  # the backend checked them; a second look costs nothing
            _check_served(reply.channels, channel.channel_name, channel.version)
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise
    peer = _Peer(
        stream,
        side="frontend",
        session_id=reply.session_id,
        application_id=application_id,
        application_version=application_version,
        served={},
        listeners={},
        max_pending_notifications=max_pending_notifications,
        max_in_flight=1024,
        development_mode=False,
        slow_frontend_timeout=slow_listener_timeout,
    )
    frontend = FrontendIpc(peer, reply.channels)
    async with open_service_nursery() as nursery:
        await nursery.start(peer.run)
        try:
            yield frontend
        finally:
            peer.close("closed by the frontend")
