"""RetryPolicy, the retry decision, connection state, and FaultyStream, each on its own."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

import tether
from tether.runtime import (
    NO_RETRY,
    BinaryMessage,
    CallMayHaveRun,
    CallNotSent,
    ConnectError,
    ConnectionClosed,
    ConnectionState,
    OperationPolicy,
    RetryPolicy,
    StateWatch,
    Unavailable,
)
from tether.runtime._retry import check_retry, retry_delay
from tether.testing import FaultyStream, faulty_streams
from tether.transports.memory._streams import stream_pair

IDEMPOTENT = OperationPolicy(idempotent=True)
PLAIN = OperationPolicy()


def test_backoff_grows_to_its_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=0)
    assert [policy.backoff(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_stays_within_its_share() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=1.0, jitter=0.2)
    waits = [policy.backoff(1) for _ in range(500)]
    assert all(0.8 <= w <= 1.2 for w in waits)
    assert max(waits) - min(waits) > 0.1  # it does vary


def test_retry_after_is_the_minimum_wait() -> None:
    policy = RetryPolicy(initial_backoff=0.1, jitter=0)
    assert policy.backoff(1, retry_after=3.0) == 3.0
    assert policy.backoff(1, retry_after=0.01) == 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": True},
        {"attempts": 1.5},
        {"initial_backoff": -1},
        {"max_backoff": math.nan},
        {"jitter": 1.5},
        {"multiplier": 0.5},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_none_means_no_retry_and_other_values_are_refused() -> None:
    assert check_retry(None) is NO_RETRY
    with pytest.raises(TypeError, match="RetryPolicy or None"):
        check_retry(3)
    assert tether.runtime.ClientOptions(retry=None).retry is NO_RETRY


async def test_what_is_retried() -> None:
    policy = RetryPolicy(jitter=0)
    not_run = [
        ConnectError("refused"),
        CallNotSent("lost before sending"),
        Unavailable("busy", remote=True),
    ]
    for exc in not_run:
        assert retry_delay(exc, policy, PLAIN, 1) == 0.1
    may_have_run = CallMayHaveRun("lost after sending")
    assert retry_delay(may_have_run, policy, PLAIN, 1) is None
    assert retry_delay(may_have_run, policy, IDEMPOTENT, 1) == 0.1
    # Never retried: a plain close (this side's), a local Unavailable, an answer.
    for exc in [
        ConnectionClosed("closed"),
        Unavailable("local", remote=False),
        tether.RemoteError("boom"),
        tether.DeadlineExceeded("late", remote=True),
    ]:
        assert retry_delay(exc, policy, IDEMPOTENT, 1) is None


async def test_attempts_are_capped() -> None:
    policy = RetryPolicy(attempts=3, jitter=0)
    exc = ConnectError("refused")
    assert retry_delay(exc, policy, PLAIN, 2) is not None
    assert retry_delay(exc, policy, PLAIN, 3) is None
    assert retry_delay(exc, NO_RETRY, PLAIN, 1) is None


async def test_a_wait_past_the_deadline_is_not_taken() -> None:
    policy = RetryPolicy(initial_backoff=1.0, jitter=0)
    exc = Unavailable("busy", retry_after=5.0, remote=True)
    with trio.move_on_after(4.0):
        assert retry_delay(exc, policy, PLAIN, 1) is None
        await trio.lowlevel.checkpoint()
    with trio.move_on_after(6.0):
        assert retry_delay(exc, policy, PLAIN, 1) == 5.0
        await trio.lowlevel.checkpoint()


async def test_state_watch_wakes_on_change_and_closed_is_final() -> None:
    watch = StateWatch()
    seen: list[ConnectionState] = []

    async def follow() -> None:
        state = watch.state
        while state is not ConnectionState.CLOSED:
            state = await watch.wait_change(state)
            seen.append(state)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            watch.set(ConnectionState.RECONNECTING, "lost")
            await trio.testing.wait_all_tasks_blocked()
            watch.set(ConnectionState.CONNECTED)
            await trio.testing.wait_all_tasks_blocked()
            watch.set(ConnectionState.CLOSED, "bye")
            watch.set(ConnectionState.CONNECTED)  # ignored: closed is final
    assert seen == [ConnectionState.RECONNECTING, ConnectionState.CONNECTED, ConnectionState.CLOSED]
    assert watch.state is ConnectionState.CLOSED
    assert watch.reason == "bye"


async def test_wait_change_returns_at_once_when_already_changed() -> None:
    watch = StateWatch()
    watch.set(ConnectionState.RECONNECTING)
    with trio.fail_after(1):
        assert await watch.wait_change(ConnectionState.CONNECTED) is ConnectionState.RECONNECTING


async def test_faulty_stream_drops_delays_and_cuts() -> None:
    left, right = stream_pair(thread=False, max_message_size=1 << 20, max_buffer_bytes=1 << 20)
    faulty = FaultyStream(left)
    with trio.fail_after(5):
        faulty.drop(1, match=b"two")
        for word in (b"one", b"two", b"three"):
            await faulty.send_message(word)
        assert await right.receive_message() == b"one"
        assert await right.receive_message() == b"three"
        assert (faulty.sent, faulty.dropped) == (2, 1)

        faulty.cut_after(1, direction="receive", match=b"lost")
        await right.send_message(b"kept")
        await right.send_message(b"lost")
        assert await faulty.receive_message() == b"kept"
        with pytest.raises(ConnectionClosed, match="cut by FaultyStream"):
            await faulty.receive_message()
        with pytest.raises(ConnectionClosed):
            await faulty.send_message(b"after")
        # The peer sees the connection gone, as after a reset.
        with pytest.raises(ConnectionClosed):
            await right.receive_message()
        assert faulty.cuts == 1


async def test_faulty_stream_matches_binary_messages() -> None:
    left, right = stream_pair(thread=False, max_message_size=1 << 20, max_buffer_bytes=1 << 20)
    faulty = FaultyStream(left)
    faulty.drop(1, match=b"needle")
    with trio.fail_after(5):
        await faulty.send_message(BinaryMessage(b'{"t":"needle"}', []))
        await faulty.send_message(b"next")
        assert await right.receive_message() == b"next"


async def test_faulty_stream_delay_holds_messages(autojump_clock: trio.abc.Clock) -> None:
    left, right = stream_pair(thread=False, max_message_size=1 << 20, max_buffer_bytes=1 << 20)
    faulty = FaultyStream(left)
    faulty.delay(3.0)
    start = trio.current_time()
    await faulty.send_message(b"late")
    assert await right.receive_message() == b"late"
    assert trio.current_time() - start >= 3.0


class Probe(tether.RpcInterface):
    interface_name = "FaultProbe"
    interface_version = "1.0.0"

    async def ping(self) -> int: ...


class ProbeImpl(Probe):
    async def ping(self) -> int:
        return 1


async def test_faulty_streams_wraps_every_connection_opened_in_the_block() -> None:
    manager = tether.RpcManager()
    manager.register_impl(Probe, ProbeImpl())
    with trio.fail_after(10), faulty_streams() as faults:
        async with tether.transports.memory.connect(manager, interfaces=[Probe]) as backend:
            assert await backend.get_client(Probe).ping() == 1
            assert faults.latest.sent == 2  # hello, call
            faults.latest.cut()
            with pytest.raises(ConnectionClosed):
                await backend.get_client(Probe).ping()
    # Outside the block, streams are what they were.
    async with tether.transports.memory.connect(manager, interfaces=[Probe]) as backend:
        assert await backend.get_client(Probe).ping() == 1
    assert len(faults.streams) == 1
    with pytest.raises(LookupError):
        _ = type(faults)().latest


class Flaky(tether.RpcInterface):
    interface_name = "FaultFlaky"
    interface_version = "1.0.0"

    async def work(self) -> int: ...


class FlakyImpl(Flaky):
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.activities: list[str] = []

    async def work(self) -> int:
        ctx = tether.current_context()
        assert ctx is not None
        self.activities.append(ctx.activity_id)
        if len(self.activities) <= self.failures:
            raise Unavailable("busy, come back", retry_after=0.5)
        return len(self.activities)


async def test_a_refused_call_is_retried_with_the_same_activity(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    impl = FlakyImpl(failures=2)
    manager = tether.RpcManager()
    manager.register_impl(Flaky, impl)
    caplog.set_level("INFO", logger="tether.client")
    async with tether.transports.memory.connect(manager, interfaces=[Flaky]) as backend:
        start = trio.current_time()
        with tether.activity() as ctx:
            assert await backend.get_client(Flaky).work() == 3
        activity_id = ctx.activity_id
        # Retry-After (0.5 s) is the minimum wait, twice.
        assert trio.current_time() - start >= 1.0
    assert impl.activities == [activity_id] * 3
    retries = [r for r in caplog.records if r.getMessage().startswith("retrying FaultFlaky.work")]
    assert len(retries) == 2
    assert "(attempt 2)" in retries[0].getMessage()
    assert "(attempt 3)" in retries[1].getMessage()
    assert all(getattr(r, "activity_id", None) == activity_id for r in retries)


async def test_retries_stop_before_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    impl = FlakyImpl(failures=100)
    manager = tether.RpcManager()
    manager.register_impl(Flaky, impl)
    async with tether.transports.memory.connect(manager, interfaces=[Flaky]) as backend:
        start = trio.current_time()
        with trio.fail_after(1.9), pytest.raises(Unavailable):
            await backend.get_client(Flaky).work()
        # Attempts at 0, 0.5, 1.0 and 1.5 s (Retry-After over the backoff); the
        # next wait (0.8 s, give or take a fifth) would pass the deadline.
        assert trio.current_time() - start < 1.9
    assert len(impl.activities) == 4


async def test_retry_none_sends_once(autojump_clock: trio.abc.Clock) -> None:
    impl = FlakyImpl(failures=1)
    manager = tether.RpcManager()
    manager.register_impl(Flaky, impl)
    async with tether.transports.memory.connect(manager, interfaces=[Flaky]) as backend:
        backend_options = backend.options
        assert backend_options.retry == RetryPolicy()
    # ClientOptions(retry=None) is what `connect(retry=None)` passes.
    assert tether.runtime.ClientOptions(retry=None).retry.attempts == 1
