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
from ._versions import parse_version

__all__ = [
    "Operation",
    "RpcInterface",
    "collect_operations",
    "operations_of",
    "require_interface",
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
        "qualname",
        "required",
        "return_type",
        "signature",
    )

    def __init__(self, interface_name: str, function: Callable[..., Any]) -> None:
        name = function.__name__
        where = f"{interface_name}.{name}"
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"operation {where} must be declared with 'async def'")
        try:
            hints = typing.get_type_hints(function)
        except NameError as exc:
            raise TypeError(
                f"operation {where}: cannot resolve its annotations ({exc}); define the "
                "types it uses before the interface"
            ) from None
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
            try:
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
        return_type = hints["return"]
        try:
            check_carriable(return_type)
            self._return_check, self._return_deep = value_check(return_type)
        except TypeError as exc:
            raise TypeError(f"operation {where}: return type: {exc}") from None

        self.interface_name = interface_name
        self.name = name
        self.qualname = where
        self.function = function
        self.signature = signature
        self.param_names = tuple(names)
        self.param_types = tuple(types_)
        self.required = required
        self.return_type = return_type
        self._param_structure: tuple[Hook, ...] = tuple(
            CONVERTER.get_structure_hook(t) for t in types_
        )
        self._param_unstructure: tuple[Hook, ...] = tuple(
            CONVERTER.get_unstructure_hook(t) for t in types_
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
        out = []
        for name, tp, hook, check, value in zip(
            self.param_names,
            self.param_types,
            self._param_unstructure,
            self._param_checks,
            args,
            strict=True,
        ):
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
        out = []
        for index, value in enumerate(args):
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
    """Refuse a public plain `def` in a declaration: its public methods are its operations."""
    for attr, value in own.items():
        if attr.startswith("_") or attr in attrs_:
            continue
        if inspect.isfunction(value) and not inspect.iscoroutinefunction(value):
            raise TypeError(
                f"{prefix}{attr} must be declared with 'async def' ({rule}; prefix helpers "
                "with '_')"
            )


def check_impl_async(cls: type, operations: Mapping[str, Any], declared: str, what: str) -> None:
    """An implementation (or a subclass of one) must keep every operation async."""
    own = cls.__dict__
    for name in operations:
        member = own.get(name)
        if member is not None and not inspect.iscoroutinefunction(member):
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
