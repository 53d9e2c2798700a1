"""Network quotas: admins set them, creates over them are Neutron's 409 OverQuota with nothing
written, deletes give the unit back, and usage is shown."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.db.models import FloatingIp, Network, Port, Router, Subnet
from tests.unit.api.test_floating_ips import admin_h, external_network

N = "/networking/v2.0"


def set_quota(api, project_id, status=200, **limits):
    return api.app.put_json(f"{N}/quotas/{project_id}", {"quota": limits}, headers=admin_h(api), status=status)


def over_quota(resp, resource: str) -> None:
    error = resp.json["NeutronError"]
    assert error["type"] == "OverQuota"
    assert error["message"].startswith(f"Quota exceeded for {resource} in project"), error


def count(api, model) -> int:
    with api.db.begin() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


def test_each_network_resource_is_limited_and_given_back(api):
    member = api.make_member()
    shown = set_quota(api, member.project_id, network=1, subnet=1, port=1, router=1, floatingip=1).json["quota"]
    assert {k: shown[k] for k in ("network", "subnet", "port", "router", "floatingip")} == dict.fromkeys(
        ("network", "subnet", "port", "router", "floatingip"), 1)
    h = member.headers
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "a"}}, headers=h).json["network"]
    over_quota(api.app.post_json(f"{N}/networks", {"network": {"name": "b"}}, headers=h, status=409), "network")
    assert count(api, Network) == 1
    api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.1.0.0/24"}}, headers=h)
    over_quota(api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.2.0.0/24"}},
                                 headers=h, status=409), "subnet")
    assert count(api, Subnet) == 1
    port = api.app.post_json(f"{N}/ports", {"port": {"network_id": net["id"]}}, headers=h).json["port"]
    over_quota(api.app.post_json(f"{N}/ports", {"port": {"network_id": net["id"]}}, headers=h, status=409), "port")
    assert count(api, Port) == 1
    api.app.post_json(f"{N}/routers", {"router": {"name": "r"}}, headers=h)
    over_quota(api.app.post_json(f"{N}/routers", {"router": {"name": "r2"}}, headers=h, status=409), "router")
    assert count(api, Router) == 1
    ext, _ = external_network(api)
    api.app.post_json(f"{N}/floatingips", {"floatingip": {"floating_network_id": ext}}, headers=h, status=201)
    over_quota(api.app.post_json(f"{N}/floatingips", {"floatingip": {"floating_network_id": ext}}, headers=h,
                                 status=409), "floatingip")
    assert count(api, FloatingIp) == 1

    details = api.app.get(f"{N}/quotas/{member.project_id}/details", headers=h).json["quota"]
    assert {k: details[k]["used"] for k in ("network", "subnet", "port", "router", "floatingip")} == dict.fromkeys(
        ("network", "subnet", "port", "router", "floatingip"), 1)
    # A delete gives its unit back: the next create fits.
    api.app.delete(f"{N}/ports/{port['id']}", headers=h, status=204)
    api.app.post_json(f"{N}/ports", {"port": {"network_id": net["id"]}}, headers=h, status=201)
    # Deleting the network (its port first) gives back the network and its subnet.
    for p in api.app.get(f"{N}/ports?network_id={net['id']}", headers=h).json["ports"]:
        api.app.delete(f"{N}/ports/{p['id']}", headers=h, status=204)
    api.app.delete(f"{N}/networks/{net['id']}", headers=h, status=204)
    details = api.app.get(f"{N}/quotas/{member.project_id}/details", headers=h).json["quota"]
    assert (details["network"]["used"], details["subnet"]["used"], details["port"]["used"]) == (0, 0, 0)
    api.app.post_json(f"{N}/networks", {"network": {"name": "c"}}, headers=h, status=201)


def test_only_admins_set_quotas_and_bad_values_are_named(api):
    member = api.make_member()
    api.app.put_json(f"{N}/quotas/{member.project_id}", {"quota": {"network": 5}}, headers=member.headers,
                     status=403)
    for limits, named in (({"network": -2}, "network"), ({"volumes": 3}, "volumes"), ({"port": "many"}, "port")):
        resp = set_quota(api, member.project_id, 400, **limits)
        assert named in resp.json["NeutronError"]["message"], resp.json
    set_quota(api, "no-such-project", 404, network=1)
    # Defaults until set; a reset goes back to them.
    assert api.app.get(f"{N}/quotas/{member.project_id}", headers=member.headers).json["quota"]["port"] == 500
    set_quota(api, member.project_id, port=7)
    assert api.app.get(f"{N}/quotas/{member.project_id}", headers=member.headers).json["quota"]["port"] == 7
    api.app.delete(f"{N}/quotas/{member.project_id}", headers=admin_h(api), status=204)
    assert api.app.get(f"{N}/quotas/{member.project_id}", headers=member.headers).json["quota"]["port"] == 500
    other = api.make_member()
    api.app.get(f"{N}/quotas/{member.project_id}", headers=other.headers, status=403)


def test_check_limit_refuses_a_limit_below_usage_unless_forced(api):
    member = api.make_member()
    for name in ("a", "b"):
        api.app.post_json(f"{N}/networks", {"network": {"name": name}}, headers=member.headers)
    resp = set_quota(api, member.project_id, 400, network=1, check_limit=True)
    assert "network=1 is below the 2 in use" in resp.json["NeutronError"]["message"]
    assert api.app.get(f"{N}/quotas/{member.project_id}", headers=member.headers).json["quota"]["network"] == 100
    set_quota(api, member.project_id, network=1, check_limit=True, force=True)
    over_quota(api.app.post_json(f"{N}/networks", {"network": {"name": "c"}}, headers=member.headers, status=409),
               "network")
