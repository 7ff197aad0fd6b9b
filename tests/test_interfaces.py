"""RpcInterface declarations (checked at class creation) and RpcManager.register_impl."""

import abc
import re
import typing
import uuid
from typing import Any

import attrs
import pytest

import tether
from tether.runtime import Operation
from tether.runtime._codec import dumps, loads
from tether.runtime._interfaces import operations_of

# Annotations here are evaluated eagerly (no `from __future__ import annotations`),
# so interfaces declared inside test functions can use these module-level types.


@attrs.frozen
class IModelProps:
    key: str
    id: uuid.UUID


@attrs.frozen
class Robot:
    name: str
    where: tuple[float, float]


@attrs.frozen
class Circle:
    kind: typing.Literal["circle"]
    radius: float


@attrs.frozen
class Square:
    kind: typing.Literal["square"]
    side: float


class Plain:
    pass


IMODEL = IModelProps("imodel-1", uuid.UUID("12345678-1234-5678-1234-567812345678"))
IMODEL_JSON = {"key": "imodel-1", "id": "12345678-1234-5678-1234-567812345678"}


class RobotWorld(tether.RpcInterface):
    interface_name = "test_interfaces.RobotWorld"
    interface_version = "1.0.0"

    async def count_robots(self, imodel: IModelProps, limit: int = 10) -> int: ...

    async def robots(
        self, imodel: IModelProps, names: list[str], near: Robot | None
    ) -> list[Robot]: ...

    async def ping(self) -> None: ...


class RobotWorldImpl(RobotWorld):
    instances = 0

    def __init__(self) -> None:
        type(self).instances += 1

    async def count_robots(self, imodel: IModelProps, limit: int = 10) -> int:
        return min(len(imodel.key), limit)

    async def robots(
        self, imodel: IModelProps, names: list[str], near: Robot | None
    ) -> list[Robot]:
        return [Robot(name, (0.0, 0.0)) for name in names]

    async def ping(self) -> None:
        return None


# ---------------------------------------------------------------------------
# Declaration checks


def test_sync_public_method_is_refused() -> None:
    """A public `def` on an interface is a TypeError naming interface.operation."""
    with pytest.raises(
        TypeError, match=r"operation t\.SyncOp\.count must be declared with 'async def'"
    ):

        class SyncOp(tether.RpcInterface):
            interface_name = "t.SyncOp"
            interface_version = "1.0.0"

            def count(self) -> int: ...


def test_parameter_without_annotation_is_refused() -> None:
    """Every parameter must be annotated; the message names the operation and parameter."""
    with pytest.raises(
        TypeError, match=r"operation t\.NoAnn\.count: parameter 'imodel' has no annotation"
    ):

        class NoAnn(tether.RpcInterface):
            interface_name = "t.NoAnn"
            interface_version = "1.0.0"

            async def count(self, imodel) -> int: ...  # type: ignore[no-untyped-def]


def test_missing_return_annotation_is_refused() -> None:
    """An operation without `-> T` is refused (it must say `-> None`)."""
    with pytest.raises(TypeError, match=r"operation t\.NoReturn\.count has no return annotation"):

        class NoReturn(tether.RpcInterface):
            interface_name = "t.NoReturn"
            interface_version = "1.0.0"

            async def count(self, imodel: IModelProps):  # type: ignore[no-untyped-def]
                ...


@pytest.mark.parametrize(
    ("annotation", "culprit"),
    [
        (Any, "Any"),
        (Plain, "Plain"),
        (object, "object"),
        (list, "bare list"),
        (dict[tuple[int, int], str], "dict key type"),
        (list[Any], "Any"),
    ],
    ids=["Any", "plain-class", "object", "bare-list", "tuple-key", "list-of-Any"],
)
def test_parameter_of_uncarriable_type_is_refused(annotation: Any, culprit: str) -> None:
    """A parameter type the codec cannot carry is refused, naming op, parameter and type."""

    async def count(self: Any, thing: int) -> int: ...

    count.__annotations__["thing"] = annotation
    with pytest.raises(TypeError) as info:
        type(
            "BadParam",
            (tether.RpcInterface,),
            {"interface_name": "t.BadParam", "interface_version": "1.0.0", "count": count},
        )
    message = str(info.value)
    assert "operation t.BadParam.count" in message
    assert "parameter 'thing'" in message
    assert culprit in message


def test_return_of_uncarriable_type_is_refused() -> None:
    """The return type is checked like the parameters."""
    with pytest.raises(
        TypeError, match=r"operation t\.BadReturn\.get: return type: Plain cannot be carried"
    ):

        class BadReturn(tether.RpcInterface):
            interface_name = "t.BadReturn"
            interface_version = "1.0.0"

            async def get(self) -> Plain: ...


@pytest.mark.parametrize(
    ("signature", "param", "kind"),
    [
        ("async def op(self, *names: str) -> None: ...", "names", "variadic positional"),
        ("async def op(self, **opts: int) -> None: ...", "opts", "variadic keyword"),
        ("async def op(self, a: int, *, b: int) -> None: ...", "b", "keyword-only"),
    ],
)
def test_variadic_and_keyword_only_parameters_are_refused(
    signature: str, param: str, kind: str
) -> None:
    """*args, **kwargs and keyword-only parameters do not fit a positional wire list."""
    namespace: dict[str, Any] = {}
    exec(signature, namespace)
    with pytest.raises(TypeError) as info:
        type(
            "Variadic",
            (tether.RpcInterface,),
            {"interface_name": "t.Variadic", "interface_version": "1.0.0", "op": namespace["op"]},
        )
    message = str(info.value)
    assert "operation t.Variadic.op" in message
    assert f"parameter {param!r}" in message
    assert kind in message


@pytest.mark.parametrize(
    "attributes",
    [
        {"interface_version": "1.0.0"},
        {"interface_name": "", "interface_version": "1.0.0"},
        {"interface_name": "a/b", "interface_version": "1.0.0"},
        {"interface_name": 3, "interface_version": "1.0.0"},
        {"interface_name": None, "interface_version": "1.0.0"},
    ],
    ids=["missing", "empty", "slash", "int", "None"],
)
def test_missing_or_invalid_interface_name_is_refused(attributes: dict[str, Any]) -> None:
    """interface_name must be a non-empty string without '/' (it is a URL segment)."""
    with pytest.raises(TypeError, match=r"BadName\.interface_name must be a non-empty string"):
        type("BadName", (tether.RpcInterface,), dict(attributes))


@pytest.mark.parametrize(
    "attributes",
    [
        {"interface_name": "t.BadVersion"},
        {"interface_name": "t.BadVersion", "interface_version": "1.0"},
        {"interface_name": "t.BadVersion", "interface_version": "v1.0.0"},
        {"interface_name": "t.BadVersion", "interface_version": 3},
        {"interface_name": "t.BadVersion", "interface_version": (1, 0, 0)},
    ],
    ids=["missing", "two-parts", "v-prefix", "int", "tuple"],
)
def test_missing_or_invalid_interface_version_is_refused(attributes: dict[str, Any]) -> None:
    """interface_version must be a semver string such as '1.0.0'."""
    with pytest.raises(TypeError, match=r"BadVersion\.interface_version"):
        type("BadVersion", (tether.RpcInterface,), dict(attributes))


def test_subclass_with_neither_attribute_is_refused() -> None:
    """A direct RpcInterface subclass that declares nothing is a mistake, caught at once."""
    with pytest.raises(TypeError, match=r"Nameless derives from RpcInterface but sets neither"):

        class Nameless(tether.RpcInterface):
            async def op(self) -> None: ...


def test_only_public_async_defs_are_operations() -> None:
    """Private methods, sync helpers, attributes, static/class methods are not operations."""

    class Mixed(tether.RpcInterface):
        interface_name = "t.Mixed"
        interface_version = "0.1.0"
        limit = 3
        names: typing.ClassVar[list[str]] = ["x"]

        async def public_op(self, a: int) -> int: ...

        async def other_op(self) -> str: ...

        async def _private_op(self, a: Any) -> Any: ...

        def _helper(self, anything: Any) -> Any: ...

        @staticmethod
        def make() -> None: ...

        @classmethod
        def build(cls) -> None: ...

        @property
        def size(self) -> int:
            return 1

    operations = operations_of(Mixed)
    assert set(operations) == {"public_op", "other_op"}
    op = operations["public_op"]
    assert isinstance(op, Operation)
    assert op.qualname == "t.Mixed.public_op"
    assert op.param_names == ("a",)
    assert op.param_types == (int,)
    assert op.return_type is int
    assert op.required == 1


def test_operations_keep_declaration_order() -> None:
    """Operations are listed in the order they are declared (describe() shows that order)."""
    assert list(operations_of(RobotWorld)) == ["count_robots", "robots", "ping"]


def test_derived_interface_inherits_operations() -> None:
    """A derived interface serves its parent's operations plus its own, under its own name."""

    class Base(tether.RpcInterface):
        interface_name = "t.Base"
        interface_version = "1.0.0"

        async def base_op(self, a: int) -> int: ...

    class Derived(Base):
        interface_name = "t.Derived"
        interface_version = "2.0.0"

        async def derived_op(self) -> str: ...

    assert set(operations_of(Base)) == {"base_op"}
    assert set(operations_of(Derived)) == {"base_op", "derived_op"}
    assert operations_of(Derived)["base_op"].qualname == "t.Derived.base_op"
    assert operations_of(Base)["base_op"].qualname == "t.Base.base_op"


def test_impl_overriding_an_operation_with_sync_def_is_refused() -> None:
    """An impl must keep every operation `async def`; the message names both sides."""
    with pytest.raises(
        TypeError,
        match=re.escape(
            "SyncImpl.ping implements operation test_interfaces.RobotWorld.ping and must be "
            "'async def'"
        ),
    ):

        class SyncImpl(RobotWorldImpl):
            def ping(self) -> None:  # type: ignore[override]
                return None


def test_impl_may_add_public_helpers() -> None:
    """Extra public methods on an impl are not operations and are allowed."""

    class HelperImpl(RobotWorldImpl):
        def helper(self) -> int:
            return 1

    assert set(operations_of(HelperImpl)) == set(operations_of(RobotWorld))


# ---------------------------------------------------------------------------
# register_impl


def test_register_impl_class_is_instantiated_once() -> None:
    """Passing the impl class makes one instance, whose bound methods handle the calls."""
    manager = tether.RpcManager()
    before = RobotWorldImpl.instances
    manager.register_impl(RobotWorld, RobotWorldImpl)
    assert RobotWorldImpl.instances == before + 1
    registration = manager.lookup(RobotWorld.interface_name)
    assert registration is not None
    assert type(registration.impl) is RobotWorldImpl
    assert registration.handlers["ping"].__self__ is registration.impl  # type: ignore[attr-defined]
    assert RobotWorldImpl.instances == before + 1


def test_register_impl_accepts_an_instance() -> None:
    """Passing an instance serves that very object."""
    manager = tether.RpcManager()
    impl = RobotWorldImpl()
    manager.register_impl(RobotWorld, impl)
    registration = manager.lookup(RobotWorld.interface_name)
    assert registration is not None
    assert registration.impl is impl


async def test_registered_handlers_call_the_impl() -> None:
    """The handler table calls the impl's own coroutine methods."""
    manager = tether.RpcManager()
    manager.register_impl(RobotWorld, RobotWorldImpl)
    registration = manager.lookup(RobotWorld.interface_name)
    assert registration is not None
    assert await registration.handlers["count_robots"](IMODEL, 3) == 3


def test_describe_lists_version_and_operations() -> None:
    """describe() says what is served: version and operations, per interface name."""
    manager = tether.RpcManager()
    manager.register_impl(RobotWorld, RobotWorldImpl)
    info = manager.describe()[RobotWorld.interface_name]
    assert info.version == "1.0.0"
    assert info.operations == ("count_robots", "robots", "ping")


def test_register_impl_refuses_a_class_that_is_not_a_subclass() -> None:
    """An impl must subclass the interface it implements."""

    class Unrelated:
        async def count_robots(self, imodel: IModelProps, limit: int = 10) -> int:
            return 0

    manager = tether.RpcManager()
    with pytest.raises(TypeError, match=r"Unrelated does not implement RobotWorld"):
        manager.register_impl(RobotWorld, Unrelated)  # type: ignore[type-var]
    with pytest.raises(TypeError, match=r"Unrelated does not implement RobotWorld"):
        manager.register_impl(RobotWorld, Unrelated())  # type: ignore[call-overload]
    assert manager.lookup(RobotWorld.interface_name) is None


def test_register_impl_refuses_an_impl_missing_operations() -> None:
    """Every operation must be implemented; the message names those that are not."""

    class Partial(RobotWorld):
        async def ping(self) -> None:
            return None

    manager = tether.RpcManager()
    with pytest.raises(TypeError, match=r"Partial does not implement count_robots, robots of"):
        manager.register_impl(RobotWorld, Partial)
    assert manager.lookup(RobotWorld.interface_name) is None


def test_register_impl_sees_operations_implemented_by_a_base_impl() -> None:
    """An operation implemented higher up the impl's hierarchy counts as implemented."""

    class Child(RobotWorldImpl):
        pass

    manager = tether.RpcManager()
    manager.register_impl(RobotWorld, Child)
    registration = manager.lookup(RobotWorld.interface_name)
    assert registration is not None
    assert type(registration.impl) is Child


def test_register_impl_refuses_a_second_registration() -> None:
    """One impl per interface name, whether the same interface class or another."""

    class SameName(tether.RpcInterface):
        interface_name = RobotWorld.interface_name
        interface_version = "1.1.0"

        async def ping(self) -> None: ...

    class SameNameImpl(SameName):
        async def ping(self) -> None:
            return None

    manager = tether.RpcManager()
    manager.register_impl(RobotWorld, RobotWorldImpl)
    first = manager.lookup(RobotWorld.interface_name)
    with pytest.raises(TypeError, match=r"already registered with RobotWorldImpl"):
        manager.register_impl(RobotWorld, RobotWorldImpl)
    with pytest.raises(TypeError, match=r"already registered"):
        manager.register_impl(SameName, SameNameImpl)
    assert manager.lookup(RobotWorld.interface_name) is first


def test_register_impl_after_unregister() -> None:
    """unregister_impl frees the name for a new registration."""
    manager = tether.RpcManager()
    manager.register_impl(RobotWorld, RobotWorldImpl)
    manager.unregister_impl(RobotWorld)
    assert manager.lookup(RobotWorld.interface_name) is None
    impl = RobotWorldImpl()
    manager.register_impl(RobotWorld, impl)
    registration = manager.lookup(RobotWorld.interface_name)
    assert registration is not None
    assert registration.impl is impl


@pytest.mark.parametrize(
    "not_an_interface",
    [RobotWorldImpl, tether.RpcInterface, int, RobotWorld(), "test_interfaces.RobotWorld"],
    ids=["impl-class", "RpcInterface", "int", "instance", "name"],
)
def test_register_impl_refuses_what_is_not_an_interface(not_an_interface: Any) -> None:
    """The first argument must be an interface declaration itself."""
    manager = tether.RpcManager()
    with pytest.raises(TypeError, match=r"is not an RpcInterface declaration"):
        manager.register_impl(not_an_interface, RobotWorldImpl)


# ---------------------------------------------------------------------------
# Operation: decoding and encoding arguments

COUNT = operations_of(RobotWorld)["count_robots"]
ROBOTS = operations_of(RobotWorld)["robots"]
PING = operations_of(RobotWorld)["ping"]


def test_decode_args_structures_each_parameter() -> None:
    """Wire arguments become the declared types, in order."""
    assert ROBOTS.decode_args([IMODEL_JSON, ["a"], {"name": "r", "where": [1.0, 2]}]) == [
        IMODEL,
        ["a"],
        Robot("r", (1.0, 2.0)),
    ]
    assert COUNT.decode_args([IMODEL_JSON, 5]) == [IMODEL, 5]
    assert PING.decode_args([]) == []


def test_decode_args_allows_trailing_defaults_to_be_left_out() -> None:
    """A parameter with a default may be omitted at the end; Python then fills it in."""
    assert COUNT.decode_args([IMODEL_JSON]) == [IMODEL]


@pytest.mark.parametrize(
    ("operation", "args", "expected"),
    [
        (COUNT, [], r"takes 1 to 2 arguments \(imodel, limit\), got 0"),
        (COUNT, [IMODEL_JSON, 1, 2], r"takes 1 to 2 arguments \(imodel, limit\), got 3"),
        (ROBOTS, [IMODEL_JSON, []], r"takes 3 arguments \(imodel, names, near\), got 2"),
        (PING, [1], r"takes 0 arguments \(none\), got 1"),
    ],
    ids=["too-few", "too-many", "too-few-no-defaults", "none-expected"],
)
def test_decode_args_wrong_count(operation: Operation, args: list[Any], expected: str) -> None:
    """The wrong number of arguments is InvalidRequest naming the expected parameters."""
    with pytest.raises(tether.InvalidRequest, match=expected) as info:
        operation.decode_args(args)
    assert info.value.details["expected"] == list(operation.param_names)
    assert info.value.details["got"] == len(args)


@pytest.mark.parametrize(
    ("args", "parameter", "path"),
    [
        ([{"key": 3, "id": IMODEL_JSON["id"]}, 1], "imodel", "imodel.key"),
        ([{"key": "k", "id": "not-a-uuid"}, 1], "imodel", "imodel.id"),
        ([{"key": "k"}, 1], "imodel", "imodel.id"),
        ([IMODEL_JSON, "10"], "limit", "limit"),
        ([IMODEL_JSON, 1.5], "limit", "limit"),
        ([IMODEL_JSON, True], "limit", "limit"),
    ],
    ids=[
        "nested-type",
        "nested-uuid",
        "nested-missing",
        "str-for-int",
        "float-for-int",
        "bool-for-int",
    ],
)
def test_decode_args_misfit_names_parameter_and_path(
    args: list[Any], parameter: str, path: str
) -> None:
    """A value that does not fit is InvalidRequest naming the parameter and the field path."""
    with pytest.raises(tether.InvalidRequest) as info:
        COUNT.decode_args(args)
    details = info.value.details
    assert details["parameter"] == parameter
    assert any(re.search(rf"@ {re.escape(path)}$", error) for error in details["errors"]), details[
        "errors"
    ]
    assert f"argument {parameter!r} of test_interfaces.RobotWorld.count_robots" in str(info.value)


def test_decode_args_text_where_an_object_is_declared() -> None:
    """A string where an attrs class is declared is refused, every error under its name."""
    with pytest.raises(tether.InvalidRequest) as info:
        COUNT.decode_args(["imodel-1", 1])
    assert info.value.details["parameter"] == "imodel"
    errors = info.value.details["errors"]
    assert errors
    assert all(re.search(r"@ imodel($|[.\[])", error) for error in errors), errors


def test_decode_args_misfit_deep_in_a_list() -> None:
    """The path reaches into lists and nested classes: `near.where[1]`-style paths."""
    with pytest.raises(tether.InvalidRequest) as info:
        ROBOTS.decode_args([IMODEL_JSON, ["a", 2], None])
    assert info.value.details["parameter"] == "names"
    assert any("names[1]" in error for error in info.value.details["errors"])


def test_encode_args_positional() -> None:
    """Positional arguments are unstructured in declaration order."""
    assert COUNT.encode_args((IMODEL, 5), {}) == [IMODEL_JSON, 5]
    # Compared as it travels: a fixed tuple may stay a tuple until it is encoded.
    assert loads(dumps(ROBOTS.encode_args((IMODEL, ["a"], Robot("r", (1.0, 2.0))), {}))) == [
        IMODEL_JSON,
        ["a"],
        {"name": "r", "where": [1.0, 2.0]},
    ]


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((IMODEL,), {}, [IMODEL_JSON, 10]),
        ((IMODEL,), {"limit": 5}, [IMODEL_JSON, 5]),
        ((), {"imodel": IMODEL}, [IMODEL_JSON, 10]),
        ((), {"limit": 5, "imodel": IMODEL}, [IMODEL_JSON, 5]),
    ],
    ids=["default", "keyword", "all-keyword-default", "keywords-reversed"],
)
def test_encode_args_binds_keywords_and_defaults_in_order(
    args: tuple[Any, ...], kwargs: dict[str, Any], expected: list[Any]
) -> None:
    """Keywords are bound to their parameters and defaults filled in, in declaration order."""
    assert COUNT.encode_args(args, kwargs) == expected


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((IMODEL,), {"nope": 1}),
        ((IMODEL, 1, 2), {}),
        ((), {}),
        ((IMODEL,), {"imodel": IMODEL}),
    ],
    ids=["unknown-keyword", "too-many", "missing", "twice"],
)
def test_encode_args_that_do_not_bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Arguments that do not fit the signature are InvalidRequest naming the operation."""
    with pytest.raises(tether.InvalidRequest, match=r"test_interfaces\.RobotWorld\.count_robots"):
        COUNT.encode_args(args, kwargs)


def test_encode_args_with_a_value_of_another_type() -> None:
    """A value the parameter's type cannot unstructure is InvalidRequest naming the parameter."""
    with pytest.raises(
        tether.InvalidRequest, match=r"argument 'imodel' must be IModelProps"
    ) as info:
        COUNT.encode_args(("imodel-1", 5), {})
    assert info.value.details["parameter"] == "imodel"


def test_decode_result_checks_the_return_type() -> None:
    """The backend's reply is structured strictly into the declared return type."""
    assert ROBOTS.decode_result([{"name": "r", "where": [0, 1.5]}]) == [Robot("r", (0.0, 1.5))]
    with pytest.raises(tether.InvalidRequest, match="does not fit") as info:
        COUNT.decode_result("3")
    assert info.value.details["errors"]


def test_decode_args_unknown_union_discriminator_is_invalid_request() -> None:
    """A union member the Literal discriminator does not know is a bad request, not a KeyError."""

    class Shapes(tether.RpcInterface):
        interface_name = "t.Shapes"
        interface_version = "1.0.0"

        async def area(self, shape: Circle | Square) -> float: ...

    area = operations_of(Shapes)["area"]
    assert area.decode_args([{"kind": "square", "side": 2}]) == [Square("square", 2.0)]
    with pytest.raises(tether.InvalidRequest) as info:
        area.decode_args([{"kind": "triangle", "side": 2}])
    assert info.value.details["parameter"] == "shape"


def test_abstractmethod_operations_are_operations() -> None:
    """`@abc.abstractmethod` (the mypy-friendly spelling) declares operations like `...` does."""

    class Declared(tether.RpcInterface):
        interface_name = "test.AbstractDeclared"
        interface_version = "1.0.0"

        @abc.abstractmethod
        async def op(self, x: int) -> int: ...

    class Impl(Declared):
        async def op(self, x: int) -> int:
            return x

    class Incomplete(Declared):
        pass

    assert list(Declared.__tether_operations__) == ["op"]
    tether.RpcManager().register_impl(Declared, Impl)
    with pytest.raises(TypeError, match="does not implement op"):
        tether.RpcManager().register_impl(Declared, Incomplete)
