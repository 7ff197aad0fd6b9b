"""A reverse proxy's own 502/504 (its backend was unreachable, reset, or silent) is a
call that may have run: retried for an idempotent operation, never for another.

Real nginx (as in test_http_cache_nginx) in front of a real backend that is then stopped:
nginx stays up and answers 502 with its own HTML page.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

import tether
from tests.http_cache_app import Catalog, catalog_manager
from tests.test_http_cache_nginx import nginx_in_front
from tether.transports import http

TIMEOUT = 20.0


async def test_a_proxys_bad_gateway_is_a_call_that_may_have_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether")
    manager, impl = catalog_manager()
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            async with trio.open_nursery() as server:
                url = await server.start(http.serve, manager)
                proxy = await stack.enter_async_context(
                    nginx_in_front(url.removesuffix("/rpc"), tmp_path)
                )
                backend = await stack.enter_async_context(
                    http.connect(
                        f"{proxy}/rpc",
                        interfaces=[Catalog],
                        retry=tether.RetryPolicy(attempts=3, initial_backoff=0.01),
                    )
                )
                catalog = backend.get_client(Catalog)
                bought = await catalog.buy("m1")
                server.cancel_scope.cancel()  # the backend is gone; nginx stays
            # Not idempotent: not retried, and the caller is told it may have run.
            with pytest.raises(tether.CallMayHaveRun) as lost:
                await catalog.buy("m1")
            assert "502" in lost.value.message
            assert "may have run" in lost.value.message
            assert not [r for r in caplog.records if r.getMessage().startswith("retrying")]
            # Idempotent: retried, then given up with the same error.
            with pytest.raises(tether.CallMayHaveRun):
                await catalog.stock("m1")
            retries = [r for r in caplog.records if r.getMessage().startswith("retrying")]
            assert len(retries) == 2
    assert impl.calls["buy"] == 1
    assert bought == 1
