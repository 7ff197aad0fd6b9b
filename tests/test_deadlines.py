# mypy: disable-error-code="empty-body"
"""A caller whose own deadline expired sees a clean cancellation, never `DeadlineExceeded`.

The client sends the time it has left; the backend runs the call under that
deadline and answers `deadline-exceeded` (504) when it passes. That answer and
the expiry of the caller's own cancel scope are the same event, and when the
loop is busy the reply can wake the caller before Trio has delivered the
scope's cancellation. The runtime must then let the cancellation through
(`move_on_after` catches it, `fail_after` raises `TooSlowError`), on RPC and
IPC alike, while a caller whose deadline has *not* passed (a backend with a
shorter timeout of its own) still gets `DeadlineExceeded`.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import tether
from tether.runtime import ClientOptions, RpcBackend, open_ipc_connection
from tether.runtime._protocol import (
    PROTOCOL_VERSION,
    Call,
    Error,
    ErrorInfo,
    Hello,
    InterfaceInfo,
    Invoke,
    Result,
    Welcome,
    decode,
    encode,
)
from tether.runtime._stream import MessageStream
from tether.transports import http, memory, websocket

TIMEOUT = 10.0


class Sleeper(tether.RpcInterface):
    interface_name = "test.Sleeper"
    interface_version = "1.0.0"

    async def nap(self, seconds: float) -> None: ...


class SleeperImpl(Sleeper):
    async def nap(self, seconds: float) -> None:
        await trio.sleep(seconds)


class Napper(tether.IpcInterface):
    channel_name = "test.napper"
    version = "1.0.0"

    async def nap(self, seconds: float) -> None: ...


class NapperHandler(tether.IpcHandler, Napper):
    async def nap(self, seconds: float) -> None:
        await trio.sleep(seconds)


def _deadline_exceeded(call_id: int) -> Error:
    info = ErrorInfo(
        "deadline-exceeded",
        504,
        "DeadlineExceeded",
        "test.Sleeper.nap did not finish before the deadline the caller set",
    )
    return Error(call_id, info)


# ---------------------------------------------------------------------------
# RPC: a backend whose 504 comes back with no checkpoint on the way


class LateReplyBackend(RpcBackend):
    """Answers every call with `deadline-exceeded` after `delay` seconds.

    It waits shielded, so the caller's expired scope cannot interrupt it, and
    returns the reply without a checkpoint after: exactly what a transport does
    when the reply and the expiry reach a busy loop in the same pass.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: list[Call] = []

    @property
    def options(self) -> ClientOptions:
        return ClientOptions()

    @property
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        return {Sleeper.interface_name: InterfaceInfo("1.0.0", ("nap",))}

    async def request(self, call: Call) -> Result | Error:
        self.calls.append(call)
        with trio.CancelScope(shield=True):
            await trio.sleep(self.delay)
        return _deadline_exceeded(call.id)


async def test_rpc_504_after_the_callers_deadline_is_caught_by_move_on_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = LateReplyBackend(delay=2.0)
    sleeper = backend.get_client(Sleeper)
    with trio.move_on_after(1.0) as scope:
        await sleeper.nap(10.0)
    assert scope.cancelled_caught
    assert backend.calls[0].timeout_ms == 1000  # the caller's time left went out


async def test_rpc_504_after_the_callers_deadline_is_too_slow_error_from_fail_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sleeper = LateReplyBackend(delay=2.0).get_client(Sleeper)
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(1.0):
            await sleeper.nap(10.0)


async def test_rpc_504_before_the_callers_deadline_is_deadline_exceeded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A backend with a shorter timeout of its own: the caller's scope has time left."""
    sleeper = LateReplyBackend(delay=0.5).get_client(Sleeper)
    with trio.move_on_after(1.0) as scope:
        with pytest.raises(tether.DeadlineExceeded, match="did not finish before the deadline"):
            await sleeper.nap(10.0)
    assert not scope.cancelled_caught
    # And with no deadline at all.
    with pytest.raises(tether.DeadlineExceeded):
        await sleeper.nap(10.0)


async def test_rpc_504_from_a_shielded_caller_is_deadline_exceeded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A shield hides the outer deadline: it is not the caller's to wait for."""
    sleeper = LateReplyBackend(delay=2.0).get_client(Sleeper)
    with trio.move_on_after(1.0) as outer:
        with trio.CancelScope(shield=True), pytest.raises(tether.DeadlineExceeded):
            await sleeper.nap(10.0)
    assert not outer.cancelled_caught


# ---------------------------------------------------------------------------
# IPC: a backend stream that hands the 504 to the frontend's reader while the
# invoke is still being sent, so the invoke finds its reply without waiting


class LateReplyStream(MessageStream):
    """The backend's side of a session, faked: it welcomes, then answers each
    invoke with `deadline-exceeded` after `delay` seconds (shielded), and
    returns from the send only once the frontend's reader has taken the reply.
    """

    max_message_size = 1 << 20

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inbox: deque[bytes] = deque()
        self.arrived = trio.Event()
        self.taken = trio.Event()
        self.closed = False
        self.invokes: list[Invoke] = []

    def _push(self, data: bytes) -> None:
        self.inbox.append(data)
        self.arrived.set()

    async def send_message(self, data: bytes) -> None:
        message = decode(data)
        if isinstance(message, Hello):
            self._push(encode(Welcome(PROTOCOL_VERSION, "session-1", dict(message.channels))))
        elif isinstance(message, Invoke):
            self.invokes.append(message)
            with trio.CancelScope(shield=True):
                await trio.sleep(self.delay)
                self.taken = trio.Event()
                self._push(encode(_deadline_exceeded(message.id)))
                await self.taken.wait()

    async def receive_message(self) -> bytes:
        while not self.inbox:
            if self.closed:
                raise tether.ConnectionClosed("closed", reason="closed")
            self.arrived = trio.Event()
            await self.arrived.wait()
        data = self.inbox.popleft()
        self.taken.set()
        return data

    async def aclose(self, reason: str | None = None) -> None:
        self.closed = True
        self.arrived.set()


async def test_ipc_504_after_the_callers_deadline_is_caught_by_move_on_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = LateReplyStream(delay=2.0)
    async with open_ipc_connection(stream, channels=[Napper]) as frontend:
        napper = frontend.proxy(Napper)
        with trio.move_on_after(1.0) as scope:
            await napper.nap(10.0)
        assert scope.cancelled_caught
        assert stream.invokes[0].timeout_ms == 1000
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(1.0):
                await napper.nap(10.0)
        # The untyped call goes the same way.
        with trio.move_on_after(1.0) as scope:
            await frontend.call_backend("test.napper", "nap", 10.0)
        assert scope.cancelled_caught


async def test_ipc_504_before_the_callers_deadline_is_deadline_exceeded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = LateReplyStream(delay=0.5)
    async with open_ipc_connection(stream, channels=[Napper]) as frontend:
        napper = frontend.proxy(Napper)
        with trio.move_on_after(1.0) as scope:
            with pytest.raises(tether.DeadlineExceeded):
                await napper.nap(10.0)
        assert not scope.cancelled_caught


# ---------------------------------------------------------------------------
# The real transports, with the caller's loop busy when its deadline passes

#: Calls per transport: enough to hit the race nearly every time on a busy loop.
CALLS = 40
#: Each call's own deadline, in seconds; the impl would take far longer.
CALL_TIMEOUT = 0.01


async def _busy_across(deadline: float) -> None:
    """Hog the loop from just before `deadline` until well after it.

    The backend (in another process) answers 504 at the deadline, so its
    reply and the expiry of the caller's scope reach the caller's loop in the
    same pass, as they do under load.
    """
    await trio.sleep_until(deadline - 0.001)
    while trio.current_time() < deadline + 0.006:
        pass  # no checkpoint: the loop is busy


async def _no_deadline_exceeded_escapes(call: Callable[[], Awaitable[object]]) -> None:
    escaped: list[tether.DeadlineExceeded] = []
    caught = 0
    async with trio.open_nursery() as nursery:
        for _ in range(CALLS):
            with trio.move_on_after(CALL_TIMEOUT) as scope:
                nursery.start_soon(_busy_across, scope.deadline)
                try:
                    await call()
                except tether.DeadlineExceeded as exc:
                    escaped.append(exc)
            caught += scope.cancelled_caught
    assert escaped == []
    assert caught == CALLS


async def _serve_in_child(task_status: trio.TaskStatus[tuple[str, str]]) -> None:
    """Run this module as a program: the HTTP and WebSocket servers in their own
    process, so that their deadlines expire while the caller's loop is busy."""
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        seen = b""
        while not seen.endswith(b"\n"):
            chunk = await process.stdout.receive_some()
            assert chunk, f"the server exited before serving (status {process.returncode})"
            seen += chunk
        http_url, ws_url = seen.decode().split()
        task_status.started((http_url, ws_url))
        await trio.sleep_forever()
    finally:
        process.terminate()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
        await process.stdout.aclose()


@asynccontextmanager
async def served_in_child() -> AsyncIterator[tuple[str, str]]:
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(_serve_in_child)
        yield urls
        nursery.cancel_scope.cancel()


def _manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Sleeper, SleeperImpl)
    return manager


def _backend_ipc() -> tether.BackendIpc:
    backend = tether.BackendIpc()
    backend.register(NapperHandler)
    return backend


async def _main() -> None:
    async with trio.open_nursery() as nursery:
        manager, ipc = _manager(), _backend_ipc()
        http_url = await nursery.start(functools.partial(http.serve, manager, ipc=ipc))
        ws_url = await nursery.start(functools.partial(websocket.serve, manager, ipc=ipc))
        print(http_url, ws_url, flush=True)


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_no_deadline_exceeded_escapes_a_busy_caller_over_the_network(
    transport: str,
) -> None:
    with trio.fail_after(60):
        async with served_in_child() as (http_url, ws_url):
            connect: Any = http if transport == "http" else websocket
            url = http_url if transport == "http" else ws_url
            async with connect.connect(url, interfaces=[Sleeper]) as backend:
                sleeper = backend.get_client(Sleeper)
                await _no_deadline_exceeded_escapes(lambda: sleeper.nap(10.0))
            async with connect.connect_ipc(url, channels=[Napper]) as frontend:
                napper = frontend.proxy(Napper)
                await _no_deadline_exceeded_escapes(lambda: napper.nap(10.0))


@pytest.mark.parametrize("thread", [False, True])
async def test_no_deadline_exceeded_escapes_a_busy_caller_in_process(thread: bool) -> None:
    with trio.fail_after(60):
        async with memory.connect(_manager(), interfaces=[Sleeper], thread=thread) as backend:
            sleeper = backend.get_client(Sleeper)
            await _no_deadline_exceeded_escapes(lambda: sleeper.nap(10.0))
        async with memory.connect_ipc(_backend_ipc(), channels=[Napper], thread=thread) as front:
            napper = front.proxy(Napper)
            await _no_deadline_exceeded_escapes(lambda: napper.nap(10.0))


if __name__ == "__main__":
    trio.run(_main)
