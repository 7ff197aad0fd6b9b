# mypy: disable-error-code="empty-body"
# (interface operations are declared with `...` bodies)
"""The RPC conformance suite: what every transport must do, as pytest tests.

A transport is correct when it passes this suite. Subclass `RpcConformance` in a
test module (the subclass's name must start with `Test`) and implement
`connect`::

    class TestMemoryRpc(tether.testing.RpcConformance):
        def connect(self, manager, *, interfaces, **options):
            return memory.connect(manager, interfaces=interfaces, **options)

Every test runs under pytest-trio and is bounded by `trio.fail_after`.
"""

from __future__ import annotations

import datetime
import enum
import math
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, NoReturn

import attrs
import pytest
import trio

from .. import contexts
from ..runtime import (
    ConnectionClosed,
    DeadlineExceeded,
    IncompatibleVersion,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RemoteError,
    RpcBackend,
    RpcInterface,
    RpcManager,
    TetherError,
    Unauthorized,
    Unavailable,
    remote_error,
)
from ..runtime._protocol import Call, CallContext, Error, Result
from ._probe import Probe
from ._rpc_faults_suite import RpcFaultCases
from ._rpc_interceptors_suite import RpcInterceptorCases
from ._rpc_lifecycle_suite import RpcLifecycleCases
from ._rpc_metadata_suite import RpcMetadataCases
from ._rpc_streams_suite import RpcStreamCases

__all__ = [
    "ConformanceDownstream",
    "ConformanceError",
    "ConformanceInterface",
    "ContextInfo",
    "Everything",
    "RpcConformance",
]

#: Seconds every conformance test may take.
TEST_TIMEOUT = 10.0


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Point:
    x: float
    y: float


@attrs.frozen
class Circle:
    kind: Literal["circle"]
    center: Point
    radius: float


@attrs.frozen
class Square:
    kind: Literal["square"]
    corner: Point
    side: float


@attrs.frozen
class Everything:
    """One value of every type the codec carries (DESIGN.md section 3)."""

    flag: bool
    count: int
    ratio: float
    name: str
    raw: bytes
    color: Color
    level: Level
    when: datetime.datetime
    day: datetime.date
    ident: uuid.UUID
    nothing: None
    maybe: int | None
    either: int | str
    shape: Circle | Square
    points: list[Point]
    pair: tuple[int, str]
    rest: tuple[int, ...]
    by_name: dict[str, Point]
    by_id: dict[int, str]
    tags: set[str]
    frozen: frozenset[int]


def sample_everything() -> list[Everything]:
    """A few values of `Everything`, edge cases included."""
    base = Everything(
        flag=True,
        count=-(2**53),
        ratio=-1.5e-300,
        name='héllo ✓ \u0000 "quoted"',
        raw=bytes(range(256)),
        color=Color.GREEN,
        level=Level.HIGH,
        when=datetime.datetime(2026, 11, 21, 12, 30, 5, 123456, tzinfo=datetime.UTC),
        day=datetime.date(1999, 12, 31),
        ident=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        nothing=None,
        maybe=None,
        either="text",
        shape=Square("square", Point(0.0, 1.0), 2.5),
        points=[Point(1.0, 2.0), Point(-3.25, 4e10)],
        pair=(7, "seven"),
        rest=(1, 2, 3),
        by_name={"origin": Point(0.0, 0.0), "": Point(1.0, 1.0)},
        by_id={1: "one", -2: "minus two"},
        tags={"a", "b"},
        frozen=frozenset({3, 4}),
    )
    empty = attrs.evolve(
        base,
        flag=False,
        count=0,
        ratio=0.0,
        name="",
        raw=b"",
        maybe=12,
        either=5,
        shape=Circle("circle", Point(0.5, 0.5), 1.0),
        points=[],
        rest=(),
        by_name={},
        by_id={},
        tags=set(),
        frozen=frozenset(),
        when=datetime.datetime(2000, 1, 1),
    )
    return [base, empty]


@attrs.frozen
class ContextInfo:
    """What an impl saw of its RequestContext."""

    activity_id: str
    session_id: str | None
    application_id: str | None
    application_version: str | None
    operation: str | None
    has_authorization: bool
    seconds_left: float | None


@remote_error(name="tether.testing.ConformanceError")
@attrs.define
class ConformanceError(Exception):
    """An application error that round-trips with its fields."""

    code: int
    reason: str


class ConformanceInterface(RpcInterface):
    """The interface the suite's backend serves."""

    interface_name = "tether.Conformance"
    interface_version = "1.2.3"

    async def add(self, a: int, b: int) -> int: ...
    async def echo(self, value: Everything) -> Everything: ...
    async def echo_list(self, values: list[Everything]) -> list[Everything]: ...
    async def context(self) -> ContextInfo: ...
    async def downstream_context(self) -> ContextInfo: ...
    async def fail(self, kind: str, message: str) -> None: ...
    async def wait_until_cancelled(self, key: str) -> None: ...
    async def big(self, size: int) -> str: ...
    async def lying(self) -> int: ...
    async def mirror(self, data: bytes) -> bytes: ...


class ConformanceDownstream(RpcInterface):
    """What a second backend serves, for calls from one backend to another."""

    interface_name = "tether.ConformanceDownstream"
    interface_version = "0.1.4"

    async def context(self) -> ContextInfo: ...


class _Newer(RpcInterface):
    # The same interface as a newer client sees it: minor 3 > the backend's 2.
    interface_name = "tether.Conformance"
    interface_version = "1.3.0"

    async def add(self, a: int, b: int) -> int: ...


class _Patched(RpcInterface):
    # A client built against a later patch: compatible for major >= 1.
    interface_name = "tether.Conformance"
    interface_version = "1.2.9"

    async def add(self, a: int, b: int) -> int: ...


class _Extra(RpcInterface):
    # The same name and version, but with an operation the backend lacks.
    interface_name = "tether.Conformance"
    interface_version = "1.2.3"

    async def not_there(self) -> int: ...


class _Unserved(RpcInterface):
    interface_name = "tether.NobodyServesThis"
    interface_version = "1.0.0"

    async def anything(self) -> int: ...


def _context_info() -> ContextInfo:
    ctx = contexts.current()
    assert ctx is not None, "the server did not set a RequestContext"
    deadline = trio.current_effective_deadline()
    return ContextInfo(
        activity_id=ctx.activity_id,
        session_id=ctx.session_id,
        application_id=ctx.application_id,
        application_version=ctx.application_version,
        operation=ctx.operation,
        has_authorization=ctx.authorization is not None,
        seconds_left=None if deadline == math.inf else deadline - trio.current_time(),
    )


_ERRORS: dict[str, type[TetherError]] = {
    "not-found": NotFound,
    "bad-request": InvalidRequest,
    "unauthorized": Unauthorized,
    "incompatible-version": IncompatibleVersion,
    "payload-too-large": PayloadTooLarge,
    "deadline-exceeded": DeadlineExceeded,
}


Opener = Callable[[], AbstractAsyncContextManager[RpcBackend]]


def raise_error(kind: str, message: str) -> NoReturn:
    """Raise the error of `kind` an impl of the suite raises on purpose."""
    if kind == "application":
        raise ConformanceError(code=42, reason=message)
    if kind == "unavailable":
        raise Unavailable(message, retry_after=2.5)
    if kind == "overloaded":
        raise Unavailable(message, retry_after=1, overloaded=True)
    if kind in _ERRORS:
        raise _ERRORS[kind](message)
    raise ValueError(message)


class ConformanceImpl(ConformanceInterface):
    """The backend of the suite.

    `downstream` opens a connection to a second backend serving
    `ConformanceDownstream`. It is opened by the impl, in the backend's own
    Trio run, which may be another thread than the test's.
    """

    def __init__(self, probe: Probe, manager: RpcManager, downstream: Opener | None) -> None:
        self.probe = probe
        self.manager = manager
        self.downstream = downstream

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def echo(self, value: Everything) -> Everything:
        assert isinstance(value, Everything), "the server must structure arguments"
        return value

    async def echo_list(self, values: list[Everything]) -> list[Everything]:
        return values

    async def mirror(self, data: bytes) -> bytes:
        assert type(data) is bytes, "the server must structure bytes as bytes"
        return data[::-1]

    async def context(self) -> ContextInfo:
        return _context_info()

    async def downstream_context(self) -> ContextInfo:
        assert self.downstream is not None, "this backend has no downstream"
        async with self.downstream() as backend:
            # A backend is a frontend of its downstream: route, then call.
            self.manager.initialize_client([ConformanceDownstream], backend)
            try:
                return await self.manager.get_client(ConformanceDownstream).context()
            finally:
                self.manager.terminate_client([ConformanceDownstream])

    async def fail(self, kind: str, message: str) -> None:
        raise_error(kind, message)

    async def wait_until_cancelled(self, key: str) -> None:
        self.probe.signal(f"started:{key}", _context_info())
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.probe.signal(f"cancelled:{key}")
            raise
        finally:
            self.probe.signal(f"finally:{key}")

    async def big(self, size: int) -> str:
        return "x" * size

    async def lying(self) -> int:
        return "not an int"  # type: ignore[return-value]


class DownstreamImpl(ConformanceDownstream):
    async def context(self) -> ContextInfo:
        return _context_info()


def _raw_call(interface: type[RpcInterface], op: str, args: list[Any], **kw: Any) -> Call:
    return Call(
        id=kw.pop("id", 10_000_000 + len(args)),
        iface=kw.pop("iface", interface.interface_name),
        ver=kw.pop("ver", interface.interface_version),
        op=op,
        args=args,
        ctx=CallContext(activity_id=kw.pop("activity_id", "raw-activity")),
        timeout_ms=kw.pop("timeout_ms", None),
    )


class RpcConformance(
    RpcStreamCases, RpcFaultCases, RpcLifecycleCases, RpcMetadataCases, RpcInterceptorCases
):
    """Tests every RPC transport must pass. Subclass it and implement `connect`.

    `connect(manager, interfaces=..., **options)` returns an async context
    manager that serves `manager` over the transport and yields a connected
    `RpcBackend`. The suite passes these options: `application_id`,
    `application_version`, `authorization`, `max_message_size` (the largest
    message either way, in bytes) and, to a transport that carries streams,
    `stream_window`; a transport must honour them.

    The stream cases (`RpcStreamCases`) run every kind of stream the
    transport carries: set `stream_kinds` to the kinds it carries (all three
    by default); for a kind left out, the case checks it is refused.

    The fault cases (`RpcFaultCases`) break connections through
    `faulty_streams()`; a transport without a MessageStream overrides
    `open_faulty` (HTTP's test puts a `FaultyProxy` in front of its server).

    The lifecycle cases (`RpcLifecycleCases`) check what the transport
    promises when a connection is lost (`reconnects`: "connection",
    "request" or None) and when its server stops (`server_stop`: "drains",
    "closes" or None; a server that stops implements `connect_stoppable`).

    The metadata cases (`RpcMetadataCases`) check that metadata and the W3C
    traceparent reach the impl and its downstream calls, and that the server
    refuses metadata over the limits.
    """

    def connect(
        self,
        manager: RpcManager,
        *,
        interfaces: Sequence[type[RpcInterface]],
        **options: Any,
    ) -> AbstractAsyncContextManager[RpcBackend]:
        raise NotImplementedError("a conformance test class must implement connect()")

    # -- helpers ---------------------------------------------------------------

    def backend_manager(
        self, probe: Probe | None = None, downstream: Opener | None = None, **kwargs: Any
    ) -> RpcManager:
        manager = RpcManager(**kwargs)
        impl = ConformanceImpl(probe or Probe(), manager, downstream)
        manager.register_impl(ConformanceInterface, impl)
        return manager

    def open(
        self, manager: RpcManager | None = None, **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return self.connect(
            manager if manager is not None else self.backend_manager(),
            interfaces=[ConformanceInterface],
            **options,
        )

    # -- calls -------------------------------------------------------------------

    async def test_call_returns_the_impl_result(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)
                assert await client.add(2, 40) == 42
                assert await client.add(a=-1, b=1) == 0

    async def test_every_carried_type_round_trips(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)
                samples = sample_everything()
                for value in samples:
                    assert await client.echo(value) == value
                assert await client.echo_list(samples) == samples

    async def test_a_mebibyte_of_bytes_goes_each_way(self) -> None:
        """bytes arguments and results, 1 MiB each, raw where the transport carries binary."""
        data = bytes(range(256)) * 4096
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)
                assert await client.mirror(data) == data[::-1]
                assert await client.mirror(b"") == b""
                assert await client.mirror(b"\x00{") == b"{\x00"

    async def test_many_concurrent_calls_each_get_their_own_reply(self) -> None:
        results: dict[int, int] = {}
        activities: dict[int, tuple[str, str]] = {}
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)

                async def one(i: int) -> None:
                    with contexts.activity() as act:
                        results[i] = await client.add(i, 1000)
                        seen = await client.context()
                        activities[i] = (act.activity_id, seen.activity_id)

                async with trio.open_nursery() as nursery:
                    for i in range(100):
                        nursery.start_soon(one, i)
        assert results == {i: i + 1000 for i in range(100)}
        assert all(sent == seen for sent, seen in activities.values())
        assert len({sent for sent, _ in activities.values()}) == 100

    # -- context ---------------------------------------------------------------

    async def test_impl_sees_the_callers_activity_and_application(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(
                application_id="conformance-app",
                application_version="9.8.7",
                authorization="Bearer s3cr3t",
            ) as backend:
                client = backend.get_client(ConformanceInterface)
                with contexts.activity() as act:
                    info = await client.context()
                no_activity = await client.context()
        assert info.activity_id == act.activity_id
        assert info.application_id == "conformance-app"
        assert info.application_version == "9.8.7"
        assert info.operation == "tether.Conformance.context"
        assert info.has_authorization
        assert info.session_id
        # A call outside any activity still gets an ActivityId of its own.
        assert no_activity.activity_id
        assert no_activity.activity_id != act.activity_id

    async def test_backend_to_backend_call_keeps_the_activity(self) -> None:
        downstream = RpcManager()
        downstream.register_impl(ConformanceDownstream, DownstreamImpl())
        middle = self.backend_manager(
            downstream=lambda: self.connect(downstream, interfaces=[ConformanceDownstream])
        )
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(middle, application_id="frontend-app") as to_a:
                client = to_a.get_client(ConformanceInterface)
                with contexts.activity() as act, trio.move_on_after(5):
                    info = await client.downstream_context()
        assert info.activity_id == act.activity_id
        assert info.application_id == "frontend-app"
        assert info.operation == "tether.ConformanceDownstream.context"
        # The frontend's deadline reached B through A.
        assert info.seconds_left is not None
        assert 0 < info.seconds_left <= 5

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
    async def test_tether_errors_raised_by_an_impl_keep_their_code(
        self, kind: str, error: type[TetherError]
    ) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            # One try: an Unavailable is retried by default (the fault cases check that).
            async with self.open(retry=None) as backend:
                client = backend.get_client(ConformanceInterface)
                with contexts.activity() as act, pytest.raises(error) as caught:
                    await client.fail(kind, f"{kind} on purpose")
        exc = caught.value
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
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)
                with contexts.activity() as act, pytest.raises(ConformanceError) as caught:
                    await client.fail("application", "no robots left")
        assert caught.value.code == 42
        assert caught.value.reason == "no robots left"
        assert any(act.activity_id in note for note in caught.value.__notes__)

    async def test_unexpected_exception_is_remote_error_without_traceback(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)
                with contexts.activity() as act, pytest.raises(RemoteError) as caught:
                    await client.fail("internal", "boom")
        exc = caught.value
        assert exc.remote_type == "builtins.ValueError"
        assert exc.message == "boom"
        assert exc.remote_traceback is None
        assert "Traceback" not in str(exc.details)
        assert exc.activity_id == act.activity_id

    async def test_development_mode_sends_the_traceback(self) -> None:
        manager = self.backend_manager(development_mode=True)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(manager) as backend:
                client = backend.get_client(ConformanceInterface)
                with pytest.raises(RemoteError) as caught:
                    await client.fail("internal", "boom")
        assert caught.value.remote_traceback is not None
        assert "ValueError: boom" in caught.value.remote_traceback

    async def test_result_that_does_not_fit_the_declared_type(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)
                with pytest.raises(InvalidRequest, match="does not fit int"):
                    await client.lying()
                assert await client.add(1, 1) == 2

    async def test_authorization_hook_refuses(self) -> None:
        async def authorize(ctx: contexts.RequestContext) -> bool:
            return ctx.authorization == "Bearer good"

        manager = self.backend_manager(authorize=authorize)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(manager, authorization="Bearer good") as backend:
                assert await backend.get_client(ConformanceInterface).add(1, 2) == 3
            async with self.open(manager, authorization="Bearer bad") as backend:
                with pytest.raises(Unauthorized) as caught:
                    await backend.get_client(ConformanceInterface).add(1, 2)
        assert caught.value.remote
        assert "Bearer bad" not in str(caught.value)

    # -- bad input -------------------------------------------------------------

    async def test_arguments_that_do_not_fit_are_bad_request_naming_the_parameter(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                reply = await backend.request(
                    _raw_call(ConformanceInterface, "add", ["two", 2], id=1)
                )
                assert isinstance(reply, Error)
                assert reply.error.code == "bad-request"
                assert reply.error.details["parameter"] == "a"
                assert reply.error.activity_id == "raw-activity"
                reply = await backend.request(_raw_call(ConformanceInterface, "add", [1], id=2))
                assert isinstance(reply, Error)
                assert reply.error.code == "bad-request"
                reply = await backend.request(
                    _raw_call(ConformanceInterface, "echo", [{"flag": True}], id=3)
                )
                assert isinstance(reply, Error)
                assert reply.error.code == "bad-request"
                assert reply.error.details["parameter"] == "value"
                # The connection is still good.
                reply = await backend.request(_raw_call(ConformanceInterface, "add", [1, 2], id=4))
                assert isinstance(reply, Result)
                assert reply.value == 3

    async def test_client_rejects_arguments_of_the_wrong_shape_before_sending(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)
                with pytest.raises(InvalidRequest, match="missing a required argument"):
                    await client.add(1)  # type: ignore[call-arg]
                with pytest.raises(InvalidRequest) as caught:
                    await client.echo("not an Everything")  # type: ignore[arg-type]
                assert not caught.value.remote

    @pytest.mark.parametrize(
        "op",
        [
            "__init__",
            "_ConformanceImpl__secret",
            "probe",
            "manager",
            "__class__",
            "not_declared",
            "",
        ],
    )
    async def test_only_declared_operations_are_callable(self, op: str) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                reply = await backend.request(_raw_call(ConformanceInterface, op, []))
        assert isinstance(reply, Error)
        assert reply.error.code == "not-found"

    async def test_unknown_operation_of_a_known_interface_is_not_found(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                with pytest.raises(NotFound, match="not_there"):
                    await backend.get_client(_Extra).not_there()

    async def test_unknown_interface_in_a_request_is_not_found(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                reply = await backend.request(_raw_call(_Unserved, "anything", []))
        assert isinstance(reply, Error)
        assert reply.error.code == "not-found"

    async def test_oversized_call_and_reply_are_payload_too_large(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(max_message_size=64 * 1024) as backend:
                client = backend.get_client(ConformanceInterface)
                big = sample_everything()[0]
                with pytest.raises(PayloadTooLarge):
                    await client.echo_list([big] * 200)
                with pytest.raises(PayloadTooLarge):
                    await client.big(200_000)
                assert await client.big(10) == "x" * 10

    # -- versions --------------------------------------------------------------

    async def test_connect_refuses_an_incompatible_interface_version(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(IncompatibleVersion) as caught:
                async with self.connect(self.backend_manager(), interfaces=[_Newer]):
                    pass  # pragma: no cover - the connect must fail
        message = str(caught.value)
        assert "1.2.3" in message
        assert "1.3.0" in message

    async def test_connect_accepts_a_compatible_patch(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.connect(self.backend_manager(), interfaces=[_Patched]) as backend:
                assert await backend.get_client(_Patched).add(1, 2) == 3

    async def test_connect_refuses_an_interface_the_backend_does_not_serve(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(NotFound, match="NobodyServesThis"):
                async with self.connect(self.backend_manager(), interfaces=[_Unserved]):
                    pass  # pragma: no cover - the connect must fail

    async def test_every_request_is_version_checked(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                # Bypass the connect-time check: this stub sends version 1.3.0.
                newer = backend.get_client(_Newer)
                with pytest.raises(IncompatibleVersion, match=r"1\.3\.0"):
                    await newer.add(1, 2)
                reply = await backend.request(
                    _raw_call(ConformanceInterface, "add", [1, 2], ver="not-a-version")
                )
                assert isinstance(reply, Error)
                assert reply.error.code == "bad-request"

    # -- cancellation and deadlines ----------------------------------------------

    async def test_cancelling_the_caller_cancels_the_impl(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_manager(probe)) as backend:
                client = backend.get_client(ConformanceInterface)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.wait_until_cancelled, "k1")
                    await probe.wait("started:k1")
                    nursery.cancel_scope.cancel()
                await probe.wait("cancelled:k1")
                assert probe.is_set("finally:k1")
                # Only that call was cancelled: the connection still works.
                assert await client.add(1, 2) == 3

    async def test_caller_deadline_becomes_the_impl_deadline(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)
                with trio.move_on_after(3):
                    info = await client.context()
                unbounded = await client.context()
        assert info.seconds_left is not None
        assert 0 < info.seconds_left <= 3
        # Outside move_on_after the call carries only the test's own, longer cap.
        assert unbounded.seconds_left is None or unbounded.seconds_left > 3

    async def test_impl_is_cancelled_when_the_deadline_passes(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_manager(probe)) as backend:
                client = backend.get_client(ConformanceInterface)
                with trio.move_on_after(0.2) as scope:
                    await client.wait_until_cancelled("k2")
                assert scope.cancelled_caught
                await probe.wait("finally:k2")
                assert await client.add(2, 2) == 4

    async def test_server_answers_deadline_exceeded_when_its_deadline_passes(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_manager(probe)) as backend:
                # The request carries a deadline the caller itself does not
                # enforce, so the server's answer is what comes back.
                reply = await backend.request(
                    _raw_call(ConformanceInterface, "wait_until_cancelled", ["k3"], timeout_ms=50)
                )
        assert isinstance(reply, Error)
        assert reply.error.code == "deadline-exceeded"
        assert reply.error.status == 504
        assert probe.is_set("finally:k3")

    # -- sessions ----------------------------------------------------------------

    async def test_leaving_the_connection_cancels_running_calls(self) -> None:
        probe = Probe()
        outcome: list[BaseException] = []

        async def call(client: ConformanceInterface) -> None:
            try:
                await client.wait_until_cancelled("k4")
            except TetherError as exc:
                outcome.append(exc)

        with trio.fail_after(TEST_TIMEOUT):
            async with (
                trio.open_nursery() as nursery,
                self.open(self.backend_manager(probe)) as backend,
            ):
                nursery.start_soon(call, backend.get_client(ConformanceInterface))
                await probe.wait("started:k4")
            await probe.wait("finally:k4")
        assert len(outcome) == 1
        assert isinstance(outcome[0], ConnectionClosed)

    async def test_calls_after_close_fail_cleanly(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as backend:
                client = backend.get_client(ConformanceInterface)
                assert await client.add(1, 1) == 2
            with pytest.raises(ConnectionClosed):
                await client.add(1, 1)
