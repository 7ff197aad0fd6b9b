"""A MessageStream over an ASGI WebSocket connection (hypercorn's `{prefix}/ws`), server side.

The trio-websocket one, and what both share, is in `_streams`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ...runtime import ConnectionClosed
from ...runtime._protocol import BinaryMessage
from .._web import heartbeat, ping_message
from ._endpoint import (
    INTERNAL_ERROR,
    MESSAGE_TOO_BIG,
    NORMAL,
    Endpoint,
    closed_error,
    too_large_reason,
)
from ._streams import CLOSE_TIMEOUT, WebSocketStream, _fit_reason

__all__ = ["AsgiWebSocketStream"]

_log = logging.getLogger("tether.websocket")


class AsgiWebSocketStream(WebSocketStream):
    """A MessageStream over an ASGI WebSocket connection (hypercorn), server side."""

    __slots__ = (
        "_close_sent",
        "_closing",
        "_ping_ids",
        "_pong",
        "_receive",
        "_receiving",
        "_send",
    )

    def __init__(
        self,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
        max_message_size: int,
        endpoint: Endpoint | None = None,
    ) -> None:
        super().__init__(max_message_size, "WebSocket", endpoint)
        self._receive = receive
        # Cancelled by a close from this side: hypercorn then waits for the
        # peer's close frame, which a dead peer never sends.
        self._receiving: trio.CancelScope | None = None
        self._send = send
        self._ping_ids = itertools.count(1)
        self._pong = trio.Event()
        self._closing = False  # aclose has begun: it drains once
        self._close_sent = False  # the close is handed to hypercorn once

    async def _send_batch(self, batch: list[bytes | BinaryMessage]) -> None:
        for data in batch:
            if self._send_error is not None:
                raise self._send_error
            # hypercorn drops a send on a closed socket silently; the receive
            # side sees the close and reports it.
            if type(data) is bytes:
                await self._send({"type": "websocket.send", "text": data.decode()})
            else:
                await self._send({"type": "websocket.send", "bytes": data.frame()})  # type: ignore[union-attr]

    async def _receive_next(self) -> bytes | str:
        while True:
            if self._send_error is not None:
                await trio.lowlevel.checkpoint()
                raise self._send_error
            with trio.CancelScope() as self._receiving:
                event = await self._receive()
            self._receiving = None
            if self._send_error is not None:
                raise self._send_error
            kind = event["type"]
            if kind == "websocket.receive":
                text = event.get("text")
                data: bytes | str = text if text is not None else event.get("bytes") or b""
                if len(data) > self.max_message_size:
                    reason = too_large_reason(len(data), self.max_message_size)
                    await self.aclose(reason, MESSAGE_TOO_BIG)
                    raise self._send_error or closed_error(
                        MESSAGE_TOO_BIG, reason, prefix="WebSocket"
                    )
                if len(data) < 64 and self._is_pong(data):
                    continue
                return data
            if kind == "websocket.disconnect":
                self._close_sent = True  # gone: nothing more may be sent, a close neither
                code = event.get("code", 1005)
                closed = closed_error(code, event.get("reason"), prefix="WebSocket")
                self._fail_sends(closed)
                raise closed

    def _fail_sends(self, exc: ConnectionClosed) -> None:
        # Closed: a keepalive waiting for a pong stops waiting.
        super()._fail_sends(exc)
        self._pong.set()

    def _is_pong(self, data: bytes | str) -> bool:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        if '"pong"' not in text:
            return False
        beat = heartbeat(data)
        if beat is None or beat[0] != "pong":
            return False
        self._pong.set()
        return True

    async def aclose(self, reason: str | None = None, code: int = NORMAL) -> None:
        reason, code = self._close_as(reason, code)
        if self._close_sent:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            if not self._closing:
                self._closing = True
                if self._send_error is None:
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await self._drain()
                # What the peer did not take in time is dropped; the writer
                # stops after the message it is sending.
                self._fail_sends(closed_error(code, reason, prefix="WebSocket"))
                if self._receiving is not None:
                    self._receiving.cancel()
            if self._writing:
                # hypercorn writes each frame shielded, so a peer that reads
                # nothing holds the writer in that frame, and the close would
                # wait behind it for as long: a close that gave up waiting
                # would be lost (hypercorn then closes with 1011 and no
                # reason). So the close is left to the connection's last
                # aclose, after the writer is done (`HttpApp._websocket`),
                # and the session ends now.
                await trio.lowlevel.checkpoint()
                return
            self._close_sent = True
            await self._send(
                {"type": "websocket.close", "code": code, "reason": _fit_reason(reason)}
            )

    async def ping_once(self, answer_within: float) -> bool:
        # ASGI hides WebSocket pings from the app: ping inside the envelope.
        if self._send_error is not None:
            await trio.lowlevel.checkpoint()
            return False
        self._pong = trio.Event()
        try:
            await self.send_message(ping_message(next(self._ping_ids)))
        except ConnectionClosed:
            return False
        with trio.move_on_after(answer_within):
            await self._pong.wait()
            # Set by a pong, or by the close (which also ends the waiting).
            return self._send_error is None
        _log.info("closing a WebSocket: no pong within %s s", answer_within)
        await self.aclose(f"no answer to a ping within {answer_within:g} s", INTERNAL_ERROR)
        return False
