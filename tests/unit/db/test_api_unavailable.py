"""The API answers 503 with Retry-After, in each API's error shape, while its database
cannot be reached; other database failures stay 500 (fabric.api.errors)."""

from __future__ import annotations

import pytest
import webtest

from fabric.api.app import build_app
from fabric.api.errors import RETRY_AFTER_SECONDS
from fabric.db import Database
from tests.fixtures.recording_clients import RecordingClients

#: Nothing listens on loopback port 1: every connection is refused at once.
UNREACHABLE = "postgresql://fabric@127.0.0.1:1/fabric"

TOKEN = {"X-Auth-Token": "a-token-the-database-would-check"}


@pytest.fixture
def app_over(api_settings):
    made: list[Database] = []

    def build(url: str) -> webtest.TestApp:
        db = Database(url, connect_timeout=2)
        made.append(db)
        return webtest.TestApp(build_app(api_settings, db, RecordingClients().clients))

    yield build
    for db in made:
        db.dispose()


@pytest.mark.parametrize(("method", "path", "body", "key"), [
    ("POST", "/compute/v2.1/servers", {"server": {"name": "vm", "flavorRef": "f", "imageRef": "i"}},
     "serviceUnavailable"),
    ("GET", "/compute/v2.1/servers/detail", None, "serviceUnavailable"),
    ("GET", "/networking/v2.0/networks", None, "NeutronError"),
    ("GET", "/image/v2/images", None, "message"),
    ("GET", "/fabric/v1/services", None, "message"),
])
def test_requests_needing_an_unreachable_database_are_503_with_retry_after(app_over, method, path, body, key):
    app = app_over(UNREACHABLE)
    resp = app.request(path, method=method, headers=TOKEN, json=body, expect_errors=True) if body else \
        app.request(path, method=method, headers=TOKEN, expect_errors=True)
    assert resp.status_int == 503, resp.text
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert key in resp.json
    assert "database is unreachable" in resp.text and "127.0.0.1" in resp.text
    # The request id still comes back, so the client can quote it.
    assert resp.headers["x-openstack-request-id"].startswith("req-")


def test_logging_in_while_the_database_is_unreachable_is_503_in_identity_shape(app_over):
    app = app_over(UNREACHABLE)
    resp = app.post_json("/v3/auth/tokens", {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "admin", "domain": {"id": "default"}, "password": "pw"}}}}}, status=503)
    assert resp.json["error"]["code"] == 503 and resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)


def test_what_needs_no_database_still_answers(app_over):
    assert app_over(UNREACHABLE).get("/compute/v2.1", status=200).json["version"]["id"] == "v2.1"


def test_a_database_error_that_is_no_outage_stays_500(app_over, tmp_path):
    # A reachable database without fabric's tables: "no such table" is a bug or a
    # missed migration, not something a retry cures; no Retry-After.
    resp = app_over(f"sqlite:///{tmp_path / 'empty.sqlite'}").get(
        "/compute/v2.1/servers", headers=TOKEN, status=500)
    assert "Retry-After" not in resp.headers and "computeFault" in resp.json
