"""Malformed messages inside an open IPC session: refused or dropped, never a traceback.

A frontend (or a backend, for the frontend) may send anything once its
session is open. What cannot be served is answered (invokes) or dropped with
a line that says so (notifications); the server's log gets no traceback for
the other side's mistake, and the session goes on.
"""

from __future__ import annotations

import logging

import pytest
import trio
from test_http_site import Runs, Tally
from test_ipc_admission import serving

from tether.transports import http, websocket

TIMEOUT = 10.0


@pytest.mark.parametrize("transport", ["http", "trio-websocket", "hypercorn-websocket"])
async def test_a_notification_whose_arguments_do_not_fit_is_dropped_without_a_traceback(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The backend decoded a notification's arguments inside the listener's own
    try, and logged the frontend's mistake as the handler's failure: an ERROR
    with a traceback per message, as many as a frontend cared to send."""
    runs = Runs()
    backend = runs.backend_ipc()
    after = trio.Event()
    backend.add_listener("attack.after", lambda method, *rest: after.set())
    caplog.set_level(logging.INFO)
    connect = http.connect_ipc if transport == "http" else websocket.connect_ipc
    with trio.fail_after(TIMEOUT):
        async with serving(transport, backend) as url, connect(url, channels=[Tally]) as frontend:
            # Untyped: sent as they are, to a method that takes none.
            await frontend.send("test.tally", "bump", 1, 2, 3)
            await frontend.send("attack.after", "done")
            await after.wait()  # delivered in order: the first was handled
            assert await frontend.proxy(Tally).bump() == 1  # the session goes on
    assert runs.invokes == 1  # the notification ran nothing
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    (dropped,) = [r for r in caplog.records if r.getMessage().startswith("dropped test.tally.bump")]
    assert dropped.levelno == logging.WARNING
    assert "takes 0 arguments" in dropped.getMessage()
