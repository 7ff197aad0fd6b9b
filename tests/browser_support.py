"""Browser tests: Debian's Chromium, headless, driven over the DevTools protocol.

One Chromium per test session (the `chromium` fixture), a fresh target (tab)
per test (`browser_page`), closed after it. A page's uncaught exception,
unhandled rejection or `console.error` fails the test unless the test said it
expects it (`page.expect_errors(...)`). `serve_pages` serves an app with
`http.serve` and the static mounts the test pages need:

    async def test_x(browser_page: Page) -> None:
        async with serve_pages(manager) as base:
            await browser_page.goto(f"{base}/pages/x.html")
            assert await browser_page.evaluate("window.result") == 3

`/client` is `clients/typescript/dist` (built by `make ts`), `/pages` is
`tests/browser_pages`. Without Chromium the browser tests skip, or fail when
`TETHER_REQUIRE_CHROMIUM=1` (as `make test` sets).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

import tether
from tether.runtime._util import open_service_nursery
from tether.transports import http

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "clients" / "typescript" / "dist"
PAGES = Path(__file__).resolve().parent / "browser_pages"
#: Seconds one DevTools command, a navigation or a wait may take at most.
TIMEOUT = 15.0
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
]
INSTALL_HINT = (
    "the browser tests need Debian's chromium: `make chromium` (or `sudo apt-get install "
    "chromium`); set TETHER_REQUIRE_CHROMIUM=1 to fail instead of skipping"
)


class JsError(Exception):
    """An exception thrown in the page: its message and stack as the page told them."""


class ChromiumFailed(RuntimeError):
    """Chromium did not start: its output says why."""


class PageErrors(AssertionError):
    """The page reported errors the test did not expect."""


def find_chromium() -> str | None:
    for candidate in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def require_chromium() -> str:
    """Chromium's path; a skip when it is missing, or a failure with TETHER_REQUIRE_CHROMIUM=1."""
    executable = find_chromium()
    if executable is None:
        if os.environ.get("TETHER_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"chromium is missing: {INSTALL_HINT}")
        pytest.skip(f"chromium is missing: {INSTALL_HINT}")
    return executable


class Chromium:
    """A headless Chromium process and its DevTools websocket URL."""

    def __init__(self, executable: str, profile: Path, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self.profile = profile
        self._stderr = stderr_path.open("wb")
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
        )
        self.ws_url = self._read_port()

    def _read_port(self) -> str:
        """Chromium writes its port and browser path to DevToolsActivePort once listening."""
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                lines = active.read_text().split("\n")
            except FileNotFoundError:
                lines = []
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
            time.sleep(0.05)  # no event to wait on: the file appears when it listens
        self.close()
        raise ChromiumFailed(
            f"chromium did not start (exit code {self.process.returncode}); its output:\n"
            + self.stderr_tail()
        )

    def stderr_tail(self, lines: int = 40) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - chromium ignores SIGTERM
                self.process.kill()
                self.process.wait(timeout=10)
        self._stderr.close()


class Cdp:
    """One DevTools websocket: commands by id, events to the session's page."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self.pages: dict[str, Page] = {}

    async def run(self) -> None:
        """Read messages until the websocket closes: replies and events."""
        while True:
            try:
                message = json.loads(await self.ws.get_message())
            except ConnectionClosed:
                return
            if "id" in message:
                waiting = self._waiting.pop(message["id"], None)
                if waiting is not None:
                    waiting.send_nowait(message)
            else:
                page = self.pages.get(message.get("sessionId", ""))
                if page is not None:
                    page.on_event(message["method"], message.get("params", {}))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """A command's result; its error as a RuntimeError."""
        ident = next(self._ids)
        sender, receiver = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[ident] = sender
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        with trio.fail_after(TIMEOUT):
            await self.ws.send_message(json.dumps(message))
            reply = await receiver.receive()
        if "error" in reply:
            raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result


def _describe(details: dict[str, Any]) -> str:
    """An exception's message and stack, from DevTools' exceptionDetails."""
    exception = details.get("exception") or {}
    text = exception.get("description") or str(exception.get("value", "")) or details.get("text")
    if "\n    at " not in (text or ""):
        frames = (details.get("stackTrace") or {}).get("callFrames", [])
        stack = "".join(
            f"\n    at {f.get('functionName') or '<anonymous>'} ({f['url']}:{f['lineNumber'] + 1})"
            for f in frames
        )
        text = f"{details.get('text', '')} {text or ''}".strip() + stack
    return str(text)


class Page:
    """One target (tab) of the shared Chromium, attached with a flat session."""

    def __init__(self, cdp: Cdp, target_id: str, session: str) -> None:
        self.cdp = cdp
        self.target_id = target_id
        self.session = session
        self.errors: list[str] = []
        self.log: list[str] = []
        self._expected: list[re.Pattern[str]] = []
        self._loaded = trio.Event()

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.exceptionThrown":
            self._error(f"uncaught: {_describe(params['exceptionDetails'])}")
        elif method == "Runtime.consoleAPICalled":
            args = params.get("args", [])
            text = " ".join(
                str(a.get("value", a.get("description", a.get("type", "")))) for a in args
            )
            self.log.append(f"console.{params['type']}: {text}")
            if params["type"] in ("error", "assert"):
                self._error(f"console.{params['type']}: {text}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.log.append(f"{entry['level']} ({entry['source']}): {entry['text']}")

    def _error(self, text: str) -> None:
        self.log.append(text)
        if not any(p.search(text) for p in self._expected):
            self.errors.append(text)

    def expect_errors(self, *patterns: str) -> None:
        """Page errors matching one of these regexes do not fail the test."""
        self._expected += [re.compile(p) for p in patterns]
        self.errors = [e for e in self.errors if not any(p.search(e) for p in self._expected)]

    def check_errors(self) -> None:
        """Raise PageErrors when the page reported errors the test did not expect."""
        if self.errors:
            errors, self.errors = self.errors, []
            raise PageErrors("the page reported errors:\n" + "\n".join(errors))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.cdp.send(method, params, self.session)

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self._loaded = trio.Event()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"navigating to {url} failed: {result['errorText']}")
        with trio.fail_after(TIMEOUT):
            await self._loaded.wait()

    async def evaluate(self, expression: str, *, await_promise: bool = True) -> Any:
        """The expression's value (JSON-able), awaited if it is a promise.

        Raises:
            JsError: It threw (or its promise rejected): the JS message and stack.
        """
        result = await self.send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": await_promise,
                "returnByValue": True,
                "userGesture": True,
            },
        )
        if "exceptionDetails" in result:
            raise JsError(_describe(result["exceptionDetails"]))
        return result["result"].get("value")

    async def wait_for(self, condition: str, within: float = 5.0) -> Any:
        """Wait (at most `within` seconds, in the page) until `condition` is truthy; its value.

        Raises:
            JsError: The condition threw, or stayed falsy past `within`.
        """
        script = (
            "new Promise((resolve, reject) => {"
            f" const end = performance.now() + {within * 1000};"
            " const check = () => { let v; try { v = (" + condition + "); }"
            " catch (e) { reject(e); return; }"
            " if (v) resolve(v);"
            f" else if (performance.now() > end) reject(new Error("
            f"{json.dumps(f'timed out after {within} s waiting for: {condition}')}));"
            " else setTimeout(check, 10); };"
            " check(); })"
        )
        with trio.fail_after(within + TIMEOUT):
            return await self.evaluate(script)

    async def click(self, selector: str) -> None:
        """A real mouse click at the middle of the first element matching `selector`."""
        box = await self.evaluate(
            "(() => { const e = document.querySelector("
            + json.dumps(selector)
            + "); if (!e) throw new Error('no element matches ' + "
            + json.dumps(json.dumps(selector))
            + "); e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )


@asynccontextmanager
async def open_page(chromium: Chromium) -> AsyncIterator[Page]:
    """A fresh target of `chromium`, closed after."""
    async with open_service_nursery() as nursery:
        async with open_websocket_url(chromium.ws_url, max_message_size=64 * 1024 * 1024) as ws:
            cdp = Cdp(ws)
            nursery.start_soon(cdp.run)
            target = (await cdp.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
            try:
                attached = await cdp.send(
                    "Target.attachToTarget", {"targetId": target, "flatten": True}
                )
                page = Page(cdp, target, attached["sessionId"])
                cdp.pages[page.session] = page
                for domain in ("Page", "Runtime", "Log"):
                    await page.send(f"{domain}.enable")
                yield page
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(TIMEOUT):
                    await cdp.send("Target.closeTarget", {"targetId": target})
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def serve_pages(
    manager: tether.RpcManager | None = None,
    ipc: tether.BackendIpc | None = None,
    *,
    static: dict[str, Path] | None = None,
    **options: Any,
) -> AsyncIterator[str]:
    """An app served with `http.serve` on 127.0.0.1:0, with `/client` (the built
    TypeScript client) and `/pages` (tests/browser_pages): its base URL,
    `http://127.0.0.1:<port>` (the RPC prefix is `/rpc`, WebSocket `/rpc/ws`).

    `options` go to `http.serve` (cors_origins, ipc_ping_interval, websocket, ...).
    """
    dist = DIST
    if not (dist / "index.js").is_file():
        pytest.fail(f"the TypeScript client is not built ({dist}/index.js): run `make ts` first")
    mounts = {"/client": dist, "/pages": PAGES, **(static or {})}
    async with open_service_nursery() as nursery:
        serve = functools.partial(http.serve, manager, ipc=ipc, static=mounts, **options)
        url: str = await nursery.start(serve)
        yield url.removesuffix(options.get("prefix", "/rpc"))
        nursery.cancel_scope.cancel()


# -- fixtures (imported by tests/conftest.py) -----------------------------------


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """The session's headless Chromium, stopped (and waited for) at its end."""
    executable = require_chromium()
    base = tmp_path_factory.mktemp("chromium")
    try:
        browser = Chromium(executable, base / "profile", base / "chromium.log")
    except ChromiumFailed as exc:
        pytest.fail(str(exc))
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
async def browser_page(chromium: Chromium, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh tab; the test fails if the page reported errors it did not expect."""
    async with open_page(chromium) as page:
        request.node.tether_page = page  # for the report of a failure (conftest.py)
        yield page
        page.check_errors()
