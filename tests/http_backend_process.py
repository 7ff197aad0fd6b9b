"""An HTTP backend in a process of its own, for tests that kill it with SIGKILL.

Run as `python tests/http_backend_process.py`: it serves the RPC and IPC
conformance backends on 127.0.0.1 (a free port), prints `url <url>` once it
listens, then `signal <name>` whenever an impl signals its probe (`started:k`
when `wait_until_cancelled("k")` starts), so that a test knows when a call is
running before it kills the process. Not a test module itself.
"""

from __future__ import annotations

import functools
from typing import Any

import trio

from tether.testing import IpcConformance, Probe, RpcConformance
from tether.transports import http


class PrintingProbe(Probe):
    """A probe whose signals are also lines on stdout, for the test process."""

    def signal(self, name: str, value: Any = None) -> None:
        print(f"signal {name}", flush=True)
        super().signal(name, value)


async def main() -> None:
    probe = PrintingProbe()
    serve = functools.partial(
        http.serve,
        RpcConformance().backend_manager(probe),
        "127.0.0.1",
        0,
        ipc=IpcConformance().backend_ipc(probe),
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve)
        print(f"url {url}", flush=True)


if __name__ == "__main__":
    trio.run(main)
