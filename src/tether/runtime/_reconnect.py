"""A frontend connection that makes itself again when it is lost (RPC over WebSocket).

`ReconnectingBackend` holds the current `RpcConnection` and a `dial()` that
opens a new one (socket, handshake, version check of every wanted
interface). Its supervisor task, owned by the connect block's nursery, holds
the connection, notices when it is lost (`RpcConnection.watch`), and dials
again with the backoff of `ClientOptions.retry`. Calls made meanwhile wait for
the new connection (within their own deadline); calls that were on the lost
connection fail from it (`CallNotSent` / `CallMayHaveRun`), and the runtime's
retry loop sends them again through this backend.

The connection ends for good (CLOSED) when the block is left, when a
reconnect finds the backend incompatible (`IncompatibleVersion`) or no longer
serving an interface (`NotFound`), when it refuses this frontend, or when the
tries of one outage are spent (`ConnectError`); calls then fail with that.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from .. import contexts
from ._client import ClientOptions, RpcBackend
from ._connection import RpcConnection, RpcConnectionStatistics
from ._errors import (
    ConnectError,
    ConnectionClosed,
    Forbidden,
    IncompatibleVersion,
    NotFound,
    TetherError,
    TransportError,
    Unauthorized,
)
from ._interfaces import Operation
from ._protocol import Call, Error, InterfaceInfo, Result
from ._retry import STABLE_AFTER, unfixable
from ._state import ConnectionState, StateWatch
from ._streams import Exchange, aclose_if_possible
from ._util import open_service_nursery

__all__ = ["ReconnectingBackend", "open_reconnecting_backend"]

_log = logging.getLogger("tether.client")

#: A dial that opens one connection for its block (handshake and version check done).
Dial = Callable[[], AbstractAsyncContextManager[RpcConnection]]

#: Refusals a new try would meet again: the connection ends with them.
_FINAL = (IncompatibleVersion, NotFound, Unauthorized, Forbidden)

#: HTTP statuses of a refused WebSocket handshake that may pass on a later try.
_PASSING_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

_CLOSED_HERE = "closed by this client"


def _is_final(exc: TetherError) -> bool:
    """Whether a failed dial ends the connection rather than being tried again."""
    if isinstance(exc, _FINAL) or unfixable(exc):
        return True
    status = exc.status_code if isinstance(exc, ConnectError) else None
    return status is not None and status not in _PASSING_STATUSES


def _copy_for(exc: TetherError, activity_id: str | None) -> TetherError:
    """`exc` again, for one call (its own ActivityId): every caller raises its own."""
    if isinstance(exc, ConnectError):
        return ConnectError(
            exc.message,
            reason=exc.reason,
            close_code=exc.close_code,
            status_code=exc.status_code,
            details=exc.details,
            activity_id=activity_id,
        )
    if isinstance(exc, TransportError):
        return type(exc)(
            exc.message,
            reason=exc.reason,
            close_code=exc.close_code,
            details=exc.details,
            activity_id=activity_id,
        )
    try:
        return type(exc)(exc.message, details=exc.details, activity_id=activity_id)
    except TypeError:  # pragma: no cover - a class with another signature
        return exc


class ReconnectingBackend(RpcBackend):
    """An RPC backend whose connection is made again, by itself, when it is lost.

    Made by `websocket.connect`. Its `state` is CONNECTED, RECONNECTING while
    it dials again, and CLOSED once it gave up or the block was left; the
    watch's `reason` says why (`wait_state_change` waits for the next one).

    Attributes:
        session_id: The session every connection presents (the same across
            reconnects).
    """

    __slots__ = (
        "_connection",
        "_dial",
        "_ended",
        "_interfaces",
        "_options",
        "_reconnect",
        "_run_scope",
        "_stopping",
        "_target",
        "_watch",
        "_watch_scope",
        "session_id",
    )

    def __init__(
        self, dial: Dial, options: ClientOptions, target: str, *, reconnect: bool = True
    ) -> None:
        self._dial = dial
        self._reconnect = reconnect
        self._options = options
        self._target = target
        self._connection: RpcConnection | None = None
        self._interfaces: Mapping[str, InterfaceInfo] = {}
        self._watch = StateWatch(ConnectionState.RECONNECTING)
        self._ended: TetherError | None = None
        self._stopping = False
        self._run_scope = trio.CancelScope()
        self._watch_scope: trio.CancelScope | None = None
        self.session_id = options.session_id

    # -- RpcBackend -------------------------------------------------------------------

    @property
    def options(self) -> ClientOptions:
        return self._options

    @property
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        """What the backend said it serves at the latest handshake."""
        return self._interfaces

    @property
    def state_watch(self) -> StateWatch:
        return self._watch

    @property
    def is_closed(self) -> bool:
        """True once the connection ended for good (state CLOSED)."""
        return self._watch.state is ConnectionState.CLOSED

    @property
    def connection(self) -> RpcConnection | None:
        """The current connection; None while reconnecting or once closed."""
        connection = self._connection
        return None if connection is None or connection.is_closed else connection

    def statistics(self) -> RpcConnectionStatistics:
        """The current connection's numbers (zeros while there is none)."""
        connection = self._connection
        if connection is None:
            return RpcConnectionStatistics(calls_in_flight=0, open_streams=0)
        return connection.statistics()

    async def request(self, call: Call) -> Result | Error:
        connection = await self._connected(call)
        return await connection.request(call)

    def open_call(
        self,
        call: Call,
        operation: Operation,
        source: AsyncIterable[Any] | None,
    ) -> AbstractAsyncContextManager[Exchange]:
        return self._open_call(call, operation, source)

    @asynccontextmanager
    async def _open_call(
        self, call: Call, operation: Operation, source: AsyncIterable[Any] | None
    ) -> AsyncIterator[Exchange]:
        try:
            connection = await self._connected(call)
        except BaseException:
            await aclose_if_possible(source)
            raise
        async with connection.open_call(call, operation, source) as exchange:
            yield exchange

    async def _connected(self, call: Call) -> RpcConnection:
        """The connection to send `call` on, once there is one (within the caller's deadline).

        Raises:
            TetherError: why the connection ended for good: ConnectionClosed
                (the block was left), IncompatibleVersion, NotFound, or
                ConnectError (the tries were spent).
        """
        while True:
            state = self._watch.state
            connection = self._connection
            if (
                state is ConnectionState.CONNECTED
                and connection is not None
                and not connection.is_closed
            ):
                return connection
            if state is ConnectionState.CLOSED:
                assert self._ended is not None
                raise _copy_for(self._ended, call.ctx.activity_id)
            # Reconnecting, or lost a moment ago (the supervisor is about to say so).
            await self._watch.wait_change(state)

    # -- the supervisor -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the connection, and make it again when it is lost, until `stop`.

        The first dial's failure is raised (through `nursery.start`), as a
        connect's; later ones are tried again or end the connection.
        """
        # Not the caller's context: a reconnect is nobody's request.
        with contexts.using(None), self._run_scope:
            await self._run(task_status)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        policy = self._options.retry
        tries = policy.attempts if self._reconnect else 0  # per outage
        first = True
        failures = 0
        lost_at = trio.current_time()
        last: TetherError | str = "connection lost"
        while True:
            if not first:
                if failures >= tries:
                    self._give_up(failures, lost_at, last)
                    return
                await trio.sleep(policy.backoff(failures + 1))
            connected = False
            try:
                async with self._dial() as connection:
                    connected = True
                    self._connected_now(connection, first, failures, lost_at)
                    if first:
                        first = False
                        task_status.started()
                    connected_at = trio.current_time()
                    if not await self._hold(connection):
                        return
                    last = connection.state_watch.reason or "connection lost"
                    if trio.current_time() - connected_at >= STABLE_AFTER:
                        # A new outage: its own tries.
                        failures = 0
                        lost_at = trio.current_time()
                    else:
                        # Lost as soon as made (a backend that accepts and drops):
                        # the same outage, a try spent, so it backs off and ends.
                        failures += 1
                    self._watch.set(
                        ConnectionState.RECONNECTING,
                        f"connection to {self._target} lost ({last}): reconnecting",
                    )
                    _log.info("connection to %s lost (%s): reconnecting", self._target, last)
            except TetherError as exc:
                if first:
                    raise
                if connected:  # closing the lost connection failed: it is gone anyway
                    _log.debug("closing the lost connection to %s: %s", self._target, exc)
                    continue
                if _is_final(exc):
                    self._end(exc, f"reconnecting to {self._target} failed for good: {exc.message}")
                    _log.warning("reconnecting to %s failed for good: %s", self._target, exc)
                    return
                failures += 1
                last = exc
                _log.info(
                    "reconnecting to %s failed (try %d of %d): %s",
                    self._target,
                    failures,
                    tries,
                    exc.message,
                )

    def _connected_now(
        self, connection: RpcConnection, first: bool, failures: int, lost_at: float
    ) -> None:
        self._connection = connection
        self._interfaces = connection.interfaces
        if first:
            self._watch.set(ConnectionState.CONNECTED, f"connected to {self._target}")
            return
        took = trio.current_time() - lost_at
        reason = (
            f"reconnected to {self._target} after {failures + 1} "
            f"{'try' if failures == 0 else 'tries'} in {took:.1f} s"
        )
        _log.info("%s", reason)
        self._watch.set(ConnectionState.CONNECTED, reason)

    async def _hold(self, connection: RpcConnection) -> bool:
        """Until `connection` is lost (True) or the backend is stopped (False)."""
        if self._stopping:
            return False
        with trio.CancelScope() as self._watch_scope:
            await connection.watch()
        self._watch_scope = None
        return not self._stopping

    def _give_up(self, failures: int, lost_at: float, last: TetherError | str) -> None:
        took = trio.current_time() - lost_at
        detail = last.message if isinstance(last, TetherError) else last
        if not self._reconnect:  # retry=None
            self._end(
                ConnectionClosed(f"connection to the backend closed: {detail}", reason=detail),
                f"connection to {self._target} lost ({detail}); reconnects are off (retry=None)",
            )
            return
        message = (
            f"could not reconnect to {self._target}: {failures} "
            f"{'try' if failures == 1 else 'tries'} over {took:.1f} s failed, the last with: "
            f"{detail}; check that the backend runs, or allow more tries (retry=RetryPolicy"
            "(attempts=...))"
        )
        _log.warning("%s", message)
        self._end(
            ConnectError(message, reason=detail, details={"tries": failures, "seconds": took}),
            message,
        )

    def _end(self, exc: TetherError, reason: str) -> None:
        if self._ended is None:
            self._ended = exc
            self._connection = None
            self._watch.set(ConnectionState.CLOSED, reason)

    def stop(self) -> None:
        """End the connection (the block is left): CLOSED; calls fail with ConnectionClosed.

        A held connection is closed normally (its close handshake waits for
        the server's answer); a dial or a backoff under way is cancelled.
        """
        self._stopping = True
        self._end(
            ConnectionClosed(
                f"connection to the backend closed: {_CLOSED_HERE}", reason=_CLOSED_HERE
            ),
            _CLOSED_HERE,
        )
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        else:
            self._run_scope.cancel()


@asynccontextmanager
async def open_reconnecting_backend(
    dial: Dial, options: ClientOptions, target: str, *, reconnect: bool = True
) -> AsyncIterator[ReconnectingBackend]:
    """Connect with `dial` and keep connected for the block; leaving it closes (CLOSED).

    `reconnect=False`: a lost connection is not made again (CLOSED).

    Raises:
        TetherError: the first dial's failure (ConnectError, IncompatibleVersion,
            NotFound...).
    """
    backend = ReconnectingBackend(dial, options, target, reconnect=reconnect)
    async with open_service_nursery() as nursery:
        await nursery.start(backend.run)
        try:
            yield backend
        finally:
            backend.stop()
