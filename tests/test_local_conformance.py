"""The local transport passes the RPC and IPC conformance suites over a real Unix socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from tether import BackendIpc, FrontendIpc, RpcInterface, RpcManager
from tether.runtime import RpcBackend
from tether.runtime._util import open_service_nursery
from tether.testing import IpcConformance, RpcConformance
from tether.transports import local


@asynccontextmanager
async def _server(
    manager: RpcManager | None, ipc: BackendIpc | None, options: dict[str, Any]
) -> AsyncIterator[str]:
    size = options.get("max_message_size")
    extra = {} if size is None else {"max_message_size": size}
    async with open_service_nursery() as nursery:
        path = await nursery.start(
            lambda task_status: local.serve(manager, ipc=ipc, task_status=task_status, **extra)
        )
        yield path
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _served_rpc(
    manager: RpcManager, interfaces: Sequence[type[RpcInterface]], options: dict[str, Any]
) -> AsyncIterator[RpcBackend]:
    async with (
        _server(manager, None, options) as path,
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
    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc(manager, interfaces, options)


class TestLocalIpc(IpcConformance):
    def connect_ipc(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        return _served_ipc(backend, options)
