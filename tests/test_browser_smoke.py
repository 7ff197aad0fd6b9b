"""The browser harness itself: a page loads from the static mounts, evaluates,
clicks, waits, and page errors fail the test unless expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests import browser_support
from tests.browser_support import JsError, Page, PageErrors, serve_pages

TIMEOUT = 20.0


async def test_a_page_loads_the_client_and_evaluates(browser_page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_pages() as base:
            await browser_page.goto(f"{base}/pages/common_smoke.html")
            await browser_page.wait_for("window.ready === true")
            assert await browser_page.evaluate("typeof window.tether.TetherError") == "function"
            assert await browser_page.evaluate("Promise.resolve(40).then((x) => x + 2)") == 42
            assert await browser_page.evaluate("({a: [1, 'b', null]})") == {"a": [1, "b", None]}
            await browser_page.click("#go")
            await browser_page.click("#go")
            assert await browser_page.wait_for("window.clicks === 2 && window.clicks") == 2
            text = await browser_page.evaluate("document.getElementById('out').textContent")
            assert text == "clicked 2"


async def test_a_throw_in_evaluate_raises_with_the_js_message_and_stack(
    browser_page: Page,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_pages() as base:
            await browser_page.goto(f"{base}/pages/common_smoke.html")
            with pytest.raises(JsError, match=r"boom 7[\s\S]*at thrower"):
                await browser_page.evaluate("(function thrower() { throw new Error('boom 7'); })()")
            with pytest.raises(JsError, match="rejected 8"):
                await browser_page.evaluate("Promise.reject(new Error('rejected 8'))")
            with pytest.raises(JsError, match=r"timed out after 0\.2 s waiting for: false"):
                await browser_page.wait_for("false", within=0.2)


async def test_page_errors_are_collected_and_fail_unless_expected(browser_page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_pages() as base:
            await browser_page.goto(f"{base}/pages/common_smoke.html")
            await browser_page.evaluate(
                "setTimeout(() => { throw new Error('late 1'); }, 0);"
                "Promise.reject(new Error('unhandled 2'));"
                "console.error('logged', 3); true"
            )
            await browser_page.wait_for("true")  # one more round trip: the events came
            await browser_page.evaluate("new Promise((r) => setTimeout(r, 50))")
            errors = "\n".join(browser_page.errors)
            assert "late 1" in errors
            assert "unhandled 2" in errors
            assert "logged 3" in errors
            with pytest.raises(PageErrors, match="late 1"):
                browser_page.check_errors()
            assert browser_page.errors == []
            browser_page.expect_errors("expected 4")
            await browser_page.evaluate("console.error('expected 4'); true")
            await browser_page.evaluate("new Promise((r) => setTimeout(r, 50))")
            assert browser_page.errors == []
            assert any("expected 4" in line for line in browser_page.log)


def test_a_missing_chromium_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser_support, "find_chromium", lambda: None)
    monkeypatch.delenv("TETHER_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="make chromium"):
        browser_support.require_chromium()
    monkeypatch.setenv("TETHER_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="chromium is missing"):
        browser_support.require_chromium()


async def test_an_unbuilt_client_fails_with_the_command_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(browser_support, "DIST", tmp_path / "dist")
    with pytest.raises(pytest.fail.Exception, match="run `make ts` first"):
        async with serve_pages():
            pass
