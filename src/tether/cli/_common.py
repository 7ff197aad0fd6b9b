"""What the subcommands share: one-line failures, loading `module:attr`, URLs."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CliError", "check_url", "load_target"]


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
    try:
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
