"""The HTTP client's side of a long-running operation: follow a 202 to the reply.

The server answered a call `202 Accepted` with a status location
(`_long_running`). The caller just keeps awaiting: this polls the location
(every `poll_interval` of the operation's policy, or the server's `Retry-After`
when it asks for longer), hands each new progress report to the caller's
`tether.on_progress` callback, and returns the reply once the server has it.
A caller that stops waiting (cancelled, its deadline passed) sends `DELETE`,
shielded and bounded, so that the server cancels the impl.

Once the server has accepted the call, nothing that happens to a poll may
read as "the call did not run": a poll that cannot reach the server, or that
something on the way answers 429 or 503 (a load balancer whose targets
restart), is tried again as the read it is, and when the tries are spent the
caller gets `CallMayHaveRun`, which is never retried for a non-idempotent
operation. Passing the poll's own failure on (a `ConnectError`, an
`Unavailable`) would make the retry loop send the call again, and run it twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any

import trio

from ...runtime import (
    CallMayHaveRun,
    ConnectError,
    ConnectionClosed,
    InvalidRequest,
    TetherError,
    Unavailable,
)
from ...runtime._codec import loads
from ...runtime._policies import OperationPolicy
from ...runtime._progress import Progress, current_listener, deliver
from ...runtime._protocol import Call, Error, ErrorInfo, Result
from ...runtime._retry import retry_delay
from ._pool import Response
from ._wire import PROTOCOL

if TYPE_CHECKING:
    from ._client import HttpBackend

__all__ = ["follow_operation"]

_log = logging.getLogger("tether.client")
#: How long a caller that stops waiting spends telling the server to cancel.
_DELETE_TIMEOUT = 1.0
#: Polls are reads: retried after any fault a retry policy allows for an idempotent call.
_POLL = OperationPolicy(idempotent=True)
_DEFAULT_INTERVAL = 1.0


def _retry_after(response: Response) -> float | None:
    value = response.header(b"retry-after")
    return float(value) if value is not None and value.isdigit() else None


def _progress(response: Response) -> Progress | None:
    """The progress a 202 says, if it says one this client can read."""
    try:
        described = loads(response.body).get("progress")
        return None if described is None else Progress.from_json(described)
    except (TetherError, ValueError, AttributeError):
        return None


async def follow_operation(
    backend: HttpBackend,
    call: Call,
    accepted: Response,
    headers: list[tuple[bytes, bytes]],
    activity_id: str,
    reply: Any,
) -> Result | Error:
    """Poll the location of a 202 until the operation's reply; return it.

    Args:
        backend: The connection the call went through.
        call: The call.
        accepted: The server's 202.
        headers: The call's context headers (its `Authorization` among them).
        activity_id: The call's ActivityId.
        reply: Turns a final response into the call's reply (as for a POST).

    Raises:
        CallMayHaveRun: the server no longer holds the operation (404: it was
            dropped, or the server restarted), or the polls failed: it may
            have run, and its reply is lost.
        ConnectionClosed: the connection was closed on this side.
    """
    location = accepted.header(b"location")
    if location is None or not location.startswith(b"/"):
        info = ErrorInfo(
            "internal",
            502,
            "HTTPError",
            "the server answered 202 Accepted without a status location to poll: is a proxy "
            "rewriting the answer?",
        )
        return Error(call.id, info)
    interval = _DEFAULT_INTERVAL
    described = backend.interfaces.get(call.iface)
    policy = None if described is None else described.policies.get(call.op)
    if policy is not None and policy.long_running is not None:
        interval = policy.long_running.poll_interval
    poll_headers = [h for h in headers if h[0] in (b"authorization", b"x-correlation-id")]
    poll_headers += [PROTOCOL, (b"accept", b"application/vnd.tether.frame, application/json")]
    listener = current_listener()
    last: Progress | None = None
    response = accepted
    finished = False
    try:
        while True:
            if response.status != 202:
                finished = True
                if response.status == 404:
                    raise CallMayHaveRun(
                        f"the backend no longer holds the long-running {call.iface}.{call.op} "
                        "it accepted (it dropped the reply, or restarted): it may have run, and "
                        "its reply is lost",
                        reason="operation lost",
                        activity_id=activity_id,
                    )
                result: Result | Error = reply(response)
                return result
            progress = _progress(response)
            if listener is not None and progress is not None and progress != last:
                last = progress
                deliver(listener, progress)
            wait = interval
            asked = _retry_after(response)
            if asked is not None and asked > math.ceil(interval):
                # The server asks for fewer polls; never for longer than the
                # client waits on any Retry-After (a call may have no deadline).
                wait = min(asked, max(interval, backend.options.retry.max_retry_after))
            await trio.sleep(wait)
            response = await _poll(backend, location, poll_headers, call, activity_id)
    finally:
        if not finished:
            await _delete(backend, location, poll_headers)


async def _poll(
    backend: HttpBackend,
    location: bytes,
    headers: list[tuple[bytes, bytes]],
    call: Call,
    activity_id: str,
) -> Response:
    """One poll's response, tried again (as a read) after a fault or a 429/503 on the way.

    Raises:
        CallMayHaveRun: the tries are spent (the operation runs, or ran).
        ConnectionClosed: the connection was closed on this side.
    """
    attempt = 1
    while True:
        failure: TetherError
        try:
            response = await backend._pool.request(b"GET", location, headers)
        except (ConnectError, ConnectionClosed) as exc:
            if type(exc) is ConnectionClosed and exc.reason in ("closed", "pool closed"):
                raise  # closed here: nothing to wait for
            failure = exc
        else:
            if response.status not in (429, 503) or _is_reply(response):
                return response
            failure = Unavailable(
                f"a poll was answered {response.status} by something other than the backend",
                retry_after=_retry_after(response),
                remote=True,
            )
        wait = retry_delay(failure, backend.options.retry, _POLL, attempt)
        if wait is None:
            raise CallMayHaveRun(
                f"the backend accepted the long-running {call.iface}.{call.op} (202), then its "
                f"status could not be read ({failure.message}): it may have run, and its reply "
                "is lost",
                reason="operation lost",
                activity_id=activity_id,
            ) from failure
        _log.info("polling %s again in %.3f s: %s", "the operation", wait, failure.message)
        attempt += 1
        await trio.sleep(wait)


def _is_reply(response: Response) -> bool:
    """Whether a 429/503 to a poll is the operation's own reply (tether's error body).

    tether never refuses a poll so: such an answer with tether's body is the
    impl's `Unavailable`; any other is a proxy's, about the poll only.
    """
    try:
        error = loads(response.body)["error"]
        return isinstance(error["code"], str)
    except (TetherError, ValueError, KeyError, TypeError):
        return False


async def _delete(
    backend: HttpBackend, location: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Tell the server to cancel the operation: shielded from our own cancel, bounded."""
    with trio.CancelScope(shield=True) as scope:
        scope.relative_deadline = _DELETE_TIMEOUT
        with contextlib.suppress(TetherError, InvalidRequest, ValueError):
            await backend._pool.request(b"DELETE", location, headers)
