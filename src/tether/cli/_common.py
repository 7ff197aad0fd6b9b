"""What the subcommands share: loading `module:attr`, and the one-line usage error."""

from __future__ import annotations

import importlib

__all__ = ["UsageError", "load_target"]


class UsageError(Exception):
    """Bad usage or bad input: `main` prints `tether: <message>` and exits with 2."""


def load_target(spec: str) -> object:
    """The object `spec` (`package.module:attr`, attr may be dotted) names.

    Raises:
        UsageError: The spec is malformed, the module cannot be imported, or
            it has no such attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected module:attr (e.g. myapp.backend:manager), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(
                f"no module named {exc.name!r}: check the spec and that its directory "
                "is on PYTHONPATH (or the current directory)"
            ) from None
        raise UsageError(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # whatever the user's module raises at import
        raise UsageError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target
