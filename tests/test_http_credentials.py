"""The HTTP client never repeats a credential: not in a message, repr, log record or detail.

Every call here runs with everything captured around it: the exception (its
str and repr, args, details, notes, and every exception chained to it, as a
traceback would print them) and every log record at DEBUG, from every logger.
The secret must appear in none of them, whether the credential is refused
before it is sent (a line break, a control character, spaces at its ends) or
is valid and the call fails for another reason.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import hypercorn.config
import hypercorn.trio
import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

import tether
from tether import contexts
from tether.runtime import InvalidRequest, RpcManager, TetherError
from tether.runtime._util import open_service_nursery
from tether.testing import (
    ConformanceInterface,
    ConformanceIpc,
    IpcConformance,
    Probe,
    RpcConformance,
)
from tether.transports import http
from tether.transports.http import HttpApp
from tether.transports.http._client import _header_value
from tether.transports.http._pool import ConnectionPool

TIMEOUT = 10.0
#: Quick retries: their log lines are searched too, without waiting out the default backoff.
QUICK = tether.RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02)
SECRET = "s3cr3t-Zq9-credential"

#: Credentials HTTP cannot carry: each must be refused without being repeated.
UNSENDABLE = [
    f"Bearer {SECRET}\r\nX-Injected: 1",
    f"Bearer {SECRET}\n",
    f"Bearer {SECRET}\r",
    f"Bearer {SECRET}\0",
    f"Bearer {SECRET}\x01",
    f"Bearer {SECRET}\x7f",
    f"Bearer {SECRET} ",
    f" Bearer {SECRET}",
]


def texts_of(exc: BaseException) -> list[str]:
    """Everything a user, a log or a bug report could show of `exc` and its chain."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts += getattr(current, "__notes__", [])
        if isinstance(current, TetherError):
            texts += [repr(current.details), repr(getattr(current, "reason", None))]
        if isinstance(current, BaseExceptionGroup):
            todo += current.exceptions
        todo += [current.__cause__, current.__context__]
    return texts


def texts_of_records(records: list[logging.LogRecord]) -> list[str]:
    formatter = logging.Formatter("%(name)s %(message)s %(args)s")
    texts = []
    for record in records:
        texts += [formatter.format(record), repr(record.args), repr(record.__dict__)]
        if record.exc_info and record.exc_info[1] is not None:
            texts += texts_of(record.exc_info[1])
    return texts


def assert_secret_nowhere(texts: list[str]) -> None:
    leaks = [text for text in texts if SECRET in text]
    assert not leaks, f"the credential leaked in {len(leaks)} place(s): {leaks[0][:300]!r}"


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    caplog.set_level(logging.DEBUG)
    return caplog.records


@asynccontextmanager
async def served(manager: RpcManager) -> AsyncIterator[str]:
    async with open_service_nursery() as nursery:
        url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0))
        yield url
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("credential", UNSENDABLE)
async def test_a_credential_http_cannot_carry_is_refused_without_repeating_it(
    credential: str, records: list[logging.LogRecord]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served(RpcConformance().backend_manager()) as url,
            http.connect(url, interfaces=[ConformanceInterface], authorization=credential) as b,
        ):
            client = b.get_client(ConformanceInterface)
            with pytest.raises(InvalidRequest, match="authorization") as caught:
                await client.add(1, 2)
    assert_secret_nowhere([*texts_of(caught.value), *texts_of_records(records)])


@pytest.mark.parametrize("credential", UNSENDABLE)
async def test_a_forwarded_credential_http_cannot_carry_is_refused_without_repeating_it(
    credential: str, records: list[logging.LogRecord]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served(RpcConformance().backend_manager()) as url,
            http.connect(url, interfaces=[ConformanceInterface]) as backend,
        ):
            client = backend.get_client(ConformanceInterface)
            with (
                contexts.activity(authorization=credential),
                pytest.raises(InvalidRequest) as caught,
            ):
                await client.add(1, 2)
    assert_secret_nowhere([*texts_of(caught.value), *texts_of_records(records)])


@pytest.mark.parametrize(
    # What h11 itself refuses (it lets other control characters through).
    "credential",
    [value for value in UNSENDABLE if "\x01" not in value and "\x7f" not in value],
)
async def test_the_pool_refuses_a_header_value_without_repeating_it(
    credential: str, records: list[logging.LogRecord]
) -> None:
    # The pool carries every request of the HTTP client, IPC's included.
    with trio.fail_after(TIMEOUT):
        async with served(RpcConformance().backend_manager()) as url:
            host, port, prefix = http._client.split_url(url)
            pool = ConnectionPool(host, port)
            try:
                with pytest.raises(ValueError, match="authorization") as caught:
                    await pool.request(
                        b"GET", f"{prefix}/".encode(), [(b"authorization", credential.encode())]
                    )
            finally:
                await pool.aclose()
    assert_secret_nowhere([*texts_of(caught.value), *texts_of_records(records)])


async def test_a_valid_credential_is_repeated_nowhere_on_any_outcome(
    records: list[logging.LogRecord],
) -> None:
    credential = f"Bearer {SECRET}"
    probe = Probe()
    seen: list[str | None] = []

    async def authorize(context: tether.RequestContext) -> bool:
        seen.append(context.authorization)
        return context.operation != "tether.Conformance.echo_list"

    manager = RpcConformance().backend_manager(probe, authorize=authorize)
    raised: list[BaseException] = []
    server = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[str]) -> None:
        with server:
            await http.serve(manager, "127.0.0.1", 0, task_status=task_status)

    async def failing(call: Any) -> None:
        try:
            await call
        except Exception as exc:
            raised.append(exc)
        else:
            pytest.fail(f"{call} succeeded")

    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(run)
            async with http.connect(
                url, interfaces=[ConformanceInterface], authorization=credential, retry=QUICK
            ) as backend:
                client = backend.get_client(ConformanceInterface)
                assert await client.add(1, 2) == 3
                await failing(client.echo_list([]))  # 401 from the hook
                await failing(client.add("x", 1))  # type: ignore[arg-type]  # refused locally
                await failing(client.big(100 * 1024 * 1024))  # 413 from the server
                async with trio.open_nursery() as calls:
                    calls.start_soon(failing, client.wait_until_cancelled("k"))
                    await probe.wait("started:k")
                    server.cancel()  # the backend goes away mid-call
                await failing(client.add(1, 2))  # nothing listens any more
    assert seen[0] == credential  # it was sent
    assert len(raised) == 5
    texts = texts_of_records(records)
    for exc in raised:
        texts += texts_of(exc)
    assert_secret_nowhere(texts)


async def test_an_ipc_session_token_is_repeated_nowhere_when_the_session_fails(
    records: list[logging.LogRecord],
) -> None:
    # The session token is IPC over HTTP's credential: whoever holds it speaks
    # for the frontend.
    app = HttpApp(None, ipc=IpcConformance().backend_ipc())
    server = trio.CancelScope()
    raised: list[BaseException] = []

    async def run(task_status: trio.TaskStatus[str]) -> None:
        config = hypercorn.config.Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        with server:
            await hypercorn.trio.serve(app, config, task_status=task_status)  # type: ignore[arg-type]

    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            [origin] = await nursery.start(run)
            connect = http.connect_ipc(f"{origin}/rpc", channels=[ConformanceIpc], retry=QUICK)
            async with connect as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                assert await proxy.add(1, 2) == 3
                assert app._ipc is not None
                [session] = app._ipc._sessions.values()
                token = session.token
                server.cancel()  # the backend goes away
                await frontend.wait_closed()
                for call in (proxy.add(1, 2), proxy.wait_until_cancelled("k")):
                    try:
                        await call
                    except Exception as exc:
                        raised.append(exc)
    assert len(raised) == 2
    texts = texts_of_records(records)
    for exc in raised:
        texts += texts_of(exc)
    leaks = [text for text in texts if token in text]
    assert not leaks, f"the session token leaked: {leaks[0][:300]!r}"


@given(st.text())
@example("")
@example("a\tb")
@example("\ta")
@example(" a")
@example("a ")
@example("caf\xe9 \xa0")
@example("a\x85b")
def test_a_header_value_is_refused_exactly_when_http_cannot_carry_it(value: str) -> None:
    """RFC 9110 section 5.5: no control character but an inner tab, no space or tab at
    either end. (The client looks at the usual value without its regex: same answer.)"""
    carriable = value == value.strip(" \t") and all(
        char == "\t" or not (char < " " or char == "\x7f") for char in value
    )
    if carriable:
        assert _header_value("field", value) == value.encode()
    else:
        with pytest.raises(InvalidRequest, match="field"):
            _header_value("field", value)
