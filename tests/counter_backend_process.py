"""A counter backend in a process of its own, for tests that kill it mid-call.

Run as `python tests/counter_backend_process.py http|websocket PORT COUNT_FILE`:
it serves `Counter` on 127.0.0.1:PORT (0: a free one), prints `url <url>` once
it listens, and `started increment` when an increment has written its new
count to COUNT_FILE, after which that call waits until the process is
killed. `read` returns the count in the file. Not a test module itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import tether
from tether import RpcInterface, RpcManager
from tether.transports import http, websocket


class Counter(RpcInterface):
    interface_name = "tests.Counter"
    interface_version = "1.0.0"

    async def increment(self) -> int: ...

    @tether.idempotent
    async def read(self) -> int: ...


class FileCounter(Counter):
    def __init__(self, path: Path) -> None:
        self.path = path

    async def increment(self) -> int:
        count = int(self.path.read_text() or "0") + 1
        self.path.write_text(str(count))
        print("started increment", flush=True)
        await trio.sleep_forever()  # killed mid-call
        return count  # pragma: no cover

    async def read(self) -> int:
        return int(self.path.read_text() or "0")


async def main(kind: str, port: int, path: Path) -> None:
    manager = RpcManager()
    manager.register_impl(Counter, FileCounter(path))
    serve = http.serve if kind == "http" else websocket.serve
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, manager, "127.0.0.1", port)
        print(f"url {url}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
