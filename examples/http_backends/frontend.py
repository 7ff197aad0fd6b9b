"""The frontend: three user actions against the catalog (A) and orders (B).

It imports only the shared interfaces. One RpcManager routes `CatalogRead` to
backend A and `Orders` to backend B; the actions get typed clients from it and
cannot tell where, or over what, each interface is served.

Each action runs in `tether.contexts.activity()`, which starts a new
ActivityId: every call made inside the block carries it, and so does every
call those calls make in turn (B's call to C), so the action's log lines on all
four tiers share one id.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import tether
from tether import contexts
from tether.transports import http

from .interface import CatalogRead, Order, OrderLine, Orders, ProductNotFound, money

__all__ = [
    "APPLICATION_ID",
    "buy_gift_set",
    "buy_tea",
    "open_store",
    "quick_order",
    "run_actions",
]

log = logging.getLogger("store.frontend")

APPLICATION_ID = "store-web"


@asynccontextmanager
async def open_store(catalog_url: str, orders_url: str) -> AsyncIterator[tether.RpcManager]:
    """Connect to backends A and B for the block, and route each interface to its own."""
    store = tether.RpcManager()
    async with (
        http.connect(catalog_url, interfaces=[CatalogRead], application_id=APPLICATION_ID) as a,
        http.connect(orders_url, interfaces=[Orders], application_id=APPLICATION_ID) as b,
    ):
        store.initialize_client([CatalogRead], a)
        store.initialize_client([Orders], b)
        yield store


def summary(order: Order) -> str:
    lines = ", ".join(f"{line.quantity} x {line.sku}" for line in order.lines)
    return f"order {order.order_id}: {lines}, total {money(order.total_cents)}"


async def buy_tea(store: tether.RpcManager) -> str:
    """Action 1: find sencha in the catalog and buy a pack. Returns its ActivityId."""
    catalog, orders = store.get_client(CatalogRead), store.get_client(Orders)
    with contexts.activity() as action:
        log.info("action 1: alice buys a pack of sencha")
        [tea] = await catalog.search("sencha")
        order = await orders.place_order("alice", [OrderLine(tea.sku, 1)])
        log.info("alice placed %s", summary(order))
    return action.activity_id


async def buy_gift_set(store: tether.RpcManager) -> str:
    """Action 2: a teapot and four cups (a volume discount). Returns its ActivityId."""
    catalog, orders = store.get_client(CatalogRead), store.get_client(Orders)
    with contexts.activity() as action:
        log.info("action 2: bob buys a teapot and four cups")
        [pot] = await catalog.search("teapot")
        [cup] = await catalog.search("cup")
        order = await orders.place_order("bob", [OrderLine(pot.sku, 1), OrderLine(cup.sku, 4)])
        log.info("bob placed %s", summary(order))
    return action.activity_id


async def quick_order(store: tether.RpcManager) -> str:
    """Action 3: an order typed by SKU, one of them wrong. Returns its ActivityId.

    Backend C raises `ProductNotFound`; it reaches the frontend through B as
    itself, and the frontend asks the catalog what the user may have meant.
    """
    catalog, orders = store.get_client(CatalogRead), store.get_client(Orders)
    lines = [OrderLine("sencha-100g", 2), OrderLine("matcha-30g", 1)]
    with contexts.activity() as action:
        log.info("action 3: carol orders by SKU: %s", ", ".join(line.sku for line in lines))
        try:
            await orders.place_order("carol", lines)
        except ProductNotFound as exc:
            guesses = await catalog.search(exc.sku.partition("-")[0])
            log.info(
                "carol's order was refused (%s); did she mean %s?",
                exc,
                " or ".join(f"{p.sku} ({p.name})" for p in guesses) or "nothing we sell",
            )
    return action.activity_id


async def run_actions(store: tether.RpcManager) -> list[str]:
    """Perform the user actions one after the other; return their ActivityIds."""
    return [await buy_tea(store), await buy_gift_set(store), await quick_order(store)]
