"""IPC over HTTP, the frontend's side: the session opened with a POST, messages
sent as POSTs, and the backend's messages read from its Server-Sent Events.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from ...runtime import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    ConnectError,
    ConnectionClosed,
    ConnectionState,
    FrontendIpc,
    IpcInterface,
    MessageStream,
    PayloadTooLarge,
    RetryPolicy,
    StateWatch,
    TetherError,
    open_ipc_connection,
)
from ...runtime._codec import dumps, loads
from ...runtime._interceptors import Interceptor
from ...runtime._protocol import BinaryMessage, Error, encode
from ...runtime._retry import DEFAULT_RETRY, NO_RETRY, check_retry, unfixable
from ...runtime._streams import DEFAULT_STREAM_WINDOW, StreamWindow, check_stream_window
from ...runtime._util import open_service_nursery
from .._web import heartbeat, pong_message
from ._client import error_info_from_response, split_url, url_context
from ._pool import ConnectionPool, Response, StreamingResponse
from ._wire import DEFAULT_MAX_BODY_SIZE, JSON, PROTOCOL

__all__ = ["connect_ipc"]

_log = logging.getLogger("tether.client")

#: Seconds a leaving IPC frontend spends telling the backend so.
_GOODBYE_TIMEOUT = 1.0
#: Seconds the frontend waits for the answer to `POST {prefix}/ipc`: the
#: backend's own handshake timeout (10 s), and some.
_OPEN_TIMEOUT = 15.0
#: Seconds a session outlives its event stream on a backend that does not
#: say (`grace_ms` in the open response): the server's default.
_DEFAULT_GRACE = 5.0
#: A session's close reason for each way its HTTP connection can fail (the
#: pool's `ConnectionClosed.reason`).
_LOST = "the connection to the backend was lost"
_SESSION_REASONS = {
    "connection lost": _LOST,
    "no data": _LOST,
    "protocol error": "the backend sent something that is not HTTP/1.1",
}


def _session_reason(exc: TetherError) -> str:
    """Why a session ended, when a request of it failed with `exc`."""
    if isinstance(exc, ConnectError):
        return _LOST  # the backend no longer accepts connections
    reason = getattr(exc, "reason", None)
    return _SESSION_REASONS.get(reason or "", reason or "the event stream broke")


class _Broken(Exception):
    """The event stream broke (or a POST's connection did) in a way a resume may mend."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: What failed, in full (the error's message), for the final reason.
        self.detail = detail or reason


class _ClientStream(MessageStream):
    """The frontend's end of an IPC session over HTTP.

    The first message (`hello`) opens the session with `POST {prefix}/ipc`,
    whose answer is the first message received (`welcome`, or the refusal).
    Later messages are POSTs on the session; messages from the backend come
    from the session's event stream, opened after the handshake.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        url: str,
        prefix: str,
        max_message_size: int,
        retry: RetryPolicy = NO_RETRY,
    ) -> None:
        self.max_message_size = max_message_size
        self._pool = pool
        self._retry = retry
        #: The session's state, once `connect_ipc` has its FrontendIpc.
        self.state_watch: StateWatch | None = None
        # What is being resumed now ("events", "send"): RECONNECTING while any.
        self._troubles: set[str] = set()
        # How long the backend keeps the session without an event stream.
        self._grace = _DEFAULT_GRACE
        # The id of the last event handed to the engine: a resumed event
        # stream starts after it (Last-Event-ID).
        self._last_event_id: bytes | None = None
        # The number of the last message POSTed (X-Tether-Seq): a POST sent
        # again after its answer was lost is taken once by the backend.
        self._sent_seq = 0
        self._events_exit: AsyncExitStack | None = None
        # Acknowledging events (when the backend keeps a replay buffer and
        # says how large): an ack goes out once a quarter of either bound
        # was taken since the last, so the backend never sends more than it
        # could replay, and never waits for an ack long.
        self._ack_every: tuple[int, int] | None = None
        self._unacked = 0
        self._unacked_bytes = 0
        self._ack_due: bytes | None = None
        self._ack_lot = trio.lowlevel.ParkingLot()
        self._url = url
        self._prefix = prefix
        self._session: str | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._post_headers: list[tuple[bytes, bytes]] = []
        self._target = b""
        self._received: deque[bytes] = deque()
        self._events: StreamingResponse | None = None
        self._buffer = b""
        self._reason: str | None = None
        self._told_backend = False
        self._receive_scope: trio.CancelScope | None = None
        # The backend's pings: every `ping_interval` s, each to be answered
        # within `ping_timeout` s. Without them, silence goes unnoticed.
        self._ping_interval: float | None = None
        self._ping_timeout = 0.0
        self._ping_due: int | None = None
        self._ping_lot = trio.lowlevel.ParkingLot()

    @property
    def _silence(self) -> float:
        """Seconds without a byte from the backend after which the session is lost."""
        if self._ping_interval is None:
            return math.inf
        return self._ping_interval + self._ping_timeout

    def _closed(self) -> ConnectionClosed:
        reason = self._reason or "closed"
        return ConnectionClosed(f"IPC session with {self._url} closed: {reason}", reason=reason)

    async def send_message(self, data: bytes | BinaryMessage) -> None:
        # JSON only (`binary` is False): bytes values travel as base64.
        assert type(data) is bytes
        if self._reason is not None:
            raise self._closed()
        if len(data) > self.max_message_size:
            raise PayloadTooLarge(
                f"message of {len(data)} bytes is over the session's limit of "
                f"{self.max_message_size}"
            )
        if self._session is None:
            await self._open(data)
            return
        self._sent_seq += 1
        headers = [*self._post_headers, (b"x-tether-seq", b"%d" % self._sent_seq)]
        response = await self._post(data, headers)
        if response.status == 202:
            return
        if response.status == 413:
            raise PayloadTooLarge(error_info_from_response(response, None).message)
        # 404: the session ended (its reason comes on the event stream).
        self._reason = self._reason or "the backend ended the session"
        raise self._closed()

    async def _post(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> Response:
        """POST one message, sent again while its connection fails, within the grace period.

        Safe to send again: the backend takes each `X-Tether-Seq` once, so a
        POST whose answer was lost (it may have been taken) is not taken twice.
        """
        tries = 0
        started = trio.current_time()
        while True:
            try:
                response = await self._pool.request(b"POST", self._target, headers, body)
            except (ConnectionClosed, ConnectError) as exc:
                if self._reason is not None or self._pool.closed:
                    raise self._closed() from None
                if unfixable(exc):  # a TLS certificate refused: no retry can fix it
                    self._reason = exc.message
                    self._untroubled("send")
                    raise self._closed() from None
                tries += 1
                reason = _session_reason(exc)
                delay = self._retry.backoff(tries)
                if tries >= self._retry.attempts or (
                    trio.current_time() + delay > started + self._grace
                ):
                    self._reason = self._reason or self._gave_up(reason, tries, started, str(exc))
                    self._untroubled("send")
                    raise self._closed() from None
                self._troubled("send", reason)
                _log.info(
                    "IPC session %s: sending again in %.2f s (attempt %d): %s",
                    self._session,
                    delay,
                    tries + 1,
                    reason,
                )
                await trio.sleep(delay)
                continue
            if tries:
                self._untroubled("send")
            return response

    def _gave_up(self, reason: str, tries: int, started: float, last: str) -> str:
        """The close reason when the connection could not be made again."""
        if tries <= 1:
            return reason  # retries off: as it failed
        elapsed = trio.current_time() - started
        return (
            f"{reason}, and could not be made again within the backend's grace period of "
            f"{self._grace:g} s ({tries} tries in {elapsed:.1f} s; the last: {last})"
        )

    def _troubled(self, what: str, reason: str) -> None:
        self._troubles.add(what)
        if self.state_watch is not None and self._reason is None:
            self.state_watch.set(ConnectionState.RECONNECTING, reason)

    def _untroubled(self, what: str) -> None:
        self._troubles.discard(what)
        if self.state_watch is not None and self._reason is None and not self._troubles:
            self.state_watch.set(ConnectionState.CONNECTED)

    async def _open(self, hello: bytes) -> None:
        with trio.move_on_after(_OPEN_TIMEOUT) as waited:
            try:
                response = await self._pool.request(
                    b"POST", f"{self._prefix}/ipc".encode(), [JSON, PROTOCOL], hello
                )
            except ConnectionClosed as exc:
                raise ConnectError(
                    f"{self._url} closed the connection during the handshake: {exc}"
                ) from None
        if waited.cancelled_caught:
            raise ConnectError(
                f"{self._url} did not answer the IPC handshake within {_OPEN_TIMEOUT:g} s: is "
                "it a tether backend, and is the way to it open?"
            )
        if response.status != 200:
            info = error_info_from_response(response, None)
            self._received.append(encode(Error(None, info)))
            self._reason = "the backend refused the session"
            return
        try:
            opened = loads(response.body)
            self._session = str(opened["session_id"])
            token = str(opened["token"])
            welcome = opened["welcome"]
            ping = opened.get("ping")
            if ping is not None:
                interval = ping["interval_ms"] / 1000
                timeout = ping["timeout_ms"] / 1000
                if not (0 < interval < math.inf and 0 < timeout < math.inf):
                    raise ValueError(ping)
                self._ping_interval, self._ping_timeout = interval, timeout
            replay = opened.get("replay")
            if replay is not None:
                messages, size = int(replay["messages"]), int(replay["bytes"])
                if messages < 1 or size < 1:
                    raise ValueError(replay)
                self._ack_every = (max(1, messages // 4), max(1, size // 4))
            grace = opened.get("grace_ms")
            if grace is not None:
                if type(grace) is not int or grace < 0:
                    raise ValueError(grace)
                self._grace = grace / 1000
        except (TetherError, KeyError, TypeError, ValueError):
            raise ConnectError(f"{self._url} did not open an IPC session as tether does") from None
        quoted = urllib.parse.quote(self._session, safe="")
        self._target = f"{self._prefix}/ipc/{quoted}".encode()
        self._headers = [(b"x-session-token", token.encode())]
        # JSON, as the server requires of every POST (no cross-site form posts).
        self._post_headers = [JSON, *self._headers]
        self._received.append(dumps(welcome))

    async def receive_message(self) -> bytes:
        if self._received:
            return self._received.popleft()
        if self._reason is not None:
            raise self._closed()
        with trio.CancelScope() as scope:
            self._receive_scope = scope
            try:
                data = await self._next_event()
            except (ConnectionClosed, ConnectError) as exc:
                if self._reason is None:
                    self._reason = _session_reason(exc)
                raise self._closed() from None
            finally:
                self._receive_scope = None
        if scope.cancelled_caught:
            raise self._closed()
        return data

    async def _next_event(self) -> bytes:
        while True:
            try:
                return await self._read_event()
            except _Broken as broken:
                await self._resume(broken.reason)

    async def _open_events(self, *, resuming: bool = False) -> StreamingResponse:
        """Open the session's event stream; when `resuming`, after the last event seen.

        Raises:
            _Broken: the connection failed, or nothing came in time.
            ConnectionClosed: the backend no longer has the session.
        """
        if self._session is None:
            raise ConnectionClosed("no IPC session is open", reason="not open")
        headers = self._headers
        if self._ack_every is not None:
            headers = [*headers, (b"x-tether-acks", b"1")]
        if resuming:
            # "0" before any event came: every event is wanted. With it, the
            # backend also takes over a stream it still thinks open.
            headers = [*headers, (b"last-event-id", self._last_event_id or b"0")]
        await self._drop_events()
        self._events_exit = exit_stack = AsyncExitStack()
        try:
            with trio.move_on_after(self._silence) as waited:
                events = await exit_stack.enter_async_context(
                    self._pool.stream(b"GET", self._target + b"/events", headers)
                )
        except (ConnectionClosed, ConnectError) as exc:
            if self._reason is not None or self._pool.closed:
                raise self._closed() from None
            if resuming and unfixable(exc):  # a TLS certificate refused: no retry can fix it
                self._reason = exc.message
                raise self._closed() from None
            raise _Broken(_session_reason(exc), str(exc)) from None
        if waited.cancelled_caught:
            raise _Broken(self._silent_reason())
        if events.status == 404:
            await self._drop_events()
            self._reason = self._reason or (
                "the backend ended the session"
                if self._last_event_id is None
                else "the backend no longer has the session: it ended it, or the event stream "
                f"was away longer than its grace period of {self._grace:g} s"
            )
            raise self._closed()
        if events.status != 200:
            await self._drop_events()
            raise _Broken(f"the backend answered {events.status} to the event stream")
        self._events = events
        return events

    async def _drop_events(self) -> None:
        """Close the event stream's connection, and forget what came of a partial event."""
        exit_stack, self._events_exit = self._events_exit, None
        self._events = None
        self._buffer = b""
        if exit_stack is not None:
            with trio.CancelScope(shield=True):
                await exit_stack.aclose()

    async def _resume(self, reason: str) -> None:
        """Reopen the broken event stream after the last event seen, within the grace period.

        Tries `retry.attempts - 1` times: at once, then after the policy's
        backoff, as long as the next try starts within the backend's grace
        period (counted from now: the backend may have seen the break later,
        never earlier).

        Raises:
            ConnectionClosed: the stream could not be reopened (the session is
                over, with a reason that says why).
        """
        if self._reason is not None or self._pool.closed:
            raise self._closed()
        started = trio.current_time()
        last = reason
        tries = 1  # the stream that broke
        if self._retry.attempts > 1:
            self._troubled("events", reason)
            _log.info(
                "IPC session %s: the event stream broke (%s): resuming", self._session, reason
            )
        while tries < self._retry.attempts:
            delay = self._retry.backoff(tries - 1) if tries > 1 else 0.0
            if trio.current_time() + delay > started + self._grace:
                break
            await trio.sleep(delay)
            tries += 1
            try:
                with trio.move_on_at(started + self._grace) as waited:
                    await self._open_events(resuming=True)
            except _Broken as exc:
                last = exc.detail
                continue
            except ConnectionClosed:
                self._untroubled("events")
                raise
            if waited.cancelled_caught:
                last = "no answer"
                break
            self._untroubled("events")
            return
        await self._drop_events()
        self._reason = self._reason or self._gave_up(reason, tries, started, last)
        self._untroubled("events")
        raise self._closed()

    def _silent_reason(self) -> str:
        return f"nothing came from the backend for {self._silence:g} s (no event, no ping)"

    async def _read_event(self) -> bytes:
        events = self._events
        if events is None:
            events = await self._open_events()
        buffered = True
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                buffered = False
                # Each wait is bounded: the backend pings every `ping_interval`.
                with trio.move_on_after(self._silence) as waited:
                    try:
                        chunk = await events.receive_some()
                    except ConnectionClosed as exc:
                        if self._reason is not None or self._pool.closed:
                            raise self._closed() from None
                        raise _Broken(_session_reason(exc), str(exc)) from None
                if waited.cancelled_caught:
                    raise _Broken(self._silent_reason())
                if not chunk:
                    raise _Broken("the backend closed the event stream")
                self._buffer += chunk.replace(b"\r\n", b"\n")
                if len(self._buffer) > self.max_message_size + 1024:
                    self._reason = "an event from the backend is over the size limit"
                    raise self._closed()
                continue
            block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            event = b"message"
            event_id: bytes | None = None
            data: list[bytes] = []
            for line in block.split(b"\n"):
                field, _, value = line.partition(b":")
                value = value.removeprefix(b" ")
                if field == b"data":
                    data.append(value)
                elif field == b"id":
                    event_id = value
                elif field == b"event":
                    event = value
            if not data:
                continue  # a comment (keep-alive) or an id alone
            payload = b"\n".join(data)
            if event == b"ping":
                self._take_ping(payload)
                continue
            if event == b"close":
                try:
                    self._reason = str(loads(payload)["reason"])
                except (TetherError, KeyError, TypeError):
                    self._reason = "the backend closed the session"
                self._told_backend = True
                raise self._closed()
            if event_id is not None:
                self._last_event_id = event_id
                every = self._ack_every
                if every is not None:
                    self._unacked += 1
                    self._unacked_bytes += len(payload)
                    if self._unacked >= every[0] or self._unacked_bytes >= every[1]:
                        self._unacked = self._unacked_bytes = 0
                        self._ack_due = event_id
                        self._ack_lot.unpark_all()
            if buffered:
                # A checkpoint, as every receive is: the listeners of the
                # events before this one get to run first.
                await trio.lowlevel.checkpoint()
            return payload

    def _take_ping(self, payload: bytes) -> None:
        """Note a ping for `answer_pings`; the newest one answers all before it."""
        beat = heartbeat(payload)
        if beat is not None and beat[0] == "ping" and type(beat[1]) is int:
            self._ping_due = beat[1]
            self._ping_lot.unpark_all()

    async def answer_pings(self) -> None:
        """Answer the backend's pings with a POSTed pong, for the session's lifetime.

        A task of its own, so that a slow answer never holds up the messages
        read behind the ping.
        """
        while True:
            while self._ping_due is None and self._reason is None:
                await self._ping_lot.park()
            if self._reason is not None or self._ping_due is None:
                return
            ping_id, self._ping_due = self._ping_due, None
            pong = pong_message(ping_id)
            # An answer later than the timeout is worthless; a failed one is
            # not ours to report: the event stream says what happened.
            with trio.move_on_after(self._ping_timeout), contextlib.suppress(TetherError):
                await self._pool.request(b"POST", self._target, self._post_headers, pong)

    async def send_acks(self) -> None:
        """Acknowledge the events taken, for the session's lifetime (see `_ack_every`).

        A task of its own, one ack in flight at a time, each for the newest
        event taken: reading never waits for one.
        """
        while True:
            while self._ack_due is None and self._reason is None:
                await self._ack_lot.park()
            if self._reason is not None or self._ack_due is None:
                return
            ack, self._ack_due = b'{"t":"ack","id":%s}' % self._ack_due, None
            # A lost ack is made good by the next one; a resumed stream
            # does not need it (Last-Event-ID says as much).
            with contextlib.suppress(TetherError):
                await self._pool.request(b"POST", self._target, self._post_headers, ack)

    async def aclose(self, reason: str | None = None) -> None:
        if self._reason is None:
            self._reason = reason or "closed"
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        self._ping_lot.unpark_all()
        self._ack_lot.unpark_all()
        with trio.CancelScope(shield=True):
            if self._session is not None and not self._told_backend and not self._pool.closed:
                self._told_backend = True
                with contextlib.suppress(TetherError), trio.move_on_after(_GOODBYE_TIMEOUT):
                    await self._pool.request(b"DELETE", self._target, self._headers)
            await self._drop_events()
            await self._pool.aclose()


@asynccontextmanager
async def connect_ipc(
    url: str,
    *,
    channels: Iterable[type[IpcInterface]] = (),
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    max_message_size: int = DEFAULT_MAX_BODY_SIZE,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    interceptors: Iterable[Interceptor] = (),
    retry: RetryPolicy | None = DEFAULT_RETRY,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[FrontendIpc]:
    """Open an IPC session with an HTTP backend for the block.

    The session is opened with `POST {prefix}/ipc`; messages to the backend are
    POSTs on it, and the backend's messages (replies, notifications, its calls
    to this frontend) arrive in order on one Server-Sent Events stream.

    Liveness: the backend pings on that stream (every `ipc_ping_interval`
    seconds of its `HttpApp`, 20 by default) and the frontend answers each
    one. When nothing at all comes for the interval plus `ipc_ping_timeout`
    (40 s by default), the session ends with the reason "nothing came from the
    backend for N s (no event, no ping)". A backend that sends no pings is
    not watched.

    Resume: when the event stream breaks (its connection is lost or cut,
    the backend closes it without ending the session, or it goes silent as
    above), the client reopens it by itself with `Last-Event-ID` (the id of
    the last event it took), and the backend sends what followed: nothing is
    lost or delivered twice. A POST whose connection fails is sent again with
    the same `X-Tether-Seq`, which the backend takes once. Meanwhile
    `FrontendIpc.state` is RECONNECTING (CONNECTED again after). Tries follow
    `retry` (the first at once, then its backoff) for as long as the backend
    keeps the session without an event stream (its `ipc_grace_period`, 5 s
    by default, which it tells the client); past that, or with the tries
    spent, the session ends with a reason that says so.

    Args:
        url: The backend's URL, prefix included (what `serve` reports).
        channels: The channels this frontend will call; each is checked before
            the block starts.
        application_id: Who the frontend is; the backend's contexts carry it.
        application_version: That application's version.
        authorization: The credential for the backend's `authorize` hook, sent
            in the `hello` (the body of `POST {prefix}/ipc`); never logged.
        max_message_size: Largest message either way, in bytes.
        max_pending_notifications: Notifications that may wait for this
            frontend's listeners before it stops reading.
        max_pending_bytes: The same bound in encoded bytes (a single larger
            notification still passes, alone).
        slow_listener_timeout: Seconds the listeners may leave that queue full
            before the session is closed as "frontend too slow".
        stream_window: How much of each stream this frontend takes before
            its sender must wait (`tether.StreamWindow`; 256 items, 4 MiB by
            default): the result items of its stream calls, and the argument
            items of the backend's stream calls to channels it serves.
        interceptors: Run around every invoke and notification this frontend
            sends (`CallInfo.side` "client") and receives ("server"), inside the
            process-wide ones; first outermost.
        retry: How the event stream and failed POSTs are retried
            (`tether.RetryPolicy`; up to 10 tries from 0.1 s to 2 s apart by
            default, within the backend's grace period); None: never, a
            broken connection ends the session.
        ssl_context: The TLS settings of an `https://` URL (as for `connect`);
            `ssl.create_default_context()` by default.

    Raises:
        ConnectError: the backend cannot be reached.
        Unauthorized: the backend's `authorize` hook refused the session (401).
        Unavailable: the backend is full (503), or this client has its
            `max_sessions_per_client` open (429).
        NotFound: the backend serves no IPC (or is not a tether backend), or
            does not serve one of `channels`.
        IncompatibleVersion: a channel's version is incompatible.
        ValueError: `url` is not an http:// or https:// URL, or
            `stream_window` not a `tether.StreamWindow`.
        TypeError: `retry` is not a `tether.RetryPolicy` or None, or
            `ssl_context` not an `ssl.SSLContext` or None.
    """
    host, port, prefix = split_url(url)
    check_stream_window(stream_window)
    policy = check_retry(retry)
    context = url_context(url, ssl_context)
    pool = ConnectionPool(
        host, port, max_connections=8, max_response_size=max_message_size, ssl_context=context
    )
    stream = _ClientStream(pool, url, prefix, max_message_size, policy)
    try:
        async with (
            open_ipc_connection(
                stream,
                channels=channels,
                application_id=application_id,
                application_version=application_version,
                authorization=authorization,
                max_pending_notifications=max_pending_notifications,
                max_pending_bytes=max_pending_bytes,
                slow_listener_timeout=slow_listener_timeout,
                stream_window=stream_window,
                interceptors=interceptors,
            ) as frontend,
            open_service_nursery() as nursery,
        ):
            # The session's state is the engine's; this stream says when it
            # is resuming (the engine sets CLOSED).
            stream.state_watch = frontend._peer.state_watch
            nursery.start_soon(stream.answer_pings)
            nursery.start_soon(stream.send_acks)
            try:
                yield frontend
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
