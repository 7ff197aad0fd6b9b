"""What both web servers share (`tether.transports._web`): Origin and Host policy, heartbeats."""

from __future__ import annotations

import pytest

import tether
from tether.transports._web import (
    SitePolicy,
    heartbeat,
    is_loopback,
    ping_message,
    pong_message,
    split_host,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("LocalHost", ("localhost", None)),
        ("[::1]:80", ("::1", 80)),
        ("api.example.com.", ("api.example.com", None)),
        ("", None),
        ("a b", None),
        ("evil.com/x", None),
        ("user@host", None),
        ("host:notaport", None),
        ("host:99999", None),
    ],
)
def test_split_host(value: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host(value) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("app.localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("localhost.evil.com", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "127.0.0.1:8000", True),  # a program, not a browser
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),  # same origin
        ("http://localhost", "localhost:80", True),  # default ports are the same port
        ("https://app.example.com", "app.example.com", True),
        ("http://127.0.0.1:9000", "127.0.0.1:8000", False),  # another port is another origin
        ("https://evil.example", "127.0.0.1:8000", False),
        ("null", "127.0.0.1:8000", False),  # a sandboxed page or a file
        ("https://evil.example", None, False),
    ],
)
def test_only_same_origin_pages_by_default(
    origin: str | None, host: str | None, allowed: bool
) -> None:
    policy = SitePolicy()
    assert policy.origin_allowed(origin, host) is allowed
    refused = policy.refuse_origin(origin, host)
    assert (refused is None) is allowed
    if refused is not None:
        assert isinstance(refused, tether.Forbidden)
        assert refused.status == 403
        assert refused.details == {"origin": origin}


def test_listed_origins_and_any() -> None:
    policy = SitePolicy(allowed_origins=["https://app.example.com"])
    assert policy.origin_allowed("https://app.example.com", "api.example.com")
    assert policy.origin_allowed("https://app.example.com/", "api.example.com")
    assert not policy.origin_allowed("https://other.example.com", "api.example.com")
    assert SitePolicy(allowed_origins=["*"]).origin_allowed("null", "api.example.com")


@pytest.mark.parametrize("bad", ["https://app.example.com/", "app.example.com", 3, "https://x/"])
def test_origin_lists_are_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="scheme://host"):
        SitePolicy(allowed_origins=[bad])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one str"):
        SitePolicy(allowed_origins="https://app.example.com")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "local", "refused"),
    [
        ("127.0.0.1:8000", "127.0.0.1", False),
        ("localhost:8000", "127.0.0.1", False),
        ("[::1]:8000", "::1", False),
        ("rebind.evil.example:8000", "127.0.0.1", True),  # DNS rebinding
        (None, "127.0.0.1", True),
        ("rebind.evil.example", "10.0.0.5", False),  # not on loopback: any name
        ("rebind.evil.example", None, False),  # address unknown: as for any bind
    ],
)
def test_loopback_servers_answer_only_to_loopback_names(
    host: str | None, local: str | None, refused: bool
) -> None:
    error = SitePolicy().refuse_host(host, local)
    assert (error is not None) is refused
    if error is not None:
        assert isinstance(error, tether.InvalidRequest)
        assert error.details == {"field": "Host"}
        assert "allowed_hosts" in error.message


def test_allowed_hosts_are_exact_names_whatever_the_bind() -> None:
    policy = SitePolicy(allowed_hosts=["api.example.com"])
    assert policy.refuse_host("API.example.com:443", "10.0.0.5") is None
    assert policy.refuse_host("api.example.com", "127.0.0.1") is None
    assert policy.refuse_host("localhost", "127.0.0.1") is not None
    assert policy.refuse_host("evil.example", "10.0.0.5") is not None
    assert SitePolicy(allowed_hosts=["*"]).refuse_host("anything", "127.0.0.1") is None


@pytest.mark.parametrize("bad", ["api.example.com:443", "a/b", ""])
def test_host_lists_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="host names without a port"):
        SitePolicy(allowed_hosts=[bad])


def test_heartbeat_envelopes_are_made_and_read_the_same_by_every_web_transport() -> None:
    """The envelope ping and pong of hypercorn's /ws and of IPC's event stream."""
    assert ping_message(7) == b'{"t":"ping","id":7}'
    assert pong_message(7) == b'{"t":"pong","id":7}'
    assert heartbeat(ping_message(7)) == ("ping", 7)
    assert heartbeat(pong_message(7).decode()) == ("pong", 7)
    assert heartbeat(pong_message(None)) == ("pong", None)  # a pong echoes what came
    assert heartbeat(b'{"t":"cancel","id":7}') is None
    assert heartbeat(b"[1]") is None
    assert heartbeat(b"not json") is None
