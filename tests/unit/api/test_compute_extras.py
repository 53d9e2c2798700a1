"""Compute microversions 2.19 and 2.26 (server description and tags), the create document,
diagnostics, host aggregates, os-hosts and hypervisor uptime, over the API's unit harness."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric.db.models import Aggregate, ComputeNode, Instance, InstanceTag, Service
from fabric.db.types import utcnow
from tests.unit.api.test_compute import admin_h, boot, make_flavor, make_image, place

C = "/compute/v2.1"


def at(headers: dict, version: str) -> dict:
    return dict(headers, **{"OpenStack-API-Version": f"compute {version}"})


@pytest.fixture
def server(api):
    """(member, server id) of a member's server placed on host1."""
    member = api.make_member()
    server_id = boot(api, member, make_flavor(api), make_image(api, member.project_id)).json["server"]["id"]
    place(api, server_id)
    return member, server_id


def test_the_create_answer_has_nova_2_1_fields_only(api):
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    doc = boot(api, member, flavor, image, min_count=2, max_count=2).json
    assert set(doc) == {"server"}
    assert set(doc["server"]) == {"id", "links", "OS-DCF:diskConfig", "security_groups", "adminPass"}
    asked = boot(api, member, flavor, image, min_count=2, max_count=2, return_reservation_id=True).json
    assert set(asked) == {"reservation_id"} and asked["reservation_id"].startswith("r-")


def test_documents_follow_the_microversion(api, server):
    member, server_id = server
    show = f"{C}/servers/{server_id}"
    plain = api.app.get(show, headers=member.headers).json["server"]
    assert not {"locked", "locked_reason", "description", "tags"} & set(plain)
    newest = api.app.get(show, headers=at(member.headers, "2.26")).json["server"]
    assert (newest["locked"], newest["description"], newest["tags"]) == (False, None, [])
    assert "locked_reason" not in newest
    listed = api.app.get(f"{C}/servers/detail", headers=at(member.headers, "2.26")).json["servers"]
    assert listed == [newest]


def test_description_needs_2_19_and_is_set_shown_and_cleared(api, server):
    member, server_id = server
    show = f"{C}/servers/{server_id}"
    refused = api.app.put_json(show, {"server": {"description": "web"}}, headers=member.headers, status=400)
    assert "needs microversion 2.19" in refused.json["badRequest"]["message"]
    doc = api.app.put_json(show, {"server": {"description": "web tier"}}, headers=at(member.headers, "2.19")).json
    assert doc["server"]["description"] == "web tier"
    long = api.app.put_json(show, {"server": {"description": "d" * 256}}, headers=at(member.headers, "2.19"),
                            status=400)
    assert "server.description" in long.json["badRequest"]["message"]
    api.app.put_json(show, {"server": {"description": None}}, headers=at(member.headers, "2.19"))
    with api.db.begin() as session:
        assert session.get(Instance, server_id).description is None


def test_description_on_create(api):
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    body = {"server": {"name": "vm", "flavorRef": flavor["id"], "imageRef": image, "description": "first"}}
    api.app.post_json(f"{C}/servers", body, headers=member.headers, status=400)
    made = api.app.post_json(f"{C}/servers", body, headers=at(member.headers, "2.19"), status=202).json["server"]
    with api.db.begin() as session:
        assert session.get(Instance, made["id"]).description == "first"


def test_tags_add_check_replace_delete_and_limits(api, server):
    member, server_id = server
    h = at(member.headers, "2.26")
    tags = f"{C}/servers/{server_id}/tags"
    api.app.get(tags, headers=member.headers, status=404)  # not there below 2.26
    assert api.app.put(f"{tags}/web", headers=h, status=201).headers["Location"].endswith(f"{server_id}/tags/web")
    api.app.put(f"{tags}/web", headers=h, status=204)
    api.app.get(f"{tags}/web", headers=h, status=204)
    missing = api.app.get(f"{tags}/db", headers=h, status=404)
    assert "'db'" in missing.json["itemNotFound"]["message"]
    assert api.app.put_json(tags, {"tags": ["b", "a", "b"]}, headers=h).json == {"tags": ["a", "b"]}
    assert api.app.get(tags, headers=h).json == {"tags": ["a", "b"]}
    assert api.app.get(f"{C}/servers/{server_id}", headers=h).json["server"]["tags"] == ["a", "b"]
    for bad, named in (("x,y", "'x,y'"), ("t" * 61, "1 to 60"), ("", "1 to 60")):
        resp = api.app.put_json(tags, {"tags": [bad]}, headers=h, status=400)
        assert named in resp.json["badRequest"]["message"]
    too_many = api.app.put_json(tags, {"tags": [f"t{i}" for i in range(51)]}, headers=h, status=400)
    assert "51 tags; the limit is 50" in too_many.json["badRequest"]["message"]
    api.app.put_json(tags, {"tags": [f"t{i}" for i in range(50)]}, headers=h)
    full = api.app.put(f"{tags}/one-more", headers=h, status=400)
    assert "the limit is 50" in full.json["badRequest"]["message"]
    api.app.delete(f"{tags}/t0", headers=h, status=204)
    api.app.delete(f"{tags}/t0", headers=h, status=404)
    api.app.delete(tags, headers=h, status=204)
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(InstanceTag)) == 0
    # Another project's member finds no server.
    other = api.make_member()
    api.app.put(f"{tags}/mine", headers=at(other.headers, "2.26"), status=404)


def test_listing_filters_by_tags(api):
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    ids = [boot(api, member, flavor, image).json["server"]["id"] for _ in range(3)]
    h = at(member.headers, "2.26")
    for server_id, tags in zip(ids, (["a", "b"], ["a"], []), strict=True):
        api.app.put_json(f"{C}/servers/{server_id}/tags", {"tags": tags}, headers=h)

    def listed(query: str, headers=h) -> set[str]:
        return {s["id"] for s in api.app.get(f"{C}/servers?{query}", headers=headers).json["servers"]}

    assert listed("tags=a,b") == {ids[0]}
    assert listed("tags-any=a,b") == {ids[0], ids[1]}
    assert listed("not-tags=a,b") == {ids[1], ids[2]}
    assert listed("not-tags-any=a") == {ids[2]}
    assert listed("tags=a", member.headers) == set(ids)  # ignored below 2.26
    bad = api.app.get(f"{C}/servers?tags=,", headers=h, status=400)
    assert "tags=','" in bad.json["badRequest"]["message"]


def test_diagnostics_are_asked_of_the_host_by_admins_only(api, server):
    member, server_id = server
    api.recorder.answers["get_diagnostics"] = lambda kwargs: {"memory": 524288, "cpu0_time": 5, "vnet0_rx": 7,
                                                              "vnet0_tx": 9, "vda_read_req": 2, "vda_read": 4096}
    url = f"{C}/servers/{server_id}/diagnostics"
    refused = api.app.get(url, headers=member.headers, status=403)
    assert "reading server diagnostics requires the admin role" in refused.json["forbidden"]["message"]
    found = api.app.get(url, headers=admin_h(api)).json
    # The driver's counters as they came (Nova before 2.48), and 2.48's fields made of them.
    assert (found["memory"], found["cpu0_time"], found["vnet0_rx"]) == (524288, 5, 7)
    assert (found["state"], found["num_cpus"], found["num_nics"], found["num_disks"]) == ("running", 1, 1, 1)
    assert found["memory_details"] == {"maximum": 512, "used": 512}
    assert found["cpu_details"] == [{"id": 0, "time": 5, "utilisation": None}]
    assert (found["nic_details"][0]["rx_octets"], found["nic_details"][0]["tx_octets"]) == (7, 9)
    assert (found["disk_details"][0]["read_bytes"], found["disk_details"][0]["read_requests"]) == (4096, 2)
    assert api.recorder.named("get_diagnostics")[-1]["instance_id"] == server_id
    place(api, server_id, host=None, vm_state="building")
    busy = api.app.get(url, headers=admin_h(api), status=409)
    assert "not on a host yet" in busy.json["conflictingRequest"]["message"]


def _compute_host(api, host: str, zone: str = "nova") -> None:
    with api.db.begin() as session:
        session.add(Service(host=host, binary="fabric-compute", topic="compute", last_heartbeat=utcnow()))
        session.add(ComputeNode(host=host, availability_zone=zone, vcpus=4, memory_mb=2048, disk_gb=20))


def test_aggregates_zones_hosts_and_metadata(api):
    _compute_host(api, "hA")
    _compute_host(api, "hB")
    h = admin_h(api)
    aggregates = f"{C}/os-aggregates"
    member = api.make_member()
    api.app.get(aggregates, headers=member.headers, status=403)
    made = api.app.post_json(aggregates, {"aggregate": {"name": "rack1", "availability_zone": "az1"}},
                             headers=h).json["aggregate"]
    assert (made["name"], made["availability_zone"], made["hosts"], made["metadata"]) == (
        "rack1", "az1", [], {"availability_zone": "az1"})
    dup = api.app.post_json(aggregates, {"aggregate": {"name": "rack1"}}, headers=h, status=409)
    assert "'rack1'" in dup.json["conflictingRequest"]["message"]
    action = f"{aggregates}/{made['id']}/action"
    added = api.app.post_json(action, {"add_host": {"host": "hA"}}, headers=h).json["aggregate"]
    assert added["hosts"] == ["hA"]
    api.app.post_json(action, {"add_host": {"host": "hA"}}, headers=h, status=409)
    nohost = api.app.post_json(action, {"add_host": {"host": "nowhere"}}, headers=h, status=404)
    assert "nowhere" in nohost.json["itemNotFound"]["message"]
    meta = api.app.post_json(action, {"set_metadata": {"metadata": {"ssd": "true", "gone": None}}},
                             headers=h).json["aggregate"]
    assert meta["metadata"] == {"availability_zone": "az1", "ssd": "true"}
    # A second aggregate may not put hA into another zone.
    other = api.app.post_json(aggregates, {"aggregate": {"name": "rack2", "availability_zone": "az2"}},
                              headers=h).json["aggregate"]
    clash = api.app.post_json(f"{aggregates}/{other['id']}/action", {"add_host": {"host": "hA"}}, headers=h,
                              status=409)
    assert "'az1'" in clash.json["conflictingRequest"]["message"]
    # Given hA's zone, rack2 may hold hA too; a zone change that would split hA is refused.
    api.app.put_json(f"{aggregates}/{other['id']}", {"aggregate": {"availability_zone": "az1"}}, headers=h)
    api.app.post_json(f"{aggregates}/{other['id']}/action", {"add_host": {"host": "hA"}}, headers=h)
    split = api.app.put_json(f"{aggregates}/{other['id']}", {"aggregate": {"availability_zone": "az2"}},
                             headers=h, status=409)
    assert "hA is in 'az1'" in split.json["conflictingRequest"]["message"]
    api.app.post_json(f"{aggregates}/{other['id']}/action", {"remove_host": {"host": "hA"}}, headers=h)
    internal = api.app.put_json(f"{aggregates}/{other['id']}", {"aggregate": {"availability_zone": "internal"}},
                                headers=h, status=400)
    assert "'internal'" in internal.json["badRequest"]["message"]
    # Zones: hA in az1 by its aggregate, hB in its node's zone.
    # A server may be asked into az1 now; an unknown zone is refused at once, naming it.
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    boot(api, member, flavor, image, availability_zone="az1")
    unknown = boot(api, member, flavor, image, status=400, availability_zone="az-none")
    assert "'az-none' is not a zone of any compute host; known: az1, nova" in unknown.json["badRequest"]["message"]
    zones = {z["zoneName"] for z in api.app.get(f"{C}/os-availability-zone", headers=h).json["availabilityZoneInfo"]}
    assert {"az1", "nova"} <= zones and "az2" not in zones  # rack2 has no host
    hosts = {d["host_name"]: d["zone"] for d in api.app.get(f"{C}/os-hosts", headers=h).json["hosts"]}
    assert (hosts["hA"], hosts["hB"]) == ("az1", "nova")
    renamed = api.app.put_json(f"{aggregates}/{made['id']}", {"aggregate": {"name": "rack-one"}},
                               headers=h).json["aggregate"]
    assert renamed["name"] == "rack-one" and renamed["availability_zone"] == "az1"
    busy = api.app.delete(f"{aggregates}/{made['id']}", headers=h, status=400)
    assert "hA" in busy.json["badRequest"]["message"]
    bad = api.app.post_json(action, {"explode": {}}, headers=h, status=400)
    assert "'explode'" in bad.json["badRequest"]["message"]
    api.app.post_json(action, {"remove_host": {"host": "hA"}}, headers=h)
    api.app.post_json(action, {"remove_host": {"host": "hA"}}, headers=h, status=404)
    api.app.delete(f"{aggregates}/{made['id']}", headers=h, status=200)
    api.app.get(f"{aggregates}/{made['id']}", headers=h, status=404)
    with api.db.begin() as session:
        assert session.scalars(sa.select(Aggregate.name)).all() == ["rack2"]


def test_os_hosts_show_and_hypervisor_uptime(api, server):
    _compute_host(api, "host1")
    h = admin_h(api)
    shown = api.app.get(f"{C}/os-hosts/host1", headers=h).json["host"]
    assert [r["resource"]["project"] for r in shown[:3]] == ["(total)", "(used_now)", "(used_max)"]
    assert shown[0]["resource"]["memory_mb"] == 2048 and shown[2]["resource"]["memory_mb"] == 512
    api.app.get(f"{C}/os-hosts/nowhere", headers=h, status=404)
    api.app.get(f"{C}/os-hosts", headers=server[0].headers, status=403)
    [node] = api.app.get(f"{C}/os-hypervisors", headers=h).json["hypervisors"]
    resp = api.app.get(f"{C}/os-hypervisors/{node['id']}/uptime", headers=h, status=501)
    assert "host1" in resp.json["notImplemented"]["message"]


def test_soft_group_policies_need_2_15(api):
    member = api.make_member()
    groups = f"{C}/os-server-groups"
    body = {"server_group": {"name": "g", "policies": ["soft-affinity"]}}
    refused = api.app.post_json(groups, body, headers=member.headers, status=400)
    assert "'soft-affinity' needs microversion 2.15" in refused.json["badRequest"]["message"]
    made = api.app.post_json(groups, body, headers=at(member.headers, "2.15")).json["server_group"]
    assert made["policies"] == ["soft-affinity"]
