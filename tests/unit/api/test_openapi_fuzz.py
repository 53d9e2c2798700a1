"""A property-based fuzz of the API from its own OpenAPI document (schemathesis
generates the requests): whatever the input, no request ends in a 5xx, and
every error body has the shape of the API it belongs to."""

from __future__ import annotations

import copy
import json
import urllib.parse

import jsonschema
import pytest
import schemathesis
import webtest
from hypothesis import HealthCheck, given, settings

from fabric import config
from fabric.api import openapi
from fabric.api.errors import api_of
from fabric.db import Database
from fabric.db.models import Base
from tests.fixtures.api import build_harness

BASE = "http://fabric.test"
DOCUMENT = openapi.document(BASE)
# schemathesis works on a copy: its stateful phase rewrites the links of the dict it was given
# (operationId -> a resolved reference), and the tests below read DOCUMENT as fabric serves it.
SCHEMA = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
# Image v2's JSON patch is JSON on the wire under its own media type.
schemathesis.serializer.alias("application/openstack-images-v2.1-json-patch", "application/json")
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


def test_document_covers_every_api():
    prefixes = {label.split()[1].split("/")[1] for label in OPERATIONS}
    assert prefixes >= {"v3", "compute", "image", "networking", "volume", "fabric"}


def test_document_is_served(api):
    served = api.app.get("/openapi.json").json
    assert served["openapi"].startswith("3.") and "/compute/v2.1/servers" in served["paths"]
    body = served["paths"]["/compute/v2.1/servers"]["post"]["requestBody"]["content"]["application/json"]
    # imageRef is optional: a server may boot from a volume (block_device_mapping_v2) instead.
    assert body["schema"]["properties"]["server"]["required"] == ["name", "flavorRef"]
    assert {"imageRef", "block_device_mapping_v2"} <= set(body["schema"]["properties"]["server"]["properties"])


def test_the_document_covers_every_route_the_app_serves(api):
    """Every (method, route) the app has a responder for is an operation of the document, and
    the document has none the app does not answer."""
    served = api.app.app.operations
    documented = {(method.upper(), path) for path, ops in api.app.get("/openapi.json").json["paths"].items()
                  for method in ops}
    assert served, "the app recorded no operation"
    assert not sorted(served - documented), f"operations missing from the OpenAPI document: {sorted(served - documented)}"
    assert not sorted(documented - served), f"documented operations the app does not answer: {sorted(documented - served)}"


def test_documented_answers_have_real_schemas():
    """An answer's schema, where the document gives one, names the keys the body always has."""
    for path, ops in DOCUMENT["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                for media in answer.get("content", {}).values():
                    schema = media["schema"]
                    assert schema.get("properties"), f"{method} {path} {status}: an empty schema"
                    assert schema.get("required"), f"{method} {path} {status}: nothing promised"


def test_links_chain_each_create_to_the_operations_on_what_it_made():
    """operationIds are unique, every link names one and fills its path parameters, and the
    main creates link to their show, update and delete."""
    by_id = {op["operationId"]: (path, method) for path, ops in DOCUMENT["paths"].items()
             for method, op in ops.items()}
    assert len(by_id) == sum(len(ops) for ops in DOCUMENT["paths"].values())
    linked = set()
    for ops in DOCUMENT["paths"].values():
        for op in ops.values():
            for answer in op["responses"].values():
                for link in answer.get("links", {}).values():
                    path, method = by_id[link["operationId"]]
                    assert set(link["parameters"]) == {p.strip("{}") for p in path.split("/") if p.startswith("{")}
                    linked.add((method, path))
    for method, path in (("get", "/compute/v2.1/servers/{server_id}"), ("delete", "/v3/users/{user_id}"),
                         ("put", "/networking/v2.0/networks/{network_id}"),
                         ("patch", "/image/v2/images/{image_id}")):
        assert (method, path) in linked, f"no create links to {method} {path}"


def answer_schema(case, status: int) -> dict | None:
    """The JSON Schema (OpenAPI's ``nullable`` as a null type) of ``case``'s answer with
    ``status``, if the document gives one."""
    if case.method.upper() != case.operation.method.upper():  # the coverage phase tries other methods
        return None
    answer = DOCUMENT["paths"][case.operation.path][case.operation.method.lower()]["responses"].get(str(status))
    schema = (answer or {}).get("content", {}).get("application/json", {}).get("schema")
    return None if schema is None else _nullable_as_null(schema)


def _nullable_as_null(schema):
    if isinstance(schema, list):
        return [_nullable_as_null(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _nullable_as_null(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory):
    """One app and database for the whole fuzz: cases are independent, and a fresh
    database per operation would cost more than the fuzzing itself."""
    workdir = tmp_path_factory.mktemp("fuzz")
    db = Database(f"sqlite:///{workdir / 'fabric.sqlite'}")
    Base.metadata.create_all(db.engine)
    settings_ = config.Settings().replace(default={"data_dir": str(workdir / "data")}, api={"public_url": BASE})
    yield build_harness(db, settings_)
    db.dispose()


def send(app: webtest.TestApp, token: str, case) -> webtest.TestResponse:
    kwargs = case.as_transport_kwargs(base_url=BASE)
    path = kwargs["url"][len(BASE):] or "/"
    if kwargs.get("params"):
        path += "?" + urllib.parse.urlencode(kwargs["params"], doseq=True)
    headers = {k: str(v) for k, v in (kwargs.get("headers") or {}).items()
               if k.lower() not in ("connection", "accept-encoding")}
    headers["X-Auth-Token"] = token
    body = json.dumps(kwargs["json"]).encode() if "json" in kwargs else kwargs.get("data") or b""
    return app.request(path, method=kwargs["method"], headers=headers, body=body, expect_errors=True)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_input_causes_a_server_error(fuzz_api, label):
    operation = OPERATIONS[label]

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    @given(operation.as_strategy())
    def check(case):
        check_response(label, case, send(fuzz_api.app, fuzz_api.admin.token, case))

    check()


def check_response(label: str, case, response: webtest.TestResponse) -> None:
    """No 5xx, a success body that holds to its documented schema, and an error body in the
    shape of the API the path belongs to."""
    assert response.status_int < 500, f"{label} -> {response.status_int}: {response.text[:300]}"
    schema = answer_schema(case, response.status_int) if response.status_int < 300 else None
    if schema is not None:
        try:
            jsonschema.validate(response.json, schema)
        except jsonschema.ValidationError as error:
            raise AssertionError(f"{label} -> {response.status_int} off its schema: {error.message}") from None
    if response.status_int >= 400 and response.body:
        document = response.json
        shape = api_of(case.formatted_path)
        if shape == "identity":
            assert set(document["error"]) == {"code", "title", "message"}
        elif shape == "network":
            assert "message" in document["NeutronError"]
        elif shape in ("compute", "volume"):  # Cinder's faults have Nova's shape
            (inner,) = document.values()
            assert inner["code"] == response.status_int
        else:
            assert document["code"] == response.status_int
