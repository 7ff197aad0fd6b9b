"""Stream declarations, the stream messages, and the credit arithmetic (no transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import pytest
import trio

import tether
from tether.runtime._protocol import Credit, End, Item, Ready, Send, decode, encode
from tether.runtime._streams import Inflow, Outflow, StreamCall


@attrs.frozen
class Position:
    x: float
    y: float


class Telemetry(tether.RpcInterface):
    interface_name = "TelemetryDeclare"
    interface_version = "1.0.0"

    def watch(self, robot_id: str, every: float) -> tether.Stream[Position]: ...

    async def upload(self, key: str, chunks: tether.Stream[bytes]) -> int: ...

    def steer(self, commands: tether.Stream[Position]) -> tether.Stream[Position]: ...

    async def snapshot(self, key: str) -> bytes: ...


def test_operations_know_their_streams() -> None:
    ops = Telemetry.__tether_operations__
    assert (ops["watch"].stream_param, ops["watch"].stream_result) == (None, True)
    assert (ops["upload"].stream_param, ops["upload"].stream_result) == (1, False)
    assert (ops["steer"].stream_param, ops["steer"].stream_result) == (0, True)
    assert (ops["snapshot"].stream_param, ops["snapshot"].stream_result) == (None, False)


def test_a_stream_result_is_declared_with_plain_def() -> None:
    with pytest.raises(TypeError, match=r"returns a stream: declare it with a plain 'def'"):

        class Bad(tether.RpcInterface):
            interface_name = "BadAsyncStream"
            interface_version = "1.0.0"

            async def watch(self) -> tether.Stream[int]: ...


def test_a_plain_def_must_return_a_stream() -> None:
    with pytest.raises(TypeError, match=r"must be declared with 'async def'"):

        class Bad(tether.RpcInterface):
            interface_name = "BadPlainDef"
            interface_version = "1.0.0"

            def count(self) -> int: ...  # type: ignore[empty-body]


def test_at_most_one_stream_parameter() -> None:
    with pytest.raises(TypeError, match=r"parameter 'b': a second stream parameter"):

        class Bad(tether.RpcInterface):
            interface_name = "BadTwoStreams"
            interface_version = "1.0.0"

            async def merge(self, a: tether.Stream[int], b: tether.Stream[int]) -> int: ...


def test_a_stream_item_type_must_be_carriable() -> None:
    with pytest.raises(TypeError, match=r"operation BadItem.watch: return type: .*cannot be"):

        class Bad(tether.RpcInterface):
            interface_name = "BadItem"
            interface_version = "1.0.0"

            def watch(self) -> tether.Stream[object]: ...


def test_a_bare_stream_is_refused() -> None:
    with pytest.raises(TypeError, match=r"bare Stream"):

        class Bad(tether.RpcInterface):
            interface_name = "BadBare"
            interface_version = "1.0.0"

            def watch(self) -> tether.Stream: ...  # type: ignore[type-arg]


def test_an_impl_of_a_stream_is_an_async_generator() -> None:
    class Good(Telemetry):
        async def watch(self, robot_id: str, every: float) -> AsyncIterator[Position]:
            yield Position(0, 0)

    with pytest.raises(TypeError, match=r"returns a stream: make it an async generator"):

        class Bad(Telemetry):
            async def watch(self, robot_id: str, every: float) -> AsyncIterator[Position]:  # type: ignore[override]
                return Good().watch(robot_id, every)

    assert Good.__tether_interface__ is Telemetry


def test_notifications_carry_no_streams() -> None:
    with pytest.raises(TypeError, match=r"cannot carry a stream"):

        class Bad(tether.NotificationInterface):
            channel_name = "bad-stream-events"

            async def moved(self, where: tether.Stream[int]) -> None: ...


def test_ipc_methods_take_streams() -> None:
    class Channel(tether.IpcInterface):
        channel_name = "stream-channel"
        version = "1.0.0"

        def follow(self, key: str) -> tether.Stream[int]: ...

    assert Channel.__tether_operations__["follow"].stream_result


@pytest.mark.parametrize(
    "message",
    [
        Item(3, {"x": 1}),
        Item(3, None),
        Credit(4, 256, 1 << 22),
        Send(5, [1, 2]),
        End(6),
        Ready(7, 1, 2),
    ],
)
def test_stream_messages_round_trip(message: object) -> None:
    assert decode(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"t":"item","id":1}', "value"),
        (b'{"t":"credit","id":1,"items":-1,"bytes":2}', "items"),
        (b'{"t":"ready","id":1,"items":1}', "bytes"),
        (b'{"t":"send","id":"1","value":1}', "id"),
        (b'{"t":"end"}', "id"),
    ],
)
def test_malformed_stream_messages_name_the_field(data: bytes, field: str) -> None:
    with pytest.raises(tether.InvalidRequest) as info:
        decode(data)
    assert info.value.details["field"] == field


def test_inflow_refuses_items_past_credit_and_grants_back_by_halves() -> None:
    inflow = Inflow(tether.StreamWindow(items=4, bytes=1000))
    assert inflow.initial_grant() == (4, 1000)
    for n in range(4):
        inflow.put(n, 10)
    with pytest.raises(tether.InvalidRequest, match="past its credit"):
        inflow.put(4, 10)
    assert inflow.take_nowait() == 0
    assert inflow.grant_due() is None
    assert inflow.take_nowait() == 1
    assert inflow.grant_due() == (2, 20)
    inflow.put(4, 10)
    inflow.put(5, 10)
    with pytest.raises(tether.InvalidRequest):
        inflow.put(6, 10)


def test_inflow_byte_credit_lets_one_large_item_through_alone() -> None:
    inflow = Inflow(tether.StreamWindow(items=10, bytes=100))
    inflow.initial_grant()
    inflow.put(b"big", 500)
    with pytest.raises(tether.InvalidRequest):
        inflow.put(b"next", 1)


def test_outflow_waits_for_items_and_bytes() -> None:
    outflow = Outflow()
    assert not outflow.may_send()
    outflow.grant(1, 10)
    assert outflow.may_send()
    outflow.spend(50)
    assert not outflow.may_send()
    outflow.grant(1, 40)
    assert not outflow.may_send()  # byte credit still spent by the large item
    outflow.grant(0, 11)
    assert outflow.may_send()


def test_stream_window_checks_its_numbers() -> None:
    with pytest.raises(ValueError, match="items must be a positive int"):
        tether.StreamWindow(items=0)
    with pytest.raises(ValueError, match="bytes must be a positive int"):
        tether.StreamWindow(bytes=True)


async def test_open_stream_closes_a_plain_async_generator() -> None:
    closed = trio.Event()

    async def numbers() -> AsyncIterator[int]:
        try:
            for n in range(100):
                yield n
        finally:
            closed.set()

    async with tether.open_stream(numbers()) as items:
        async for n in items:
            if n == 2:
                break
    assert closed.is_set()


async def test_a_stream_call_is_not_iterable_outside_open_stream() -> None:
    call: StreamCall[int] = StreamCall(Telemetry.__tether_operations__["watch"], lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"tether.open_stream"):
        async for _ in call:  # pragma: no cover - raises at once
            pass
