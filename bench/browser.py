# mypy: disable-error-code="empty-body"
"""An RPC call over WebSocket from a browser page: tether's client against a hand-written one.

Run from the repository root (after `make ts`, which builds the client)::

    .venv/bin/python -m bench.browser              # 5 runs of 5,000 calls each, ~15 s
    .venv/bin/python -m bench.browser --quick      # 3 runs of 500
    .venv/bin/python -m bench.browser -n 20000 --runs 3 --block 200

Debian's headless Chromium (the one the browser tests drive) loads
tests/browser_pages/common_speed.html from `http.serve` (hypercorn) on
127.0.0.1, and in that one page times N sequential round trips of each client
against the same `{prefix}/ws` route and the same impl, `echo(value) -> value`:

* hand-written: a `WebSocket`, a `hello`, then `call` messages written with
  `JSON.stringify` and answered by `id` (one call at a time; it answers the
  server's pings), as docs/websocket.md "The wire, for other clients" tells;
* tether: `connectRpc(url, {interfaces: [Echo]})` and `proxy.echo(value)`
  (a fresh ActivityId and traceparent per call, the binary-capable framing).

The two are interleaved in blocks of `--block` calls (the order alternating),
after a warm-up block each. Each run reports the ratio of the totals and the
median of the block pairs' ratios (a load spike on a shared machine slows one
block, not the median). The issue's target: tether costs no more than 1.2x the
hand-written round trip (the median block ratio, median over runs), printed
as PASS or FAIL; the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import trio

import tether
from tests.browser_support import Chromium, find_chromium, open_page, serve_pages

TARGET = 1.2


class Echo(tether.RpcInterface):
    interface_name = "bench.BrowserEcho"
    interface_version = "1.0.0"

    async def echo(self, value: int) -> int: ...


class EchoImpl(Echo):
    async def echo(self, value: int) -> int:
        return value


def echo_manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Echo, EchoImpl())
    return manager


async def measure_in_page(page: Any, base: str, n: int, block: int) -> dict[str, Any]:
    """One run of tests/browser_pages/common_speed.js's `measure`, in a loaded page."""
    ws = "ws" + base.removeprefix("http") + "/rpc/ws"
    result: dict[str, Any] = await page.evaluate(f"window.measure({ws!r}, {n}, {block})")
    return result


async def run(n: int, block: int, runs: int) -> list[dict[str, Any]]:
    executable = find_chromium()
    if executable is None:
        raise SystemExit("bench.browser needs Debian's chromium: make chromium")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        chromium = Chromium(executable, Path(tmp) / "profile", Path(tmp) / "chromium.log")
        try:
            async with serve_pages(echo_manager()) as base, open_page(chromium) as page:
                await page.goto(f"{base}/pages/common_speed.html")
                await page.wait_for("window.ready === true")
                for _ in range(runs):
                    results.append(await measure_in_page(page, base, n, block))
                page.check_errors()
        finally:
            chromium.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.browser", description=__doc__)
    parser.add_argument("-n", type=int, default=5000, help="calls per client per run")
    parser.add_argument("--block", type=int, default=20, help="calls per interleaved block")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 runs of 500 calls")
    args = parser.parse_args()
    if args.quick:
        args.n, args.runs = 500, 3
    results = trio.run(run, args.n, args.block, args.runs)
    print(f"browser RPC over WebSocket, {args.n} sequential calls per client per run")
    print(f"chromium: {shutil.which('chromium') or '/usr/bin/chromium'}, hypercorn /rpc/ws")
    print(
        f"{'run':>4} {'hand-written us/call':>21} {'tether us/call':>15} {'ratio':>6}"
        f" {'median block ratio':>19}"
    )
    for i, r in enumerate(results, 1):
        print(
            f"{i:>4} {r['rawUsPerCall']:>21.1f} {r['tetherUsPerCall']:>15.1f} {r['ratio']:>6.2f}"
            f" {r['medianBlockRatio']:>19.2f}"
        )
    ratio = statistics.median(r["ratio"] for r in results)
    blocks = statistics.median(r["medianBlockRatio"] for r in results)
    verdict = "PASS" if blocks <= TARGET else "FAIL"
    print(f"median run's ratio of totals, tether / hand-written: {ratio:.2f}")
    print(f"median of the runs' median block ratios: {blocks:.2f} (target <= {TARGET}): {verdict}")


if __name__ == "__main__":
    main()
