"""Input limits every request meets (fabric.api.input_limits): oversized and deeply nested
bodies, NUL and control characters; each refused with its 4xx naming the problem, nothing written."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.db.models import Flavor, Project

C = "/compute/v2.1"


def admin_h(api):
    return {"X-Auth-Token": api.admin.token, "Content-Type": "application/json"}


def flavor_count(api):
    with api.db.begin() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Flavor))


def test_a_body_over_the_limit_is_413_and_is_not_read(api):
    limit = api.settings.api.max_request_body
    body = b'{"flavor": {"name": "big", "ram": 1, "vcpus": 1, "disk": 1, "description": "' + b"x" * limit + b'"}}'
    before = flavor_count(api)
    resp = api.app.post(f"{C}/flavors", body, headers=admin_h(api), status=413)
    assert f"larger than the {limit} bytes" in resp.json["overLimit"]["message"]
    assert flavor_count(api) == before


def test_deep_nesting_is_400_not_a_recursion_error(api):
    for depth in (40, 20_000):
        body = ("[" * depth + "]" * depth).encode()
        resp = api.app.post(f"{C}/flavors", body, headers=admin_h(api), status=400)
        assert "nests deeper than 32 levels" in resp.json["badRequest"]["message"]


def test_nul_and_control_characters_are_refused_naming_where(api):
    h = admin_h(api)
    before = flavor_count(api)
    resp = api.app.post_json(f"{C}/flavors", {"flavor": {"name": "a\x00b", "ram": 1, "vcpus": 1, "disk": 1}},
                             headers=h, status=400)
    assert "'flavor.name' holds" in resp.json["badRequest"]["message"]
    resp = api.app.post_json(f"{C}/flavors", {"flavor": {"name": "tab\there", "ram": 1, "vcpus": 1, "disk": 1}},
                             headers=h, status=400)
    assert "'flavor.name' holds a control character" in resp.json["badRequest"]["message"]
    assert flavor_count(api) == before
    resp = api.app.post_json("/v3/projects", {"project": {"name": "p", "description": "line\x00"}}, headers=h,
                             status=400)
    assert "'project.description' holds a control character" in resp.json["error"]["message"]  # Keystone's error format
    with api.db.begin() as session:
        assert session.scalar(sa.select(Project).where(Project.name == "p")) is None
    # NUL anywhere else, e.g. in a metadata value (PostgreSQL would fail the statement).
    resp = api.app.post_json(f"{C}/flavors", {"flavor": {"name": "ok", "ram": 1, "vcpus": 1, "disk": 1,
                                                         "id": "a\x00"}}, headers=h, status=400)
    assert "'flavor.id' holds a NUL" in resp.json["badRequest"]["message"]
    resp = api.app.get(f"{C}/servers?name=a%00b", headers=h, status=400)
    assert "query parameter 'name' holds a NUL" in resp.json["badRequest"]["message"]
