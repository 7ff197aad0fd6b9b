"""`TetherLogs`: the log records of one test, with the ActivityIds they carry.

The `tether_logs` fixture of the pytest plugin hands one out. Every record
reaching the root logger is kept, with `tether.contexts.ContextFilter`'s fields
added when it is emitted (`activity_id`, `session_id`, `application_id`,
`operation`), so a test can check that one user action is traceable through
the frontend's records and the backend's.
"""

from __future__ import annotations

import logging

from ..contexts import ContextFilter

__all__ = ["TetherLogs"]

#: What `ContextFilter` writes in a field the current context does not have.
_NONE = "-"


class _Capture(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.NOTSET)
        self._records = records
        self.addFilter(ContextFilter(default=_NONE))

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock, from whichever thread logged (a
        # backend with thread=True logs from its own): list.append is enough.
        self._records.append(record)


class TetherLogs:
    """The log records written during one test, tether's and the application's.

    A record is on the *backend* tier when it was written while serving a
    request (its `operation` is the request's `"Interface.operation"`; tether's
    access log line too), and on the *frontend* tier otherwise. Records
    written outside any activity have the ActivityId `"-"`.

    Attributes:
        records: Every record captured, in the order written.
    """

    def __init__(self, level: int = logging.DEBUG) -> None:
        self.records: list[logging.LogRecord] = []
        self.level = level
        self._handler = _Capture(self.records)
        self._old_level: int | None = None

    def start(self) -> None:
        """Capture from now on: a handler on the root logger, lowered to `level`."""
        root = logging.getLogger()
        self._old_level = root.level
        if root.level == logging.NOTSET or root.level > self.level:
            root.setLevel(self.level)
        root.addHandler(self._handler)

    def stop(self) -> None:
        """Stop capturing and put the root logger's level back."""
        root = logging.getLogger()
        root.removeHandler(self._handler)
        if self._old_level is not None:
            root.setLevel(self._old_level)
            self._old_level = None

    def clear(self) -> None:
        """Forget the records captured so far."""
        self.records.clear()

    def activity_ids(self) -> list[str]:
        """The distinct ActivityIds of the records, in the order first seen ("-" left out)."""
        seen: dict[str, None] = {}
        for record in list(self.records):
            activity_id = getattr(record, "activity_id", _NONE)
            if activity_id != _NONE:
                seen[activity_id] = None
        return list(seen)

    def of_activity(self, activity_id: str) -> list[logging.LogRecord]:
        """The records carrying `activity_id`, in the order written."""
        return [r for r in list(self.records) if getattr(r, "activity_id", None) == activity_id]

    def frontend(self, activity_id: str) -> list[logging.LogRecord]:
        """The records of `activity_id` written outside any request being served."""
        return [r for r in self.of_activity(activity_id) if _operation(r) == _NONE]

    def backend(self, activity_id: str) -> list[logging.LogRecord]:
        """The records of `activity_id` written while serving one of its requests."""
        return [r for r in self.of_activity(activity_id) if _operation(r) != _NONE]

    def assert_on_both_tiers(self, activity_id: str) -> list[logging.LogRecord]:
        """Check that `activity_id` has records on the frontend and on the backend.

        Returns:
            The activity's records, in the order written.

        Raises:
            AssertionError: one tier has none; the message lists what was captured.
        """
        front, back = self.frontend(activity_id), self.backend(activity_id)
        if front and back:
            return self.of_activity(activity_id)
        missing = " and ".join(
            tier for tier, found in (("frontend", front), ("backend", back)) if not found
        )
        raise AssertionError(
            f"ActivityId {activity_id} has no record on the {missing} "
            f"({len(front)} frontend, {len(back)} backend); captured:\n{self.describe()}"
        )

    def describe(self) -> str:
        """The captured records, one line each: ActivityId, operation, logger, message."""
        lines = [
            f"  {getattr(r, 'activity_id', _NONE)} {_operation(r)} {r.name}: {r.getMessage()}"
            for r in list(self.records)
        ]
        return "\n".join(lines) or "  (no records)"


def _operation(record: logging.LogRecord) -> str:
    operation = getattr(record, "operation", _NONE)
    return operation if isinstance(operation, str) and operation else _NONE
