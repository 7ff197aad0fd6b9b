"""Connecting a `BackendGroup` from several URLs: every transport's `connect([...])`.

Each URL gets a slot that a task of the group's nursery keeps connected:
it dials with the transport's own `connect` (so TLS, describe and the
interface check are the transport's), holds that connection while the group
is open, and dials again after the `RetryPolicy` backoff when it could not
connect or the connection closed for good. A slot without a connection
answers every call with `ConnectError`, which takes it out of the group's
choice until its backoff has passed.
"""

from __future__ import annotations

import functools
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import trio

from ._client import ClientOptions, RpcBackend
from ._errors import ConnectError, TetherError
from ._group import BALANCES, BackendGroup, Balance
from ._interfaces import Operation, RpcInterface
from ._protocol import Call, Error, InterfaceInfo, Result
from ._reconnect import ReconnectingBackend
from ._retry import unfixable
from ._state import ConnectionState, StateWatch
from ._streams import Exchange
from ._util import open_service_nursery

__all__ = [
    "check_balance",
    "connect_group",
    "connect_several",
    "is_url_list",
    "open_session_on_one",
]

_log = logging.getLogger("tether.client")

T = TypeVar("T")

#: Opens one member's connection for a block (a transport's `connect(url, ...)`).
Connector = Callable[[], AbstractAsyncContextManager[RpcBackend]]


class _Slot(RpcBackend):
    """One URL of a group: the connection to it while there is one."""

    __slots__ = ("_options", "_watch", "backend", "error", "fatal", "first", "url")

    def __init__(self, url: str, options: ClientOptions) -> None:
        self.url = url
        self._options = options
        self.backend: RpcBackend | None = None
        self.error: TetherError | None = None
        #: What made the first dial fail other than being unreachable.
        self.fatal: TetherError | None = None
        #: Set once the first dial has connected or failed.
        self.first = trio.Event()
        self._watch = StateWatch(ConnectionState.RECONNECTING)

    @property
    def options(self) -> ClientOptions:
        return self._options

    @property
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        return {} if self.backend is None else self.backend.interfaces

    @property
    def state_watch(self) -> StateWatch:
        return self._watch

    @property
    def reconnects_by_itself(self) -> bool:
        """Whether a call is held while reconnecting (see `_group._takes_calls`)."""
        return self.backend is None or isinstance(self.backend, ReconnectingBackend)

    def _down(self) -> ConnectError:
        error = self.error
        return ConnectError(
            f"{self.url} is not connected: {error or 'not dialled yet'}",
            # A certificate failure stays one (`unfixable`): the group takes it out.
            reason=error.reason if isinstance(error, ConnectError) else None,
        )

    async def request(self, call: Call) -> Result | Error:
        if self.backend is None:
            await trio.lowlevel.checkpoint()
            raise self._down()
        return await self.backend.request(call)

    def open_call(
        self, call: Call, operation: Operation, source: Any
    ) -> AbstractAsyncContextManager[Exchange]:
        if self.backend is None:
            raise self._down()
        return self.backend.open_call(call, operation, source)

    async def hold(self, connector: Connector) -> None:
        """Keep this slot connected until cancelled (a task of the group's nursery)."""
        failures = 0
        while True:
            try:
                async with connector() as backend:
                    self.backend, self.error, failures = backend, None, 0
                    self.first.set()
                    await self._mirror(backend)
            except ConnectError as exc:
                self.error = exc
                if unfixable(exc):
                    # A TLS certificate refused: dialling again meets it again.
                    _log.warning("backend %s is out of the group for good: %s", self.url, exc)
                    self._watch.set(ConnectionState.CLOSED, str(exc))
                    self.first.set()
                    return
            except TetherError as exc:
                self.error = exc
                if not self.first.is_set():
                    # NotFound, IncompatibleVersion: the group cannot open as asked.
                    self.fatal = exc
                    self.first.set()
                    return
                _log.warning("backend %s refused the group's interfaces: %s", self.url, exc)
            finally:
                self.backend = None
            self._watch.set(ConnectionState.RECONNECTING, str(self.error))
            self.first.set()
            failures += 1
            await trio.sleep(self._options.retry.backoff(failures))

    async def _mirror(self, backend: RpcBackend) -> None:
        """Show `backend`'s state as this slot's, until it closes for good."""
        state = backend.state
        while state is not ConnectionState.CLOSED:
            self._watch.set(state, backend.state_watch.reason)
            state = await backend.wait_state_change(state)
        self.error = ConnectError(f"{self.url} closed: {backend.state_watch.reason}")


@asynccontextmanager
async def connect_group(
    targets: Sequence[tuple[str, Connector]],
    options: ClientOptions,
    balance: Balance = "least-in-flight",
) -> AsyncIterator[BackendGroup]:
    """A `BackendGroup` of one member per (url, connector), for the block.

    Every URL is dialled at once; the group opens when they all connected
    or failed, if at least one connected. One that failed is dialled again
    in the background after the `options.retry` backoff, for as long as the
    group is open, and gets calls from when it connects.

    Raises:
        ConnectError: no URL could be reached; the message names each one
            and why.
        ValueError: no URL was given.
        NotFound, IncompatibleVersion: a reachable backend does not serve
            the interfaces as asked.
    """
    if not targets:
        raise ValueError("connect needs at least one URL")
    slots = [_Slot(url, options) for url, _ in targets]
    async with open_service_nursery() as nursery:
        for slot, (_, connector) in zip(slots, targets, strict=True):
            nursery.start_soon(slot.hold, connector)
        for slot in slots:
            await slot.first.wait()
        for slot in slots:
            if slot.fatal is not None:
                raise slot.fatal
        if all(slot.backend is None for slot in slots):
            reasons = {
                slot.error.reason if isinstance(slot.error, ConnectError) else None
                for slot in slots
            }
            raise ConnectError(
                "could not connect to any backend of the group: "
                + "; ".join(f"{slot.url}: {slot.error}" for slot in slots),
                # One reason for all (a CA not trusted by this client...) is the group's.
                reason=reasons.pop() if len(reasons) == 1 else None,
            )
        try:
            yield BackendGroup(slots, options=options, balance=balance)
        finally:
            for slot in slots:
                slot.state_watch.set(ConnectionState.CLOSED, "closed by this client")
            nursery.cancel_scope.cancel()


def is_url_list(url: object) -> bool:
    """Whether `connect`'s `url` is a list of URLs (a group) rather than one."""
    return isinstance(url, (list, tuple))


#: The `connect` arguments that are also the group's `ClientOptions`.
_CLIENT_OPTIONS = (
    "application_id",
    "application_version",
    "authorization",
    "session_id",
    "stream_window",
    "retry",
    "interceptors",
)


def check_balance(url: object, balance: Balance | None) -> None:
    """Refuse `balance=` with one URL (it would do nothing) and an unknown balance.

    Raises:
        ValueError: as said.
    """
    if balance is None:
        return
    if not is_url_list(url):
        raise ValueError(
            "balance= spreads calls over several backends: pass a list of URLs, or drop it"
        )
    if balance not in BALANCES:
        raise ValueError(
            f"balance must be one of {', '.join(map(repr, BALANCES))}, got {balance!r}"
        )


@asynccontextmanager
async def connect_several(
    connect_one: Callable[..., AbstractAsyncContextManager[RpcBackend]],
    urls: Sequence[str],
    interfaces: Iterable[type[RpcInterface]],
    balance: Balance | None,
    options: dict[str, Any],
) -> AsyncIterator[BackendGroup]:
    """A group of one `connect_one(url, ...)` per URL, for the block.

    Every member shares one session id (the given one, or a fresh one), so
    that the group's calls are one session wherever they run.
    """
    urls = list(urls)
    for url in urls:
        if not isinstance(url, str):
            raise TypeError(f"connect takes a URL or a list of URLs, got {url!r} in the list")
    wanted = list(interfaces)
    options = dict(options)
    if options.get("session_id") is None:
        options["session_id"] = str(uuid.uuid4())
    client = ClientOptions(**{name: options[name] for name in _CLIENT_OPTIONS if name in options})
    targets = [
        (url, functools.partial(connect_one, url, interfaces=wanted, **options)) for url in urls
    ]
    async with connect_group(targets, client, balance or "least-in-flight") as group:
        yield group


#: Where the next IPC session given several URLs begins looking: each in turn.
_session_turn = itertools.count()


@asynccontextmanager
async def open_session_on_one(
    connect_one: Callable[..., AbstractAsyncContextManager[T]],
    urls: Sequence[str],
    options: dict[str, Any],
) -> AsyncIterator[T]:
    """An IPC session (`connect_one(url, **options)`) on one of `urls`, for the block.

    A session is one backend's state: it is opened on one URL and stays on
    it (its resumes go back there, as with one URL). Each session begins at
    the next URL in turn, so sessions spread over the backends, and takes the
    first that accepts; one that cannot be reached (`ConnectError`: down,
    draining, a certificate refused) passes it to the next.

    Raises:
        ConnectError: no URL accepted the session; the message names each
            and why.
        TetherError: a reachable backend refused the session otherwise
            (IncompatibleVersion, Unauthorized...): raised as it came.
    """
    urls = list(urls)
    if not urls:
        raise ValueError("connect_ipc needs at least one URL")
    for url in urls:
        if not isinstance(url, str):
            raise TypeError(f"connect_ipc takes a URL or a list of URLs, got {url!r} in the list")
    start = next(_session_turn) % len(urls)
    failures: list[tuple[str, ConnectError]] = []
    async with AsyncExitStack() as stack:
        for url in urls[start:] + urls[:start]:
            try:
                session = await stack.enter_async_context(connect_one(url, **options))
            except ConnectError as exc:
                _log.info("IPC session not opened on %s, trying the next URL: %s", url, exc)
                failures.append((url, exc))
                continue
            break
        else:
            reasons = {exc.reason for _, exc in failures}
            raise ConnectError(
                "could not open the IPC session on any backend: "
                + "; ".join(f"{url}: {exc}" for url, exc in failures),
                reason=reasons.pop() if len(reasons) == 1 else None,
            )
        yield session
