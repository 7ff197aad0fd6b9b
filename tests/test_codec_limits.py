# mypy: disable-error-code="empty-body"
"""The codec's limits: no inf or nan, ints in 64 bits, nesting at most MAX_DEPTH deep.

orjson writes inf and nan as null (so a `float | None` argument of nan arrived
as None), refuses ints outside 64 bits with a bare TypeError, and a value
nested a few hundred levels deep broke both ends. Every such value is now
refused with `InvalidRequest` naming the parameter and the field, by the
sender before anything is sent and by the receiver, on every transport, for
arguments, results, notifications, the untyped calls and error fields.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import httpx
import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import tether
from tether import IpcInterface, RpcInterface
from tether.runtime import CONVERTER, ClientOptions, RpcBackend, serve_rpc_session
from tether.runtime._codec import loads
from tether.runtime._limits import (
    MAX_DEPTH,
    MAX_INT,
    MIN_INT,
    value_check,
    why_unsendable,
    within_limits,
)
from tether.runtime._protocol import (
    PROTOCOL_VERSION,
    Call,
    CallContext,
    Error,
    Hello,
    InterfaceInfo,
    Result,
    Welcome,
    decode,
    encode,
)
from tether.runtime._util import MAX_TIMEOUT_MS
from tether.transports import http, memory, websocket

TIMEOUT = 20.0
NAN = math.nan
INF = math.inf


@attrs.frozen
class Reading:
    value: float
    label: str = ""
    error: float | None = None


@dataclasses.dataclass
class Series:
    name: str
    values: list[float]


@attrs.frozen
class Link:
    value: int
    next: Link | None = None


@attrs.frozen
class Circle:
    kind: Literal["circle"]
    radius: float


@attrs.frozen
class Square:
    kind: Literal["square"]
    side: float
    tags: list[str] = attrs.field(factory=list)


@attrs.frozen
class Plain:
    name: str
    sizes: list[int]


class Measure(RpcInterface):
    interface_name = "test.Measure"
    interface_version = "1.0.0"

    async def maybe(self, x: float | None) -> float | None: ...
    async def number(self, x: float) -> float: ...
    async def count(self, n: int | None) -> int: ...
    async def readings(self, readings: list[Reading]) -> int: ...
    async def series(self, series: Series) -> int: ...
    async def table(self, table: dict[str, float]) -> int: ...
    async def pair(self, pair: tuple[int, float]) -> int: ...
    async def shape(self, shape: Circle | Square) -> int: ...
    async def counts(self, ns: list[int]) -> int: ...
    async def chain(self, link: Link) -> int: ...
    async def give(self, kind: str) -> float | None: ...
    async def give_counts(self, n: int) -> list[int]: ...
    async def fail(self, kind: str) -> None: ...


@tether.remote_error(name="test.Overflow")
@attrs.define
class Overflow(Exception):
    level: float


def _length(link: Link | None) -> int:
    n = 0
    while link is not None:
        n, link = n + 1, link.next
    return n


def _chain(n: int) -> Link:
    link = Link(0)
    for i in range(1, n):
        link = Link(i, link)
    return link


def _nested_chain(n: int) -> dict[str, Any]:
    """The JSON of a `Link` chain `n` objects deep, built without recursion."""
    value: dict[str, Any] = {"value": 0, "next": None}
    for i in range(1, n):
        value = {"value": i, "next": value}
    return value


class MeasureImpl(Measure):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def maybe(self, x: float | None) -> float | None:
        self.calls.append("maybe")
        return x

    async def number(self, x: float) -> float:
        self.calls.append("number")
        return x

    async def count(self, n: int | None) -> int:
        self.calls.append("count")
        return 0 if n is None else n

    async def readings(self, readings: list[Reading]) -> int:
        self.calls.append("readings")
        return len(readings)

    async def series(self, series: Series) -> int:
        self.calls.append("series")
        return len(series.values)

    async def table(self, table: dict[str, float]) -> int:
        self.calls.append("table")
        return len(table)

    async def pair(self, pair: tuple[int, float]) -> int:
        self.calls.append("pair")
        return pair[0]

    async def shape(self, shape: Circle | Square) -> int:
        self.calls.append("shape")
        return 1

    async def counts(self, ns: list[int]) -> int:
        self.calls.append("counts")
        return len(ns)

    async def chain(self, link: Link) -> int:
        self.calls.append("chain")
        return _length(link)

    async def give(self, kind: str) -> float | None:
        return {"nan": NAN, "inf": INF, "-inf": -INF, "one": 1.5}[kind]

    async def give_counts(self, n: int) -> list[int]:
        return [1, 2**n]

    async def fail(self, kind: str) -> None:
        if kind == "application":
            raise Overflow(INF)
        raise tether.InvalidRequest("no", details={"level": NAN, "keep": 1})


class MeasureIpc(IpcInterface):
    channel_name = "test.measure"
    version = "1.0.0"

    async def maybe(self, x: float | None) -> float | None: ...
    async def counts(self, ns: list[int]) -> int: ...
    async def give(self, kind: str) -> float | None: ...
    async def chain(self, link: Link) -> int: ...
    async def push(self, kind: str) -> str: ...


class MeasureEvents(tether.NotificationInterface):
    channel_name = "test.measure-events"

    async def level(self, value: float | None) -> None: ...
    async def counts(self, ns: list[int]) -> None: ...


class MeasureHandler(tether.IpcHandler, MeasureIpc):
    async def maybe(self, x: float | None) -> float | None:
        return x

    async def counts(self, ns: list[int]) -> int:
        return len(ns)

    async def give(self, kind: str) -> float | None:
        return {"nan": NAN, "one": 1.5}[kind]

    async def chain(self, link: Link) -> int:
        return _length(link)

    async def push(self, kind: str) -> str:
        """Notify the frontend with a value it cannot carry; say what happened."""
        session = tether.current_session()
        try:
            if kind == "typed":
                await session.notifier(MeasureEvents).level(NAN)
            elif kind == "typed-int":
                await session.notifier(MeasureEvents).counts([2**64])
            else:
                await session.send("test.measure-events", "level", INF)
        except tether.InvalidRequest as exc:
            return exc.message
        return "sent"


@attrs.frozen
class Connected:
    rpc: RpcBackend
    ipc: tether.FrontendIpc
    impl: MeasureImpl
    url: str | None


TRANSPORTS = ["memory", "http", "websocket"]


@asynccontextmanager
async def connected(transport: str) -> AsyncIterator[Connected]:
    impl = MeasureImpl()
    manager = tether.RpcManager()
    manager.register_impl(Measure, impl)
    backend = tether.BackendIpc()
    backend.register(MeasureHandler)
    if transport == "memory":
        async with (
            memory.connect(manager, interfaces=[Measure]) as rpc,
            memory.connect_ipc(backend, channels=[MeasureIpc]) as ipc,
        ):
            yield Connected(rpc, ipc, impl, None)
        return
    module: Any = http if transport == "http" else websocket
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(module.serve, manager, ipc=backend))
        async with (
            module.connect(url, interfaces=[Measure]) as rpc,
            module.connect_ipc(url, channels=[MeasureIpc]) as ipc,
        ):
            yield Connected(rpc, ipc, impl, url)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# The checks themselves


finite_floats = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(MIN_INT, MAX_INT)
json_values = st.recursive(
    st.none() | st.booleans() | ints | finite_floats | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)
bad_numbers = st.sampled_from([NAN, INF, -INF, MAX_INT + 1, MIN_INT - 1, 2**200])


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_values_inside_the_limits_pass(value: Any) -> None:
    assert within_limits(value)
    assert why_unsendable(value, "v") is None


def _paths(value: Any, path: str) -> list[tuple[str, list[Any]]]:
    """Every container in `value` with its path, and the keys to reach it."""
    found: list[tuple[str, list[Any]]] = []

    def walk(item: Any, where: str, keys: list[Any]) -> None:
        if isinstance(item, list):
            found.append((where, keys))
            for index, child in enumerate(item):
                walk(child, f"{where}[{index}]", [*keys, index])
        elif isinstance(item, dict):
            found.append((where, keys))
            for key, child in item.items():
                plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key)
                shown = f"{where}.{key}" if plain else f"{where}[{key!r}]"
                walk(child, shown, [*keys, key])

    walk(value, path, [])
    return found


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=3), bad_numbers, st.data())
def test_a_bad_number_anywhere_is_found_at_its_path(
    value: list[Any], bad: float | int, data: st.DataObject
) -> None:
    """A non-finite float or an int outside 64 bits is refused, and the search names where."""
    where, keys = data.draw(st.sampled_from(_paths(value, "v")))
    container: Any = value
    for key in keys:
        container = container[key]
    if isinstance(container, list):
        container.append(bad)
        expected = f"{where}[{len(container) - 1}]"
    else:
        container["\x00bad"] = bad
        expected = f"{where}[{chr(0) + 'bad'!r}]"
    assert not within_limits(value)
    found = why_unsendable(value, "v")
    assert found is not None
    path, why = found
    # The first problem in document order: ours, unless hypothesis made another.
    assert path == expected
    assert path in why or "..." in why


@pytest.mark.parametrize("depth", [1, 50, MAX_DEPTH])
def test_nesting_up_to_the_limit_passes(depth: int) -> None:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    assert within_limits(value)
    assert within_limits(_nested_chain(depth))
    assert why_unsendable(value, "v") is None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 254, 10_000])
def test_nesting_past_the_limit_is_refused_without_recursion(depth: int) -> None:
    value: Any = 1
    for _ in range(depth):
        value = {"a": [value]} if depth % 2 else [value]
    assert not within_limits(value)
    found = why_unsendable(value, "v")
    assert found is not None
    assert f"nests deeper than {MAX_DEPTH}" in found[1]
    assert not within_limits(_nested_chain(depth))


#: (type, strategy of values of it with any floats, nan and inf included).
any_floats = st.floats()
FLOAT_TYPES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (float, any_floats),
    (float | None, st.none() | any_floats),
    (list[float], st.lists(any_floats)),
    (list[float | None], st.lists(st.none() | any_floats)),
    (tuple[float, ...], st.lists(any_floats).map(tuple)),
    (tuple[int, float], st.tuples(ints, any_floats)),
    (set[float], st.sets(any_floats)),
    (dict[str, float], st.dictionaries(st.text(max_size=3), any_floats)),
    (dict[str, list[float]], st.dictionaries(st.text(max_size=3), st.lists(any_floats))),
    (Reading, st.builds(Reading, any_floats, st.text(max_size=3), st.none() | any_floats)),
    (
        list[Reading],
        st.lists(st.builds(Reading, any_floats, st.text(max_size=3), st.none() | any_floats)),
    ),
    (Reading | None, st.none() | st.builds(Reading, any_floats)),
    (Series, st.builds(Series, st.text(max_size=3), st.lists(any_floats))),
    (
        Circle | Square,
        st.builds(Circle, st.just("circle"), any_floats)
        | st.builds(Square, st.just("square"), any_floats),
    ),
    (Link, st.builds(Link, ints, st.none() | st.builds(Link, ints))),
]


@pytest.mark.parametrize(
    ("tp", "strategy"), [pytest.param(tp, s, id=repr(tp)) for tp, s in FLOAT_TYPES]
)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_compiled_check_refuses_exactly_the_values_over_the_limits(
    tp: Any, strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    """The check compiled from a type agrees with the thorough walk on its values."""
    check, _ = value_check(tp)
    assert check is not None
    unstructured = CONVERTER.unstructure(data.draw(strategy), tp)
    assert check(unstructured) == within_limits(unstructured)


def test_types_that_bound_their_values_need_no_check() -> None:
    """No float, no None, no recursion: nothing to look at before sending."""
    for tp in (int, str, bool, bytes, list[int], dict[str, int], tuple[int, str], Plain):
        assert value_check(tp) == (None, False), tp
    # A slot that accepts None is looked at: a nan sent there by mistake would arrive as None.
    check, deep = value_check(int | None)
    assert check is not None
    assert not deep
    assert not check(NAN)
    assert check(None)
    assert check(3)
    # A recursive type is walked, on both sides, for its depth.
    assert value_check(Link) == (within_limits, True)


class Level(float, enum.Enum):
    LOW = 0.5
    OFF = NAN


def test_enum_and_literal_values_the_wire_cannot_carry_are_refused_at_declaration() -> None:
    with pytest.raises(TypeError, match=r"parameter 'level'.*Level has the value nan"):

        class Bad(RpcInterface):
            interface_name = "test.Bad"
            interface_version = "1.0.0"

            async def set(self, level: Level) -> None: ...

    with pytest.raises(TypeError, match=r"return type.*outside the integers"):

        class Huge(RpcInterface):
            interface_name = "test.Huge"
            interface_version = "1.0.0"

            async def get(self) -> Literal[18446744073709551616]: ...


def test_json_numbers_too_large_for_a_double_are_refused_saying_why() -> None:
    for data in (b"[1e999]", b"[-1e400]", b"[NaN]", b"[Infinity]", b"[-Infinity]"):
        with pytest.raises(tether.InvalidRequest, match="JSON numbers are finite"):
            loads(data)


# ---------------------------------------------------------------------------
# RPC: the sender refuses before sending, naming the parameter and the field

NON_FINITE_ARGUMENTS = [
    pytest.param("maybe", (NAN,), "x", "x", id="float-or-none"),
    pytest.param("number", (-INF,), "x", "x", id="float"),
    pytest.param("count", (NAN,), "n", "n", id="int-or-none-given-nan"),
    pytest.param(
        "readings", ([Reading(1.0), Reading(INF)],), "readings", "readings[1].value", id="list"
    ),
    pytest.param(
        "readings", ([Reading(1.0, error=NAN)],), "readings", "readings[0].error", id="optional"
    ),
    pytest.param(
        "series", (Series("s", [0.5, NAN]),), "series", "series.values[1]", id="dataclass"
    ),
    pytest.param("table", ({"a": 1.0, "b": INF},), "table", "table.b", id="dict-value"),
    pytest.param("pair", ((1, NAN),), "pair", "pair[1]", id="tuple"),
    pytest.param("shape", (Square("square", -INF),), "shape", "shape.side", id="union"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("op", "args", "parameter", "path"), NON_FINITE_ARGUMENTS)
async def test_a_non_finite_float_argument_is_refused_before_anything_is_sent(
    transport: str, op: str, args: tuple[Any, ...], parameter: str, path: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with connected(transport) as c:
            client: Any = c.rpc.get_client(Measure)
            with pytest.raises(tether.InvalidRequest, match="JSON numbers are finite") as info:
                await getattr(client, op)(*args)
            assert info.value.remote is False
            assert info.value.details == {"parameter": parameter, "path": path}
            assert f"argument {parameter!r}" in info.value.message
            assert c.impl.calls == []  # nothing reached the backend


OUT_OF_RANGE_ARGUMENTS = [
    pytest.param("count", (MAX_INT + 1,), "n", "n", id="scalar-above"),
    pytest.param("count", (MIN_INT - 1,), "n", "n", id="scalar-below"),
    pytest.param("counts", ([1, 2, 2**70],), "ns", "ns[2]", id="list"),
    pytest.param("pair", ((-(2**100), 0.5),), "pair", "pair[0]", id="tuple"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("op", "args", "parameter", "path"), OUT_OF_RANGE_ARGUMENTS)
async def test_an_int_outside_64_bits_is_invalid_request_naming_the_parameter(
    transport: str, op: str, args: tuple[Any, ...], parameter: str, path: str
) -> None:
    """It used to be a bare TypeError from orjson."""
    with trio.fail_after(TIMEOUT):
        async with connected(transport) as c:
            client: Any = c.rpc.get_client(Measure)
            with pytest.raises(tether.InvalidRequest, match="outside the integers") as info:
                await getattr(client, op)(*args)
            assert info.value.remote is False
            assert info.value.details == {"parameter": parameter, "path": path}
            assert c.impl.calls == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_ints_at_the_bounds_and_finite_floats_cross(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with connected(transport) as c:
            client = c.rpc.get_client(Measure)
            assert await client.counts([MIN_INT, MAX_INT]) == 2
            assert await client.count(MAX_INT) == MAX_INT
            assert await client.count(MIN_INT) == MIN_INT
            assert await client.maybe(None) is None
            assert await client.maybe(1e308) == 1e308
            assert await client.readings([Reading(1e308), Reading(1e308)]) == 2  # sums to inf
            assert await client.give("one") == 1.5


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_value_nested_deeper_than_the_limit_is_refused_before_sending(
    transport: str,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with connected(transport) as c:
            client = c.rpc.get_client(Measure)
            assert await client.chain(_chain(MAX_DEPTH)) == MAX_DEPTH
            c.impl.calls.clear()
            # Just past the limit; past orjson's (it gave a bare TypeError); past
            # Python's recursion limit (unstructuring itself gave up).
            for depth in (MAX_DEPTH + 1, 300, 5000):
                with pytest.raises(tether.InvalidRequest, match="nests deeper than 100") as info:
                    await client.chain(_chain(depth))
                assert info.value.remote is False
                assert info.value.details["parameter"] == "link"
                assert info.value.details["path"].startswith("link")
            assert c.impl.calls == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_result_over_the_limits_is_refused_by_the_backend(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The impl's nan does not arrive as None, nor its huge int as a 500."""
    with trio.fail_after(TIMEOUT):
        async with connected(transport) as c:
            client = c.rpc.get_client(Measure)
            for kind in ("nan", "inf", "-inf"):
                with pytest.raises(tether.InvalidRequest, match="JSON numbers are finite") as info:
                    await client.give(kind)
                assert info.value.remote is True
                assert info.value.details["path"] == "result"
                assert "test.Measure.give" in info.value.message
            with pytest.raises(tether.InvalidRequest, match="outside the integers") as info:
                await client.give_counts(70)
            assert info.value.remote is True
            assert info.value.details["path"] == "result[1]"
    assert "cannot be sent" in caplog.text  # the backend's own log says so too


class EncodingBackend(RpcBackend):
    """Encodes each call as a transport would, and answers it with 1.5."""

    def __init__(self) -> None:
        self.sent: list[Call] = []

    @property
    def options(self) -> ClientOptions:
        return ClientOptions()

    @property
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        return {"test.Measure": InterfaceInfo("1.0.0", ("number",))}

    async def request(self, call: Call) -> Result | Error:
        decoded = decode(encode(call))
        assert isinstance(decoded, Call)
        self.sent.append(decoded)
        return Result(call.id, 1.5)


@pytest.mark.parametrize("seconds", [1e300, 1e307])
async def test_a_huge_deadline_is_carried_not_a_bare_exception(seconds: float) -> None:
    """move_on_after(1e300) made a 304-digit timeout_ms that orjson refused with a bare
    TypeError, and 1e307 an OverflowError: the time left is capped instead."""
    backend = EncodingBackend()
    with trio.move_on_after(seconds):
        assert await backend.get_client(Measure).number(2.5) == 1.5
    assert backend.sent[0].timeout_ms == MAX_TIMEOUT_MS


# ---------------------------------------------------------------------------
# The receiver: the same limits for what arrives


async def _raw_call(stream: Any, call_id: int, op: str, args: list[Any]) -> Any:
    call = Call(call_id, "test.Measure", "1.0.0", op, args, CallContext("a"), None)
    await stream.send_message(encode(call))
    return decode(await stream.receive_message())


async def test_the_backend_refuses_a_value_nested_too_deep_naming_the_parameter() -> None:
    """The server used to run the impl past the limit, and give up past 245 levels with
    'maximum recursion depth exceeded'."""
    impl = MeasureImpl()
    manager = tether.RpcManager()
    manager.register_impl(Measure, impl)
    client, server = memory.stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_rpc_session, manager, server)
            await client.send_message(encode(Hello(PROTOCOL_VERSION)))
            assert isinstance(decode(await client.receive_message()), Welcome)
            # (orjson encodes no more than about 250 levels, this message included)
            for call_id, depth in enumerate((MAX_DEPTH + 1, 245, 250), start=1):
                reply = await _raw_call(client, call_id, "chain", [_nested_chain(depth)])
                assert isinstance(reply, Error), reply
                assert reply.error.code == "bad-request"
                assert reply.error.details["parameter"] == "link"
                assert f"nests deeper than {MAX_DEPTH}" in reply.error.message
                assert "recursion" not in reply.error.message
            reply = await _raw_call(client, 9, "chain", [_nested_chain(MAX_DEPTH)])
            assert reply.value == MAX_DEPTH
            assert impl.calls == ["chain"]
            await client.aclose()


MAYBE = "/test.Measure/1.0.0/maybe"


async def test_the_http_backend_refuses_non_finite_numbers_and_deep_values() -> None:
    with trio.fail_after(TIMEOUT):
        async with connected("http") as c, httpx.AsyncClient(base_url=str(c.url)) as raw:
            headers = {"content-type": "application/json"}
            for body in (b"[1e999]", b"[-1e400]", b"[NaN]", b"[Infinity]"):
                response = await raw.post(MAYBE, content=body, headers=headers)
                assert response.status_code == 400, body
                assert "JSON numbers are finite" in response.json()["error"]["message"]
            body = orjson.dumps([_nested_chain(250)])
            response = await raw.post("/test.Measure/1.0.0/chain", content=body, headers=headers)
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["details"]["parameter"] == "link"
            assert "recursion" not in error["message"]
            # The ints orjson reads as floats past 64 bits are not ints.
            body = b"[18446744073709551616]"
            response = await raw.post("/test.Measure/1.0.0/count", content=body, headers=headers)
            assert response.status_code == 400
            assert c.impl.calls == []


# ---------------------------------------------------------------------------
# IPC: proxies, notifiers, the untyped calls and sends, results


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_ipc_arguments_over_the_limits_are_refused_naming_them(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with connected(transport) as c:
            proxy = c.ipc.proxy(MeasureIpc)
            with pytest.raises(tether.InvalidRequest, match="JSON numbers are finite") as info:
                await proxy.maybe(NAN)
            assert info.value.details == {"parameter": "x", "path": "x"}
            with pytest.raises(tether.InvalidRequest, match="outside the integers") as info:
                await proxy.counts([0, 2**64])
            assert info.value.details == {"parameter": "ns", "path": "ns[1]"}
            with pytest.raises(tether.InvalidRequest, match="nests deeper") as info:
                await proxy.chain(_chain(MAX_DEPTH + 1))
            assert info.value.details["parameter"] == "link"
            # The untyped call: arguments by position.
            with pytest.raises(tether.InvalidRequest, match="JSON numbers are finite") as info:
                await c.ipc.call_backend("test.measure", "maybe", INF)
            assert info.value.details == {"path": "args[0]"}
            with pytest.raises(tether.InvalidRequest, match="outside the integers") as info:
                await c.ipc.call_backend("test.measure", "counts", [2**64])
            assert info.value.details == {"path": "args[0][0]"}
            with pytest.raises(tether.InvalidRequest, match="nests deeper"):
                await c.ipc.call_backend("test.measure", "chain", _nested_chain(MAX_DEPTH + 1))
            # One-way messages to the backend, typed and untyped.
            with pytest.raises(tether.InvalidRequest, match="JSON numbers are finite"):
                await c.ipc.send("test.measure", "maybe", NAN)
            with pytest.raises(tether.InvalidRequest, match="JSON numbers are finite"):
                await c.ipc.notifier(MeasureEvents).level(-INF)
            # The session is fine, and values inside the limits cross.
            assert await proxy.maybe(None) is None
            assert await proxy.counts([MIN_INT, MAX_INT]) == 2
            assert await c.ipc.call_backend("test.measure", "chain", _nested_chain(3)) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_ipc_results_and_notifications_over_the_limits_are_refused(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with connected(transport) as c:
            received: list[Any] = []
            c.ipc.add_listener("test.measure-events", lambda method, *args: received.append(args))
            proxy = c.ipc.proxy(MeasureIpc)
            with pytest.raises(tether.InvalidRequest, match="JSON numbers are finite") as info:
                await proxy.give("nan")
            assert info.value.remote is True
            assert info.value.details["path"] == "result"
            for kind, words in (
                ("typed", "JSON numbers are finite"),
                ("typed-int", "outside the integers"),
                ("untyped", "JSON numbers are finite"),
            ):
                assert words in await proxy.push(kind)
            assert await proxy.give("one") == 1.5
            assert received == []  # no notification went out (as a null, say)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_error_fields_over_the_limits_are_not_sent_as_null(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with connected(transport) as c:
            client = c.rpc.get_client(Measure)
            # An application error whose field is inf cannot be rebuilt with it:
            # the caller gets a RemoteError, not an Overflow whose level is None.
            with pytest.raises(tether.RemoteError) as remote:
                await client.fail("application")
            assert remote.value.remote_type == "test.Overflow"
            # A nan in an error's details: the details are dropped, not nulled.
            with pytest.raises(tether.InvalidRequest) as info:
                await client.fail("details")
            assert info.value.remote is True
            assert "level" not in info.value.details
