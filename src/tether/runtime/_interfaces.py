"""RpcInterface: the operations a backend serves, checked when the class is made."""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ._codec import CONVERTER, Hook, check_carriable, describe_type, structure_error_messages
from ._errors import InvalidRequest
from ._limits import Check, too_deep, unsendable, value_check, why_unsendable, within_limits
from ._policies import check_policy, policy_of
from ._streams import Stream
from ._versions import parse_version

__all__ = [
    "Operation",
    "RpcInterface",
    "collect_operations",
    "operations_of",
    "require_interface",
    "stream_item_type",
    "unimplemented",
]

_log = logging.getLogger("tether.server")


class Operation:
    """One operation of an interface: its signature and its codec hooks.

    Made once when the interface class is created; the client stub and the
    dispatcher use it for every call, so it holds everything they need
    precomputed.
    """

    __slots__ = (
        "_deep_params",
        "_in_check",
        "_in_deep",
        "_in_structure",
        "_in_unstructure",
        "_out_check",
        "_out_deep",
        "_out_structure",
        "_out_unstructure",
        "_param_checks",
        "_param_structure",
        "_param_unstructure",
        "_return_check",
        "_return_deep",
        "_return_structure",
        "_return_unstructure",
        "function",
        "interface_name",
        "name",
        "param_names",
        "param_types",
        "policy",
        "qualname",
        "required",
        "return_type",
        "signature",
        "stream_param",
        "stream_result",
    )

    def __init__(self, interface_name: str, function: Callable[..., Any]) -> None:
        name = function.__name__
        where = f"{interface_name}.{name}"
        try:
            hints = typing.get_type_hints(function)
        except NameError as exc:
            raise TypeError(
                f"operation {where}: cannot resolve its annotations ({exc}); define the "
                "types it uses before the interface"
            ) from None
        out_type = stream_item_type(hints.get("return"))
        #: Whether the operation returns a stream (a server or two-way stream).
        self.stream_result = out_type is not None
        if self.stream_result and inspect.iscoroutinefunction(function):
            raise TypeError(
                f"operation {where} returns a stream: declare it with a plain 'def' (its "
                "impl is an async generator), not 'async def'"
            )
        if not self.stream_result and not inspect.iscoroutinefunction(function):
            raise TypeError(
                f"operation {where} must be declared with 'async def' (only an operation "
                "that returns a tether.Stream[...] is a plain 'def')"
            )
        #: The index of the stream parameter (a client or two-way stream), if any.
        self.stream_param: int | None = None
        in_type: Any = None
        signature = inspect.signature(function)
        params = list(signature.parameters.values())[1:]  # drop self
        names: list[str] = []
        types_: list[Any] = []
        checks: list[tuple[Check | None, bool]] = []
        required = 0
        for param in params:
            if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.POSITIONAL_ONLY):
                raise TypeError(
                    f"operation {where}: parameter {param.name!r} is {param.kind.description}; "
                    "operations take plain positional-or-keyword parameters"
                )
            if param.name not in hints:
                raise TypeError(f"operation {where}: parameter {param.name!r} has no annotation")
            item_type = stream_item_type(hints[param.name])
            try:
                if item_type is not None:
                    if self.stream_param is not None:
                        raise TypeError(
                            "a second stream parameter: an operation takes at most one "
                            "stream (bundle the items in an attrs class)"
                        )
                    if param.default is not param.empty:
                        raise TypeError("a stream parameter cannot have a default")
                    self.stream_param = len(names)
                    in_type = item_type
                    check_carriable(item_type)
                    checks.append((None, False))
                else:
                    check_carriable(hints[param.name])
                    checks.append(value_check(hints[param.name]))
            except TypeError as exc:
                raise TypeError(f"operation {where}: parameter {param.name!r}: {exc}") from None
            if param.default is param.empty:
                if required != len(names):
                    raise TypeError(f"operation {where}: {param.name!r} follows a default")
                required += 1
            names.append(param.name)
            types_.append(hints[param.name])
        if "return" not in hints:
            raise TypeError(f"operation {where} has no return annotation (use '-> None')")
        return_type = type(None) if out_type is not None else hints["return"]
        try:
            check_carriable(return_type)
            self._return_check, self._return_deep = value_check(return_type)
            if out_type is not None:
                check_carriable(out_type)
        except TypeError as exc:
            raise TypeError(f"operation {where}: return type: {exc}") from None
        # The item types of the streams: hooks and checks as for a parameter.
        self._in_structure, self._in_unstructure, self._in_check, self._in_deep = _item_codec(
            in_type
        )
        self._out_structure, self._out_unstructure, self._out_check, self._out_deep = _item_codec(
            out_type
        )

        self.interface_name = interface_name
        self.name = name
        self.qualname = where
        #: What a client and a proxy may do with it (`@tether.idempotent`...).
        self.policy = policy_of(function)
        check_policy(self.policy, where, stream=self.stream_result or self.stream_param is not None)
        self.function = function
        self.signature = signature
        self.param_names = tuple(names)
        self.param_types = tuple(types_)
        self.required = required
        self.return_type = return_type
        # The stream parameter's place holds null on the wire: its hooks are None's.
        wire_types = [
            type(None) if index == self.stream_param else t for index, t in enumerate(types_)
        ]
        self._param_structure: tuple[Hook, ...] = tuple(
            CONVERTER.get_structure_hook(t) for t in wire_types
        )
        self._param_unstructure: tuple[Hook, ...] = tuple(
            CONVERTER.get_unstructure_hook(t) for t in wire_types
        )
        self._return_structure: Hook = CONVERTER.get_structure_hook(return_type)
        self._return_unstructure: Hook = CONVERTER.get_unstructure_hook(return_type)
        # The codec's limits (non-finite floats, int range, depth): what each
        # declared type needs checked before sending, and which received
        # values must be walked for their depth before structuring.
        self._param_checks = tuple(check for check, _ in checks)
        self._deep_params = tuple(index for index, (_, deep) in enumerate(checks) if deep)

    def __repr__(self) -> str:
        return f"<Operation {self.qualname}{self.signature}>"

    # -- client side ---------------------------------------------------------

    def encode_args(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Any]:
        """Bind a call's arguments and unstructure them in declaration order.

        Raises:
            InvalidRequest: the arguments do not fit the signature (raised locally).
        """
        if kwargs or len(args) != len(self.param_names):
            try:
                bound = self.signature.bind(None, *args, **kwargs)
            except TypeError as exc:
                raise InvalidRequest(f"{self.qualname}: {exc}") from None
            bound.apply_defaults()
            args = tuple(bound.arguments.values())[1:]
        out: list[Any] = []
        for index, (name, tp, hook, check, value) in enumerate(
            zip(
                self.param_names,
                self.param_types,
                self._param_unstructure,
                self._param_checks,
                args,
                strict=True,
            )
        ):
            if index == self.stream_param:
                # The items travel as `send` messages; the call holds its place.
                out.append(None)
                continue
            try:
                unstructured = hook(value)
            except RecursionError:
                raise self._unsendable(name, None) from None
            except Exception as exc:  # an unstructure hook fails on a value of another type
                raise InvalidRequest(
                    f"{self.qualname}: argument {name!r} must be {describe_type(tp)}, got "
                    f"{type(value).__name__} ({exc})",
                    details={"parameter": name},
                ) from None
            if check is not None and not check(unstructured):
                raise self._unsendable(name, unstructured)
            out.append(unstructured)
        return out

    def _unsendable(self, name: str, value: Any) -> InvalidRequest:
        """The error for an argument a check refused (`value` unstructured), or
        that unstructuring could not walk (`value` None: nested past Python's
        recursion limit)."""
        if value is not None:
            error = unsendable([value], (name,), self.qualname)
            if error is not None:
                return error
        return InvalidRequest(
            f"{self.qualname}: argument {name!r} cannot be sent: {too_deep('it')}",
            details={"parameter": name, "path": name},
        )

    def decode_result(self, value: Any) -> Any:
        """Structure the reply's value into the declared return type.

        Raises:
            InvalidRequest: the backend's value does not fit (raised locally).
        """
        if self._return_deep and not within_limits(value):
            # Walked before structuring, which recurses once a level.
            why = _over_limits(value, "$result")
            raise InvalidRequest(
                f"the backend's result for {self.qualname} does not fit "
                f"{describe_type(self.return_type)}: {why}",
                details={"errors": [why]},
            )
        try:
            return self._return_structure(value, self.return_type)
        except Exception as exc:  # cattrs raises many kinds; all mean "does not fit"
            errors = structure_error_messages(exc, "$result")
            raise InvalidRequest(
                f"the backend's result for {self.qualname} does not fit "
                f"{describe_type(self.return_type)}: {'; '.join(errors)}",
                details={"errors": errors},
            ) from None

    # -- stream items --------------------------------------------------------

    def stream_source(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """The argument a caller passed for the stream parameter."""
        assert self.stream_param is not None
        if self.stream_param < len(args):
            return args[self.stream_param]
        name = self.param_names[self.stream_param]
        if name not in kwargs:
            raise InvalidRequest(f"{self.qualname}: missing the stream argument {name!r}")
        return kwargs[name]

    def encode_input(self, value: Any) -> Any:
        """Unstructure one item of the argument stream (caller side).

        Raises:
            InvalidRequest: the item does not fit the declared item type.
        """
        return self._encode_item(
            value, self._in_unstructure, self._in_check, self.param_names[self.stream_param or 0]
        )

    def encode_output(self, value: Any) -> Any:
        """Unstructure one item the impl yielded (callee side).

        Raises:
            InvalidRequest: the item cannot be sent (it does not fit the declared type).
        """
        return self._encode_item(value, self._out_unstructure, self._out_check, "item")

    def decode_input(self, value: Any) -> Any:
        """Structure one argument-stream item (callee side).

        Raises:
            InvalidRequest: it does not fit the declared item type.
        """
        name = self.param_names[self.stream_param or 0]
        return self._decode_item(value, self._in_structure, self._in_deep, f"{name}[item]")

    def decode_output(self, value: Any) -> Any:
        """Structure one result-stream item (caller side).

        Raises:
            InvalidRequest: the backend's item does not fit the declared item type.
        """
        return self._decode_item(value, self._out_structure, self._out_deep, "$item")

    def _encode_item(
        self, value: Any, hooks: tuple[Hook, Any] | None, check: Check | None, what: str
    ) -> Any:
        assert hooks is not None
        hook, tp = hooks
        try:
            out = hook(value)
        except RecursionError:
            raise InvalidRequest(
                f"{self.qualname}: a stream item of {what!r} cannot be sent: {too_deep('it')}"
            ) from None
        except Exception as exc:  # an unstructure hook fails on a value of another type
            raise InvalidRequest(
                f"{self.qualname}: a stream item of {what!r} must be {describe_type(tp)}, got "
                f"{type(value).__name__} ({exc})"
            ) from None
        if check is not None and not check(out):
            found = why_unsendable(out, what)
            why = found[1] if found is not None else "it is over the codec's limits"
            raise InvalidRequest(f"{self.qualname}: a stream item cannot be sent: {why}")
        return out

    def _decode_item(
        self, value: Any, hooks: tuple[Hook, Any] | None, deep: bool, path: str
    ) -> Any:
        assert hooks is not None
        hook, tp = hooks
        if deep and not within_limits(value):
            why = _over_limits(value, path)
            raise InvalidRequest(
                f"a stream item of {self.qualname} does not fit {describe_type(tp)}: {why}",
                details={"errors": [why]},
            )
        try:
            return hook(value, tp)
        except Exception as exc:  # cattrs raises many kinds; all mean "does not fit"
            errors = structure_error_messages(exc, path)
            raise InvalidRequest(
                f"a stream item of {self.qualname} does not fit {describe_type(tp)}: "
                f"{'; '.join(errors)}",
                details={"errors": errors},
            ) from None

    # -- server side ---------------------------------------------------------

    def decode_args(self, args: list[Any]) -> list[Any]:
        """Structure wire arguments into the declared parameter types.

        Trailing parameters with defaults may be left out.

        Raises:
            InvalidRequest: wrong count or a value that does not fit; `details`
                names the parameter and the path of each bad field.
        """
        count = len(args)
        if count > len(self.param_names) or count < self.required:
            expected = (
                f"{len(self.param_names)}"
                if self.required == len(self.param_names)
                else f"{self.required} to {len(self.param_names)}"
            )
            raise InvalidRequest(
                f"{self.qualname} takes {expected} arguments "
                f"({', '.join(self.param_names) or 'none'}), got {count}",
                details={"expected": list(self.param_names), "got": count},
            )
        out: list[Any] = []
        for index, value in enumerate(args):
            if index == self.stream_param:
                out.append(None)  # the engine puts the stream of `send` items here
                continue
            tp = self.param_types[index]
            if self._deep_params and index in self._deep_params and not within_limits(value):
                # Walked before structuring, which recurses once a level.
                name = self.param_names[index]
                why = _over_limits(value, name)
                raise InvalidRequest(
                    f"argument {name!r} of {self.qualname} does not fit {describe_type(tp)}: {why}",
                    details={"parameter": name, "errors": [why]},
                )
            try:
                out.append(self._param_structure[index](value, tp))
            except Exception as exc:  # cattrs raises many kinds; all mean "does not fit"
                name = self.param_names[index]
                errors = structure_error_messages(exc, name)
                raise InvalidRequest(
                    f"argument {name!r} of {self.qualname} does not fit "
                    f"{describe_type(tp)}: {'; '.join(errors)}",
                    details={"parameter": name, "errors": errors},
                ) from None
        return out

    def encode_result(self, value: Any) -> Any:
        """Unstructure an impl's return value (server side).

        Raises:
            InvalidRequest: the value cannot be sent (a non-finite float, an
                int out of range, nested too deep); the message says where.
        """
        try:
            out = self._return_unstructure(value)
        except RecursionError:
            path, why = "result", too_deep("result", "return")
        else:
            if self._return_check is None or self._return_check(out):
                return out
            path, why = why_unsendable(out, "result") or ("result", "result is over the limits")
        _log.warning("the result of %s cannot be sent: %s", self.qualname, why)
        raise InvalidRequest(
            f"the result of {self.qualname} cannot be sent: {why}", details={"path": path}
        )


def _over_limits(value: Any, path: str) -> str:
    """Why a received value that a check refused is over the codec's limits."""
    found = why_unsendable(value, path)
    return found[1] if found is not None else f"{path} is over the codec's limits"


def stream_item_type(hint: Any) -> Any:
    """The item type of a `Stream[T]` annotation; None for any other annotation."""
    if typing.get_origin(hint) is Stream:
        (item,) = typing.get_args(hint)
        return item
    if hint is Stream:
        raise TypeError("a bare Stream cannot be carried: declare its item type, Stream[int]")
    return None


def _item_codec(
    tp: Any,
) -> tuple[tuple[Hook, Any] | None, tuple[Hook, Any] | None, Check | None, bool]:
    """(structure hook, type), (unstructure hook, type), send check, deep: for stream items."""
    if tp is None:
        return None, None, None, False
    check, deep = value_check(tp)
    return (
        (CONVERTER.get_structure_hook(tp), tp),
        (CONVERTER.get_unstructure_hook(tp), tp),
        check,
        deep,
    )


def collect_operations(
    cls: type,
    interface_name: str,
    *,
    root: type | None = None,
    name_attr: str = "interface_name",
) -> dict[str, Operation]:
    """Collect the operations a declaration class declares (and its declaration bases do).

    Args:
        cls: The declaration class.
        interface_name: The wire name that qualifies the operations.
        root: The base class of this kind of declaration (RpcInterface by default).
        name_attr: The class attribute that marks a declaration (`interface_name`).
    """
    root = RpcInterface if root is None else root
    operations: dict[str, Operation] = {}
    for base in reversed(cls.__mro__):
        is_interface = name_attr in base.__dict__ and issubclass(base, root)
        if base is cls or (is_interface and base is not root):
            for name, member in base.__dict__.items():
                if name.startswith("_") or not inspect.isfunction(member):
                    continue
                operations[name] = Operation(interface_name, member)
    return operations


def require_interface(interface: Any) -> None:
    """Check that `interface` is an RpcInterface declaration, not an impl or stub.

    Raises:
        TypeError: it is not.
    """
    if not (
        isinstance(interface, type)
        and issubclass(interface, RpcInterface)
        and interface.__tether_interface__ is interface
    ):
        raise TypeError(
            f"{interface!r} is not an RpcInterface declaration (a class with interface_name "
            "and interface_version)"
        )


def unimplemented(cls: type, operations: Mapping[str, Operation]) -> list[str]:
    """The operations that `cls` inherits from the declaration instead of implementing."""
    return [
        name for name, op in operations.items() if inspect.getattr_static(cls, name) is op.function
    ]


def operations_of(interface: type[RpcInterface]) -> Mapping[str, Operation]:
    """Return the operation table of an interface class."""
    return interface.__tether_operations__


class RpcInterface:
    """Base class of RPC interfaces, shared by the frontend and the backend.

    Declare the operations as annotated `async def` methods whose body is `...`,
    plus two class attributes::

        class RobotWorldRead(tether.RpcInterface):
            interface_name = "RobotWorldReadRpcInterface"   # immutable wire name
            interface_version = "1.0.0"                     # semver of the shape

            async def count_robots(self, imodel: IModelProps) -> int: ...

    Every public `async def` is an operation. Its parameters and return value
    must be annotated with types the codec can carry; anything else is a
    `TypeError` when the class is created, not at the first call.

    The backend subclasses the interface to implement it (the impl) and
    registers it with `RpcManager.register_impl`; the frontend gets a client
    stub with `get_client`.
    """

    interface_name: ClassVar[str]
    interface_version: ClassVar[str]
    __tether_operations__: ClassVar[Mapping[str, Operation]] = {}
    __tether_interface__: ClassVar[type[RpcInterface] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "interface_name" in own or "interface_version" in own:
            _declare_interface(cls)
            return
        interface = cls.__tether_interface__
        if interface is None:
            raise TypeError(
                f"{cls.__qualname__} derives from RpcInterface but sets neither "
                "interface_name nor interface_version: declare both on an interface class"
            )
        check_impl_async(
            cls, interface.__tether_operations__, interface.interface_name, "operation"
        )


def check_version_attr(cls: type, attr: str, version: object) -> None:
    """Refuse a declaration's version attribute that is not a semantic version string."""
    if not isinstance(version, str):
        raise TypeError(
            f"{cls.__qualname__}.{attr} must be a semantic version string such as "
            f"'1.0.0', got {version!r}"
        )
    try:
        parse_version(version)
    except ValueError as exc:
        raise TypeError(f"{cls.__qualname__}.{attr}: {exc}") from None


def check_declared_async(
    own: Mapping[str, Any], attrs_: tuple[str, ...], prefix: str, rule: str
) -> None:
    """Refuse a public plain `def` in a declaration: its public methods are its operations.

    The one plain `def` allowed is an operation that returns a `Stream[...]`.
    """
    for attr, value in own.items():
        if attr.startswith("_") or attr in attrs_:
            continue
        if (
            inspect.isfunction(value)
            and not inspect.iscoroutinefunction(value)
            and not _returns_stream(value)
        ):
            raise TypeError(
                f"{prefix}{attr} must be declared with 'async def' ({rule}; prefix helpers "
                "with '_'; a plain 'def' is for an operation that returns a tether.Stream)"
            )


def _returns_stream(function: Callable[..., Any]) -> bool:
    try:
        hint = typing.get_type_hints(function).get("return")
    except NameError:
        return False  # Operation() says why
    return typing.get_origin(hint) is Stream or hint is Stream


def check_impl_async(cls: type, operations: Mapping[str, Any], declared: str, what: str) -> None:
    """An implementation (or a subclass of one) must keep every operation async.

    An operation that returns a stream is implemented by an async generator
    (or a plain `def` that returns an async iterable); any other by `async def`.
    """
    own = cls.__dict__
    for name, operation in operations.items():
        member = own.get(name)
        if member is None:
            continue
        if getattr(operation, "stream_result", False):
            if inspect.iscoroutinefunction(member):
                raise TypeError(
                    f"{cls.__qualname__}.{name} implements {what} {declared}.{name}, which "
                    "returns a stream: make it an async generator ('async def' with 'yield')"
                )
            continue
        if not inspect.iscoroutinefunction(member):
            raise TypeError(
                f"{cls.__qualname__}.{name} implements {what} {declared}.{name} and must be "
                "'async def'"
            )


def _declare_interface(cls: type[RpcInterface]) -> None:
    own = cls.__dict__
    name = own.get("interface_name")
    version = own.get("interface_version")
    if not isinstance(name, str) or not name or "/" in name:
        raise TypeError(
            f"{cls.__qualname__}.interface_name must be a non-empty string without '/', "
            f"got {name!r}"
        )
    check_version_attr(cls, "interface_version", version)
    check_declared_async(
        own,
        ("interface_name", "interface_version"),
        f"operation {name}.",
        "a public method of an interface is an operation",
    )
    cls.__tether_operations__ = collect_operations(cls, name)
    cls.__tether_interface__ = cls
