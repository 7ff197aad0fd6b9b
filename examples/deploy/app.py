# mypy: disable-error-code="empty-body"
"""The app the deployment example serves: each answer says which process gave it.

    tether serve examples.deploy.app:app --http 127.0.0.1:8001

`Where` is an RPC interface: `where()` (idempotent) names the backend and the
process that served the call, `record(note)` (not idempotent) counts the notes
one process took, and `survey(seconds)` is a long-running operation (over
HTTP: `202 Accepted`, then polls of the worker that holds it). `Tally` is an
IPC channel: each session counts what it is told, and notifies its own
frontend of every new total on `TallyEvents`, so a test can see that a
session stays on the process that opened it.

The backend's name is the `DEPLOY_BACKEND` environment variable, which
`examples/deploy/run.py` sets for each backend it starts ("b1", "b2"...).
"""

from __future__ import annotations

import logging
import os

import attrs
import trio

import tether

__all__ = ["Served", "Tally", "TallyEvents", "TallyHandler", "Where", "WhereImpl", "app"]

log = logging.getLogger(__name__)


@attrs.frozen
class Served:
    """Who served a call: the backend's name, and the worker process's id."""

    backend: str
    pid: int


def _served() -> Served:
    return Served(os.environ.get("DEPLOY_BACKEND", "-"), os.getpid())


class Where(tether.RpcInterface):
    """Calls that say which backend process answered them."""

    interface_name = "deploy.Where"
    interface_version = "1.0.0"

    @tether.idempotent
    async def where(self) -> Served:
        """Who serves this call (safe to retry: it changes nothing)."""
        ...

    async def record(self, note: str) -> Served:
        """Take `note` down once (not idempotent: a retry would take it twice)."""
        ...

    @tether.long_running(poll_interval=0.1, ready_within=0.05)
    async def survey(self, seconds: float) -> Served:
        """Work for `seconds`: over HTTP, answered `202 Accepted` and polled."""
        ...


class WhereImpl(Where):
    """Logs each call (with its ActivityId, through the request's context)."""

    def __init__(self) -> None:
        self.notes = 0

    async def where(self) -> Served:
        log.info("where: served here")
        return _served()

    async def survey(self, seconds: float) -> Served:
        await trio.sleep(seconds)  # stands for work that takes a while
        return _served()

    async def record(self, note: str) -> Served:
        self.notes += 1
        log.info("record: note %d taken (%d bytes)", self.notes, len(note))
        return _served()


class TallyEvents(tether.NotificationInterface):
    """What a `Tally` session tells its frontend."""

    channel_name = "deploy-tally-events"

    async def counted(self, total: int, served: Served) -> None:
        """The session's total is now `total`; `served` says which process holds it."""
        ...


class Tally(tether.IpcInterface):
    """A running total kept by the backend process that opened the session."""

    channel_name = "deploy-tally"
    version = "1.0.0"

    async def add(self, amount: int) -> Served:
        """Add `amount` to this session's total; notifies `TallyEvents.counted`."""
        ...


class TallyHandler(tether.IpcHandler, Tally):
    """One per session: the total lives in the process that opened it."""

    def __init__(self) -> None:
        self.total = 0

    async def add(self, amount: int) -> Served:
        self.total += amount
        events = tether.current_session().notifier(TallyEvents)
        await events.counted(self.total, _served())
        return _served()


def _make_ipc() -> tether.BackendIpc:
    ipc = tether.BackendIpc()
    ipc.register(TallyHandler)
    return ipc


@attrs.frozen
class App:
    """What `tether serve` takes: an RpcManager and a BackendIpc."""

    manager: tether.RpcManager
    ipc: tether.BackendIpc


def make_app() -> App:
    """A fresh app (the module's `app` is one made at import)."""
    manager = tether.RpcManager()
    manager.register_impl(Where, WhereImpl())
    return App(manager, _make_ipc())


#: `tether serve examples.deploy.app:app` serves this.
app = make_app()
