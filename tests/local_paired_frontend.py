"""A frontend in a process of its own that spawns tests/local_paired_backend.py; not a test.

    python tests/local_paired_frontend.py

It opens an RPC connection and an IPC session on its backend and starts a
call on each that never returns; once the backend has logged that both are
running, it prints `backend <pid> <socket path>` and waits to be killed:
tests/test_local_spawn.py kills it with SIGKILL and measures how soon the
backend notices.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import trio
from local_paired_backend import PairedIpc, PairedRpc

from tether.transports import local

BACKEND = Path(__file__).resolve().parent / "local_paired_backend.py"


class Started(logging.Handler):
    """Counts the backend's "started <call>" records."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("started "):
            self.count += 1
            self.changed.set()
            self.changed = trio.Event()


async def main() -> None:
    started = Started()
    logger = logging.getLogger("paired_backend")
    logger.addHandler(started)
    logger.setLevel(logging.INFO)
    async with (
        local.spawn([sys.executable, str(BACKEND), "serve"]) as backend,
        backend.connect(interfaces=[PairedRpc]) as connection,
        backend.connect_ipc(channels=[PairedIpc]) as session,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(connection.get_client(PairedRpc).hang, "rpc")
        nursery.start_soon(session.proxy(PairedIpc).hang, "ipc")
        while started.count < 2:
            await started.changed.wait()
        print(f"backend {backend.pid} {backend.path}", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
