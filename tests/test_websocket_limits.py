"""`max_connections` holds under a burst, on both servers.

200 handshakes at once against a limit of 50 let exactly 50 sessions in, and
the others are refused with 503: each handshake takes its place before
anything awaits (the authorization hook, the accept), and gives it back when
it is refused or its connection ends.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_websocket import VARIANTS, Wire, make_manager, served

from tether.runtime import ConnectError
from tether.testing import Probe
from tether.transports import websocket

KiB = 1024
MiB = 1024 * KiB


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Which server: trio-websocket's (`websocket.serve`) or hypercorn's (`http.serve`)."""
    param: str = request.param
    return param


# ---------------------------------------------------------------------------
# max_connections under a burst


async def test_max_connections_holds_under_a_burst_of_handshakes(variant: str) -> None:
    limit, burst = 50, 200
    probe = Probe()
    manager, impl = make_manager(probe)
    outcomes: list[int | str] = []  # "in", or the refusal's HTTP status
    all_tried = trio.Event()

    def tried(outcome: int | str) -> None:
        outcomes.append(outcome)
        if len(outcomes) == burst:
            all_tried.set()

    async def one(url: str, key: str) -> None:
        try:
            async with websocket.connect(url, interfaces=[Wire], connect_timeout=30) as backend:
                tried("in")
                # Each session admitted runs one call on the server, held
                # until every handshake of the burst has had its answer.
                await backend.get_client(Wire).hold(key)
        except ConnectError as exc:
            tried(exc.status_code or "no status")

    with trio.fail_after(60):
        async with (
            served(variant, manager, max_connections=limit) as url,
            trio.open_nursery() as nursery,
        ):
            for n in range(burst):
                nursery.start_soon(one, url, f"c{n}")
            await all_tried.wait()
            admitted = outcomes.count("in")
            # Counted on the server: the calls of the admitted sessions.
            await probe.wait(f"running:{admitted}")
            await trio.testing.wait_all_tasks_blocked()
            assert impl.running == admitted
            impl.release.set()
    assert impl.most <= limit, f"{impl.most} sessions at once past a limit of {limit}"
    assert admitted == limit
    assert sorted(set(outcomes), key=str) == [503, "in"]


async def test_a_place_taken_by_a_refused_or_failing_authorize_is_given_back(
    variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager, _ = make_manager()
    calls = 0

    async def authorize(handshake: websocket.Handshake) -> bool:
        nonlocal calls
        calls += 1
        if handshake.authorization == "Bearer boom":
            raise RuntimeError("the hook broke")
        return handshake.authorization == "Bearer ok"

    with trio.fail_after(10):
        async with served(variant, manager, max_connections=1, authorize=authorize) as url:
            for _ in range(3):
                with pytest.raises(ConnectError) as refused:
                    async with websocket.connect(url, interfaces=[Wire], authorization="Bearer no"):
                        raise AssertionError("accepted")  # pragma: no cover
                assert refused.value.status_code == 401
            with pytest.raises(ConnectError) as failed:
                async with websocket.connect(url, interfaces=[Wire], authorization="Bearer boom"):
                    raise AssertionError("accepted")  # pragma: no cover
            # A hook that raises refuses the handshake (and the server goes on).
            assert failed.value.status_code == 500
            # Every refusal gave its place back: the one place is free.
            async with websocket.connect(url, interfaces=[Wire], authorization="Bearer ok") as b:
                assert await b.get_client(Wire).length("in") == 2
    assert calls == 5
    assert "the hook broke" in caplog.text  # logged, with its traceback
