"""The HTTP transport passes the RPC and IPC conformance suites over real hypercorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from tether import BackendIpc, FrontendIpc, RpcInterface, RpcManager
from tether.runtime import RpcBackend
from tether.runtime._util import open_service_nursery
from tether.testing import IpcConformance, RpcConformance
from tether.transports import http


@asynccontextmanager
async def _served_rpc(
    manager: RpcManager, interfaces: Sequence[type[RpcInterface]], options: dict[str, Any]
) -> AsyncIterator[RpcBackend]:
    server_options = {}
    if "max_message_size" in options:
        server_options["max_body_size"] = options["max_message_size"]
    async with open_service_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: http.serve(
                manager, "127.0.0.1", 0, task_status=task_status, **server_options
            )
        )
        async with http.connect(url, interfaces=interfaces, **options) as backend:
            yield backend
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _served_ipc(backend: BackendIpc, options: dict[str, Any]) -> AsyncIterator[FrontendIpc]:
    server_options = {}
    if "max_message_size" in options:
        server_options["max_body_size"] = options["max_message_size"]
    async with open_service_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: http.serve(
                None, "127.0.0.1", 0, ipc=backend, task_status=task_status, **server_options
            )
        )
        async with http.connect_ipc(url, **options) as frontend:
            yield frontend
        nursery.cancel_scope.cancel()


class TestHttpRpc(RpcConformance):
    stream_kinds = frozenset()  # until the HTTP transport carries streams: each is refused

    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc(manager, interfaces, options)


class TestHttpIpc(IpcConformance):
    def connect_ipc(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        return _served_ipc(backend, options)
