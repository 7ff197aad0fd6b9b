# mypy: disable-error-code="empty-body"
"""A backend paired with its frontend, for tests/test_local_spawn.py; not a test module itself.

    python tests/local_paired_backend.py serve      # local.serve_paired: RPC and IPC
    python tests/local_paired_backend.py stubborn   # the same, then ignores SIGTERM

Its RPC interface and IPC channel log what they do to the `paired_backend`
logger (the records reach the test's logging over the lifeline): `hang`
logs "started <key>" before it waits forever, so a test knows a call is
running before it kills this process. `stubborn` serves like `serve`, then,
once its frontend has closed the lifeline, ignores SIGTERM and waits, so
that only SIGKILL ends it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import trio

import tether
from tether.transports import local

log = logging.getLogger("paired_backend")


class PairedRpc(tether.RpcInterface):
    interface_name = "tests.Paired"
    interface_version = "1.0.0"

    async def add(self, a: int, b: int) -> int: ...
    async def pid(self) -> int: ...
    async def say(self, message: str) -> str: ...
    async def hang(self, key: str) -> None: ...


class PairedIpc(tether.IpcInterface):
    channel_name = "tests.paired"
    version = "1.0.0"

    async def add(self, a: int, b: int) -> int: ...
    async def say(self, message: str) -> str: ...
    async def hang(self, key: str) -> None: ...


async def _say(message: str) -> str:
    """Log `message` here; return the ActivityId the backend saw."""
    log.info("%s", message)
    context = tether.current_context()
    return context.activity_id if context is not None else ""


async def _hang(key: str) -> None:
    log.info("started %s", key)
    await trio.sleep_forever()


class PairedRpcImpl(PairedRpc):
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def pid(self) -> int:
        return os.getpid()

    async def say(self, message: str) -> str:
        return await _say(message)

    async def hang(self, key: str) -> None:
        await _hang(key)


class PairedIpcHandler(tether.IpcHandler, PairedIpc):
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def say(self, message: str) -> str:
        return await _say(message)

    async def hang(self, key: str) -> None:
        await _hang(key)


async def main() -> None:
    manager = tether.RpcManager()
    manager.register_impl(PairedRpc, PairedRpcImpl())
    ipc = tether.BackendIpc()
    ipc.register(PairedIpcHandler)
    await local.serve_paired(manager, ipc=ipc)


if __name__ == "__main__":
    stubborn = sys.argv[1] == "stubborn"
    if stubborn:
        # Before serving: serve_paired's own SIGTERM handling puts this back
        # when it returns, so no SIGTERM, early or late, ends this process.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trio.run(main)
    if stubborn:
        time.sleep(60)  # the frontend's SIGKILL ends it long before
