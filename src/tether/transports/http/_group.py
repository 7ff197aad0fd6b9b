"""`http.connect` and `http.connect_ipc`: one backend URL, or a list of them.

A list gives a `BackendGroup` for RPC, and an IPC session on one of them.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import cast, overload

from ...runtime import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    DEFAULT_STREAM_WINDOW,
    FrontendIpc,
    IpcInterface,
    RetryPolicy,
    RpcInterface,
    StreamWindow,
)
from ...runtime._group import BackendGroup, Balance
from ...runtime._group_connect import (
    check_balance,
    connect_several,
    is_url_list,
    open_session_on_one,
)
from ...runtime._interceptors import Interceptor
from ...runtime._retry import DEFAULT_RETRY
from . import _client, _ipc_client
from ._client import DEFAULT_READ_TIMEOUT, HttpBackend
from ._wire import DEFAULT_MAX_BODY_SIZE

__all__ = ["connect", "connect_ipc"]

# The keywords are spelled out three times (two overloads and the function):
# with `**options: Any`, mypy would pass a misspelled one, and only the call
# would find it. tests/test_group_signatures.py keeps them equal to
# `_client.connect`'s. A str is a Sequence[str] too: the first overload that
# matches wins, so one URL gives the one backend (mypy's overlap warning is moot).


@overload
def connect(  # type: ignore[overload-overlap]
    url: str,
    *,
    interfaces: Iterable[type[RpcInterface]],
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    session_id: str | None = None,
    max_message_size: int = DEFAULT_MAX_BODY_SIZE,
    max_connections: int = 100,
    read_timeout: float | None = DEFAULT_READ_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> AbstractAsyncContextManager[HttpBackend]: ...


@overload
def connect(
    url: Sequence[str],
    *,
    interfaces: Iterable[type[RpcInterface]],
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    session_id: str | None = None,
    max_message_size: int = DEFAULT_MAX_BODY_SIZE,
    max_connections: int = 100,
    read_timeout: float | None = DEFAULT_READ_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
    ssl_context: ssl.SSLContext | None = None,
    balance: Balance | None = None,
) -> AbstractAsyncContextManager[BackendGroup]: ...


def connect(
    url: str | Sequence[str],
    *,
    interfaces: Iterable[type[RpcInterface]],
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    session_id: str | None = None,
    max_message_size: int = DEFAULT_MAX_BODY_SIZE,
    max_connections: int = 100,
    read_timeout: float | None = DEFAULT_READ_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
    ssl_context: ssl.SSLContext | None = None,
    balance: Balance | None = None,
) -> AbstractAsyncContextManager[HttpBackend] | AbstractAsyncContextManager[BackendGroup]:
    """Connect to an HTTP backend, or to several serving the same interfaces, for the block.

    With one URL (a `str`), this is the connection to one backend: an
    `HttpBackend` (docs/http.md). With a list of URLs, a
    `tether.BackendGroup` over one connection per URL (docs/rpc.md,
    "Several backends"): calls go to the member with the fewest calls in
    flight (`balance="round-robin"`: each in turn); one that cannot be
    reached is taken out and tried again after the `retry` backoff; a failed
    call fails over to another member when `retry` allows another try.
    Every other argument is the one-URL connect's (`HttpBackend`'s; see
    there), given to each member.

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
        TypeError: an argument this function does not take.
    """
    check_balance(url, balance)
    if not is_url_list(url):
        # One URL: the connect of old, which refuses a URL that is not a str itself.
        return _client.connect(
            cast(str, url),
            interfaces=interfaces,
            application_id=application_id,
            application_version=application_version,
            authorization=authorization,
            session_id=session_id,
            max_message_size=max_message_size,
            max_connections=max_connections,
            read_timeout=read_timeout,
            stream_window=stream_window,
            retry=retry,
            interceptors=interceptors,
            ssl_context=ssl_context,
        )
    options = {
        "application_id": application_id,
        "application_version": application_version,
        "authorization": authorization,
        "session_id": session_id,
        "max_message_size": max_message_size,
        "max_connections": max_connections,
        "read_timeout": read_timeout,
        "stream_window": stream_window,
        "interceptors": interceptors,
        "retry": retry,
        "ssl_context": ssl_context,
    }
    return connect_several(_client.connect, url, interfaces, balance, options)


def connect_ipc(
    url: str | Sequence[str],
    *,
    channels: Iterable[type[IpcInterface]] = (),
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    max_message_size: int = DEFAULT_MAX_BODY_SIZE,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    interceptors: Iterable[Interceptor] = (),
    retry: RetryPolicy | None = DEFAULT_RETRY,
    ssl_context: ssl.SSLContext | None = None,
) -> AbstractAsyncContextManager[FrontendIpc]:
    """Open an IPC session with an HTTP backend, or with one of several, for the block.

    With one URL, the session of docs/http.md. With a list of URLs serving
    the same channels, the session is opened on one of them and stays there
    (docs/rpc.md, "Several backends"): each new session begins at the next
    URL in turn and takes the first that accepts it; one that cannot be
    reached passes it on to the next. Its messages, and its resumes after a
    break, all go to the backend that opened it. Every other argument is
    the one-URL `connect_ipc`'s (see there).

    Raises:
        ConnectError: no URL accepted the session; the message names each and why.
        IncompatibleVersion, NotFound: a reachable backend refused the channels.
        ValueError, TypeError: as the one-URL `connect_ipc`.
    """
    if not is_url_list(url):
        return _ipc_client.connect_ipc(
            cast(str, url),
            channels=channels,
            application_id=application_id,
            application_version=application_version,
            authorization=authorization,
            max_message_size=max_message_size,
            max_pending_notifications=max_pending_notifications,
            max_pending_bytes=max_pending_bytes,
            slow_listener_timeout=slow_listener_timeout,
            stream_window=stream_window,
            interceptors=interceptors,
            retry=retry,
            ssl_context=ssl_context,
        )
    options = {
        "channels": channels,
        "application_id": application_id,
        "application_version": application_version,
        "authorization": authorization,
        "max_message_size": max_message_size,
        "max_pending_notifications": max_pending_notifications,
        "max_pending_bytes": max_pending_bytes,
        "slow_listener_timeout": slow_listener_timeout,
        "stream_window": stream_window,
        "interceptors": interceptors,
        "retry": retry,
        "ssl_context": ssl_context,
    }
    return open_session_on_one(_ipc_client.connect_ipc, url, options)
