"""An attacker's and a harsh user's tests of issue 15: never twice, never forever.

Real servers on 127.0.0.1 (port 0), the real clients. Where a test needs what
sits between a client and a backend in production (a load balancer that
answers 503 while its targets restart, or goes away), `Balancer` stands in:
a real TCP relay that answers chosen requests itself.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio

import tether
from tether.transports import http, websocket

TIMEOUT = 10
#: Fast retries, so a test does not wait out the default backoff.
FAST = tether.RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.05, jitter=0)


class Balancer:
    """A relay in front of a backend, as a load balancer is.

    Each client connection is relayed to the backend, except that a request
    whose request line contains `answer_match` is answered here with
    `answer` (while `answers_left` lasts), and `go_down()` closes the listener
    and every connection, as a balancer that lost its last target does.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.answer_match = b""
        self.answer = b""
        self.answers_left = 0
        self.answered = trio.Event()
        self.seen_match = b""
        self.seen = trio.Event()
        self._scope = trio.CancelScope()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        with self._scope:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self._relay, listeners, handler_nursery=nursery)

    def go_down(self) -> None:
        self._scope.cancel()

    async def _relay(self, client: trio.SocketStream) -> None:
        server: trio.SocketStream | None = None
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    data = await client.receive_some(65536)
                    if not data:
                        break
                    line = data.partition(b"\r\n")[0]
                    if self.seen_match and self.seen_match in line:
                        self.seen.set()
                    if self.answers_left and self.answer_match in line:
                        self.answers_left -= 1
                        await client.send_all(self.answer)
                        self.answered.set()
                        break
                    if server is None:
                        server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                        nursery.start_soon(self._pump, server, client, nursery.cancel_scope)
                    await server.send_all(data)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
                if server is not None:
                    await server.aclose()

    @staticmethod
    async def _pump(
        server: trio.SocketStream, client: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await server.receive_some(65536):
                await client.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()


@asynccontextmanager
async def _behind_balancer(manager: tether.RpcManager) -> AsyncIterator[tuple[str, Balancer]]:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(http.serve, manager, "127.0.0.1", 0)
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        balancer = Balancer(port)
        await nursery.start(balancer.serve)
        yield url.replace(f":{port}/", f":{balancer.port}/"), balancer
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# Long-running operations over HTTP: once accepted (202), never sent again


class Jobs(tether.RpcInterface):
    interface_name = "attack.Jobs"
    interface_version = "1.0.0"

    @tether.long_running(poll_interval=0.02, ready_within=0.05, keep_result=30.0)
    async def launch(self) -> int: ...


class JobsImpl(Jobs):
    def __init__(self) -> None:
        self.runs = 0
        self.release = trio.Event()

    async def launch(self) -> int:
        self.runs += 1
        await self.release.wait()
        return self.runs


def _jobs(impl: JobsImpl) -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Jobs, impl)
    return manager


def _plain_answer(status: bytes, body: bytes, *headers: bytes) -> bytes:
    """A whole HTTP/1.1 answer as a balancer writes it (not tether's error body)."""
    head = b"".join(h + b"\r\n" for h in headers)
    return (
        b"HTTP/1.1 %s\r\ncontent-type: text/html\r\n%scontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, head, len(body), body)
    )


_BALANCER_503 = _plain_answer(
    b"503 Service Unavailable", b"<h1>no healthy target</h1>", b"retry-after: 0"
)


async def test_a_503_to_a_poll_does_not_run_the_long_running_call_again() -> None:
    """A balancer answering a poll 503 (its targets restarting) is not a 503 to
    the call: the call was accepted (202) and runs. The client polls again; it
    must not POST the non-idempotent call a second time."""
    impl = JobsImpl()
    with trio.fail_after(TIMEOUT):
        async with _behind_balancer(_jobs(impl)) as (url, balancer):
            balancer.answer_match = b"/operations/"
            balancer.answer = _BALANCER_503
            balancer.answers_left = 1
            connect = http.connect(url, interfaces=[Jobs], retry=FAST)
            async with connect as backend, trio.open_nursery() as nursery:
                result: list[int] = []

                async def call() -> None:
                    result.append(await backend.get_client(Jobs).launch())

                nursery.start_soon(call)
                await balancer.answered.wait()
                impl.release.set()
            assert result == [1]
            assert impl.runs == 1


async def test_polls_that_cannot_reach_the_backend_end_in_call_may_have_run() -> None:
    """The call was accepted (202) and started: when the polls' tries are spent
    the failure says it may have run, not a `ConnectError` ("certainly not run")
    that the retry loop would answer by sending the call again."""
    impl = JobsImpl()
    with trio.fail_after(TIMEOUT):
        async with _behind_balancer(_jobs(impl)) as (url, balancer):
            balancer.seen_match = b"/operations/"
            connect = http.connect(url, interfaces=[Jobs], retry=FAST)
            async with connect as backend, trio.open_nursery() as nursery:
                failure: list[BaseException] = []

                async def call() -> None:
                    try:
                        await backend.get_client(Jobs).launch()
                    except tether.TetherError as exc:
                        failure.append(exc)

                nursery.start_soon(call)
                await balancer.seen.wait()
                balancer.go_down()
            assert len(failure) == 1
            assert isinstance(failure[0], tether.CallMayHaveRun), repr(failure[0])
            assert "may have run" in str(failure[0])
            assert impl.runs == 1


# ---------------------------------------------------------------------------
# Retry-After: honoured as a minimum, never as a reason to hang


class Busy(tether.RpcInterface):
    interface_name = "attack.Busy"
    interface_version = "1.0.0"

    async def work(self) -> str: ...


class BusyImpl(Busy):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        self.calls = 0

    async def work(self) -> str:
        self.calls += 1
        raise tether.Unavailable("down for maintenance", retry_after=self.retry_after)


@asynccontextmanager
async def _served_busy(transport: str, impl: BusyImpl) -> AsyncIterator[str]:
    manager = tether.RpcManager()
    manager.register_impl(Busy, impl)
    serve = http.serve if transport == "http" else websocket.serve
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve, manager, "127.0.0.1", 0)
        nursery.cancel_scope.cancel()


async def _without_deadline(call: Callable[[], Awaitable[object]]) -> object:
    """Await `call()` as a caller with no deadline does (the test's own cap is
    hidden by a shield), stopped by a watchdog after TIMEOUT: a hang then
    fails the test rather than sleeping on."""
    outcome: list[object] = []
    async with trio.open_nursery() as nursery:
        with trio.CancelScope(shield=True) as shielded:

            async def watchdog() -> None:
                await trio.sleep(TIMEOUT)
                shielded.cancel()

            nursery.start_soon(watchdog)
            assert trio.current_effective_deadline() == math.inf
            try:
                outcome.append(await call())
            except tether.TetherError as exc:
                outcome.append(exc)
        nursery.cancel_scope.cancel()
    assert outcome, f"still waiting after {TIMEOUT} s: the call hangs"
    return outcome[0]


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_a_retry_after_of_an_hour_is_not_waited_by_a_call_without_deadline(
    transport: str,
) -> None:
    """A backend that says "come back in an hour" (Retry-After: 3600, forever)
    must not hold a call with no deadline for hours of retries: the wait is over
    the policy's `max_retry_after`, so the refusal is the answer, at once."""
    impl = BusyImpl(3600)
    connect = http.connect if transport == "http" else websocket.connect
    with trio.fail_after(TIMEOUT + 5):
        async with _served_busy(transport, impl) as url, connect(url, interfaces=[Busy]) as backend:
            failure = await _without_deadline(backend.get_client(Busy).work)
    assert isinstance(failure, tether.Unavailable), repr(failure)
    assert failure.retry_after == 3600
    assert impl.calls == 1
    assert "max_retry_after" in " ".join(getattr(failure, "__notes__", []))


async def test_a_retry_after_within_the_bound_is_still_honoured() -> None:
    """The bound does not turn retries off: a short Retry-After is waited, then
    the call is tried again (all tries refused here: attempts calls in all)."""
    impl = BusyImpl(0.01)
    policy = tether.RetryPolicy(attempts=3, initial_backoff=0.001, jitter=0)
    with trio.fail_after(TIMEOUT):
        async with (
            _served_busy("websocket", impl) as url,
            websocket.connect(url, interfaces=[Busy], retry=policy) as backend,
        ):
            with pytest.raises(tether.Unavailable):
                await backend.get_client(Busy).work()
    assert impl.calls == 3


@pytest.mark.parametrize(
    "value", [-1.0, float("nan"), float("inf"), 0.0, 1e300], ids=["neg", "nan", "inf", "0", "huge"]
)
def test_retry_delay_never_sleeps_a_garbage_retry_after(value: float) -> None:
    """A Retry-After from a hostile or broken server: negative or NaN is ignored
    (the backoff stands), infinite or huge ends the retries; never a NaN wait."""
    from tether.runtime._policies import OperationPolicy
    from tether.runtime._retry import retry_delay

    async def main() -> float | None:
        return retry_delay(
            tether.Unavailable("busy", retry_after=value, remote=True),
            tether.RetryPolicy(jitter=0),
            OperationPolicy(),
            1,
        )

    wait = trio.run(main)
    if value in (float("inf"), 1e300):
        assert wait is None
    else:
        assert wait == pytest.approx(0.1)


class Flapping(tether.RpcInterface):
    interface_name = "AttackFlapping"
    interface_version = "1.0.0"

    async def ping(self) -> int: ...


async def test_a_backend_that_drops_every_connection_at_once_is_given_up() -> None:
    """A server that completes the handshake and drops the socket at once, every
    time, ends the connection once the tries of the outage are spent: it is not
    redialled every 0.1 s for ever."""
    import trio_websocket

    from tether.runtime._protocol import PROTOCOL_VERSION, InterfaceInfo, Welcome, encode

    accepted = 0

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        nonlocal accepted
        accepted += 1
        ws = await request.accept()
        await ws.get_message()  # the hello
        welcome = Welcome(
            PROTOCOL_VERSION,
            f"s{accepted}",
            interfaces={"AttackFlapping": InterfaceInfo("1.0.0", ("ping",))},
        )
        await ws.send_message(encode(welcome).decode())
        await ws.aclose()

    retry = tether.RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.02)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
            )
            url = f"ws://127.0.0.1:{server.port}/"
            async with websocket.connect(url, interfaces=[Flapping], retry=retry) as backend:
                state = backend.state
                while state is not tether.ConnectionState.CLOSED:
                    state = await backend.wait_state_change(state)
                with pytest.raises(tether.ConnectError, match="could not reconnect"):
                    await backend.get_client(Flapping).ping()
            nursery.cancel_scope.cancel()
    # Each connection lost as soon as made is a failed try of the one outage:
    # the first connection, then redials until 4 tries have failed.
    assert accepted == 4


async def test_a_poll_answer_asking_to_wait_an_hour_is_waited_no_longer_than_max_retry_after() -> (
    None
):
    """A 202 to a poll whose `Retry-After` asks for an hour (a proxy, or a
    hostile server) holds the next poll at most `retry.max_retry_after`, not an
    hour: a call without a deadline must not hang on it."""
    impl = JobsImpl()
    accepted = _plain_answer(
        b"202 Accepted", b'{"status":"running"}', b"retry-after: 3600", b"cache-control: no-store"
    )
    retry = tether.RetryPolicy(attempts=3, initial_backoff=0.01, max_retry_after=0.2)
    with trio.fail_after(TIMEOUT):
        async with _behind_balancer(_jobs(impl)) as (url, balancer):
            balancer.answer_match = b"/operations/"
            balancer.answer = accepted
            balancer.answers_left = 1
            connect = http.connect(url, interfaces=[Jobs], retry=retry)
            async with connect as backend, trio.open_nursery() as nursery:
                result: list[int] = []
                done = trio.Event()

                async def call() -> None:
                    result.append(await backend.get_client(Jobs).launch())
                    done.set()

                nursery.start_soon(call)
                await balancer.answered.wait()
                impl.release.set()
                with trio.fail_after(3):  # not 3600 s
                    await done.wait()
            assert result == [1]
