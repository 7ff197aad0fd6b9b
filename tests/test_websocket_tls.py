"""`websocket.connect` over wss://: the SSL stream keeps trio-websocket's reader task.

A plain ws:// connection reads its own socket (`_reading.SocketReader`);
under TLS the SSL stream must do its own reading, so the client keeps
trio-websocket's reader. `websocket.serve` speaks plain WebSocket, so here a
TLS terminator on 127.0.0.1 (trio's SSL server, with a certificate made at
test time by `trustme`) forwards to it, as a reverse proxy would.
"""

from __future__ import annotations

import functools
import ssl

import trio
import trustme

import tether
from tether.runtime._util import open_service_nursery
from tether.transports import websocket

TIMEOUT = 10.0


class Echo(tether.RpcInterface):
    interface_name = "tls.Echo"
    interface_version = "1.0.0"

    async def echo(self, text: str) -> str: ...


class EchoImpl(Echo):
    async def echo(self, text: str) -> str:
        return text


async def pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(sink)


async def test_a_wss_client_calls_through_tls_and_keeps_trio_websockets_reader() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    manager = tether.RpcManager()
    manager.register_impl(Echo, EchoImpl())
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url: str = await nursery.start(websocket.serve, manager)
            port = int(url.rsplit(":", 1)[1].strip("/"))

            async def forward(tls: trio.SSLStream[trio.SocketStream]) -> None:
                plain = await trio.open_tcp_stream("127.0.0.1", port)
                async with trio.open_nursery() as both:
                    both.start_soon(pipe, tls, plain)
                    both.start_soon(pipe, plain, tls)

            listeners = await nursery.start(
                functools.partial(
                    trio.serve_ssl_over_tcp, forward, 0, server_context, host="127.0.0.1"
                )
            )
            tls_port = listeners[0].transport_listener.socket.getsockname()[1]
            async with websocket.connect(
                f"wss://127.0.0.1:{tls_port}/",
                interfaces=[Echo],
                ssl_context=client_context,
            ) as connection:
                stream = connection.connection._stream
                assert stream._reader is None  # trio-websocket reads the SSL stream
                echo = connection.get_client(Echo)
                for text in ("one", "two", "x" * 100_000):
                    assert await echo.echo(text) == text
            nursery.cancel_scope.cancel()
