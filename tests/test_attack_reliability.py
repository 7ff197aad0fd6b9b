"""An attacker's and a harsh user's tests of issue 15: never twice, never forever.

Real servers on 127.0.0.1 (port 0), the real clients. Where a test needs what
sits between a client and a backend in production (a load balancer that
answers 503 while its targets restart, or goes away), `Balancer` stands in:
a real TCP relay that answers chosen requests itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

import tether
from tether.transports import http

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
