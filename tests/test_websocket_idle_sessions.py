"""What an idle session costs `websocket.serve`, and that its keepalive still holds.

A server with a thousand idle sessions pays for each one's tasks: the
connection's writer starts only when a send has to wait for the socket, and
one task per server pings every connection instead of one per connection.
"""

from __future__ import annotations

import functools
from contextlib import AsyncExitStack

import trio
import trio.testing
from test_websocket import IPC_HELLO, _PingWatch, make_backend_ipc, silent_client, watched_server

from tether import FrontendIpc
from tether.testing import ConformanceIpc
from tether.transports import websocket


def _task_names(nursery: trio.Nursery) -> list[str]:
    """The names of every task under `nursery`, however deep."""
    names: list[str] = []
    stack = list(nursery.child_tasks)
    while stack:
        task = stack.pop()
        names.append(task.name)
        for child in task.child_nurseries:
            stack.extend(child.child_tasks)
    return names


async def test_idle_ipc_sessions_on_websocket_serve_have_no_writer_nor_pinger_of_their_own() -> (
    None
):
    backend = make_backend_ipc()
    with trio.fail_after(10):
        async with trio.open_nursery() as server:
            url = await server.start(functools.partial(websocket.serve, None, ipc=backend))
            async with AsyncExitStack() as stack:
                for n in range(5):
                    frontend: FrontendIpc = await stack.enter_async_context(
                        websocket.connect_ipc(url, channels=[ConformanceIpc])
                    )
                    assert await frontend.proxy(ConformanceIpc).add(n, 1) == n + 1
                await trio.testing.wait_all_tasks_blocked()
                assert len(backend.sessions) == 5
                names = _task_names(server)
                # Every answer went straight to its socket: no writer was needed.
                assert [name for name in names if name.endswith(".write_loop")] == []
                # One pinger for the server, none per connection.
                assert [name for name in names if name.endswith(".keep_alive")] == []
                assert len([name for name in names if name.endswith(".ping_connections")]) == 1
            server.cancel_scope.cancel()


async def test_the_servers_one_pinger_keeps_live_sessions_and_closes_a_dead_peers() -> None:
    backend = make_backend_ipc()
    watch = _PingWatch(wanted=6)  # at least 3 rounds for each of the two live sessions
    with trio.fail_after(10):
        async with (
            watched_server(
                "trio-websocket", None, backend, watch, ping_interval=0.2, ping_timeout=0.3
            ) as url,
            websocket.connect_ipc(url, channels=[ConformanceIpc]) as first,
            silent_client(url, IPC_HELLO),
            websocket.connect_ipc(url, channels=[ConformanceIpc]) as second,
        ):
            live = (first.session_id, second.session_id)
            (dead,) = [s for s in backend.sessions if s.id not in live]
            await dead.wait_closed()
            await watch.done.wait()
            assert watch.closes == []
            assert first.is_valid
            assert second.is_valid
            assert await first.proxy(ConformanceIpc).add(2, 3) == 5
            assert await second.proxy(ConformanceIpc).add(3, 4) == 7
    reason = dead.closed_reason
    assert reason is not None
    assert "ping" in reason
