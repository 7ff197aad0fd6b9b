"""Regressions found by review of the HTTP transport."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tether.runtime._util import run_until_it_yields
from tether.transports.http._ipc_server import _INBOUND_BUFFER, ServerStream


async def test_a_post_waiting_for_room_goes_on_when_the_backend_reads() -> None:
    """A frontend's POST that found the session's inbound buffer full is woken as
    soon as the backend takes a message, not only by the next POST."""
    stream = ServerStream(max_message_size=1024, grace=5.0)
    for n in range(_INBOUND_BUFFER):
        await stream.from_frontend(b"%d" % n)
    delivered = trio.Event()

    async def post() -> None:
        await stream.from_frontend(b"last")
        delivered.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            await trio.testing.wait_all_tasks_blocked()
            assert not delivered.is_set()
            first = await stream.receive_message()
            await delivered.wait()
    assert first == b"0"
    assert stream.inbound[-1] == b"last"


async def test_a_post_waiting_for_room_is_refused_when_the_session_closes() -> None:
    stream = ServerStream(max_message_size=1024, grace=5.0)
    for n in range(_INBOUND_BUFFER):
        await stream.from_frontend(b"%d" % n)
    refused: list[BaseException] = []

    async def post() -> None:
        try:
            await stream.from_frontend(b"late")
        except Exception as exc:
            refused.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            await trio.testing.wait_all_tasks_blocked()
            stream.close_from_backend("maintenance")
    assert len(refused) == 1
    assert b"late" not in stream.inbound


async def test_run_until_it_yields_closes_the_work_when_the_hook_fails() -> None:
    reached_the_end = False

    async def work() -> None:
        nonlocal reached_the_end
        await trio.lowlevel.checkpoint()
        reached_the_end = True

    def hook() -> None:
        raise RuntimeError("the watcher could not start")

    coroutine = work()
    with pytest.raises(RuntimeError, match="watcher"):
        await run_until_it_yields(coroutine, hook)
    assert coroutine.cr_frame is None  # closed, not left suspended
    assert not reached_the_end
