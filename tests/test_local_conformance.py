"""The local transport passes the RPC and IPC conformance suites over a real Unix socket."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from tether import BackendIpc, FrontendIpc, RpcInterface, RpcManager
from tether.runtime import RpcBackend
from tether.runtime._util import open_service_nursery
from tether.testing import IpcConformance, RpcConformance
from tether.testing._rpc_lifecycle_suite import Stop
from tether.transports import local


@asynccontextmanager
async def _server(
    manager: RpcManager | None,
    ipc: BackendIpc | None,
    options: dict[str, Any],
    stop: Stop | None = None,
) -> AsyncIterator[str]:
    """Serve on a fresh socket; yield its path. Stopped once `stop()` returns, when given."""
    size = options.get("max_message_size")
    extra = {} if size is None else {"max_message_size": size}
    async with open_service_nursery() as nursery:
        path = await nursery.start(_serve_until, stop, manager, ipc, extra)
        yield path
        nursery.cancel_scope.cancel()


async def _serve_until(
    stop: Stop | None,
    manager: RpcManager | None,
    ipc: BackendIpc | None,
    extra: dict[str, Any],
    *,
    task_status: trio.TaskStatus[str],
) -> None:
    async with trio.open_nursery() as nursery:
        path = await nursery.start(functools.partial(local.serve, manager, ipc=ipc, **extra))
        task_status.started(path)
        if stop is not None:
            # local.serve has no graceful stop: it stops by being cancelled.
            await stop()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _served_rpc(
    manager: RpcManager,
    interfaces: Sequence[type[RpcInterface]],
    options: dict[str, Any],
    stop: Stop | None = None,
) -> AsyncIterator[RpcBackend]:
    async with (
        _server(manager, None, options, stop) as path,
        local.connect(path, interfaces=interfaces, **options) as backend,
    ):
        yield backend


@asynccontextmanager
async def _served_ipc(backend: BackendIpc, options: dict[str, Any]) -> AsyncIterator[FrontendIpc]:
    async with (
        _server(None, backend, options) as path,
        local.connect_ipc(path, **options) as frontend,
    ):
        yield frontend


class TestLocalRpc(RpcConformance):
    # A local connection is paired with its backend: lost, it is not made
    # again; stopping the server closes every connection at once.
    reconnects = None
    server_stop = "closes"

    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc(manager, interfaces, options)

    def connect_stoppable(
        self,
        manager: RpcManager,
        stop: Stop,
        *,
        interfaces: Sequence[type[RpcInterface]],
        **options: Any,
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc(manager, interfaces, options, stop)


class TestLocalIpc(IpcConformance):
    def connect_ipc(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        return _served_ipc(backend, options)
