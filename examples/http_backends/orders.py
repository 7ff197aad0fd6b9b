"""Backend B: orders, serving `Orders` and calling backend C's `Pricing` over HTTP.

B is a server and a client at once: one RpcManager registers the `Orders` impl
and routes `Pricing` to backend C. The impl calls C while it serves a request,
when the server has made that request's context current, so the call to C
carries the frontend's ActivityId without a line of code here.

B connects to C before it serves, so it is started with `serve` below rather
than as a bare ASGI app; in production it is its own process, running
`trio.run(orders.serve, "http://pricing.internal:8003/rpc", "0.0.0.0", 8002)`.
"""

from __future__ import annotations

import itertools
import logging

import trio

import tether
from tether.transports import http

from .interface import Order, OrderLine, Orders, Pricing, ProductNotFound

__all__ = ["OrdersImpl", "serve"]

log = logging.getLogger("store.orders")


class OrdersImpl(Orders):
    """Serves `Orders`: prices each order with `pricing`, then records it."""

    def __init__(self, pricing: Pricing) -> None:
        self.pricing = pricing
        self.orders: dict[int, Order] = {}
        self._ids = itertools.count(1001)

    async def place_order(self, customer: str, lines: list[OrderLine]) -> Order:
        if not lines or any(line.quantity < 1 for line in lines):
            raise tether.InvalidRequest(
                f"an order needs at least one line and positive quantities, got {lines!r}"
            )
        items = ", ".join(f"{line.quantity} x {line.sku}" for line in lines)
        log.info("pricing %s's order: %s", customer, items)
        try:
            quote = await self.pricing.quote(lines)
        except ProductNotFound as exc:
            # Backend C's error, rebuilt here as itself; re-raised, it goes on
            # to the frontend as itself too.
            log.warning("order for %s refused: %s", customer, exc)
            raise
        order = Order(next(self._ids), customer, quote.lines, quote.total_cents)
        self.orders[order.order_id] = order
        log.info("order %d placed for %s", order.order_id, customer)
        return order


async def serve(
    pricing_url: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect to backend C at `pricing_url`, then serve backend B until cancelled.

    `nursery.start` gets B's URL.
    """
    manager = tether.RpcManager()
    async with http.connect(
        pricing_url, interfaces=[Pricing], application_id="store-orders"
    ) as pricing:
        manager.initialize_client([Pricing], pricing)
        manager.register_impl(Orders, OrdersImpl(manager.get_client(Pricing)))
        log.info("connected to pricing at %s", pricing_url)
        await http.serve(manager, host, port, task_status=task_status)
