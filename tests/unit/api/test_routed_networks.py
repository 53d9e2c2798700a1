"""Routed (Romana L3) networks through the Network API: a project member creates one on a
segment of its own tenant (numbered by IPAM's topology, answered in-process here as the
ipam worker answers it), and deleting the last network on a segment frees it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric.db.models import Network, Segment, Tenant
from fabric.ipam.topology import Topology

N = "/networking/v2.0"
ROUTED = {"provider:network_type": "routed"}


@pytest.fixture
def layout(api):
    """The default datacenter: 10.0.0.0/8 as 8 host, 4 tenant, 1 segment and 11 endpoint bits (two
    segments per tenant, so exhaustion is reachable)."""
    Topology(api.db).configure_datacenter("default", "10.0.0.0/8", 8, 4, 1, 11)
    return api


def create(api, member, name: str, status: int = 201, **extra):
    body = {"network": {"name": name, **ROUTED, **extra}}
    return api.app.post_json(f"{N}/networks", body, headers=member.headers, status=status)


def segments(api) -> list[tuple[str, str, int]]:
    """(project id, name, number) of every segment."""
    with api.db.begin() as session:
        return sorted(session.execute(sa.select(Tenant.project_id, Segment.name, Segment.number)
                                      .join(Tenant, Tenant.id == Segment.tenant_id)).all())


def network_rows(api) -> list[tuple[str, int | None]]:
    with api.db.begin() as session:
        return sorted(session.execute(sa.select(Network.name, Network.segment_id)).all())


def test_a_member_creates_a_routed_network_on_a_segment_of_its_own(layout):
    api = layout
    alice, bob = api.make_member(), api.make_member()
    web = create(api, alice, "web").json["network"]
    assert web["project_id"] == alice.project_id and web["mtu"] == 1500
    admin_view = api.app.get(f"{N}/networks/{web['id']}", headers={"X-Auth-Token": api.admin.token}).json
    assert (admin_view["network"]["provider:network_type"], admin_view["network"]["provider:segmentation_id"]) == \
        ("routed", None)
    db_ = create(api, alice, "db").json["network"]
    bobs = create(api, bob, "web").json["network"]
    assert segments(api) == sorted([(alice.project_id, "web", 0), (alice.project_id, "db", 1),
                                    (bob.project_id, "web", 0)])
    with api.db.begin() as session:
        tenant_of = {n.id: session.get(Tenant, session.get(Segment, n.segment_id).tenant_id).project_id
                     for n in session.scalars(sa.select(Network))}
    assert tenant_of == {web["id"]: alice.project_id, db_["id"]: alice.project_id, bobs["id"]: bob.project_id}
    # A host sets a routed network up when it plugs a guest on it (from the database): no fanout.
    assert api.recorder.named("network_created") == []
    # A network without a name gets a segment named after its id.
    unnamed = create(api, bob, "").json["network"]
    assert (bob.project_id, unnamed["id"], 1) in segments(api)


def test_networks_of_one_name_share_its_segment_and_the_last_one_frees_it(layout):
    api = layout
    member = api.make_member()
    first = create(api, member, "web").json["network"]
    second = create(api, member, "web").json["network"]
    rows = dict(network_rows(api))
    assert len(set(r for _, r in network_rows(api))) == 1 and rows["web"] is not None
    assert segments(api) == [(member.project_id, "web", 0)]

    api.app.delete(f"{N}/networks/{first['id']}", headers=member.headers, status=204)
    assert segments(api) == [(member.project_id, "web", 0)]  # still used by the second
    api.app.delete(f"{N}/networks/{second['id']}", headers=member.headers, status=204)
    assert segments(api) == []
    assert [kw["network_id"] for kw in api.recorder.named("network_deleted")] == [first["id"], second["id"]]
    # The freed number is taken again.
    create(api, member, "db")
    assert segments(api) == [(member.project_id, "db", 0)]


@pytest.mark.parametrize("extra, status, named", [
    ({"provider:segmentation_id": 7}, 403, "provider:*"),
    ({"provider:physical_network": "br0"}, 403, "provider:*"),
    ({"shared": True}, 403, "shared"),
    ({"project_id": "someone-else"}, 403, "someone-else"),
    ({"name": "x" * 65}, 400, "'" + "x" * 65 + "'"),
])
def test_what_a_member_may_not_ask_for_is_refused_and_nothing_is_written(layout, extra, status, named):
    api = layout
    member = api.make_member()
    body = {"network": {"name": "web", **ROUTED, **extra}}
    resp = api.app.post_json(f"{N}/networks", body, headers=member.headers, status=status)
    assert named in resp.json["NeutronError"]["message"]
    assert network_rows(api) == [] and segments(api) == []


def test_an_admin_routed_network_takes_no_segmentation_id(layout):
    api = layout
    body = {"network": {"name": "web", **ROUTED, "provider:segmentation_id": 7}}
    resp = api.app.post_json(f"{N}/networks", body, headers={"X-Auth-Token": api.admin.token}, status=400)
    assert "segmentation_id is not used by routed networks" in resp.json["NeutronError"]["message"]
    assert network_rows(api) == [] and segments(api) == []


def test_exhausted_segments_are_409_and_nothing_is_written(layout):
    api = layout
    member = api.make_member()
    create(api, member, "a")
    create(api, member, "b")
    resp = create(api, member, "c", status=409)
    assert "segment" in resp.json["NeutronError"]["message"]
    assert [name for name, _ in network_rows(api)] == ["a", "b"]
    assert [name for _, name, _ in segments(api)] == ["a", "b"]


def test_a_cloud_without_a_routed_layout_says_so(api):
    member = api.make_member()
    resp = create(api, member, "web", status=409)
    assert "address layout" in resp.json["NeutronError"]["message"]
    assert network_rows(api) == []
