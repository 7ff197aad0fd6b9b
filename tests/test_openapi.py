"""The OpenAPI document: valid OpenAPI 3.1, and schemas that fit what the codec writes."""

import dataclasses
import datetime
import enum
import sys
import uuid
from typing import Annotated, Any, Literal

import attrs
import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tether.runtime import CONVERTER, RpcInterface, RpcManager
from tether.runtime._codec import dumps
from tether.runtime._interfaces import operations_of
from tether.runtime._protocol import ErrorInfo, error_info_to_json
from tether.testing import ConformanceInterface, Everything, Probe
from tether.testing._rpc_samples import Circle, Color, Level, Point, Square, sample_everything
from tether.testing._rpc_suite import ConformanceImpl
from tether.transports.http._openapi import json_schema, openapi_document

DOC_URI = "urn:tether:openapi"
#: The JSON Schema 2020-12 metaschema, with its vocabularies.
DRAFT202012_META = jsonschema.Draft202012Validator.META_SCHEMA


class Greeter(RpcInterface):
    """Says hello."""

    interface_name = "test.Greeter"
    interface_version = "0.1.0"

    async def greet(self, name: str, times: int = 1, loud: bool = False) -> str:
        """Greet someone.

        Say hello to `name`, `times` times.
        """

    async def nothing(self) -> None: ...


class GreeterImpl(Greeter):
    async def greet(self, name: str, times: int = 1, loud: bool = False) -> str:
        return name * times

    async def nothing(self) -> None:
        return None


def _manager() -> RpcManager:
    manager = RpcManager()
    manager.register_impl(ConformanceInterface, ConformanceImpl(Probe(), manager, None))
    manager.register_impl(Greeter, GreeterImpl)
    return manager


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document(_manager())


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _validator(doc: dict[str, Any], *parts: str) -> jsonschema.Draft202012Validator:
    """A validator for the schema at `parts` in `doc`, its `$ref`s resolved in `doc`."""
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return jsonschema.Draft202012Validator({"$ref": DOC_URI + _pointer(*parts)}, registry=registry)


def _path(interface: str, version: str, operation: str) -> str:
    return f"/rpc/{interface}/{version}/{operation}"


def _response_validator(
    doc: dict[str, Any], interface: str, version: str, op: str
) -> jsonschema.Draft202012Validator:
    path = _path(interface, version, op)
    return _validator(
        doc, "paths", path, "post", "responses", "200", "content", "application/json", "schema"
    )


def _request_validator(
    doc: dict[str, Any], interface: str, version: str, op: str
) -> jsonschema.Draft202012Validator:
    path = _path(interface, version, op)
    return _validator(
        doc, "paths", path, "post", "requestBody", "content", "application/json", "schema"
    )


def _wire(value: Any) -> Any:
    """An unstructured value as the other side reads it: through orjson and back."""
    return orjson.loads(dumps(value))


ECHO = operations_of(ConformanceInterface)["echo"]
ADD = operations_of(ConformanceInterface)["add"]


# ---------------------------------------------------------------------------
# The document


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    """openapi-spec-validator accepts the document as OpenAPI 3.1, and it is JSON."""
    assert doc["openapi"].startswith("3.1.")
    validate(doc)
    assert orjson.loads(orjson.dumps(doc)) == doc


def _schemas_in(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every Schema Object in an OpenAPI document, with where it is."""
    found: list[tuple[str, Any]] = [
        (f"components/schemas/{name}", schema)
        for name, schema in doc["components"]["schemas"].items()
    ]

    def walk(item: Any, where: str) -> None:
        if isinstance(item, dict):
            for key, child in item.items():
                if key == "schema":
                    found.append((f"{where}/schema", child))
                else:
                    walk(child, f"{where}/{key}")
        elif isinstance(item, list):
            for index, child in enumerate(item):
                walk(child, f"{where}/{index}")

    walk({"paths": doc["paths"], "components": doc["components"]}, "#")
    return found


def test_every_schema_in_the_document_is_valid_json_schema_2020_12(doc: dict[str, Any]) -> None:
    """Each schema passes the JSON Schema 2020-12 metaschema (an empty prefixItems, which
    a zero-argument operation had, does not)."""
    schemas = _schemas_in(doc)
    assert len(schemas) > 50
    for where, schema in schemas:
        errors = list(jsonschema.Draft202012Validator(DRAFT202012_META).iter_errors(schema))
        assert errors == [], (where, [error.message for error in errors])
    path = _path("test.Greeter", "0.1.0", "nothing")
    body = _request_validator(doc, "test.Greeter", "0.1.0", "nothing")
    body.validate([])
    assert not body.is_valid([None])
    assert "prefixItems" not in str(doc["paths"][path]["post"]["requestBody"])


def test_the_schema_allows_only_the_numbers_the_server_accepts(doc: dict[str, Any]) -> None:
    """ints within 64 bits (what orjson carries), finite doubles: schemathesis found ints
    the schema allowed and the server refused."""
    add = _request_validator(doc, "tether.Conformance", "1.2.3", "add")
    add.validate([-(2**63), 2**64 - 1])
    for wrong in ([2**64, 0], [0, -(2**63) - 1]):
        assert not add.is_valid(wrong), wrong
    assert json_schema(int, {}) == {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1}
    number = json_schema(float, {})
    assert (number["minimum"], number["maximum"]) == (-sys.float_info.max, sys.float_info.max)
    assert not jsonschema.Draft202012Validator(number).is_valid(10**400)
    assert "integers are within [-2**63, 2**64-1]" in doc["info"]["description"]


def test_every_operation_and_route_is_documented(doc: dict[str, Any]) -> None:
    """One POST per operation of each served interface, plus describe, health and openapi."""
    expected = {
        _path("tether.Conformance", "1.2.3", name): f"tether.Conformance.{name}"
        for name in operations_of(ConformanceInterface)
    } | {
        _path("test.Greeter", "0.1.0", name): f"test.Greeter.{name}"
        for name in ("greet", "nothing")
    }
    for path, operation_id in expected.items():
        assert list(doc["paths"][path]) == ["post"]
        post = doc["paths"][path]["post"]
        assert post["operationId"] == operation_id
        assert post["tags"] == [operation_id.rsplit(".", 1)[0]]
        assert set(post["responses"]) == {
            "200", "400", "401", "403", "404", "413", "422", "429", "500", "503", "504"
        }  # fmt: skip
    for path in ("/rpc/", "/rpc/health", "/rpc/openapi.json"):
        assert list(doc["paths"][path]) == ["get"]
    assert set(doc["paths"]) == set(expected) | {"/rpc/", "/rpc/health", "/rpc/openapi.json"}
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_headers_errors_and_security_are_documented(doc: dict[str, Any]) -> None:
    """Request headers as parameters, one Error schema, Retry-After on 429 and 503."""
    post = doc["paths"][_path("test.Greeter", "0.1.0", "greet")]["post"]
    parameters = [
        doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] for p in post["parameters"]
    ]
    assert {p["name"]: p["in"] for p in parameters} == dict.fromkeys(
        [
            "X-Correlation-ID",
            "X-Session-Id",
            "X-Application-Id",
            "X-Application-Version",
            "X-Protocol-Version",
            "X-Timeout-Ms",
            "traceparent",
            "baggage",
        ],
        "header",
    )
    timeout = next(p for p in parameters if p["name"] == "X-Timeout-Ms")
    assert timeout["schema"]["type"] == "integer"
    scheme = doc["components"]["securitySchemes"]["authorization"]
    assert scheme["type"] == "http"
    assert "authorize hook" in scheme["description"]
    for status, ref in post["responses"].items():
        if status == "200":
            continue
        response = doc["components"]["responses"][ref["$ref"].rsplit("/", 1)[1]]
        schema = response["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
        assert ("Retry-After" in response["headers"]) == (status in ("429", "503"))


def test_an_error_body_fits_the_error_schema(doc: dict[str, Any]) -> None:
    """What the runtime writes for an error fits `Error`; an error without its fields does not."""
    validator = _validator(doc, "components", "schemas", "Error")
    info = ErrorInfo("bad-request", 400, "InvalidRequest", "no", {"parameter": "a"}, "act-1")
    body = _wire({"error": error_info_to_json(info)})
    validator.validate(body)
    validator.validate(_wire({"error": error_info_to_json(ErrorInfo("internal", 500, "X", ""))}))
    del body["error"]["activity_id"]
    assert not validator.is_valid(body)
    assert not validator.is_valid({"message": "no"})


def test_docstrings_become_summary_and_description(doc: dict[str, Any]) -> None:
    post = doc["paths"][_path("test.Greeter", "0.1.0", "greet")]["post"]
    assert post["summary"] == "Greet someone."
    assert "`times` times" in post["description"]
    tag = next(t for t in doc["tags"] if t["name"] == "test.Greeter")
    assert tag["description"].startswith("Says hello.")
    assert "summary" not in doc["paths"][_path("tether.Conformance", "1.2.3", "add")]["post"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("", ""), ("/", ""), ("/api/rpc/", "/api/rpc"), ("api", "/api")],
)
def test_prefix_is_normalized(prefix: str, expected: str) -> None:
    """Paths always start with one '/', whatever the prefix looks like."""
    document = openapi_document(_manager(), prefix=prefix, title="T", version="9")
    validate(document)
    assert document["info"] == {**document["info"], "title": "T", "version": "9"}
    assert f"{expected}/" in document["paths"]
    assert f"{expected}/test.Greeter/0.1.0/greet" in document["paths"]


# ---------------------------------------------------------------------------
# Results


@pytest.mark.parametrize("value", sample_everything())
def test_encoded_results_fit_the_response_schema(doc: dict[str, Any], value: Everything) -> None:
    """Each sample of Everything, as the codec writes it, fits echo's 200 schema."""
    validator = _response_validator(doc, "tether.Conformance", "1.2.3", "echo")
    validator.validate(_wire(ECHO.encode_result(value)))
    echo_list = operations_of(ConformanceInterface)["echo_list"]
    _response_validator(doc, "tether.Conformance", "1.2.3", "echo_list").validate(
        _wire(echo_list.encode_result(sample_everything()))
    )


def _set(encoded: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**encoded, key: value}


WRONG: dict[str, Any] = {
    "str for int": lambda e: _set(e, "count", "3"),
    "float for int": lambda e: _set(e, "count", 1.5),
    "bool for int": lambda e: _set(e, "count", True),
    "int for bool": lambda e: _set(e, "flag", 1),
    "null for float": lambda e: _set(e, "ratio", None),
    "not base64": lambda e: _set(e, "raw", "a,b="),
    "base64 without its padding": lambda e: _set(e, "raw", "eA"),
    "unknown enum value": lambda e: _set(e, "color", "blue"),
    "enum name for value": lambda e: _set(e, "level", "HIGH"),
    "int for uuid": lambda e: _set(e, "ident", 7),
    "value for None": lambda e: _set(e, "nothing", 0),
    "float for int | None": lambda e: _set(e, "maybe", 1.5),
    "list for int | str": lambda e: _set(e, "either", [1]),
    "unknown tag": lambda e: _set(e, "shape", {**e["shape"], "kind": "triangle"}),
    "square under circle's tag": lambda e: _set(
        e, "shape", {"kind": "circle", "corner": {"x": 0, "y": 0}, "side": 1}
    ),
    "point missing a field": lambda e: _set(e, "points", [{"x": 1.0}]),
    "tuple too long": lambda e: _set(e, "pair", [1, "a", 2]),
    "tuple too short": lambda e: _set(e, "pair", [1]),
    "tuple items swapped": lambda e: _set(e, "pair", ["a", 1]),
    "str in tuple[int, ...]": lambda e: _set(e, "rest", [1, "2"]),
    "non-int key": lambda e: _set(e, "by_id", {"one": "one"}),
    "int key with a leading zero": lambda e: _set(e, "by_id", {"01": "one"}),
    "duplicate set items": lambda e: _set(e, "tags", ["a", "a"]),
    "missing field": lambda e: {k: v for k, v in e.items() if k != "when"},
    "array for object": lambda e: list(e.values()),
}


@pytest.mark.parametrize("mutate", WRONG.values(), ids=list(WRONG))
def test_wrong_results_do_not_fit(doc: dict[str, Any], mutate: Any) -> None:
    """The schema is not vacuous: each kind of wrong value is refused."""
    validator = _response_validator(doc, "tether.Conformance", "1.2.3", "echo")
    encoded = _wire(ECHO.encode_result(sample_everything()[0]))
    validator.validate(encoded)
    assert not validator.is_valid(mutate(encoded))


_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_points = st.builds(Point, _floats, _floats)


@st.composite
def _everything(draw: st.DrawFn) -> Everything:
    shape: Circle | Square = draw(
        st.one_of(
            st.builds(Circle, st.just("circle"), _points, _floats),
            st.builds(Square, st.just("square"), _points, _floats),
        )
    )
    return Everything(
        flag=draw(st.booleans()),
        count=draw(_ints),
        ratio=draw(_floats),
        name=draw(st.text()),
        raw=draw(st.binary()),
        color=draw(st.sampled_from(Color)),
        level=draw(st.sampled_from(Level)),
        when=draw(st.datetimes(timezones=st.none() | st.timezones())),
        day=draw(st.dates()),
        ident=draw(st.uuids()),
        nothing=None,
        maybe=draw(st.none() | _ints),
        either=draw(_ints | st.text()),
        shape=shape,
        points=draw(st.lists(_points, max_size=3)),
        pair=(draw(_ints), draw(st.text())),
        rest=tuple(draw(st.lists(_ints, max_size=3))),
        by_name=draw(st.dictionaries(st.text(), _points, max_size=3)),
        by_id=draw(st.dictionaries(_ints, st.text(), max_size=3)),
        tags=draw(st.sets(st.text(), max_size=3)),
        frozen=draw(st.frozensets(_ints, max_size=3)),
    )


@settings(max_examples=150, deadline=None)
@given(value=_everything())
def test_any_encoded_everything_fits_the_response_schema(
    doc: dict[str, Any], value: Everything
) -> None:
    """Property: whatever Everything the codec writes fits the schema it is documented by."""
    validator = _response_validator(doc, "tether.Conformance", "1.2.3", "echo")
    validator.validate(_wire(ECHO.encode_result(value)))


# ---------------------------------------------------------------------------
# Requests


def test_encoded_arguments_fit_the_request_schema(doc: dict[str, Any]) -> None:
    """The argument array a client sends fits; a wrong count or type does not."""
    add = _request_validator(doc, "tether.Conformance", "1.2.3", "add")
    add.validate(_wire(ADD.encode_args((2, 40), {})))
    for wrong in ([], [1], [1, 2, 3], ["1", 2], {"a": 1, "b": 2}):
        assert not add.is_valid(wrong), wrong
    echo = _request_validator(doc, "tether.Conformance", "1.2.3", "echo")
    for value in sample_everything():
        echo.validate(_wire(ECHO.encode_args((value,), {})))
    assert not echo.is_valid([])
    context = _request_validator(doc, "tether.Conformance", "1.2.3", "context")
    context.validate([])
    assert not context.is_valid([None])


def test_trailing_parameters_with_defaults_are_optional(doc: dict[str, Any]) -> None:
    """minItems counts the required parameters, maxItems all; defaults are documented."""
    greet = _request_validator(doc, "test.Greeter", "0.1.0", "greet")
    for ok in (["a"], ["a", 2], ["a", 2, True]):
        greet.validate(ok)
    for wrong in ([], ["a", 2, True, 4], ["a", True], [1]):
        assert not greet.is_valid(wrong), wrong
    path = _path("test.Greeter", "0.1.0", "greet")
    body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert (body["minItems"], body["maxItems"], body["items"]) == (1, 3, False)
    assert [item.get("default") for item in body["prefixItems"]] == [None, 1, False]
    assert [item["title"] for item in body["prefixItems"]] == ["name", "times", "loud"]
    nothing = _response_validator(doc, "test.Greeter", "0.1.0", "nothing")
    nothing.validate(None)
    assert not nothing.is_valid(0)


# ---------------------------------------------------------------------------
# json_schema, type by type


def _check(tp: Any, good: list[Any], bad: list[Any]) -> dict[str, Any]:
    """The schema of `tp`; encoded `good` values fit it, `bad` raw JSON values do not."""
    components: dict[str, Any] = {}
    schema = json_schema(tp, components)
    validator = jsonschema.Draft202012Validator({**schema, "components": components})
    jsonschema.Draft202012Validator.check_schema(schema)
    for value in good:
        validator.validate(_wire(CONVERTER.unstructure(value, tp)))
    for value in bad:
        assert not validator.is_valid(value), value
    return schema


@attrs.frozen
class Node:
    """A tree: refers to itself."""

    name: str
    children: list["Node"] = attrs.field(factory=list)
    parent: "Node | None" = None


def test_recursive_classes_are_referenced_not_expanded() -> None:
    tree = Node("root", [Node("a", [Node("b")]), Node("c", parent=Node("p"))])
    schema = _check(Node, [tree], [{"name": "x", "children": [{"children": []}]}])
    assert schema == {"$ref": "#/components/schemas/Node"}


def test_fields_with_defaults_are_not_required() -> None:
    components: dict[str, Any] = {}
    json_schema(Node, components)
    node = components["schemas"]["Node"]
    assert node["required"] == ["name"]
    assert node["properties"]["parent"]["default"] is None
    assert "default" not in node["properties"]["children"]  # a factory
    assert node["description"] == "A tree: refers to itself."


@dataclasses.dataclass
class Settings:
    size: int
    unit: str = "mm"
    scale: float = dataclasses.field(default=1.0)
    derived: int = dataclasses.field(init=False, default=0)


def test_dataclasses_leave_out_fields_the_codec_does_not_carry() -> None:
    components: dict[str, Any] = {}
    _check(Settings, [Settings(3)], [{"unit": "cm"}, {"size": "3"}])
    json_schema(Settings, components)
    settings_schema = components["schemas"]["Settings"]
    assert list(settings_schema["properties"]) == ["size", "unit", "scale"]
    assert settings_schema["required"] == ["size"]
    assert settings_schema["properties"]["unit"]["default"] == "mm"
    assert "description" not in settings_schema  # dataclasses' made-up docstring


class Mode(enum.StrEnum):
    READ = "read"
    WRITE = "write"


class Mixed(enum.Enum):
    ONE = 1
    HALF = 0.5


class Perm(enum.IntFlag):
    R = 4
    W = 2


def test_enums_are_their_values() -> None:
    _check(Mode, list(Mode), ["READ", "x", 1])
    _check(Level, list(Level), [3, "HIGH", 1.5])
    _check(Mixed, list(Mixed), ["ONE", 2])
    _check(Perm, [Perm.R, Perm.W], [6, "R"])  # the codec refuses combined flags
    components: dict[str, Any] = {}
    json_schema(Mixed, components)
    assert components["schemas"]["Mixed"] == {"enum": [1, 0.5]}


def test_scalars() -> None:
    _check(int, [0, -(2**63)], [1.5, True, "1", None])
    _check(float, [1.5, 0.0], ["1.5", None, False])
    _check(bool, [True], [1, "true"])
    _check(str, ["", "é"], [1, None])
    _check(None, [None], [0, ""])
    _check(bytes, [b"", bytes(range(256))], ["a b", 1])
    _check(datetime.datetime, [datetime.datetime(2020, 1, 2, tzinfo=datetime.UTC)], [1])
    _check(datetime.date, [datetime.date(2020, 1, 2)], [None])
    _check(uuid.UUID, [uuid.uuid4()], [1])
    assert json_schema(uuid.UUID, {}) == {"type": "string", "format": "uuid"}
    assert json_schema(datetime.date, {}) == {"type": "string", "format": "date"}
    assert json_schema(datetime.datetime, {})["format"] == "date-time"


def test_literals_are_constants() -> None:
    assert _check(Literal["a"], ["a"], ["b"]) == {"const": "a"}
    assert _check(Literal[1, "x", None], [1, "x", None], [2, True]) == {"enum": [1, "x", None]}
    assert _check(Literal[Color.RED], [Color.RED], ["RED"]) == {"const": "red"}


def test_unions() -> None:
    _check(int | None, [None, 3], ["3"])
    shape = _check(
        Circle | Square | None,
        [None, Circle("circle", Point(0, 0), 1), Square("square", Point(0, 0), 1)],
        [{"kind": "circle", "corner": {"x": 0, "y": 0}, "side": 1}, 1],
    )
    tagged = shape["anyOf"][0]
    assert tagged["discriminator"]["propertyName"] == "kind"
    assert shape["anyOf"][1] == {"type": "null"}
    # Without a tag every record could fit: anyOf, no discriminator.
    assert "anyOf" in json_schema(Point | Node, {})


def test_collections() -> None:
    _check(list[int], [[], [1, 2]], [[1.5], {}, None])
    _check(set[str], [set(), {"a", "b"}], [["a", "a"]])
    _check(frozenset[int], [frozenset({1})], [[1, 1]])
    _check(tuple[int, str], [(1, "a")], [[1], [1, "a", None], ["a", 1]])
    _check(tuple[int, ...], [(), (1, 2, 3)], [["1"]])
    _check(Annotated[list[int], "meta"], [[1]], [["1"]])


def test_mappings_say_how_keys_are_written() -> None:
    _check(dict[str, int], [{"a": 1}], [{"a": "1"}])
    _check(dict[int, str], [{-2: "a", 0: "b", 10: "c"}], [{"x": "a"}, {"1.5": "a"}, {"01": "a"}])
    _check(dict[Level, int], [{Level.LOW: 1}], [{"3": 1}, {"LOW": 1}])
    _check(dict[Mode, int], [{Mode.READ: 1}], [{"READ": 1}])
    _check(dict[uuid.UUID, int], [{uuid.uuid4(): 1}], [{"a": "1"}])


def _another_point() -> type:
    @attrs.frozen
    class Point:
        label: str

    return Point


def test_two_classes_with_one_name_get_two_schemas() -> None:
    """The second class named Point is qualified by its module, not merged with the first."""
    other = _another_point()
    components: dict[str, Any] = {}
    schema = json_schema(tuple[Point, other], components)  # type: ignore[valid-type]
    refs = [item["$ref"] for item in schema["prefixItems"]]
    assert refs[0] == "#/components/schemas/Point"
    assert refs[1] == f"#/components/schemas/{__name__}._another_point._locals_.Point"
    assert set(components["schemas"]) == {"Point", refs[1].rsplit("/", 1)[1]}
    _check(tuple[Point, other], [(Point(1, 2), other("a"))], [[{"x": 1, "y": 2}, {"x": 1}]])  # type: ignore[valid-type]


def test_types_the_codec_does_not_carry_are_refused() -> None:
    with pytest.raises(TypeError, match="complex"):
        json_schema(complex, {})
    with pytest.raises(TypeError, match="float"):
        json_schema(dict[float, int], {})


@attrs.frozen
class Holder:
    value: complex


def test_a_class_that_cannot_be_described_leaves_no_half_schema() -> None:
    components: dict[str, Any] = {}
    with pytest.raises(TypeError, match="complex"):
        json_schema(Holder, components)
    assert components == {"schemas": {}}
