"""Several backends for one interface group: `connect([url, ...])` and `BackendGroup`.

Real servers (http.serve on hypercorn, websocket.serve) on 127.0.0.1, started,
stopped and started again on the same port by each test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import tether
from tether.runtime import BackendGroup, CallMayHaveRun, ConnectError, ConnectionState
from tether.testing import faulty_streams
from tether.transports import http, websocket

TIMEOUT = 20.0
#: Quick backoffs: a stopped member is tried again within 50 ms.
QUICK = tether.RetryPolicy(attempts=60, initial_backoff=0.01, max_backoff=0.05)
KINDS = ["http", "websocket"]


class Where(tether.RpcInterface):
    interface_name = "tests.Where"
    interface_version = "1.0.0"

    async def where(self) -> str: ...

    async def first_hangs(self) -> str: ...

    @tether.idempotent
    async def first_hangs_idempotent(self) -> str: ...

    def names(self, count: int) -> tether.Stream[str]:
        """The backend's name `count` times."""


class WhereIpc(tether.IpcInterface):
    channel_name = "tests.where"
    version = "1.0.0"

    async def where(self) -> str: ...


def where_ipc(name: str) -> tether.BackendIpc:
    """A BackendIpc whose sessions answer `where` with the backend's name."""

    class WhereHandler(tether.IpcHandler, WhereIpc):
        async def where(self) -> str:
            return name

    backend_ipc = tether.BackendIpc()
    backend_ipc.register(WhereHandler)
    return backend_ipc


class Shared:
    """What the in-process backends of one test share: who took a call first."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.hung: str | None = None
        self.hanging = trio.Event()


class WhereImpl(Where):
    def __init__(self, name: str, shared: Shared) -> None:
        self.name = name
        self.shared = shared

    async def where(self) -> str:
        self.shared.calls[self.name] += 1
        return self.name

    async def _first_hangs(self) -> str:
        self.shared.calls[self.name] += 1
        if self.shared.hung is None:
            self.shared.hung = self.name
            self.shared.hanging.set()
            await trio.sleep_forever()
        return self.name

    async def first_hangs(self) -> str:
        return await self._first_hangs()

    async def first_hangs_idempotent(self) -> str:
        return await self._first_hangs()

    async def names(self, count: int) -> AsyncIterator[str]:
        self.shared.calls[self.name] += 1
        for _ in range(count):
            yield self.name


class Backend:
    """One in-process backend that a test can stop and start again on its port."""

    def __init__(self, nursery: trio.Nursery, kind: str, name: str, shared: Shared) -> None:
        self.nursery = nursery
        self.serve: Callable[..., Any] = http.serve if kind == "http" else websocket.serve
        self.manager = tether.RpcManager()
        self.manager.register_impl(Where, WhereImpl(name, shared))
        self.ipc = where_ipc(name)
        self.port = 0
        self.url = ""
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    async def start(self) -> None:
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()
        self.url = await self.nursery.start(self._run)
        self.port = int(self.url.split(":")[2].split("/")[0])

    async def _run(self, task_status: trio.TaskStatus[str]) -> None:
        try:
            with self.scope:
                await self.serve(
                    self.manager, "127.0.0.1", self.port, ipc=self.ipc, task_status=task_status
                )
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


@asynccontextmanager
async def backends(kind: str, count: int = 2) -> AsyncIterator[tuple[list[Backend], Shared]]:
    shared = Shared()
    async with trio.open_nursery() as nursery:
        started = [Backend(nursery, kind, f"b{i}", shared) for i in range(count)]
        for backend in started:
            await backend.start()
        yield started, shared
        nursery.cancel_scope.cancel()


def connect(kind: str, urls: list[str], **options: Any) -> Any:
    return (http.connect if kind == "http" else websocket.connect)(
        urls, interfaces=[Where], **options
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("balance", ["least-in-flight", "round-robin"])
async def test_calls_are_spread_over_every_backend(kind: str, balance: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            backends(kind, 3) as (servers, shared),
            connect(kind, [s.url for s in servers], balance=balance) as group,
        ):
            assert isinstance(group, BackendGroup)
            # The runtime-level route takes the group like any backend.
            manager = tether.RpcManager()
            manager.initialize_client([Where], group)
            client = manager.get_client(Where)
            answers = Counter([await client.where() for _ in range(30)])
            assert answers == shared.calls == {"b0": 10, "b1": 10, "b2": 10}
            assert group.state is ConnectionState.CONNECTED
        assert group.state is ConnectionState.CLOSED


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stopped_backend_is_taken_out_and_gets_calls_again_when_back(kind: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            backends(kind) as (servers, shared),
            connect(kind, [s.url for s in servers], retry=QUICK) as group,
        ):
            client = group.get_client(Where)
            assert Counter([await client.where() for _ in range(10)]) == {"b0": 5, "b1": 5}
            await servers[1].stop()
            shared.calls.clear()
            # Not idempotent: every call succeeds because the failed tries never ran.
            answers = [await client.where() for _ in range(50)]
            assert answers == ["b0"] * 50
            assert shared.calls == {"b0": 50}
            assert group.state is ConnectionState.CONNECTED

            await servers[1].start()  # on the same port
            for _ in range(2000):
                assert await client.where() in ("b0", "b1")
                if shared.calls["b1"]:
                    break
            assert shared.calls["b1"] >= 1
            shared.calls.clear()
            await wait_spread(client, shared)


async def wait_spread(client: Where, shared: Shared) -> None:
    """Calls go to both again once the one that came back answered."""
    answers = Counter([await client.where() for _ in range(20)])
    assert answers == shared.calls
    assert answers["b0"] >= 5
    assert answers["b1"] >= 5


@pytest.mark.parametrize("kind", KINDS)
async def test_a_call_that_may_have_run_is_not_failed_over_unless_idempotent(kind: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            backends(kind) as (servers, shared),
            connect(kind, [s.url for s in servers], retry=QUICK) as group,
        ):
            client = group.get_client(Where)
            by_name = {"b0": servers[0], "b1": servers[1]}
            raised: list[BaseException] = []

            async def not_idempotent() -> None:
                try:
                    await client.first_hangs()
                except CallMayHaveRun as exc:
                    raised.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(not_idempotent)
                await shared.hanging.wait()
                assert shared.hung is not None
                await by_name[shared.hung].stop()
            [exc] = raised
            assert "may have run on the backend; it is not idempotent" in str(exc)
            other = "b1" if shared.hung == "b0" else "b0"
            assert shared.calls == {shared.hung: 1}  # never sent to the other one
            assert shared.calls[other] == 0

            # Idempotent: the same fault fails over to the other backend.
            await by_name[shared.hung].start()
            shared.hung, shared.hanging = None, trio.Event()
            shared.calls.clear()
            answer: list[str] = []
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    answer.append(await client.first_hangs_idempotent())

                nursery.start_soon(call)
                await shared.hanging.wait()
                hung = shared.hung
                assert hung is not None
                await by_name[hung].stop()
            assert answer == ["b1" if hung == "b0" else "b0"]


@pytest.mark.parametrize("kind", KINDS)
async def test_connect_with_every_backend_down_names_them(kind: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with backends(kind) as (servers, _):
            for server in servers:
                await server.stop()
            urls = [s.url for s in servers]
            with pytest.raises(ConnectError) as raised:
                async with connect(kind, urls, retry=None):
                    pytest.fail("connected with every backend down")  # pragma: no cover
    message = str(raised.value)
    assert message.startswith("could not connect to any backend of the group")
    for url in urls:
        assert url in message


@pytest.mark.parametrize("kind", KINDS)
async def test_a_backend_down_at_connect_gets_calls_once_it_is_up(kind: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with backends(kind) as (servers, shared):
            await servers[1].stop()
            async with connect(kind, [s.url for s in servers], retry=QUICK) as group:
                client = group.get_client(Where)
                assert [await client.where() for _ in range(5)] == ["b0"] * 5
                await servers[1].start()
                state = group.members[1].state
                while state is not ConnectionState.CONNECTED:
                    state = await group.members[1].wait_state_change(state)
                shared.calls.clear()
                await wait_spread(client, shared)


async def test_the_group_state_follows_its_members() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            backends("websocket") as (servers, _),
            connect("websocket", [s.url for s in servers], retry=QUICK) as group,
        ):
            assert group.state is ConnectionState.CONNECTED
            await servers[0].stop()
            assert group.state is ConnectionState.CONNECTED  # the other one is
            await servers[1].stop()
            state = await group.wait_state_change(ConnectionState.CONNECTED)
            assert state is ConnectionState.RECONNECTING
            await servers[0].start()
            state = await group.wait_state_change(state)
            assert state is ConnectionState.CONNECTED
        assert group.state is ConnectionState.CLOSED


async def test_a_stream_stays_on_one_backend() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            backends("websocket") as (servers, shared),
            connect("websocket", [s.url for s in servers]) as group,
        ):
            client = group.get_client(Where)
            for _ in range(4):
                async with tether.open_stream(client.names(5)) as names:
                    items = [name async for name in names]
                assert len(items) == 5
                assert len(set(items)) == 1  # every item from the one backend
            assert shared.calls == {"b0": 2, "b1": 2}  # and the streams were spread


async def test_balance_needs_a_list_and_a_known_name() -> None:
    with pytest.raises(ValueError, match="list of URLs"):
        http.connect("http://127.0.0.1:1/rpc", interfaces=[Where], balance="round-robin")
    with pytest.raises(ValueError, match="balance must be one of"):
        http.connect(["http://127.0.0.1:1/rpc"], interfaces=[Where], balance="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one backend"):
        BackendGroup([])


def connect_ipc(kind: str, urls: list[str], **options: Any) -> Any:
    return (http.connect_ipc if kind == "http" else websocket.connect_ipc)(
        urls, channels=[WhereIpc], **options
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_ipc_sessions_spread_and_each_stays_on_the_backend_that_opened_it(kind: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            backends(kind) as (servers, _),
            connect_ipc(kind, [s.url for s in servers]) as first,
            connect_ipc(kind, [s.url for s in servers]) as second,
        ):
            # Each new session begins at the next URL: two sessions, two backends.
            homes = [await first.proxy(WhereIpc).where(), await second.proxy(WhereIpc).where()]
            assert sorted(homes) == ["b0", "b1"]
            for _ in range(10):
                assert await first.proxy(WhereIpc).where() == homes[0]
                assert await second.proxy(WhereIpc).where() == homes[1]
            # The other backend going away does not move a session.
            by_name = {"b0": servers[0], "b1": servers[1]}
            await by_name[homes[1]].stop()
            for _ in range(5):
                assert await first.proxy(WhereIpc).where() == homes[0]
            assert first.state is ConnectionState.CONNECTED


async def test_an_ipc_session_resumes_on_the_backend_that_opened_it() -> None:
    with trio.fail_after(TIMEOUT):
        async with backends("websocket") as (servers, _):
            with faulty_streams() as faults:
                async with connect_ipc("websocket", [s.url for s in servers]) as frontend:
                    home = await frontend.proxy(WhereIpc).where()
                    session_id = frontend.session_id
                    for round_ in range(1, 4):
                        assert faults.latest is not None
                        faults.latest.cut("a network blip")
                        await faults.wait_opened(1 + round_)  # the resume's connection
                        assert await frontend.proxy(WhereIpc).where() == home
                        assert frontend.session_id == session_id
                    assert frontend.state is ConnectionState.CONNECTED


@pytest.mark.parametrize("kind", KINDS)
async def test_an_ipc_session_opens_on_a_backend_that_is_up(kind: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with backends(kind) as (servers, _):
            await servers[0].stop()
            urls = [s.url for s in servers]
            for _ in range(2):  # whichever URL a session begins at
                async with connect_ipc(kind, urls) as frontend:
                    assert await frontend.proxy(WhereIpc).where() == "b1"
            await servers[1].stop()
            with pytest.raises(ConnectError) as raised:
                async with connect_ipc(kind, urls, retry=None):
                    pytest.fail("opened a session with every backend down")  # pragma: no cover
    assert str(raised.value).startswith("could not open the IPC session on any backend")
    for url in urls:
        assert url in str(raised.value)
