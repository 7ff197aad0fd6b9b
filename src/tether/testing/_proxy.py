"""A TCP relay that breaks connections on command, for transports with no MessageStream.

HTTP RPC opens plain TCP connections from a pool, so `faulty_streams()` cannot
reach them; `FaultyProxy` sits between the client and a real server instead::

    async with FaultyProxy("127.0.0.1", server_port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/rpc"
        async with http.connect(url, interfaces=[Counter]) as backend:
            proxy.cut_when(b"/increment")           # lose it once the call is out
            await backend.get_client(Counter).increment()   # CallMayHaveRun
"""

from __future__ import annotations

import contextlib
import socket
import struct
from types import TracebackType

import trio

__all__ = ["FaultyProxy"]

_RECEIVE_SIZE = 65536


class _Rule:
    __slots__ = ("count", "match")

    def __init__(self, match: bytes, count: int) -> None:
        if not match:
            raise ValueError("match must not be empty")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.match = match
        self.count = count


class _Relay:
    """One client connection and the connection to the server made for it."""

    __slots__ = ("client", "cut", "hold", "scope", "seen", "server")

    def __init__(self, client: trio.SocketStream, server: trio.SocketStream) -> None:
        self.client = client
        self.server = server
        self.scope = trio.CancelScope()
        # The tail of what the client sent, so a match across two reads is found.
        self.seen = b""
        # Cut: nothing more goes either way.
        self.cut = False
        # About to be cut: nothing more goes back to the client.
        self.hold = False


class FaultyProxy:
    """A real TCP relay on 127.0.0.1 (a free port) in front of a server.

    Each connection a client opens to `port` is relayed to the target, byte
    for byte, until a command breaks it:

    - `cut_all()`: reset every relayed connection now (the client sees a
      reset; the server sees its connection closed).
    - `cut_when(match, count=1)`: cut the next `count` connections whose
      client-to-server bytes contain `match`, once those bytes have been passed
      on to the server and before any byte of its answer goes back.
    - `await refuse()` / `await accept()`: stop listening, so that connects
      are refused as by a stopped backend, and listen again on the same port.

    Use it as an async context manager; leaving the block closes everything.

    Attributes:
        port: The port clients connect to.
        connections: Connections relayed so far.
        cuts: Connections cut so far.
    """

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.connections = 0
        self.cuts = 0
        self._relays: set[_Relay] = set()
        self._rules: list[_Rule] = []
        self._nursery: trio.Nursery | None = None
        self._nursery_manager = trio.open_nursery()
        self._listening: trio.CancelScope | None = None
        self._cut_event = trio.Event()

    async def __aenter__(self) -> FaultyProxy:
        self._nursery = await self._nursery_manager.__aenter__()
        await self.accept()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        return await self._nursery_manager.__aexit__(exc_type, exc, tb)

    # -- commands ----------------------------------------------------------------

    def cut_all(self) -> None:
        """Reset every relayed connection now."""
        for relay in list(self._relays):
            self._cut(relay)

    def cut_when(self, match: bytes, *, count: int = 1) -> None:
        """Cut the next `count` connections once their client has sent `match`
        (passed on to the server first), before any answer goes back."""
        self._rules.append(_Rule(match, count))

    async def refuse(self) -> None:
        """Stop listening: new connections are refused (relayed ones go on)."""
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None
        await trio.lowlevel.checkpoint()

    async def accept(self) -> None:
        """Listen (again, on the same port once it had one)."""
        if self._listening is not None:
            return
        assert self._nursery is not None
        [listener] = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listener.socket.getsockname()[1]
        self._listening = trio.CancelScope()
        self._nursery.start_soon(self._serve, listener, self._listening)

    async def wait_cut(self, count: int) -> None:
        """Wait until `count` connections were cut in all."""
        while self.cuts < count:
            await self._cut_event.wait()

    # -- the relay ----------------------------------------------------------------

    async def _serve(self, listener: trio.SocketListener, scope: trio.CancelScope) -> None:
        assert self._nursery is not None
        with scope:
            async with listener:
                while True:
                    client = await listener.accept()
                    self._nursery.start_soon(self._relay, client)

    async def _relay(self, client: trio.SocketStream) -> None:
        try:
            try:
                server = await trio.open_tcp_stream(self.target_host, self.target_port)
            except OSError:
                # The target is down: the client sees its connection reset at once.
                _reset(client)
                return
            try:
                self.connections += 1
                relay = _Relay(client, server)
                self._relays.add(relay)
                try:
                    with relay.scope:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._pump_up, relay)
                            nursery.start_soon(self._pump_down, relay)
                finally:
                    self._relays.discard(relay)
            finally:
                await trio.aclose_forcefully(server)
        finally:
            await trio.aclose_forcefully(client)

    async def _pump_up(self, relay: _Relay) -> None:
        """Client to server, watching for the bytes a rule waits for."""
        try:
            while data := await relay.client.receive_some(_RECEIVE_SIZE):
                matched = self._matches(relay, data)
                # Held before the bytes go: the answer they bring must not.
                relay.hold = matched
                await relay.server.send_all(data)
                if matched:
                    self._cut(relay)
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        relay.scope.cancel()

    async def _pump_down(self, relay: _Relay) -> None:
        try:
            while data := await relay.server.receive_some(_RECEIVE_SIZE):
                if relay.hold or relay.cut:
                    return
                await relay.client.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        relay.scope.cancel()

    def _matches(self, relay: _Relay, data: bytes) -> bool:
        window = relay.seen + data
        for rule in self._rules:
            if rule.count > 0 and rule.match in window:
                rule.count -= 1
                return True
        longest = max((len(rule.match) for rule in self._rules), default=1)
        relay.seen = window[-(longest - 1) :] if longest > 1 else b""
        return False

    def _cut(self, relay: _Relay) -> None:
        if relay.cut:
            return
        relay.cut = True
        self.cuts += 1
        self._cut_event.set()
        self._cut_event = trio.Event()
        _reset(relay.client)
        # Closed now, not when the relay's task next runs: a client that
        # looks at its connection right after the command sees it reset.
        relay.client.socket.close()
        relay.server.socket.close()
        relay.scope.cancel()


def _reset(stream: trio.SocketStream) -> None:
    """Make closing `stream` send a reset (RST), as a crash or a network fault does."""
    with contextlib.suppress(OSError):  # already closed
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
