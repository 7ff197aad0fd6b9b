# mypy: disable-error-code="empty-body"
"""A page of an origin the backend does not allow reaches nothing (issue 18).

The page is served by a second server (another port: another origin). It tries
RPC and IPC with tether's client, over WebSocket and over HTTP, and by hand
(fetch, a "simple" text/plain POST, the IPC hello, a raw WebSocket): each one
fails in the page, and the backend's counters prove nothing ran. The same page,
once its origin is in the backend's `cors_origins`, gets through every way, so
the test can fail.
"""

from __future__ import annotations

from typing import Any

import trio

import tether
from tests.browser_support import Page, serve_pages

TIMEOUT = 30.0
TETHER_CLIENT = ("rpcWebSocket", "rpcHttp", "ipcWebSocket", "ipcHttp")
BY_HAND = ("fetchJson", "fetchSimple", "fetchIpc", "rawWebSocket")


class Counter(tether.RpcInterface):
    interface_name = "test.OriginCounter"
    interface_version = "1.0.0"

    async def bump(self) -> int: ...


class Tally(tether.IpcInterface):
    channel_name = "test.origin_tally"
    version = "1.0.0"

    async def bump(self) -> int: ...


class Runs:
    """What ran on the backend: RPC calls, IPC sessions opened, IPC invokes."""

    def __init__(self) -> None:
        self.calls = 0
        self.sessions = 0
        self.invokes = 0

    def manager(self) -> tether.RpcManager:
        runs = self

        class CounterImpl(Counter):
            async def bump(self) -> int:
                runs.calls += 1
                return runs.calls

        manager = tether.RpcManager()
        manager.register_impl(Counter, CounterImpl())
        return manager

    def backend_ipc(self) -> tether.BackendIpc:
        runs = self

        class TallyHandler(tether.IpcHandler, Tally):
            def __init__(self) -> None:
                runs.sessions += 1

            async def bump(self) -> int:
                runs.invokes += 1
                return runs.invokes

        backend = tether.BackendIpc()
        backend.register(TallyHandler)
        return backend


async def try_all(page: Page, cors_origins: bool) -> tuple[dict[str, Any], Runs]:
    """Serve the page from one server, the backend from another; what each attempt got."""
    runs = Runs()
    async with serve_pages() as site:
        origins = [site] if cors_origins else ["http://127.0.0.1:1"]
        async with serve_pages(runs.manager(), runs.backend_ipc(), cors_origins=origins) as api:
            assert site != api
            await page.goto(f"{site}/pages/common_origin.html")
            await page.wait_for("window.ready === true")
            results: dict[str, Any] = await page.evaluate(f"window.tryAll({api!r})")
    return results, runs


async def test_a_page_of_another_origin_reaches_nothing(browser_page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        results, runs = await try_all(browser_page, cors_origins=False)
    for way in TETHER_CLIENT:
        got = results[way]
        assert got["ok"] is False, (way, got)
        # A typed error: the refusal as the client could see it.
        assert got["tether"] is True, (way, got)
        assert got["name"] in ("Forbidden", "ConnectionClosed"), (way, got)
        assert "not written yet" not in got["message"], (way, got)
    for way in BY_HAND:
        got = results[way]
        assert got["ok"] is False, (way, got)
    # fetch hides a refused (or unlisted) cross-origin answer from the page.
    assert results["fetchJson"]["name"] == "TypeError"
    assert results["fetchSimple"]["name"] == "TypeError"
    assert results["fetchIpc"]["name"] == "TypeError"
    # The handshake was refused: the socket never opened.
    assert "closed 1006 before an answer" in results["rawWebSocket"]["message"]
    assert (runs.calls, runs.sessions, runs.invokes) == (0, 0, 0)


async def test_the_same_page_of_an_allowed_origin_reaches_everything(browser_page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        results, runs = await try_all(browser_page, cors_origins=True)
    for way in (*TETHER_CLIENT, *BY_HAND):
        assert results[way]["ok"] is True, (way, results[way])
    assert results["fetchJson"]["value"]["status"] == 200
    # A "simple" POST is refused even from an allowed origin: it is not JSON.
    assert results["fetchSimple"]["value"]["status"] == 415
    assert results["fetchIpc"]["value"]["status"] == 200
    # rpcWebSocket, rpcHttp, fetchJson, rawWebSocket each ran the impl once.
    assert runs.calls == 4
    # ipcWebSocket, ipcHttp and the hand-written hello each opened a session.
    assert runs.sessions == 3
    assert runs.invokes == 2
