"""Backend A: the catalog, serving `CatalogRead`.

In production this is its own process, served by hypercorn's Trio worker with
the module's ASGI app::

    hypercorn examples.http_backends.catalog:asgi --worker-class trio --bind 0.0.0.0:8001
"""

from __future__ import annotations

import logging

import tether
from tether.transports.http import HttpApp

from .interface import CatalogRead, Product

__all__ = ["PRODUCTS", "CatalogReadImpl", "asgi", "make_backend"]

log = logging.getLogger("store.catalog")

PRODUCTS = [
    Product("cup-02", "Porcelain tea cup"),
    Product("matcha-20g", "Ceremonial matcha, 20 g tin"),
    Product("pot-01", "Cast-iron teapot, 0.8 l"),
    Product("sencha-100g", "Sencha green tea, 100 g"),
]


class CatalogReadImpl(CatalogRead):
    """Serves `CatalogRead` from a list of products."""

    def __init__(self, products: list[Product]) -> None:
        self.products = sorted(products, key=lambda p: p.sku)

    async def search(self, text: str) -> list[Product]:
        needle = text.casefold()
        hits = [p for p in self.products if needle in p.sku or needle in p.name.casefold()]
        log.info("search %r: %s", text, ", ".join(p.sku for p in hits) or "no match")
        return hits


def make_backend() -> tether.RpcManager:
    """Backend A's RpcManager."""
    manager = tether.RpcManager()
    manager.register_impl(CatalogRead, CatalogReadImpl(PRODUCTS))
    return manager


#: The ASGI app to serve backend A with hypercorn.
asgi = HttpApp(make_backend())
