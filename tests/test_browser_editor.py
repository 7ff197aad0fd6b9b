"""The browser editor example: its page, in headless Chromium, edits over IPC.

The example's own server (`examples.browser_editor.server.serve`: the IPC
editor's backend, the page, its compiled module and the client, on one
origin) runs in the test on 127.0.0.1 port 0; the page is loaded in the
session's Chromium (tests/browser_support.py: a fresh tab per test) and driven by clicks, and the
test reads what the page shows. Also here: the committed stubs are what
`tether codegen typescript` outputs now, and the client stays small.
"""

from __future__ import annotations

import functools
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from examples.browser_editor.server import CLIENT, ROOT, STUBS, build_page, serve
from tests.browser_support import Page

#: Seconds one page test may take; each takes about one, unloaded.
TIMEOUT = 30
#: Bound on the client's compiled modules, minified and gzipped (bytes): generous, to
#: catch a dependency or a duplicated module, not a few lines.
MAX_GZIP = 40_000


@pytest.fixture(scope="module")
def built_page() -> None:
    """The page's TypeScript, compiled (and type-checked against the built client) once."""
    build_page()


@pytest.fixture
async def editor_url(built_page: None) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(serve, "127.0.0.1", 0)
        yield url
        nursery.cancel_scope.cancel()


async def text(page: Page, selector: str) -> str:
    value = await page.evaluate(f"document.querySelector({json.dumps(selector)}).textContent")
    assert isinstance(value, str)
    return value


async def events(page: Page) -> list[str]:
    value = await page.evaluate(
        "[...document.querySelectorAll('#events li')].map(e => e.textContent)"
    )
    assert isinstance(value, list)
    return [str(item) for item in value]


async def open_editor(page: Page, url: str) -> Page:
    """Load the page; it has connected and opened its document."""
    await page.goto(url)
    await page.wait_for("['ready', 'failed'].includes(document.body.dataset.state)")
    assert await page.evaluate("document.body.dataset.state") == "ready", await text(page, "#error")
    assert await text(page, "#document-name") == "plan.dgn"
    assert await text(page, "#revision") == "0"
    return page


async def test_the_page_edits_over_websocket_and_answers_the_backends_question(
    browser_page: Page, editor_url: str
) -> None:
    with trio.fail_after(TIMEOUT):
        page = await open_editor(browser_page, editor_url)
        assert await text(page, "#transport") == "WebSocket"

        # Add: the backend's answer, and its notification, both show.
        await page.click("#add")
        await page.wait_for("document.querySelector('#result').textContent.startsWith('added ')")
        added = (await text(page, "#result")).split()[1]
        assert added.startswith("door-")
        await page.wait_for("document.querySelectorAll('#events li').length >= 1")
        assert (await events(page))[0].startswith(f"r1 added {added} ")
        assert await text(page, "#revision") == "1"

        # Move it: the answer has its new placement.
        await page.click("#move")
        await page.wait_for("document.querySelector('#result').textContent.startsWith('moved ')")
        await page.wait_for("document.querySelectorAll('#events li').length >= 2")
        assert (await events(page))[1].startswith(f"r2 moved {added} ")

        # Delete: the backend asks the page, the page's dialog answers.
        await page.click("#delete")
        await page.wait_for("document.querySelector('#confirm').open")
        assert await text(page, "#question") == f"delete door {added}?"
        await page.click("#confirm-yes")
        await page.wait_for("document.querySelector('#result').textContent.startsWith('deleted ')")
        assert await text(page, "#result") == f"deleted {added}"
        await page.wait_for("document.querySelectorAll('#events li').length >= 3")
        assert (await events(page))[2].startswith(f"r3 deleted {added} ")

        # Validate: progress notifications while the call runs, then its answer.
        await page.click("#validate")
        await page.wait_for("document.querySelector('#result').textContent.startsWith('validated')")
        # The seeded lamp is off the sheet.
        assert await text(page, "#result") == "validated: 1 problem(s)"
        assert (await events(page))[3:] == [f"validate: {n} of 4" for n in range(1, 5)]

        # Moving what is gone: the backend's application error, by name, in the page.
        await page.click("#move")
        await page.wait_for("document.querySelector('#error').textContent !== ''")
        assert await text(page, "#error") == (
            f"examples.ipc_editor.interface.ElementNotFound: no element {added!r} in the document"
        )
        assert await text(page, "#revision") == "3"


async def test_the_page_edits_over_http(browser_page: Page, editor_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        page = await open_editor(browser_page, f"{editor_url}?transport=http")
        assert await text(page, "#transport") == "HTTP"
        await page.click("#add")
        await page.wait_for("document.querySelector('#result').textContent.startsWith('added ')")
        added = (await text(page, "#result")).split()[1]
        await page.wait_for("document.querySelectorAll('#events li').length >= 1")
        assert (await events(page))[0].startswith(f"r1 added {added} ")

        # The backend's question over the event stream, the answer over a POST.
        await page.click("#delete")
        await page.wait_for("document.querySelector('#confirm').open")
        await page.click("#confirm-no")
        await page.wait_for("document.querySelector('#result').textContent.startsWith('kept ')")
        assert await text(page, "#revision") == "1"


async def test_a_bad_query_is_said_in_the_page(browser_page: Page, editor_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        await browser_page.goto(f"{editor_url}?transport=pigeon")
        await browser_page.wait_for("document.body.dataset.state === 'failed'")
        assert await text(browser_page, "#error") == (
            'Error: ?transport= takes "ws" or "http", not "pigeon"'
        )


async def test_the_dialog_closes_when_the_delete_calls_deadline_passes(
    browser_page: Page, editor_url: str
) -> None:
    """The backend's question inherits the delete call's deadline: when it passes, the
    backend cancels the question and the page's dialog closes by itself."""
    with trio.fail_after(TIMEOUT):
        page = await open_editor(browser_page, f"{editor_url}?answerWithinMs=500")
        await page.evaluate("document.querySelector('#element-id').value = 'wall-1'")
        await page.click("#delete")
        await page.wait_for("document.querySelector('#confirm').open")
        await page.wait_for("!document.querySelector('#confirm').open", within=10)
        await page.wait_for("document.querySelector('#error').textContent !== ''")
        assert (await text(page, "#error")).startswith("DeadlineExceeded (deadline-exceeded): ")
        assert await text(page, "#result") == ""
        assert await text(page, "#revision") == "0"
        assert await events(page) == []


async def test_the_command_prints_the_url_serves_the_page_and_stops_on_ctrl_c(
    built_page: None,
) -> None:
    command = [sys.executable, "-m", "examples.browser_editor", "--port", "0"]
    with trio.fail_after(TIMEOUT):
        process = await trio.lowlevel.open_process(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            # SIGINT as a terminal sends it (the parent may ignore it, and a child inherits that).
            preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
        )
        try:
            assert process.stdout is not None
            output = b""
            while b"\n" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the command exited before printing its URL: {output!r}"
                output += chunk
            first, _, output = output.partition(b"\n")
            url = first.decode().split()[3]
            assert first.decode() == (
                f"browser editor: open {url} (or {url}?transport=http); Ctrl-C stops"
            )
            async with httpx.AsyncClient() as client:
                page = await client.get(url)
                module = await client.get(f"{url}app/editor.js")
                client_module = await client.get(f"{url}client/index.js")
            assert page.status_code == 200
            assert '<script type="module" src="/app/editor.js">' in page.text
            assert module.status_code == client_module.status_code == 200
            assert "connectIpc" in module.text
            assert "export" in client_module.text

            process.send_signal(signal.SIGINT)
            while chunk := await process.stdout.receive_some():
                output += chunk
            assert await process.wait() == 0
            assert output == b"stopped\n"
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()


def test_the_stubs_are_what_codegen_outputs_now() -> None:
    """`src/editor_stubs.ts` is committed: regenerate it when the interfaces change."""
    done = subprocess.run(
        [sys.executable, "-m", "tether", "codegen", "typescript", "examples.ipc_editor.interface"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == STUBS.read_text(), (
        f"{STUBS} is stale: run `tether codegen typescript examples.ipc_editor.interface "
        f"-o {STUBS.relative_to(ROOT)}`"
    )


def test_the_client_stays_small() -> None:
    """scripts/size.mjs measures dist/*.js minified and gzipped, and holds it under a bound."""
    node = shutil.which("node")
    assert node is not None, "node is not on PATH: install Node.js 20 or later"
    done = subprocess.run(
        [node, "scripts/size.mjs", "--max-gzip", str(MAX_GZIP)],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    sizes = [int(word.rstrip(";")) for word in last.split() if word.rstrip(";").isdigit()]
    assert len(sizes) == 3, last
    assert sizes[0] > sizes[1] > sizes[2] > 0, last
