"""The lifeline's bounds and what crosses it, one layer at a time, over a real socket pair."""

from __future__ import annotations

import json
import logging
import socket

import trio

from tether.transports.local._lifeline import (
    LineSplitter,
    LogForwarder,
    decode_line,
    make_record,
    record_line,
)


def _record(message: str, name: str = "flood") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, "%s", (message,), None)


async def test_a_flooding_backend_holds_at_most_its_bound_and_says_what_it_dropped() -> None:
    bound = 64 * 1024
    backend_end, frontend_end = socket.socketpair()
    with backend_end, frontend_end:
        backend_end.setblocking(False)
        frontend_end.setblocking(False)
        forwarder = LogForwarder(backend_end, max_pending=bound)
        total = 2000
        line = "x" * 1000
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forwarder.run)
                # The frontend reads nothing meanwhile: the kernel's buffer
                # fills, then the forwarder's, then records are dropped.
                for _ in range(total):
                    forwarder.handle(_record(line))
                assert forwarder.pending <= bound + 2048
                dropped = forwarder.dropped
                assert dropped > 0
                # Now the frontend reads everything, up to the drop notice.
                splitter = LineSplitter(256 * 1024)
                messages: list[dict[str, object]] = []
                while not messages or messages[-1]["name"] != "tether.local":
                    await trio.lowlevel.wait_readable(frontend_end)
                    for raw in splitter.feed(frontend_end.recv(65536)):
                        decoded = decode_line(raw)
                        assert decoded is not None
                        messages.append(decoded)
                nursery.cancel_scope.cancel()
    *floods, notice = messages
    assert {m["msg"] for m in floods} == {line}
    assert notice["levelname"] == "WARNING"
    assert notice["msg"] == (
        f"dropped {dropped} log record(s): the frontend read them more slowly than "
        "the backend wrote them"
    )
    assert len(floods) + dropped == total


async def test_emit_never_waits_and_stops_quietly_when_the_frontend_is_gone() -> None:
    backend_end, frontend_end = socket.socketpair()
    with backend_end:
        backend_end.setblocking(False)
        forwarder = LogForwarder(backend_end)
        frontend_end.close()
        forwarder.handle(_record("nobody reads this"))
        forwarder.send({"t": "ready"})
        assert forwarder.pending == 0
        with trio.fail_after(1):
            await forwarder.flush_for(1.0)


def test_a_line_splitter_holds_at_most_one_line_of_its_bound() -> None:
    splitter = LineSplitter(1000)
    lines = []
    for _ in range(100):  # a 1 MB line, with no end in sight
        lines += splitter.feed(b"y" * 10_000)
    assert lines == [b"y" * 1000]
    assert splitter.cut == 1
    assert splitter.feed(b"yyy\nnext\nhalf") == [b"next"]  # the long one's end is skipped
    assert splitter.feed(b" done\n") == [b"half done"]


def test_the_partial_line_is_bounded() -> None:
    splitter = LineSplitter(1000)
    splitter.feed(b"z" * 999)
    assert splitter.feed(b"z" * 5000) == [b"z" * 1000]
    assert splitter.rest() == b""


def test_a_record_line_carries_the_message_and_the_context_never_the_authorization() -> None:
    record = _record("moved door-5")
    record.activity_id = "a1"
    record.authorization = "Bearer secret"  # as if a careless `extra=` put it there
    message = json.loads(record_line(record))
    assert message["t"] == "log"
    assert message["msg"] == "moved door-5"
    assert message["activity_id"] == "a1"
    assert "secret" not in json.dumps(message)


def test_a_huge_record_is_cut_to_fit_a_line() -> None:
    record = _record("\x01" * 200_000)  # each escaped as six bytes
    line = record_line(record)
    assert len(line) <= 256 * 1024
    assert "cut" in json.loads(line)["msg"]


def test_make_record_takes_only_known_fields_of_their_types() -> None:
    record = make_record(
        {
            "t": "log",
            "name": "backend.x",
            "levelno": 30,
            "msg": "100% done",
            "args": ["ignored"],
            "getMessage": "not a method",
            "lineno": "twelve",
            "activity_id": "a1",
            "created": 5,
        },
        pid=4242,
    )
    assert record is not None
    assert record.getMessage() == "100% done"
    assert record.levelname == "WARNING"
    assert record.lineno == 0  # the ill-typed one is left as a record's default
    assert record.created == 5.0
    assert record.process == record.backend_pid == 4242  # type: ignore[attr-defined]
    assert record.activity_id == "a1"  # type: ignore[attr-defined]
    assert make_record({"t": "log", "msg": "no name"}, pid=1) is None
