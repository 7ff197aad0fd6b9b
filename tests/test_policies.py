"""Operation policies: declared once on the interface, described by every backend."""

from __future__ import annotations

import pytest
import trio

import tether
from tether.runtime import CachePolicy, LongRunningPolicy, OperationPolicy
from tether.runtime._protocol import InterfaceInfo, Welcome, decode, encode
from tether.transports import memory


class Catalog(tether.RpcInterface):
    interface_name = "PolicyCatalog"
    interface_version = "1.0.0"

    async def add(self, name: str) -> int: ...

    @tether.idempotent
    async def count(self) -> int: ...

    @tether.cacheable(max_age=60)
    async def title(self, key: str) -> str: ...

    @tether.cacheable(immutable=True)
    async def schema(self, version: int) -> str: ...

    @tether.long_running(poll_interval=0.5, ready_within=2.0, keep_result=30)
    async def rebuild(self) -> int: ...


class CatalogImpl(Catalog):
    async def add(self, name: str) -> int:
        return 1

    async def count(self) -> int:
        return 1

    async def title(self, key: str) -> str:
        return key

    async def schema(self, version: int) -> str:
        return str(version)

    async def rebuild(self) -> int:
        return 0


def test_decorators_set_the_operation_policy() -> None:
    ops = Catalog.__tether_operations__
    assert ops["add"].policy == OperationPolicy()
    assert ops["count"].policy == OperationPolicy(idempotent=True)
    # Cacheable implies idempotent: a GET is safe to repeat.
    assert ops["title"].policy == OperationPolicy(idempotent=True, cache=CachePolicy(60.0))
    assert ops["schema"].policy.cache == CachePolicy(31_536_000, immutable=True)
    assert ops["rebuild"].policy.long_running == LongRunningPolicy(0.5, 2.0, 30.0)
    assert not ops["rebuild"].policy.idempotent


def test_decorators_stack_in_either_order() -> None:
    class Both(tether.RpcInterface):
        interface_name = "PolicyBoth"
        interface_version = "1.0.0"

        @tether.idempotent
        @tether.long_running
        async def a(self) -> int: ...

        @tether.long_running
        @tether.idempotent
        async def b(self) -> int: ...

    for name in ("a", "b"):
        policy = Both.__tether_operations__[name].policy
        assert policy.idempotent
        assert policy.long_running == LongRunningPolicy()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({}, "exactly one"),
        ({"max_age": 5, "immutable": True}, "exactly one"),
        ({"max_age": 0}, "positive number"),
        ({"max_age": float("inf")}, "positive number"),
        ({"max_age": True}, "positive number"),
        ({"immutable": 1}, "True or False"),
    ],
)
def test_cacheable_refuses_bad_arguments(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        tether.cacheable(**kwargs)  # type: ignore[arg-type]


def test_long_running_refuses_bad_times() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        tether.long_running(poll_interval=-1)
    with pytest.raises(ValueError, match="keep_result"):
        tether.long_running(keep_result=0)


def test_a_stream_operation_cannot_be_cacheable_or_long_running() -> None:
    with pytest.raises(TypeError, match="stream"):

        class Streamy(tether.RpcInterface):
            interface_name = "PolicyStreamy"
            interface_version = "1.0.0"

            @tether.cacheable(max_age=1)
            def watch(self) -> tether.Stream[int]: ...

    # A stream may be idempotent (reopened from scratch).
    class Fine(tether.RpcInterface):
        interface_name = "PolicyFine"
        interface_version = "1.0.0"

        @tether.idempotent
        def watch(self) -> tether.Stream[int]: ...

    assert Fine.__tether_operations__["watch"].policy.idempotent


def test_cacheable_and_long_running_together_is_refused() -> None:
    with pytest.raises(TypeError, match="both cacheable and long-running"):

        class Odd(tether.RpcInterface):
            interface_name = "PolicyOdd"
            interface_version = "1.0.0"

            @tether.cacheable(max_age=1)
            @tether.long_running
            async def op(self) -> int: ...


def test_idempotent_refuses_a_non_function() -> None:
    with pytest.raises(TypeError, match="decorates an operation"):
        tether.idempotent(3)  # type: ignore[type-var]


def test_policies_round_trip_through_the_welcome() -> None:
    manager = tether.RpcManager()
    manager.register_impl(Catalog, CatalogImpl())
    info = manager.describe()["PolicyCatalog"]
    assert set(info.policies) == {"count", "title", "schema", "rebuild"}
    welcome = Welcome(1, "s", interfaces={"PolicyCatalog": info})
    data = encode(welcome)
    assert b'"policies"' in data
    assert decode(data) == welcome


def test_an_interface_without_policies_describes_none() -> None:
    info = InterfaceInfo("1.0.0", ("a",))
    assert info.to_json() == {"version": "1.0.0", "operations": ["a"]}


def test_unknown_or_malformed_policies_are_ignored_not_fatal() -> None:
    info = InterfaceInfo.from_json(
        {
            "version": "1.0.0",
            "operations": ["a", "b", "c"],
            "policies": {
                "a": {"idempotent": True, "future_thing": {"x": 1}},
                "b": {"cache": "soon"},
                "c": 7,
            },
        }
    )
    assert info.policies == {"a": OperationPolicy(idempotent=True)}


async def test_a_client_sees_the_policies_the_backend_described() -> None:
    manager = tether.RpcManager()
    manager.register_impl(Catalog, CatalogImpl())
    with trio.fail_after(10):
        async with memory.connect(manager, interfaces=[Catalog]) as backend:
            described = backend.interfaces["PolicyCatalog"].policies
    assert described["title"].cache == CachePolicy(60.0)
    assert described["count"].idempotent
    assert "add" not in described
