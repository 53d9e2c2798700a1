"""The legacy Compute v2.0 endpoint (Nova's "v2.0 compatible" API): listed before v2.1, and
v2.1 served under /compute/v2 without microversions."""

from __future__ import annotations

from tests.unit.api.test_compute import C, boot, make_flavor, make_image


def test_v2_0_is_listed_first_and_its_document_answers_at_its_link(api):
    versions = api.app.get("/compute").json["versions"]
    assert [v["id"] for v in versions] == ["v2.0", "v2.1"]
    legacy = versions[0]
    assert (legacy["status"], legacy["version"], legacy["min_version"]) == ("SUPPORTED", "", "")
    link = [link["href"] for link in legacy["links"] if link["rel"] == "self"]
    assert link and link[0].endswith("/compute/v2/")
    shown = api.app.get("/compute/v2/").json["version"]
    assert shown["links"] == legacy["links"]
    assert api.app.get(f"{C}/").json["version"]["id"] == "v2.1"


def test_v2_0_serves_v2_1_at_microversion_2_1_whatever_is_asked(api):
    member = api.make_member()
    server_id = boot(api, member, make_flavor(api), make_image(api, member.project_id)).json["server"]["id"]
    latest = dict(member.headers, **{"OpenStack-API-Version": "compute latest"})
    legacy = api.app.get(f"/compute/v2/servers/{server_id}", headers=latest)
    assert legacy.json["server"]["id"] == server_id
    assert "locked" not in legacy.json["server"]  # 2.9's field: the legacy endpoint is 2.1
    assert "locked" in api.app.get(f"{C}/servers/{server_id}", headers=latest).json["server"]
    listed = api.app.get("/compute/v2/servers", headers=member.headers).json["servers"]
    assert [s["id"] for s in listed] == [server_id]
    api.app.get(f"/compute/v2/servers/{server_id}", status=401)  # the same policy as v2.1's
    api.app.get("/compute/v2/no-such-thing", headers=member.headers, status=404)
