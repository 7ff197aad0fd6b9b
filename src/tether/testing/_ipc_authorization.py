"""The IPC conformance suite: who may open a session (`BackendIpc(authorize=...)`,
`max_sessions`), the same on every transport.

Every transport's `connect_ipc` passes `authorization=` in the `hello`; the
backend's hook sees it, with what the frontend asked for, before anything is
reserved or made for the session.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
import trio

from ..runtime import (
    BackendIpc,
    IpcHandshake,
    RemoteError,
    TetherError,
    Unauthorized,
    Unavailable,
)
from ._ipc_fixtures import ConformanceIpc, ConformanceIpcHandler, IpcSuiteBase, errors_logged
from ._probe import Probe
from ._rpc_suite import TEST_TIMEOUT

__all__ = ["IpcAuthorizationTests"]

SECRET = "Bearer conformance-credential"


def _counting_backend(**options: Any) -> tuple[BackendIpc, list[int]]:
    """A backend serving `ConformanceIpc`, and the list of the handlers it made."""
    made: list[int] = []
    backend = BackendIpc(**options)

    class Handler(ConformanceIpcHandler):
        def __init__(self) -> None:
            super().__init__()
            made.append(self.number)  # list.append: safe from the backend's thread

    Handler.probe = Probe()
    Handler.backend = backend
    backend.register(Handler)
    return backend, made


class IpcAuthorizationTests(IpcSuiteBase):
    """Authorization at the handshake, and a full backend."""

    async def test_the_authorize_hook_sees_the_handshake_and_opens_the_session(self) -> None:
        seen: list[IpcHandshake] = []

        async def authorize(handshake: IpcHandshake) -> bool:
            seen.append(handshake)
            return handshake.authorization == SECRET

        backend, made = _counting_backend(authorize=authorize)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(
                backend,
                authorization=SECRET,
                application_id="suite-app",
                application_version="3.2.1",
            ) as frontend:
                assert await frontend.proxy(ConformanceIpc).add(2, 3) == 5
                assert [session.id for session in backend.sessions] == [frontend.session_id]
        (handshake,) = seen
        assert handshake.authorization == SECRET
        assert (handshake.application_id, handshake.application_version) == (
            "suite-app",
            "3.2.1",
        )
        assert dict(handshake.channels) == {ConformanceIpc.channel_name: ConformanceIpc.version}
        assert isinstance(handshake.transport, str)
        assert handshake.transport
        assert SECRET not in repr(handshake)
        assert len(made) == 1

    async def test_a_plain_function_may_authorize(self) -> None:
        backend, _ = _counting_backend(
            authorize=lambda handshake: handshake.authorization == SECRET
        )
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend, authorization=SECRET) as frontend:
                assert await frontend.proxy(ConformanceIpc).add(1, 1) == 2
            with pytest.raises(Unauthorized):
                async with self.open(backend, authorization="Bearer another"):
                    pass  # pragma: no cover - the connect must fail

    async def test_a_refused_session_raises_unauthorized_and_leaves_nothing_behind(
        self,
    ) -> None:
        backend, made = _counting_backend(
            authorize=lambda handshake: handshake.authorization == SECRET, max_sessions=1
        )
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(Unauthorized) as wrong:
                async with self.open(backend, authorization="Bearer wrong"):
                    pass  # pragma: no cover - the connect must fail
            with pytest.raises(Unauthorized) as missing:
                async with self.open(backend):
                    pass  # pragma: no cover - the connect must fail
            assert backend.sessions == ()
            assert made == []
            # No place was taken: the backend's only one opens now.
            async with self.open(backend, authorization=SECRET) as frontend:
                assert await frontend.proxy(ConformanceIpc).add(1, 2) == 3
        assert (wrong.value.code, wrong.value.status) == ("unauthorized", 401)
        assert "refused this IPC session" in wrong.value.message
        assert "sent no credential" in missing.value.message
        assert "authorization=" in missing.value.message
        assert len(made) == 1

    async def test_the_hook_may_refuse_with_an_error_of_its_own(self) -> None:
        def authorize(handshake: IpcHandshake) -> bool:
            raise Unauthorized("the token expired at 12:00: sign in again")

        backend, made = _counting_backend(authorize=authorize)
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(Unauthorized, match="the token expired at 12:00: sign in again"):
                async with self.open(backend, authorization=SECRET):
                    pass  # pragma: no cover - the connect must fail
        assert backend.sessions == ()
        assert made == []

    async def test_a_hook_that_raises_refuses_the_session_and_logs_why(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)

        async def authorize(handshake: IpcHandshake) -> bool:
            raise LookupError("the user directory is down")

        backend, made = _counting_backend(authorize=authorize)
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(RemoteError) as caught:
                async with self.open(backend, authorization=SECRET):
                    pass  # pragma: no cover - the connect must fail
        assert (caught.value.code, caught.value.status) == ("internal", 500)
        assert "authorization hook failed (LookupError)" in caught.value.message
        assert len(errors_logged(caplog, LookupError)) == 1
        assert SECRET not in caplog.text
        assert backend.sessions == ()
        assert made == []

    async def test_a_slow_hook_holds_no_place(self) -> None:
        probe = Probe()

        async def authorize(handshake: IpcHandshake) -> bool:
            if handshake.authorization == "slow":
                probe.signal("the slow hook runs")
                await probe.wait("the slow hook may answer")
            return True

        backend, made = _counting_backend(authorize=authorize, max_sessions=1)
        outcome: list[BaseException | str] = []
        slow_done = trio.Event()

        async def slow_frontend() -> None:
            try:
                async with self.open(backend, authorization="slow"):
                    outcome.append("opened")  # pragma: no cover - the backend is full by then
            except TetherError as exc:
                outcome.append(exc)
            finally:
                slow_done.set()

        with trio.fail_after(TEST_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_frontend)
                await probe.wait("the slow hook runs")
                # The only place is free while the slow hook runs.
                async with self.open(backend, authorization="fast") as frontend:
                    assert await frontend.proxy(ConformanceIpc).add(3, 4) == 7
                    probe.signal("the slow hook may answer")
                    # Authorized now, it finds the backend full.
                    await slow_done.wait()
        (refused,) = outcome
        assert isinstance(refused, Unavailable), refused
        assert (refused.code, refused.status) == ("unavailable", 503)
        assert len(made) == 1

    async def test_a_full_backend_refuses_with_unavailable_503(self) -> None:
        backend = self.backend_ipc(max_sessions=1)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as first:
                with pytest.raises(Unavailable) as caught:
                    async with self.open(backend):
                        pass  # pragma: no cover - the connect must fail
                assert await first.proxy(ConformanceIpc).add(1, 1) == 2
            async with self.open(backend) as again:  # the place was given back
                assert await again.proxy(ConformanceIpc).add(2, 2) == 4
        refused = caught.value
        assert (refused.code, refused.status) == ("unavailable", 503)
        assert not refused.overloaded
        assert refused.retry_after == 1

    async def test_the_credential_is_never_in_a_log_record_a_repr_or_a_message(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)  # every record, from every logger
        secret = f"s3cret-{uuid.uuid4().hex}"
        seen: list[IpcHandshake] = []

        async def authorize(handshake: IpcHandshake) -> bool:
            seen.append(handshake)
            return handshake.authorization == f"Bearer {secret}"

        backend, _ = _counting_backend(authorize=authorize)
        shown: list[str] = []
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend, authorization=f"Bearer {secret}") as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                info = await proxy.context()
                shown += [repr(frontend), repr(backend.sessions), repr(info)]
                with pytest.raises(TetherError) as failed:
                    await proxy.fail("unauthorized", "no")
                shown += [str(failed.value), repr(failed.value.details)]
            for credential in (f"Bearer {secret}-wrong", None):
                with pytest.raises(Unauthorized) as refused:
                    async with self.open(backend, authorization=credential):
                        pass  # pragma: no cover - the connect must fail
                shown += [str(refused.value), repr(refused.value), repr(refused.value.details)]
        shown += [repr(handshake) for handshake in seen] + [str(handshake) for handshake in seen]
        assert len(seen) == 3
        assert [text for text in shown if secret in text] == []
        assert secret not in caplog.text
        assert [
            r for r in caplog.records if secret in repr(vars(r)) or secret in r.getMessage()
        ] == []
