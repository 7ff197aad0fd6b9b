# mypy: disable-error-code="empty-body"
"""A backend with cacheable operations, served by hypercorn, that counts what reaches it.

Shared by tests/test_http_cache.py and tests/test_http_cache_nginx.py.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import hypercorn.config
import hypercorn.trio

import tether
from tether.runtime import RpcInterface, RpcManager
from tether.runtime._util import open_service_nursery
from tether.transports.http import HttpApp


@attrs.frozen
class Price:
    key: str
    cents: int


class Catalog(RpcInterface):
    interface_name = "test.Catalog"
    interface_version = "1.0.0"

    @tether.cacheable(max_age=60)
    async def price(self, key: str, quantity: int = 1) -> Price: ...

    @tether.cacheable(immutable=True)
    async def digest(self, data: bytes) -> bytes: ...

    @tether.cacheable(max_age=1)
    async def tick(self) -> int: ...

    @tether.cacheable(max_age=1)
    async def motd(self) -> str: ...

    @tether.cacheable(max_age=60)
    async def whoami(self) -> str | None: ...

    @tether.cacheable(max_age=60)
    async def broken(self, key: str) -> int: ...

    @tether.idempotent
    async def stock(self, key: str) -> int: ...

    async def buy(self, key: str) -> int: ...


class CatalogImpl(Catalog):
    """Counts the calls that reach it, by operation."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def price(self, key: str, quantity: int = 1) -> Price:
        self.calls["price"] += 1
        return Price(key, 250 * quantity)

    async def digest(self, data: bytes) -> bytes:
        self.calls["digest"] += 1
        return data[::-1]

    async def tick(self) -> int:
        self.calls["tick"] += 1
        return self.calls["tick"]

    async def motd(self) -> str:
        self.calls["motd"] += 1
        return "the same every time"

    async def whoami(self) -> str | None:
        self.calls["whoami"] += 1
        context = tether.current_context()
        return None if context is None else context.authorization

    async def broken(self, key: str) -> int:
        self.calls["broken"] += 1
        raise RuntimeError(f"no price list for {key}")

    async def stock(self, key: str) -> int:
        self.calls["stock"] += 1
        return 7

    async def buy(self, key: str) -> int:
        self.calls["buy"] += 1
        return 1


class Recorder:
    """An ASGI app in front of an HttpApp that notes each HTTP request's method and path."""

    def __init__(self, app: HttpApp) -> None:
        self.app = app
        self.requests: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"], scope["query_string"]))
        await self.app(scope, receive, send)

    def methods(self, operation: str) -> list[str]:
        """The methods of the requests that reached `operation`."""
        return [method for method, path, _ in self.requests if path.endswith(f"/{operation}")]


def catalog_manager() -> tuple[RpcManager, CatalogImpl]:
    manager = RpcManager()
    impl = CatalogImpl()
    manager.register_impl(Catalog, impl)
    return manager, impl


@asynccontextmanager
async def served_catalog(**options: Any) -> AsyncIterator[tuple[str, Recorder, CatalogImpl]]:
    """Serve the catalog on 127.0.0.1, port 0, with hypercorn (Trio worker), for the block.

    Yields its origin (`http://127.0.0.1:PORT`), the recorder and the impl.
    """
    manager, impl = catalog_manager()
    recorder = Recorder(HttpApp(manager, **options))
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with open_service_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn.trio.serve, recorder, config))
        yield binds[0], recorder, impl
        nursery.cancel_scope.cancel()
