"""A peer that sends and never reads what it asked for holds a bounded part of the server.

A WebSocket client (raw TCP, hand-made frames) sends calls, or messages the
server refuses, as fast as the server takes them, and never reads a byte.
Every reply then waits: in the socket, in the stream's outbox, and past that
in the session. The session must stop taking more (its reading stops, or it
refuses and closes) rather than hold a task and a reply for each message.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing
from test_websocket import VARIANTS, make_manager, served

import tether
from tether.transports.websocket._frames import frame

#: The server's bound on what one connection may have running at once.
IN_FLIGHT = 8
#: Bytes of each reply, so that a few hundred fill the socket's buffers.
PAD = "x" * 4096


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Which server: trio-websocket's (`websocket.serve`) or hypercorn's (`http.serve`)."""
    param: str = request.param
    return param


def task_count() -> int:
    """Every task of this Trio run."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    return walk(trio.lowlevel.current_root_task())


@asynccontextmanager
async def deaf_client(url: str, hello: bytes) -> AsyncIterator[trio.SocketStream]:
    """A WebSocket connection that sent `hello` and will never read again."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    tcp = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        await tcp.send_all(
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await tcp.receive_some(1)  # the 101, and not a byte more
        assert head.startswith(b"HTTP/1.1 101"), head
        await tcp.send_all(frame(hello, True))
        yield tcp
    finally:
        await trio.aclose_forcefully(tcp)


async def flood(tcp: trio.SocketStream, messages: list[bytes]) -> int:
    """Send `messages` until the server stops taking them; how many it took."""
    for sent, message in enumerate(messages):
        with trio.move_on_after(0.5) as blocked:
            try:
                await tcp.send_all(frame(message, True))
            except trio.BrokenResourceError:
                return sent  # the server hung up
        if blocked.cancelled_caught:
            return sent
    return len(messages)


def rpc_messages(count: int) -> list[bytes]:
    """Messages the server answers at once with 4 KiB: calls that run, and calls it refuses."""
    out = []
    for n in range(1, count + 1):
        if n % 2:
            iface, version, op, args = "tether.Conformance", "1.2.3", "big", [len(PAD)]
        else:  # the refusal names the interface asked for
            iface, version, op, args = f"attack.{PAD}", "1.0.0", "big", []
        message = {"t": "call", "id": n, "iface": iface, "ver": version, "op": op}
        out.append(json.dumps({**message, "args": args, "ctx": {}}).encode())
    return out


async def test_a_websocket_rpc_client_that_never_reads_holds_a_bounded_number_of_tasks(
    variant: str,
) -> None:
    """Each reply that could not be sent handed the session's reading to a new
    task: 30,000 tasks (and replies) in 8 s from one connection, until the
    keepalive closed it 40 s later."""
    manager, _ = make_manager()
    with trio.fail_after(30):
        async with (
            served(variant, manager, max_in_flight=IN_FLIGHT) as url,
            deaf_client(url, b'{"t":"hello","protocol":1}') as tcp,
        ):
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            before = task_count()
            taken = await flood(tcp, rpc_messages(3000))
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            grown = task_count() - before
    # Replies waiting for the client: at most one task per call in flight, and
    # as many refusals; then the session stops reading.
    assert grown <= 2 * IN_FLIGHT + 4, f"{grown} tasks for {taken} messages never read"
    assert taken < 3000


class Echo(tether.IpcInterface):
    channel_name = "attack.echo"
    version = "1.0.0"

    async def echo(self, text: str) -> str: ...


class EchoHandler(tether.IpcHandler, Echo):
    async def echo(self, text: str) -> str:
        return text


def invokes(count: int) -> list[bytes]:
    """Invokes the backend answers at once, with 4 KiB each."""
    return [
        json.dumps(
            {"t": "invoke", "id": n, "channel": "attack.echo", "method": "echo", "args": [PAD]}
        ).encode()
        for n in range(1, count + 1)
    ]


async def test_an_ipc_frontend_that_never_reads_holds_a_bounded_number_of_replies(
    variant: str,
) -> None:
    """An invoke's reply waited outside max_in_flight, in a task of its own and the
    session's unbounded queue: 27,000 of them (270 MB of replies) in 8 s from
    one connection."""
    backend = tether.BackendIpc(max_in_flight=IN_FLIGHT, max_pending_notifications=16)
    backend.register(EchoHandler)
    hello = b'{"t":"hello","protocol":1,"mode":"ipc","channels":{"attack.echo":"1.0.0"}}'
    with trio.fail_after(30):
        async with (
            served(variant, None, ipc=backend) as url,
            deaf_client(url, hello) as tcp,
        ):
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            before = task_count()
            taken = await flood(tcp, invokes(3000))
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            grown = task_count() - before
            queued = [len(session._peer.outbox) for session in backend.sessions]
    assert grown <= 2 * IN_FLIGHT + 4, f"{grown} tasks for {taken} invokes never read"
    # Replies and refusals: max_in_flight + max_pending_notifications at most.
    assert all(length <= IN_FLIGHT + 16 for length in queued), queued
