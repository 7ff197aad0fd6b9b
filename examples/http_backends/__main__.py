"""Run the store: backends A, B and C over HTTP, and the frontend, in one process.

    python -m examples.http_backends

Each backend is its own RpcManager, served over HTTP by hypercorn on a free
port of 127.0.0.1. Here all three run in one nursery so the demo is one
command; in production each is its own process, served by hypercorn's Trio
worker (`HttpApp(manager)` is the ASGI app it serves)::

    hypercorn examples.http_backends.catalog:asgi --worker-class trio

`http.serve` runs that same app on hypercorn from inside a Trio program.

Logging is configured once for the process: one handler, with `ContextFilter`
to put the request context's `activity_id` on every record. Each tier logs
under its own name (`store.catalog`, `store.orders`, `store.pricing`,
`store.frontend`), so each line shows which tier wrote it and which user
action it belongs to.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import trio

from tether.contexts import ContextFilter
from tether.transports import http

from . import catalog, frontend, orders, pricing

log = logging.getLogger("store")


def configure_logging() -> None:
    """Log every tier to stdout as `logger  activity_id  message`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter("%(name)-14s  %(activity_id)-36s  %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("store").setLevel(logging.INFO)


async def run_store() -> list[str]:
    """Serve backends A, C and B, run the frontend's actions, stop; return their ActivityIds."""
    async with trio.open_nursery() as nursery:
        catalog_url = await nursery.start(http.serve, catalog.make_backend())
        pricing_url = await nursery.start(http.serve, pricing.make_backend())
        orders_url = await nursery.start(orders.serve, pricing_url)  # B connects to C first
        log.info("A: catalog at %s", catalog_url)
        log.info("B: orders  at %s", orders_url)
        log.info("C: pricing at %s", pricing_url)
        async with frontend.open_store(catalog_url, orders_url) as store:
            activity_ids = await frontend.run_actions(store)
        nursery.cancel_scope.cancel()  # stop the servers
    return activity_ids


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m examples.http_backends",
        description="Run a store's frontend against its three HTTP backends, in one process.",
    ).parse_args(argv)
    configure_logging()
    print("A store over HTTP: the frontend calls A (catalog) and B (orders); B calls C (pricing)\n")
    trio.run(run_store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
