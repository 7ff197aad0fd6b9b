"""Credentials per request: a fixed string, or a provider asked for each request.

A `CredentialProvider` is an async callable `provider(*, refresh: bool)`
returning the credential (an `Authorization` value) or None. The client asks
it with `refresh=False` for each request (the provider caches: it is the
user's to decide how long a token lives), and once with `refresh=True` when
the server's authorization step refused a request, which the client then
sends again once (docs/observability.md, "Credentials").

Only a refusal by the server's authorization step is retried: the server marks
it (`AUTHORIZE_REFUSAL` in the error's details), and it comes before the impl
runs, so sending the request again cannot run anything twice. An `Unauthorized`
that an impl raises itself carries no mark and is not retried.

A credential is never put in a message, a repr or a log record.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias

from ._errors import Unauthorized

__all__ = [
    "AUTHORIZE_REFUSAL",
    "Authorization",
    "CredentialProvider",
    "check_authorization",
    "credential",
    "refreshable",
    "refused_by_authorize",
]


class CredentialProvider(Protocol):
    """Gives the credential for each request: `await provider(refresh=False)`.

    Called for every request (cache in the provider); called with
    `refresh=True` once after the server's authorization step refused a
    request, which is then sent once more with what it returns. Returning None
    sends no credential of the connection's own (the current context's, if
    any, is forwarded).
    """

    async def __call__(self, *, refresh: bool) -> str | None: ...


#: What `authorization=` takes on every connect: a fixed credential, a
#: provider asked for each request, or None (forward the current context's).
Authorization: TypeAlias = str | CredentialProvider | None

#: The detail an `Unauthorized` from the server's authorization step carries:
#: the request was refused before anything ran, so it may be sent again.
AUTHORIZE_REFUSAL = ("refused_by", "authorize")


def check_authorization(value: object) -> None:
    """Refuse an `authorization=` that is neither a str, None, nor callable.

    Raises:
        TypeError: it is none of those (the message names the type, never the value).
    """
    if value is not None and not isinstance(value, str) and not callable(value):
        raise TypeError(
            "authorization must be a str, None, or an async function "
            f"provider(*, refresh: bool) -> str | None; got a {type(value).__name__}"
        )


async def credential(authorization: Any, *, refresh: bool = False) -> str | None:
    """The credential to send now: the string itself, or what the provider gives.

    Raises:
        TypeError: the provider returned something else than a str or None.
    """
    if authorization is None or isinstance(authorization, str):
        return authorization
    value = await authorization(refresh=refresh)
    if value is not None and not isinstance(value, str):
        raise TypeError(
            f"the credential provider returned a {type(value).__name__}: "
            "it must return a str (the Authorization value) or None"
        )
    return value


def refused_by_authorize(exc: BaseException) -> bool:
    """Whether `exc` is the server's authorization step refusing a request."""
    key, value = AUTHORIZE_REFUSAL
    return isinstance(exc, Unauthorized) and exc.details.get(key) == value


def refreshable(authorization: Any, exc: BaseException) -> bool:
    """Whether a request refused with `exc` is sent again with a refreshed credential."""
    return (
        authorization is not None
        and not isinstance(authorization, str)
        and refused_by_authorize(exc)
    )
