"""Logging: every record inside a request carries its context; authorization never appears."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
import trio

import tether
from tether import contexts
from tether.transports import memory

SECRET = "Bearer TOP-SECRET-4711"

backend_log = logging.getLogger("test.backend")
frontend_log = logging.getLogger("test.frontend")


class Greeter(tether.RpcInterface):
    interface_name = "test.LoggingGreeter"
    interface_version = "1.0.0"

    async def greet(self, name: str) -> str: ...
    async def crash(self) -> None: ...
    async def forward(self, name: str) -> str: ...


class Downstream(tether.RpcInterface):
    interface_name = "test.LoggingDownstream"
    interface_version = "1.0.0"

    async def shout(self, name: str) -> str: ...


class GreeterImpl(Greeter):
    def __init__(self, manager: tether.RpcManager, downstream: tether.RpcManager | None) -> None:
        self.manager = manager
        self.downstream = downstream

    async def greet(self, name: str) -> str:
        backend_log.info("greeting %s", name)
        structlog.get_logger("test.backend").info("greeting", name=name)
        return f"hello {name}"

    async def crash(self) -> None:
        backend_log.info("about to crash")
        raise RuntimeError("kaboom")

    async def forward(self, name: str) -> str:
        assert self.downstream is not None
        backend_log.info("forwarding %s", name)
        async with memory.connect(self.downstream, interfaces=[Downstream]) as conn:
            self.manager.initialize_client([Downstream], conn)
            return await self.manager.get_client(Downstream).shout(name)


class DownstreamImpl(Downstream):
    async def shout(self, name: str) -> str:
        logging.getLogger("test.downstream").info("shouting %s", name)
        return name.upper()


class Capture(logging.Handler):
    """Keeps every record, with the context fields the filter adds."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(contexts.ContextFilter())
        self.setFormatter(
            logging.Formatter(
                "%(name)s %(activity_id)s %(session_id)s %(application_id)s %(operation)s "
                "%(message)s"
            )
        )

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # fills exc_text: the traceback is checked for secrets too
        self.records.append(record)

    def by_logger(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == name]


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
def structlog_events() -> Iterator[list[dict[str, object]]]:
    events = structlog.testing.LogCapture()
    structlog.configure(processors=[contexts.add_request_context, events])
    try:
        yield events.entries
    finally:
        structlog.reset_defaults()


def make_manager(downstream: tether.RpcManager | None = None) -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Greeter, GreeterImpl(manager, downstream))
    return manager


@pytest.mark.parametrize("thread", [False, True])
async def test_both_tiers_log_the_same_activity_id(capture: Capture, thread: bool) -> None:
    with trio.fail_after(10):
        async with memory.connect(
            make_manager(), interfaces=[Greeter], application_id="log-app", thread=thread
        ) as backend:
            client = backend.get_client(Greeter)
            with contexts.activity() as act:
                frontend_log.info("user clicked greet")
                assert await client.greet("ada") == "hello ada"
    front = capture.by_logger("test.frontend")
    back = capture.by_logger("test.backend")
    access = capture.by_logger("tether.access")
    assert len(front) == 1
    assert len(back) == 1
    assert len(access) == 1
    assert front[0].activity_id == act.activity_id  # type: ignore[attr-defined]
    assert back[0].activity_id == act.activity_id  # type: ignore[attr-defined]
    assert access[0].activity_id == act.activity_id  # type: ignore[attr-defined]
    assert back[0].operation == "test.LoggingGreeter.greet"  # type: ignore[attr-defined]
    assert back[0].application_id == "log-app"  # type: ignore[attr-defined]
    assert back[0].session_id == backend.session_id  # type: ignore[attr-defined]
    assert "test.LoggingGreeter.greet ok" in access[0].getMessage()


async def test_a_chain_of_backends_logs_one_activity(capture: Capture) -> None:
    downstream = tether.RpcManager()
    downstream.register_impl(Downstream, DownstreamImpl())
    with trio.fail_after(10):
        async with memory.connect(make_manager(downstream), interfaces=[Greeter]) as backend:
            with contexts.activity() as act:
                assert await backend.get_client(Greeter).forward("bob") == "BOB"
    middle = capture.by_logger("test.backend")
    last = capture.by_logger("test.downstream")
    assert [r.activity_id for r in middle + last] == [act.activity_id] * 2  # type: ignore[attr-defined]
    operations = {r.operation for r in capture.by_logger("tether.access")}  # type: ignore[attr-defined]
    assert operations == {"test.LoggingGreeter.forward", "test.LoggingDownstream.shout"}


async def test_impl_errors_are_logged_with_the_activity(capture: Capture) -> None:
    with trio.fail_after(10):
        async with memory.connect(make_manager(), interfaces=[Greeter]) as backend:
            with contexts.activity() as act, pytest.raises(tether.RemoteError):
                await backend.get_client(Greeter).crash()
    errors = [r for r in capture.by_logger("tether.server") if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].activity_id == act.activity_id  # type: ignore[attr-defined]
    assert errors[0].exc_info is not None
    assert "kaboom" in (errors[0].exc_text or "")


async def test_authorization_never_appears_in_any_log_record(capture: Capture) -> None:
    async def authorize(ctx: contexts.RequestContext) -> bool:
        # The hook sees the credential; logging the context must not leak it.
        logging.getLogger("test.auth").info("authorizing %r", ctx)
        return ctx.authorization == SECRET

    manager = make_manager()
    manager.authorize = authorize
    with trio.fail_after(10):
        async with memory.connect(manager, interfaces=[Greeter], authorization=SECRET) as backend:
            client = backend.get_client(Greeter)
            with contexts.activity():
                assert await client.greet("x") == "hello x"
                with pytest.raises(tether.RemoteError):
                    await client.crash()
        async with memory.connect(manager, interfaces=[Greeter], authorization="wrong") as backend:
            with pytest.raises(tether.Unauthorized):
                await backend.get_client(Greeter).greet("x")
    assert len(capture.records) >= 5
    for record in capture.records:
        text = " ".join([capture.format(record), repr(record.__dict__), record.exc_text or ""])
        assert "TOP-SECRET" not in text, record


async def test_structlog_processor_adds_the_context(
    structlog_events: list[dict[str, object]],
) -> None:
    with trio.fail_after(10):
        async with memory.connect(
            make_manager(), interfaces=[Greeter], authorization=SECRET
        ) as backend:
            with contexts.activity() as act:
                await backend.get_client(Greeter).greet("eve")
    assert len(structlog_events) == 1
    event = structlog_events[0]
    assert event["activity_id"] == act.activity_id
    assert event["operation"] == "test.LoggingGreeter.greet"
    assert event["session_id"] == backend.session_id
    assert "authorization" not in event
    assert "TOP-SECRET" not in repr(event)


def test_filter_outside_a_request_uses_the_default_and_keeps_explicit_values() -> None:
    flt = contexts.ContextFilter(default="none")
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
    assert flt.filter(plain)
    assert plain.activity_id == "none"  # type: ignore[attr-defined]
    explicit = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
    explicit.activity_id = "given"
    with contexts.activity("current"):
        flt.filter(explicit)
    assert explicit.activity_id == "given"  # type: ignore[attr-defined]
