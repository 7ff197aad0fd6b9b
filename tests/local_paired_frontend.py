"""A frontend in a process of its own that spawns tests/local_paired_backend.py; not a test.

    python tests/local_paired_frontend.py

It prints `backend <pid> <socket path>` once its backend is ready, then waits
until it is killed: tests/test_local_spawn.py kills it with SIGKILL and
measures how soon the backend notices.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from tether.transports import local

BACKEND = Path(__file__).resolve().parent / "local_paired_backend.py"


async def main() -> None:
    async with local.spawn([sys.executable, str(BACKEND), "serve"]) as backend:
        print(f"backend {backend.pid} {backend.path}", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
