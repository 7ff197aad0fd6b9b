"""A WebSocket backend in a process of its own, for tests that kill it.

    python tests/ws_backend.py trio-websocket   # websocket.serve
    python tests/ws_backend.py hypercorn        # http.serve, {prefix}/ws

It serves the conformance suites' RPC interface and IPC channel on 127.0.0.1
(port 0), prints the ws:// URL on one line of stdout, and runs until it is
killed. Used by tests/test_websocket_close.py; not a test module itself.
"""

from __future__ import annotations

import sys
from functools import partial

import trio

from tether.testing import IpcConformance, RpcConformance
from tether.transports import http, websocket


async def main(variant: str) -> None:
    manager = RpcConformance().backend_manager()
    ipc = IpcConformance().backend_ipc()
    async with trio.open_nursery() as nursery:
        if variant == "trio-websocket":
            url = await nursery.start(partial(websocket.serve, manager, "127.0.0.1", 0, ipc=ipc))
        else:
            base = await nursery.start(partial(http.serve, manager, "127.0.0.1", 0, ipc=ipc))
            url = base.replace("http://", "ws://", 1) + "/ws"
        print(url, flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
