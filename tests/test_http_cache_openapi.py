"""OpenAPI of operation policies: `x-tether-policy` on every operation with one, and the GET
(with its `args` query parameter) of every cacheable operation; the document stays valid
OpenAPI 3.1 and its schemas fit what the server and the client really exchange."""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
import trio
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.http_cache_app import Catalog, catalog_manager, served_catalog
from tether.runtime._interfaces import operations_of
from tether.transports.http._cache import get_target
from tether.transports.http._openapi import openapi_document

DOC_URI = "urn:tether:openapi"
PATH = "/rpc/test.Catalog/1.0.0"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document(catalog_manager()[0])


def _validator(doc: dict[str, Any], pointer: str) -> jsonschema.Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return jsonschema.Draft202012Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=registry)


def _escaped(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


def test_the_document_with_gets_and_policies_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)
    assert orjson.loads(orjson.dumps(doc)) == doc


def test_every_operation_with_a_policy_carries_it_and_only_cacheable_ones_have_a_get(
    doc: dict[str, Any],
) -> None:
    for name, op in operations_of(Catalog).items():
        item = doc["paths"][f"{PATH}/{name}"]
        policy = op.policy.to_json()
        if policy:
            assert item["post"]["x-tether-policy"] == policy, name
        else:
            assert "x-tether-policy" not in item["post"], name
        if op.policy.cache is not None:
            assert item["get"]["x-tether-policy"] == policy
        else:
            assert set(item) == {"post"}, name
    price = doc["paths"][f"{PATH}/price"]
    assert price["post"]["x-tether-policy"] == {"idempotent": True, "cache": {"max_age": 60.0}}
    assert doc["paths"][f"{PATH}/digest"]["get"]["x-tether-policy"]["cache"] == {
        "max_age": 31_536_000,
        "immutable": True,
    }
    assert doc["paths"][f"{PATH}/stock"]["post"]["x-tether-policy"] == {"idempotent": True}
    ids = [
        operation["operationId"] for item in doc["paths"].values() for operation in item.values()
    ]
    assert len(ids) == len(set(ids))
    assert price["get"]["operationId"] == "test.Catalog.price.get"


def test_the_get_describes_args_the_cache_headers_and_304(doc: dict[str, Any]) -> None:
    get = doc["paths"][f"{PATH}/price"]["get"]
    args = get["parameters"][0]
    assert (args["name"], args["in"], args["required"]) == ("args", "query", True)
    assert "requestBody" not in get
    assert {"Cache-Control", "ETag", "Vary"} <= set(get["responses"]["200"]["headers"])
    assert "304" in get["responses"]
    assert any(p.get("name") == "If-None-Match" for p in get["parameters"])
    tick = doc["paths"][f"{PATH}/tick"]["get"]
    assert tick["parameters"][0]["required"] is False  # no arguments: no query needed
    # The query's schema takes what the client writes there, and refuses what the server does.
    pointer = "/paths/" + _escaped(f"{PATH}/price") + "/get/parameters/0/content/application~1json"
    schema = _validator(doc, pointer + "/schema")
    target = get_target(f"{PATH}/price".encode(), ["m1", 3])
    assert target is not None
    sent = urllib.parse.parse_qs(target.split(b"?", 1)[1].decode())["args"][0]
    schema.validate(orjson.loads(sent))
    assert not schema.is_valid([1, 2])
    assert not schema.is_valid([])


async def test_the_described_policies_and_a_get_answer_fit_the_document(
    doc: dict[str, Any],
) -> None:
    with trio.fail_after(10):
        async with served_catalog() as (origin, _, _impl), httpx.AsyncClient() as client:
            described = (await client.get(f"{origin}/rpc/")).json()
            answer = await client.get(f"{origin}{PATH}/price?args=%5B%22m1%22%2C2%5D")
            served = (await client.get(f"{origin}/rpc/openapi.json")).json()
    assert served == doc
    assert described["interfaces"]["test.Catalog"]["policies"]["tick"] == {
        "idempotent": True,
        "cache": {"max_age": 1.0},
    }
    describe = "/paths/" + _escaped("/rpc/") + "/get/responses/200/content/application~1json"
    _validator(doc, describe + "/schema").validate(described)
    example = doc["paths"]["/rpc/"]["get"]["responses"]["200"]["content"]["application/json"]
    _validator(doc, describe + "/schema").validate(example["examples"]["served"]["value"])
    ok = "/paths/" + _escaped(f"{PATH}/price") + "/get/responses/200/content/application~1json"
    _validator(doc, ok + "/schema").validate(answer.json())
