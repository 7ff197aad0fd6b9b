"""The sending side of an IPC session: one queue, one writer task, and its bounds.

Messages are sent in order. A sender with nothing queued ahead of it sends
from its own task; otherwise its message waits in the outbox for the writer
task. A backend's notifications wait in the outbox without their sender
waiting, up to `max_pending_notifications` and `max_pending_bytes`; past
those the sender waits for room, and a queue that stays full for
`slow_frontend_timeout` closes the session as "frontend too slow".
"""

from __future__ import annotations

import abc
import logging
from collections import deque

import trio

from ._errors import ConnectionClosed, PayloadTooLarge, TetherError
from ._protocol import BinaryMessage, message_size
from ._stream import MessageStream

__all__ = ["Outbox"]

_log = logging.getLogger("tether.ipc")


class _Queued:
    """An outgoing message waiting for the writer."""

    __slots__ = ("data", "error", "notification", "sent")

    def __init__(
        self, data: bytes | BinaryMessage, sent: trio.Event | None, *, notification: bool
    ) -> None:
        self.data = data
        self.sent = sent  # set when written, for a sender that waits
        self.notification = notification
        self.error: TetherError | None = None

    def done(self, error: TetherError | None = None) -> None:
        self.error = error
        if self.sent is not None:
            self.sent.set()


class Outbox(abc.ABC):
    """Messages waiting to be sent, and the writer task; a part of `Peer`."""

    # Set by Peer.
    stream: MessageStream
    other: str
    session_id: str
    max_pending_notifications: int
    max_pending_bytes: int
    max_in_flight: int
    slow_frontend_timeout: float
    closed_reason: str | None

    @abc.abstractmethod
    def close(self, reason: str) -> None: ...

    @abc.abstractmethod
    def closed_error(self, activity_id: str | None) -> ConnectionClosed: ...

    @abc.abstractmethod
    def _mark_closed(self, reason: str, close_code: int | None = None) -> None: ...

    def init_outbox(self) -> None:
        self.outbox: deque[_Queued] = deque()
        self.queued_notifications = 0
        self.queued_bytes = 0  # of the queued notifications
        self.writing = False
        self.writer_lot = trio.lowlevel.ParkingLot()
        self.room_lot = trio.lowlevel.ParkingLot()  # senders waiting for queue room

    def _queue_full(self, size: int) -> bool:
        """No room for a notification of `size` bytes (one goes in alone, whatever its size)."""
        return self.queued_notifications >= self.max_pending_notifications or (
            self.queued_bytes + size > self.max_pending_bytes and self.queued_notifications > 0
        )

    async def _queue_notification(self, data: bytes | BinaryMessage) -> None:
        """Queue a notification for the writer; wait (boundedly) while the queue is full."""
        size = message_size(data)
        queued = self.queued_notifications
        # `_queue_full`, inline: this runs for every notification.
        if queued >= self.max_pending_notifications or (
            queued and self.queued_bytes + size > self.max_pending_bytes
        ):
            with trio.move_on_after(self.slow_frontend_timeout):
                while self._queue_full(size) and self.closed_reason is None:
                    await self.room_lot.park()
            if self.closed_reason is not None or self._queue_full(size):
                if self.closed_reason is None:
                    reason = f"{self.other} too slow"
                    _log.warning(
                        "closing IPC session %s: %s (%d notifications, %d bytes, waited %.1fs "
                        "for it)",
                        self.session_id,
                        reason,
                        self.queued_notifications,
                        self.queued_bytes,
                        self.slow_frontend_timeout,
                    )
                    self.close(reason)
                raise self.closed_error(None)
        self._post(data, notification=True)

    def _post(self, data: bytes | BinaryMessage, *, notification: bool) -> None:
        """Queue a message for the writer without waiting (notifications, refusals)."""
        if self.closed_reason is not None:
            raise self.closed_error(None)
        if notification:
            self.queued_notifications += 1
            self.queued_bytes += message_size(data)
        elif len(self.outbox) >= self.max_pending_notifications + self.max_in_flight:
            # Refusals pile up only when the other side sends and never reads.
            self.close(f"{self.other} too slow")
            raise self.closed_error(None)
        self.outbox.append(_Queued(data, None, notification=notification))
        self.writer_lot.unpark_all()

    async def send(self, data: bytes | BinaryMessage) -> None:
        """Send one message in order with everything queued before it; waits for room.

        Raises:
            ConnectionClosed: the session is closed.
            PayloadTooLarge: over the stream's limit; nothing was sent.
        """
        stream = self.stream
        if self.closed_reason is not None:
            raise self.closed_error(None)
        size = len(data) if type(data) is bytes else message_size(data)
        if size > stream.max_message_size:
            raise PayloadTooLarge(
                f"message of {size} bytes is over the session's limit of {stream.max_message_size}"
            )
        if not self.outbox and not self.writing:
            # Nothing queued ahead of it: send it from here, no task switch.
            self.writing = True
            try:
                await stream.send_message(data)
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
                self.queued_bytes -= message_size(item.data)
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
