"""IPC over HTTP (POSTs up, Server-Sent Events down): notification and invoke rates.

Run from the repository root::

    .venv/bin/python -m bench.http_ipc             # 5 rounds of 20,000 notifications
    .venv/bin/python -m bench.http_ipc --quick     # 3 rounds of 5,000, a few seconds

One process: `http.serve` (hypercorn) on 127.0.0.1 port 0 and `http.connect_ipc`
in the same Trio run, so the numbers are what one core does for both sides.

* notifications, backend -> frontend, per second: the `bench.ipc` handler's
  `burst(count)` sends `count` `tick(n)` notifications; the clock runs from
  the `burst` invoke until the listener has the last one (each checked to
  arrive once, in order);
* invokes, frontend -> backend, per second: sequential `hello(name)` calls
  (each one POST, its reply one event).

The table shows the best round and the median. Used to check that session
resume (event ids, POST sequence numbers) costs the hot path nothing visible.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import trio

import tether
from bench.ipc import BenchIpc, Receiver, TickListener, make_backend
from tether.transports import http


async def _run(rounds: int, notifications: int, invokes: int) -> None:
    rates: dict[str, list[float]] = {"notifications/s": [], "invokes/s": []}
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            functools.partial(http.serve, None, "127.0.0.1", 0, ipc=make_backend())
        )
        async with http.connect_ipc(url, channels=[BenchIpc]) as frontend:
            receiver = Receiver()
            frontend.add_notification_handler(TickListener(receiver))
            proxy = frontend.proxy(BenchIpc)
            for _ in range(rounds):
                receiver.reset(notifications)
                start = time.perf_counter()
                await proxy.burst(notifications)
                with trio.fail_after(60):
                    await receiver.done.wait()
                receiver.check("notifications")
                rates["notifications/s"].append(notifications / (receiver.last_at - start))
                start = time.perf_counter()
                for n in range(invokes):
                    await proxy.hello(f"n{n}")
                rates["invokes/s"].append(invokes / (time.perf_counter() - start))
        nursery.cancel_scope.cancel()
    print(f"IPC over HTTP, tether {tether.__version__}: {rounds} rounds")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:<16} best {max(values):>10,.0f}   median {median:>10,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5,000, a smoke test")
    args = parser.parse_args()
    if args.quick:
        trio.run(_run, 3, 5_000, 300)
    else:
        trio.run(_run, 5, 20_000, 1_000)


if __name__ == "__main__":
    main()
