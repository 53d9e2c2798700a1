"""A property-based fuzz of the API from its own OpenAPI document (schemathesis
generates the requests): whatever the input, no request ends in a 5xx, and
every error body has the shape of the API it belongs to."""

from __future__ import annotations

import json
import urllib.parse

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
SCHEMA = schemathesis.openapi.from_dict(openapi.document(BASE))
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


def test_document_covers_every_api():
    prefixes = {label.split()[1].split("/")[1] for label in OPERATIONS}
    assert prefixes >= {"v3", "compute", "image", "networking", "fabric"}


def test_document_is_served(api):
    served = api.app.get("/openapi.json").json
    assert served["openapi"].startswith("3.") and "/compute/v2.1/servers" in served["paths"]
    body = served["paths"]["/compute/v2.1/servers"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["server"]["required"] == ["name", "imageRef", "flavorRef"]


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
    """No 5xx, and an error body in the shape of the API the path belongs to."""
    assert response.status_int < 500, f"{label} -> {response.status_int}: {response.text[:300]}"
    if response.status_int >= 400 and response.body:
        document = response.json
        shape = api_of(case.formatted_path)
        if shape == "identity":
            assert set(document["error"]) == {"code", "title", "message"}
        elif shape == "network":
            assert "message" in document["NeutronError"]
        elif shape == "compute":
            (inner,) = document.values()
            assert inner["code"] == response.status_int
        else:
            assert document["code"] == response.status_int
