"""`websocket.connect`: one backend URL, or a list of them called as one group."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast, overload

from ...runtime import ReconnectingBackend, RpcInterface
from ...runtime._group import BackendGroup, Balance
from ...runtime._group_connect import check_balance, connect_several, is_url_list
from . import _client

__all__ = ["connect"]


@overload
def connect(
    url: str, *, interfaces: Iterable[type[RpcInterface]], **options: Any
) -> AbstractAsyncContextManager[ReconnectingBackend]: ...


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
) -> AbstractAsyncContextManager[ReconnectingBackend] | AbstractAsyncContextManager[BackendGroup]:
    """Connect to a WebSocket backend, or to several serving the same interfaces, for the block.

    With one URL (a `str`), the connection to one backend (docs/websocket.md).
    With a list of URLs, a `tether.runtime.BackendGroup` over one connection
    per URL (docs/rpc.md, "Several backends"): calls go to the member with
    the fewest calls in flight (`balance="round-robin"`: each in turn); one
    that cannot be reached is taken out and tried again after the `retry`
    backoff; a failed call fails over to another member when `retry` allows
    another try; a stream call stays on one member. Every other argument is
    the one-URL connect's, given to each member.

    Raises:
        ConnectError: the backend, or every backend of the list, cannot be
            reached; the message names each URL and why.
        IncompatibleVersion, NotFound: a reachable backend does not serve
            `interfaces` as asked.
        ValueError: a URL is not a ws:// URL; `balance` with one URL.
    """
    check_balance(url, balance)
    if not is_url_list(url):
        # One URL: the connect of old, which refuses a URL that is not a str itself.
        return _client.connect(cast(str, url), interfaces=interfaces, **options)
    return connect_several(_client.connect, url, interfaces, balance, options)
