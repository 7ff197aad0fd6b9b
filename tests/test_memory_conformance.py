"""The in-process transport passes the RPC conformance suite, in both modes."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from tether import RpcInterface, RpcManager
from tether.runtime import RpcBackend
from tether.testing import RpcConformance
from tether.transports import memory


class TestSameLoop(RpcConformance):
    # The backend lives as long as the connection: nothing to reconnect to,
    # no server to stop apart from leaving the connect block.
    reconnects = None
    server_stop = None

    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return memory.connect(manager, interfaces=interfaces, **options)


class TestBackendThread(RpcConformance):
    reconnects = None
    server_stop = None

    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return memory.connect(manager, interfaces=interfaces, thread=True, **options)
