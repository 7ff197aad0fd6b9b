"""RpcManager: the registry of impls (backend) and of routes to backends (frontend)."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

import attrs

from ..contexts import RequestContext
from ._client import RpcBackend, check_backend_interfaces, make_client
from ._errors import NotFound
from ._interceptors import Interceptor, to_interceptors
from ._interfaces import Operation, RpcInterface, require_interface, unimplemented
from ._policies import NO_POLICY
from ._protocol import InterfaceInfo
from ._streams import DEFAULT_STREAM_WINDOW, StreamWindow, check_stream_window

__all__ = ["Authorize", "Registration", "RpcManager", "RpcManagerStatistics"]

T = TypeVar("T", bound=RpcInterface)

#: The authorization hook: called with each request's context before its impl
#: runs; return False or raise `Unauthorized` to refuse the request.
Authorize = Callable[[RequestContext], Awaitable[bool]]


class Registration:
    """One served interface: its impl and the bound handler of each operation."""

    __slots__ = ("handlers", "impl", "info", "interface", "operations")

    def __init__(self, interface: type[RpcInterface], impl: RpcInterface) -> None:
        self.interface = interface
        self.impl = impl
        self.operations: Mapping[str, Operation] = interface.__tether_operations__
        # Bound once here, from the operation table: the dispatcher never looks a
        # name from the wire up on the impl object itself.
        self.handlers: dict[str, Callable[..., Awaitable[Any]]] = {
            name: getattr(impl, name) for name in self.operations
        }
        self.info = InterfaceInfo(
            interface.interface_version,
            tuple(self.operations),
            {name: op.policy for name, op in self.operations.items() if op.policy != NO_POLICY},
        )


@attrs.frozen(slots=True)
class RpcManagerStatistics:
    """What a manager's impls are serving at one moment (`RpcManager.statistics()`).

    Attributes:
        open_streams: Stream calls running, on every session and transport
            serving this manager: each holds its impl (a generator) and its
            credit until its call ends.
    """

    open_streams: int


class RpcManager:
    """Registry of impls (what this process serves) and routes (what it calls).

    A process can be a backend (it registers impls and is served by a transport),
    a frontend (it routes interfaces to backends and gets clients), or both: a
    backend that calls other backends.

    Args:
        authorize: An async hook called with each request's RequestContext before
            the impl runs; returning False (or raising `Unauthorized`) refuses it.
        development_mode: Send the impl's traceback to clients with internal
            errors. Never in production: tracebacks leak paths and code.
        stream_window: What the impls take of a client's stream argument
            before the client must wait (`DEFAULT_STREAM_WINDOW`: 256 items,
            4 MiB), per stream.
        interceptors: Run around every call served, on every transport
            (`tether.Interceptor`; first outermost, inside the process-wide
            ones, outside `authorize`).

    Raises:
        ValueError: `stream_window` is not a `StreamWindow`.
        TypeError: an interceptor is not callable.
    """

    def __init__(
        self,
        *,
        authorize: Authorize | None = None,
        development_mode: bool = False,
        stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
        interceptors: Iterable[Interceptor] = (),
    ) -> None:
        check_stream_window(stream_window)
        self.interceptors = to_interceptors(interceptors)
        self.authorize = authorize
        self.development_mode = development_mode
        self.stream_window = stream_window
        # Stream calls running, counted by the engines that serve this manager:
        # from several threads when backends run with thread=True.
        self._open_streams = 0
        self._streams_lock = threading.Lock()
        self._registrations: dict[str, Registration] = {}
        self._routes: dict[type[RpcInterface], RpcBackend] = {}

    def statistics(self) -> RpcManagerStatistics:
        """What this manager's impls are serving now (read-only numbers)."""
        return RpcManagerStatistics(open_streams=self._open_streams)

    def count_stream(self, delta: int) -> None:
        """A stream call started (+1) or ended (-1) on an engine serving this manager."""
        with self._streams_lock:
            self._open_streams += delta

    # -- backend ---------------------------------------------------------------

    @overload
    def register_impl(self, interface: type[T], impl: type[T]) -> None: ...
    @overload
    def register_impl(self, interface: type[T], impl: T) -> None: ...

    def register_impl(self, interface: type[T], impl: type[T] | T) -> None:
        """Serve `interface` with `impl`.

        Args:
            interface: The RpcInterface declaration.
            impl: A subclass of it implementing every operation (instantiated
                once, with no arguments), or an instance of one.

        Raises:
            TypeError: `impl` is not an implementation of `interface`, leaves an
                operation unimplemented, or the interface is already registered.
        """
        require_interface(interface)
        impl_class = impl if isinstance(impl, type) else type(impl)
        if not issubclass(impl_class, interface):
            raise TypeError(
                f"{impl_class.__qualname__} does not implement {interface.__qualname__}: "
                f"declare it as 'class {impl_class.__qualname__}({interface.__qualname__})'"
            )
        missing = unimplemented(impl_class, interface.__tether_operations__)
        if missing:
            raise TypeError(
                f"{impl_class.__qualname__} does not implement {', '.join(missing)} of "
                f"{interface.interface_name}"
            )
        name = interface.interface_name
        if name in self._registrations:
            raise TypeError(
                f"{name} is already registered with "
                f"{type(self._registrations[name].impl).__qualname__}; unregister_impl first"
            )
        instance = impl() if isinstance(impl, type) else impl
        self._registrations[name] = Registration(interface, instance)

    def unregister_impl(self, interface: type[RpcInterface]) -> None:
        """Stop serving `interface`. Calls already running finish."""
        self._registrations.pop(interface.interface_name, None)

    def lookup(self, interface_name: str) -> Registration | None:
        """Return the registration serving `interface_name`, or None."""
        return self._registrations.get(interface_name)

    def describe(self) -> dict[str, InterfaceInfo]:
        """What this manager serves: name -> version and operations."""
        return {name: reg.info for name, reg in self._registrations.items()}

    # -- frontend --------------------------------------------------------------

    def initialize_client(
        self, interfaces: Iterable[type[RpcInterface]], backend: RpcBackend
    ) -> None:
        """Route `interfaces` to `backend`: `get_client` will call it for them.

        Raises:
            NotFound: the backend does not serve one of them.
            IncompatibleVersion: one of them has an incompatible version there.
        """
        wanted = list(interfaces)
        for interface in wanted:
            require_interface(interface)
        check_backend_interfaces(backend.interfaces, wanted)
        for interface in wanted:
            self._routes[interface] = backend

    def terminate_client(self, interfaces: Iterable[type[RpcInterface]]) -> None:
        """Forget the routes of `interfaces`."""
        for interface in interfaces:
            self._routes.pop(interface, None)

    def get_client(self, interface: type[T]) -> T:
        """Return a typed client of `interface` that calls the backend it is routed to.

        Raises:
            NotFound: `interface` was not routed with `initialize_client`.
        """
        backend = self._routes.get(interface)
        if backend is None:
            raise NotFound(
                f"no backend is configured for {interface.__qualname__}: call "
                "initialize_client([...], backend) first"
            )
        return make_client(interface, backend)
