"""The error tree, wire codes, and application errors that round-trip."""

from __future__ import annotations

import attrs
import pytest
import trio

import tether
from tether.runtime._client import error_from_info
from tether.runtime._errors import remote_error_name
from tether.runtime._protocol import ErrorInfo
from tether.transports import memory

# DESIGN.md section 5: code, HTTP status, class raised on the client.
DESIGN_TABLE = [
    ("bad-request", 400, tether.InvalidRequest),
    ("unauthorized", 401, tether.Unauthorized),
    ("incompatible-version", 403, tether.IncompatibleVersion),
    ("not-found", 404, tether.NotFound),
    ("payload-too-large", 413, tether.PayloadTooLarge),
    ("unavailable", 503, tether.Unavailable),
    ("deadline-exceeded", 504, tether.DeadlineExceeded),
    ("internal", 500, tether.RemoteError),
]


@pytest.mark.parametrize(("code", "status", "cls"), DESIGN_TABLE)
def test_codes_and_statuses_follow_the_design(
    code: str, status: int, cls: type[tether.TetherError]
) -> None:
    assert issubclass(cls, tether.TetherError)
    assert cls.code == code
    assert cls.status == status
    raised = error_from_info(ErrorInfo(code, status, cls.__name__, "msg"), "act-1")
    assert type(raised) is cls
    assert isinstance(raised, tether.TetherError)
    assert raised.activity_id == "act-1"
    assert raised.remote


def test_overloaded_unavailable_is_429_with_retry_after() -> None:
    exc = tether.Unavailable("busy", retry_after=3, overloaded=True)
    assert (exc.code, exc.status, exc.retry_after) == ("too-many-requests", 429, 3)
    raised = error_from_info(
        ErrorInfo("too-many-requests", 429, "Unavailable", "busy", {"retry_after": 3}), None
    )
    assert isinstance(raised, tether.Unavailable)
    assert raised.status == 429
    assert raised.retry_after == 3


def test_transport_errors_are_tether_errors_never_sent() -> None:
    assert issubclass(tether.ConnectionClosed, tether.TransportError)
    assert issubclass(tether.ConnectError, tether.TransportError)
    assert issubclass(tether.TransportError, tether.TetherError)


def test_str_names_the_activity() -> None:
    assert str(tether.NotFound("no such robot", activity_id="a-1")) == (
        "no such robot (activity a-1)"
    )
    assert str(tether.NotFound("no such robot")) == "no such robot"


def test_unknown_code_or_unregistered_application_error_is_remote_error() -> None:
    unknown = error_from_info(ErrorInfo("teapot", 418, "Teapot", "short and stout"), "a")
    assert isinstance(unknown, tether.RemoteError)
    assert unknown.remote_type == "Teapot"
    app = error_from_info(ErrorInfo("application", 422, "nobody.Registered", "m"), "a")
    assert isinstance(app, tether.RemoteError)
    assert app.remote_type == "nobody.Registered"


@tether.remote_error
class PlainError(Exception):
    """A non-attrs application error: crosses with its args."""


@tether.remote_error(name="tests.Quota")
@attrs.define
class QuotaExceeded(Exception):
    limit: int
    used: int


def test_registration_names() -> None:
    assert remote_error_name(PlainError("x")) == f"{__name__}.PlainError"
    assert remote_error_name(QuotaExceeded(1, 2)) == "tests.Quota"
    assert remote_error_name(ValueError("x")) is None


def test_registration_refuses_what_cannot_round_trip() -> None:
    with pytest.raises(TypeError, match="exception class"):
        tether.remote_error(int)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="TetherError"):

        @tether.remote_error
        class Mine(tether.NotFound):
            pass

    with pytest.raises(TypeError, match="already registered"):

        @tether.remote_error(name="tests.Quota")
        class Other(Exception):
            pass

    # Registering the same class again is harmless.
    assert tether.remote_error(PlainError) is PlainError


def test_a_field_mismatch_between_sides_falls_back_to_remote_error() -> None:
    info = ErrorInfo("application", 422, "tests.Quota", "over", {"fields": {"limit": "x"}})
    raised = error_from_info(info, "a")
    assert isinstance(raised, tether.RemoteError)


class Raiser(tether.RpcInterface):
    interface_name = "test.Raiser"
    interface_version = "1.0.0"

    async def plain(self) -> None: ...
    async def quota(self) -> None: ...


class RaiserImpl(Raiser):
    async def plain(self) -> None:
        raise PlainError("first", 2)

    async def quota(self) -> None:
        raise QuotaExceeded(limit=10, used=11)


async def test_application_errors_round_trip_over_a_transport() -> None:
    manager = tether.RpcManager()
    manager.register_impl(Raiser, RaiserImpl)
    with trio.fail_after(5):
        async with memory.connect(manager, interfaces=[Raiser]) as backend:
            client = backend.get_client(Raiser)
            with pytest.raises(PlainError) as plain:
                await client.plain()
            with pytest.raises(QuotaExceeded) as quota:
                await client.quota()
    assert plain.value.args == ("first", 2)
    assert (quota.value.limit, quota.value.used) == (10, 11)
