# mypy: disable-error-code="empty-body"
"""A backend in a process of its own that a SIGTERM stops gracefully, for the rolling restart.

Run as `python tests/rolling_backend_process.py http|websocket PORT`: it serves
`Echo` on 127.0.0.1:PORT (0: a free port) with `http.serve` or
`websocket.serve`, prints `url <url>` once it listens, and on SIGTERM shuts
down gracefully (its `shutdown_trigger`): calls running finish, then it exits 0.
Not a test module itself.
"""

from __future__ import annotations

import functools
import signal
import sys

import trio

import tether
from tether.runtime import RpcInterface, RpcManager
from tether.transports import http, websocket

#: Seconds the calls running get at a graceful stop (`graceful_timeout`).
GRACE = 5.0


class Echo(RpcInterface):
    interface_name = "tests.rolling.Echo"
    interface_version = "1.0.0"

    @tether.idempotent
    async def echo(self, value: int) -> int: ...


class EchoImpl(Echo):
    async def echo(self, value: int) -> int:
        # A call that yields, so that some are running when the stop comes.
        await trio.sleep(0.001)
        return value


async def main(kind: str, port: int) -> None:
    manager = RpcManager()
    manager.register_impl(Echo, EchoImpl())
    serve = http.serve if kind == "http" else websocket.serve
    # Installed before the server listens: a SIGTERM can never find Python's
    # default handler (which would end the process at once).
    with trio.open_signal_receiver(signal.SIGTERM) as signals:

        async def sigterm() -> None:
            async for _ in signals:
                return

        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                functools.partial(
                    serve,
                    manager,
                    "127.0.0.1",
                    port,
                    graceful_timeout=GRACE,
                    shutdown_trigger=sigterm,
                )
            )
            print(f"url {url}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
