"""Sticky IPC behind a reverse proxy: a server's routing token starts every IPC
session id (`route=`), and a WebSocket frontend's resuming reconnects carry the
session id in the URL query (`?tether_session=`), for nginx to route on.

Real servers (hypercorn via `http.serve`, trio-websocket via `websocket.serve`)
on 127.0.0.1, port 0; real clients; `FaultyProxy` / `faulty_streams` cut the
connection that the frontend then resumes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import tether
from tether import BackendIpc
from tether.testing import FaultyProxy, faulty_streams
from tether.transports import http, websocket
from tether.transports.http import HttpApp
from tether.transports.websocket import Handshake

TIMEOUT = 20
FAST = tether.RetryPolicy(attempts=30, initial_backoff=0.01, max_backoff=0.05)
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


class Adder(tether.IpcInterface):
    channel_name = "test.route.adder"
    version = "1.0.0"

    async def add(self, a: int, b: int) -> int: ...


def make_backend() -> BackendIpc:
    backend = BackendIpc()

    class AdderImpl(tether.IpcHandler, Adder):
        async def add(self, a: int, b: int) -> int:
            return a + b

    backend.register(AdderImpl)
    return backend


@asynccontextmanager
async def serving(serve: Callable[..., Any], **kwargs: Any) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(
            lambda task_status: serve(None, "127.0.0.1", 0, task_status=task_status, **kwargs)
        )
        try:
            yield url
        finally:
            nursery.cancel_scope.cancel()


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1) + "/ws"


# -- the routing token in session ids -----------------------------------------------


async def test_http_ipc_session_ids_start_with_the_route() -> None:
    backend = make_backend()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(http.serve, ipc=backend, route="b1") as url,
            http.connect_ipc(url, channels=[Adder]) as frontend,
        ):
            # Its requests go to {prefix}/ipc/<id>/..., and they work.
            assert await frontend.proxy(Adder).add(2, 3) == 5
            assert re.fullmatch(f"b1\\.{UUID}", frontend.session_id)
            assert [s.id for s in backend.sessions] == [frontend.session_id]


@pytest.mark.parametrize("where", ["websocket.serve", "http.serve /ws"])
async def test_websocket_ipc_session_ids_start_with_the_route(where: str) -> None:
    backend = make_backend()
    with trio.fail_after(TIMEOUT):
        if where == "websocket.serve":
            server = serving(websocket.serve, ipc=backend, route="w-0")
        else:
            server = serving(http.serve, ipc=backend, route="w-0")
        async with server as url:
            if where != "websocket.serve":
                url = ws_url(url)
            async with websocket.connect_ipc(url, channels=[Adder]) as frontend:
                assert await frontend.proxy(Adder).add(1, 1) == 2
                assert re.fullmatch(f"w-0\\.{UUID}", frontend.session_id)
                assert [s.id for s in backend.sessions] == [frontend.session_id]


async def test_without_a_route_session_ids_stay_plain_uuids() -> None:
    backend = make_backend()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(http.serve, ipc=backend) as url,
            http.connect_ipc(url, channels=[Adder]) as over_http,
            websocket.connect_ipc(ws_url(url), channels=[Adder]) as over_ws,
        ):
            assert re.fullmatch(UUID, over_http.session_id)
            assert re.fullmatch(UUID, over_ws.session_id)


@pytest.mark.parametrize("route", ["", "B1", "b_1", "b.1", "b 1", "x" * 33, "é", 7])
async def test_a_malformed_route_is_refused_before_listening(route: Any) -> None:
    backend = make_backend()
    with trio.fail_after(TIMEOUT):
        for serve in (http.serve, websocket.serve):
            async with trio.open_nursery() as nursery:
                with pytest.raises(ValueError, match="route must be 1 to 32 characters") as caught:
                    await nursery.start(
                        functools.partial(serve, None, "127.0.0.1", 0, ipc=backend, route=route)
                    )
                nursery.cancel_scope.cancel()  # had it started
            assert repr(route) in str(caught.value)
        with pytest.raises(ValueError, match=re.escape(repr(route))):
            HttpApp(ipc=backend, route=route)


async def test_the_longest_route_is_accepted() -> None:
    backend = make_backend()
    route = "a-9" + "z" * 29
    with trio.fail_after(TIMEOUT):
        async with (
            serving(websocket.serve, ipc=backend, route=route) as url,
            websocket.connect_ipc(url, channels=[Adder]) as frontend,
        ):
            assert frontend.session_id.startswith(f"{route}.")


# -- the resume URL -------------------------------------------------------------------


async def test_websocket_resume_connects_with_the_session_in_the_query() -> None:
    """The first connect's path is the URL's; each resuming connect adds
    `tether_session=<id>` to the query the URL already has."""
    backend = make_backend()
    paths: list[str] = []

    async def authorize(handshake: Handshake) -> bool:
        paths.append(handshake.path)
        return True

    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with (
            serving(websocket.serve, ipc=backend, route="b2", authorize=authorize) as url,
            websocket.connect_ipc(f"{url}ipc?app=x", channels=[Adder], retry=FAST) as frontend,
        ):
            adder = frontend.proxy(Adder)
            assert await adder.add(1, 2) == 3
            faults.latest.cut("test cut")
            await faults.wait_opened(2)
            assert await adder.add(3, 4) == 7
            session_id = frontend.session_id
    assert paths == ["/ipc?app=x", f"/ipc?app=x&tether_session={session_id}"]
    assert session_id.startswith("b2.")


async def test_http_ws_resume_request_target_carries_the_session() -> None:
    """On `http.serve`'s `{prefix}/ws`, seen on the wire between client and
    server: the first upgrade has no `tether_session`, the resume's has the id."""
    backend = make_backend()
    with trio.fail_after(TIMEOUT):
        async with serving(http.serve, ipc=backend, route="b3") as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            async with FaultyProxy("127.0.0.1", port) as proxy:
                # Would cut a first connect that carried it (and so fail it).
                proxy.cut_when(b"tether_session=")
                proxied = f"ws://127.0.0.1:{proxy.port}/rpc/ws"
                async with websocket.connect_ipc(proxied, channels=[Adder], retry=FAST) as frontend:
                    adder = frontend.proxy(Adder)
                    assert await adder.add(1, 2) == 3
                    assert proxy.cuts == 0
                    session_id = frontend.session_id
                    assert session_id.startswith("b3.")
                    # The second resume attempt is cut only if its request
                    # line names this very session.
                    proxy.cut_when(f"GET /rpc/ws?tether_session={session_id} HTTP/1.1".encode())
                    proxy.cut_all()
                    # cut_all, the first rule's resume, this rule's resume.
                    await proxy.wait_cut(3)
                    assert await adder.add(3, 4) == 7
                    assert proxy.cuts == 3
                    assert frontend.session_id == session_id
