"""Stream operations in the OpenAPI document and in describe (`GET {prefix}/`)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import trio
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.http_streams_app import manager
from tests.test_http_streams_wire import CURL, served
from tether.transports.http._openapi import openapi_document

DOC_URI = "urn:tether:openapi"
PATH = "/rpc/HttpTelemetry/1.0.0"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    # Failed on main with "Stream[bytes] has no JSON schema": a backend with
    # a client-stream operation had no OpenAPI document at all.
    return openapi_document(manager())


def _validator(doc: dict[str, Any], *parts: str) -> jsonschema.Draft202012Validator:
    pointer = "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return jsonschema.Draft202012Validator({"$ref": DOC_URI + pointer}, registry=registry)


def test_the_document_with_stream_operations_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate(doc)


def test_a_server_stream_answers_ndjson_lines_of_its_items(doc: dict[str, Any]) -> None:
    ok = doc["paths"][f"{PATH}/watch"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/x-ndjson", "application/vnd.tether.stream"}
    line = _validator(
        doc, "paths", f"{PATH}/watch", "post", "responses", "200", "content",
        "application/x-ndjson", "schema",
    )  # fmt: skip
    assert line.is_valid({"t": "item", "value": {"x": 1.0, "y": 2.0}})
    assert line.is_valid({"t": "result", "value": None})
    error = {
        "code": "internal", "status": 500, "name": "x", "message": "m", "details": {},
        "activity_id": None,
    }  # fmt: skip
    assert line.is_valid({"t": "error", "error": error})
    assert not line.is_valid({"t": "item", "value": "not a position"})
    # The request is the JSON array of the arguments, as for a unary call.
    assert "application/json" in doc["paths"][f"{PATH}/watch"]["post"]["requestBody"]["content"]


def test_a_client_stream_takes_ndjson_arguments_then_items(doc: dict[str, Any]) -> None:
    body = doc["paths"][f"{PATH}/total"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/x-ndjson", "application/vnd.tether.stream"}
    line = _validator(
        doc, "paths", f"{PATH}/total", "post", "requestBody", "content",
        "application/x-ndjson", "schema",
    )  # fmt: skip
    assert line.is_valid([None])  # the arguments: null in the stream's place
    assert line.is_valid(7)  # an item
    assert not line.is_valid("seven")
    ok = doc["paths"][f"{PATH}/total"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/json"}


def test_a_two_way_stream_is_documented_as_not_found(doc: dict[str, Any]) -> None:
    post = doc["paths"][f"{PATH}/steer"]["post"]
    assert set(post["responses"]) == {"404"}
    assert "requestBody" not in post
    assert "WebSocket" in post["description"]


async def test_describe_says_which_operations_are_streams() -> None:
    with trio.fail_after(10):
        async with served() as url:
            done = await trio.run_process(
                [CURL, "-s", "--max-time", "10", url + "/"], capture_stdout=True
            )
    entry = json.loads(done.stdout)["interfaces"]["HttpTelemetry"]
    assert entry["streams"] == {
        "watch": "server",
        "forever": "server",
        "lose": "server",
        "blobs": "server",
        "upload": "client",
        "total": "client",
        "gated": "client",
        "first": "client",
        "steer": "two-way",
    }
