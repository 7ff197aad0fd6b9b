"""Retries: which failed calls are tried again, and after how long.

A failure where the call certainly did not run (`ConnectError`,
`CallNotSent`, a 429 or 503 from tether) is retried for every operation; one
where it may have run (`CallMayHaveRun`) only for an idempotent operation.
Nothing else is retried: an answer from the impl is the answer, and a TLS
certificate failure (`unfixable`) is final at once, as no retry can fix it.
Retries never go past the caller's deadline, and every attempt carries the
same ActivityId.
"""

from __future__ import annotations

import math
import random

import attrs
import trio

from ._errors import CallMayHaveRun, CallNotSent, ConnectError, TetherError, Unavailable
from ._policies import OperationPolicy

__all__ = [
    "CERTIFICATE_NOT_TRUSTED",
    "CLIENT_CERTIFICATE_REFUSED",
    "DEFAULT_RETRY",
    "NO_RETRY",
    "STABLE_AFTER",
    "RetryPolicy",
    "asked_wait",
    "check_retry",
    "retry_after_too_long",
    "retry_delay",
    "unfixable",
]


#: Seconds a connection made again must last to end its outage: one lost
#: sooner counts as a failed try of the same outage, so a backend that accepts
#: and drops at once is not redialled every 0.1 s for ever (RPC reconnects,
#: IPC resumes).
STABLE_AFTER = 2.0


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{attribute.name} must be a non-negative number, got {value!r}")


def _attempts(_: object, __: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"attempts must be an integer of at least 1, got {value!r}")


@attrs.frozen(slots=True)
class RetryPolicy:
    """How a client retries a call after a fault, and reconnects a connection.

    The n-th retry waits `initial_backoff * multiplier ** (n - 1)`, at most
    `max_backoff`, give or take `jitter` of it at random (so that clients a
    restart dropped together do not come back together), and at least the
    `Retry-After` the server sent. A wait that would end past the caller's
    deadline is not taken: the last failure is raised instead. Nor is one
    that a server asks for over `max_retry_after` (a maintenance window, or a
    hostile `Retry-After: 3600`): a call without a deadline would hang for
    it, so the refusal (`Unavailable`, its `retry_after` said) is the answer.

    The default (about 11 s of tries in all) rides through a backend restart
    of a few seconds; `NO_RETRY` turns retries and reconnects off.

    Attributes:
        attempts: Tries in all, the first included (1: never retry).
        initial_backoff: Seconds before the first retry.
        max_backoff: The longest wait between two tries, in seconds.
        multiplier: How much each wait grows over the one before.
        jitter: The share of each wait that is random (0 to 1).
        max_retry_after: The longest `Retry-After` waited for, in seconds
            (30); a server asking for longer is not retried.
    """

    attempts: int = attrs.field(default=10, validator=_attempts)
    initial_backoff: float = attrs.field(default=0.1, validator=_positive)
    max_backoff: float = attrs.field(default=2.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    jitter: float = attrs.field(default=0.2, validator=_positive)
    max_retry_after: float = attrs.field(default=30.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.jitter > 1:
            raise ValueError(f"jitter is a share of the wait, from 0 to 1, got {self.jitter!r}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier!r}")

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first)."""
        wait = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        if self.jitter:
            wait *= 1 + self.jitter * (2 * random.random() - 1)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def check_retry(value: object) -> RetryPolicy:
    """`retry=` as every connect takes it: a RetryPolicy, or None for `NO_RETRY`.

    Raises:
        TypeError: anything else.
    """
    if value is None:
        return NO_RETRY
    if not isinstance(value, RetryPolicy):
        raise TypeError(f"retry must be a tether.RetryPolicy or None, got {value!r}")
    return value


#: `ConnectError.reason` of a server certificate the client does not trust
#: (unknown CA, expired, another host name): set by the transports' TLS code.
CERTIFICATE_NOT_TRUSTED = "certificate not trusted"
#: `ConnectError.reason` of a server that refused this client's certificate (mutual TLS).
CLIENT_CERTIFICATE_REFUSED = "client certificate refused"
_UNFIXABLE = frozenset({CERTIFICATE_NOT_TRUSTED, CLIENT_CERTIFICATE_REFUSED})


def unfixable(exc: BaseException) -> bool:
    """Whether a failure to connect is one that no retry can fix: a TLS certificate refused.

    The same certificates meet again on the next try; it takes a change of
    configuration (the CA trusted, the certificate presented). So such a
    failure is raised at once: calls, reconnects and IPC resumes stop at it,
    and a `BackendGroup` takes the member out (the message says why).
    """
    return isinstance(exc, ConnectError) and exc.reason in _UNFIXABLE


def certainly_not_run(exc: BaseException) -> bool:
    """Whether a failure says the call never reached an impl."""
    if isinstance(exc, (ConnectError, CallNotSent)):
        return True
    # tether's refusals (overload, shutdown) come before dispatch.
    return isinstance(exc, Unavailable) and exc.remote


def asked_wait(exc: TetherError) -> float | None:
    """The wait a refusal asks for, in seconds: None when it asks none, or
    nonsense (negative, NaN, not a number); infinity stays (never retried)."""
    if not isinstance(exc, Unavailable):
        return None
    value = exc.retry_after
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if math.isnan(value) or value < 0:
        return None
    return float(value)


def retry_after_too_long(exc: TetherError, policy: RetryPolicy) -> str | None:
    """Why `exc` is not retried when its Retry-After is over the policy's bound, else None."""
    asked = asked_wait(exc)
    if asked is None or asked <= policy.max_retry_after:
        return None
    return (
        f"the server asked to wait {asked:g} s before another try, over retry.max_retry_after "
        f"({policy.max_retry_after:g} s), so it was not retried"
    )


def retry_delay(
    exc: TetherError, policy: RetryPolicy, operation: OperationPolicy, attempt: int
) -> float | None:
    """Seconds to wait before trying again after `attempt` failed with `exc`, or None.

    None: the failure is final, because it is not one that is retried for
    this operation, the attempts are spent, or the wait would pass the
    caller's deadline (which then comes as the failure, not as a cancel).
    """
    if attempt >= policy.attempts or unfixable(exc):
        return None
    if not certainly_not_run(exc) and not (
        operation.idempotent and isinstance(exc, CallMayHaveRun)
    ):
        return None
    retry_after = asked_wait(exc)
    if retry_after is not None and retry_after > policy.max_retry_after:
        return None
    wait = policy.backoff(attempt, retry_after)
    if trio.current_time() + wait >= trio.current_effective_deadline():
        return None
    return wait
