"""`http.connect`: one backend URL, or a list of them called as one group."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast, overload

from ...runtime import RpcInterface
from ...runtime._group import BackendGroup, Balance
from ...runtime._group_connect import check_balance, connect_several, is_url_list
from . import _client
from ._client import HttpBackend

__all__ = ["connect"]


@overload
def connect(
    url: str, *, interfaces: Iterable[type[RpcInterface]], **options: Any
) -> AbstractAsyncContextManager[HttpBackend]: ...


@overload
def connect(
    url: Sequence[str],
    *,
    interfaces: Iterable[type[RpcInterface]],
    balance: Balance | None = None,
    **options: Any,
) -> AbstractAsyncContextManager[BackendGroup]: ...


def connect(
    url: str | Sequence[str],
    *,
    interfaces: Iterable[type[RpcInterface]],
    balance: Balance | None = None,
    **options: Any,
) -> AbstractAsyncContextManager[HttpBackend] | AbstractAsyncContextManager[BackendGroup]:
    """Connect to an HTTP backend, or to several serving the same interfaces, for the block.

    With one URL (a `str`), this is the connection to one backend: an
    `HttpBackend` (docs/http.md). With a list of URLs, a
    `tether.runtime.BackendGroup` over one connection per URL (docs/rpc.md,
    "Several backends"): calls go to the member with the fewest calls in
    flight (`balance="round-robin"`: each in turn); one that cannot be
    reached is taken out and tried again after the `retry` backoff; a failed
    call fails over to another member when `retry` allows another try.
    Every other argument is `HttpBackend`'s connect's, given to each member.

    Example::

        urls = ["http://127.0.0.1:8000/rpc", "http://127.0.0.1:8001/rpc"]
        async with http.connect(urls, interfaces=[RobotWorldRead]) as group:
            robots = group.get_client(RobotWorldRead)
            await robots.count_robots(IModelProps("m1"))

    Raises:
        ConnectError: the backend, or every backend of the list, cannot be
            reached; the message names each URL and why.
        IncompatibleVersion, NotFound: a reachable backend does not serve
            `interfaces` as asked.
        ValueError: a URL is not an http:// URL; `balance` with one URL.
    """
    check_balance(url, balance)
    if not is_url_list(url):
        # One URL: the connect of old, which refuses a URL that is not a str itself.
        return _client.connect(cast(str, url), interfaces=interfaces, **options)
    return connect_several(_client.connect, url, interfaces, balance, options)
