"""`SocketReader` given a ping and a close in one read: the close ends the connection cleanly.

A unit test of one layer: the client side is tether's own-reading connection
(`_client._handshake`, `SocketReader`) over a real TCP socket on 127.0.0.1; the
server is trio-websocket's, which writes a ping and a close frame back to back
(a keepalive ping, then a shutdown), before the client reads, so that one read
brings both.
"""

from __future__ import annotations

import trio
import trio.testing
import trio_websocket
from wsproto.events import CloseConnection, Ping

from tether.transports.websocket._client import _handshake
from tether.transports.websocket._reading import SocketReader

TIMEOUT = 10


async def test_a_ping_and_a_close_in_one_read_end_the_connection_with_the_close() -> None:
    sent = trio.Event()
    done = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws._send(Ping(payload=b"p"))
        await ws._send(CloseConnection(code=1001, reason="going away now"))
        sent.set()
        await done.wait()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
            )
            tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
            try:
                ws = await _handshake(tcp, f"127.0.0.1:{server.port}", "/", [], 1 << 20)
                reader = SocketReader(ws, tcp.socket._sock)  # type: ignore[attr-defined]
                await sent.wait()
                await trio.testing.wait_all_tasks_blocked()
                reason = None
                try:
                    await reader.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    reason = exc.reason
                # The ping needs no answer once the peer is closing; its close
                # is answered and says why.
                assert reason is not None
                assert (reason.code, reason.reason) == (1001, "going away now")
                assert reader.over
            finally:
                done.set()
                await trio.aclose_forcefully(tcp)
                nursery.cancel_scope.cancel()
