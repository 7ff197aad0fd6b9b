"""The WebSocket transport passes the RPC and IPC conformance suites on 127.0.0.1.

Twice: on trio-websocket's server (`websocket.serve`), and on the HTTP
transport's hypercorn server (`{prefix}/ws`). The client is the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from tether import BackendIpc, FrontendIpc, RpcInterface, RpcManager
from tether.runtime import RpcBackend
from tether.runtime._util import open_service_nursery
from tether.testing import IpcConformance, RpcConformance
from tether.testing._rpc_lifecycle_suite import Stop
from tether.transports import http, websocket


@asynccontextmanager
async def _server(
    variant: str,
    manager: RpcManager | None,
    ipc: BackendIpc | None,
    options: dict[str, Any],
    stop: Stop | None = None,
) -> AsyncIterator[str]:
    """Serve on `variant` ("trio-websocket" or "hypercorn"); yield the ws:// URL.

    The server shuts down gracefully once `stop()` returns, when given.
    """
    size = options.get("max_message_size")
    trigger = {} if stop is None else {"shutdown_trigger": stop}
    async with open_service_nursery() as nursery:
        if variant == "trio-websocket":
            extra = {} if size is None else {"max_message_size": size}
            url = await nursery.start(
                lambda task_status: websocket.serve(
                    manager, "127.0.0.1", 0, ipc=ipc, task_status=task_status, **extra, **trigger
                )
            )
        else:
            settings = websocket.WebSocketSettings(
                **({} if size is None else {"max_message_size": size})
            )
            base = await nursery.start(
                lambda task_status: http.serve(
                    manager,
                    "127.0.0.1",
                    0,
                    ipc=ipc,
                    websocket=settings,
                    task_status=task_status,
                    **trigger,
                )
            )
            url = base.replace("http://", "ws://", 1) + "/ws"
        yield url
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _served_rpc(
    variant: str,
    manager: RpcManager,
    interfaces: Sequence[type[RpcInterface]],
    options: dict[str, Any],
    stop: Stop | None = None,
) -> AsyncIterator[RpcBackend]:
    async with (
        _server(variant, manager, None, options, stop) as url,
        websocket.connect(url, interfaces=interfaces, **options) as backend,
    ):
        yield backend


@asynccontextmanager
async def _served_ipc(
    variant: str, backend: BackendIpc, options: dict[str, Any]
) -> AsyncIterator[FrontendIpc]:
    async with (
        _server(variant, None, backend, options) as url,
        websocket.connect_ipc(url, **options) as frontend,
    ):
        yield frontend


class TestTrioWebSocketRpc(RpcConformance):
    reconnects = "connection"
    server_stop = "drains"

    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc("trio-websocket", manager, interfaces, options)

    def connect_stoppable(
        self,
        manager: RpcManager,
        stop: Stop,
        *,
        interfaces: Sequence[type[RpcInterface]],
        **options: Any,
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc("trio-websocket", manager, interfaces, options, stop)


class TestTrioWebSocketIpc(IpcConformance):
    resumes = True  # a session survives a dropped socket

    def connect_ipc(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        return _served_ipc("trio-websocket", backend, options)


class TestHypercornWebSocketRpc(RpcConformance):
    reconnects = "connection"
    server_stop = "drains"

    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc("hypercorn", manager, interfaces, options)

    def connect_stoppable(
        self,
        manager: RpcManager,
        stop: Stop,
        *,
        interfaces: Sequence[type[RpcInterface]],
        **options: Any,
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc("hypercorn", manager, interfaces, options, stop)


class TestHypercornWebSocketIpc(IpcConformance):
    resumes = True  # a session survives a dropped socket

    def connect_ipc(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        return _served_ipc("hypercorn", backend, options)
