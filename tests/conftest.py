"""Shared fixtures: the browser tests' Chromium and pages (tests/browser_support.py)."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.browser_support import Chromium, Page, browser_page, chromium

__all__ = ["browser_page", "chromium"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed browser test shows the page's log and the end of Chromium's output."""
    report = yield
    if not report.failed:
        return report
    page = getattr(item, "tether_page", None)
    if isinstance(page, Page) and page.log:
        report.sections.append(("page log", "\n".join(page.log[-60:])))
    browser = getattr(item, "funcargs", {}).get("chromium")
    if isinstance(browser, Chromium):
        report.sections.append(("chromium output", browser.stderr_tail()))
    return report
