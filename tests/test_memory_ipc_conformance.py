"""The in-process transport passes the IPC conformance suite, in both modes."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from tether import BackendIpc, FrontendIpc
from tether.testing import IpcConformance
from tether.transports import memory


class TestSameLoop(IpcConformance):
    def connect_ipc(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        return memory.connect_ipc(backend, **options)


class TestBackendThread(IpcConformance):
    def connect_ipc(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        return memory.connect_ipc(backend, thread=True, **options)
