"""The HTTP server's half of stream calls: a chunked response of items, a chunked
request body of items (docs/http.md, "Streams").

Both run the impl through the runtime's `CalleeStream`, as every engine does;
what is HTTP's own is how its messages meet the wire:

* **Result items** (a server stream) are written to the response as they come,
  one ASGI send each, as NDJSON lines or records (`_framing`). Flow control is
  TCP's: hypercorn's send returns once the socket took the bytes, so a client
  that does not read blocks the impl's `yield`. The stream is granted unlimited
  credit: the window that bounds it is the connection's socket buffers.
* **Argument items** (a client stream) are read from the request body as the
  impl takes them: the reader stops receiving while the impl's window (its
  `Inflow`) is full, so hypercorn stops reading the socket too (its queue to
  the app holds 10 messages) and TCP slows the client down.

The status and headers of a server stream go out with its first item, so an
error before it (the impl raised at once, `authorize` refused) is answered
with its own status and JSON body, as a unary call's.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ...runtime import ConnectionClosed, InvalidRequest, PayloadTooLarge, TetherError
from ...runtime._binary import message_size, pack
from ...runtime._codec import dumps
from ...runtime._dispatch import (
    Dispatcher,
    PreparedCall,
    access_log,
    encode_reply,
    too_large_reply,
)
from ...runtime._protocol import (
    BinaryMessage,
    Error,
    ErrorInfo,
    Item,
    Message,
    Ready,
    Result,
    decode,
)
from ...runtime._streams import DEFAULT_STREAM_WINDOW, CalleeStream, StreamWindow
from ._asgi import (
    ClientLeft,
    Receive,
    Refused,
    Send,
    error_body,
    error_headers,
    send_error_info,
    send_frame,
)
from ._framing import NDJSON_TYPE, RECORDS_TYPE, Splitter, binary_pieces, item_value, line, record
from ._wire import JSON

__all__ = [
    "BodyReader",
    "ResultWriter",
    "drain_body",
    "error_start",
    "read_arguments",
    "read_first_text",
    "run_argument_stream",
    "send_drained",
    "send_reply",
    "serve_result_stream",
]

_U32 = struct.Struct(">I")
#: The credit a server stream is granted: unbounded, as TCP is its window.
_UNLIMITED = 1 << 62
#: What is read of a request body the impl did not finish, before answering:
#: closing a connection with unread bytes resets it, and the client could
#: lose the answer. Past either bound the connection is closed all the same.
_DRAIN_BYTES = 1024 * 1024
_DRAIN_SECONDS = 1.0


def item_payload(value: Any, limit: int, binary: bool = False) -> bytes | BinaryMessage:
    """The message `{"t":"item","value":...}` of one result item.

    `binary`: for the records form, whose records may be binary frames (bytes
    values raw beside the JSON envelope, STREAMS.md section 4).

    Raises:
        PayloadTooLarge: it is over `limit` bytes.
        TypeError: the value is not JSON (the operation's checks rule that out).
    """
    payload: bytes | BinaryMessage | None = None
    if binary and type(value) is not str:
        packed = pack({"t": "item", "value": value})
        if type(packed) is BinaryMessage:
            payload = packed
    if payload is None:
        payload = b'{"t":"item","value":' + dumps(value) + b"}"
    size = message_size(payload)
    if size > limit:
        raise PayloadTooLarge(
            f"a stream item encodes to {size} bytes, over this backend's limit of "
            f"{limit} per item (max_body_size): yield smaller items",
            details={"size": size, "limit": limit},
        )
    return payload


def reply_payload(reply: Result | Error) -> bytes:
    """The last message of a result stream: `{"t":"result","value":null}` or an error."""
    data = json_reply(reply)
    if data.startswith(b'{"t":"result"'):
        return b'{"t":"result","value":null}'
    # {"t":"error","id":0,"error":{...}}: the same error object a unary error has.
    return b'{"t":"error",' + data[data.index(b'"error":') :]


class ResultWriter:
    """Writes a server stream's response: the head with the first item, then each item."""

    __slots__ = ("_headers", "_limit", "_records", "_send", "started")

    def __init__(
        self, send: Send, headers: list[tuple[bytes, bytes]], records: bool, limit: int
    ) -> None:
        self._send = send
        self._headers = headers
        self._records = records
        self._limit = limit
        #: The 200 and its headers went out.
        self.started = False

    def _frame(self, payload: bytes | BinaryMessage) -> bytes:
        if type(payload) is BinaryMessage:
            return b"".join(binary_pieces(payload))
        return record(payload) if self._records else line(payload)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self.started = True
        media = RECORDS_TYPE if self._records else NDJSON_TYPE
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", media),
                    (b"cache-control", b"no-store"),
                    # nginx passes the stream on as it comes, not once buffered.
                    (b"x-accel-buffering", b"no"),
                    *self._headers,
                ],
            }
        )

    async def send_message(self, message: Message) -> int:
        """`CalleeStream`'s send: an item goes out at once; returns its size."""
        if type(message) is not Item:
            return 0  # no other message of a result stream has a place on HTTP
        payload = item_payload(message.value, self._limit, self._records)
        if not self.started:
            await self._start()
        if type(payload) is BinaryMessage:
            # Its record in pieces, one send each: a large attachment is not
            # copied into a record here (hypercorn copies it once, into its
            # chunk).
            for piece in binary_pieces(payload):
                await self._send({"type": "http.response.body", "body": piece, "more_body": True})
        else:
            await self._send(
                {"type": "http.response.body", "body": self._frame(payload), "more_body": True}
            )
        return message_size(payload)

    async def finish(self, reply: Result | Error) -> None:
        """End the response with the call's reply (its own status if nothing went yet)."""
        if not self.started:
            if type(reply) is Error:
                await send_error_info(self._send, reply.error, self._headers, json_reply(reply))
                return
            await self._start()
        payload = reply_payload(reply)
        await self._send(
            {"type": "http.response.body", "body": self._frame(payload), "more_body": False}
        )


async def read_first_text(
    receive: Receive, splitter: Splitter, time_limit: float
) -> tuple[bytes | bytearray, bool]:
    """The first text of a stream body (its arguments), within `time_limit` seconds.

    Returns:
        The text, and whether the body has ended (what came after it stays in
        `splitter`).

    Raises:
        PayloadTooLarge: the text is over the splitter's limit.
        InvalidRequest: the body ended before it.
        ClientLeft: the client disconnected first.
        trio.TooSlowError: it did not come in time.
    """
    ended = False
    with trio.fail_after(time_limit):
        while True:
            text = splitter.next()
            if text is None and ended:
                text = splitter.finish()
                if text is None:
                    raise InvalidRequest(
                        "the stream body is empty: its first line (or record) is the JSON array "
                        "of the arguments, the stream argument null",
                        details={"field": "body"},
                    )
            if text is not None:
                return text, ended
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientLeft
            splitter.feed(message.get("body", b""))
            ended = not message.get("more_body", False)


class BodyReader:
    """Feeds a client stream's items from the request body to its `CalleeStream`.

    Runs beside the impl. It reads the next item only while the impl's window
    has credit left, so it never holds more than the window (plus what one
    ASGI message brought). A malformed or oversized item fails the call; the
    client leaving cancels it.
    """

    __slots__ = (
        "_credit",
        "_receive",
        "_splitter",
        "call_scope",
        "disconnected",
        "ended",
        "error",
        "stream",
    )

    def __init__(self, receive: Receive, splitter: Splitter, ended: bool) -> None:
        self._receive = receive
        self._splitter = splitter
        #: The body's last part has come.
        self.ended = ended
        self._credit = trio.Event()
        self.stream: CalleeStream | None = None
        self.call_scope: trio.CancelScope | None = None
        #: Why the body was refused (the call's reply), if it was.
        self.error: TetherError | None = None
        self.disconnected = False

    async def send_message(self, message: Message) -> int:
        """`CalleeStream`'s send: a `ready` (the impl took items) lets the reader go on."""
        if type(message) is Ready:
            self._credit.set()
        return 0

    async def run(self) -> None:
        stream = self.stream
        assert stream is not None
        assert stream.inflow is not None
        inflow = stream.inflow
        splitter = self._splitter
        try:
            while True:
                text = splitter.next()
                if text is None:
                    if not self.ended:
                        if not await self._more():
                            return
                        continue
                    text = splitter.finish()
                    if text is None:
                        stream.on_end()
                        break
                value = item_value(text)
                while inflow.allowed_items <= 0 or inflow.allowed_bytes <= 0:
                    # The impl's window is full: read no more of the body.
                    self._credit = trio.Event()
                    await self._credit.wait()
                stream.on_send(value, len(text))
        except TetherError as exc:
            self._fail(exc)
            return
        # The whole body is in: what comes now is the client leaving.
        while await self._more():
            pass

    async def _more(self) -> bool:
        """Receive the next part of the body; False when the client has left."""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
            if self.stream is not None:
                self.stream.close(ConnectionClosed("the client disconnected", reason="closed"))
            if self.call_scope is not None:
                self.call_scope.cancel()
            return False
        if not self.ended:
            self._splitter.feed(message.get("body", b""))
            self.ended = not message.get("more_body", False)
        return True

    def _fail(self, exc: TetherError) -> None:
        self.error = exc
        assert self.stream is not None
        self.stream.close(exc)
        if self.call_scope is not None:
            self.call_scope.cancel()


async def drain_body(receive: Receive) -> None:
    """Read (and drop) what is left of a request body, within bounds (`_DRAIN_*`)."""
    size = 0
    with trio.move_on_after(_DRAIN_SECONDS):
        while size <= _DRAIN_BYTES:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return
            size += len(message.get("body", b""))


async def send_drained(
    send: Send, drain: Receive | None, start: dict[str, Any], body: bytes
) -> None:
    """Answer a request whose body may not have been read to its end.

    `drain` is the request's receive when its body was not read to its end
    (None otherwise). The answer goes out whole (with its length), then the rest of the body is
    read, bounded, before the response is ended: hypercorn closes a connection
    at once when the response ends before the request, and a close with
    unread bytes would reset it, losing the answer for the client.
    """
    if drain is None:
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return
    start["headers"] = [*start["headers"], (b"content-length", b"%d" % len(body))]
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await drain_body(drain)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# ---------------------------------------------------------------------------
# Running a call and answering it (the app's RPC route calls these)


def json_reply(reply: Result | Error) -> bytes:
    """`encode_reply` as JSON (bytes as base64): what NDJSON and JSON bodies carry."""
    data = encode_reply(reply)
    assert type(data) is bytes
    return data


async def send_reply(
    send: Send,
    reply: Result | Error,
    echo: list[tuple[bytes, bytes]],
    limit: int,
    drain: Receive | None,
    *,
    frame: bool = False,
) -> None:
    """Answer a call with its reply: 200 and the result, or the error's status.

    Args:
        send: The ASGI send.
        reply: The call's reply.
        echo: Headers every answer carries (CORS, the ActivityId).
        limit: The largest reply (`max_body_size`); a larger one is answered 413.
        drain: The request's receive when its body was not read to its end.
        frame: The client takes a frame (`Accept`): a result holding bytes
            goes as one, its bytes raw.
    """
    if frame and type(reply) is Result and drain is None:
        binary = encode_reply(reply, binary=True)
        if type(binary) is BinaryMessage:
            await send_frame(send, binary, echo, limit)
            return
    data = json_reply(reply)
    if type(reply) is Result and not data.startswith(b'{"t":"result"'):
        # A result JSON cannot hold (or over the codec's limits): encode_reply
        # answered the request with an error instead.
        replaced = decode(data)
        assert isinstance(replaced, Error)
        reply = replaced
    if len(data) > limit:
        data = too_large_reply(None, len(data), limit)
        reply = Error(None, ErrorInfo("payload-too-large", 413, "PayloadTooLarge", ""))
    if type(reply) is Error:
        info = reply.error
        if drain is None:
            await send_error_info(send, info, echo, data)
            return
        start = error_start(info, echo)
        await send_drained(send, drain, start, error_body(info, data))
        return
    # The encoded reply is {"t":"result","id":0,"value":...}: the body is
    # the value alone, cut out of it without a second encode.
    value = data[data.index(b'"value":') + 8 : -1]
    start = {"type": "http.response.start", "status": 200, "headers": [JSON, *echo]}
    await send_drained(send, drain, start, value)


def error_start(info: ErrorInfo, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The `http.response.start` of an error answer."""
    return {
        "type": "http.response.start",
        "status": info.status,
        "headers": [JSON, *headers, *error_headers(info)],
    }


async def read_arguments(
    receive: Receive, splitter: Splitter, body_timeout: float
) -> tuple[bytes | bytearray, bool]:
    """A client stream's first text, its arguments, within `body_timeout`.

    Returns:
        The text, and whether the body ended with it.

    Raises:
        Refused: 408 (request-timeout, `Connection: close`) when it did not come in time.
        PayloadTooLarge, InvalidRequest, ClientLeft: as `read_first_text`.
    """
    try:
        return await read_first_text(receive, splitter, body_timeout)
    except trio.TooSlowError:
        raise Refused(
            InvalidRequest(
                f"the arguments of the stream did not arrive within {body_timeout:g} s: "
                "send the first line (the JSON array of the arguments) at once",
                details={"field": "body"},
            ),
            status=408,
            headers=[(b"connection", b"close")],
        ) from None


async def serve_result_stream(
    run_call: Callable[[PreparedCall, Receive], Awaitable[Result | Error | None]],
    prepared: PreparedCall,
    receive: Receive,
    send: Send,
    echo: list[tuple[bytes, bytes]],
    records: bool,
    limit: int,
) -> None:
    """Run a server stream's impl, its items going out as the response's body.

    `run_call` runs it as a unary call runs (the app's: context, deadline,
    cancelled when the client disconnects).
    """
    writer = ResultWriter(send, echo, records, limit)
    stream = CalleeStream(
        prepared.id, prepared.operation, DEFAULT_STREAM_WINDOW, writer.send_message
    )
    stream.on_credit(_UNLIMITED, _UNLIMITED)
    prepared.stream = stream
    reply = await run_call(prepared, receive)
    if reply is not None:
        await writer.finish(reply)


async def run_argument_stream(
    dispatcher: Dispatcher, window: StreamWindow, prepared: PreparedCall, reader: BodyReader
) -> Result | Error | None:
    """Run a client stream's impl, its items read from the body as it takes them.

    The reader watches for the client leaving, as `DisconnectWatch` does for
    other calls (only one task may receive).

    Returns:
        The reply; None when the client left.
    """
    stream = CalleeStream(prepared.id, prepared.operation, window, reader.send_message)
    reader.stream = stream
    prepared.stream = stream
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as call_scope:
            reader.call_scope = call_scope
            nursery.start_soon(reader.run)
            try:
                reply = await dispatcher.run_in(prepared, call_scope, _nothing)
            finally:
                nursery.cancel_scope.cancel()
            # The impl may end by itself once the client has left (reading its
            # stream raised ConnectionClosed): nobody to answer then either.
            return None if reader.disconnected else reply
    if reader.error is not None:
        access_log(prepared.context, reader.error.code, prepared.started)
        return dispatcher.error_reply(prepared.id, reader.error, prepared.context.activity_id)
    interrupted = dispatcher.interrupted(prepared)
    return None if reader.disconnected else interrupted


def _nothing() -> None:
    """A client stream's call needs nothing set up when it first waits."""
