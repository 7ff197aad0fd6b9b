"""Operation policies: what a client and a proxy may do with an operation.

Declared once, on the interface (shared code), with decorators on the
operation's declaration::

    class RobotWorldRead(tether.RpcInterface):
        @tether.idempotent
        async def count_robots(self, key: str) -> int: ...

        @tether.cacheable(max_age=60)
        async def world_name(self, key: str) -> str: ...

        @tether.long_running(poll_interval=2.0)
        async def rebuild_index(self, key: str) -> int: ...

A decorator wraps nothing: it records the policy on the function, and the
interface's `Operation` reads it when the class is made (`Operation.policy`).
The policies travel in the endpoint description (`welcome`, `GET {prefix}/`,
OpenAPI `x-tether-policy`) as `{"idempotent": true, "cache": {...},
"long_running": {...}}`, keys present only when set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

import attrs

__all__ = [
    "CachePolicy",
    "LongRunningPolicy",
    "OperationPolicy",
    "cacheable",
    "idempotent",
    "long_running",
    "policy_of",
]

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__tether_policy__"
#: `max-age` of an immutable result: a year, the longest RFC 9111 advises.
IMMUTABLE_MAX_AGE = 31_536_000


def _seconds(name: str, value: float | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


@attrs.frozen(slots=True)
class CachePolicy:
    """How long a cacheable operation's result may be reused.

    Attributes:
        max_age: Seconds a cache may serve the result without asking again
            (`Cache-Control: max-age`); a year when `immutable`.
        immutable: The result for given arguments never changes
            (`Cache-Control: immutable`).
    """

    max_age: float
    immutable: bool = False

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"max_age": self.max_age}
        if self.immutable:
            obj["immutable"] = True
        return obj


@attrs.frozen(slots=True)
class LongRunningPolicy:
    """How a long-running operation is carried where a request cannot wait.

    Attributes:
        poll_interval: Seconds between a client's polls of the status location
            (HTTP), unless the server's `Retry-After` says otherwise.
        ready_within: Seconds the HTTP server waits for the result before it
            answers `202 Accepted` with a status location instead; None: the
            server's setting.
        keep_result: Seconds a finished result waits to be collected before
            the server drops it.
    """

    poll_interval: float = 1.0
    ready_within: float | None = None
    keep_result: float = 60.0

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"poll_interval": self.poll_interval, "keep_result": self.keep_result}
        if self.ready_within is not None:
            obj["ready_within"] = self.ready_within
        return obj


@attrs.frozen(slots=True)
class OperationPolicy:
    """What a client and a proxy may do with one operation (`Operation.policy`).

    Attributes:
        idempotent: Running it twice has the effect of running it once, so a
            call that may have run is retried after a fault. A cacheable
            operation is idempotent.
        cache: Set for a cacheable operation: sent over HTTP as a GET whose
            answer caches and proxies keep.
        long_running: Set for a long-running operation: over HTTP, answered
            `202 Accepted` and polled when it is not ready in time.
    """

    idempotent: bool = False
    cache: CachePolicy | None = None
    long_running: LongRunningPolicy | None = None

    def to_json(self) -> dict[str, Any]:
        """The policy as the endpoint description carries it (only what is set)."""
        obj: dict[str, Any] = {}
        if self.idempotent:
            obj["idempotent"] = True
        if self.cache is not None:
            obj["cache"] = self.cache.to_json()
        if self.long_running is not None:
            obj["long_running"] = self.long_running.to_json()
        return obj

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> OperationPolicy:
        """Read a described policy; parts this version does not know are ignored.

        Raises:
            ValueError: a known part has the wrong shape.
        """
        try:
            cache = obj.get("cache")
            running = obj.get("long_running")
            return cls(
                idempotent=obj.get("idempotent") is True,
                cache=None
                if cache is None
                else CachePolicy(float(cache["max_age"]), cache.get("immutable") is True),
                long_running=None
                if running is None
                else LongRunningPolicy(
                    float(running.get("poll_interval", 1.0)),
                    None if running.get("ready_within") is None else float(running["ready_within"]),
                    float(running.get("keep_result", 60.0)),
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not an operation policy: {obj!r} ({exc})") from None


NO_POLICY = OperationPolicy()


def policy_of(function: Callable[..., Any]) -> OperationPolicy:
    """The policy declared on an operation's function (none by default)."""
    policy = getattr(function, _ATTRIBUTE, NO_POLICY)
    return policy if isinstance(policy, OperationPolicy) else NO_POLICY


def _declare(function: Any, decorator: str, **changes: Any) -> None:
    if not callable(function):
        raise TypeError(
            f"@tether.{decorator} decorates an operation of an interface, got {function!r}"
        )
    setattr(function, _ATTRIBUTE, attrs.evolve(policy_of(function), **changes))


def idempotent(function: F, /) -> F:
    """Declare an operation idempotent: a call that may have run is retried after a fault.

    Declare it only when running the operation twice leaves the same state
    as running it once (a read; a write of a value, not an increment).
    """
    _declare(function, "idempotent", idempotent=True)
    return function


def cacheable(*, max_age: float | None = None, immutable: bool = False) -> Callable[[F], F]:
    """Declare an operation's result cacheable (which makes it idempotent).

    Over HTTP it is sent as `GET {prefix}/{interface}/{version}/{operation}?args=...`
    and answered with `Cache-Control` and an `ETag`, so browsers and caching
    proxies keep it. Give exactly one of:

    Args:
        max_age: Seconds the result may be reused.
        immutable: The result for given arguments never changes (cached a year).

    Raises:
        ValueError: neither or both given, or `max_age` is not a positive number.
    """
    if immutable is not True and immutable is not False:
        raise ValueError(f"immutable must be True or False, got {immutable!r}")
    if (max_age is None) == (not immutable):
        raise ValueError(
            "@tether.cacheable takes max_age=SECONDS or immutable=True (exactly one): how long "
            "may a cache reuse the result?"
        )
    _seconds("max_age", max_age, optional=True)
    policy = CachePolicy(float(max_age) if max_age is not None else IMMUTABLE_MAX_AGE, immutable)

    def decorate(function: F) -> F:
        _declare(function, "cacheable", idempotent=True, cache=policy)
        return function

    return decorate


@overload
def long_running(function: F, /) -> F: ...
@overload
def long_running(
    *,
    poll_interval: float = 1.0,
    ready_within: float | None = None,
    keep_result: float = 60.0,
) -> Callable[[F], F]: ...
def long_running(
    function: F | None = None,
    /,
    *,
    poll_interval: float = 1.0,
    ready_within: float | None = None,
    keep_result: float = 60.0,
) -> F | Callable[[F], F]:
    """Declare an operation long-running: its impl may take minutes.

    Over HTTP, when the result is not ready within `ready_within` (or the
    server's setting), the server answers `202 Accepted` with a status
    location that the client polls, transparently. Over WebSocket and
    in-process the call simply runs on the open connection. The impl may
    report progress with `tether.report_progress`.

    Args:
        poll_interval: Seconds between polls, unless the server says otherwise.
        ready_within: Seconds the HTTP server waits before answering 202.
        keep_result: Seconds a result not collected is kept.

    Raises:
        ValueError: a time is not a positive number.
    """
    _seconds("poll_interval", poll_interval)
    _seconds("ready_within", ready_within, optional=True)
    _seconds("keep_result", keep_result)
    policy = LongRunningPolicy(
        float(poll_interval), None if ready_within is None else float(ready_within), keep_result
    )

    def decorate(function: F) -> F:
        _declare(function, "long_running", long_running=policy)
        return function

    return decorate if function is None else decorate(function)


def check_policy(policy: OperationPolicy, where: str, *, stream: bool) -> None:
    """Refuse policies that do not fit the operation, when its interface is made.

    Raises:
        TypeError: a stream operation declared cacheable or long-running, or
            an operation declared both.
    """
    if stream and (policy.cache is not None or policy.long_running is not None):
        raise TypeError(
            f"operation {where} takes or returns a stream: it cannot be cacheable or "
            "long-running (a stream already delivers as it goes); drop the decorator"
        )
    if policy.cache is not None and policy.long_running is not None:
        raise TypeError(
            f"operation {where} is declared both cacheable and long-running: a cached GET "
            "must answer at once; pick one"
        )
