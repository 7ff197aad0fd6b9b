"""The multiple-backends example: one ActivityId on the logs of every tier, over HTTP.

The frontend routes `CatalogRead` to backend A and `Orders` to backend B; B
serves `Orders` by calling `Pricing` on backend C. Each user action's
ActivityId must reach all three backends' logs (C's only through B's call).
"""

from __future__ import annotations

import logging
import re
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

import tether
from examples.http_backends import catalog, orders, pricing
from examples.http_backends.__main__ import run_store
from examples.http_backends.interface import (
    CatalogRead,
    OrderLine,
    Orders,
    Pricing,
    ProductNotFound,
)
from tether.contexts import ContextFilter
from tether.transports import http

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"store.catalog", "store.orders", "store.pricing"}
TIERS = {"store.frontend", *BACKENDS}
ACTIVITY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# "store.orders    <activity id>  <message>": one log line of the demo.
LOG_LINE = re.compile(r"^(?P<logger>store(?:\.\w+)?) +(?P<activity>\S+)  (?P<message>.*)$")
ACTION = re.compile(r"^action (\d+): ")


# -- the example's actions, in-process ---------------------------------------------


async def test_each_actions_activity_id_reaches_backends_a_b_and_c(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="store")
    caplog.handler.addFilter(ContextFilter())
    with trio.fail_after(20):
        activity_ids = await run_store()

    tiers: dict[str, set[str]] = defaultdict(set)  # activity -> loggers that logged under it
    messages: dict[str, list[str]] = defaultdict(list)  # activity -> frontend's messages
    for record in caplog.records:
        activity = getattr(record, "activity_id", "-")
        tiers[activity].add(record.name)
        if record.name == "store.frontend":
            messages[activity].append(record.getMessage())

    assert len(activity_ids) == 3
    assert len(set(activity_ids)) == 3, "each user action has its own ActivityId"
    for activity in activity_ids:
        assert ACTIVITY_ID.match(activity), activity
        assert tiers[activity] == TIERS, (activity, tiers[activity])
    # Nothing logged inside a request escaped its action's id.
    assert set(tiers) - set(activity_ids) <= {"-"}
    assert tiers["-"] <= {"store", "store.orders"}, "only start-up lines have no activity"

    first, second, third = (messages[activity] for activity in activity_ids)
    assert first[-1] == "alice placed order 1001: 1 x sencha-100g, total EUR 12.50"
    # 59.00 + 4 x 9.00, less 10% on the four cups.
    assert second[-1] == "bob placed order 1002: 1 x pot-01, 4 x cup-02, total EUR 91.40"
    assert third[-1] == (
        "carol's order was refused (no product 'matcha-30g'); "
        "did she mean matcha-20g (Ceremonial matcha, 20 g tin)?"
    )


# -- the backends, one error at a time -----------------------------------------------


@asynccontextmanager
async def orders_backend() -> AsyncIterator[http.HttpBackend]:
    """Backends C and B served over HTTP; a frontend's connection to B."""
    async with trio.open_nursery() as nursery:
        pricing_url = await nursery.start(http.serve, pricing.make_backend())
        orders_url = await nursery.start(orders.serve, pricing_url)
        async with http.connect(orders_url, interfaces=[Orders]) as backend:
            yield backend
        nursery.cancel_scope.cancel()


async def test_product_not_found_crosses_b_from_c_as_itself() -> None:
    with trio.fail_after(20):
        async with orders_backend() as backend:
            store = backend.get_client(Orders)
            with pytest.raises(ProductNotFound) as raised:
                await store.place_order("dave", [OrderLine("pot-01", 1), OrderLine("kettle", 1)])
            # B still works after passing an error on.
            order = await store.place_order("dave", [OrderLine("pot-01", 1)])
    assert type(raised.value) is ProductNotFound
    assert attrs.asdict(raised.value) == {"sku": "kettle"}
    assert (order.order_id, order.total_cents) == (1001, pricing.PRICES["pot-01"])


async def test_unknown_product_is_http_422_application_on_the_wire() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            pricing_url = await nursery.start(http.serve, pricing.make_backend())
            orders_url = await nursery.start(orders.serve, pricing_url)
            host_port = orders_url.removeprefix("http://").removesuffix("/rpc")
            body = b'["erin", [{"sku": "kettle", "quantity": 1}]]'
            request = (
                f"POST /rpc/Orders/1.0.0/place_order HTTP/1.1\r\nHost: {host_port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode() + body
            host, port = host_port.rsplit(":", 1)
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                await stream.send_all(request)
                response = b""
                while chunk := await stream.receive_some():
                    response += chunk
            nursery.cancel_scope.cancel()
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 422 "), response
    assert b'"code":"application"' in payload, payload
    assert b'"sku":"kettle"' in payload, payload


async def test_an_empty_order_is_refused_before_pricing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="store")
    with trio.fail_after(20):
        async with orders_backend() as backend:
            with pytest.raises(tether.InvalidRequest, match="at least one line"):
                await backend.get_client(Orders).place_order("frank", [])
    assert not [r for r in caplog.records if r.name == "store.pricing"]


def test_asgi_apps_serve_what_hypercorn_would() -> None:
    """`catalog.asgi` and `pricing.asgi` are the apps the deployment notes name."""
    assert isinstance(catalog.asgi, http.HttpApp)
    assert isinstance(pricing.asgi, http.HttpApp)
    assert set(catalog.asgi.manager.describe()) == {CatalogRead.interface_name}
    assert set(pricing.asgi.manager.describe()) == {Pricing.interface_name}


# -- the demo, run as `make demo-http` runs it -------------------------------------


async def test_demo_script_shows_one_activity_id_on_every_tier() -> None:
    with trio.fail_after(60):
        proc = await trio.run_process(
            [sys.executable, "-m", "examples.http_backends"],
            cwd=REPO_ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = proc.stdout.decode()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{output}\n{proc.stderr.decode()}"
    assert proc.stderr == b""

    tiers: dict[str, set[str]] = defaultdict(set)  # activity -> loggers
    actions: list[tuple[int, str]] = []  # (action number, activity)
    for line in output.splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            continue
        logger, activity, message = match.group("logger", "activity", "message")
        tiers[activity].add(logger)
        if logger == "store.frontend" and (action := ACTION.match(message)):
            actions.append((int(action.group(1)), activity))

    assert [number for number, _ in actions] == [1, 2, 3], output
    activities = [activity for _, activity in actions]
    assert len(set(activities)) == 3, output
    for activity in activities:
        assert tiers[activity] == TIERS, (activity, output)
