"""The IPC conformance suite: the handshake, calls and errors, both ways."""

from __future__ import annotations

import pytest
import trio

from .. import contexts
from ..runtime import (
    CONVERTER,
    DeadlineExceeded,
    IncompatibleVersion,
    InvalidRequest,
    IpcInterface,
    NotFound,
    PayloadTooLarge,
    RemoteError,
    TetherError,
    Unauthorized,
    Unavailable,
)
from ._ipc_fixtures import (
    ConformanceIpc,
    Extra,
    FrontendHandler,
    IpcSuiteBase,
    Newer,
    NextMajor,
    OlderMinor,
    Patched,
    Unserved,
)
from ._probe import Probe
from ._rpc_suite import TEST_TIMEOUT, ConformanceError, Everything, sample_everything


class IpcCallTests(IpcSuiteBase):
    """Handshake, calls and errors, both ways: what an IPC session must carry."""

    # -- handshake ---------------------------------------------------------------

    async def test_connect_refuses_a_channel_the_backend_does_not_serve(self) -> None:
        backend = self.backend_ipc()
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(NotFound, match=r"tether\.testing\.nobody-serves-this") as caught:
                async with self.connect_ipc(backend, channels=[ConformanceIpc, Unserved]):
                    pass  # pragma: no cover - the connect must fail
        assert caught.value.details["channel"] == Unserved.channel_name
        assert backend.sessions == ()

    @pytest.mark.parametrize("channel", [Newer, NextMajor])
    async def test_connect_refuses_an_incompatible_channel_version(
        self, channel: type[IpcInterface]
    ) -> None:
        backend = self.backend_ipc()
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(IncompatibleVersion) as caught:
                async with self.connect_ipc(backend, channels=[channel]):
                    pass  # pragma: no cover - the connect must fail
        message = str(caught.value)
        assert "tether.testing.ipc" in message
        assert "2.3.1" in message
        assert channel.version in message
        assert caught.value.details["channel"] == "tether.testing.ipc"
        assert backend.sessions == ()

    @pytest.mark.parametrize("channel", [Patched, OlderMinor])
    async def test_connect_accepts_a_compatible_version(self, channel: type[IpcInterface]) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.connect_ipc(self.backend_ipc(), channels=[channel]) as frontend:
                assert frontend.channels == {"tether.testing.ipc": "2.3.1"}
                assert await frontend.proxy(channel).add(1, 2) == 3  # type: ignore[attr-defined]

    async def test_channels_not_listed_at_connect_are_checked_locally_before_any_call(
        self,
    ) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.connect_ipc(self.backend_ipc(probe), channels=[]) as frontend:
                with pytest.raises(NotFound, match="nobody-serves-this") as not_served:
                    frontend.proxy(Unserved)
                assert not not_served.value.remote
                with pytest.raises(IncompatibleVersion, match=r"2\.4\.0") as too_new:
                    frontend.proxy(Newer)
                assert not too_new.value.remote
                with pytest.raises(NotFound, match="nobody-serves-this") as untyped:
                    await frontend.call_backend(Unserved.channel_name, "anything")
                assert not untyped.value.remote
                # A served channel needs no listing.
                info = await frontend.proxy(ConformanceIpc).context()
                assert info.current_session_id == frontend.session_id

    # -- calls -------------------------------------------------------------------

    async def test_typed_call_returns_the_handler_result(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                assert await proxy.add(2, 40) == 42
                assert await proxy.add(a=-1, b=1) == 0

    async def test_a_mebibyte_of_bytes_goes_each_way(self) -> None:
        """bytes arguments and results, 1 MiB each, raw where the transport carries binary."""
        data = bytes(range(256)) * 4096
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                assert await proxy.mirror(data) == data[::-1]
                assert await proxy.mirror(b"") == b""

    async def test_every_carried_type_round_trips(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                samples = sample_everything()
                for value in samples:
                    assert await proxy.echo(value) == value
                assert await proxy.echo_list(samples) == samples

    async def test_call_backend_sends_plain_values_and_returns_json(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                channel = ConformanceIpc.channel_name
                assert await frontend.call_backend(channel, "add", 2, 40) == 42
                for value in sample_everything():
                    plain = await frontend.call_backend(channel, "echo", value)
                    assert isinstance(plain, dict)
                    assert CONVERTER.structure(plain, Everything) == value
                info = await frontend.call_backend(channel, "context")
                assert info["current_session_id"] == frontend.session_id

    async def test_many_concurrent_calls_each_get_their_own_reply(self) -> None:
        results: dict[int, int] = {}
        activities: dict[int, tuple[str, str]] = {}
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)

                async def one(i: int) -> None:
                    with contexts.activity() as act:
                        results[i] = await proxy.add(i, 1000)
                        seen = await proxy.context()
                        activities[i] = (act.activity_id, seen.activity_id)

                async with trio.open_nursery() as nursery:
                    for i in range(100):
                        nursery.start_soon(one, i)
        assert results == {i: i + 1000 for i in range(100)}
        assert all(sent == seen for sent, seen in activities.values())
        assert len({sent for sent, _ in activities.values()}) == 100

    # -- errors ----------------------------------------------------------------

    @pytest.mark.parametrize(
        ("kind", "error"),
        [
            ("not-found", NotFound),
            ("bad-request", InvalidRequest),
            ("unauthorized", Unauthorized),
            ("incompatible-version", IncompatibleVersion),
            ("payload-too-large", PayloadTooLarge),
            ("deadline-exceeded", DeadlineExceeded),
            ("unavailable", Unavailable),
            ("overloaded", Unavailable),
        ],
    )
    async def test_tether_errors_raised_by_a_handler_keep_their_class(
        self, kind: str, error: type[TetherError]
    ) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as act, pytest.raises(error) as caught:
                    await proxy.fail(kind, f"{kind} on purpose")
                # An error answers one call; the session goes on.
                assert await proxy.add(1, 1) == 2
        exc = caught.value
        assert type(exc) is error
        assert exc.remote
        assert exc.message == f"{kind} on purpose"
        assert exc.activity_id == act.activity_id
        if kind == "unavailable":
            assert isinstance(exc, Unavailable)
            assert exc.retry_after == 2.5
            assert exc.status == 503
        if kind == "overloaded":
            assert isinstance(exc, Unavailable)
            assert exc.status == 429

    async def test_application_error_round_trips_with_its_fields(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as act, pytest.raises(ConformanceError) as caught:
                    await proxy.fail("application", "no robots left")
        assert caught.value.code == 42
        assert caught.value.reason == "no robots left"
        assert any(act.activity_id in note for note in caught.value.__notes__)

    async def test_unexpected_exception_is_remote_error_without_traceback(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                with contexts.activity() as act, pytest.raises(RemoteError) as caught:
                    await frontend.call_backend(ConformanceIpc.channel_name, "fail", "x", "boom")
        exc = caught.value
        assert exc.remote_type == "builtins.ValueError"
        assert exc.message == "boom"
        assert exc.remote_traceback is None
        assert "Traceback" not in str(exc.details)
        assert exc.activity_id == act.activity_id

    async def test_development_mode_sends_the_traceback(self) -> None:
        backend = self.backend_ipc(development_mode=True)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                with pytest.raises(RemoteError) as caught:
                    await frontend.proxy(ConformanceIpc).fail("internal", "boom")
        assert caught.value.remote_traceback is not None
        assert "ValueError: boom" in caught.value.remote_traceback

    async def test_result_that_does_not_fit_the_declared_type(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with pytest.raises(InvalidRequest, match="does not fit int"):
                    await proxy.lying()
                assert await proxy.add(1, 1) == 2

    async def test_arguments_that_do_not_fit_are_bad_request_naming_the_parameter(self) -> None:
        channel = ConformanceIpc.channel_name
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                with contexts.activity() as act, pytest.raises(InvalidRequest) as wrong:
                    await frontend.call_backend(channel, "add", "two", 2)
                assert wrong.value.remote
                assert wrong.value.details["parameter"] == "a"
                assert wrong.value.activity_id == act.activity_id
                with pytest.raises(InvalidRequest) as shape:
                    await frontend.call_backend(channel, "echo", {"flag": True})
                assert shape.value.details["parameter"] == "value"
                with pytest.raises(InvalidRequest) as count:
                    await frontend.call_backend(channel, "add", 1)
                assert count.value.remote
                # The session is still good.
                assert await frontend.call_backend(channel, "add", 1, 2) == 3

    async def test_proxy_rejects_arguments_of_the_wrong_shape_before_sending(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with pytest.raises(InvalidRequest, match="missing a required argument"):
                    await proxy.add(1)  # type: ignore[call-arg]
                with pytest.raises(InvalidRequest) as caught:
                    await proxy.echo("not an Everything")  # type: ignore[arg-type]
                assert not caught.value.remote

    async def test_unknown_method_of_a_served_channel_is_not_found(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                with pytest.raises(NotFound, match="not_there") as typed:
                    await frontend.proxy(Extra).not_there()
                assert typed.value.remote
                with pytest.raises(NotFound, match="nope"):
                    await frontend.call_backend(ConformanceIpc.channel_name, "nope")
                assert frontend.is_valid

    @pytest.mark.parametrize(
        "method",
        [
            "__init__",
            "__class__",
            "on_close",
            "get_version",
            "_private",
            "_task",
            "probe",
            "backend",
            "number",
            "",
        ],
    )
    async def test_only_declared_methods_are_callable(self, method: str) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                info = await frontend.proxy(ConformanceIpc).context()
                with pytest.raises(NotFound) as caught:
                    await frontend.call_backend(ConformanceIpc.channel_name, method, "x")
                assert caught.value.remote
                assert frontend.is_valid
        # `on_close` in particular was not run by the call: only by the end.
        assert probe.value(f"on_close:{info.handler}") != "x"

    # -- backend-initiated calls ---------------------------------------------------

    async def test_handler_calls_a_channel_the_frontend_serves(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                served = FrontendHandler()
                frontend.register(served)
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as act, trio.move_on_after(3):
                    assert await proxy.ask_frontend("double", 21) == "ok:42"
                    assert await proxy.ask_frontend("raw:double", 4) == "ok:8"
        # The backend's call carried the activity and the deadline of the call it serves.
        assert served.activities == [act.activity_id, act.activity_id]
        for left in served.deadlines:
            assert left is not None
            assert 0 < left <= 3

    async def test_metadata_and_traceparent_reach_the_handler_and_its_calls(self) -> None:
        traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                served = FrontendHandler()
                frontend.register(served)
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity(metadata={"tenant": "acme"}, traceparent=traceparent):
                    info = await proxy.context()
                    assert await proxy.ask_frontend("double", 21) == "ok:42"
                plain = await proxy.context()
        assert info.metadata == {"tenant": "acme"}
        assert info.traceparent == traceparent
        # The backend's call to the frontend carried the metadata of the call it serves.
        assert served.metadata == [{"tenant": "acme"}]
        assert plain.metadata == {}
        assert plain.traceparent is None

    async def test_cancelling_a_call_cancels_the_backends_call_to_the_frontend(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                served = FrontendHandler()
                frontend.register(served)
                proxy = frontend.proxy(ConformanceIpc)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(proxy.ask_frontend, "wait", 1)
                    await served.started.wait()
                    nursery.cancel_scope.cancel()
                # The handler was cancelled, and so was its own call to the frontend.
                await served.finished.wait()
                assert await proxy.ask_frontend("double", 1) == "ok:2"
                assert frontend.is_valid

    async def test_errors_of_backend_initiated_calls_are_mapped(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                unserved = await proxy.ask_frontend("double", 1)
                assert unserved.startswith("NotFound:")
                assert "tether.testing.ipc-frontend" in unserved
                frontend.register(FrontendHandler)  # a class: instantiated once
                assert await proxy.ask_frontend("fail", 7) == (
                    "ConformanceError:7:the frontend refuses"
                )
                missing = await proxy.ask_frontend("raw:nope", 1)
                assert missing.startswith("NotFound:")
                assert "nope" in missing
                bad = await proxy.ask_frontend("raw:double", 1)
                assert bad == "ok:2"
                assert frontend.is_valid

    async def test_session_task_calls_the_frontend(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                served = FrontendHandler()
                frontend.register(served)
                with contexts.activity() as act:
                    await frontend.proxy(ConformanceIpc).ask_frontend_later("k", "double", 5)
                assert await probe.wait("later:k") == "ok:10"
        # A session task keeps the activity of the call that started it.
        assert served.activities == [act.activity_id]
