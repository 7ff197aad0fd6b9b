# mypy: disable-error-code="empty-body"
# (channel methods are declared with `...` bodies)
"""The IPC conformance suite: what every transport's IPC sessions must do, as pytest tests.

A transport's IPC is correct when it passes this suite. Subclass
`IpcConformance` in a test module (the subclass's name must start with `Test`)
and implement `connect_ipc`::

    class TestMemoryIpc(tether.testing.IpcConformance):
        def connect_ipc(self, backend, **options):
            return memory.connect_ipc(backend, **options)

The backend may run in another thread, on a Trio loop of its own (the
in-process transport's `thread=True`): the suite's handlers report to the test
only through `Probe` and thread-safe recorders, never through Trio objects.
Frontend listeners and handlers run in the test's own loop.

Every test runs under pytest-trio and is bounded by `trio.fail_after`.
"""

from __future__ import annotations

from ._ipc_authorization import IpcAuthorizationTests
from ._ipc_calls import IpcCallTests
from ._ipc_fixtures import (
    ConformanceFrontendIpc,
    ConformanceIpc,
    ConformanceIpcEvents,
    IpcContextInfo,
)
from ._ipc_interceptors import IpcInterceptorTests
from ._ipc_notifications import IpcNotificationTests
from ._ipc_resume import IpcResumeTests
from ._ipc_sessions import IpcSessionTests
from ._ipc_streams import IpcStreamTests

__all__ = [
    "ConformanceFrontendIpc",
    "ConformanceIpc",
    "ConformanceIpcEvents",
    "IpcConformance",
    "IpcContextInfo",
]


class IpcConformance(
    IpcCallTests,
    IpcNotificationTests,
    IpcSessionTests,
    IpcAuthorizationTests,
    IpcStreamTests,
    IpcResumeTests,
    IpcInterceptorTests,
):
    """Tests every IPC transport must pass. Subclass it and implement `connect_ipc`.

    `connect_ipc(backend, **options)` returns an async context manager that
    serves `backend` over the transport and yields the frontend's end of one
    session, for the block. Leaving the block ends the session; the block must
    not end before the backend's end of it has (so `IpcSession.wait_closed` is
    done). The suite passes these options, which a transport must honour:
    `channels` (the IpcInterface classes checked at connect), `application_id`,
    `application_version`, `authorization` (the credential the backend's
    `authorize` hook sees, sent in the `hello`), `max_pending_notifications`
    (how many of the backend's notifications may wait for the frontend's
    listeners), `stream_window` (the frontend's `StreamWindow`) and
    `max_message_size` (the largest message the frontend sends).

    The resume cases (`IpcResumeTests`) cut the session's connection: set
    `resumes = True` where a session survives it (the suite then passes
    `retry`, the reconnect backoff, to `connect_ipc`).
    """
