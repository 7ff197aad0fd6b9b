"""A small HTTP/1.1 client connection pool for Trio, on h11.

The HTTP transport's client: it talks to one origin (a hypercorn server) and
does only what tether needs, which is why it is faster than httpx over the same
h11 state machine, and why its failure modes are tether's:

* keep-alive connections are reused most-recent-first, and an idle connection is
  dropped after `idle_expiry` seconds, shorter than the server's keep-alive
  timeout (hypercorn closes idle connections after 5 s), so that the client
  never sends a request on a connection the server is closing at that moment;
* should the server close a reused connection anyway, an idempotent request
  (GET, HEAD, DELETE...) is sent again, once, on a fresh connection, but only
  if no byte of the response came back; so is any request the connection
  broke under before it was written whole. A POST that went out is never
  sent twice here: the server may have started it before it went away (a
  crash, a restart's grace period running out); that failure is a
  `CallMayHaveRun`, and the runtime retries it only for idempotent operations;
* a cancelled request closes its connection, so the server sees a disconnect and
  cancels the work it started for it;
* every failure is one of tether's errors (`ConnectError`, `ConnectionClosed`,
  `PayloadTooLarge`); no trio, h11 or OS exception reaches the caller.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
import h11
import trio

from ...runtime import (
    CallMayHaveRun,
    CallNotSent,
    ConnectError,
    ConnectionClosed,
    PayloadTooLarge,
)
from ...runtime._util import check_seconds
from .._tls import open_tls_stream, tls_connect_error

__all__ = ["ConnectionPool", "PoolStatistics", "Response", "StreamingResponse"]

#: Bytes asked of the socket per read.
_RECEIVE_SIZE = 65536
#: Bodies up to this size are copied behind the head and go out in one send:
#: one system call, and one TCP segment for small requests.
_COALESCE_LIMIT = 65536
#: Methods whose requests carry no Content-Length when they have no body
#: (RFC 9110 section 8.6: a client should not send one then).
_NO_BODY_METHODS = frozenset({b"GET", b"HEAD"})

Headers = list[tuple[bytes, bytes]]

#: What a connection's socket and h11 raise when the exchange fails; each becomes
#: a `ConnectionClosed` (see `ConnectionPool._translate`).
_FAILURES = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.ProtocolError)


def _find_header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


class Response:
    """A complete HTTP response.

    Attributes:
        status: The status code.
        headers: The headers as (name, value) pairs, names lower-cased.
        body: The whole body.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        """Return the first value of the header `name` (lower-case), or None."""
        return _find_header(self.headers, name)

    def __repr__(self) -> str:
        return f"<Response {self.status}, {len(self.body)} bytes>"


@attrs.frozen
class PoolStatistics:
    """What a `ConnectionPool` holds at one moment.

    Attributes:
        idle: Open connections waiting for a request.
        in_use: Connections carrying a request or a stream.
        opened: Connections opened since the pool was made, closed ones included.
    """

    idle: int
    in_use: int
    opened: int


class _Connection:
    """One TCP connection (or TLS over one) and its h11 state machine."""

    __slots__ = ("eof", "h11", "idle_since", "socket", "stream")

    def __init__(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        #: The TCP socket under the stream (under TLS, the transport's).
        self.socket = (
            stream.socket if type(stream) is trio.SocketStream else stream.transport_stream.socket
        )
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        # The server closed its side: h11's "incomplete" errors after this mean
        # the connection was lost, not that the server broke the protocol.
        self.eof = False

    async def read(self, size: int = _RECEIVE_SIZE) -> None:
        """Give h11 the next bytes from the server, at most `size` (an end of stream at EOF)."""
        data = await self.stream.receive_some(size)
        if not data:
            self.eof = True
        # bytes() of bytes is the same object: no copy on a plain socket.
        self.h11.receive_data(bytes(data))


class _Silent(Exception):
    """The server sent nothing for `read_timeout` seconds in the middle of a response."""


#: Methods a request may be sent again for (RFC 9110 section 9.2.2).
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class _NoResponse(Exception):
    """The connection ended before the first byte of the response came back.

    On a reused connection that means the server had closed it: the request is
    worth sending again on a fresh one.

    Attributes:
        sent: Whether the whole request was written. When not, the server
            cannot have read it whole, so it did not run.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class StreamingResponse:
    """A response whose body is read as it arrives, for Server-Sent Events.

    Made by `ConnectionPool.stream`; it is valid inside that block only.

    Attributes:
        status: The status code.
        headers: The headers as (name, value) pairs, names lower-cased.
    """

    __slots__ = ("_conn", "_done", "_pool", "headers", "status")

    def __init__(
        self, pool: ConnectionPool, conn: _Connection, status: int, headers: Headers
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._done = False
        self.status = status
        self.headers = headers

    def header(self, name: bytes) -> bytes | None:
        """Return the first value of the header `name` (lower-case), or None."""
        return _find_header(self.headers, name)

    async def receive_some(self) -> bytes:
        """Wait for the next chunk of the body.

        Returns:
            The chunk, never empty; b"" once the body has ended.

        Raises:
            ConnectionClosed: The connection broke before the end of the body,
                the server broke the protocol, the pool was closed, or the
                `stream` block has ended.
        """
        if self._done:
            return b""
        conn = self._conn
        try:
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    await conn.read()
                elif type(event) is h11.Data:
                    if event.data:
                        return bytes(event.data)
                elif type(event) is h11.EndOfMessage:
                    self._done = True
                    return b""
                else:
                    raise ConnectionClosed(
                        f"{self._pool._origin} sent {event!r} in the middle of a response body",
                        reason="protocol error",
                    )
        except _FAILURES as exc:
            raise self._pool._translate(exc, "while streaming the response", conn) from exc

    async def read_all(self, limit: int) -> bytes:
        """Read the rest of the body.

        Args:
            limit: The most bytes the body may have.

        Returns:
            The rest of the body.

        Raises:
            PayloadTooLarge: The body is longer than `limit`.
            ConnectionClosed: As for `receive_some`.
        """
        length = _content_length(self.headers)
        if length is not None and length > limit:
            raise self._pool._too_large(length, limit, "the limit")
        chunks: list[bytes] = []
        size = 0
        while chunk := await self.receive_some():
            size += len(chunk)
            if size > limit:
                raise self._pool._too_large(size, limit, "the limit", at_least=True)
            chunks.append(chunk)
        return b"".join(chunks)


def _content_length(headers: Headers) -> int | None:
    value = _find_header(headers, b"content-length")
    # h11 has checked that the value is digits.
    return None if value is None else int(value)


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections to one server, shared by concurrent requests.

    Args:
        host: The server's host name or address.
        port: The server's TCP port.
        max_connections: The most connections open at once; further requests
            wait for one to be free.
        idle_expiry: Seconds after which an idle connection is closed instead
            of reused. Keep it below the server's keep-alive timeout.
        max_response_size: The largest response body `request` accepts, in bytes.
        read_timeout: Seconds `request` waits for more of a response once its
            first byte has come (a gap in the head or between chunks of the
            body) before it gives the connection up as lost; None waits
            forever. The wait for the first byte is the caller's to bound:
            the server may take its time to answer. `stream` has none.
        ssl_context: Speak TLS with this context (`https://`); None: plain TCP.
            A handshake that fails is a `ConnectError` saying why.

    Raises:
        ValueError: `max_connections` is below 1, or a size or time is negative.
    """

    __slots__ = (
        "_closed",
        "_connecting",
        "_host",
        "_host_header",
        "_idle",
        "_idle_expiry",
        "_in_use",
        "_max_response_size",
        "_opened",
        "_origin",
        "_port",
        "_read_timeout",
        "_slots",
        "_ssl_context",
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_connections: int = 100,
        idle_expiry: float = 4.0,
        max_response_size: int = 16 * 1024 * 1024,
        read_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        if idle_expiry < 0 or max_response_size < 0:
            raise ValueError("idle_expiry and max_response_size must not be negative")
        check_seconds("read_timeout", read_timeout, optional=True, finite=False)
        self._read_timeout = read_timeout
        self._host = host
        self._port = port
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # The server, as error messages name it.
        self._origin = f"{'https' if ssl_context is not None else 'http'}://{netloc}"
        self._ssl_context = ssl_context
        self._host_header = (b"host", netloc.encode("ascii"))
        self._idle_expiry = idle_expiry
        self._max_response_size = max_response_size
        # One slot per open connection: a request holds one from before it
        # takes a connection until it has put it back, so the connections open
        # (idle + in use) never outnumber the slots.
        self._slots = trio.Semaphore(max_connections)
        # Oldest on the left; requests take from the right, the most recently
        # used, whose server-side keep-alive timer has the most time left.
        self._idle: deque[_Connection] = deque()
        self._in_use: set[_Connection] = set()
        self._connecting: set[trio.CancelScope] = set()
        self._opened = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `aclose` has been called."""
        return self._closed

    def statistics(self) -> PoolStatistics:
        """Return how many connections are idle and in use, and how many were opened."""
        return PoolStatistics(idle=len(self._idle), in_use=len(self._in_use), opened=self._opened)

    async def request(
        self, method: bytes, target: bytes, headers: Headers, body: bytes = b""
    ) -> Response:
        """Send a request and read the whole response.

        Args:
            method: The method, such as b"POST".
            target: The request target, such as b"/rpc/Api/op".
            headers: Headers sent as given; the pool adds Host and Content-Length.
            body: The request body.

        Returns:
            The response.

        Raises:
            ConnectError: The server could not be reached.
            ConnectionClosed: The connection was lost before the whole response
                came (reason "connection lost"), the server sent nothing for
                `read_timeout` seconds in the middle of it, the server broke
                the protocol ("protocol error"), or the pool is closed.
            PayloadTooLarge: The response body is over `max_response_size`.
            ValueError: The method, target or a header is not valid HTTP.
        """
        h11_request = self._build_request(method, target, headers, body)
        async with self._slots:
            conn, head = await self._start(h11_request, body)
            response_headers = list(head.headers)
            try:
                length = _content_length(response_headers)
                limit = self._max_response_size
                if length is not None and length > limit:
                    raise self._too_large(length, limit, "max_response_size")
                content = await self._receive_body(conn, limit)
            except (*_FAILURES, _Silent) as exc:
                await self._discard(conn)
                raise self._translate(exc, "while receiving the response", conn) from exc
            except BaseException:
                # Cancelled included: closing tells the server the caller has gone.
                await self._discard(conn)
                raise
            await self._release(conn)
        return Response(head.status_code, response_headers, content)

    def stream(
        self, method: bytes, target: bytes, headers: Headers, body: bytes = b""
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        """Send a request, and read the response's body as it comes, in a block.

        The connection serves this stream only, and is closed when the block
        ends, so leaving the block early tells the server the client has gone.
        It counts against `max_connections` while the block runs.

        Args:
            method: The method, such as b"GET".
            target: The request target.
            headers: Headers sent as given; the pool adds Host and Content-Length.
            body: The request body.

        Returns:
            An async context manager giving the `StreamingResponse` once the
            response's head has come.

        Raises:
            ConnectError: The server could not be reached (on entering).
            ConnectionClosed: The connection broke before the response's head
                came, or the pool is closed (on entering).
            ValueError: The method, target or a header is not valid HTTP.
        """
        return self._stream(self._build_request(method, target, headers, body), body)

    @asynccontextmanager
    async def _stream(
        self, h11_request: h11.Request, body: bytes
    ) -> AsyncIterator[StreamingResponse]:
        async with self._slots:
            conn, head = await self._start(h11_request, body)
            try:
                yield StreamingResponse(self, conn, head.status_code, list(head.headers))
            finally:
                await self._discard(conn)

    async def aclose(self) -> None:
        """Close the pool and every connection in it.

        Requests and streams in progress fail with `ConnectionClosed`; so do
        requests made later. Calling it again does nothing.
        """
        self._closed = True
        for scope in self._connecting:
            scope.cancel()
        conns = [*self._idle, *self._in_use]
        self._idle.clear()
        self._in_use.clear()
        for conn in conns:
            await trio.aclose_forcefully(conn.stream)

    # -----------------------------------------------------------------------
    # Connections

    async def _checkout(self) -> tuple[_Connection, bool]:
        """Take an idle connection or open one; return it and whether it was reused."""
        if self._closed:
            raise self._closed_error()
        idle = self._idle
        if idle:
            expired = trio.current_time() - self._idle_expiry
            while idle and idle[0].idle_since <= expired:
                await trio.aclose_forcefully(idle.popleft().stream)
            while idle:
                conn = idle.pop()
                # Readable while idle: the server closed it (EOF) or sent bytes
                # nobody asked for. Either way it cannot carry a request.
                if conn.socket.is_readable():
                    await trio.aclose_forcefully(conn.stream)
                    continue
                self._in_use.add(conn)
                return conn, True
        return await self._connect(), False

    async def _connect(self) -> _Connection:
        with trio.CancelScope() as scope:
            # Registered so that `aclose` can stop a connect in progress.
            self._connecting.add(scope)
            try:
                stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
                if self._ssl_context is not None:
                    stream = await open_tls_stream(
                        self._host, self._port, self._ssl_context, self._origin
                    )
                else:
                    stream = await trio.open_tcp_stream(self._host, self._port)
            except OSError as exc:
                raise ConnectError(
                    f"could not connect to {self._origin}: {exc}: "
                    "is the server running and listening on that address?"
                ) from exc
            finally:
                self._connecting.discard(scope)
        if scope.cancelled_caught:
            raise self._closed_error()
        if self._closed:
            await trio.aclose_forcefully(stream)
            raise self._closed_error()
        conn = _Connection(stream)
        self._opened += 1
        self._in_use.add(conn)
        return conn

    async def _release(self, conn: _Connection) -> None:
        """Put a connection whose exchange has completed back, or close it."""
        self._in_use.discard(conn)
        state = conn.h11
        # h11 knows whether the connection can carry another request: not after
        # `Connection: close`, an HTTP/1.0 response, or a body ended by EOF.
        if state.our_state is h11.DONE and state.their_state is h11.DONE and not self._closed:
            state.start_next_cycle()
            conn.idle_since = trio.current_time()
            self._idle.append(conn)
        else:
            await trio.aclose_forcefully(conn.stream)

    async def _discard(self, conn: _Connection) -> None:
        self._in_use.discard(conn)
        await trio.aclose_forcefully(conn.stream)

    # -----------------------------------------------------------------------
    # The exchange

    def _build_request(
        self, method: bytes, target: bytes, headers: Headers, body: bytes | None
    ) -> h11.Request:
        """The request, with Host and its body's framing; a `body` of None is sent chunked."""
        full_headers = [self._host_header]
        if body is None:
            full_headers.append((b"transfer-encoding", b"chunked"))
        elif body or method not in _NO_BODY_METHODS:
            full_headers.append((b"content-length", b"%d" % len(body)))
        full_headers += headers
        try:
            return h11.Request(method=method, target=target, headers=full_headers)
        except h11.LocalProtocolError:
            pass
        # Outside the except block, so no h11 exception is chained to ours: its
        # message repeats the bad value, and a header value may be a credential.
        raise ValueError(
            f"cannot send {method!r} {target!r} to {self._origin}: "
            f"{self._what_is_invalid(method, target, headers)} "
            "(the pool adds Host and Content-Length itself)"
        )

    def _what_is_invalid(self, method: bytes, target: bytes, headers: Headers) -> str:
        """Which part of a request h11 refused, named without repeating any header value."""
        for name, value in headers:
            try:
                h11.Request(method=b"GET", target=b"/", headers=[self._host_header, (name, b"")])
            except h11.LocalProtocolError:
                return f"the header name {name!r} is not a valid HTTP token"
            try:
                h11.Request(method=b"GET", target=b"/", headers=[self._host_header, (name, value)])
            except h11.LocalProtocolError:
                return (
                    f"the value of the {name.decode('latin-1')} header (not shown) holds a line "
                    "break or another control character, or starts or ends with a space"
                )
        return "the method or the target is not valid HTTP"

    async def _start(
        self, h11_request: h11.Request, body: bytes
    ) -> tuple[_Connection, h11.Response]:
        """Send the request and receive the response's head, retrying once if stale.

        On return the caller owns the connection (it is in `_in_use`); on any
        exception the connection has been closed.
        """
        conn, reused = await self._checkout()
        while True:
            try:
                return conn, await self._send_request(conn, h11_request, body)
            except _NoResponse as exc:
                await self._discard(conn)
                if self._closed:
                    raise self._closed_error() from exc.__cause__
                if not reused:
                    # Under TLS 1.3 the server judges this client's certificate
                    # after the client's handshake is over: its refusal comes
                    # as the first read of a fresh connection fails.
                    refused = tls_connect_error(exc, self._origin)
                    if refused is not None:
                        raise refused from None
                # Sent again, once, on a fresh connection: a request the
                # server cannot have read whole, or an idempotent one, when the
                # connection was a reused one the server had closed.
                if not reused or (exc.sent and h11_request.method not in _IDEMPOTENT):
                    if not exc.sent:
                        raise CallNotSent(
                            f"the connection to {self._origin} was lost before the request was "
                            f"sent: the server {exc}; it did not run",
                            reason="connection lost",
                        ) from exc.__cause__
                    raise CallMayHaveRun(
                        f"the connection to {self._origin} was lost after the request was sent: "
                        f"the server {exc}; did it stop or crash? Check its logs",
                        reason="connection lost",
                    ) from exc.__cause__
            except (*_FAILURES, _Silent) as exc:
                await self._discard(conn)
                raise self._translate(exc, "while receiving the response's head", conn) from exc
            except BaseException:
                await self._discard(conn)
                raise
            # The server closed the idle connection before it read the request.
            reused = False
            conn = await self._connect()

    async def _send_request(
        self, conn: _Connection, h11_request: h11.Request, body: bytes
    ) -> h11.Response:
        state = conn.h11
        stream = conn.stream
        try:
            data = state.send(h11_request)
            # For a Content-Length body h11 returns `body` itself, no copy.
            payload = state.send(h11.Data(data=body)) if body else b""
            end = state.send(h11.EndOfMessage())  # b"" with Content-Length framing
        except h11.LocalProtocolError as exc:
            raise ValueError(f"cannot send the request to {self._origin}: {exc}") from None
        try:
            if len(payload) <= _COALESCE_LIMIT:
                await stream.send_all(data + payload + end)
            else:
                await stream.send_all(data)
                await stream.send_all(payload)
                if end:
                    await stream.send_all(end)
        except (trio.BrokenResourceError, OSError) as exc:
            raise _NoResponse(
                f"broke the connection while the request was sent ({exc.__cause__ or exc})",
                sent=False,
            ) from exc

        received = False
        while True:
            event = state.next_event()
            if event is h11.NEED_DATA:
                if received:
                    await self._read_more(conn)
                    continue
                # The first byte takes as long as the server takes to answer:
                # bounding that is the caller's business (a call's deadline).
                try:
                    data = bytes(await stream.receive_some(_RECEIVE_SIZE))
                except (trio.BrokenResourceError, OSError) as exc:
                    raise _NoResponse(
                        f"broke the connection before answering ({exc.__cause__ or exc})"
                    ) from exc
                if not data:
                    raise _NoResponse("closed the connection without answering the request")
                received = True
                state.receive_data(data)
            elif type(event) is h11.Response:
                return event
            elif type(event) is not h11.InformationalResponse:
                raise ConnectionClosed(
                    f"{self._origin} sent {event!r} instead of a response", reason="protocol error"
                )

    async def _read_more(self, conn: _Connection) -> None:
        """Read more of a response that has begun, within `read_timeout`."""
        timeout = self._read_timeout
        if timeout is None or conn.socket.is_readable():
            # Bytes are waiting (the usual case: the body right behind the
            # head), so the read cannot stall: no timer for it, which would
            # cost a cancel scope on nearly every request.
            await conn.read()
            return
        with trio.move_on_after(timeout) as scope:
            await conn.read()
        if scope.cancelled_caught:
            raise _Silent

    async def _receive_body(self, conn: _Connection, limit: int) -> bytes:
        state = conn.h11
        chunks: list[bytes | bytearray] = []
        size = 0
        while True:
            event = state.next_event()
            if type(event) is h11.Data:
                size += len(event.data)
                if size > limit:
                    raise self._too_large(size, limit, "max_response_size", at_least=True)
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                break
            elif event is h11.NEED_DATA:
                await self._read_more(conn)
            else:
                raise ConnectionClosed(
                    f"{self._origin} sent {event!r} in the middle of a response body",
                    reason="protocol error",
                )
        if len(chunks) == 1:
            return bytes(chunks[0])
        return b"".join(chunks)

    # -----------------------------------------------------------------------
    # Errors

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(
            f"the connection pool for {self._origin} is closed", reason="pool closed"
        )

    def _translate(self, exc: Exception, doing: str, conn: _Connection) -> ConnectionClosed:
        """The tether error for a trio, OS or h11 exception met `doing` something on `conn`.

        A connection lost, or silent, once the request was out is a
        `CallMayHaveRun`: the server may have started on it.

        Reasons: "closed" (closed on this side), "pool closed", "connection
        lost" (the server closed or reset the connection before the response
        was complete: it stopped, crashed, or the network failed), "no data"
        (`read_timeout` passed in the middle of a response), "protocol error"
        (what came was not HTTP/1.1).
        """
        if isinstance(exc, trio.ClosedResourceError):
            if self._closed:
                return self._closed_error()
            return ConnectionClosed(
                f"the connection to {self._origin} was closed {doing}", reason="closed"
            )
        if isinstance(exc, _Silent):
            return CallMayHaveRun(
                f"{self._origin} sent nothing for {self._read_timeout:g} s {doing}, in the middle "
                "of the response: the connection is taken as lost (raise read_timeout if the "
                "server is only slow)",
                reason="no data",
            )
        if isinstance(exc, h11.ProtocolError) and not conn.eof:
            return ConnectionClosed(
                f"{self._origin} sent an invalid HTTP/1.1 response ({exc}) {doing}: is it an "
                "HTTP server?",
                reason="protocol error",
            )
        # A reset, or an end of stream where h11 needed more (an incomplete
        # body or head): the server went away mid-response.
        cause = "the server closed it" if conn.eof else str(exc.__cause__ or exc)
        return CallMayHaveRun(
            f"the connection to {self._origin} was lost {doing} ({cause}) before the response "
            "was complete: did the server stop or crash? Check its logs",
            reason="connection lost",
        )

    def _too_large(
        self, size: int, limit: int, what: str, *, at_least: bool = False
    ) -> PayloadTooLarge:
        more = "at least " if at_least else ""
        return PayloadTooLarge(
            f"the response from {self._origin} is {more}{size} bytes, over the limit of "
            f"{limit} bytes: raise {what} or ask for less",
            details={"size": size, "limit": limit},
        )
