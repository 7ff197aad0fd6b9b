"""What the subcommands share: one-line failures, loading `module:attr`, URLs."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CliError", "check_url", "json_text", "load_target", "printable"]


class CliError(Exception):
    """A failure told as one line on stderr (`tether: <message>`), with its exit code.

    `main` catches it: the user sees the message, never a traceback.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_target(spec: str) -> Any:
    """Import `module:attr` (attr may be dotted) and return the object it names.

    Raises:
        CliError: the spec is not `module:attr`, the module does not import,
            or it has no such attribute (exit code 2).
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"expected module:attr (e.g. myapp.backend:manager), got {spec!r}")
    # The installed `tether` script puts its own folder first on sys.path, not
    # the current one: add it, so an app is found from its folder (as hypercorn
    # and uvicorn do).
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        # stdout is the command's output (the served URLs, the OpenAPI document):
        # what the module prints while importing goes to stderr with the logs.
        with contextlib.redirect_stdout(sys.stderr):
            target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CliError(
                f"no module named {exc.name!r}: check the spec and that its directory "
                "is on PYTHONPATH (or the current directory)"
            ) from None
        raise CliError(f"importing {module_name!r} failed: {exc}") from None
    except ImportError as exc:
        raise CliError(
            f"cannot import module {module_name!r} ({exc}): check the name and PYTHONPATH"
        ) from None
    except SystemExit as exc:  # the module ended the process itself
        raise CliError(
            f"importing module {module_name!r} called sys.exit({exc.code!r}): "
            "a served module must not exit when imported"
        ) from None
    except Exception as exc:  # the module's own code failed while importing
        raise CliError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(
                f"module {module_name!r} has no attribute {attr!r}: name an object in it"
            ) from None
    return target


def check_url(url: str, schemes: tuple[str, ...] = ("http", "https", "ws", "wss")) -> str:
    """Return the URL's scheme, or raise `CliError` when it is not one of `schemes`."""
    if "@" in url.partition("//")[2].partition("/")[0]:
        # user:password@host: a credential, so the message does not repeat the URL.
        raise CliError(
            "the URL carries a user name or password (user:password@host), which tether "
            "does not send: remove it and give -H 'Authorization: ...' instead"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise CliError(f"{url!r} is not a URL: {exc}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise CliError(
            f"expected a URL starting with {', '.join(s + '://' for s in schemes)} "
            f"and naming a host, got {url!r}"
        )
    return parts.scheme


#: What a server's text must not put raw on a terminal: C0 controls (ESC starts
#: an escape sequence, a newline forges a line), DEL, C1 controls (0x9b is a CSI
#: on some terminals), and the bidirectional overrides and line separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with each control character written as its Python escape (`\\x1b`, `\\n`).

    Everything the command prints that a server (or a module) wrote goes
    through this or `json_text`: raw, it could drive the user's terminal.
    """
    return _UNSAFE.sub(lambda m: repr(m.group())[1:-1], text)


def json_text(value: Any) -> str:
    """`value` as one line of JSON with no raw control character (escaped as `\\uXXXX`)."""
    text = json.dumps(value, ensure_ascii=False)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def write_output(text: str, output: str | None) -> int:
    """Write a command's document to the file `output`, or stdout when None or `-`.

    Raises:
        CliError: the file cannot be written.
    """
    if output is None or output == "-":
        sys.stdout.write(text)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    return 0
