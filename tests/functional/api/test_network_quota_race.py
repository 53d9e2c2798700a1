"""Concurrent network creates beyond a project's quota, on PostgreSQL and MariaDB: exactly the
quota succeeds, every other request gets Neutron's 409 OverQuota, and usage matches the rows;
concurrent carvings from one subnet pool never overlap."""

from __future__ import annotations

import ipaddress
import threading

import pytest
import sqlalchemy as sa

from fabric.api import quota
from fabric.db.models import Port, Router, Subnet

pytestmark = pytest.mark.functional

N = "/networking/v2.0"
QUOTA = 3
CALLERS = 10


def _race(api, member, path: str, body: dict) -> list[tuple[int, dict]]:
    """``CALLERS`` POSTs of ``body`` to ``path`` released at once; (status, body) of each."""
    start = threading.Barrier(CALLERS)
    results: list[tuple[int, dict]] = []

    def create() -> None:
        start.wait()
        resp = api.app.post_json(path, body, headers=member.headers, expect_errors=True)
        results.append((resp.status_int, resp.json))

    threads = [threading.Thread(target=create) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.parametrize("resource, path, model", [("router", "routers", Router), ("port", "ports", Port)])
def test_concurrent_creates_never_exceed_the_network_quota(server_api, resource, path, model):
    api = server_api
    member = api.make_member()
    admin = {"X-Auth-Token": api.admin.token}
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.5.0.0/24"}},
                      headers=member.headers)
    api.app.put_json(f"{N}/quotas/{member.project_id}", {"quota": {resource: QUOTA}}, headers=admin)
    body = {"router": {"name": "r"}} if resource == "router" else {"port": {"network_id": net["id"]}}

    results = _race(api, member, f"{N}/{path}", body)

    assert sorted(status for status, _ in results) == [201] * QUOTA + [409] * (CALLERS - QUOTA), results
    for status, doc in results:
        if status == 409:
            assert doc["NeutronError"]["type"] == "OverQuota"
            assert doc["NeutronError"]["message"].startswith(f"Quota exceeded for {resource}")
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(model)
                              .where(model.project_id == member.project_id)) == QUOTA
        assert quota.usages(session, member.project_id)[resource] == QUOTA
    if resource == "port":  # each created port holds its own address
        addresses = [p["fixed_ips"][0]["ip_address"] for p in
                     api.app.get(f"{N}/ports?network_id={net['id']}", headers=member.headers).json["ports"]]
        assert len(set(addresses)) == QUOTA


def test_concurrent_carvings_from_one_pool_never_overlap(server_api):
    api = server_api
    member = api.make_member()
    pool = api.app.post_json(f"{N}/subnetpools", {"subnetpool": {"name": "p", "prefixes": ["10.70.0.0/16"],
                                                                 "default_prefixlen": 24}},
                             headers=member.headers).json["subnetpool"]
    nets = [api.app.post_json(f"{N}/networks", {"network": {"name": f"n{i}"}}, headers=member.headers)
            .json["network"]["id"] for i in range(CALLERS)]
    start = threading.Barrier(CALLERS)
    statuses: list[int] = []

    def carve(network_id: str) -> None:
        start.wait()
        resp = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": network_id, "subnetpool_id": pool["id"]}},
                                 headers=member.headers, expect_errors=True)
        statuses.append(resp.status_int)

    threads = [threading.Thread(target=carve, args=(n,)) for n in nets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with api.db.begin() as session:
        cidrs = sorted(session.scalars(sa.select(Subnet.cidr).where(Subnet.subnetpool_id == pool["id"])))
    assert statuses.count(201) == len(cidrs) >= 1
    assert set(statuses) <= {201, 409}, statuses  # a carver that kept losing is told to try again
    nets_ = [ipaddress.ip_network(c) for c in cidrs]
    assert not [(a, b) for i, a in enumerate(nets_) for b in nets_[i + 1:] if a.overlaps(b)], cidrs
