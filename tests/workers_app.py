"""The app `tether serve --workers` serves in tests/test_cli_workers.py.

`Pid.pid` answers the pid of the worker process that ran it; the IPC channel
`PidIpc.pid` the same, over a session.
"""

from __future__ import annotations

import os
import sys

import trio

import tether


class Pid(tether.RpcInterface):
    interface_name = "WorkersPid"
    interface_version = "1.0.0"

    async def pid(self) -> int: ...

    async def nap(self, seconds: float) -> int: ...


class PidImpl(Pid):
    async def pid(self) -> int:
        return os.getpid()

    async def nap(self, seconds: float) -> int:
        # The test waits for this line to know that the call is running.
        print(f"napping {os.getpid()}", file=sys.stderr, flush=True)
        await trio.sleep(seconds)
        return os.getpid()


class PidIpc(tether.IpcInterface):
    channel_name = "workers.pid"
    version = "1.0.0"

    async def pid(self) -> int: ...


class PidIpcImpl(tether.IpcHandler, PidIpc):
    async def pid(self) -> int:
        return os.getpid()


manager = tether.RpcManager()
manager.register_impl(Pid, PidImpl)
ipc = tether.BackendIpc()
ipc.register(PidIpcImpl)
app = (manager, ipc)
