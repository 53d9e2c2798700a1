"""Subnet pools (subnets carved from them), ``network set`` and ``subnet set``: what may change
changes, what fabric keeps fixed is refused saying why, bad values are named."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric.db.models import Subnet, SubnetPool

N = "/networking/v2.0"
POOLS = f"{N}/subnetpools"


def make_pool(api, member, status=201, **body):
    return api.app.post_json(POOLS, {"subnetpool": {"name": "pool", **body}}, headers=member.headers, status=status)


def carve(api, member, network_id, status=201, **body):
    return api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": network_id, **body}},
                             headers=member.headers, status=status)


def test_subnets_are_carved_from_a_pool_lowest_first(api):
    member = api.make_member()
    pool = make_pool(api, member, prefixes=["10.40.0.0/16"], default_prefixlen=24).json["subnetpool"]
    assert (pool["ip_version"], pool["min_prefixlen"], pool["max_prefixlen"]) == (4, 16, 32)
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    first = carve(api, member, net["id"], subnetpool_id=pool["id"]).json["subnet"]
    assert (first["cidr"], first["subnetpool_id"], first["gateway_ip"]) == ("10.40.0.0/24", pool["id"], "10.40.0.1")
    net2 = api.app.post_json(f"{N}/networks", {"network": {"name": "n2"}}, headers=member.headers).json["network"]
    second = carve(api, member, net2["id"], subnetpool_id=pool["id"], prefixlen=26).json["subnet"]
    assert second["cidr"] == "10.40.1.0/26"
    named = carve(api, member, net2["id"], subnetpool_id=pool["id"], cidr="10.40.9.0/24").json["subnet"]
    assert named["cidr"] == "10.40.9.0/24"
    with api.db.begin() as session:
        assert session.get(SubnetPool, pool["id"]).revision == 3  # one compare-and-swap per carving
    # Overlap, outside the pool, a length the pool does not allow: named, nothing written.
    for extra, status, named_value in (({"cidr": "10.40.0.128/25"}, 409, "10.40.0.128/25"),
                                       ({"cidr": "10.41.0.0/24"}, 400, "10.41.0.0/24"),
                                       ({"prefixlen": 12}, 400, "12")):
        resp = carve(api, member, net2["id"], status, subnetpool_id=pool["id"], **extra)
        assert named_value in resp.json["NeutronError"]["message"], resp.json
    carve(api, member, net2["id"], 404, subnetpool_id="no-such-pool")
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Subnet)) == 3
    assert "3 subnet(s)" in api.app.delete(f"{POOLS}/{pool['id']}", headers=member.headers,
                                           status=409).json["NeutronError"]["message"]
    # Another project does not see the pool.
    other = api.make_member()
    api.app.get(f"{POOLS}/{pool['id']}", headers=other.headers, status=404)
    assert api.app.get(POOLS, headers=other.headers).json["subnetpools"] == []


def test_a_full_pool_is_a_conflict(api):
    member = api.make_member()
    pool = make_pool(api, member, prefixes=["10.50.0.0/23"], default_prefixlen=24).json["subnetpool"]
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    carve(api, member, net["id"], subnetpool_id=pool["id"])
    net2 = api.app.post_json(f"{N}/networks", {"network": {"name": "n2"}}, headers=member.headers).json["network"]
    carve(api, member, net2["id"], subnetpool_id=pool["id"])
    resp = carve(api, member, net2["id"], 409, subnetpool_id=pool["id"], prefixlen=25)
    assert "no free /25" in resp.json["NeutronError"]["message"]


@pytest.mark.parametrize("body, named", [
    ({"prefixes": ["10.0.0.1/16"]}, "10.0.0.1/16"),
    ({"prefixes": []}, "prefixes"),
    ({"prefixes": ["10.0.0.0/16", "fd00::/48"]}, "mix IPv4 and IPv6"),
    ({"prefixes": ["10.0.0.0/16"], "default_prefixlen": 8}, "default_prefixlen 8"),
    ({"prefixes": ["10.0.0.0/16"], "min_prefixlen": 8}, "min_prefixlen 8"),
    ({"prefixes": ["10.0.0.0/16"], "max_prefixlen": 40}, "max_prefixlen 40"),
])
def test_bad_pools_are_refused_naming_the_value(api, body, named):
    member = api.make_member()
    resp = make_pool(api, member, 400, **body)
    assert named in resp.json["NeutronError"]["message"]
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SubnetPool)) == 0


def test_network_and_subnet_set(api):
    member = api.make_member()
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    shown = api.app.put_json(f"{N}/networks/{net['id']}", {"network": {"name": "renamed", "description": "d",
                                                                      "admin_state_up": False}},
                             headers=member.headers).json["network"]
    assert (shown["name"], shown["description"], shown["admin_state_up"]) == ("renamed", "d", False)
    resp = api.app.put_json(f"{N}/networks/{net['id']}", {"network": {"mtu": 9000}}, headers=member.headers,
                            status=400)
    assert "mtu" in resp.json["NeutronError"]["message"]
    other = api.make_member()
    api.app.put_json(f"{N}/networks/{net['id']}", {"network": {"name": "x"}}, headers=other.headers, status=404)

    sub = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.60.0.0/24"}},
                            headers=member.headers).json["subnet"]
    shown = api.app.put_json(f"{N}/subnets/{sub['id']}", {"subnet": {"name": "s", "description": "dd",
                                                                     "dns_nameservers": ["192.0.2.53"]}},
                             headers=member.headers).json["subnet"]
    assert (shown["name"], shown["description"], shown["dns_nameservers"]) == ("s", "dd", ["192.0.2.53"])
    assert api.app.get(f"{N}/subnets/{sub['id']}", headers=member.headers).json["subnet"]["dns_nameservers"] == \
        ["192.0.2.53"]
    resp = api.app.put_json(f"{N}/subnets/{sub['id']}", {"subnet": {"gateway_ip": "10.60.0.254"}},
                            headers=member.headers, status=409)
    assert "Gateway ip 10.60.0.254 conflicts with allocation pool 10.60.0.2-10.60.0.254" in \
        resp.json["NeutronError"]["message"]
    resp = api.app.put_json(f"{N}/subnets/{sub['id']}", {"subnet": {"allocation_pools": []}},
                            headers=member.headers, status=400)
    assert "allocation_pools cannot change" in resp.json["NeutronError"]["message"]
    # Sending the values it has already is no change (clients echo them).
    api.app.put_json(f"{N}/subnets/{sub['id']}", {"subnet": {"gateway_ip": "10.60.0.1"}}, headers=member.headers)
    resp = api.app.put_json(f"{N}/subnets/{sub['id']}", {"subnet": {"dns_nameservers": ["not-an-ip"]}},
                            headers=member.headers, status=400)
    assert "dns_nameservers" in resp.json["NeutronError"]["message"]
