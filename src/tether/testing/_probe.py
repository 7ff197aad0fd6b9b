"""Probe: signals from an impl to the test, across tasks, loops and threads."""

from __future__ import annotations

import threading
from typing import Any

import trio

__all__ = ["Probe"]


class Probe:
    """Named, thread-safe, one-shot signals with a value.

    An impl under test calls `signal("started")`; the test awaits
    `wait("started")`. It works when the backend runs on another Trio loop in
    another thread (the in-process transport's `thread=True`), where a
    `trio.Event` could not be shared.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._values: dict[str, Any] = {}

    def _event(self, name: str) -> threading.Event:
        with self._lock:
            event = self._events.get(name)
            if event is None:
                event = self._events[name] = threading.Event()
            return event

    def signal(self, name: str, value: Any = None) -> None:
        """Set signal `name` with `value`; later signals of the same name are ignored."""
        event = self._event(name)
        with self._lock:
            if event.is_set():
                return
            self._values[name] = value
        event.set()

    def is_set(self, name: str) -> bool:
        """Whether `name` was signalled."""
        return self._event(name).is_set()

    def value(self, name: str) -> Any:
        """The value `name` was signalled with.

        Raises:
            KeyError: `name` was not signalled.
        """
        with self._lock:
            return self._values[name]

    async def wait(self, name: str) -> Any:
        """Wait until `name` is signalled and return its value.

        Cancellable: wrap it in `trio.fail_after` to bound it.
        """
        event = self._event(name)
        if not event.is_set():
            # A worker thread blocks on the threading.Event; cancelling the
            # await abandons that thread, which ends at the next signal or when
            # the process exits (it is a daemon thread).
            while not await trio.to_thread.run_sync(event.wait, 0.5, abandon_on_cancel=True):
                pass
        return self.value(name)
