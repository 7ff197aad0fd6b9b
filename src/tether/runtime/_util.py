"""Small Trio helpers shared by the runtime and the transports."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["collapse_exception_group", "open_service_nursery", "timeout_ms_left"]


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


def timeout_ms_left() -> int | None:
    """Milliseconds left before the current effective Trio deadline, or None."""
    deadline = trio.current_effective_deadline()
    if deadline == math.inf:
        return None
    if deadline == -math.inf:
        return 0  # the scope is already cancelled
    return max(0, math.ceil((deadline - trio.current_time()) * 1000))
