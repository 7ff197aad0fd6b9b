"""The HTTP client's half of stream calls (`HttpBackend.open_call`, docs/http.md "Streams").

A server stream is one POST whose response body is read record by record as
it comes; a client stream is one POST whose body is chunked, its records sent
as the caller's source yields them while the response is awaited. Both run on
a connection of the pool of their own (`_duplex`): leaving the block before
the call's last message closes that connection, which is how the server
learns to cancel the impl. Flow control is TCP's, both ways: the source is
pulled only once the previous item was taken by the socket, and the response
is read only as the caller takes items.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ...runtime import (
    ConnectionClosed,
    NotFound,
    Operation,
    PayloadTooLarge,
    TetherError,
    TransportError,
)
from ...runtime._binary import unpack_frame
from ...runtime._codec import loads
from ...runtime._protocol import Call, Error, ErrorInfo, Item, Result
from ...runtime._streams import aclose_if_possible, iterate_source
from ...runtime._util import open_service_nursery
from ._duplex import Duplex, open_duplex
from ._framing import (
    RECORDS_TYPE,
    Splitter,
    item_record,
    media_form,
    two_way_refusal,
)
from ._pool import Response
from ._wire import JSON

if TYPE_CHECKING:
    from ._client import HttpBackend

__all__ = ["open_http_call"]

_ACCEPT_RECORDS = (b"accept", RECORDS_TYPE + b", application/json")
_ACCEPT_JSON = (b"accept", b"application/json")


class HttpExchange:
    """A stream call's response, read as the caller asks for its messages (`Exchange`)."""

    __slots__ = ("_call", "_done", "_duplex", "_headers", "_limit", "_origin", "_splitter")

    def __init__(self, duplex: Duplex, call: Call, limit: int, origin: str) -> None:
        self._duplex = duplex
        self._call = call
        self._limit = limit
        self._origin = origin
        self._splitter: Splitter | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._done = False

    async def receive(self) -> Item | Result | Error:
        if self._done:
            raise RuntimeError("the stream call has ended: its final reply was received")
        splitter = self._splitter
        if splitter is None:
            splitter = await self._head()
            if splitter is None:
                return await self._whole()
        while True:
            text = splitter.next()
            if text is None:
                chunk = await self._duplex.receive_some()
                if chunk:
                    splitter.feed(chunk)
                    continue
                text = splitter.finish()
                if text is None:
                    raise ConnectionClosed(
                        f"{self._origin} ended the stream of {self._call.iface}.{self._call.op} "
                        "without its result: did the server stop? Check its logs",
                        reason="connection lost",
                    )
            message = self._message(text)
            if self._done:
                # The end of the body is right behind the last message: read
                # it, so that the connection can serve another call.
                while chunk := await self._duplex.receive_some():
                    splitter.feed(chunk)
                    if splitter.buffered > self._limit:
                        break
            return message

    async def _head(self) -> Splitter | None:
        """Read the response's head: a splitter for a stream body, None for a whole one."""
        headers = await self._duplex.receive_head()
        self._headers = headers
        form = media_form(Response(self._duplex.status, headers, b"").header(b"content-type"))
        if self._duplex.status != 200 or form is None:
            return None
        self._splitter = Splitter(form, self._limit)
        return self._splitter

    async def _whole(self) -> Result | Error:
        """A response that is not a stream: a client stream's result, or an error."""
        from ._client import error_info_from_response

        self._done = True
        chunks: list[bytes | bytearray] = []
        size = 0
        while chunk := await self._duplex.receive_some():
            size += len(chunk)
            if size > self._limit:
                raise PayloadTooLarge(
                    f"the response from {self._origin} is at least {size} bytes, over the limit "
                    f"of {self._limit} bytes: raise max_message_size or ask for less",
                    details={"size": size, "limit": self._limit},
                )
            chunks.append(chunk)
        response = Response(self._duplex.status, self._headers, b"".join(chunks))
        if response.status == 200:
            return Result(self._call.id, loads(response.body))
        return Error(self._call.id, error_info_from_response(response, self._call.ctx.activity_id))

    def _message(self, text: bytes | bytearray) -> Item | Result | Error:
        call = self._call
        try:
            # A record is JSON (its first byte `{`) or a binary frame (its first byte 0).
            message = unpack_frame(text) if text[:1] == b"\x00" else loads(text)
            tag = message["t"]
            if tag == "item":
                return Item(call.id, message["value"])
            self._done = True
            if tag == "result":
                return Result(call.id, message.get("value"))
            if tag == "error":
                raw = message["error"]
                details = raw.get("details") or {}
                return Error(
                    call.id,
                    ErrorInfo(
                        str(raw["code"]),
                        int(raw.get("status", 500)),
                        str(raw.get("name") or ""),
                        str(raw.get("message") or ""),
                        details if isinstance(details, dict) else {},
                        raw.get("activity_id") or call.ctx.activity_id,
                    ),
                )
        except (TetherError, KeyError, TypeError, ValueError, AttributeError):
            pass
        self._done = True
        raise ConnectionClosed(
            f"{self._origin} sent {text[:100]!r} in the stream of {call.iface}.{call.op}, which "
            'is not a stream message ({"t": "item" | "result" | "error", ...}): is it a tether '
            "backend?",
            reason="protocol error",
        )


class _Pump:
    """Sends a client stream's items as its source yields them; keeps what it raised."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None

    async def run(
        self,
        duplex: Duplex,
        source: AsyncIterable[Any],
        encode_item: Callable[[Any], Any],
        limit: int,
        scope: trio.CancelScope,
    ) -> None:
        iterator = iterate_source(source)
        try:
            async for item in iterator:
                # JSON, or a binary frame when it holds bytes (carried raw).
                pieces, size = item_record(encode_item(item))
                if size > limit:
                    raise PayloadTooLarge(
                        f"a stream item encodes to {size} bytes, over this connection's "
                        f"limit of {limit} per item (max_message_size): send smaller items",
                        details={"size": size, "limit": limit},
                    )
                await duplex.send_pieces(pieces)
            await duplex.end()
        except TransportError:
            # The server answered (or went away) before taking the whole body:
            # the response says which, to the caller's `receive`.
            pass
        except Exception as exc:
            # The source (or an item that cannot be sent) failed the call: it
            # is cancelled (the connection closes) and the caller gets this.
            self.error = exc
            scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await aclose_if_possible(iterator)


@asynccontextmanager
async def open_http_call(
    backend: HttpBackend,
    call: Call,
    operation: Operation,
    source: AsyncIterable[Any] | None,
) -> AsyncIterator[HttpExchange]:
    """Carry a stream call over HTTP for the block (`RpcBackend.open_call`)."""
    # A two-way stream is refused here, before anything is sent, as the server
    # would refuse it.
    if source is not None and operation.stream_result:
        await aclose_if_possible(source)
        raise NotFound(
            two_way_refusal(operation.qualname, backend._prefix),
            details={
                "interface": call.iface,
                "operation": call.op,
                "transports": ["memory", "websocket", "local"],
            },
            activity_id=call.ctx.activity_id,
        )
    headers, _ = backend.call_headers(call)
    limit = backend.max_message_size
    body: bytes | None = None
    if source is None:
        body = backend.encode_args(call)
        headers += [JSON, _ACCEPT_RECORDS]
    else:
        # JSON, or a frame {"args": [...]} when they hold bytes.
        arg_pieces, size = item_record(call.args, "args")
        if size > limit:
            raise backend.too_large(size)
        headers += [(b"content-type", RECORDS_TYPE), _ACCEPT_JSON]
    if call.timeout_ms is not None:
        headers.append((b"x-timeout-ms", b"%d" % call.timeout_ms))
    pool = backend._pool
    request = pool._build_request(
        b"POST", backend._target(call.iface, call.ver, call.op), headers, body
    )
    pump = _Pump()
    async with open_duplex(pool) as duplex:
        await duplex.send_head(request, body)
        exchange = HttpExchange(duplex, call, limit, pool._origin)
        if source is None:
            yield exchange
            return
        await duplex.send_pieces(arg_pieces)
        # A service nursery: the block's own error comes out as itself.
        async with open_service_nursery() as nursery:
            nursery.start_soon(
                pump.run, duplex, source, operation.encode_input, limit, nursery.cancel_scope
            )
            try:
                yield exchange
            finally:
                nursery.cancel_scope.cancel()
    if pump.error is not None:
        raise pump.error
