"""Creates other than a server's whose COMMIT loses the database (fabric.api.in_doubt.creating).

Each create's commit is made to raise a lost connection after the database wrote it, or
without writing it: the answer is the truth either way. Written, the create is answered as
done, once, with the one row; not written, 503 with nothing left behind. (Without this, a 503
for a create that was written invites the client to send it again and make a second one.)
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric import servicegroup
from fabric.db.models import (
    Flavor,
    Image,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    ServerGroup,
    Subnet,
    SubnetPool,
    Volume,
)
from fabric.network import secgroups_db
from fabric.volume.rpcapi import BINARY, TOPIC
from tests.unit.api.test_create_in_doubt import FlakyDatabase

N, IMG, V, C = "/networking/v2.0", "/image/v2", "/volume/v3", "/compute/v2.1"


def _network(api, member) -> str:
    return api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers,
                             status=201).json["network"]["id"]


def _group(api, member) -> str:
    return api.app.post_json(f"{N}/security-groups", {"security_group": {"name": "g"}}, headers=member.headers,
                             status=201).json["security_group"]["id"]


def _volume_host(api) -> None:
    servicegroup.register(api.db, host="vol1", binary=BINARY, topic=TOPIC, version="1")


#: Per create: its table, its model, whatever must exist first, its request, and the answer's
#: status and the id in it.
CREATES = {
    "network": ("networks", Network, None,
                lambda api, m, _: api.app.post_json(f"{N}/networks", {"network": {"name": "n"}},
                                                    headers=m.headers, status="*"),
                201, lambda body: body["network"]["id"]),
    "subnet": ("subnets", Subnet, _network,
               lambda api, m, net: api.app.post_json(
                   f"{N}/subnets", {"subnet": {"network_id": net, "cidr": "10.9.0.0/24", "ip_version": 4}},
                   headers=m.headers, status="*"),
               201, lambda body: body["subnet"]["id"]),
    "router": ("routers", Router, None,
               lambda api, m, _: api.app.post_json(f"{N}/routers", {"router": {"name": "r"}},
                                                   headers=m.headers, status="*"),
               201, lambda body: body["router"]["id"]),
    "subnet pool": ("subnet_pools", SubnetPool, None,
                    lambda api, m, _: api.app.post_json(
                        f"{N}/subnetpools", {"subnetpool": {"name": "p", "prefixes": ["10.64.0.0/16"]}},
                        headers=m.headers, status="*"),
                    201, lambda body: body["subnetpool"]["id"]),
    "image": ("images", Image, None,
              lambda api, m, _: api.app.post_json(f"{IMG}/images", {"name": "i", "disk_format": "raw",
                                                                    "container_format": "bare"},
                                                  headers=m.headers, status="*"),
              201, lambda body: body["id"]),
    "port": ("ports", Port, _network,
             lambda api, m, net: api.app.post_json(f"{N}/ports", {"port": {"network_id": net}}, headers=m.headers,
                                                   status="*"),
             201, lambda body: body["port"]["id"]),
    # The project's default group made first: its create is a transaction of its own.
    "security group": ("security_groups", SecurityGroup,
                       lambda api, m: secgroups_db.ensure_default_group(api.db, m.project_id),
                       lambda api, m, _: api.app.post_json(f"{N}/security-groups", {"security_group": {"name": "s"}},
                                                           headers=m.headers, status="*"),
                       201, lambda body: body["security_group"]["id"]),
    "security group rule": ("security_group_rules", SecurityGroupRule, _group,
                            lambda api, m, group: api.app.post_json(
                                f"{N}/security-group-rules", {"security_group_rule": {
                                    "security_group_id": group, "direction": "ingress", "protocol": "tcp",
                                    "port_range_min": 22, "port_range_max": 22}},
                                headers=m.headers, status="*"),
                            201, lambda body: body["security_group_rule"]["id"]),
    "server group": ("server_groups", ServerGroup, None,
                     lambda api, m, _: api.app.post_json(f"{C}/os-server-groups", {"server_group": {
                         "name": "sg", "policies": ["anti-affinity"]}}, headers=m.headers, status="*"),
                     200, lambda body: body["server_group"]["id"]),
    "flavor": ("flavors", Flavor, None,
               lambda api, m, _: api.app.post_json(f"{C}/flavors", {"flavor": {
                   "name": f"f-{m.project_id}", "ram": 64, "vcpus": 1, "disk": 1}},
                   headers={"X-Auth-Token": api.admin.token}, status="*"),
               200, lambda body: body["flavor"]["id"]),
    "volume": ("volumes", Volume, lambda api, m: _volume_host(api),
               lambda api, m, _: api.app.post_json(f"{V}/volumes", {"volume": {"size": 1}}, headers=m.headers,
                                                   status="*"),
               202, lambda body: body["volume"]["id"]),
}


def _rows(api, model, project_id: str) -> list[str]:
    """The ids of ``model``'s rows of ``project_id`` (flavors: named after it), but for the
    security rules every project's default group is made with."""
    owner = {Image: Image.owner, Flavor: Flavor.name}.get(model, getattr(model, "project_id", None))
    query = sa.select(model.id).where(owner == (f"f-{project_id}" if model is Flavor else project_id))
    if model is SecurityGroupRule:
        query = query.where(SecurityGroupRule.port_range_min == 22)
    elif model is SecurityGroup:
        query = query.where(SecurityGroup.name != "default")
    with api.db.begin() as session:
        return list(session.scalars(query))


def _create_losing_its_commit(api, kind: str, written: bool):
    """Send ``kind``'s create with its COMMIT losing the connection (after writing, or without):
    (its answer, the member who sent it)."""
    table, _, first, send, _, _ = CREATES[kind]
    member = api.make_member()
    made_first = first(api, member) if first else None
    flaky = FlakyDatabase(api.db.engine, commit_then_lose=written, table=table)
    answer = send(api, member, made_first)
    assert flaky.lost_commits == 1
    return answer, member


@pytest.mark.parametrize("kind", sorted(CREATES))
def test_a_create_written_before_the_connection_went_is_answered_as_done_once(api, kind):
    _, model, _, _, status, ident = CREATES[kind]
    answer, member = _create_losing_its_commit(api, kind, written=True)
    assert answer.status_int == status, answer.text
    assert _rows(api, model, member.project_id) == [ident(answer.json)]


@pytest.mark.parametrize("kind", sorted(CREATES))
def test_a_create_lost_unwritten_is_answered_503_and_leaves_nothing(api, kind):
    answer, member = _create_losing_its_commit(api, kind, written=False)
    assert answer.status_int == 503 and answer.headers["Retry-After"], answer.text
    assert _rows(api, CREATES[kind][1], member.project_id) == []
