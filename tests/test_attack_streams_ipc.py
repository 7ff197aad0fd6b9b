"""Attacks on IPC streams: untyped calls of stream methods, hostile peers, teardown.

The other side is tether's real engine, or a raw peer speaking the wire over
an in-process MessageStream (docs/wire.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

import tether
from tether.runtime import MessageStream, serve_ipc_session
from tether.runtime._protocol import (
    PROTOCOL_VERSION,
    Credit,
    End,
    Error,
    Hello,
    Invoke,
    Item,
    Message,
    Ready,
    Result,
    Send,
    Welcome,
    decode,
    encode,
)
from tether.transports import memory
from tether.transports.memory import stream_pair

TIMEOUT = 10.0


class Scan(tether.IpcInterface):
    channel_name = "attack-scan"
    version = "1.0.0"

    def progress(self, steps: int) -> tether.Stream[int]: ...
    async def upload(self, chunks: tether.Stream[bytes]) -> int: ...
    def echo(self, words: tether.Stream[str]) -> tether.Stream[str]: ...
    async def ping(self, x: int) -> int: ...


class ScanHandler(tether.IpcHandler, Scan):
    opened = 0
    closed = 0

    async def progress(self, steps: int) -> AsyncIterator[int]:
        ScanHandler.opened += 1
        try:
            for i in range(steps):
                yield i
        finally:
            ScanHandler.closed += 1

    async def upload(self, chunks: tether.Stream[bytes]) -> int:
        return sum([len(chunk) async for chunk in chunks])

    async def echo(self, words: tether.Stream[str]) -> AsyncIterator[str]:
        async for word in words:
            yield word.upper()

    async def ping(self, x: int) -> int:
        return x


class ScanFrontendHandler(tether.IpcHandler, Scan):
    """The same channel, served by the frontend for the backend to call."""

    async def progress(self, steps: int) -> AsyncIterator[int]:
        for i in range(steps):
            yield i

    async def upload(self, chunks: tether.Stream[bytes]) -> int:
        return sum([len(chunk) async for chunk in chunks])

    async def echo(self, words: tether.Stream[str]) -> AsyncIterator[str]:
        async for word in words:
            yield word

    async def ping(self, x: int) -> int:
        return x


def _backend() -> tether.BackendIpc:
    backend = tether.BackendIpc()
    backend.register(ScanHandler)
    ScanHandler.opened = ScanHandler.closed = 0
    return backend


async def receive(stream: MessageStream) -> Message:
    return decode(await stream.receive_message())


async def send(stream: MessageStream, message: Message) -> None:
    await stream.send_message(encode(message))


# -- untyped calls of stream methods ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "args"), [("progress", (3,)), ("upload", (None,)), ("echo", (None,))]
)
async def test_call_backend_naming_a_stream_method_fails_at_once(
    method: str, args: tuple[object, ...]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(_backend()) as frontend:
            with pytest.raises(tether.InvalidRequest, match="typed proxy") as raised:
                await frontend.call_backend(Scan.channel_name, method, *args)
            assert "open_stream" in str(raised.value)
            # The session goes on, and nothing of that invoke is left.
            assert await frontend.call_backend(Scan.channel_name, "ping", 4) == 4
            await trio.testing.wait_all_tasks_blocked()
            assert ScanHandler.opened == ScanHandler.closed


class Trigger(tether.IpcInterface):
    channel_name = "attack-trigger"
    version = "1.0.0"

    async def call_back(self, method: str) -> str: ...


class TriggerHandler(tether.IpcHandler, Trigger):
    async def call_back(self, method: str) -> str:
        session = tether.current_session()
        try:
            await session.call_frontend(Scan.channel_name, method, 2)
        except tether.InvalidRequest as exc:
            return str(exc)
        return "no error"  # pragma: no cover


async def test_call_frontend_naming_a_stream_method_fails_at_once() -> None:
    backend = tether.BackendIpc()
    backend.register(TriggerHandler)
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(backend) as frontend:
            frontend.register(ScanFrontendHandler)
            message = await frontend.proxy(Trigger).call_back("progress")
            assert "typed proxy" in message
            message = await frontend.proxy(Trigger).call_back("echo")
            assert "typed proxy" in message


def test_an_invoke_says_stream_false_only_when_untyped_and_a_bad_value_is_refused() -> None:
    untyped = Invoke(1, "c", "m", [], None, None, False)
    assert b'"stream":false' in encode(untyped)
    assert decode(encode(untyped)) == untyped
    assert b"stream" not in encode(Invoke(1, "c", "m", []))
    for bad in (b'"no"', b"0", b"[]"):
        with pytest.raises(tether.InvalidRequest, match="'stream'"):
            decode(b'{"t":"invoke","id":1,"channel":"c","method":"m","args":[],"stream":%s}' % bad)


# -- a hostile frontend, against the backend's session ------------------------------


async def _hello(client_end: MessageStream) -> None:
    await send(client_end, Hello(PROTOCOL_VERSION, None, None, None, {}, mode="ipc"))
    assert isinstance(await receive(client_end), Welcome)


async def test_a_hostile_frontend_gets_refusals_and_the_session_goes_on() -> None:
    backend = _backend()
    client_end, server_end = stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_ipc_session, backend, server_end)
            await _hello(client_end)
            # Huge credit is credit (JSON ints are unbounded; 64-bit ones decode).
            await send(client_end, Invoke(1, Scan.channel_name, "progress", [2]))
            await send(client_end, Credit(1, 2**63 - 1, 2**63 - 1))
            await send(client_end, Credit(1, 2**63 - 1, 2**63 - 1))
            assert [await receive(client_end) for _ in range(3)] == [
                Item(1, 0),
                Item(1, 1),
                Result(1, None),
            ]
            # Past 64 bits: malformed, refused; the session goes on.
            await client_end.send_message(b'{"t":"credit","id":9,"items":%d,"bytes":1}' % 2**200)
            refusal = await receive(client_end)
            assert isinstance(refusal, Error)
            assert refusal.error.code == "bad-request"
            # Stream messages for a finished invoke, a unary one, an unknown id: dropped.
            for message in (Credit(1, 1, 1), Send(1, 1), End(1), Credit(77, 1, 1), End(77)):
                await send(client_end, message)
            await send(client_end, Invoke(2, Scan.channel_name, "ping", [5]))
            await send(client_end, Send(2, 1))
            await send(client_end, Credit(2, 1, 1))
            assert await receive(client_end) == Result(2, 5)
            # `end` twice is one end; a `send` after it fails that invoke only.
            await send(client_end, Invoke(3, Scan.channel_name, "upload", [None]))
            assert isinstance(await receive(client_end), Ready)
            await send(client_end, Send(3, "YWJj"))  # base64 for b"abc"
            await send(client_end, End(3))
            await send(client_end, End(3))
            assert await receive(client_end) == Result(3, 3)
            await send(client_end, Invoke(4, Scan.channel_name, "echo", [None]))
            assert isinstance(await receive(client_end), Ready)
            await send(client_end, End(4))
            await send(client_end, Send(4, "late"))
            # One answer only (the engine answered twice: its refusal, then
            # the handler's error).
            reply = await receive(client_end)
            assert reply == Result(4, None) or (
                isinstance(reply, Error) and "no more stream items" in reply.error.message
            )
            # An argument item for a server stream fails that stream only.
            await send(client_end, Invoke(5, Scan.channel_name, "progress", [10]))
            await send(client_end, Send(5, 1))
            refusal = await receive(client_end)
            assert isinstance(refusal, Error)
            assert refusal.id == 5
            assert "takes no stream argument" in refusal.error.message
            await send(client_end, Invoke(6, Scan.channel_name, "ping", [6]))
            assert await receive(client_end) == Result(6, 6)
            await trio.testing.wait_all_tasks_blocked()
            assert ScanHandler.opened == ScanHandler.closed == 2
            await client_end.aclose()


async def test_stream_invokes_never_credited_are_bounded_and_end_with_the_session() -> None:
    backend = _backend()
    client_end, server_end = stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_ipc_session, backend, server_end)
            await _hello(client_end)
            count = 2000
            for call_id in range(1, count + 1):
                await send(client_end, Invoke(call_id, Scan.channel_name, "progress", [5]))
            await trio.testing.wait_all_tasks_blocked()  # nobody spins waiting for credit
            refused = 0
            with trio.move_on_after(0.5):
                while True:
                    message = await receive(client_end)
                    assert isinstance(message, Error), message
                    assert message.error.code == "too-many-requests"
                    refused += 1
            assert refused > 0
            assert ScanHandler.opened == count - refused
            await client_end.aclose()
    assert ScanHandler.closed == ScanHandler.opened
