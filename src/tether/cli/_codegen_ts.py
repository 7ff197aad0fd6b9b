"""`tether codegen typescript`, its interface half: proxies, handlers, listeners, refs, errors.

The stubs type a page's calls against the TypeScript client's API
(clients/typescript/src/types.ts): for each `RpcInterface` a proxy interface
and an `RpcInterfaceRef` const, for each `IpcInterface` a proxy, a handler
(for a page that serves it) and an `IpcChannelRef`, for each
`NotificationInterface` a listener (every method optional) and a
`NotificationRef`; the records and enums they carry; and the application
errors (`@tether.remote_error`) of the interfaces' modules.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from ..runtime import IpcInterface, NotificationInterface, Operation, RpcInterface
from ..runtime._errors import _remote_names
from ..runtime._interfaces import stream_item_type
from ..runtime._records import record_fields
from ._codegen_types import (
    RESERVED,
    CodegenError,
    Names,
    TypeWriter,
    doc_comment,
    format_note,
    literal,
    shape_text,
)

__all__ = ["camel_case", "declaration_kind", "typescript_stubs"]

#: The version a `NotificationRef` carries: a notification channel has none on the wire.
NOTIFICATION_VERSION = "0.0.0"


def camel_case(name: str) -> str:
    """`count_robots` -> `countRobots` (a leading part is kept as it is)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def declaration_kind(obj: Any) -> str | None:
    """ "rpc", "ipc" or "notification" for an interface declaration; None for anything else."""
    if not isinstance(obj, type):
        return None
    if issubclass(obj, RpcInterface) and obj.__dict__.get("__tether_interface__") is obj:
        return "rpc"
    if issubclass(obj, IpcInterface) and obj.__dict__.get("__tether_channel__") is obj:
        return "ipc"
    if issubclass(obj, NotificationInterface) and obj.__dict__.get("__tether_channel__") is obj:
        return "notification"
    return None


def _doc(obj: Any) -> str | None:
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


class _Param:
    """One parameter as the stubs write it."""

    def __init__(self, op: Operation, index: int, taken: set[str]) -> None:
        self.wire = op.param_names[index]
        name = camel_case(self.wire)
        while name in RESERVED or name in taken or name in ("options", "context"):
            name += "_"  # `default` -> `default_`: only a label, the wire is positional
        taken.add(name)
        self.name = name
        self.hint = op.param_types[index]
        self.stream = index == op.stream_param
        self.item = stream_item_type(self.hint) if self.stream else None
        self.optional = index >= op.required


class _Method:
    """One operation, with what every flavour of stub needs of it."""

    def __init__(self, op: Operation, types: TypeWriter) -> None:
        self.op = op
        self.name = camel_case(op.name)
        taken: set[str] = set()
        self.params = [_Param(op, i, taken) for i in range(len(op.param_names))]
        hints = typing.get_type_hints(op.function, include_extras=True)
        self.item = stream_item_type(hints.get("return"))
        self.returns = op.return_type
        self.types = types
        self.doc = _doc(op.function)

    def _param_types(self, handler: bool) -> Iterator[str]:
        for param in self.params:
            if param.stream:
                item = self.types.ts(param.item)
                kind = f"AsyncIterable<{item}>"
                yield kind if handler else f"{kind} | Iterable<{item}>"
            else:
                yield self.types.ts(param.hint)

    def signature(self, flavour: str) -> str:
        """The method's line in a proxy ("proxy"), a handler ("handler") or a listener."""
        parts = []
        for param, text in zip(self.params, self._param_types(flavour != "proxy"), strict=True):
            optional = "?" if param.optional and flavour == "proxy" else ""
            parts.append(f"{param.name}{optional}: {text}")
        if flavour == "listener":
            return f"{self.name}?({', '.join(parts)}): void;"
        if self.item is not None:
            item = self.types.ts(self.item)
            result = (
                f"AsyncIterable<{item}>"
                if flavour == "proxy"
                else f"AsyncIterable<{item}> | Iterable<{item}>"
            )
        else:
            value = "void" if self.returns is type(None) else self.types.ts(self.returns)
            result = f"Promise<{value}>" if flavour == "proxy" else f"{value} | Promise<{value}>"
        if flavour == "proxy":
            parts.append("options?: CallOptions")
        else:  # what the session passes after the arguments (its signal aborts on cancel)
            parts.append("context: HandlerContext")
        return f"{self.name}({', '.join(parts)}): {result};"

    def jsdoc(self) -> list[str]:
        notes = [
            f"@param {param.name} {note}"
            for param in self.params
            if (note := format_note(param.item if param.stream else param.hint))
        ]
        text = "\n\n".join(part for part in (self.doc, "\n".join(notes)) if part)
        return doc_comment(text or None, "  ")

    def spec(self) -> str:
        """Its OperationSpec, as TypeScript source."""
        parts = [f"name: {literal(self.op.name)}"]
        parts.append(f"params: [{', '.join(literal(p.wire) for p in self.params)}]")
        args = [self.types.shape(p.item if p.stream else p.hint) for p in self.params]
        if any(arg is not None for arg in args):
            parts.append(f"args: {shape_text(args)}")
        result = self.types.shape(self.item if self.item is not None else self.returns)
        if result is not None:
            parts.append(f"result: {shape_text(result)}")
        stream_param = self.op.stream_param
        if self.item is not None or stream_param is not None:
            kind = "server" if stream_param is None else "client" if self.item is None else "both"
            parts.append(f"stream: {literal(kind)}")
        if stream_param is not None:
            parts.append(f"streamParam: {stream_param}")
        return f"{self.name}: {{ {', '.join(parts)} }},"


class _Interface:
    def __init__(self, cls: type, kind: str, names: Names, types: TypeWriter) -> None:
        self.cls = cls
        self.kind = kind
        self.name = cls.__name__
        what = f"interface {cls.__module__}.{cls.__qualname__}"
        names.claim("type", self.name, cls, what)
        names.claim("value", self.name, cls, what)
        if kind == "ipc":
            names.claim("type", f"{self.name}Handler", cls, f"the handler of {what}")
        operations: dict[str, Operation] = dict(cls.__tether_operations__)  # type: ignore[attr-defined]
        self.methods = [_Method(op, types) for op in operations.values()]
        seen: dict[str, str] = {}
        for method in self.methods:
            if method.name in seen:
                raise CodegenError(
                    f"{what}: {seen[method.name]!r} and {method.op.name!r} are both "
                    f"{method.name!r} in camelCase; rename one"
                )
            seen[method.name] = method.op.name
        # Name the types now, so that they are declared before the interfaces.
        for method in self.methods:
            method.signature("proxy")
            method.spec()

    def lines(self) -> Iterator[str]:
        yield ""
        yield from doc_comment(_doc(self.cls))
        if self.kind == "notification":
            yield f"export interface {self.name} {{"
            for method in self.methods:
                yield from method.jsdoc()
                yield f"  {method.signature('listener')}"
            yield "}"
        else:
            yield f"export interface {self.name} {{"
            for method in self.methods:
                yield from method.jsdoc()
                yield f"  {method.signature('proxy')}"
            yield "}"
        if self.kind == "ipc":
            yield ""
            yield (
                f"/** What a page that serves {self.name} implements (`session.serve`); each "
                "method may leave out the trailing `context`. */"
            )
            yield f"export interface {self.name}Handler {{"
            for method in self.methods:
                yield f"  {method.signature('handler')}"
            yield "}"
        yield ""
        yield from self._ref()

    def _ref(self) -> Iterator[str]:
        if self.kind == "rpc":
            ref_type = f"RpcInterfaceRef<{self.name}>"
            head = [
                'kind: "rpc",',
                f"name: {literal(self.cls.interface_name)},",  # type: ignore[attr-defined]
                f"version: {literal(self.cls.interface_version)},",  # type: ignore[attr-defined]
            ]
            table = "operations"
        else:
            ipc = self.kind == "ipc"
            ref_type = (
                f"IpcChannelRef<{self.name}, {self.name}Handler>"
                if ipc
                else f"NotificationRef<{self.name}>"
            )
            version = self.cls.version if ipc else NOTIFICATION_VERSION  # type: ignore[attr-defined]
            head = [
                f"kind: {literal(self.kind)},",
                f"channel: {literal(self.cls.channel_name)},",  # type: ignore[attr-defined]
                f"version: {literal(version)},",
            ]
            table = "methods"
        yield f"export const {self.name}: {ref_type} = {{"
        for line in head:
            yield f"  {line}"
        if not self.methods:
            yield f"  {table}: {{}},"
        else:
            yield f"  {table}: {{"
            for method in self.methods:
                yield f"    {method.spec()}"
            yield "  },"
        yield "};"


def _remote_errors(modules: Sequence[str]) -> list[tuple[type, str]]:
    """The `@tether.remote_error` classes defined in `modules`, in declaration order."""
    found: list[tuple[type, str]] = []
    for module_name in modules:
        module = sys.modules.get(module_name)
        for value in vars(module).values() if module is not None else ():
            if not isinstance(value, type) or value.__module__ != module_name:
                continue
            wire = _remote_names.get(value)
            if wire is not None and (value, wire) not in found:
                found.append((value, wire))
    return found


def _error_lines(cls: type, wire: str, names: Names, types: TypeWriter) -> list[str]:
    name = cls.__name__
    what = f"remote error {cls.__module__}.{cls.__qualname__}"
    names.claim("value", name, cls, what)
    names.claim("type", f"{name}Details", cls, f"the details of {what}")
    lines = ["", *doc_comment(_doc(cls))]
    lines.append(f"export const {name} = {literal(wire)} as ErrorName<{name}Details>;")
    lines.append(f"/** The `details` of the error {name} (`isApplicationError(e, {name})`). */")
    if attrs.has(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = [
            f"{TypeWriter.field_name(field)}: {types.ts(hints[field])}"
            for field, _, _ in record_fields(cls)
        ]
        lines.append(f"export interface {name}Details {{")
        lines.append(f"  fields: {{ {'; '.join(fields)} }};" if fields else "  fields: {};")
        lines.append("}")
    else:
        lines.append(f"export interface {name}Details {{")
        lines.append("  args: unknown[];")
        lines.append("}")
    return lines


def typescript_stubs(
    declarations: Sequence[type], *, source: str, client_module: str = "tether-client"
) -> str:
    """The TypeScript stubs of `declarations` (interface classes), as one module's text.

    Args:
        declarations: RpcInterface, IpcInterface and NotificationInterface
            declarations, written in this order.
        source: What the header says they were generated from.
        client_module: The module the stubs import the client's types from.

    Raises:
        CodegenError: a type has no TypeScript form, or two names clash.
    """
    names = Names()
    types = TypeWriter(names)
    interfaces = []
    for cls in dict.fromkeys(declarations):
        kind = declaration_kind(cls)
        if kind is None:
            raise CodegenError(f"{cls!r} is not an interface declaration")
        interfaces.append(_Interface(cls, kind, names, types))
    modules = list(dict.fromkeys(cls.__module__ for cls in declarations))
    errors = [
        line
        for cls, wire in _remote_errors(modules)
        for line in _error_lines(cls, wire, names, types)
    ]
    body = [*types.declarations(), *errors]
    for interface in interfaces:
        body.extend(interface.lines())
    used = {
        "CallOptions",
        "ErrorName",
        "HandlerContext",
        "IpcChannelRef",
        "NotificationRef",
        "RpcInterfaceRef",
    }
    kinds = {interface.kind for interface in interfaces}
    imports = sorted(
        name
        for name in used
        if (name == "CallOptions" and kinds & {"rpc", "ipc"})
        or (name == "RpcInterfaceRef" and "rpc" in kinds)
        or (name in ("IpcChannelRef", "HandlerContext") and "ipc" in kinds)
        or (name == "NotificationRef" and "notification" in kinds)
        or (name == "ErrorName" and bool(errors))
    )
    header = [
        f"// Generated by `tether codegen typescript` from {source}.",
        "// Do not edit: change the Python interfaces and generate it again.",
    ]
    if imports:
        header += ["", f"import type {{ {', '.join(imports)} }} from {literal(client_module)};"]
    return "\n".join([*header, *body]) + "\n"
