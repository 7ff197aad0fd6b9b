"""Enters a connect or a serve under a cancelled scope; prints `left <case>` once out of it.

Run by tests/test_cancelled_start.py in a process of its own, which the test
kills if it does not end: the defect it pins down hung the whole Trio run
(a shielded task that `nursery.start` waited for, for ever), where no
`fail_after` in the test's own run could reach it.
"""

from __future__ import annotations

import os
import sys
import tempfile

import trio

import tether
from tether.transports import local, websocket


class Ping(tether.RpcInterface):
    interface_name = "tests.CancelledStartPing"
    interface_version = "1.0.0"

    async def ping(self) -> int: ...


class PingImpl(Ping):
    async def ping(self) -> int:
        return 1


async def main(case: str) -> None:
    manager = tether.RpcManager()
    manager.register_impl(Ping, PingImpl())
    async with trio.open_nursery() as nursery:
        if case == "websocket-connect":
            url = await nursery.start(websocket.serve, manager, "127.0.0.1", 0)
            with trio.CancelScope() as scope:
                scope.cancel()
                async with websocket.connect(url, interfaces=[Ping]):
                    raise AssertionError("connected under a cancelled scope")
            assert scope.cancelled_caught
        elif case == "websocket-serve":
            with trio.CancelScope() as scope:
                scope.cancel()
                await nursery.start(websocket.serve, manager, "127.0.0.1", 0)
            assert scope.cancelled_caught
        elif case == "local-serve":
            path = os.path.join(tempfile.mkdtemp(), "t.sock")
            with trio.CancelScope() as scope:
                scope.cancel()
                await nursery.start(local.serve, manager, path)
            assert scope.cancelled_caught
        else:
            raise SystemExit(f"unknown case {case!r}")
        nursery.cancel_scope.cancel()
    print(f"left {case}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
