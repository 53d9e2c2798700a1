"""Compute v2.1: flavors, keypairs, quotas and limits, servers and their actions."""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from fabric import exception
from fabric.api import quota
from fabric.db.models import ComputeNode, Image, Instance, InstanceFault, Network, Port, QuotaUsage, Service
from fabric.db.types import utcnow

C = "/compute/v2.1"
PUBKEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@example")


def admin_h(api):
    return {"X-Auth-Token": api.admin.token}


def make_flavor(api, name="m1.small", ram=512, vcpus=1, disk=1):
    return api.app.post_json(f"{C}/flavors", {"flavor": {"name": name, "ram": ram, "vcpus": vcpus, "disk": disk,
                                                         "id": "auto"}}, headers=admin_h(api)).json["flavor"]


def make_image(api, owner, visibility="private", status="active"):
    with api.db.begin() as session:
        image = Image(name="cirros", owner=owner, status=status, visibility=visibility, disk_format="raw",
                      container_format="bare", size=3, properties={})
        session.add(image)
        session.flush()
        return image.id


def boot(api, member, flavor, image, status=202, **extra):
    body = {"server": {"name": "vm", "flavorRef": flavor["id"], "imageRef": image, **extra}}
    return api.app.post_json(f"{C}/servers", body, headers=member.headers, status=status)


def place(api, server_id, host="host1", vm_state="active"):
    """What the scheduler and compute worker would do."""
    with api.db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == server_id)
                        .values(host=host, vm_state=vm_state, task_state=None, power_state=1))


def test_flavors_admin_create_list_show_delete(api):
    flavor = make_flavor(api)
    assert flavor["ram"] == 512 and flavor["os-flavor-access:is_public"] is True
    member = api.make_member()
    listed = api.app.get(f"{C}/flavors/detail", headers=member.headers).json["flavors"]
    assert [f["name"] for f in listed] == ["m1.small"]
    assert api.app.get(f"{C}/flavors/{flavor['id']}", headers=member.headers).json["flavor"]["vcpus"] == 1
    resp = api.app.post_json(f"{C}/flavors", {"flavor": {"name": "x", "ram": 1, "vcpus": 1}},
                             headers=member.headers, status=403)
    assert resp.json["forbidden"]["message"].endswith("creating flavors requires the admin role")
    resp = api.app.post_json(f"{C}/flavors", {"flavor": {"name": "bad", "ram": 0, "vcpus": 1}},
                             headers=admin_h(api), status=400)
    assert "'flavor.ram'" in resp.json["badRequest"]["message"] and "got 0" in resp.json["badRequest"]["message"]
    api.app.post_json(f"{C}/flavors", {"flavor": {"name": "m1.small", "ram": 1, "vcpus": 1}},
                      headers=admin_h(api), status=409)
    api.app.delete(f"{C}/flavors/{flavor['id']}", headers=admin_h(api), status=202)
    resp = api.app.get(f"{C}/flavors/{flavor['id']}", headers=member.headers, status=404)
    assert flavor["id"] in resp.json["itemNotFound"]["message"]


def test_microversions_outside_2_1_to_2_56_are_not_acceptable(api):
    h = dict(admin_h(api), **{"OpenStack-API-Version": "compute 2.57"})
    resp = api.app.get(f"{C}/flavors", headers=h, status=406)
    assert "Minimum is 2.1 and maximum is 2.56" in resp.json["notAcceptable"]["message"]
    bad = api.app.get(f"{C}/flavors", headers=dict(admin_h(api), **{"OpenStack-API-Version": "compute two"}),
                      status=400)
    assert "'two'" in bad.json["badRequest"]["message"]
    ok = api.app.get(f"{C}/flavors", headers=dict(admin_h(api), **{"OpenStack-API-Version": "compute latest"}))
    assert ok.headers["OpenStack-API-Version"] == "compute 2.56"
    asked = api.app.get(f"{C}/flavors", headers=dict(admin_h(api), **{"X-OpenStack-Nova-API-Version": "2.19"}))
    assert asked.headers["X-OpenStack-Nova-API-Version"] == "2.19"
    assert api.app.get(f"{C}/flavors", headers=admin_h(api)).headers["OpenStack-API-Version"] == "compute 2.1"
    assert ok.headers["x-compute-request-id"] == ok.headers["x-openstack-request-id"]


def test_keypairs_import_generate_list_delete(api):
    member = api.make_member()
    imported = api.app.post_json(f"{C}/os-keypairs", {"keypair": {"name": "mine", "public_key": PUBKEY}},
                                 headers=member.headers).json["keypair"]
    assert len(imported["fingerprint"].split(":")) == 16 and "private_key" not in imported
    generated = api.app.post_json(f"{C}/os-keypairs", {"keypair": {"name": "gen"}},
                                  headers=member.headers).json["keypair"]
    assert generated["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert generated["public_key"].startswith("ssh-ed25519 ")
    names = [k["keypair"]["name"] for k in api.app.get(f"{C}/os-keypairs", headers=member.headers).json["keypairs"]]
    assert names == ["gen", "mine"]
    assert api.app.get(f"{C}/os-keypairs/mine", headers=member.headers).json["keypair"]["user_id"] == member.user_id
    api.app.post_json(f"{C}/os-keypairs", {"keypair": {"name": "mine", "public_key": PUBKEY}},
                      headers=member.headers, status=409)
    bad = api.app.post_json(f"{C}/os-keypairs", {"keypair": {"name": "bad", "public_key": "ssh-rsa nope"}},
                            headers=member.headers, status=400)
    assert "keypair.public_key" in bad.json["badRequest"]["message"]
    # Another user neither sees nor deletes it.
    other = api.make_member()
    api.app.get(f"{C}/os-keypairs/mine", headers=other.headers, status=404)
    api.app.delete(f"{C}/os-keypairs/mine", headers=other.headers, status=404)
    api.app.delete(f"{C}/os-keypairs/mine", headers=member.headers, status=202)
    api.app.get(f"{C}/os-keypairs/mine", headers=member.headers, status=404)


def test_server_create_commits_the_row_before_casting(api):
    member = api.make_member()
    flavor = make_flavor(api, vcpus=2, ram=1024)
    image = make_image(api, member.project_id)
    seen_in_db = {}

    def build_instances(ctx, instance_ids, request_spec):
        # A fresh session: the row must already be committed when the cast goes out.
        with api.db.begin() as session:
            row = session.get(Instance, instance_ids[0])
            seen_in_db["row"] = (row.vm_state, row.task_state, row.project_id)
        seen_in_db["spec"] = request_spec
        seen_in_db["request_id"] = ctx.request_id

    api.recorder.clients.scheduler = type("S", (), {"build_instances": staticmethod(build_instances)})()
    resp = boot(api, member, flavor, image, key_name=None, metadata={"k": "v"})
    server_id = resp.json["server"]["id"]
    assert resp.headers["Location"].endswith(f"/compute/v2.1/servers/{server_id}")
    assert seen_in_db["row"] == ("building", "scheduling", member.project_id)
    assert seen_in_db["spec"]["flavor"]["vcpus"] == 2 and seen_in_db["spec"]["image"]["id"] == image
    assert seen_in_db["request_id"] == resp.headers["x-openstack-request-id"]
    shown = api.app.get(f"{C}/servers/{server_id}", headers=member.headers).json["server"]
    assert shown["status"] == "BUILD" and shown["OS-EXT-STS:task_state"] == "scheduling"
    assert shown["tenant_id"] == member.project_id and shown["user_id"] == member.user_id
    assert shown["flavor"]["id"] == flavor["id"] and shown["image"]["id"] == image
    assert shown["metadata"] == {"k": "v"}
    listed = api.app.get(f"{C}/servers/detail", headers=member.headers).json["servers"]
    assert listed[0]["metadata"] == {"k": "v"} and listed[0]["status"] == "BUILD"
    assert "OS-EXT-SRV-ATTR:host" not in shown  # admin-only field
    with api.db.begin() as session:
        usage = {u.resource: u.in_use for u in session.scalars(sa.select(QuotaUsage))}
    assert usage == {"instances": 1, "cores": 2, "ram": 1024}


def test_server_create_validates_references(api):
    member = api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, member.project_id)
    resp = boot(api, member, {"id": "nope"}, image, status=404)
    assert "Flavor nope" in resp.json["itemNotFound"]["message"]
    resp = boot(api, member, flavor, "no-such-image", status=404)
    assert "Image no-such-image" in resp.json["itemNotFound"]["message"]
    resp = boot(api, member, flavor, image, status=400, key_name="missing")
    assert "keypair 'missing'" in resp.json["badRequest"]["message"]
    resp = api.app.post_json(f"{C}/servers", {"server": {"name": "vm", "flavorRef": flavor["id"], "imageRef": image},
                                              "os:scheduler_hints": {"group": "no-group"}},
                             headers=member.headers, status=404)
    assert "Server group no-group" in resp.json["itemNotFound"]["message"]
    missing = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    resp = boot(api, member, flavor, image, status=404, networks=[{"uuid": missing}])
    assert f"Network {missing}" in resp.json["itemNotFound"]["message"]
    resp = boot(api, member, flavor, image, status=400, networks=[{"uuid": "net-x"}])  # Nova: not a UUID
    assert "'net-x' is not a UUID" in resp.json["badRequest"]["message"]
    resp = api.app.post_json(f"{C}/servers", {"server": {"name": "x", "imageRef": image}}, headers=member.headers,
                             status=400)
    assert "'server.flavorRef'" in resp.json["badRequest"]["message"]
    # Another project's private image is invisible.
    other_image = make_image(api, "someone-else")
    boot(api, member, flavor, other_image, status=404)
    queued = make_image(api, member.project_id, status="queued")
    resp = boot(api, member, flavor, queued, status=400)
    assert "only an active image can boot" in resp.json["badRequest"]["message"]
    assert api.recorder.named("build_instances") == []
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Instance)) == 0


def test_quota_exceeded_is_403_and_nothing_is_written(api):
    member = api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, member.project_id)
    api.app.put_json(f"{C}/os-quota-sets/{member.project_id}", {"quota_set": {"instances": 2}},
                     headers=admin_h(api))
    boot(api, member, flavor, image)
    boot(api, member, flavor, image)
    resp = boot(api, member, flavor, image, status=403)
    assert resp.json["forbidden"]["message"] == (
        f"Quota exceeded for instances in project {member.project_id}: requested 1, in use 2, limit 2.")
    listed = api.app.get(f"{C}/servers", headers=member.headers).json["servers"]
    assert len(listed) == 2
    limits = api.app.get(f"{C}/limits", headers=member.headers).json["limits"]["absolute"]
    assert (limits["maxTotalInstances"], limits["totalInstancesUsed"]) == (2, 2)
    detail = api.app.get(f"{C}/os-quota-sets/{member.project_id}/detail", headers=member.headers).json
    assert detail["quota_set"]["instances"] == {"limit": 2, "in_use": 2, "reserved": 0}
    # Deleting one gives its quota back.
    api.app.delete(f"{C}/servers/{listed[0]['id']}", headers=member.headers, status=204)
    boot(api, member, flavor, image)
    # Members cannot change quotas, nor read another project's.
    api.app.put_json(f"{C}/os-quota-sets/{member.project_id}", {"quota_set": {"instances": 50}},
                     headers=member.headers, status=403)
    api.app.get(f"{C}/os-quota-sets/{api.admin.project_id}", headers=member.headers, status=403)
    resp = api.app.put_json(f"{C}/os-quota-sets/{member.project_id}", {"quota_set": {"instances": -5}},
                            headers=admin_h(api), status=400)
    assert "instances=-5" in resp.json["badRequest"]["message"]
    api.app.put_json(f"{C}/os-quota-sets/no-such-project", {"quota_set": {"instances": 5}}, headers=admin_h(api),
                     status=404)


def test_reserve_is_all_or_nothing(sqlite_db):
    from fabric.db.models import Project
    with sqlite_db.begin() as session:
        session.add(Project(id="p1", name="p1"))
    quota.set_limit(sqlite_db, "p1", "cores", 4)
    quota.ensure_usage_rows(sqlite_db, "p1", ["instances", "cores"])
    with pytest.raises(exception.QuotaExceeded) as err, sqlite_db.begin() as session:
        quota.reserve(session, "p1", {"instances": 1, "cores": 8})
    assert err.value.fields["resource"] == "cores"
    with sqlite_db.begin() as session:
        assert quota.usages(session, "p1")["instances"] == 0


def test_tenant_isolation_for_servers(api):
    owner, intruder = api.make_member(), api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, owner.project_id)
    server_id = boot(api, owner, flavor, image).json["server"]["id"]
    place(api, server_id)
    assert api.app.get(f"{C}/servers", headers=intruder.headers).json["servers"] == []
    api.app.get(f"{C}/servers/{server_id}", headers=intruder.headers, status=404)
    api.app.post_json(f"{C}/servers/{server_id}/action", {"os-stop": None}, headers=intruder.headers, status=404)
    api.app.delete(f"{C}/servers/{server_id}", headers=intruder.headers, status=404)
    # all_tenants is ignored for members and honoured for admins.
    assert api.app.get(f"{C}/servers?all_tenants=1", headers=intruder.headers).json["servers"] == []
    everything = api.app.get(f"{C}/servers/detail?all_tenants=1", headers=admin_h(api)).json["servers"]
    assert [s["id"] for s in everything] == [server_id]
    assert everything[0]["OS-EXT-SRV-ATTR:host"] == "host1"


def test_actions_check_state_and_cast_to_the_host(api):
    member = api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, member.project_id)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    url = f"{C}/servers/{server_id}/action"
    resp = api.app.post_json(url, {"os-stop": None}, headers=member.headers, status=409)
    assert "vm_state 'building'" in resp.json["conflictingRequest"]["message"]
    place(api, server_id)
    api.app.post_json(url, {"reboot": {"type": "HARD"}}, headers=member.headers, status=202)
    shown = api.app.get(f"{C}/servers/{server_id}", headers=member.headers).json["server"]
    assert shown["status"] == "HARD_REBOOT"
    cast = api.recorder.named("instance_action")[-1]
    assert (cast["host"], cast["action"], cast["hard"]) == ("host1", "reboot_instance", True)
    # A soft reboot while the hard one is in progress conflicts.
    resp = api.app.post_json(url, {"reboot": {"type": "SOFT"}}, headers=member.headers, status=409)
    assert "task_state 'rebooting_hard'" in resp.json["conflictingRequest"]["message"]
    place(api, server_id)
    api.app.post_json(url, {"reboot": {"type": "SOFT"}}, headers=member.headers, status=202)
    assert api.app.get(f"{C}/servers/{server_id}", headers=member.headers).json["server"]["status"] == "REBOOT"
    for action, vm_state, status in (("os-stop", "stopped", "SHUTOFF"), ("os-start", "active", "ACTIVE"),
                                     ("pause", "paused", "PAUSED"), ("unpause", "active", "ACTIVE"),
                                     ("suspend", "suspended", "SUSPENDED"), ("resume", "active", "ACTIVE")):
        place(api, server_id, vm_state="active" if action in ("os-stop", "pause", "suspend") else
              {"os-start": "stopped", "unpause": "paused", "resume": "suspended"}[action])
        api.app.post_json(url, {action: None}, headers=member.headers, status=202)
        assert api.recorder.named("instance_action")[-1]["action"].startswith(action.replace("os-", "")[:4])
        place(api, server_id, vm_state=vm_state)
        assert api.app.get(f"{C}/servers/{server_id}", headers=member.headers).json["server"]["status"] == status
    bad = api.app.post_json(url, {"explode": None}, headers=member.headers, status=400)
    assert "'explode' is not supported" in bad.json["badRequest"]["message"]
    bad = api.app.post_json(url, {"reboot": {"type": "GENTLE"}}, headers=member.headers, status=400)
    assert "'type'" in bad.json["badRequest"]["message"]
    out = api.app.post_json(url, {"os-getConsoleOutput": {"length": 10}}, headers=member.headers).json
    assert out == {"output": "fabric console\n"}
    assert api.recorder.named("get_console_output")[-1]["length"] == 10


def test_failed_cast_puts_the_row_back(api):
    member = api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, member.project_id)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    place(api, server_id)

    def unroutable(ctx, **kwargs):
        raise exception.Unroutable(target="compute.host1", method=kwargs["action"])

    api.recorder.clients.compute = type("C", (), {"instance_action": staticmethod(unroutable)})()
    resp = api.app.post_json(f"{C}/servers/{server_id}/action", {"os-stop": None}, headers=member.headers,
                             status=503)
    assert "compute.host1" in resp.json["serviceUnavailable"]["message"]
    with api.db.begin() as session:
        assert session.get(Instance, server_id).task_state is None


def test_unroutable_scheduler_errors_the_server_and_returns_quota(api):
    member = api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, member.project_id)

    def unroutable(ctx, **kwargs):
        raise exception.Unroutable(target="scheduler", method="build_instances")

    api.recorder.clients.scheduler = type("S", (), {"build_instances": staticmethod(unroutable)})()
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    shown = api.app.get(f"{C}/servers/{server_id}", headers=member.headers).json["server"]
    assert shown["status"] == "ERROR" and "scheduler" in shown["fault"]["message"]
    with api.db.begin() as session:
        assert quota.usages(session, member.project_id)["instances"] == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(InstanceFault)) == 1


def test_delete_unplaced_is_local_and_placed_is_cast(api):
    member = api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, member.project_id)
    local = boot(api, member, flavor, image).json["server"]["id"]
    api.app.delete(f"{C}/servers/{local}", headers=member.headers, status=204)
    api.app.get(f"{C}/servers/{local}", headers=member.headers, status=404)
    remote = boot(api, member, flavor, image).json["server"]["id"]
    place(api, remote)
    api.app.delete(f"{C}/servers/{remote}", headers=member.headers, status=204)
    cast = api.recorder.named("instance_action")[-1]
    assert (cast["action"], cast["instance_id"], cast["host"]) == ("terminate_instance", remote, "host1")
    api.app.delete(f"{C}/servers/{remote}", headers=member.headers, status=204)  # again: no second cast
    assert len(api.recorder.named("instance_action")) == 1
    with api.db.begin() as session:
        assert quota.usages(session, member.project_id)["instances"] == 0


def test_server_list_filters_and_pagination(api):
    member = api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, member.project_id)
    ids = [boot(api, member, flavor, image, name=f"web-{n}").json["server"]["id"] for n in range(3)]
    place(api, ids[0])
    page = api.app.get(f"{C}/servers/detail?limit=2", headers=member.headers).json
    assert len(page["servers"]) == 2 and "servers_links" in page
    rest = api.app.get(f"{C}/servers/detail?limit=2&marker={page['servers'][-1]['id']}",
                       headers=member.headers).json["servers"]
    assert len(rest) == 1
    active = api.app.get(f"{C}/servers?status=ACTIVE", headers=member.headers).json["servers"]
    assert [s["id"] for s in active] == [ids[0]]
    named = api.app.get(f"{C}/servers?name=web-2", headers=member.headers).json["servers"]
    assert [s["id"] for s in named] == [ids[2]]
    # An unknown status: no servers before 2.38, a 400 naming it from 2.38 (Nova's history).
    old = api.app.get(f"{C}/servers?status=SLEEPY", headers=dict(member.headers, **{
        "OpenStack-API-Version": "compute 2.37"})).json["servers"]
    assert old == []
    bad = api.app.get(f"{C}/servers?status=SLEEPY", headers=dict(member.headers, **{
        "OpenStack-API-Version": "compute 2.38"}), status=400)
    assert "'SLEEPY'" in bad.json["badRequest"]["message"]


def test_hypervisors_and_services(api):
    with api.db.begin() as session:
        session.add(Service(host="host1", binary="fabric-compute", topic="compute", last_heartbeat=utcnow()))
        session.add(Service(host="host1", binary="fabric-scheduler", topic="scheduler"))
        session.add(ComputeNode(host="host1", vcpus=8, memory_mb=4096, disk_gb=100, vcpus_used=2))
    hyps = api.app.get(f"{C}/os-hypervisors/detail", headers=admin_h(api)).json["hypervisors"]
    assert hyps[0]["hypervisor_hostname"] == "host1" and hyps[0]["state"] == "up" and hyps[0]["vcpus_used"] == 2
    services = {s["binary"]: s for s in api.app.get(f"{C}/os-services", headers=admin_h(api)).json["services"]}
    assert services["fabric-compute"]["state"] == "up" and services["fabric-scheduler"]["state"] == "down"
    api.app.put_json(f"{C}/os-services/disable-log-reason", {"host": "host1", "binary": "fabric-compute",
                                                              "disabled_reason": "maintenance"},
                     headers=admin_h(api))
    services = {s["binary"]: s for s in api.app.get(f"{C}/os-services", headers=admin_h(api)).json["services"]}
    assert services["fabric-compute"]["status"] == "disabled"
    assert services["fabric-compute"]["disabled_reason"] == "maintenance"
    api.app.put_json(f"{C}/os-services/enable", {"host": "host1", "binary": "fabric-compute"}, headers=admin_h(api))
    resp = api.app.put_json(f"{C}/os-services/enable", {"host": "nohost", "binary": "fabric-compute"},
                            headers=admin_h(api), status=404)
    assert "nohost" in resp.json["itemNotFound"]["message"]
    member = api.make_member()
    api.app.get(f"{C}/os-hypervisors", headers=member.headers, status=403)


def test_addresses_come_from_the_compute_workers_vifs(api):
    member = api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, member.project_id)
    net = api.app.post_json("/networking/v2.0/networks", {"network": {"name": "blue"}},
                            headers=member.headers).json["network"]
    server_id = boot(api, member, flavor, image, networks=[{"uuid": net["id"]}]).json["server"]["id"]
    with api.db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == server_id).values(
            host="host1", vm_state="active", task_state=None,
            network_info=[{"id": "vif-1", "network_id": net["id"], "mac": "fa:16:3e:00:00:09",
                           "address": "10.0.0.9", "prefixlen": 24}]))
    shown = api.app.get(f"{C}/servers/{server_id}", headers=member.headers).json["server"]
    assert shown["addresses"] == {"blue": [{"version": 4, "addr": "10.0.0.9", "OS-EXT-IPS:type": "fixed",
                                            "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:09"}]}


def test_long_listing_addresses_and_pages(api):
    """Past 50 servers the listing finds ports through its own scope: each server still gets
    only its own addresses, from its port or else from its cached VIFs, on every page."""
    member, other = api.make_member(), api.make_member()
    with api.db.begin() as session:
        net = Network(name="blue", project_id=member.project_id, network_type="vxlan")
        session.add(net)
        session.flush()
        rows = [Instance(display_name=f"vm-{n:02d}", project_id=member.project_id, user_id=member.user_id,
                         vm_state="active", power_state=1, created_at=utcnow() - datetime.timedelta(seconds=n),
                         network_info=[{"network_id": net.id, "mac": f"fa:16:3e:00:00:{n:02x}",
                                        "address": f"10.0.0.{n + 10}"}] if n % 2 else [])
                for n in range(60)]
        foreign = Instance(display_name="theirs", project_id=other.project_id, user_id=other.user_id,
                           vm_state="active", power_state=1, network_info=[])
        session.add_all([*rows, foreign])
        session.flush()
        # vm-00 has a port (no address yet); the other project's server has one too.
        session.add_all([Port(network_id=net.id, project_id=member.project_id, mac_address="fa:16:3e:aa:00:00",
                              device_id=rows[0].id),
                         Port(network_id=net.id, project_id=other.project_id, mac_address="fa:16:3e:bb:00:00",
                              device_id=foreign.id)])
    listed = api.app.get(f"{C}/servers/detail", headers=member.headers).json["servers"]
    assert [s["name"] for s in listed] == [f"vm-{n:02d}" for n in range(60)]
    by_name = {s["name"]: s["addresses"] for s in listed}
    assert by_name["vm-00"] == {"blue": []}
    assert by_name["vm-02"] == {}
    assert by_name["vm-07"] == {"blue": [{"version": 4, "addr": "10.0.0.17", "OS-EXT-IPS:type": "fixed",
                                          "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:07"}]}
    page = api.app.get(f"{C}/servers/detail?limit=55&marker={listed[0]['id']}", headers=member.headers).json
    assert [s["name"] for s in page["servers"]] == [f"vm-{n:02d}" for n in range(1, 56)]
    assert page["servers"] == listed[1:56]
    assert page["servers_links"][0]["href"].endswith(f"limit=55&marker={listed[55]['id']}")


def test_listing_matches_show_and_follows_every_change(api):
    """The detail listing (encoded server by server, reused while a row is unchanged) says
    exactly what show says, for members and admins, and a change shows on the next poll."""
    member = api.make_member()
    flavor = make_flavor(api)
    image = make_image(api, member.project_id)
    ids = [boot(api, member, flavor, image, name=f"vm-{n}").json["server"]["id"] for n in range(3)]
    place(api, ids[0])
    with api.db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == ids[1]).values(vm_state="error", task_state=None))
        session.add(InstanceFault(instance_id=ids[1], code=500, message="boom", details="trace",
                                  created_at=utcnow()))
    for headers, query in ((member.headers, ""), (admin_h(api), f"?all_tenants=1&project_id={member.project_id}")):
        for _ in range(2):  # the second listing comes from the cache
            listed = api.app.get(f"{C}/servers/detail{query}", headers=headers).json["servers"]
            shown = [api.app.get(f"{C}/servers/{s['id']}", headers=headers).json["server"] for s in listed]
            assert listed == shown and {s["id"] for s in listed} == set(ids)
    assert "details" in {s["id"]: s for s in listed}[ids[1]]["fault"]
    with api.db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == ids[0]).values(display_name="renamed",
                                                                                  task_state="rebooting"))
    again = {s["id"]: s for s in api.app.get(f"{C}/servers/detail", headers=member.headers).json["servers"]}
    assert (again[ids[0]]["name"], again[ids[0]]["status"]) == ("renamed", "REBOOT")


def test_a_server_shows_its_ports_groups_in_show_and_in_listings_as_they_change(api):
    owner = api.make_member()
    flavor = make_flavor(api)
    server_id = boot(api, owner, flavor, make_image(api, owner.project_id)).json["server"]["id"]
    place(api, server_id)
    before = api.app.get(f"{C}/servers/detail", headers=owner.headers).json["servers"][0]
    assert before["security_groups"] == []  # no port yet
    with api.db.begin() as session:
        network = Network(name="n", project_id=owner.project_id, network_type="vxlan", segmentation_id=4321)
        session.add(network)
        session.flush()
        session.add(Port(id="p-sg", network_id=network.id, project_id=owner.project_id, mac_address="02:00:00:00:00:09",
                         device_id=server_id))
    headers = owner.headers
    api.app.post_json(f"{C}/servers/{server_id}/action", {"addSecurityGroup": {"name": "default"}}, headers=headers,
                      status=202)
    # The listing caches each unchanged row's document: the groups must not be cached with it.
    listed = api.app.get(f"{C}/servers/detail", headers=headers).json["servers"][0]
    assert listed["security_groups"] == [{"name": "default"}] and listed["addresses"] == {"n": []}
    assert api.app.get(f"{C}/servers/{server_id}", headers=headers).json["server"]["security_groups"] == [
        {"name": "default"}]
    api.app.post_json(f"{C}/servers/{server_id}/action", {"removeSecurityGroup": {"name": "default"}},
                      headers=headers, status=202)
    assert api.app.get(f"{C}/servers/detail", headers=headers).json["servers"][0]["security_groups"] == []
    bad = api.app.post_json(f"{C}/servers/{server_id}/action", {"addSecurityGroup": {}}, headers=headers, status=400)
    assert "name" in bad.json["badRequest"]["message"]


def test_server_metadata_merge_replace_item_and_limits(api):
    owner = api.make_member()
    server_id = boot(api, owner, make_flavor(api), make_image(api, owner.project_id), metadata={"a": "1"}).json[
        "server"]["id"]
    url, h = f"{C}/servers/{server_id}/metadata", owner.headers
    assert api.app.post_json(url, {"metadata": {"b": "2"}}, headers=h).json["metadata"] == {"a": "1", "b": "2"}
    assert api.app.put_json(url, {"metadata": {"c": "3"}}, headers=h).json["metadata"] == {"c": "3"}
    assert api.app.put_json(f"{url}/d", {"meta": {"d": "4"}}, headers=h).json == {"meta": {"d": "4"}}
    assert api.app.get(f"{url}/d", headers=h).json == {"meta": {"d": "4"}}
    bad = api.app.put_json(f"{url}/d", {"meta": {"e": "5"}}, headers=h, status=400)
    assert "exactly the item 'd'" in bad.json["badRequest"]["message"]
    too_many = {f"k{n}": "v" for n in range(129)}
    bad = api.app.put_json(url, {"metadata": too_many}, headers=h, status=400)
    assert "at most 128" in bad.json["badRequest"]["message"]
    api.app.delete(f"{url}/d", headers=h, status=204)
    api.app.delete(f"{url}/d", headers=h, status=404)
    assert api.app.get(url, headers=h).json["metadata"] == {"c": "3"}
    assert api.app.get(f"{C}/servers/{server_id}", headers=h).json["server"]["metadata"] == {"c": "3"}


def test_a_locked_server_refuses_changes_from_all_but_admins(api):
    owner = api.make_member()
    server_id = boot(api, owner, make_flavor(api), make_image(api, owner.project_id)).json["server"]["id"]
    place(api, server_id)
    url, show = f"{C}/servers/{server_id}/action", f"{C}/servers/{server_id}"
    api.app.post_json(url, {"lock": {"locked_reason": "maintenance"}}, headers=owner.headers, status=202)
    # "locked" is shown from microversion 2.9, "locked_reason" from 2.73 (newer than fabric serves).
    at_2_9 = dict(owner.headers, **{"OpenStack-API-Version": "compute 2.9"})
    shown = api.app.get(show, headers=at_2_9).json["server"]
    assert shown["locked"] is True and "locked_reason" not in shown
    assert "locked" not in api.app.get(show, headers=owner.headers).json["server"]
    with api.db.begin() as session:
        assert session.get(Instance, server_id).locked_reason == "maintenance"
    casts = len(api.recorder.named("instance_action"))
    for action in ({"os-stop": None}, {"reboot": {"type": "SOFT"}}):
        refused = api.app.post_json(url, action, headers=owner.headers, status=409)
        assert "is locked (by owner: maintenance)" in refused.json["conflictingRequest"]["message"]
    api.app.delete(show, headers=owner.headers, status=409)
    api.app.post_json(f"{show}/metadata", {"metadata": {"a": "1"}}, headers=owner.headers, status=409)
    assert len(api.recorder.named("instance_action")) == casts  # nothing was cast
    with api.db.begin() as session:
        row = session.get(Instance, server_id)
        assert (row.vm_state, row.task_state, row.deleted, row.metadata_items) == ("active", None, False, {})
    # An admin acts on it still; the owner's own lock the owner lifts.
    api.app.post_json(url, {"os-stop": None}, headers=admin_h(api), status=202)
    place(api, server_id, vm_state="stopped")
    api.app.post_json(url, {"unlock": None}, headers=owner.headers, status=202)
    assert api.app.get(show, headers=at_2_9).json["server"]["locked"] is False
    api.app.post_json(url, {"os-start": None}, headers=owner.headers, status=202)
    # An admin's lock only an admin lifts.
    place(api, server_id)
    api.app.post_json(url, {"lock": None}, headers=admin_h(api), status=202)
    refused = api.app.post_json(url, {"unlock": None}, headers=owner.headers, status=403)
    assert "locked by an admin" in refused.json["forbidden"]["message"]
    api.app.post_json(url, {"unlock": None}, headers=admin_h(api), status=202)
    api.app.delete(show, headers=owner.headers, status=204)
    bad = api.app.post_json(url, {"lock": {"locked_reason": "x" * 256}}, headers=admin_h(api), status=400)
    assert "locked_reason" in bad.json["badRequest"]["message"]


def test_a_lock_taken_between_the_read_and_the_swap_still_stops_the_action(api, monkeypatch):
    from fabric.compute import api as compute_api
    from fabric.compute import states

    owner = api.make_member()
    server_id = boot(api, owner, make_flavor(api), make_image(api, owner.project_id)).json["server"]["id"]
    place(api, server_id)
    real_get = states.get_instance

    def read_then_lock(db, instance_id, **kw):
        row = real_get(db, instance_id, **kw)
        with db.begin() as session:  # an admin's lock lands right after the action's read
            session.execute(sa.update(Instance).where(Instance.id == instance_id)
                            .values(locked=True, locked_by="admin"))
        return row

    monkeypatch.setattr(compute_api.states, "get_instance", read_then_lock)
    refused = api.app.post_json(f"{C}/servers/{server_id}/action", {"os-stop": None}, headers=owner.headers,
                                status=409)
    assert "is locked (by admin)" in refused.json["conflictingRequest"]["message"]
    with api.db.begin() as session:
        assert session.get(Instance, server_id).task_state is None


def test_availability_zones_follow_their_hosts_services(api):
    with api.db.begin() as session:
        for host, zone, up in (("az-a1", "zone-a", True), ("az-a2", "zone-a", False), ("az-b1", "zone-b", False)):
            session.add(Service(host=host, binary="fabric-compute", topic="compute",
                                last_heartbeat=utcnow() if up else None))
            session.add(ComputeNode(host=host, availability_zone=zone))
        session.add(Service(host="az-ctl", binary="fabric-scheduler", topic="scheduler", last_heartbeat=utcnow()))
    member = api.make_member()
    listed = api.app.get(f"{C}/os-availability-zone", headers=member.headers).json["availabilityZoneInfo"]
    zones = {z["zoneName"]: z["zoneState"]["available"] for z in listed}
    assert zones["zone-a"] is True and zones["zone-b"] is False and "internal" not in zones
    # Disabling zone-a's one live host makes it unavailable.
    api.app.put_json(f"{C}/os-services/disable", {"host": "az-a1", "binary": "fabric-compute"}, headers=admin_h(api))
    listed = api.app.get(f"{C}/os-availability-zone", headers=member.headers).json["availabilityZoneInfo"]
    assert {z["zoneName"]: z["zoneState"]["available"] for z in listed}["zone-a"] is False
    api.app.get(f"{C}/os-availability-zone/detail", headers=member.headers, status=403)
    detail = {z["zoneName"]: z for z in api.app.get(f"{C}/os-availability-zone/detail",
                                                    headers=admin_h(api)).json["availabilityZoneInfo"]}
    assert set(detail["zone-a"]["hosts"]) == {"az-a1", "az-a2"}
    assert detail["zone-a"]["hosts"]["az-a1"]["fabric-compute"]["active"] is False
    assert detail["internal"]["hosts"]["az-ctl"]["fabric-scheduler"]["available"] is True
    services = {s["host"]: s for s in api.app.get(f"{C}/os-services", headers=admin_h(api)).json["services"]}
    assert (services["az-b1"]["zone"], services["az-ctl"]["zone"]) == ("zone-b", "internal")


def test_usage_counts_the_hours_each_server_ran_in_the_period(api):
    owner, other = api.make_member(), api.make_member()
    day = datetime.datetime(2026, 11, 1)
    with api.db.begin() as session:
        rows = [  # (project, launched, terminated): hours inside 2026-11-01 00:00 .. 12:00
            (owner.project_id, day - datetime.timedelta(hours=2), None),  # the whole period: 12 h
            (owner.project_id, day + datetime.timedelta(hours=3), day + datetime.timedelta(hours=5)),  # 2 h, deleted
            (owner.project_id, None, None),  # never launched: nothing
            (owner.project_id, day - datetime.timedelta(hours=5), day - datetime.timedelta(hours=1)),  # before: none
            (other.project_id, day + datetime.timedelta(hours=6), None),  # 6 h
        ]
        for project, launched, terminated in rows:
            session.add(Instance(project_id=project, user_id="u", display_name="vm", vcpus=2, memory_mb=512,
                                 disk_gb=10, vm_state="deleted" if terminated else "active",
                                 deleted=terminated is not None, launched_at=launched, terminated_at=terminated))
    period = "start=2026-11-01T00:00:00&end=2026-11-01T12:00:00"
    mine = api.app.get(f"{C}/os-simple-tenant-usage/{owner.project_id}?{period}",
                       headers=owner.headers).json["tenant_usage"]
    assert mine["total_hours"] == pytest.approx(14.0)
    assert mine["total_vcpus_usage"] == pytest.approx(28.0)
    assert mine["total_memory_mb_usage"] == pytest.approx(14.0 * 512)
    assert sorted(round(s["hours"], 6) for s in mine["server_usages"]) == [2.0, 12.0]
    assert {s["state"] for s in mine["server_usages"]} == {"active", "terminated"}
    api.app.get(f"{C}/os-simple-tenant-usage/{other.project_id}?{period}", headers=owner.headers, status=403)
    api.app.get(f"{C}/os-simple-tenant-usage?{period}", headers=owner.headers, status=403)
    every = api.app.get(f"{C}/os-simple-tenant-usage?{period}&detailed=1", headers=admin_h(api)).json
    totals = {u["tenant_id"]: u["total_hours"] for u in every["tenant_usages"]}
    assert totals[owner.project_id] == pytest.approx(14.0) and totals[other.project_id] == pytest.approx(6.0)
    bad = api.app.get(f"{C}/os-simple-tenant-usage?start=yesterday", headers=admin_h(api), status=400)
    assert "'yesterday' is not an ISO 8601 time" in bad.json["badRequest"]["message"]
    bad = api.app.get(f"{C}/os-simple-tenant-usage?start=2026-11-02T00:00:00&end=2026-11-01T00:00:00",
                      headers=admin_h(api), status=400)
    assert "is before start" in bad.json["badRequest"]["message"]


def test_each_accepted_request_records_its_action(api):
    owner = api.make_member()
    server_id = boot(api, owner, make_flavor(api), make_image(api, owner.project_id)).json["server"]["id"]
    url = f"{C}/servers/{server_id}/os-instance-actions"
    created = api.app.get(url, headers=owner.headers).json["instanceActions"]
    assert [(a["action"], a["user_id"], a["project_id"]) for a in created] == [
        ("create", owner.user_id, owner.project_id)]
    events = dict(owner.headers, **{"OpenStack-API-Version": "compute 2.51"})  # a member sees events from 2.51
    create = api.app.get(f"{url}/{created[0]['request_id']}", headers=events).json["instanceAction"]
    assert create["events"][0]["result"] is None and create["events"][0]["finish_time"] is None  # still building
    place(api, server_id)
    api.app.post_json(f"{C}/servers/{server_id}/action", {"os-stop": None}, headers=owner.headers, status=202)
    api.app.post_json(f"{C}/servers/{server_id}/action", {"lock": None}, headers=owner.headers, status=202)
    refused = api.app.post_json(f"{C}/servers/{server_id}/action", {"os-start": None}, headers=owner.headers,
                                status=409)  # refused: no action recorded
    assert "locked" in refused.json["conflictingRequest"]["message"]
    actions = api.app.get(url, headers=owner.headers).json["instanceActions"]
    assert [a["action"] for a in actions] == ["lock", "stop", "create"]
    lock = api.app.get(f"{url}/{actions[0]['request_id']}", headers=events).json["instanceAction"]
    assert lock["events"][0]["result"] == "Success"  # the API alone carries out a lock
    api.app.get(f"{url}/req-nosuch", headers=owner.headers, status=404)
    api.app.get(url, headers=api.make_member().headers, status=404)  # another project sees no server
