"""hypercorn's Trio worker as `serve` runs it: hypercorn's connections, tether's accept loop.

`run_worker` does what `hypercorn.trio.run.worker_serve` does for one plain
HTTP listener (the app's lifespan, the listening sockets, a graceful shutdown)
with two things hypercorn has no setting for:

* **Closing at the client's FIN.** hypercorn 0.18's `TCPServer` sees the end of
  the stream, but its connection's task group still waits for the idle task,
  which sleeps for the whole keep-alive timeout (75 s under `serve`): every
  connection a client closed sat in CLOSE_WAIT that long. `_TCPServer` stops
  the idle task once reading is over, so the connection closes at once.
* **A connection cap.** Past `max_connections`, a new connection is answered
  `503` with `Retry-After` and tether's error body, then closed. The slot is
  taken in the same step as the accept, before anything awaits, so a burst of
  simultaneous connects cannot get past the cap.

Both rely on hypercorn's internals (`TCPServer`, its idle task, `Lifespan`,
`WorkerContext`), which is why pyproject.toml pins hypercorn's minor versions.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr

from ...runtime import Unavailable
from ...runtime._dispatch import access_clock, access_line, error_info
from .._tls import server_handshake
from ._asgi import error_body, error_headers
from ._wire import JSON

__all__ = ["run_worker"]

_log = logging.getLogger("tether.http")

#: accept() errors that mean "too many open files or sockets for now": wait and
#: accept again, as `trio.serve_listeners` does.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY = 0.1
#: Seconds a refused connection is kept to read what its client sent: closing
#: with unread bytes would reset it, and the client could lose the 503.
_REFUSAL_TIME = 1.0
#: Refused connections kept at once for that; past it, one is closed unanswered.
_MAX_REFUSING = 64
#: Bytes one send gives the client `send_timeout` seconds to take: a larger
#: answer goes in pieces of this size, each with the whole timeout.
_SEND_PIECE = 256 * 1024
#: How often, as a share of `send_timeout`, the watchdog looks at the sends.
_WATCH_EVERY = 0.25


class _TCPServer(TCPServer):
    """hypercorn's connection, closed as soon as reading it is over, and
    watched while it sends (see `_Connections.watch_sends`)."""

    #: When the send under way began (its piece, for a large answer); None
    #: while nothing is being sent.
    sending_since: float | None = None

    async def protocol_send(self, event: Event) -> None:
        if type(event) is not RawData:
            await super().protocol_send(event)
            return
        # hypercorn's own send, timed: it shields the write (an answer or frame
        # begun must be finished or the connection dropped) and gives it all
        # the time in the world, so a client that never read held its answer,
        # its task and its connection (on /ws, its place) for as long as it
        # kept the socket open. The accept loop's watchdog closes the socket of
        # a send that takes too long, which ends it with ClosedResourceError.
        data = event.data
        async with self.send_lock:
            try:
                if len(data) <= _SEND_PIECE:
                    self.sending_since = trio.current_time()
                    with trio.CancelScope(shield=True):
                        await self.stream.send_all(data)
                else:
                    # In pieces, each timed from its start: a slow client that
                    # reads is not taken for one that does not.
                    view = memoryview(data)
                    for start in range(0, len(view), _SEND_PIECE):
                        self.sending_since = trio.current_time()
                        with trio.CancelScope(shield=True):
                            await self.stream.send_all(view[start : start + _SEND_PIECE])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
            finally:
                self.sending_since = None

    def stalled(self, now: float, timeout: float) -> bool:
        """Whether a send has been waiting for the client for more than `timeout` s."""
        since = self.sending_since
        return since is not None and now - since > timeout

    def abort(self) -> None:
        """Close the socket now: the send waiting on it fails, and the connection ends."""
        stream: Any = self.stream
        # Under TLS, the socket is the transport's.
        getattr(stream, "transport_stream", stream).socket.close()

    async def _read_data(self) -> None:
        await super()._read_data()
        # The client closed its side (or the connection broke): nothing more
        # will come to answer, so do not keep it for the keep-alive timeout.
        # A request still running was told `http.disconnect` by hypercorn.
        await self.idle_task.stop()

    async def _close(self) -> None:
        # hypercorn sends the EOF without its send lock: when the client's
        # close and an answer cross (an early 400 or 408 to a request whose
        # body never ends), the answer's send failed with BusyResourceError.
        if self.send_lock.locked():
            # An answer is being sent to a client that has gone: closing ends
            # that send (hypercorn takes its ClosedResourceError as the close).
            await self.stream.aclose()
            return
        async with self.send_lock:
            await super()._close()


class _Connections:
    """The accept loop: one `_TCPServer` per connection, up to the cap."""

    def __init__(
        self,
        app: ASGIWrapper,
        config: Config,
        context: WorkerContext,
        state: ConnectionState,
        nursery: trio.Nursery,
        limit: int | None,
        send_timeout: float | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self.send_timeout = send_timeout
        self.config = config
        self.context = context
        self.state = state
        self.nursery = nursery
        self.limit = limit
        self.open = 0
        self.refusing = 0
        self.servers: set[_TCPServer] = set()
        # The answer every refused connection gets, made once, as the app
        # would answer its error.
        info = error_info(
            Unavailable(
                f"this server already has {limit} connections open (its max_connections): "
                "retry shortly",
                retry_after=1,
            ),
            None,
            development_mode=False,
        )
        body = error_body(info, None)
        head = [
            JSON,
            *error_headers(info),
            (b"connection", b"close"),
            (b"content-length", b"%d" % len(body)),
        ]
        self.refusal = b"HTTP/1.1 503 Service Unavailable\r\n%s\r\n%s" % (
            b"".join(b"%s: %s\r\n" % header for header in head),
            body,
        )

    async def serve(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    _log.error(
                        "accept failed (%s); retrying in %s s",
                        errno.errorcode[exc.errno],
                        _ACCEPT_RETRY,
                    )
                    await trio.sleep(_ACCEPT_RETRY)
                    continue
                if self.ssl_context is not None:
                    # The handshake is the connection's own (hypercorn's
                    # TCPServer does it, within config.ssl_handshake_timeout),
                    # not the accept loop's: a slow client holds up no other.
                    stream = trio.SSLStream(stream, self.ssl_context, server_side=True)
                if self.limit is not None and self.open >= self.limit:
                    self.nursery.start_soon(self._refuse, stream)
                else:
                    # Taken before anything awaits: no burst gets past the cap.
                    self.open += 1
                    self.nursery.start_soon(self._run, stream)

    async def watch_sends(self) -> None:
        """Close every connection whose send has waited `send_timeout` s for its client.

        One task for the whole server, looking every quarter of `send_timeout`,
        so a send costs no timer of its own: a stalled one ends within 1.25
        times `send_timeout`.
        """
        timeout = self.send_timeout
        if timeout is None:
            return
        while True:
            await trio.sleep(timeout * _WATCH_EVERY)
            now = trio.current_time()
            for server in [s for s in self.servers if s.stalled(now, timeout)]:
                _log.info(
                    "closing a connection whose client took nothing for %g s (send_timeout)",
                    timeout,
                )
                server.abort()

    async def _run(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        if isinstance(stream, trio.SSLStream) and not await server_handshake(
            stream, self.config.ssl_handshake_timeout
        ):
            # Done here, not by hypercorn (which would not tell the client
            # why): a refused client certificate is answered with its alert.
            self.open -= 1
            await trio.aclose_forcefully(stream)
            return
        # hypercorn annotates the stream as TLS; it takes a plain one as well.
        server = _TCPServer(self.app, self.config, self.context, self.state, stream)  # type: ignore[arg-type]
        self.servers.add(server)
        try:
            await server.run()
        except* Exception as failed:
            # hypercorn raises out of a connection on some input it does not
            # expect (a WebSocket upgrade and a frame in one read makes h11
            # raise LocalProtocolError, pgjones/hypercorn#225). One client must
            # not stop the server, and every other connection with it.
            _log.warning("closed a connection that hypercorn failed on", exc_info=failed)
        finally:
            self.servers.discard(server)
            self.open -= 1
            await trio.aclose_forcefully(stream)

    async def _refuse(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        started = access_clock()
        try:
            if self.refusing < _MAX_REFUSING:
                self.refusing += 1
                try:
                    with trio.move_on_after(_REFUSAL_TIME):
                        await stream.send_all(self.refusal)
                        if isinstance(stream, trio.SocketStream):  # TLS has no half-close
                            await stream.send_eof()
                        while await stream.receive_some():
                            pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the client has gone (or failed the TLS handshake)
                finally:
                    self.refusing -= 1
        finally:
            await trio.aclose_forcefully(stream)
            # No request was read: the line says only what happened.
            access_line(
                "connect",
                "unavailable",
                started,
                activity_id=None,
                session_id=None,
                application_id=None,
            )


async def run_worker(
    app: Any,
    config: Config,
    *,
    max_connections: int | None,
    send_timeout: float | None,
    shutdown_trigger: Callable[[], Awaitable[object]],
    started: Callable[[list[str]], object],
    ssl_context: ssl.SSLContext | None = None,
    sockets: Sequence[socket.socket] | None = None,
) -> None:
    """Serve `app` on `config.bind` (or `sockets`) until `shutdown_trigger` returns, then shut down.

    At shutdown the listeners close, connections finish their current request
    (idle ones close at once) for up to `config.graceful_timeout` seconds, and
    the lifespan ends.

    Args:
        app: The ASGI app.
        config: hypercorn's settings (bind, timeouts, limits, logs).
        max_connections: Connections open at once; more are refused (503).
        send_timeout: Seconds a client may take nothing of an answer before its
            connection is closed; None: no bound.
        shutdown_trigger: Awaited in the background; when it returns, the
            worker shuts down.
        started: Called with the URLs served (`http://host:port`, or
            `https://` under TLS) once they are.
        ssl_context: Serve TLS with this server-side context; None: plain TCP.
        sockets: Bound sockets to listen on instead of `config.bind` (one
            inherited from a parent process, a Unix socket); they are closed
            when the worker ends.
    """
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = ASGIWrapper(app)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            listeners = []
            binds = []
            if sockets is None:
                sockets = config.create_sockets().insecure_sockets
            for sock in sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                scheme = "https" if ssl_context is not None else "http"
                bind = f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}"
                binds.append(bind)
                await config.log.info(f"Running on {bind} (CTRL + C to quit)")
            connections = _Connections(
                wrapped,
                config,
                context,
                ConnectionState(lifespan_state.copy()),
                server_nursery,
                max_connections,
                send_timeout,
                ssl_context,
            )
            started(binds)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    for listener in listeners:
                        nursery.start_soon(connections.serve, listener)
                    nursery.start_soon(connections.watch_sends)
            except BaseExceptionGroup as error:
                _, others = error.split((ShutdownError, KeyboardInterrupt))
                if others is not None:
                    raise others from None
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
