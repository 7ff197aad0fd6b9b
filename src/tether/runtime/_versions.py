"""Semantic versions of interfaces, and the rule that says which ones can talk."""

from __future__ import annotations

import functools
import re

import attrs

__all__ = ["MAX_VERSION_LENGTH", "Version", "is_version_compatible", "parse_version"]

#: The longest version string taken (node-semver's bound): versions come from
#: the other side of a connection, and the parsed ones are cached.
MAX_VERSION_LENGTH = 256

# semver.org 2.0.0: numeric parts without leading zeros, dotted prerelease and build.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


@attrs.frozen(slots=True)
class Version:
    """A parsed semantic version. Build metadata is kept but never compared."""

    major: int
    minor: int
    patch: int
    prerelease: str | None = None
    build: str | None = None


@functools.lru_cache(maxsize=1024)
def parse_version(text: str) -> Version:
    """Parse a semantic version such as `1.2.3` or `1.2.3-dev.1`.

    Raises:
        ValueError: `text` is not a semantic version (semver.org 2.0.0), or
            is longer than `MAX_VERSION_LENGTH` characters.
    """
    if isinstance(text, str) and len(text) > MAX_VERSION_LENGTH:
        raise ValueError(
            f"a version of {len(text)} characters is longer than the {MAX_VERSION_LENGTH} "
            "characters tether takes: use a semantic version such as '1.0.0'"
        )
    match = _SEMVER.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a semantic version: expected MAJOR.MINOR.PATCH such as "
            "'1.0.0', optionally with a prerelease ('1.0.0-dev.1')"
        )
    major, minor, patch, prerelease, build = match.groups()
    return Version(int(major), int(minor), int(patch), prerelease, build)


@functools.lru_cache(maxsize=1024)
def is_version_compatible(backend_version: str, frontend_version: str) -> bool:
    """Say whether a frontend built against one interface version can call a backend.

    The rules are those of iTwin.js (client = frontend, server = backend):

    1. the same version: compatible;
    2. a prerelease on either side: compatible only if the same version;
    3. different major: incompatible;
    4. major 0: compatible only when they differ in patch alone, and the
       frontend's patch is lower (in 0.x a patch may add operations);
    5. major >= 1: compatible when they differ in patch alone (either way), or in
       minor with the frontend's minor lower than the backend's.

    "The same version" ignores build metadata (`+build`), as semver does.

    Args:
        backend_version: The version the backend (server) implements.
        frontend_version: The version the frontend (client) was built against.

    Raises:
        ValueError: Either string is not a semantic version.
    """
    backend = parse_version(backend_version)
    frontend = parse_version(frontend_version)
    same_core = (backend.major, backend.minor, backend.patch) == (
        frontend.major,
        frontend.minor,
        frontend.patch,
    )
    if same_core and backend.prerelease == frontend.prerelease:
        return True
    if backend.prerelease is not None or frontend.prerelease is not None:
        return False
    if backend.major != frontend.major:
        return False
    if backend.major == 0:
        return backend.minor == frontend.minor and frontend.patch < backend.patch
    if backend.minor == frontend.minor:
        return True  # they differ in patch alone
    return frontend.minor < backend.minor


def compatibility_advice(name: str, backend_version: str, frontend_version: str) -> str:
    """Explain an incompatibility in the words of STYLE.md: what, and what to do."""
    try:
        backend = parse_version(backend_version)
        frontend = parse_version(frontend_version)
    except ValueError:
        return (
            f"backend serves {name} {backend_version}, this client needs {frontend_version}: "
            "one of them is not a semantic version"
        )
    head = f"backend serves {name} {backend_version}, this client needs {frontend_version}"
    if backend.prerelease is not None or frontend.prerelease is not None:
        return (
            f"{head}: prerelease versions must match exactly; deploy the same build on both sides"
        )
    if backend.major != frontend.major:
        return (
            f"{head}: a different major version is a breaking change; deploy a backend "
            f"and a client of the same major version"
        )
    return f"{head}: upgrade the backend or pin the client to {backend.major}.{backend.minor}.x"
