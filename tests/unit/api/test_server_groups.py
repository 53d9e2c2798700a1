"""os-server-groups: create (both microversions' bodies), list, show with members, delete,
tenant isolation, quota, and the ``group`` hint that makes a server a member."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric.api.compute.quotas import FIXED_LIMITS
from fabric.db.models import Instance, ServerGroup
from tests.unit.api.test_compute import boot, make_flavor, make_image

C = "/compute/v2.1"
GROUPS = f"{C}/os-server-groups"


def create(api, member, body: dict, status: int = 200):
    return api.app.post_json(GROUPS, {"server_group": body}, headers=member.headers, status=status)


def test_a_group_made_as_the_cli_asks_is_listed_shown_and_deleted(api):
    member = api.make_member()
    # python-openstackclient on Compute 2.1 sends a one-item "policies" list.
    group = create(api, member, {"name": "apart", "policies": ["anti-affinity"]}).json["server_group"]
    assert (group["name"], group["policies"], group["policy"], group["members"]) == (
        "apart", ["anti-affinity"], "anti-affinity", [])
    assert group["project_id"] == member.project_id and group["user_id"] == member.user_id
    # Later microversions send "policy".
    together = create(api, member, {"name": "together", "policy": "affinity"}).json["server_group"]
    assert together["policies"] == ["affinity"]

    listed = api.app.get(GROUPS, headers=member.headers).json["server_groups"]
    assert [(g["id"], g["policies"]) for g in listed] == [(group["id"], ["anti-affinity"]),
                                                          (together["id"], ["affinity"])]
    assert api.app.get(f"{GROUPS}/{group['id']}", headers=member.headers).json["server_group"] == group

    api.app.delete(f"{GROUPS}/{group['id']}", headers=member.headers, status=204)
    resp = api.app.get(f"{GROUPS}/{group['id']}", headers=member.headers, status=404)
    assert group["id"] in resp.json["itemNotFound"]["message"]
    assert [g["id"] for g in api.app.get(GROUPS, headers=member.headers).json["server_groups"]] == [together["id"]]


@pytest.mark.parametrize("body, named", [
    ({"name": "g", "policies": ["soft-anti-affinity"]}, "'soft-anti-affinity'"),
    ({"name": "g", "policy": "spread"}, "'spread'"),
    ({"name": "g", "policies": ["affinity", "anti-affinity"]}, "exactly one policy"),
    ({"name": "g", "policies": ["affinity"], "policy": "anti-affinity"}, "disagree"),
    ({"name": "g"}, "needs a 'policies' list"),
    ({"name": "", "policies": ["affinity"]}, "'server_group.name'"),
    ({"policies": ["affinity"]}, "'server_group.name'"),
])
def test_a_bad_group_is_400_naming_the_value_and_nothing_is_written(api, body, named):
    member = api.make_member()
    resp = create(api, member, body, status=400)
    assert named in resp.json["badRequest"]["message"]
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ServerGroup)) == 0


def test_groups_are_the_projects_own(api):
    alice, bob = api.make_member(), api.make_member()
    group = create(api, alice, {"name": "apart", "policies": ["anti-affinity"]}).json["server_group"]
    assert api.app.get(GROUPS, headers=bob.headers).json["server_groups"] == []
    api.app.get(f"{GROUPS}/{group['id']}", headers=bob.headers, status=404)
    api.app.delete(f"{GROUPS}/{group['id']}", headers=bob.headers, status=404)
    # Bob cannot put a server into Alice's group either.
    flavor, image = make_flavor(api), make_image(api, bob.project_id)
    body = {"server": {"name": "vm", "flavorRef": flavor["id"], "imageRef": image},
            "os:scheduler_hints": {"group": group["id"]}}
    resp = api.app.post_json(f"{C}/servers", body, headers=bob.headers, status=404)
    assert group["id"] in resp.json["itemNotFound"]["message"]
    # An admin sees every project's groups when it asks for them.
    admin = {"X-Auth-Token": api.admin.token}
    assert api.app.get(GROUPS, headers=admin).json["server_groups"] == []
    assert [g["id"] for g in api.app.get(f"{GROUPS}?all_projects=true", headers=admin).json["server_groups"]] == \
        [group["id"]]


def test_the_group_hint_makes_a_member_and_deleting_the_group_keeps_the_server(api):
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    group = create(api, member, {"name": "apart", "policies": ["anti-affinity"]}).json["server_group"]
    # `openstack server create --hint group=ID` sends OS-SCH-HNT:scheduler_hints.
    server = api.app.post_json(f"{C}/servers", {
        "server": {"name": "vm", "flavorRef": flavor["id"], "imageRef": image},
        "OS-SCH-HNT:scheduler_hints": {"group": group["id"]}}, headers=member.headers, status=202).json["server"]
    other = boot(api, member, flavor, image).json["server"]
    shown = api.app.get(f"{GROUPS}/{group['id']}", headers=member.headers).json["server_group"]
    assert shown["members"] == [server["id"]]
    assert api.recorder.named("build_instances")[0]["request_spec"]["scheduler_hints"] == {"group": group["id"]}

    api.app.delete(f"{C}/servers/{server['id']}", headers=member.headers, status=204)
    assert api.app.get(f"{GROUPS}/{group['id']}", headers=member.headers).json["server_group"]["members"] == []

    with api.db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == other["id"]).values(server_group_id=group["id"]))
    api.app.delete(f"{GROUPS}/{group['id']}", headers=member.headers, status=204)
    with api.db.begin() as session:
        kept = session.get(Instance, other["id"])
        assert (kept.deleted, kept.server_group_id) == (False, None)


def test_the_server_groups_quota_is_the_one_quota_sets_show(api):
    member = api.make_member()
    limit = FIXED_LIMITS["server_groups"]
    shown = api.app.get(f"{C}/os-quota-sets/{member.project_id}", headers=member.headers).json["quota_set"]
    assert shown["server_groups"] == limit
    for n in range(limit):
        create(api, member, {"name": f"g{n}", "policies": ["affinity"]})
    resp = create(api, member, {"name": "one-too-many", "policies": ["affinity"]}, status=403)
    assert resp.json["forbidden"]["message"] == (
        f"Quota exceeded for server_groups in project {member.project_id}: requested 1, in use {limit}, "
        f"limit {limit}.")
    assert len(api.app.get(GROUPS, headers=member.headers).json["server_groups"]) == limit
    absolute = api.app.get(f"{C}/limits", headers=member.headers).json["limits"]["absolute"]
    assert (absolute["maxServerGroups"], absolute["totalServerGroupsUsed"]) == (limit, limit)
    # Another project has its own.
    create(api, api.make_member(), {"name": "g", "policies": ["affinity"]})
