# mypy: disable-error-code="empty-body"
"""Shared code: the store's three interfaces, their types and their errors.

Every tier imports this module: the frontend calls `CatalogRead` and `Orders`;
the orders backend serves `Orders` and calls `Pricing`; the catalog and pricing
backends serve theirs. Money is in integer cents, so nothing is lost to floats.
"""

from __future__ import annotations

import attrs

import tether

__all__ = [
    "CatalogRead",
    "Order",
    "OrderLine",
    "PricedLine",
    "Pricing",
    "Product",
    "ProductNotFound",
    "Quote",
    "Orders",
    "money",
]


@attrs.frozen
class Product:
    """A product as the catalog shows it."""

    sku: str
    name: str


@attrs.frozen
class OrderLine:
    """What a customer asks for: a product and how many."""

    sku: str
    quantity: int


@attrs.frozen
class PricedLine:
    """An order line with its price, discounts included."""

    sku: str
    quantity: int
    unit_cents: int
    total_cents: int


@attrs.frozen
class Quote:
    """What a list of order lines costs."""

    lines: list[PricedLine]
    total_cents: int


@attrs.frozen
class Order:
    """A placed order."""

    order_id: int
    customer: str
    lines: list[PricedLine]
    total_cents: int


@tether.remote_error
@attrs.define
class ProductNotFound(Exception):
    """The store sells no product with this SKU.

    Registered with `remote_error`: it crosses HTTP as itself (status 422, code
    `application`), from the pricing backend through the orders backend to the
    frontend, which catches it by its class.
    """

    sku: str

    def __str__(self) -> str:
        return f"no product {self.sku!r}"


def money(cents: int) -> str:
    """`1250` -> `"EUR 12.50"`."""
    return f"EUR {cents // 100}.{cents % 100:02d}"


class CatalogRead(tether.RpcInterface):
    """Backend A: what the store sells."""

    interface_name = "CatalogRead"  # the wire name: never change it
    interface_version = "1.0.0"

    async def search(self, text: str) -> list[Product]:
        """The products whose SKU or name contains `text` (any case), by SKU."""
        ...


class Orders(tether.RpcInterface):
    """Backend B: placing orders (it asks `Pricing` what they cost)."""

    interface_name = "Orders"
    interface_version = "1.0.0"

    async def place_order(self, customer: str, lines: list[OrderLine]) -> Order:
        """Price and record an order.

        Raises:
            ProductNotFound: a line names a product the store does not sell.
            tether.InvalidRequest: the order is empty, or a quantity is not positive.
        """
        ...


class Pricing(tether.RpcInterface):
    """Backend C: prices and discounts."""

    interface_name = "Pricing"
    interface_version = "1.0.0"

    async def quote(self, lines: list[OrderLine]) -> Quote:
        """What the lines cost, with volume discounts.

        Raises:
            ProductNotFound: a line names a product with no price.
        """
        ...
