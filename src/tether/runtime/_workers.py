"""The incoming-call side of a session, shared by RPC sessions and IPC peers.

A session that answers calls (an RPC backend's session; either end of an IPC
session) reads its stream with one of its worker tasks at a time and runs each
call on the worker that read it. `Workers` is that machinery; a session says
how to read the next call, how to run one, what to answer when one was
interrupted, and how to send a reply.

The reader role may also be vacant (`vacant`), for a task that is not a
worker to take: an IPC caller waiting for its reply reads it itself. Whoever
leaves the role vacant makes sure a task that will take it is scheduled; a
worker that finds it taken waits again as a spare (an IPC caller in a loop of
invokes makes sure of it only once the scheduler batch has run, if it has not
come back for the role by then: `_ipc_handover`). An RPC session never leaves
it vacant for long: only its workers read.

Why this shape (docs/performance.md, "How the number was reached" and "IPC
against RPC"): a call that starts on the task that read it, without waiting to
be scheduled, and that reuses that task's cancel scope, costs two scheduler
batches per round trip instead of four, and no task or scope of its own.
"""

from __future__ import annotations

import abc
import contextvars
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import trio

from ._protocol import Error, Result
from ._util import run_until_it_yields

__all__ = ["VACATE", "IncomingCall", "Role", "Vacate", "Workers", "same_context"]


class IncomingCall(Protocol):
    """What `Workers` needs of a call it runs: its id, and its deadline if any."""

    @property
    def id(self) -> int: ...


CallT = TypeVar("CallT", bound=IncomingCall)

#: Idle workers a session keeps for its next calls.
MAX_SPARES = 32
_MISSING = object()


class Role:
    """Whether a worker holds the session's reader role."""

    __slots__ = ("reading",)

    def __init__(self) -> None:
        self.reading = False


class Vacate:
    """`read_next`'s answer when the reader leaves the role to a caller it woke."""

    __slots__ = ()


#: The one `Vacate`.
VACATE = Vacate()


def same_context(clean: contextvars.Context) -> bool:
    """Whether the current task's context holds exactly what `clean` holds."""
    now = contextvars.copy_context()
    if len(now) != len(clean):
        return False
    for var, value in clean.items():  # noqa: SIM110 - not all(...): it runs once per call
        if now.get(var, _MISSING) is not value:
            return False
    return True


class Workers(abc.ABC, Generic[CallT]):
    """Worker tasks that read a session's stream in turn and run the calls they read.

    Exactly one worker holds the reader role. When it reads a call, it runs the
    call itself, under the call's context: the call starts without waiting for
    a task to be scheduled. It hands the reader role to a spare worker (or a
    new one) only when the call yields to the scheduler; a call that completes
    without yielding never pays for a hand-over, and the worker goes on
    reading. Calls never wait on each other.

    A worker keeps one cancel scope across the calls it runs and registers it
    in `calls` under the id of the call it is running; a `cancel` for that
    call, or the call's deadline, cancels it. Only then does the worker open a
    new scope, so a call that is not interrupted costs no scope of its own. The
    registration is removed the moment the call ends, so a late `cancel` cannot
    reach the worker's next call.

    After a call, a worker goes on (reading, or waiting as a spare) only if the
    call left its context exactly as it found it; a worker whose call set a
    contextvar ends, so nothing one call does to its context reaches another.
    """

    __slots__ = (
        "calls",
        "clean_context",
        "draining",
        "handed",
        "max_in_flight",
        "nursery",
        "sending",
        "spares",
        "vacant",
    )

    #: Where new workers start (set once the session runs); cancelled when it ends.
    nursery: trio.Nursery | None
    #: The scopes of the calls running, by call id.
    calls: dict[int, trio.CancelScope]
    #: Idle workers, waiting to be given the reader role.
    spares: list[trio.lowlevel.Task]
    #: Replies (and refusals) being sent.
    sending: int
    #: Past this many replies waiting to be sent, the reader stops reading.
    max_in_flight: int
    #: No task holds the reader role. Whoever makes it vacant makes sure a task
    #: that will take it (or pass it on) is scheduled; a worker or a caller
    #: that finds it vacant may take it.
    vacant: bool
    #: Calls read by a task that does not run calls (an IPC caller reading its
    #: reply): the next worker to take the reader role runs them first.
    handed: deque[CallT]
    #: The context the session's workers start from (no request context).
    clean_context: contextvars.Context | None
    #: The server is shutting down gracefully (`begin_drain`): new calls are
    #: refused, and the session ends once the calls running have answered.
    draining: bool

    def init_workers(self, nursery: trio.Nursery | None, max_in_flight: int) -> None:
        self.nursery = nursery
        self.max_in_flight = max_in_flight
        self.calls = {}
        self.spares = []
        self.sending = 0
        self.vacant = True
        self.handed = deque()
        self.clean_context = None
        self.draining = False

    # -- what a session provides ---------------------------------------------------

    @abc.abstractmethod
    async def read_next(self) -> CallT | Error | Vacate | None:
        """Read until a call is ready to run or a refusal must be sent.

        Returns:
            The call; or the `error` reply refusing a message; or `VACATE` when
            the reader woke a caller that will take the reading over (the
            worker rests); or None when the session stopped reading (the
            stream closed).
        """

    @abc.abstractmethod
    async def serve_call(
        self, call: CallT, scope: trio.CancelScope, on_yield: Callable[..., object], *args: Any
    ) -> Result | Error:
        """Run `call` in this task, under `scope`, in its context; return its reply.

        Sets the call's deadline on `scope` for the run (and takes it off
        after, unless it fired), and calls `on_yield(*args)` once, just before
        the call first waits (`run_until_it_yields`). When `scope` interrupts
        the call, `trio.Cancelled` propagates.
        """

    @abc.abstractmethod
    def interrupted(self, call: CallT) -> Error | None:
        """The reply for a call its scope interrupted; None when the caller cancelled it."""

    @abc.abstractmethod
    async def send_reply(self, reply: Result | Error) -> None:
        """Send a reply (counted in `sending` while it is sent).

        While `draining`, it calls `check_drained` once the reply is sent.
        """

    def end_drained(self) -> None:
        """End the session: it drained (no call runs, no reply is being sent)."""
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    # -- draining ------------------------------------------------------------------

    def begin_drain(self) -> None:
        """The server is shutting down: refuse new calls, end once the running ones answered.

        The session's `read_next`/`prepare` refuse every call read from now on
        (`Unavailable`, so that callers retry elsewhere or later); each reply
        sent, and each call its caller cancels, looks again whether the session
        is idle, and `end_drained` ends it then. Whoever drains it bounds the
        wait (a call may run for ever) by ending the session itself.
        """
        if self.draining:
            return
        self.draining = True
        self.check_drained()

    def check_drained(self) -> None:
        """While draining: end the session if no call runs and no reply is being sent."""
        if not self.calls and not self.sending:
            self.end_drained()

    # -- the workers -------------------------------------------------------------

    def start_reading(self) -> None:
        """Start the first worker, holding the reader role."""
        assert self.nursery is not None
        self.clean_context = contextvars.copy_context()
        self.nursery.start_soon(self.worker)

    async def worker(self) -> None:
        """A task of the session: it reads, or runs one call, or waits as a spare."""
        clean = contextvars.copy_context()
        role = Role()
        if not await self.take_reading(role):
            return
        while True:
            call: CallT | None = None
            reply: Result | Error | None = None
            with trio.CancelScope() as scope:
                while True:
                    # Not reading: it ran a call that handed the reading over.
                    if not role.reading and (
                        not same_context(clean) or not await self.take_reading(role)
                    ):
                        return
                    item = self.handed.popleft() if self.handed else await self.read_next()
                    if item is None:
                        return
                    if item is VACATE:
                        role.reading = False
                        self.vacant = True
                        if not await self.take_reading(role, rest_first=True):
                            return
                        continue
                    if type(item) is Error:
                        # A refusal (malformed message, unknown interface...).
                        await run_until_it_yields(
                            self.send_reply(item), self.hand_over_to_send, clean, role
                        )
                        continue
                    call = item  # type: ignore[assignment]
                    assert call is not None
                    reply = await self.run_call(call, scope, role, clean)
                    call = None
                    if scope.cancel_called:
                        # Its deadline passed as the call ended: the scope is
                        # spent; reply from outside it, then take a new one.
                        break
                    await run_until_it_yields(
                        self.send_reply(reply), self.hand_over_to_send, clean, role
                    )
                    reply = None
                    if role.reading and not same_context(clean):
                        self.hand_over_reading(clean, role)
                        return
            if call is not None:
                # The scope interrupted the call (the caller cancelled, or the
                # deadline passed), so the call had yielded and handed over.
                reply = self.interrupted(call)
            if reply is not None:
                await run_until_it_yields(
                    self.send_reply(reply), self.hand_over_to_send, clean, role
                )
            elif self.draining:
                # Cancelled by its caller: no reply to wait for.
                self.check_drained()
            if role.reading and not same_context(clean):
                self.hand_over_reading(clean, role)
                return

    async def run_call(
        self, call: CallT, scope: trio.CancelScope, role: Role, clean: contextvars.Context
    ) -> Result | Error:
        self.calls[call.id] = scope
        try:
            return await self.serve_call(call, scope, self.hand_over_if_reading, clean, role)
        finally:
            del self.calls[call.id]

    def hand_over_if_reading(self, clean: contextvars.Context, role: Role) -> None:
        """Called when a worker's own work is about to yield: hand the reading on.

        The reader must never wait on its own work: a call that sleeps, or a
        reply the other side is not reading yet, would stop this session from
        reading cancels and new calls, and a peer blocked on sending to it
        would never read the replies that unblock it. So a worker runs its work
        with `run_until_it_yields`: the first step runs here, as `await` would
        run it, and only if it yields to the scheduler does another worker take
        over the reading.
        """
        if role.reading:
            self.hand_over_reading(clean, role)

    def hand_over_to_send(self, clean: contextvars.Context, role: Role) -> None:
        """A reply is about to wait for the peer to read: hand the reading on, up to a bound.

        Past `max_in_flight` replies waiting, the peer is not reading what it
        asked for: this worker keeps the reading and waits with its reply, so
        the session stops reading (and the peer's sends wait in turn) instead
        of holding a task and a reply for each message it sends.
        """
        if role.reading and self.sending <= self.max_in_flight:
            self.hand_over_reading(clean, role)

    def hand_over_reading(self, clean: contextvars.Context, role: Role) -> None:
        """Give the reader role to a spare worker, or to a new one."""
        role.reading = False
        self.vacant = True
        self.wake_worker(clean)

    def wake_worker(self, clean: contextvars.Context | None = None) -> None:
        """Wake a spare worker, or start a new one, to take the vacant reader role."""
        if self.spares:
            trio.lowlevel.reschedule(self.spares.pop())
            return
        # Spawned from a worker's clean context, not a call's: Trio copies the
        # current context into the new task.
        if clean is None:
            clean = self.clean_context
        assert self.nursery is not None
        assert clean is not None
        clean.run(self.nursery.start_soon, self.worker)

    async def take_reading(self, role: Role, *, rest_first: bool = False) -> bool:
        """Take the reader role once it is vacant (True), waiting as a spare; or end (False).

        A woken spare may find the role taken (a caller took it first): it
        waits again. A worker ends at once rather than wait when `MAX_SPARES`
        are waiting already.

        Args:
            role: The worker's role, set to reading once it has the role.
            rest_first: Wait as a spare before looking (the worker has just
                left the role to a caller it woke).
        """
        spares = self.spares
        task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            # The session is ending: the spare leaves the list and is cancelled.
            # (Trio calls this from the cancelling task, hence `task`.)
            spares.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        while rest_first or not self.vacant:
            rest_first = False
            if len(spares) >= MAX_SPARES:
                return False
            spares.append(task)
            await trio.lowlevel.wait_task_rescheduled(abort)
        self.vacant = False
        role.reading = True
        return True
