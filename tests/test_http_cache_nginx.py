"""Cached reads through a real caching proxy: nginx with `proxy_cache` in front of hypercorn.

nginx (Debian's package; `make test` installs it when missing) is started by each test on
127.0.0.1 with a config written to tmp_path, on a socket the test binds and hands over (the
`NGINX` variable: nginx's own way of inheriting listening sockets), so nothing races for a
port and connections queue from the start. It proxies to the tether backend and says in
`X-Cache-Status` whether it answered from its cache. The impl counts the calls that reach it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from tests.http_cache_app import Catalog, Price, served_catalog
from tether.transports import http

TIMEOUT = 15.0
PATH = "/rpc/test.Catalog/1.0.0"

_CONF = """{user}daemon off; master_process on; worker_processes 1; pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{}}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  proxy_cache_path {dir}/cache levels=1 keys_zone=tether:1m;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_cache tether;
      proxy_cache_revalidate on;
      add_header X-Cache-Status $upstream_cache_status always;
    }}
  }}
}}
"""


def _nginx() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")
    if found is None:
        message = "nginx is not installed: `make test` installs it (Debian: apt-get install nginx)"
        if os.environ.get("TETHER_REQUIRE_NGINX"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@asynccontextmanager
async def nginx_in_front(upstream: str, directory: Path) -> AsyncIterator[str]:
    """Run nginx proxying (and caching) to `upstream` for the block; yield its origin."""
    binary = _nginx()
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        # Workers drop root for `nobody` unless told otherwise; tmp_path is the test's own.
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = directory / "nginx.conf"
        conf.write_text(
            _CONF.format(user=user, dir=directory, port=port, upstream=upstream.split("//")[1])
        )
        process = await trio.lowlevel.open_process(
            [binary, "-c", str(conf), "-p", str(directory), "-e", str(directory / "error.log")],
            env={**os.environ, "NGINX": f"{listener.fileno()};"},
            pass_fds=[listener.fileno()],
        )
    finally:
        listener.close()  # nginx has its own copy now
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        with trio.CancelScope(shield=True):
            process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def args_query(*args: object) -> str:
    return "args=" + urllib.parse.quote(json.dumps(list(args), separators=(",", ":")), safe="")


async def test_nginx_serves_the_second_identical_call_from_its_cache(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served_catalog() as (origin, recorder, impl),
            nginx_in_front(origin, tmp_path) as proxy,
        ):
            async with http.connect(f"{proxy}/rpc", interfaces=[Catalog]) as backend:
                catalog = backend.get_client(Catalog)
                assert await catalog.price("m1") == Price("m1", 250)
                assert await catalog.price("m1") == Price("m1", 250)
                assert impl.calls["price"] == 1  # the second never reached the backend
                assert await catalog.price("m2") == Price("m2", 250)
                assert impl.calls["price"] == 2  # another argument is another URL
                assert await catalog.price("m1", 2) == Price("m1", 500)
                assert impl.calls["price"] == 3
                # Not cacheable: every call reaches the backend.
                assert await catalog.stock("m1") == 7
                assert await catalog.stock("m1") == 7
                assert impl.calls["stock"] == 2
            assert recorder.methods("price") == ["GET", "GET", "GET"]
            async with httpx.AsyncClient() as client:
                # The client sends every argument, defaults filled in: curl does the same.
                cached = await client.get(f"{proxy}{PATH}/price?{args_query('m1', 1)}")
                assert cached.headers["x-cache-status"] == "HIT"
                assert cached.headers["cache-control"] == "public, max-age=60"
                assert cached.json() == {"key": "m1", "cents": 250}
            assert impl.calls["price"] == 3


async def test_a_conditional_get_through_nginx_answers_304(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served_catalog() as (origin, _, impl),
            nginx_in_front(origin, tmp_path) as proxy,
            httpx.AsyncClient() as client,
        ):
            url = f"{proxy}{PATH}/price?{args_query('m1')}"
            first = await client.get(url)
            assert first.headers["x-cache-status"] == "MISS"
            etag = first.headers["etag"]
            again = await client.get(url, headers={"if-none-match": etag})
            assert again.status_code == 304
            assert again.content == b""
            assert again.headers["x-cache-status"] == "HIT"
            assert impl.calls["price"] == 1
            changed = await client.get(url, headers={"if-none-match": '"another"'})
            assert changed.status_code == 200
            assert changed.json() == {"key": "m1", "cents": 250}


async def test_nginx_asks_again_once_max_age_has_passed(tmp_path: Path) -> None:
    """max-age=1: nginx serves from its cache, then after a second or two asks the backend:
    a changed result is fetched (EXPIRED), an unchanged one revalidated with If-None-Match
    and the backend's 304 (REVALIDATED)."""
    with trio.fail_after(TIMEOUT):
        async with (
            served_catalog() as (origin, _, impl),
            nginx_in_front(origin, tmp_path) as proxy,
            httpx.AsyncClient() as client,
        ):
            tick = await client.get(f"{proxy}{PATH}/tick")
            motd = await client.get(f"{proxy}{PATH}/motd")
            assert (tick.headers["x-cache-status"], tick.json()) == ("MISS", 1)
            assert motd.headers["x-cache-status"] == "MISS"
            assert tick.headers["cache-control"] == "public, max-age=1"
            tick = await client.get(f"{proxy}{PATH}/tick")
            assert (tick.headers["x-cache-status"], tick.json()) == ("HIT", 1)
            # nginx counts max-age in whole seconds of its clock: the entry goes stale
            # within 2 s. That cannot be awaited: ask every 0.2 s, at most 20 times.
            for _ in range(20):
                await trio.sleep(0.2)
                tick = await client.get(f"{proxy}{PATH}/tick")
                if tick.headers["x-cache-status"] != "HIT":
                    break
            assert (tick.headers["x-cache-status"], tick.json()) == ("EXPIRED", 2)
            assert impl.calls["tick"] == 2
            # motd was stored a moment after tick, maybe in nginx's next second:
            # it may still be fresh for up to a second more (at most 10 asks).
            for _ in range(10):
                motd = await client.get(f"{proxy}{PATH}/motd")
                if motd.headers["x-cache-status"] != "HIT":
                    break
                await trio.sleep(0.2)
            assert motd.headers["x-cache-status"] == "REVALIDATED"
            assert motd.status_code == 200
            assert motd.json() == "the same every time"
            assert impl.calls["motd"] == 2  # the call ran; only the body was spared


async def test_nginx_never_serves_a_result_fetched_with_authorization_to_others(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served_catalog() as (origin, _, impl),
            nginx_in_front(origin, tmp_path) as proxy,
            httpx.AsyncClient() as client,
        ):
            url = f"{proxy}{PATH}/whoami"
            alice = {"authorization": "Bearer alice"}
            for _ in range(2):
                private = await client.get(url, headers=alice)
                assert private.json() == "Bearer alice"
                assert private.headers["cache-control"] == "private, max-age=60"
                assert private.headers["x-cache-status"] == "MISS"
            anonymous = await client.get(url)
            assert anonymous.json() is None
            assert (await client.get(url)).headers["x-cache-status"] == "HIT"
            # The anonymous result is cached, but varies on Authorization: bob gets his own.
            bob = await client.get(url, headers={"authorization": "Bearer bob"})
            assert bob.json() == "Bearer bob"
            assert impl.calls["whoami"] == 4


async def test_nginx_does_not_cache_errors(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served_catalog() as (origin, _, impl),
            nginx_in_front(origin, tmp_path) as proxy,
            httpx.AsyncClient() as client,
        ):
            url = f"{proxy}{PATH}/broken?{args_query('m1')}"
            for _ in range(2):
                failed = await client.get(url)
                assert failed.status_code == 500
                assert failed.headers["cache-control"] == "no-store"
                assert failed.headers["x-cache-status"] == "MISS"
            assert impl.calls["broken"] == 2
