"""Serve a manager or a BackendIpc over a named transport and connect to it, for a block.

The pytest plugin's `rpc_backend` and `ipc_frontend` fixtures are these
context managers: real servers on 127.0.0.1 port 0 for HTTP and WebSocket,
the in-process transport on this loop ("memory") or on a thread of its own
("thread"). Starting and stopping are each capped at `timeout` seconds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import trio

from ..runtime import BackendIpc, FrontendIpc, RpcBackend, RpcInterface, RpcManager
from .pytest_plugin import TRANSPORTS

__all__ = ["open_ipc_frontend", "open_rpc_backend"]

T = TypeVar("T")


def check_transport(name: str) -> str:
    if name not in TRANSPORTS:
        raise ValueError(
            f"unknown tether transport {name!r}: expected one of {', '.join(TRANSPORTS)}"
        )
    return name


async def _hold(
    open_: Callable[[], AbstractAsyncContextManager[T]],
    what: str,
    seconds: float,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[T] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Enter `open_()`, report its value, and leave it once `done` is set.

    Entering and leaving are each capped at `seconds`; the test in between is not.
    """
    phase = "open"
    with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
        async with open_() as value:
            scope.deadline = math.inf
            task_status.started(value)
            await done.wait()
            phase = "close"
            scope.deadline = trio.current_time() + seconds
    if scope.cancelled_caught:
        raise trio.TooSlowError(
            f"{what} did not {phase} within {seconds:g} s (the tether_timeout ini option)"
        )


@asynccontextmanager
async def _served(
    transport: str,
    manager: RpcManager | None,
    ipc: BackendIpc | None,
    connect: Callable[[str | None], AbstractAsyncContextManager[T]],
    what: str,
    seconds: float,
) -> AsyncIterator[T]:
    check_transport(transport)
    async with trio.open_nursery() as servers:
        url: str | None = None
        if transport in ("http", "websocket"):
            serve: Any
            if transport == "http":
                from ..transports import http

                serve = http.serve
            else:
                from ..transports import websocket

                serve = websocket.serve
            with trio.move_on_after(seconds) as starting:
                url = await servers.start(
                    functools.partial(serve, manager, "127.0.0.1", 0, ipc=ipc)
                )
            if starting.cancelled_caught:
                raise trio.TooSlowError(
                    f"{what}: the {transport} server did not start within {seconds:g} s "
                    "(the tether_timeout ini option)"
                )
        done = trio.Event()
        async with trio.open_nursery() as clients:
            value = await clients.start(_hold, functools.partial(connect, url), what, seconds, done)
            try:
                yield value
            finally:
                done.set()
        # The client has closed: the server can go at once.
        servers.cancel_scope.cancel()


def _interfaces(manager: RpcManager) -> list[type[RpcInterface]]:
    found = []
    for name in manager.describe():
        registration = manager.lookup(name)
        if registration is not None:
            found.append(registration.interface)
    return found


def open_rpc_backend(
    transport: str, manager: RpcManager, *, timeout: float = 10.0
) -> AbstractAsyncContextManager[RpcBackend]:
    """Serve `manager` over `transport` and connect to every interface it serves."""
    interfaces = _interfaces(manager)

    def connect(url: str | None) -> AbstractAsyncContextManager[RpcBackend]:
        if transport == "http":
            from ..transports import http

            assert url is not None
            return http.connect(url, interfaces=interfaces)
        if transport == "websocket":
            from ..transports import websocket

            assert url is not None
            return websocket.connect(url, interfaces=interfaces)
        from ..transports import memory

        return memory.connect(manager, interfaces=interfaces, thread=transport == "thread")

    what = f"rpc_backend over {transport}"
    return _served(transport, manager, None, connect, what, timeout)


def open_ipc_frontend(
    transport: str, backend: BackendIpc, *, timeout: float = 10.0
) -> AbstractAsyncContextManager[FrontendIpc]:
    """Serve `backend` over `transport` and open an IPC session with it."""

    def connect(url: str | None) -> AbstractAsyncContextManager[FrontendIpc]:
        if transport == "http":
            from ..transports import http

            assert url is not None
            return http.connect_ipc(url)
        if transport == "websocket":
            from ..transports import websocket

            assert url is not None
            return websocket.connect_ipc(url)
        from ..transports import memory

        return memory.connect_ipc(backend, thread=transport == "thread")

    what = f"ipc_frontend over {transport}"
    return _served(transport, None, backend, connect, what, timeout)
