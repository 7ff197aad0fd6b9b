"""The page that bench/browser.py times (issue 18: a call over WebSocket from a
page costs no more than 1.2x a hand-written round trip), run small: both
clients work against the same route and impl, and the ratio is reported, not
asserted (a timing assertion would flake; `python -m bench.browser` measures)."""

from __future__ import annotations

import trio

from bench.browser import echo_manager, measure_in_page
from tests.browser_support import Page, serve_pages

TIMEOUT = 30.0


async def test_both_clients_round_trip_and_the_ratio_is_reported(
    browser_page: Page, record_property: object
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_pages(echo_manager()) as base:
            await browser_page.goto(f"{base}/pages/common_speed.html")
            await browser_page.wait_for("window.ready === true")
            # Each echo is checked in the page: a wrong answer throws (JsError).
            result = await measure_in_page(browser_page, base, 200, 20)
    assert result["n"] == 200
    assert result["rawMs"] > 0
    assert result["tetherMs"] > 0
    assert result["ratio"] == result["tetherMs"] / result["rawMs"]
    record_property("ratio", round(result["ratio"], 3))  # type: ignore[operator]
    print(
        f"200 calls: hand-written {result['rawUsPerCall']:.0f} us/call, "
        f"tether {result['tetherUsPerCall']:.0f} us/call, ratio {result['ratio']:.2f}"
    )
