"""Progress reports: an impl says how far it got, and its caller hears it.

The impl awaits `report_progress(done, total, message)` anywhere inside its
call (child tasks included: the call is found in a ContextVar that Trio copies
at spawn). The transport that carries the call decides where a report goes: a
`progress` message on a session (memory, WebSocket, local), the status resource
of a long-running operation over HTTP, or nowhere (an ordinary HTTP call).

The caller listens with `on_progress(callback)` around its calls; the stub's
signature does not change. Each transport hands the reports of a call made in
that block to `callback`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import attrs
import trio

from ._errors import ConnectionClosed, PayloadTooLarge

__all__ = [
    "MAX_PROGRESS_MESSAGE",
    "Progress",
    "ProgressListener",
    "ProgressSink",
    "SessionProgress",
    "current_listener",
    "deliver",
    "on_progress",
    "report_progress",
    "reporting_call",
]

_log = logging.getLogger("tether.client")

#: The longest `message` a progress report may carry, in characters.
MAX_PROGRESS_MESSAGE = 1024


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")


def _check_done(_: Any, __: Any, value: Any) -> None:
    _number("done", value)


def _check_total(_: Any, __: Any, value: Any) -> None:
    if value is not None:
        _number("total", value)


def _check_message(_: Any, __: Any, value: Any) -> None:
    if value is None:
        return
    if type(value) is not str:
        raise ValueError(f"message must be a str or None, got {type(value).__name__}")
    if len(value) > MAX_PROGRESS_MESSAGE:
        raise ValueError(
            f"message must be at most {MAX_PROGRESS_MESSAGE} characters, got {len(value)}: "
            "a progress report is a status line, not a log"
        )


@attrs.frozen(slots=True)
class Progress:
    """How far a call's impl got, as the caller's `on_progress` callback sees it.

    Attributes:
        done: The work done so far, in the impl's units (items, bytes, percent).
        total: The work there is, in the same units; None when unknown.
        message: A short status line (at most 1,024 characters), or None.
    """

    done: float = attrs.field(validator=_check_done)
    total: float | None = attrs.field(default=None, validator=_check_total)
    message: str | None = attrs.field(default=None, validator=_check_message)

    @property
    def fraction(self) -> float | None:
        """`done / total`, capped at 1.0; None when the total is unknown (or 0)."""
        if not self.total:
            return None
        return min(self.done / self.total, 1.0)

    def to_json(self) -> dict[str, Any]:
        """`{"done": ..., "total": ..., "message": ...}`, the absent ones left out."""
        obj: dict[str, Any] = {"done": self.done}
        if self.total is not None:
            obj["total"] = self.total
        if self.message is not None:
            obj["message"] = self.message
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> Progress:
        """Read a report as `to_json` writes it (other members are ignored).

        Raises:
            ValueError: not an object, or a member of the wrong type or range.
        """
        if type(obj) is not dict:
            raise ValueError(f"a progress report is an object, got {type(obj).__name__}")
        done: Any = obj.get("done")
        return cls(done, obj.get("total"), obj.get("message"))


#: What `on_progress` takes: called with each report of a call made in its block.
ProgressListener = Callable[[Progress], object]


class ProgressSink(Protocol):
    """Where a transport sends the reports of the calls it runs."""

    async def report(self, call_id: int, progress: Progress) -> None:
        """Deliver (or keep) `progress` of call `call_id`; never raises for the transport."""


class _ReportingCall(Protocol):
    """What `report_progress` needs of the call it runs in (a `PreparedCall`)."""

    @property
    def id(self) -> int: ...

    @property
    def progress(self) -> ProgressSink | None: ...


#: The call whose impl runs in this task (set by `Dispatcher.run`).
reporting_call: contextvars.ContextVar[_ReportingCall | None] = contextvars.ContextVar(
    "tether_reporting_call", default=None
)
_listener: contextvars.ContextVar[ProgressListener | None] = contextvars.ContextVar(
    "tether_progress_listener", default=None
)


async def report_progress(
    done: float, total: float | None = None, message: str | None = None
) -> None:
    """Tell the caller of the current RPC call how far its impl got.

    For long-running operations (`@tether.long_running`), though any
    operation's impl may call it. Over memory, WebSocket and local the report
    goes to the caller at once, as a `progress` message; over HTTP it is what
    the status resource of a long-running operation answers to the next poll
    (an ordinary HTTP call's reports go nowhere). The caller hears it through
    `tether.on_progress`.

    Reports never pile up: at most one is on its way per call, and reports
    made meanwhile (from other tasks of the impl) are merged, the latest
    winning. So this waits only while the report before it is sent.

    Args:
        done: The work done so far, in the impl's own units.
        total: The work there is, in the same units; None when unknown.
        message: A short status line (at most 1,024 characters).

    Raises:
        ValueError: `done` or `total` is not a finite, non-negative number, or
            `message` is not a str of at most 1,024 characters.
        RuntimeError: called outside an RPC operation's impl (and the tasks it
            started): there is no caller to tell.
    """
    progress = Progress(done, total, message)
    call = reporting_call.get()
    if call is None:
        raise RuntimeError(
            "tether.report_progress() reports how far an RPC operation got: call it from the "
            "operation's impl (or a task the impl started), not outside a call"
        )
    sink = call.progress
    if sink is None:
        await trio.lowlevel.checkpoint()
        return
    await sink.report(call.id, progress)


@contextlib.contextmanager
def on_progress(callback: ProgressListener) -> Iterator[None]:
    """Hear the progress reports of the calls made in the block.

    Example::

        with tether.on_progress(lambda p: print(f"{p.done}/{p.total}")):
            await stub.rebuild_index("m1")

    `callback` is called with each `Progress` the impl reports, in order,
    while the call waits; it is called synchronously by whichever task reads
    the connection, so it must not block (hand the report to another task with
    a memory channel's `send_nowait` when it must). An exception it raises is
    logged and ignored. Blocks nest: the innermost callback hears the calls
    made inside it. Over HTTP only long-running operations report (as their
    status is polled, so a report between two polls may be skipped); over
    memory, WebSocket and local every operation's reports arrive.
    """
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def current_listener() -> ProgressListener | None:
    """The callback of the innermost `on_progress` block around this task, if any."""
    return _listener.get()


def deliver(listener: ProgressListener, progress: Progress) -> None:
    """Call a caller's `on_progress` callback; what it raises is logged, not raised."""
    try:
        listener(progress)
    except Exception:
        _log.exception("an on_progress callback raised; the call goes on")


class SessionProgress:
    """The sink of a session (memory, WebSocket, local): `progress` messages on its stream.

    At most one report per call is being sent at a time; reports made while
    one is sent replace each other, and the latest goes when the send is done.
    The send runs in the reporting task, so an impl that reports fast waits
    for the connection rather than queueing reports without bound, and every
    report an impl awaited is sent before its result.
    """

    __slots__ = ("_encode", "_send", "_sending")

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        encode: Callable[[int, Progress], bytes],
    ) -> None:
        self._send = send
        self._encode = encode
        # call id -> the report waiting for the one being sent (None: none waits).
        self._sending: dict[int, Progress | None] = {}

    async def report(self, call_id: int, progress: Progress) -> None:
        sending = self._sending
        if call_id in sending:
            sending[call_id] = progress  # the task sending now sends it next
            await trio.lowlevel.checkpoint()
            return
        sending[call_id] = None
        try:
            next_: Progress | None = progress
            while next_ is not None:
                with contextlib.suppress(ConnectionClosed, PayloadTooLarge):
                    # A closed connection ends the session (and the impl) anyway.
                    await self._send(self._encode(call_id, next_))
                next_ = sending[call_id]
                sending[call_id] = None
        finally:
            del sending[call_id]
