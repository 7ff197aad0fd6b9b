"""`tether codegen typescript TARGET`: typed TypeScript stubs of Python interfaces.

TARGET is `module:attr` naming an interface declaration (RpcInterface,
IpcInterface, NotificationInterface), a list or tuple of them, or an
RpcManager (the interfaces it serves, by name) or a function returning one;
or `module` alone: every declaration
defined in that module, in the order they are defined.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any

from ..runtime import BackendIpc, RpcManager
from ._codegen_ts import declaration_kind, typescript_stubs
from ._codegen_types import CodegenError
from ._common import CliError, load_target, write_output
from ._openapi import find_manager

__all__ = ["find_declarations", "register"]

_EXPECTED = (
    "expected an RpcInterface, IpcInterface or NotificationInterface class, a list or "
    "tuple of them, an RpcManager, or a module defining interfaces"
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tether codegen typescript` to the command line."""
    parser = commands.add_parser(
        "codegen",
        help="write typed client stubs of Python interfaces (TypeScript)",
        description="Write typed client stubs of Python interfaces for another language.",
    )
    languages = parser.add_subparsers(dest="language", metavar="LANGUAGE")
    typescript = languages.add_parser(
        "typescript",
        help="TypeScript stubs for the tether-client package",
        description="Write TypeScript stubs (types, typed proxies, handler and listener "
        "interfaces, interface refs, application errors) for the interfaces at TARGET: "
        "module:attr naming an interface class, a list or tuple of them or an RpcManager, "
        "or a module alone for every interface defined in it.",
    )
    typescript.add_argument("target", metavar="module[:attr]")
    typescript.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    typescript.add_argument(
        "--client-module",
        default="tether-client",
        metavar="MODULE",
        help="the module the stubs import the client's types from (default: tether-client)",
    )
    typescript.set_defaults(run=_run_typescript)
    parser.set_defaults(run=lambda _args: _no_language(parser))


def _no_language(parser: argparse.ArgumentParser) -> int:
    raise CliError("tether codegen needs a language: tether codegen typescript module[:attr]")


def find_declarations(spec: str) -> list[type]:
    """The interface declarations `spec` names (see the module's docstring).

    Raises:
        CliError: it names none, or something else (exit 2).
    """
    if ":" not in spec:
        module_name = load_target(f"{spec}:__name__")
        module = sys.modules[module_name]
        found = [
            value
            for value in vars(module).values()
            if declaration_kind(value) is not None and value.__module__ == module_name
        ]
        if not found:
            raise CliError(
                f"module {spec!r} defines no RpcInterface, IpcInterface or "
                "NotificationInterface: name the module that declares them (or module:attr)"
            )
        return found
    target = load_target(spec)
    return _declarations_of(target, spec)


def _declarations_of(target: Any, spec: str) -> list[type]:
    if declaration_kind(target) is not None:
        return [target]
    if inspect.isfunction(target):  # a factory, as `tether serve` and `tether openapi` take
        target = find_manager(target, spec)
    if isinstance(target, RpcManager):
        served = [target.lookup(name) for name in sorted(target.describe())]
        return [registration.interface for registration in served if registration is not None]
    if isinstance(target, BackendIpc):
        raise CliError(
            f"{spec} is a BackendIpc, which knows neither the notification channels nor the "
            "channels a page serves: name the module that declares the channels instead "
            "(tether codegen typescript myapp.interface)"
        )
    if isinstance(target, list | tuple):
        if not target:
            raise CliError(f"{spec} is empty: {_EXPECTED}")
        for index, item in enumerate(target):
            if declaration_kind(item) is None:
                raise CliError(f"{spec}[{index}] is {_what(item)}: {_EXPECTED}")
        return list(target)
    raise CliError(f"{spec} is {_what(target)}: {_EXPECTED}")


def _what(obj: Any) -> str:
    if isinstance(obj, type):
        declaration = getattr(obj, "__tether_interface__", None) or getattr(
            obj, "__tether_channel__", None
        )
        if declaration is not None and declaration is not obj:
            return (
                f"the class {obj.__qualname__}, an implementation of "
                f"{declaration.__qualname__} (name the declaration)"
            )
        return f"the class {obj.__qualname__}"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _run_typescript(args: argparse.Namespace) -> int:
    declarations = find_declarations(args.target)
    try:
        text = typescript_stubs(declarations, source=args.target, client_module=args.client_module)
    except CodegenError as exc:
        raise CliError(str(exc)) from None
    return write_output(text, args.output)
