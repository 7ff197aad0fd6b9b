"""Backend C: pricing, serving `Pricing`; the orders backend is its client.

In production this is its own process, served by hypercorn's Trio worker with
the module's ASGI app::

    hypercorn examples.http_backends.pricing:asgi --worker-class trio --bind 0.0.0.0:8003
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import tether
from tether.transports.http import HttpApp

from .interface import OrderLine, PricedLine, Pricing, ProductNotFound, Quote, money

__all__ = ["PRICES", "VOLUME_DISCOUNT", "PricingImpl", "asgi", "make_backend"]

log = logging.getLogger("store.pricing")

#: Unit prices in cents, by SKU.
PRICES = {"cup-02": 900, "matcha-20g": 2400, "pot-01": 5900, "sencha-100g": 1250}
#: A line of this many units or more gets 10% off.
VOLUME_DISCOUNT = 4


class PricingImpl(Pricing):
    """Serves `Pricing` from a price list."""

    def __init__(self, prices: Mapping[str, int]) -> None:
        self.prices = dict(prices)

    def price(self, line: OrderLine) -> PricedLine:
        unit = self.prices.get(line.sku)
        if unit is None:
            log.warning("no price for %r", line.sku)
            raise ProductNotFound(line.sku)
        total = unit * line.quantity
        if line.quantity >= VOLUME_DISCOUNT:
            total -= total // 10
            log.info("%d x %s: 10%% volume discount", line.quantity, line.sku)
        return PricedLine(line.sku, line.quantity, unit, total)

    async def quote(self, lines: list[OrderLine]) -> Quote:
        priced = [self.price(line) for line in lines]
        total = sum(line.total_cents for line in priced)
        log.info("quoted %s", money(total))
        return Quote(priced, total)


def make_backend() -> tether.RpcManager:
    """Backend C's RpcManager."""
    manager = tether.RpcManager()
    manager.register_impl(Pricing, PricingImpl(PRICES))
    return manager


#: The ASGI app to serve backend C with hypercorn.
asgi = HttpApp(make_backend())
