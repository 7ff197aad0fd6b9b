"""Small Trio helpers shared by the runtime and the transports."""

from __future__ import annotations

import math
import re
import types
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

__all__ = [
    "MAX_TIMEOUT_MS",
    "check_positive_int",
    "check_route",
    "check_seconds",
    "collapse_exception_group",
    "open_service_nursery",
    "resume",
    "run_until_it_yields",
    "timeout_ms_left",
]

T = TypeVar("T")


def check_positive_int(name: str, value: object) -> None:
    """Refuse a count, bound or limit that is not an int of at least 1 (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


#: What a routing token may hold: it goes in IPC session ids, URL paths and
#: queries, and nginx `map` keys, so nothing that needs quoting in any of them.
_ROUTE = re.compile(r"[a-z0-9-]{1,32}")


def check_route(route: object) -> None:
    """Refuse a routing token that is not 1-32 characters of `a-z`, `0-9` and `-`; None passes.

    Raises:
        ValueError: `route` is not None and not such a str.
    """
    if route is None:
        return
    if not isinstance(route, str) or _ROUTE.fullmatch(route) is None:
        raise ValueError(
            "route must be 1 to 32 characters of a-z, 0-9 and '-' (e.g. 'b1'; it starts "
            f"every IPC session id, for a proxy to route on), got {route!r}"
        )


def check_seconds(name: str, value: object, *, optional: bool = False, finite: bool = True) -> None:
    """Refuse a time in seconds that is not a positive int or float (a bool is not one).

    Args:
        name: The setting's name, for the message.
        value: Its value.
        optional: None is allowed (the setting is off).
        finite: `math.inf` is refused; when False, it is allowed (no bound).

    Raises:
        ValueError: `value` is not such a number (nan included).
    """
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or (finite and value == math.inf)
    ):
        what = "a positive finite number of seconds" if finite else "a positive number of seconds"
        if not finite:
            what += " (math.inf for no bound)"
        if optional:
            what += ", or None"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def collapse_exception_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Return the one real error of a group, or the group when there are several.

    `trio.Cancelled` leaves are ignored when there is another error: they are the
    consequence, not the cause.
    """
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real and leaves:
        return leaves[0]
    return group


@asynccontextmanager
async def open_service_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for context managers that own tasks, without leaking ExceptionGroups.

    When one error is the real cause (the user's body raised, or one background
    task failed and the rest were cancelled), that error is raised as itself, as
    trio-websocket's `open_websocket` does.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        cause = collapse_exception_group(group)
        if cause is group:
            raise
        raise cause from cause.__cause__


#: The longest time left a call carries (285,000 years): an int any JSON
#: library reads exactly, that the other side can add to its clock.
MAX_TIMEOUT_MS = 2**53 - 1


def timeout_ms_left() -> int | None:
    """Milliseconds left before the current effective Trio deadline, or None."""
    deadline = trio.current_effective_deadline()
    if deadline == math.inf:
        return None
    if deadline == -math.inf:
        return 0  # the scope is already cancelled
    left = (deadline - trio.current_time()) * 1000
    # A deadline of move_on_after(1e300) is no real deadline, and its
    # milliseconds would not fit the wire (or a float, past 1e305).
    return MAX_TIMEOUT_MS if left >= MAX_TIMEOUT_MS else max(0, math.ceil(left))


@types.coroutine
def resume(running: Coroutine[Any, Any, T], trap: Any) -> Generator[Any, Any, T]:
    """Go on running a coroutine whose first step yielded `trap`, as `await` does.

    What the scheduler sends or throws is passed in, and what the coroutine
    yields is passed out, exactly as `yield from` would.
    """
    while True:
        try:
            sent = yield trap
        except GeneratorExit:
            running.close()
            raise
        except BaseException as exc:
            try:
                trap = running.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                trap = running.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


async def run_until_it_yields(
    work: Coroutine[Any, Any, T], on_yield: Callable[..., object], *args: Any
) -> T:
    """Await `work`, calling `on_yield(*args)` once, just before its first suspension.

    Work that completes without yielding to the scheduler never pays for what
    `on_yield` sets up (a watcher task, a hand-over of a reader's role).
    """
    try:
        trap = work.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    try:
        on_yield(*args)
    except BaseException:
        work.close()
        raise
    return await resume(work, trap)
