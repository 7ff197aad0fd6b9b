"""HTTP streams through nginx: when does an item get through the proxy?

Run from the repository root, with nginx on PATH (Debian: `apt-get install nginx-light`)::

    .venv/bin/python -m bench.http_stream_proxy

A tether HTTP server runs in this process; an nginx, started for the run in a
temporary directory, proxies a port to it, first with its defaults
(`proxy_http_version 1.1` only), then with `proxy_request_buffering off`. For
each, a client stream sends one item and waits (up to 3 s) for the impl to see
it before ending its body, and a server stream times its first item. This is
the measurement behind docs/http.md's "Two-way streams" paragraph.
"""

from __future__ import annotations

import functools
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import trio

import tether
from tether.transports import http

_CONF = """daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log; worker_processes 1;
events {{}}
http {{ access_log off; client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
 fastcgi_temp_path {dir}/f; uwsgi_temp_path {dir}/u; scgi_temp_path {dir}/s;
 server {{ listen 127.0.0.1:{port}; location / {{
   proxy_pass http://127.0.0.1:{upstream}; proxy_http_version 1.1; {extra} }} }} }}
"""


class Probe(tether.RpcInterface):
    interface_name = "bench.NginxProbe"
    interface_version = "1.0.0"

    async def feed(self, items: tether.Stream[int]) -> int: ...

    def tick(self, n: int) -> tether.Stream[int]: ...


class ProbeImpl(Probe):
    seen = trio.Event()

    async def feed(self, items: tether.Stream[int]) -> int:
        total = 0
        async for item in items:
            ProbeImpl.seen.set()
            total += item
        return total

    async def tick(self, n: int) -> AsyncIterator[int]:
        for item in range(n):
            yield item
            await trio.sleep(1.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _through_nginx(upstream: int, extra: str, directory: Path) -> None:
    port = _free_port()
    conf = directory / "nginx.conf"
    conf.write_text(_CONF.format(dir=directory, port=port, upstream=upstream, extra=extra))
    process = await trio.lowlevel.open_process(["nginx", "-c", str(conf), "-p", str(directory)])
    label = extra or "nginx defaults"
    try:
        with trio.fail_after(5):
            while True:  # until nginx listens
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.05)
        async with http.connect(f"http://127.0.0.1:{port}/rpc", interfaces=[Probe]) as backend:
            client = backend.get_client(Probe)
            ProbeImpl.seen = trio.Event()
            waited: list[str] = []

            async def source() -> AsyncIterator[int]:
                started = time.perf_counter()
                yield 1
                with trio.move_on_after(3):
                    await ProbeImpl.seen.wait()
                waited.append(
                    f"{(time.perf_counter() - started) * 1000:.1f} ms"
                    if ProbeImpl.seen.is_set()
                    else "not within 3 s (the body had not ended)"
                )

            await client.feed(source())
            print(f"[{label}] client stream, first item at the impl: {waited[0]}")
            started = time.perf_counter()
            async with tether.open_stream(client.tick(2)) as ticks:
                await anext(ticks)
                elapsed = (time.perf_counter() - started) * 1000
                print(f"[{label}] server stream, first item at the client: {elapsed:.1f} ms")
                async for _ in ticks:
                    pass
    finally:
        process.terminate()
        await process.wait()


async def main() -> None:
    manager = tether.RpcManager()
    manager.register_impl(Probe, ProbeImpl())
    with tempfile.TemporaryDirectory() as directory:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0))
            upstream = int(url.split(":")[2].split("/")[0])
            await _through_nginx(upstream, "", Path(directory))
            await _through_nginx(upstream, "proxy_request_buffering off;", Path(directory))
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
