"""The contract of a message transport: a bidirectional stream of whole messages."""

from __future__ import annotations

import abc
import contextlib

from ._binary import BinaryMessage
from ._errors import ConnectionClosed, PayloadTooLarge

__all__ = ["MessageStream"]


class MessageStream(abc.ABC):
    """A connection that moves whole encoded messages (bytes) both ways.

    The in-process and WebSocket transports provide one of these per
    connection; the runtime runs the protocol (handshake, multiplexing by id,
    cancellation) on top of it. A stream knows nothing of what the bytes mean.

    `send_message` may be called by several tasks at once; each message is
    delivered whole and in the order the sends completed. `receive_message` is
    called by one task at a time.

    Messages with `bytes` values: when `binary` is True, the runtime encodes
    them with `encode_binary`, and `send_message` may be given a
    `BinaryMessage`, which the stream hands over as it is (in-process) or
    sends as a binary frame (`BinaryMessage.frame()`); the peer's
    `receive_message` returns either, and `decode` reads both. When it is
    False, every message is JSON bytes (bytes values as base64).
    """

    __slots__ = ()

    #: The largest message this stream carries, in bytes (of a BinaryMessage,
    #: its whole frame: `message_size`).
    max_message_size: int

    #: Whether `send_message` takes a `BinaryMessage`: the peer reads binary
    #: frames. A class attribute (True for the in-process and local
    #: transports); a WebSocket session sets it when the peer said so.
    binary: bool = False

    @abc.abstractmethod
    async def send_message(self, data: bytes | BinaryMessage) -> None:
        """Send one message; waits while the peer is not keeping up.

        It need not be a checkpoint when the message can be handed over at once
        (a buffered in-process send does not yield).

        Raises:
            ConnectionClosed: the stream is closed, by either side.
            PayloadTooLarge: `data` is longer than `max_message_size` (see
                `message_size`); the stream stays usable.
        """

    @abc.abstractmethod
    async def receive_message(self) -> bytes | str | BinaryMessage:
        """Wait for the next message.

        A text transport (WebSocket text frames) may hand the text over as
        `str`, saving a round of encoding; a binary frame is handed over as
        its bytes, a BinaryMessage from an in-process peer as the object.
        The protocol's `decode` reads all of them.

        Raises:
            ConnectionClosed: the stream is closed, by either side, and every
                message sent before the close was received.
        """

    @abc.abstractmethod
    async def aclose(self, reason: str | None = None) -> None:
        """Close the stream; the peer's pending and later receives see it closed.

        Args:
            reason: Why, in words for the peer (`"frontend too slow"`): its
                receives raise `ConnectionClosed` with this `reason`. A stream
                that cannot carry a reason drops it.

        Idempotent: the first close's reason is the one the peer sees. Does not
        wait for the peer.
        """

    async def refuse(self, message: bytes, error_code: str, reason: str) -> None:
        """Refuse a session at its handshake: send `message`, the `error` saying why, then close.

        The default sends it (if the stream still can) and closes with
        `reason`. A transport with a way of its own to say it overrides this:
        WebSocket closes with 1008 (policy violation) after `unauthorized` or
        `forbidden`, and with 1013 (try again later) after `unavailable` or
        `too-many-requests`.

        Args:
            message: The encoded `error` message.
            error_code: Its code (`unauthorized`, `not-found`, `unavailable`...).
            reason: Why, in words for the peer.
        """
        with contextlib.suppress(ConnectionClosed, PayloadTooLarge):  # the close still says why
            await self.send_message(message)
        await self.aclose(reason)
