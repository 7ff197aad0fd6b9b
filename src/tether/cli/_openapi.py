"""`tether openapi module:attr`: write the OpenAPI document without serving."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..runtime import RpcManager
from ..transports.http._openapi import openapi_document
from ._common import CliError, load_target, write_output

__all__ = ["find_manager", "register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tether openapi` to the command line."""
    parser = commands.add_parser(
        "openapi",
        help="write the OpenAPI 3.1 document of an RpcManager's HTTP routes",
        description="Write the OpenAPI document that GET {prefix}/openapi.json would answer, "
        "for the RpcManager at module:attr (or an object or factory holding one).",
    )
    parser.add_argument("target", metavar="module:attr")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    parser.add_argument("--prefix", default="/rpc", help="the HTTP prefix (default /rpc)")
    parser.set_defaults(run=_run)


def find_manager(target: Any, spec: str) -> RpcManager:
    """The RpcManager `target` is, holds (an attribute), or makes (called with no arguments).

    Raises:
        CliError: none found (exit 2).
    """
    if callable(target) and not isinstance(target, RpcManager):
        try:
            target = target()
        except Exception as exc:
            raise CliError(
                f"calling {spec} (with no arguments) raised {type(exc).__name__}: {exc}"
            ) from None
    if isinstance(target, RpcManager):
        return target
    for value in vars(target).values() if hasattr(target, "__dict__") else ():
        if isinstance(value, RpcManager):
            return value
    raise CliError(
        f"{spec} is a {type(target).__name__}, expected an RpcManager, an object with one as "
        "an attribute, or a function returning either"
    )


def _run(args: argparse.Namespace) -> int:
    manager = find_manager(load_target(args.target), args.target)
    text = json.dumps(openapi_document(manager, prefix=args.prefix), indent=2) + "\n"
    return write_output(text, args.output)
