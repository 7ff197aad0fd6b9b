"""Several backends serving the same interfaces, called as one (`BackendGroup`).

The group is an `RpcBackend`, so the runtime's retry loop (`_client._call`)
runs over it unchanged: the group only chooses a member for each try, takes
a member out when it cannot be reached, and, when another member is up,
sends a failed try there at once instead of waiting out a backoff. Whether a
failure may be tried again at all is `retry_delay`'s answer, the same rule
as for one backend: a call that certainly did not run, for every operation;
one that may have run, only for an idempotent operation.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal

import trio

from ._client import ClientOptions, RpcBackend
from ._errors import CallNotSent, ConnectError, ConnectionClosed, TetherError, TransportError
from ._interfaces import Operation
from ._policies import OperationPolicy
from ._protocol import Call, Error, InterfaceInfo, Result
from ._reconnect import ReconnectingBackend
from ._retry import retry_delay, unfixable
from ._state import ConnectionState, StateWatch
from ._streams import Exchange
from ._util import timeout_ms_left

__all__ = ["BALANCES", "BackendGroup"]

_log = logging.getLogger("tether.client")

#: How a group spreads calls over its members.
Balance = Literal["least-in-flight", "round-robin"]
BALANCES: tuple[Balance, ...] = ("least-in-flight", "round-robin")

#: Error codes of a reply that refuses before dispatch: another member may take the call.
_REFUSALS = frozenset({"unavailable", "too-many-requests"})
_DEFAULT_POLICY = OperationPolicy()


class _Member:
    """One backend of a group, with what the group knows about it."""

    __slots__ = ("backend", "failures", "final", "in_flight", "index", "out_until")

    def __init__(self, backend: RpcBackend, index: int) -> None:
        self.backend = backend
        self.index = index
        self.in_flight = 0
        #: Unreachable tries in a row; sets how long it stays out.
        self.failures = 0
        #: Trio time before which it is not chosen while another member is up.
        self.out_until = -float("inf")
        #: A failure no retry can fix (a TLS certificate refused): out for good.
        self.final: ConnectError | None = None

    def name(self) -> str:
        return str(getattr(self.backend, "url", None) or f"backend {self.index}")


class BackendGroup(RpcBackend):
    """Several backends serving the same interfaces, called as one.

    Each call goes to one member: by default the one with the fewest calls
    in flight (ties taken in turn), or each in turn with
    `balance="round-robin"`. A member that cannot be reached (`ConnectError`,
    `CallNotSent`) or is closed is taken out, and chosen again once the
    group's `RetryPolicy` backoff for its count of failures in a row has
    passed (0.1 s, then 0.2 s, ... up to `max_backoff`, 2 s by default); the
    next call it answers puts it back for good.

    A try that fails where `retry_delay` allows another (a call that
    certainly did not run; one that may have run only for an idempotent
    operation; a 503/429 refusal) is sent at once to another member that is
    up and was not tried yet for this call; when none is left, the failure
    goes to the runtime's retry loop, which waits its backoff and tries the
    group again. Every try carries the call's ActivityId. A stream call goes
    to one member for its whole life.

    `state` is CONNECTED while any member is, RECONNECTING when none is but
    some member is reconnecting, CLOSED when all are closed.

    Args:
        members: The backends (at least one), each connected to a process
            serving the same interfaces.
        options: How calls present the frontend, and `retry`; by default the
            first member's.
        balance: `"least-in-flight"` (default) or `"round-robin"`.
    """

    __slots__ = ("_balance", "_members", "_options", "_turn", "_watch")

    def __init__(
        self,
        members: Iterable[RpcBackend],
        *,
        options: ClientOptions | None = None,
        balance: Balance = "least-in-flight",
    ) -> None:
        backends = list(members)
        if not backends:
            raise ValueError("a BackendGroup needs at least one backend")
        if balance not in BALANCES:
            raise ValueError(
                f"balance must be one of {', '.join(map(repr, BALANCES))}, got {balance!r}"
            )
        self._members = [_Member(backend, i) for i, backend in enumerate(backends)]
        self._options = backends[0].options if options is None else options
        self._balance = balance
        self._turn = itertools.count()
        self._watch = StateWatch()
        self._refresh()

    @property
    def members(self) -> tuple[RpcBackend, ...]:
        """The group's backends, in the order given."""
        return tuple(member.backend for member in self._members)

    @property
    def options(self) -> ClientOptions:
        return self._options

    @property
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        """What the first member that described itself serves."""
        for member in self._members:
            if member.backend.interfaces:
                return member.backend.interfaces
        return {}

    def in_flight(self) -> tuple[int, ...]:
        """Calls each member carries now, in the order of `members`."""
        return tuple(member.in_flight for member in self._members)

    # -- state -----------------------------------------------------------------

    def _refresh(self) -> ConnectionState:
        states = {member.backend.state for member in self._members}
        if ConnectionState.CONNECTED in states:
            state = ConnectionState.CONNECTED
        elif ConnectionState.RECONNECTING in states:
            state = ConnectionState.RECONNECTING
        else:
            state = ConnectionState.CLOSED
        reasons = [
            f"{member.name()}: {member.backend.state_watch.reason}"
            for member in self._members
            if member.backend.state is not ConnectionState.CONNECTED
            and member.backend.state_watch.reason
        ]
        self._watch.set(state, "; ".join(reasons) or None)
        return self._watch.state

    @property
    def state_watch(self) -> StateWatch:
        """The group's state, worked out from its members' when asked."""
        self._refresh()
        return self._watch

    async def wait_state_change(self, seen: ConnectionState | None = None) -> ConnectionState:
        """Wait until the group's state is not `seen` (the current one when None)."""
        if seen is None:
            seen = self._refresh()
        state = self._refresh()
        while state is seen:
            async with trio.open_nursery() as nursery:
                for member in self._members:
                    nursery.start_soon(_wait_member, member.backend, nursery.cancel_scope)
            state = self._refresh()
        await trio.lowlevel.checkpoint()
        return state

    # -- choosing --------------------------------------------------------------

    def _choose(self, tried: set[int]) -> _Member | None:
        """The member for the next try, or None when every open one was tried.

        Members that take calls now (see `_takes_calls`) and are not out come
        first; when none is left, the open member due back soonest, so that a
        call still has somewhere to go (it waits for that member's reconnect,
        or its failure goes to the retry loop).
        """
        now = trio.current_time()
        open_ = [
            m
            for m in self._members
            if m.index not in tried
            and m.final is None
            and m.backend.state is not ConnectionState.CLOSED
        ]
        if not open_:
            return None
        candidates = [m for m in open_ if m.out_until <= now and _takes_calls(m.backend)]
        if not candidates:
            return min(open_, key=lambda m: m.out_until)
        start = next(self._turn) % len(self._members)
        ordered = sorted(candidates, key=lambda m: (m.index - start) % len(self._members))
        if self._balance == "round-robin":
            return ordered[0]
        return min(ordered, key=lambda m: m.in_flight)

    def _has_up(self, tried: set[int]) -> bool:
        now = trio.current_time()
        return any(
            m.index not in tried
            and m.final is None
            and m.out_until <= now
            and m.backend.state is not ConnectionState.CLOSED
            and _takes_calls(m.backend)
            for m in self._members
        )

    def _failed(self, member: _Member, exc: TetherError) -> None:
        """Take `member` out when `exc` says it cannot be reached (for good: `unfixable`)."""
        if isinstance(exc, ConnectError) and unfixable(exc):
            member.final = exc
            _log.warning("taking %s out of the group for good: %s", member.name(), exc.message)
        elif isinstance(exc, (ConnectError, CallNotSent)):
            member.failures += 1
            member.out_until = trio.current_time() + self._options.retry.backoff(member.failures)

    def _answered(self, member: _Member) -> None:
        member.failures = 0
        member.out_until = -float("inf")

    def _closed(self) -> TransportError:
        """The error of a call with no member left: each member and why it is out."""
        whys = []
        for member in self._members:
            if member.final is not None:
                whys.append(f"{member.name()}: {member.final.message}")
            else:
                why = member.backend.state_watch.reason
                whys.append(f"{member.name()}: {why}" if why else member.name())
        finals = [member.final for member in self._members if member.final is not None]
        if finals:
            # Not retried (`unfixable`): what it takes is a change of configuration.
            return ConnectError(
                "no backend of the group can be called: " + "; ".join(whys),
                reason=finals[0].reason,
            )
        return ConnectionClosed("every backend of the group is closed: " + "; ".join(whys))

    def _policy(self, call: Call) -> OperationPolicy:
        info = self.interfaces.get(call.iface)
        policy = None if info is None else info.policies.get(call.op)
        return _DEFAULT_POLICY if policy is None else policy

    # -- calls -----------------------------------------------------------------

    async def request(self, call: Call) -> Result | Error:
        """Send `call` to a member; fail over at once to another one that is up.

        Raises:
            TransportError: the last member tried failed, or all are closed.
        """
        tried: set[int] = set()
        member = self._choose(tried)
        if member is None:
            raise self._closed()
        while True:
            tried.add(member.index)
            current = member
            current.in_flight += 1
            try:
                reply = await current.backend.request(call)
            except TetherError as exc:
                self._failed(current, exc)
                following = self._failover(call, exc, tried)
                if following is None:
                    raise
            else:
                if not (isinstance(reply, Error) and reply.error.code in _REFUSALS):
                    self._answered(current)
                    return reply
                # Refused before dispatch (draining, overloaded): another may take it.
                following = self._failover(call, None, tried)
                if following is None:
                    return reply
            finally:
                current.in_flight -= 1
            member = following
            call = call._replace(timeout_ms=timeout_ms_left())

    def _failover(self, call: Call, exc: TetherError | None, tried: set[int]) -> _Member | None:
        """The member to try next at once, or None to leave it to the retry loop."""
        if not self._has_up(tried):
            return None
        if self._options.retry.attempts < 2:
            return None  # no retries: no failover either
        if (
            exc is not None
            and not unfixable(exc)  # that member is out; the call did not run
            and retry_delay(exc, self._options.retry, self._policy(call), 1) is None
        ):
            return None
        return self._choose(tried)

    @asynccontextmanager
    async def _open_on(
        self, member: _Member, call: Call, operation: Operation, source: Any
    ) -> AsyncIterator[Exchange]:
        member.in_flight += 1
        try:
            opener = member.backend.open_call(call, operation, source)
            try:
                exchange = await opener.__aenter__()
            except TetherError as exc:
                self._failed(member, exc)
                raise
            self._answered(member)
            try:
                yield exchange
            except BaseException as exc:
                if not await opener.__aexit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                await opener.__aexit__(None, None, None)
        finally:
            member.in_flight -= 1

    def open_call(
        self, call: Call, operation: Operation, source: Any
    ) -> AbstractAsyncContextManager[Exchange]:
        """Carry a stream call on one member for its whole life."""
        member = self._choose(set())
        if member is None:
            raise self._closed()
        return self._open_on(member, call, operation, source)


def _takes_calls(backend: RpcBackend) -> bool:
    """Whether a call sent to `backend` now would be carried rather than held.

    A connected one takes calls. A reconnecting one that reconnects by itself
    (`ReconnectingBackend`: WebSocket, local) would hold a call until its
    socket is back, so it is passed over; one that a call reconnects (HTTP,
    whose pool dials per request) takes the call as its probe, once the
    group's backoff for it has passed.
    """
    state = backend.state
    if state is ConnectionState.CONNECTED:
        return True
    if state is ConnectionState.CLOSED:
        return False
    reconnects = getattr(backend, "reconnects_by_itself", None)
    if reconnects is None:
        reconnects = isinstance(backend, ReconnectingBackend)
    return not reconnects


async def _wait_member(backend: RpcBackend, done: trio.CancelScope) -> None:
    await backend.wait_state_change(backend.state)
    done.cancel()
