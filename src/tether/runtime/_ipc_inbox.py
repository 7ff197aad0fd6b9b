"""The receiving side of an IPC session's notifications: the inbox and its delivery task.

Whoever reads the session's stream (a worker, or a caller waiting for its
reply) puts each `notify` in the inbox without waiting; one delivery task per
session runs the listeners, one notification at a time, in order. Listeners
that fall behind stop the reading once `max_pending_notifications` or
`max_pending_bytes` are waiting (`_wait_for_listeners`), which is how a slow
listener becomes a slow frontend.
"""

from __future__ import annotations

import abc
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import trio

from .. import contexts
from ..contexts import RequestContext, new_activity_id
from ._channels import IpcInterface, NotificationHandler, channel_operations
from ._connection import _Pending
from ._errors import TetherError
from ._interceptors import INSTALLED, Interceptor, server_chain
from ._interfaces import Operation
from ._ipc_interceptors import deliver_intercepted
from ._protocol import Notify

if TYPE_CHECKING:
    from ._ipc_engine import Peer

__all__ = ["DEFAULT_MAX_PENDING_BYTES", "Inbox", "Listener", "Served"]

#: A raw listener: called with the method name and the (JSON) arguments.
Listener = Callable[..., Awaitable[None] | None]

_log = logging.getLogger("tether.ipc")
#: Default bound of the encoded bytes of waiting notifications (1 MiB).
DEFAULT_MAX_PENDING_BYTES = 1024 * 1024


class Served:
    """A channel one side serves: its declaration, its method table and the handler."""

    __slots__ = ("channel", "instance", "operations", "owned")

    def __init__(self, channel: type[IpcInterface], instance: Any, *, owned: bool) -> None:
        self.channel = channel
        self.instance = instance
        self.operations = channel_operations(channel)
        self.owned = owned  # made for this session: told when it ends


class Inbox(abc.ABC):
    """Notifications received and not yet delivered; a part of `Peer`."""

    # Set by Peer.
    side: str
    other: str
    interceptors: tuple[Interceptor, ...]
    session_id: str
    application_id: str | None
    application_version: str | None
    served: dict[str, Served]
    listeners: dict[str, list[Listener]]
    notification_handlers: dict[str, list[NotificationHandler]]
    pending: dict[int, _Pending]
    max_pending_notifications: int
    max_pending_bytes: int
    slow_frontend_timeout: float
    closed_reason: str | None

    @abc.abstractmethod
    def close(self, reason: str) -> None: ...

    def init_inbox(self) -> None:
        # Notifications received, waiting for the delivery task, with their sizes.
        self.inbox: deque[tuple[Notify, int]] = deque()
        self.inbox_bytes = 0
        self.inbox_closed = False
        self.deliver_lot = trio.lowlevel.ParkingLot()  # the delivery task, inbox empty
        self.reader_lot = trio.lowlevel.ParkingLot()  # the reader, inbox full
        # Notifications read, and taken by the delivery task, since the start;
        # callers whose reply came after some wait in `delivered_lot` for them.
        self.notes_read = 0
        self.notes_begun = 0
        self.in_listener = False  # the delivery task awaits a listener
        self.delivered_lot = trio.lowlevel.ParkingLot()

    async def _wait_for_listeners(self) -> bool:
        """The listeners are a bound behind (count or bytes): stop reading for a while.

        Not reading is how back-pressure reaches the other side. But a reply
        may be behind the notifications, and a listener (or anyone) waiting for
        it would wait forever: so while a call of ours awaits its reply, the
        reader goes on, holding up to `_overdraft(bound)` more notifications
        (and bytes). Listeners that make no room for `slow_frontend_timeout`
        are stuck: the session is closed.

        Returns:
            False when the session was closed.
        """
        bound = self.max_pending_notifications
        hard_bound = bound + _overdraft(bound)
        byte_bound = self.max_pending_bytes
        hard_byte_bound = byte_bound + max(byte_bound, DEFAULT_MAX_PENDING_BYTES)
        inbox = self.inbox
        with trio.move_on_after(self.slow_frontend_timeout):
            while (
                len(inbox) >= bound or self.inbox_bytes >= byte_bound
            ) and self.closed_reason is None:
                if self.pending and len(inbox) < hard_bound and self.inbox_bytes < hard_byte_bound:
                    return True
                await self.reader_lot.park()
                # Woken by room in the inbox, or by a call that now awaits a reply.
        if self.closed_reason is not None:
            return False
        if len(inbox) < bound and self.inbox_bytes < byte_bound:
            return True
        reason = f"{self.side} too slow"
        _log.warning(
            "closing IPC session %s: %s (its listeners have %d notifications, %d bytes, waiting)",
            self.session_id,
            reason,
            len(inbox),
            self.inbox_bytes,
        )
        self.close(reason)
        return False

    async def _wait_for_delivery(self, target: int) -> None:
        """Wait until the delivery task has taken the first `target` notifications.

        Also ends when it is held up in a listener that waits, or at close.
        """
        with trio.CancelScope(shield=True):  # the reply is here: the invoke returns it
            while self.notes_begun < target and not self.in_listener and self.closed_reason is None:
                await self.delivered_lot.park()

    async def _deliver_loop(self) -> None:
        inbox = self.inbox
        while True:
            while not inbox:
                if self.inbox_closed:
                    return
                await self.deliver_lot.park()
            notify, size = inbox.popleft()
            self.inbox_bytes -= size
            self.notes_begun += 1
            if self.reader_lot:
                self.reader_lot.unpark()
            if self.delivered_lot:
                # Woken now, they run after this step, which calls the listeners.
                self.delivered_lot.unpark_all()
            await self.deliver(notify)

    async def deliver(
        self, notify: Notify, context: RequestContext | None = None, *, intercepted: bool = False
    ) -> None:
        """Run the listeners of one notification, in its context.

        `context` and `intercepted` are given by the interceptors' innermost step.
        """
        if context is None:
            context = RequestContext(
                activity_id=notify.activity_id or new_activity_id(),
                session_id=self.session_id,
                application_id=self.application_id,
                application_version=self.application_version,
                operation=f"{notify.channel}.{notify.method}",
            )
        if not intercepted:
            own = self.interceptors
            if own or INSTALLED.server:
                await deliver_intercepted(cast("Peer", self), server_chain(own), notify, context)
                return
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
        if op is not None:
            try:
                args = op.decode_args(args)
            except TetherError as exc:
                # The sender's mistake, not the listener's failure: a line, no traceback.
                _log.warning(
                    "dropped %s from the %s (activity %s): %s",
                    context.operation,
                    self.other,
                    context.activity_id,
                    exc.message,
                )
                return
        try:
            result = listener(*args)
            if inspect.isawaitable(result):
                self.in_listener = True
                if self.delivered_lot:
                    self.delivered_lot.unpark_all()  # this one may take a while
                try:
                    await result
                finally:
                    self.in_listener = False
        except Exception:
            # A listener's failure is its own: the session and the other
            # listeners go on. The record carries the sender's ActivityId.
            _log.exception(
                "listener %s for %s raised (activity %s)",
                getattr(listener, "__qualname__", repr(listener)),
                context.operation,
                context.activity_id,
            )


def _overdraft(bound: int) -> int:
    """Notifications a reader may hold past its bound while a call awaits its reply."""
    return max(bound, 1024)
