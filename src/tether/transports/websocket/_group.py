"""`websocket.connect` and `websocket.connect_ipc`: one backend URL, or a list of them.

A list gives a `BackendGroup` for RPC, and an IPC session on one of them.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import cast, overload

from ...runtime import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    DEFAULT_STREAM_WINDOW,
    FrontendIpc,
    IpcInterface,
    ReconnectingBackend,
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
from . import _client
from ._endpoint import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT

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
    headers: Mapping[str, str] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_in_flight: int = 1024,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
) -> AbstractAsyncContextManager[ReconnectingBackend]: ...


@overload
def connect(
    url: Sequence[str],
    *,
    interfaces: Iterable[type[RpcInterface]],
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    session_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_in_flight: int = 1024,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
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
    headers: Mapping[str, str] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_in_flight: int = 1024,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
    balance: Balance | None = None,
) -> AbstractAsyncContextManager[ReconnectingBackend] | AbstractAsyncContextManager[BackendGroup]:
    """Connect to a WebSocket backend, or to several serving the same interfaces, for the block.

    With one URL (a `str`), the connection to one backend (docs/websocket.md).
    With a list of URLs, a `tether.BackendGroup` over one connection per URL
    (docs/rpc.md, "Several backends"): calls go to the member with the
    fewest calls in flight (`balance="round-robin"`: each in turn); one that
    cannot be reached is taken out and tried again after the `retry`
    backoff; a failed call fails over to another member when `retry` allows
    another try; a stream call stays on one member. Every other argument is
    the one-URL connect's (see there), given to each member.

    Raises:
        ConnectError: the backend, or every backend of the list, cannot be
            reached; the message names each URL and why.
        IncompatibleVersion, NotFound: a reachable backend does not serve
            `interfaces` as asked.
        ValueError: a URL is not a ws:// URL; `balance` with one URL.
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
            headers=headers,
            max_message_size=max_message_size,
            max_in_flight=max_in_flight,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
            stream_window=stream_window,
            retry=retry,
            interceptors=interceptors,
        )
    options = {
        "application_id": application_id,
        "application_version": application_version,
        "authorization": authorization,
        "session_id": session_id,
        "headers": headers,
        "max_message_size": max_message_size,
        "max_in_flight": max_in_flight,
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
        "connect_timeout": connect_timeout,
        "ssl_context": ssl_context,
        "stream_window": stream_window,
        "interceptors": interceptors,
        "retry": retry,
    }
    return connect_several(_client.connect, url, interfaces, balance, options)


def connect_ipc(
    url: str | Sequence[str],
    *,
    channels: Iterable[type[IpcInterface]] = (),
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    interceptors: Iterable[Interceptor] = (),
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    retry: RetryPolicy | None = DEFAULT_RETRY,
) -> AbstractAsyncContextManager[FrontendIpc]:
    """Open an IPC session over WebSocket with a backend, or with one of several, for the block.

    With one URL, the session of docs/websocket.md. With a list of URLs
    serving the same channels, the session is opened on one of them and
    stays there (docs/rpc.md, "Several backends"): each new session begins
    at the next URL in turn and takes the first that accepts it; one that
    cannot be reached passes it on to the next. Its resumes after a break
    all go to the backend that opened it. Every other argument is the
    one-URL `connect_ipc`'s (see there).

    Raises:
        ConnectError: no URL accepted the session; the message names each and why.
        IncompatibleVersion, NotFound: a reachable backend refused the channels.
        ValueError, TypeError: as the one-URL `connect_ipc`.
    """
    if not is_url_list(url):
        return _client.connect_ipc(
            cast(str, url),
            channels=channels,
            application_id=application_id,
            application_version=application_version,
            authorization=authorization,
            headers=headers,
            max_message_size=max_message_size,
            max_pending_notifications=max_pending_notifications,
            max_pending_bytes=max_pending_bytes,
            slow_listener_timeout=slow_listener_timeout,
            stream_window=stream_window,
            interceptors=interceptors,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
            retry=retry,
        )
    options = {
        "channels": channels,
        "application_id": application_id,
        "application_version": application_version,
        "authorization": authorization,
        "headers": headers,
        "max_message_size": max_message_size,
        "max_pending_notifications": max_pending_notifications,
        "max_pending_bytes": max_pending_bytes,
        "slow_listener_timeout": slow_listener_timeout,
        "stream_window": stream_window,
        "interceptors": interceptors,
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
        "connect_timeout": connect_timeout,
        "ssl_context": ssl_context,
        "retry": retry,
    }
    return open_session_on_one(_client.connect_ipc, url, options)
