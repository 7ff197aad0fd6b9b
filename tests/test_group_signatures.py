"""The list-or-one `connect` wrappers take exactly the one-URL connect's keywords.

`http.connect` and `websocket.connect` accept one URL or a list of them; their
keywords are spelled out (not `**options`), so that a misspelled one is a
TypeError at the call, for a list as for one URL, and a mypy error.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_docs_mypy import run_mypy

import tether
from tether.transports import http, websocket
from tether.transports.http import _client as http_client
from tether.transports.http import _ipc_client as http_ipc_client
from tether.transports.websocket import _client as websocket_client


class Echo(tether.RpcInterface):
    interface_name = "tests.SignatureEcho"
    interface_version = "1.0.0"

    async def echo(self, text: str) -> str: ...


WRAPPERS: list[tuple[Callable[..., Any], Callable[..., Any], str]] = [
    (http.connect, http_client.connect, "http://127.0.0.1:1/rpc"),
    (websocket.connect, websocket_client.connect, "ws://127.0.0.1:1/"),
]


def _keywords(function: Callable[..., Any]) -> list[tuple[str, Any, Any, Any]]:
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(function).parameters.values()
        if p.name not in ("url", "balance")
    ]


@pytest.mark.parametrize(("wrapper", "one", "url"), WRAPPERS)
def test_the_wrapper_and_its_overloads_have_the_one_url_connects_keywords(
    wrapper: Callable[..., Any], one: Callable[..., Any], url: str
) -> None:
    expected = _keywords(one)
    assert _keywords(wrapper) == expected
    overloads = typing.get_overloads(wrapper)
    assert len(overloads) == 2
    for overload in overloads:
        assert _keywords(overload) == expected
    # balance= only where a list is taken. (mypy cannot refuse it with one
    # URL: a str is a Sequence[str], so the list overload matches; the call
    # raises ValueError.)
    assert "balance" not in inspect.signature(overloads[0]).parameters
    assert "balance" in inspect.signature(overloads[1]).parameters
    assert "balance" in inspect.signature(wrapper).parameters


@pytest.mark.parametrize(("wrapper", "one", "url"), WRAPPERS)
@pytest.mark.parametrize("several", [False, True])
def test_a_misspelled_keyword_is_a_type_error_at_the_call(
    wrapper: Callable[..., Any], one: Callable[..., Any], url: str, several: bool
) -> None:
    # Nothing is dialled: the call itself refuses (a list once dialled a
    # connection per URL, whose task only then met the bad keyword).
    with pytest.raises(TypeError, match="retyr"):
        wrapper([url, url] if several else url, interfaces=[Echo], retyr=None)


USER = """\
# mypy: disable-error-code="empty-body"
import tether
from tether.transports import http, websocket


class Echo(tether.RpcInterface):
    interface_name = "Echo"
    interface_version = "1.0.0"

    async def echo(self, text: str) -> str: ...


async def main() -> None:
    urls = ["http://127.0.0.1:8000/rpc", "http://127.0.0.1:8001/rpc"]
    async with http.connect(urls, interfaces=[Echo], retry=None, balance="round-robin") as group:
        said: str = await group.get_client(Echo).echo("hi")
    async with http.connect(urls[0], interfaces=[Echo], read_timeout=5.0) as one:
        said = await one.get_client(Echo).echo("hi")
    ws = ["ws://127.0.0.1:8000/", "ws://127.0.0.1:8001/"]
    async with websocket.connect(ws, interfaces=[Echo], ping_interval=None) as wgroup:
        said = await wgroup.get_client(Echo).echo("hi")
    async with websocket.connect(ws[0], interfaces=[Echo], connect_timeout=2.0) as wone:
        said = await wone.get_client(Echo).echo("hi")
    print(said)
"""


def test_mypy_refuses_a_misspelled_keyword_and_passes_the_right_ones(tmp_path: Path) -> None:
    misspelled = (
        USER.replace("retry=None, balance", "retyr=None, balance")
        .replace("read_timeout=5.0", "read_timout=5.0")
        .replace("ping_interval=None", "ping_intervall=None")
        .replace("connect_timeout=2.0", "conect_timeout=2.0")
    )
    errors = run_mypy(tmp_path, {"good": USER, "misspelled": misspelled})
    assert errors["good"] == []
    lines = {line: code for line, code, _ in errors["misspelled"]}
    assert lines == {
        15: "call-overload",
        17: "call-overload",
        20: "call-overload",
        22: "call-overload",
    }


IPC_WRAPPERS: list[tuple[Callable[..., Any], Callable[..., Any], str]] = [
    (http.connect_ipc, http_ipc_client.connect_ipc, "http://127.0.0.1:1/rpc"),
    (websocket.connect_ipc, websocket_client.connect_ipc, "ws://127.0.0.1:1/"),
]


@pytest.mark.parametrize(("wrapper", "one", "url"), IPC_WRAPPERS)
def test_connect_ipc_takes_the_one_url_connect_ipcs_keywords(
    wrapper: Callable[..., Any], one: Callable[..., Any], url: str
) -> None:
    assert _keywords(wrapper) == _keywords(one)
    for urls in ([url, url], url):
        with pytest.raises(TypeError, match="chanels"):
            wrapper(urls, chanels=[])
