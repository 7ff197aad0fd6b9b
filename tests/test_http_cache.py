"""Cached reads over HTTP: a cacheable operation as a GET with its arguments in the query,
answered with Cache-Control and an ETag, 304 to a matching If-None-Match, errors no-store.

Against the real hypercorn server on 127.0.0.1; httpx is the independent client for the
wire, `http.connect` the Python client.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

import httpx
import pytest
import trio

from tests.http_cache_app import Catalog, Price, served_catalog
from tether.runtime import InvalidRequest, RemoteError
from tether.transports import http
from tether.transports.http._cache import MAX_GET_TARGET, get_target

TIMEOUT = 10.0
PATH = "/rpc/test.Catalog/1.0.0"
YEAR = 31_536_000


def args_query(*args: Any) -> str:
    """`?args=` as a curl user would write it: the JSON array, percent-encoded."""
    return "args=" + urllib.parse.quote(json.dumps(list(args), separators=(",", ":")), safe="")


async def test_a_get_with_args_in_the_query_runs_the_call_and_says_how_long_to_cache() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, impl), httpx.AsyncClient() as client:
            response = await client.get(f"{origin}{PATH}/price?{args_query('m1', 3)}")
            assert response.status_code == 200
            assert response.json() == {"key": "m1", "cents": 750}
            assert response.headers["cache-control"] == "public, max-age=60"
            assert response.headers["vary"] == "authorization, baggage"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-correlation-id"]
            etag = response.headers["etag"]
            assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
            # Trailing defaults may be left out, as in a POST's body.
            short = await client.get(f"{origin}{PATH}/price?{args_query('m1')}")
            assert short.json() == {"key": "m1", "cents": 250}
            assert short.headers["etag"] != etag  # another body, another tag
            assert impl.calls["price"] == 2


async def test_an_immutable_result_is_cached_a_year_and_bytes_travel_as_base64() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, _impl), httpx.AsyncClient() as client:
            response = await client.get(f"{origin}{PATH}/digest?{args_query('AQID')}")
            assert response.status_code == 200
            assert response.json() == "AwIB"
            assert response.headers["cache-control"] == f"public, max-age={YEAR}, immutable"


async def test_an_operation_without_arguments_takes_a_get_without_a_query() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, impl), httpx.AsyncClient() as client:
            response = await client.get(f"{origin}{PATH}/tick")
            assert response.status_code == 200
            assert response.json() == 1
            assert response.headers["cache-control"] == "public, max-age=1"
            assert impl.calls["tick"] == 1


async def test_a_matching_if_none_match_answers_304_without_a_body() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, _impl), httpx.AsyncClient() as client:
            url = f"{origin}{PATH}/price?{args_query('m1')}"
            first = await client.get(url)
            etag = first.headers["etag"]
            again = await client.get(url, headers={"if-none-match": etag})
            assert again.status_code == 304
            assert again.content == b""
            assert again.headers["etag"] == etag
            assert again.headers["cache-control"] == "public, max-age=60"
            assert "content-type" not in again.headers
            # Weak comparison, a list, and *: all match; another tag does not.
            for header in (f"W/{etag}", f'"nope", {etag}', "*"):
                matched = await client.get(url, headers={"if-none-match": header})
                assert matched.status_code == 304, header
            other = await client.get(url, headers={"if-none-match": '"nope"'})
            assert other.status_code == 200
            assert other.json() == {"key": "m1", "cents": 250}


async def test_head_answers_the_get_headers_without_the_body() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, _impl), httpx.AsyncClient() as client:
            url = f"{origin}{PATH}/price?{args_query('m1')}"
            got = await client.get(url)
            head = await client.head(url)
            assert head.status_code == 200
            assert head.content == b""
            assert head.headers["etag"] == got.headers["etag"]
            assert head.headers["content-length"] == str(len(got.content))


async def test_a_request_with_authorization_is_cached_privately_only() -> None:
    """A shared cache must not hand one user's result to another (RFC 9111 section 3.5)."""
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, _impl), httpx.AsyncClient() as client:
            response = await client.get(
                f"{origin}{PATH}/whoami", headers={"authorization": "Bearer alice"}
            )
            assert response.status_code == 200
            assert response.json() == "Bearer alice"
            assert response.headers["cache-control"] == "private, max-age=60"
            assert response.headers["vary"] == "authorization, baggage"
            anonymous = await client.get(f"{origin}{PATH}/whoami")
            assert anonymous.json() is None
            assert anonymous.headers["cache-control"] == "public, max-age=60"


async def test_errors_of_a_get_are_never_stored() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, impl), httpx.AsyncClient() as client:
            failed = await client.get(f"{origin}{PATH}/broken?{args_query('m1')}")
            assert failed.status_code == 500
            assert failed.headers["cache-control"] == "no-store"
            assert "etag" not in failed.headers
            assert failed.json()["error"]["code"] == "internal"
            assert impl.calls["broken"] == 1
            # Arguments that do not fit the signature: 400, no-store, as for a POST.
            wrong = await client.get(f"{origin}{PATH}/price?{args_query(1, 2)}")
            assert wrong.status_code == 400
            assert wrong.headers["cache-control"] == "no-store"
            assert wrong.json()["error"]["details"]["parameter"] == "key"
            # Unknown operation and interface: 404, no-store.
            for path in (f"{PATH}/nothing", "/rpc/test.Nothing/1.0.0/price"):
                missing = await client.get(f"{origin}{path}")
                assert missing.status_code == 404, path
                assert missing.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("query", "field", "says"),
    [
        ("args=%5B%22m1%22", "args", "args is not JSON"),
        ("args=m1", "args", "args is not JSON"),
        ("args=%7B%7D", "args", "args must be a JSON array, got dict"),
        ("", "args", "the query has no args"),
        ("key=%22m1%22", "query", "unknown query parameter 'key'"),
        (f"{args_query('m1')}&{args_query('m2')}", "args", "args is given twice"),
        ("args=%FF", "query", "not name=value pairs of UTF-8"),
        ("a&b", "query", "not name=value pairs"),
    ],
)
async def test_a_bad_query_is_a_400_that_says_how_to_write_it(
    query: str, field: str, says: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, impl), httpx.AsyncClient() as client:
            response = await client.get(f"{origin}{PATH}/price?{query}")
            assert response.status_code == 400
            assert response.headers["cache-control"] == "no-store"
            error = response.json()["error"]
            assert error["code"] == "bad-request"
            assert error["details"] == {"field": field}
            assert says in error["message"]
            # What to do, with the operation's parameters.
            assert (
                "?args=<the JSON array of them, percent-encoded> (key, quantity)"
                in (error["message"])
            )
            assert impl.calls["price"] == 0


async def test_get_of_an_operation_that_is_not_cacheable_is_405_allow_post() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, impl), httpx.AsyncClient() as client:
            for op in ("stock", "buy"):  # idempotent is not enough
                response = await client.get(f"{origin}{PATH}/{op}?{args_query('m1')}")
                assert response.status_code == 405, op
                assert response.headers["allow"] == "POST, OPTIONS"
                assert response.headers["cache-control"] == "no-store"
            assert impl.calls["stock"] == impl.calls["buy"] == 0
            # A cacheable operation names GET among what it takes, POST too.
            options = await client.options(f"{origin}{PATH}/price")
            assert options.headers["allow"] == "GET, HEAD, POST, OPTIONS"
            put = await client.put(f"{origin}{PATH}/price", content=b"[]")
            assert put.status_code == 405
            assert put.headers["allow"] == "GET, HEAD, POST, OPTIONS"


async def test_post_of_a_cacheable_operation_still_works_and_is_not_cached() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, impl), httpx.AsyncClient() as client:
            response = await client.post(f"{origin}{PATH}/price", json=["m1", 2])
            assert response.status_code == 200
            assert response.json() == {"key": "m1", "cents": 500}
            assert "cache-control" not in response.headers
            assert "etag" not in response.headers
            assert impl.calls["price"] == 1


async def test_the_site_policy_applies_to_a_get() -> None:
    """A GET runs a cacheable (idempotent) operation only, and only for pages allowed."""
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, _, impl), httpx.AsyncClient() as client:
            url = f"{origin}{PATH}/price?{args_query('m1')}"
            other_site = await client.get(url, headers={"origin": "https://evil.example"})
            assert other_site.status_code == 403
            assert other_site.headers["cache-control"] == "no-store"
            rebinding = await client.get(url, headers={"host": "evil.example"})
            assert rebinding.status_code == 400
            # <img src> on another site's page: no Origin, but Sec-Fetch-Site says so.
            no_cors = await client.get(
                url, headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"}
            )
            assert no_cors.status_code == 403
            assert no_cors.headers["cache-control"] == "no-store"
            assert "without CORS" in no_cors.json()["error"]["message"]
            assert impl.calls["price"] == 0
            # The user's own navigation to the URL, and same-site requests, run.
            for site, mode in (("cross-site", "navigate"), ("same-origin", "no-cors")):
                ok = await client.get(url, headers={"sec-fetch-site": site, "sec-fetch-mode": mode})
                assert ok.status_code == 200
            assert impl.calls["price"] == 2


async def test_a_listed_origin_gets_cors_headers_and_vary_on_a_get() -> None:
    page = "https://app.example"
    with trio.fail_after(TIMEOUT):
        async with (
            served_catalog(cors_origins=[page]) as (origin, _, _impl),
            httpx.AsyncClient() as client,
        ):
            response = await client.get(
                f"{origin}{PATH}/price?{args_query('m1')}",
                headers={"origin": page, "sec-fetch-site": "cross-site", "sec-fetch-mode": "cors"},
            )
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == page
            assert response.headers.get_list("vary") == ["origin", "authorization, baggage"]
            # A page's script may read the ETag and send it back.
            assert "etag" in response.headers["access-control-expose-headers"].split(", ")
            preflight = await client.options(
                f"{origin}{PATH}/price",
                headers={"origin": page, "access-control-request-method": "GET"},
            )
            assert preflight.headers["access-control-allow-methods"] == "GET, HEAD, POST, OPTIONS"
            allowed = preflight.headers["access-control-allow-headers"].split(", ")
            assert "if-none-match" in allowed


async def test_the_python_client_sends_a_cacheable_call_as_a_get() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, recorder, impl):
            async with http.connect(f"{origin}/rpc", interfaces=[Catalog]) as backend:
                catalog = backend.get_client(Catalog)
                assert await catalog.price("m1", quantity=4) == Price("m1", 1000)
                assert await catalog.digest(b"\x00\xff") == b"\xff\x00"
                assert await catalog.tick() == 1
                assert await catalog.stock("m1") == 7
                assert await catalog.buy("m1") == 1
                with pytest.raises(RemoteError, match="no price list for m1"):
                    await catalog.broken("m1")
            assert recorder.methods("price") == ["GET"]
            assert recorder.methods("digest") == ["GET"]
            assert recorder.methods("tick") == ["GET"]
            assert recorder.methods("broken") == ["GET"]
            assert recorder.methods("stock") == ["POST"]
            assert recorder.methods("buy") == ["POST"]
            queries = {path.rsplit("/", 1)[1]: query for _, path, query in recorder.requests}
            # Canonical: compact JSON, every byte but unreserved ones percent-encoded.
            assert queries["price"] == b"args=%5B%22m1%22%2C4%5D"
            assert queries["tick"] == b""
            assert impl.calls["price"] == 1


async def test_a_call_whose_query_would_be_too_long_goes_as_a_post() -> None:
    key = "k" * MAX_GET_TARGET
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, recorder, _impl):
            async with http.connect(f"{origin}/rpc", interfaces=[Catalog]) as backend:
                catalog = backend.get_client(Catalog)
                assert await catalog.price(key) == Price(key, 250)
            assert recorder.methods("price") == ["POST"]


def test_get_target_is_none_past_the_limit_and_refuses_what_json_cannot_hold() -> None:
    path = b"/rpc/I/1.0.0/op"
    assert get_target(path, []) == path
    assert get_target(path, [b"\x01"]) == path + b"?args=%5B%22AQ%3D%3D%22%5D"
    longest = MAX_GET_TARGET - len(path + b"?args=%5B%22%22%5D")
    assert get_target(path, ["x" * longest]) is not None
    assert get_target(path, ["x" * (longest + 1)]) is None
    with pytest.raises(TypeError):
        get_target(path, [object()])


async def test_arguments_that_do_not_fit_are_refused_over_get_as_over_post() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_catalog() as (origin, recorder, impl):
            async with http.connect(f"{origin}/rpc", interfaces=[Catalog]) as backend:
                catalog = backend.get_client(Catalog)
                with pytest.raises(InvalidRequest, match="argument 'key'") as raised:
                    await catalog.price(3)  # type: ignore[arg-type]
            assert raised.value.details["parameter"] == "key"
            assert recorder.methods("price") == ["GET"]
            assert impl.calls["price"] == 0
