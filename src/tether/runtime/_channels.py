"""IPC channels: the interfaces a paired frontend and backend share.

An `IpcInterface` is a channel of request/response methods (`channel_name`,
`version`); its implementation is an `IpcHandler`. A `NotificationInterface` is
a channel of one-way messages (every method returns None); the side that
receives them implements it as a `NotificationHandler`. Both are checked when
the class is created, exactly as `RpcInterface` operations are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ._interfaces import (
    Operation,
    check_declared_async,
    check_impl_async,
    check_version_attr,
    collect_operations,
)

__all__ = [
    "IpcHandler",
    "IpcInterface",
    "NotificationHandler",
    "NotificationInterface",
    "channel_operations",
    "require_channel",
]


def _check_name(cls: type, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__}.channel_name must be a non-empty string, got {name!r}")
    return name


def _check_methods(channel: str, own: Mapping[str, Any]) -> None:
    check_declared_async(
        own,
        ("channel_name", "version"),
        f"method {channel}.",
        "a public method of a channel is part of it",
    )


class IpcInterface:
    """Base class of IPC channels: request/response methods, frontend -> backend.

    Declare the methods as annotated `async def` with `...` bodies, plus two
    class attributes::

        class EditorIpc(tether.IpcInterface):
            channel_name = "my-editor"   # immutable wire name
            version = "1.0.0"            # semver of the channel's shape

            async def move_element(self, element_id: str, dx: float) -> Placement: ...

    The backend implements it with an `IpcHandler` subclass; the frontend calls
    it through `FrontendIpc.proxy(EditorIpc)`, typed as `EditorIpc`. A channel
    can also be served by the frontend and called by the backend
    (`IpcSession.proxy`). Versions follow the same rules as RPC interfaces and
    are checked when the session is opened.
    """

    channel_name: ClassVar[str]
    version: ClassVar[str]
    __tether_operations__: ClassVar[Mapping[str, Operation]] = {}
    __tether_channel__: ClassVar[type[IpcInterface] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "channel_name" in own or "version" in own:
            name = _check_name(cls, own.get("channel_name"))
            check_version_attr(cls, "version", own.get("version"))
            _check_methods(name, own)
            cls.__tether_operations__ = collect_operations(
                cls, name, root=IpcInterface, name_attr="channel_name"
            )
            cls.__tether_channel__ = cls
            return
        channel = cls.__tether_channel__
        if channel is None:
            raise TypeError(
                f"{cls.__qualname__} derives from IpcInterface but sets neither channel_name "
                "nor version: declare both on a channel class"
            )
        check_impl_async(cls, channel.__tether_operations__, channel.channel_name, "method")


class NotificationInterface:
    """Base class of notification channels: one-way messages, no reply.

    Declare the messages as annotated `async def` methods returning None::

        class EditorEvents(tether.NotificationInterface):
            channel_name = "my-editor-events"

            async def element_moved(self, element_id: str, placement: Placement) -> None: ...

    The backend sends them to its frontend with `IpcSession.notifier(EditorEvents)`;
    the frontend receives them in a `NotificationHandler` subclass.
    """

    channel_name: ClassVar[str]
    __tether_operations__: ClassVar[Mapping[str, Operation]] = {}
    __tether_channel__: ClassVar[type[NotificationInterface] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "channel_name" in own:
            name = _check_name(cls, own.get("channel_name"))
            _check_methods(name, own)
            operations = collect_operations(
                cls, name, root=NotificationInterface, name_attr="channel_name"
            )
            for op in operations.values():
                if op.stream_param is not None or op.stream_result:
                    raise TypeError(
                        f"notification {op.qualname} cannot carry a stream: notifications are "
                        "one-way messages (declare the stream on an IpcInterface method)"
                    )
                if op.return_type is not type(None):
                    raise TypeError(
                        f"notification {op.qualname} must return None: notifications are "
                        "one-way (use an IpcInterface for a call that answers)"
                    )
            cls.__tether_operations__ = operations
            cls.__tether_channel__ = cls
            return
        channel = cls.__tether_channel__
        if channel is None:
            raise TypeError(
                f"{cls.__qualname__} derives from NotificationInterface but sets no "
                "channel_name: declare it on a notification channel class"
            )
        check_impl_async(cls, channel.__tether_operations__, channel.channel_name, "notification")


class IpcHandler:
    """Mixin for the side that serves an IpcInterface (usually the backend).

    Derive from it and from the channel, and implement every method::

        class EditorHandler(tether.IpcHandler, EditorIpc):
            async def move_element(self, element_id: str, dx: float) -> Placement: ...

    Registered as a class, the handler is instantiated (with no arguments) once
    per session, so it can keep per-session state; registered as an instance,
    that one instance serves every session. Inside a method,
    `tether.current_session()` is the calling frontend's session.
    """

    # Set on the channel declaration; a handler inherits them from it.
    channel_name: ClassVar[str]
    __tether_channel__: ClassVar[type[IpcInterface] | None]

    @classmethod
    def get_version(cls) -> str:
        """The version of the channel this handler serves."""
        channel = getattr(cls, "__tether_channel__", None)
        if channel is None:
            raise TypeError(f"{cls.__qualname__} does not derive from an IpcInterface")
        version: str = channel.version
        return version

    def on_close(self, reason: str) -> None:
        """Called once when a session this handler served ends; `reason` says why.

        Override it to release per-session resources. It runs after every task
        of the session ended, and must not block.
        """


class NotificationHandler:
    """Mixin for the side that receives a NotificationInterface (usually the frontend).

    Derive from it and from the notification channel, and override the
    messages to handle (the others are ignored)::

        class EditorEventsListener(tether.NotificationHandler, EditorEvents):
            async def element_moved(self, element_id: str, placement: Placement) -> None: ...

    Messages are delivered one at a time, in the order they were sent. An
    exception raised here is logged (with the sender's ActivityId) and does not
    end the session.
    """

    channel_name: ClassVar[str]
    __tether_channel__: ClassVar[type[NotificationInterface] | None]

    def on_close(self, reason: str) -> None:
        """Called once when the session ends; `reason` says why. Must not block."""


def require_channel(channel: Any, kind: type) -> None:
    """Check that `channel` is a declaration of `kind` (IpcInterface or NotificationInterface).

    Raises:
        TypeError: it is not.
    """
    if not (
        isinstance(channel, type)
        and issubclass(channel, kind)
        and getattr(channel, "__tether_channel__", None) is channel
    ):
        raise TypeError(
            f"{channel!r} is not a {kind.__name__} declaration (a class deriving from "
            f"{kind.__name__} that sets channel_name)"
        )


def channel_operations(channel: type) -> Mapping[str, Operation]:
    """The method table of a channel declaration."""
    operations: Mapping[str, Operation] = channel.__tether_operations__  # type: ignore[attr-defined]
    return operations
