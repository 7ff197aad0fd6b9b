"""TLS as tether's clients and servers use it: the contexts, and the errors a handshake meets.

A client given an `https://` or `wss://` URL and no context verifies the server
against the system's trust store (`ssl.create_default_context()`). A handshake
that fails surfaces as a `ConnectError` that says why (the server's certificate
was not trusted, or the server refused this client's certificate), never as a
bare `ssl.SSLError` or a "connection lost".
"""

from __future__ import annotations

import contextlib
import ssl

import trio

from ..runtime import ConnectError
from ..runtime._retry import CERTIFICATE_NOT_TRUSTED, CLIENT_CERTIFICATE_REFUSED

__all__ = [
    "check_ssl_context",
    "client_context",
    "open_tls_stream",
    "server_handshake",
    "ssl_cause",
    "tls_connect_error",
]


#: What the alert of a server that refused this client's certificate names
#: (OpenSSL's reasons: TLSV13_ALERT_CERTIFICATE_REQUIRED, TLSV1_ALERT_UNKNOWN_CA...).
_REFUSALS = ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED")


#: What to do about a certificate from a trusted CA that is still refused,
#: by OpenSSL's verify code (X509_V_ERR_CERT_HAS_EXPIRED, _CERT_NOT_YET_VALID,
#: _HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH).
_VERIFY_ADVICE = {
    10: "renew the server's certificate (or check this machine's clock)",
    9: "check this machine's clock, or wait until the certificate is valid",
    62: "connect with the name the certificate was issued for, or issue one for this name",
    64: "connect with the name the certificate was issued for, or issue one for this address",
}


def check_ssl_context(ssl_context: object) -> None:
    """Raise TypeError unless `ssl_context` is an `ssl.SSLContext` or None."""
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(
            f"ssl_context must be an ssl.SSLContext or None, got {type(ssl_context).__name__}: "
            "make one with ssl.create_default_context()"
        )


def client_context(secure: bool, ssl_context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The context a client connects with: the given one, the system's default
    for a secure URL, None for a plain one (which a given context does not change)."""
    check_ssl_context(ssl_context)
    if not secure:
        return None
    return ssl_context if ssl_context is not None else ssl.create_default_context()


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The `ssl.SSLError` behind `exc` (trio wraps it in BrokenResourceError), if any."""
    seen: BaseException | None = exc
    for _ in range(4):  # bounded: causes do not nest deeper than this here
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def tls_connect_error(exc: BaseException, where: str) -> ConnectError | None:
    """The `ConnectError` for a TLS failure behind `exc` while connecting to `where`.

    None when `exc` is not a TLS failure.
    """
    cause = ssl_cause(exc)
    if cause is None:
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = cause.verify_message or str(cause)
        advice = _VERIFY_ADVICE.get(cause.verify_code)
        if advice is not None:  # the CA is trusted: the certificate itself is wrong
            return ConnectError(
                f"the TLS certificate of {where} was refused ({why}): {advice}",
                reason="certificate not trusted",
            )
        return ConnectError(
            f"the TLS certificate of {where} was not trusted ({why}): give ssl_context= a "
            "context that trusts the CA that signed it, e.g. "
            "ssl.create_default_context(cafile='ca.pem')",
            reason=CERTIFICATE_NOT_TRUSTED,
        )
    text = cause.reason or str(cause)
    upper = text.upper()
    if upper == "WRONG_VERSION_NUMBER":  # what came back was not a TLS record
        plain = where.replace("https://", "http://", 1).replace("wss://", "ws://", 1)
        return ConnectError(
            f"the server at {where} does not speak TLS (it answered plain text: "
            f"{text}): use {plain} if it serves without TLS, or give it a certificate",
            reason="TLS handshake failed",
        )
    if "ALERT" in upper and any(word in upper for word in _REFUSALS):
        # The server's alert: it refused the certificate this client sent, or
        # wanted one and got none (mutual TLS).
        return ConnectError(
            f"{where} refused this client's TLS certificate ({text}): it asks for a client "
            "certificate it trusts; load one into the ssl_context "
            "(ssl_context.load_cert_chain(certfile, keyfile))",
            reason=CLIENT_CERTIFICATE_REFUSED,
        )
    return ConnectError(
        f"the TLS handshake with {where} failed ({text}): is it a TLS server, and do both "
        "sides accept a common protocol version?",
        reason="TLS handshake failed",
    )


async def open_tls_stream(
    host: str, port: int, ssl_context: ssl.SSLContext, where: str
) -> trio.SSLStream[trio.SocketStream]:
    """A TCP connection to `host:port` with its TLS handshake done.

    Raises:
        ConnectError: the connection or the handshake failed (saying why).
    """
    try:
        tcp = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise ConnectError(
            f"could not connect to {where}: {exc}: is the server running and listening on "
            "that address?"
        ) from exc
    stream = trio.SSLStream(tcp, ssl_context, server_hostname=host, https_compatible=True)
    try:
        await stream.do_handshake()
    except (trio.BrokenResourceError, OSError) as exc:
        await trio.aclose_forcefully(stream)
        raise tls_connect_error(exc, where) or ConnectError(
            f"the connection to {where} broke during the TLS handshake ({exc.__cause__ or exc})"
        ) from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def server_handshake(stream: trio.SSLStream[trio.SocketStream], within: float) -> bool:
    """Do a server's side of the TLS handshake within `within` seconds; whether it succeeded.

    When it fails, the TLS alert that says why (a client certificate missing
    or not trusted, no common version) is sent before the connection is
    dropped, which trio's SSLStream does not do: the client then knows why,
    instead of seeing the connection close.
    """
    with trio.move_on_after(within):
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError:
            # trio leaves the alert in the SSL object's outgoing buffer.
            outgoing = getattr(stream, "_outgoing", None)
            if isinstance(outgoing, ssl.MemoryBIO) and outgoing.pending:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.transport_stream.send_all(outgoing.read())
            return False
        return True
    return False
