"""The backend side of an RPC connection: one session serving calls over a MessageStream.

The frontend side is `_connection.RpcConnection`.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable
from typing import Any

import trio

from .. import contexts
from ._binary import BinaryMessage
from ._dispatch import Dispatcher, PreparedCall, send_reply
from ._drain import Drain, shutting_down_error
from ._errors import (
    ConnectionClosed,
    InvalidRequest,
    PayloadTooLarge,
    TetherError,
    Unavailable,
)
from ._interfaces import Operation
from ._manager import RpcManager
from ._progress import Progress, SessionProgress
from ._protocol import (
    PROTOCOL_VERSION,
    Call,
    Cancel,
    Credit,
    End,
    Error,
    Message,
    ProgressReport,
    Result,
    Send,
    Welcome,
    check_hello,
    decode,
    encode,
    encode_binary,
    message_size,
)
from ._stream import MessageStream
from ._streams import CalleeStream
from ._workers import Workers

__all__ = ["serve_rpc_session"]


class _Session(Workers[PreparedCall]):
    """One frontend's connection on the backend: its calls, run by `Workers`.

    A stream call also has its `CalleeStream` in `streams` while it runs; the
    reader feeds it the caller's `send`, `end` and `credit` messages (without
    waiting), and a stream the caller breaks the rules of (an item past its
    credit) is failed with InvalidRequest (`CalleeStream.fail`).
    """

    __slots__ = ("dispatcher", "progress", "session_id", "stream", "streams")

    def __init__(
        self,
        dispatcher: Dispatcher,
        stream: MessageStream,
        nursery: trio.Nursery,
        session_id: str,
        max_in_flight: int,
    ) -> None:
        self.dispatcher = dispatcher
        self.stream = stream
        self.session_id = session_id
        self.streams: dict[int, CalleeStream] = {}
        self.progress = SessionProgress(stream.send_message, _encode_progress)
        self.init_workers(nursery, max_in_flight)

    async def send_reply(self, reply: Result | Error) -> None:
        self.sending += 1
        try:
            stream = self.stream
            await send_reply(stream.send_message, reply, stream.max_message_size, stream.binary)
        finally:
            self.sending -= 1
            if self.draining:
                self.check_drained()

    def prepare(self, call: Call) -> PreparedCall | Error:
        """Check a call; return it ready to run, or the reply that refuses it."""
        if self.draining:
            return self.dispatcher.error_reply(call.id, shutting_down_error(), call.ctx.activity_id)
        if call.id in self.calls:
            exc: TetherError = InvalidRequest(f"call id {call.id} is already in flight")
            return self.dispatcher.error_reply(call.id, exc, call.ctx.activity_id)
        if len(self.calls) >= self.max_in_flight:
            exc = Unavailable(
                f"this session already has {self.max_in_flight} calls in flight: wait for some "
                "to finish",
                retry_after=1,
                overloaded=True,
            )
            return self.dispatcher.error_reply(call.id, exc, call.ctx.activity_id)
        try:
            prepared = self.dispatcher.prepare(call, session_id=self.session_id)
        except TetherError as exc:
            return self.dispatcher.error_reply(call.id, exc, exc.activity_id)
        prepared.progress = self.progress
        operation = prepared.operation
        if operation.stream_result or operation.stream_param is not None:
            prepared.stream = CalleeStream(
                call.id,
                operation,
                self.dispatcher.manager.stream_window,
                functools.partial(self.send_stream_message, operation),
            )
        return prepared

    async def send_stream_message(self, operation: Operation, message: Message) -> int:
        """Send a stream's `item` or `ready`; return its size (CalleeStream's `send`)."""
        stream = self.stream
        data = encode_binary(message) if stream.binary else encode(message)
        size = message_size(data)
        try:
            await stream.send_message(data)
        except PayloadTooLarge:
            # Refused before anything was sent: only this stream ends.
            raise PayloadTooLarge(
                f"a stream item of {operation.qualname} encodes to {size} bytes, over "
                f"this connection's limit of {stream.max_message_size}: yield smaller "
                "items (a stream may carry any total)"
            ) from None
        return size

    async def serve_call(
        self,
        call: PreparedCall,
        scope: trio.CancelScope,
        on_yield: Callable[..., object],
        *args: Any,
    ) -> Result | Error:
        stream = call.stream
        if stream is None:
            return await self.dispatcher.run_in(call, scope, on_yield, *args)
        return await self._serve_stream(call, stream, scope, on_yield, *args)

    async def _serve_stream(
        self,
        call: PreparedCall,
        stream: CalleeStream,
        scope: trio.CancelScope,
        on_yield: Callable[..., object],
        *args: Any,
    ) -> Result | Error:
        manager = self.dispatcher.manager
        self.streams[call.id] = stream
        manager.count_stream(1)
        try:
            return await self.dispatcher.run_in(call, scope, on_yield, *args)
        finally:
            del self.streams[call.id]
            manager.count_stream(-1)

    def interrupted(self, call: PreparedCall) -> Error | None:
        stream = call.stream
        if stream is not None and stream.failure is not None:
            # The reader failed it (the caller broke the stream's rules).
            return self.dispatcher.error_reply(call.id, stream.failure, call.context.activity_id)
        return self.dispatcher.interrupted(call)

    def on_stream_message(
        self, message: Send | End | Credit, data: bytes | str | BinaryMessage
    ) -> None:
        """Hand a caller's stream message to its call (never waits); unknown ids are dropped."""
        stream = self.streams.get(message.id)
        if stream is None:
            return  # a stream that ended here: late news
        try:
            if type(message) is Send:
                stream.on_send(message.value, message_size(data))
            elif type(message) is End:
                stream.on_end()
            else:
                assert type(message) is Credit
                stream.on_credit(message.items, message.bytes)
        except InvalidRequest as exc:
            # The caller broke the stream's rules: that call fails, the session goes on.
            stream.fail(exc)
            scope = self.calls.get(message.id)
            if scope is not None:
                scope.cancel()

    async def read_next(self) -> PreparedCall | Error | None:
        """Read until a call is ready to run or a refusal must be sent.

        Returns:
            The call; or the `error` reply refusing a message; or None when the
            stream closed.
        """
        stream = self.stream
        while True:
            try:
                data = await stream.receive_message()
            except ConnectionClosed as exc:
                # The frontend is gone: nothing it started may outlive it. An
                # impl waiting for its stream argument hears it first.
                for callee in self.streams.values():
                    callee.close(
                        ConnectionClosed(
                            f"the frontend's connection closed: {exc.reason or 'closed'}",
                            reason=exc.reason,
                            close_code=exc.close_code,
                        )
                    )
                assert self.nursery is not None
                self.nursery.cancel_scope.cancel()
                return None
            try:
                message = decode(data)
            except InvalidRequest as exc:
                return self.dispatcher.error_reply(exc.details.get("id"), exc, None)
            if type(message) is Call:
                return self.prepare(message)
            if type(message) is Cancel:
                cancelled = self.calls.get(message.id)
                if cancelled is not None:
                    cancelled.cancel()
                continue
            if type(message) is Send or type(message) is Credit or type(message) is End:
                self.on_stream_message(message, data)
                continue
            unexpected = InvalidRequest(
                f"a backend does not accept {type(message).__name__!r} messages on an RPC session"
            )
            return self.dispatcher.error_reply(None, unexpected, None)


def _encode_progress(call_id: int, progress: Progress) -> bytes:
    return encode(ProgressReport(call_id, progress))


async def serve_rpc_session(
    manager: RpcManager | Dispatcher,
    stream: MessageStream,
    *,
    max_in_flight: int = 1024,
    drain: Drain | None = None,
) -> None:
    """Serve RPC to one frontend over `stream` until it closes.

    Expects `hello` first and answers `welcome` with what `manager` serves. Each
    call runs in its own task under its RequestContext; `cancel` cancels it.
    When the stream closes, every call still running is cancelled and awaited.

    Args:
        manager: The impls to serve (or a Dispatcher over them).
        stream: The connection.
        max_in_flight: Calls one session may have running at once; more are
            refused with `Unavailable` (too-many-requests).
        drain: The server's shutdown: once it begins, calls read are refused
            with `Unavailable` (unavailable, 503), and the session ends (its
            stream closed) as soon as the calls running have answered.
    """
    dispatcher = manager if isinstance(manager, Dispatcher) else Dispatcher(manager)
    # A session starts with no request context: in-process, this task (or the
    # backend's thread) was spawned from the frontend's, and the frontend's
    # ActivityId and credential must not reach the backend that way.
    with contexts.using(None):
        await _serve_rpc_session(dispatcher, stream, max_in_flight, drain)


async def _serve_rpc_session(
    dispatcher: Dispatcher, stream: MessageStream, max_in_flight: int, drain: Drain | None
) -> None:
    try:
        session_id = await _accept(dispatcher, stream)
        if session_id is None:
            return
        session: _Session | None = None
        try:
            async with trio.open_nursery() as nursery:
                session = _Session(dispatcher, stream, nursery, session_id, max_in_flight)
                session.start_reading()
                if drain is not None:
                    drain.join(session)
        finally:
            if drain is not None and session is not None:
                drain.leave(session)
    finally:
        await stream.aclose()


async def _accept(dispatcher: Dispatcher, stream: MessageStream) -> str | None:
    try:
        data = await stream.receive_message()
    except ConnectionClosed:
        return None
    try:
        hello = check_hello(decode(data), "rpc")
    except TetherError as exc:
        with contextlib.suppress(ConnectionClosed):
            await stream.send_message(encode(dispatcher.error_reply(None, exc, None)))
        return None
    session_id = hello.session_id or str(uuid.uuid4())
    welcome = Welcome(
        PROTOCOL_VERSION,
        session_id,
        interfaces=dispatcher.manager.describe(),
        # "binary": true only to a client that said it (as every tether one does).
        binary=stream.binary and hello.binary,
    )
    try:
        await stream.send_message(encode(welcome))
    except ConnectionClosed:
        return None
    return session_id
