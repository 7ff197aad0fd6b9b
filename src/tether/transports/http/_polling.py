"""The HTTP client's side of a long-running operation: follow a 202 to the reply.

The server answered a call `202 Accepted` with a status location
(`_long_running`). The caller just keeps awaiting: this polls the location
(every `poll_interval` of the operation's policy, or the server's `Retry-After`
when it asks for longer), hands each new progress report to the caller's
`tether.on_progress` callback, and returns the reply once the server has it.
A caller that stops waiting (cancelled, its deadline passed) sends `DELETE`,
shielded and bounded, so that the server cancels the impl.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any

import trio

from ...runtime import CallMayHaveRun, InvalidRequest, TetherError
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
        TransportError: the connection failed otherwise.
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
                wait = asked  # the server asks for fewer polls
            await trio.sleep(wait)
            response = await _poll(backend, location, poll_headers)
    finally:
        if not finished:
            await _delete(backend, location, poll_headers)


async def _poll(
    backend: HttpBackend, location: bytes, headers: list[tuple[bytes, bytes]]
) -> Response:
    attempt = 1
    while True:
        try:
            return await backend._pool.request(b"GET", location, headers)
        except TetherError as exc:
            wait = retry_delay(exc, backend.options.retry, _POLL, attempt)
            if wait is None:
                raise
            _log.info("polling %s again in %.3f s: %s", "the operation", wait, exc.message)
        attempt += 1
        await trio.sleep(wait)


async def _delete(
    backend: HttpBackend, location: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Tell the server to cancel the operation: shielded from our own cancel, bounded."""
    with trio.CancelScope(shield=True) as scope:
        scope.relative_deadline = _DELETE_TIMEOUT
        with contextlib.suppress(TetherError, InvalidRequest, ValueError):
            await backend._pool.request(b"DELETE", location, headers)
