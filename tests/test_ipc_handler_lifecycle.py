"""Per-session IpcHandlers are told when their session ends, however early it ends.

Below the conformance suite: a hand-written frontend against `serve_ipc_session`,
to reach the moment between `hello` and `welcome` that no transport can aim at.
"""

from __future__ import annotations

import trio

import tether
from tether.runtime import serve_ipc_session
from tether.runtime._protocol import PROTOCOL_VERSION, Hello, encode
from tether.transports import memory

TIMEOUT = 10.0


class CounterIpc(tether.IpcInterface):
    channel_name = "lifecycle-counter"
    version = "1.0.0"

    async def get(self) -> int: ...


async def test_a_handler_made_for_a_session_whose_frontend_left_before_welcome_is_closed() -> None:
    made: list[CounterHandler] = []
    closed: list[str] = []

    class CounterHandler(tether.IpcHandler, CounterIpc):
        def __init__(self) -> None:
            made.append(self)  # e.g. opens a per-session resource

        async def get(self) -> int:
            return 1

        def on_close(self, reason: str) -> None:
            closed.append(reason)  # ...and releases it here

    backend = tether.BackendIpc()
    backend.register(CounterHandler)
    client, server = memory.stream_pair()
    with trio.fail_after(TIMEOUT):
        # The frontend says hello, then leaves before the backend can welcome it.
        await client.send_message(encode(Hello(PROTOCOL_VERSION, mode="ipc")))
        await client.aclose("gone")
        await serve_ipc_session(backend, server)
    assert len(made) == 1  # the session's handler was made...
    assert len(closed) == 1, "...so it must be told the session ended, or it leaks"
    assert backend.sessions == ()
