"""Compute microversions 2.27 to 2.56 (fabric.api.compute.microversion), each change checked at its
boundary: the microversion before it answers as Nova did then, the one that brings it as Nova
does from there."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.db.models import Aggregate, ComputeNode, Instance, InstanceAction, Service
from fabric.db.types import utcnow
from tests.unit.api.test_compute import PUBKEY, C, admin_h, boot, make_flavor, make_image, place


def at(headers: dict, version: str) -> dict:
    return dict(headers, **{"OpenStack-API-Version": f"compute {version}"})


def _network(api, member, name="blue") -> str:
    return api.app.post_json("/networking/v2.0/networks", {"network": {"name": name}},
                             headers=member.headers).json["network"]["id"]


def _setup(api):
    member = api.make_member()
    return member, make_flavor(api), make_image(api, member.project_id)


def _create(api, member, version: str, status: int = 202, **server):
    flavor, image = server.pop("flavor"), server.pop("image")
    body = {"server": {"name": "vm", "flavorRef": flavor["id"], "imageRef": image, **server}}
    return api.app.post_json(f"{C}/servers", body, headers=at(member.headers, version), status=status)


def test_network_device_tags_follow_novas_history(api):
    member, flavor, image = _setup(api)
    net = _network(api, member)
    tagged = [{"uuid": net, "tag": "nic1"}]
    for version, accepted in (("2.31", False), ("2.32", True), ("2.36", True), ("2.37", False), ("2.41", False),
                              ("2.42", True)):
        resp = _create(api, member, version, 202 if accepted else 400, flavor=flavor, image=image, networks=tagged)
        if accepted:
            with api.db.begin() as session:
                requested = session.get(Instance, resp.json["server"]["id"]).requested_networks
            assert requested[0]["tag"] == "nic1" and requested[0]["network_id"] == net
        else:
            assert "tag 'nic1'" in resp.json["badRequest"]["message"], version


def test_networks_required_auto_and_none_from_2_37(api):
    member, flavor, image = _setup(api)
    # 2.36: no networks is a server without ports; "auto" is not a list.
    _create(api, member, "2.36", flavor=flavor, image=image)
    refused = _create(api, member, "2.36", 400, flavor=flavor, image=image, networks="auto")
    assert "'auto'" in refused.json["badRequest"]["message"]
    # 2.37: required; "none" boots without ports; "auto" needs exactly one usable network.
    refused = _create(api, member, "2.37", 400, flavor=flavor, image=image)
    assert "server.networks is required" in refused.json["badRequest"]["message"]
    none = _create(api, member, "2.37", flavor=flavor, image=image, networks="none").json["server"]["id"]
    refused = _create(api, member, "2.37", 400, flavor=flavor, image=image, networks="auto")
    assert "has no network to boot on" in refused.json["badRequest"]["message"]
    blue = _network(api, member)
    auto = _create(api, member, "2.37", flavor=flavor, image=image, networks="auto").json["server"]["id"]
    _network(api, member, "green")
    ambiguous = _create(api, member, "2.37", 409, flavor=flavor, image=image, networks="auto")
    assert "blue" in ambiguous.json["conflictingRequest"]["message"]
    with api.db.begin() as session:
        assert session.get(Instance, none).requested_networks == []
        assert [n["network_id"] for n in session.get(Instance, auto).requested_networks] == [blue]
    # A network uuid must be a UUID at every microversion (Nova checks it before 2.37 too).
    for version in ("2.1", "2.37"):
        refused = _create(api, member, version, 400, flavor=flavor, image=image, networks=[{"uuid": "net-x"}])
        assert "'net-x' is not a UUID" in refused.json["badRequest"]["message"]


def test_tags_at_boot_from_2_52(api):
    member, flavor, image = _setup(api)
    refused = _create(api, member, "2.51", 400, flavor=flavor, image=image, tags=["a"])
    assert "server.tags needs microversion 2.52" in refused.json["badRequest"]["message"]
    refused = _create(api, member, "2.52", 400, flavor=flavor, image=image, tags=["a/b"], networks="none")
    assert "'a/b'" in refused.json["badRequest"]["message"]
    server_id = _create(api, member, "2.52", flavor=flavor, image=image, tags=["b", "a", "b"],
                        networks="none").json["server"]["id"]
    shown = api.app.get(f"{C}/servers/{server_id}", headers=at(member.headers, "2.52")).json["server"]
    assert shown["tags"] == ["a", "b"]


def test_flavor_embedded_in_servers_from_2_47(api):
    member, flavor, image = _setup(api)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    place(api, server_id)
    before = api.app.get(f"{C}/servers/{server_id}", headers=at(member.headers, "2.46")).json["server"]["flavor"]
    assert before["id"] == flavor["id"] and "links" in before
    for path in (f"servers/{server_id}", "servers/detail"):
        doc = api.app.get(f"{C}/{path}", headers=at(member.headers, "2.47")).json
        embedded = (doc.get("server") or doc["servers"][0])["flavor"]
        assert embedded == {"original_name": "m1.small", "vcpus": 1, "ram": 512, "disk": 1, "ephemeral": 0,
                            "swap": 0, "extra_specs": {}}


def test_update_answers_nova_update_view(api):
    member, flavor, image = _setup(api)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    with api.db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == server_id).values(network_info=[
            {"network_id": "n1", "mac": "fa:16:3e:00:00:01", "address": "10.0.0.5"}]))
    updated = api.app.put_json(f"{C}/servers/{server_id}", {"server": {"name": "renamed"}},
                               headers=member.headers).json["server"]
    assert updated["name"] == "renamed"
    assert updated["addresses"] == {"n1": [{"version": 4, "addr": "10.0.0.5"}]}  # no type or MAC in this view
    assert not [k for k in updated if k.startswith(("OS-EXT", "OS-SRV-USG")) or k in ("key_name", "security_groups")]
    refused = api.app.put_json(f"{C}/servers/{server_id}", {"server": {"accessIPv6": "2.2.2.2"}},
                               headers=member.headers, status=400)
    assert "accessIPv6" in refused.json["badRequest"]["message"]


def test_access_addresses_kept_from_create_update_and_rebuild(api):
    member, flavor, image = _setup(api)
    created = boot(api, member, flavor, image, accessIPv4="192.0.2.7").json["server"]["id"]
    url = f"{C}/servers/{created}"

    def shown() -> tuple[str, str]:
        doc = api.app.get(url, headers=member.headers).json["server"]
        listed = [s for s in api.app.get(f"{C}/servers/detail", headers=member.headers).json["servers"]
                  if s["id"] == created][0]
        assert (listed["accessIPv4"], listed["accessIPv6"]) == (doc["accessIPv4"], doc["accessIPv6"])
        return doc["accessIPv4"], doc["accessIPv6"]

    assert shown() == ("192.0.2.7", "")
    updated = api.app.put_json(url, {"server": {"accessIPv6": "2001:db8:0::1"}}, headers=member.headers).json
    assert (updated["server"]["accessIPv4"], updated["server"]["accessIPv6"]) == ("192.0.2.7", "2001:db8::1")
    assert shown() == ("192.0.2.7", "2001:db8::1")
    place(api, created)
    rebuilt = api.app.post_json(f"{url}/action", {"rebuild": {"imageRef": image, "accessIPv4": "198.51.100.1"}},
                                headers=member.headers, status=202).json["server"]
    assert (rebuilt["accessIPv4"], rebuilt["accessIPv6"]) == ("198.51.100.1", "2001:db8::1")
    assert shown() == ("198.51.100.1", "2001:db8::1")


def test_rebuild_replaces_the_metadata_it_is_given_and_keeps_it_otherwise(api):
    member, flavor, image = _setup(api)
    server_id = boot(api, member, flavor, image, metadata={"old": "1", "kept": "2"}).json["server"]["id"]
    url = f"{C}/servers/{server_id}"
    place(api, server_id)
    rebuilt = api.app.post_json(f"{url}/action", {"rebuild": {"imageRef": image, "metadata": {"new": "3"}}},
                                headers=member.headers, status=202).json["server"]
    assert rebuilt["metadata"] == {"new": "3"}
    assert api.app.get(f"{url}/metadata", headers=member.headers).json["metadata"] == {"new": "3"}
    place(api, server_id)
    api.app.post_json(f"{url}/action", {"rebuild": {"imageRef": image}}, headers=member.headers, status=202)
    assert api.app.get(f"{url}/metadata", headers=member.headers).json["metadata"] == {"new": "3"}
    place(api, server_id)
    too_many = {"rebuild": {"imageRef": image, "metadata": {f"k{i}": "v" for i in range(129)}}}
    refused = api.app.post_json(f"{url}/action", too_many, headers=member.headers, status=400)
    assert "129 items" in refused.json["badRequest"]["message"]
    assert api.app.get(f"{url}/metadata", headers=member.headers).json["metadata"] == {"new": "3"}


def test_create_image_answer_changes_at_2_45(api):
    member, flavor, image = _setup(api)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    place(api, server_id)
    old = api.app.post_json(f"{C}/servers/{server_id}/action", {"createImage": {"name": "snap-1"}},
                            headers=at(member.headers, "2.44"), status=202)
    assert old.body == b"" and "/image/v2/images/" in old.headers["Location"]
    place(api, server_id)  # what the compute worker does once the snapshot is up
    new = api.app.post_json(f"{C}/servers/{server_id}/action", {"createImage": {"name": "snap-2"}},
                            headers=at(member.headers, "2.45"), status=202)
    assert "Location" not in new.headers and len(new.json["image_id"]) == 36


def test_migrate_host_from_2_56_and_keypair_on_rebuild_from_2_54(api):
    member, flavor, image = _setup(api)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    place(api, server_id)
    url = f"{C}/servers/{server_id}/action"
    refused = api.app.post_json(url, {"migrate": {"host": "host2"}}, headers=at(admin_h(api), "2.55"), status=400)
    assert "needs microversion 2.56" in refused.json["badRequest"]["message"]
    own = api.app.post_json(url, {"migrate": {"host": "host1"}}, headers=at(admin_h(api), "2.56"), status=400)
    assert "server's own host" in own.json["badRequest"]["message"] or "own host" in own.json["badRequest"]["message"]
    api.app.post_json(url, {"migrate": {"host": "host2"}}, headers=at(admin_h(api), "2.56"), status=202)
    with api.db.begin() as session:
        assert session.get(Instance, server_id).task_state == "resize_prep"

    second = boot(api, member, flavor, image).json["server"]["id"]
    place(api, second)
    api.app.post_json(f"{C}/os-keypairs", {"keypair": {"name": "k", "public_key": PUBKEY}}, headers=member.headers)
    rebuild = {"rebuild": {"imageRef": image, "key_name": "k"}}
    refused = api.app.post_json(f"{C}/servers/{second}/action", rebuild, headers=at(member.headers, "2.53"),
                                status=400)
    assert "rebuild.key_name needs microversion 2.54" in refused.json["badRequest"]["message"]
    missing = api.app.post_json(f"{C}/servers/{second}/action", {"rebuild": {"imageRef": image, "key_name": "x"}},
                                headers=at(member.headers, "2.54"), status=400)
    assert "keypair 'x'" in missing.json["badRequest"]["message"]
    rebuilt = api.app.post_json(f"{C}/servers/{second}/action", rebuild, headers=at(member.headers, "2.54"),
                                status=202).json["server"]
    assert "key_name" not in rebuilt  # Nova's rebuild answer is the update view
    with api.db.begin() as session:
        row = session.get(Instance, second)
        assert (row.key_name, row.key_data) == ("k", PUBKEY)


def test_keypair_type_from_2_2_and_pages_from_2_35(api):
    member = api.make_member()
    url = f"{C}/os-keypairs"
    refused = api.app.post_json(url, {"keypair": {"name": "a", "type": "ssh"}}, headers=member.headers, status=400)
    assert "keypair.type needs microversion 2.2" in refused.json["badRequest"]["message"]
    old = api.app.post_json(url, {"keypair": {"name": "a"}}, headers=member.headers, status=200).json["keypair"]
    assert "type" not in old
    cert = api.app.post_json(url, {"keypair": {"name": "b", "type": "x509"}}, headers=at(member.headers, "2.2"),
                             status=201).json["keypair"]
    assert cert["type"] == "x509" and cert["public_key"].startswith("-----BEGIN CERTIFICATE-----")
    assert len(cert["fingerprint"].split(":")) == 20  # SHA-1
    api.app.post_json(url, {"keypair": {"name": "c"}}, headers=at(member.headers, "2.2"), status=201)
    names = [k["keypair"]["name"] for k in api.app.get(f"{url}?limit=1", headers=at(member.headers, "2.34"))
             .json["keypairs"]]
    assert names == ["a", "b", "c"]  # before 2.35 the listing does not page
    page = api.app.get(f"{url}?limit=1&marker=a", headers=at(member.headers, "2.35")).json
    assert [k["keypair"]["name"] for k in page["keypairs"]] == ["b"] and "marker=b" in page["keypairs_links"][0]["href"]
    api.app.delete(f"{url}/c", headers=at(member.headers, "2.2"), status=204)
    api.app.delete(f"{url}/a", headers=member.headers, status=202)


def test_limits_and_quotas_drop_network_fields_at_2_36_and_image_meta_at_2_39(api):
    member = api.make_member()
    limits = {v: api.app.get(f"{C}/limits", headers=at(member.headers, v)).json["limits"]["absolute"]
              for v in ("2.35", "2.36", "2.38", "2.39")}
    assert "maxSecurityGroups" in limits["2.35"] and "maxSecurityGroups" not in limits["2.36"]
    assert "maxImageMeta" in limits["2.38"] and "maxImageMeta" not in limits["2.39"]
    url = f"{C}/os-quota-sets/{member.project_id}"
    assert "floating_ips" in api.app.get(url, headers=at(member.headers, "2.35")).json["quota_set"]
    assert "floating_ips" not in api.app.get(url, headers=at(member.headers, "2.36")).json["quota_set"]


def test_os_hosts_gone_at_2_43(api):
    api.app.get(f"{C}/os-hosts", headers=at(admin_h(api), "2.42"))
    gone = api.app.get(f"{C}/os-hosts", headers=at(admin_h(api), "2.43"), status=404)
    assert "removed at 2.43" in gone.json["itemNotFound"]["message"]


def test_hypervisors_cpu_info_pages_and_uuids(api):
    with api.db.begin() as session:
        for host in ("hv1", "hv2", "hv3"):
            session.add(ComputeNode(host=host, vcpus=4, memory_mb=4096, disk_gb=40))
            session.add(Service(host=host, binary="fabric-compute", topic="compute", last_heartbeat=utcnow()))
    h = admin_h(api)
    detail = f"{C}/os-hypervisors/detail"
    assert api.app.get(detail, headers=at(h, "2.27")).json["hypervisors"][0]["cpu_info"] == "{}"
    assert api.app.get(detail, headers=at(h, "2.28")).json["hypervisors"][0]["cpu_info"] == {}
    assert len(api.app.get(f"{C}/os-hypervisors?limit=1", headers=at(h, "2.32")).json["hypervisors"]) == 3
    page = api.app.get(f"{C}/os-hypervisors?limit=1", headers=at(h, "2.33")).json
    assert [d["hypervisor_hostname"] for d in page["hypervisors"]] == ["hv1"] and page["hypervisors_links"]
    old_id = page["hypervisors"][0]["id"]
    assert isinstance(old_id, int)
    listed = api.app.get(f"{C}/os-hypervisors?hypervisor_hostname_pattern=hv2&with_servers=true",
                         headers=at(h, "2.53")).json["hypervisors"]
    assert [d["hypervisor_hostname"] for d in listed] == ["hv2"] and listed[0]["servers"] == []
    new_id = listed[0]["id"]
    assert len(new_id) == 36
    assert api.app.get(f"{C}/os-hypervisors/{new_id}", headers=at(h, "2.53")).json["hypervisor"]["id"] == new_id
    api.app.get(f"{C}/os-hypervisors/{new_id}", headers=at(h, "2.52"), status=404)
    # Services: UUIDs and PUT /os-services/{uuid} from 2.53; the old toggles refused there.
    services = api.app.get(f"{C}/os-services", headers=at(h, "2.53")).json["services"]
    target = next(s for s in services if s["host"] == "hv3")
    api.app.put_json(f"{C}/os-services/{target['id']}", {"status": "disabled"}, headers=at(h, "2.52"), status=400)
    updated = api.app.put_json(f"{C}/os-services/{target['id']}", {"status": "disabled", "disabled_reason": "maint"},
                               headers=at(h, "2.53")).json["service"]
    assert (updated["id"], updated["status"], updated["disabled_reason"]) == (target["id"], "disabled", "maint")
    old = api.app.put_json(f"{C}/os-services/enable", {"host": "hv3", "binary": "fabric-compute"},
                           headers=at(h, "2.53"), status=400)
    assert "'enable' is not a service UUID" in old.json["badRequest"]["message"]
    api.app.put_json(f"{C}/os-services/enable", {"host": "hv3", "binary": "fabric-compute"}, headers=at(h, "2.52"))


def test_aggregate_uuid_from_2_41(api):
    h = admin_h(api)
    made = api.app.post_json(f"{C}/os-aggregates", {"aggregate": {"name": "agg"}}, headers=at(h, "2.41"))
    with api.db.begin() as session:
        expected = session.scalar(sa.select(Aggregate.uuid))
    assert made.json["aggregate"]["uuid"] == expected
    assert "uuid" not in api.app.get(f"{C}/os-aggregates", headers=at(h, "2.40")).json["aggregates"][0]


def test_usage_pages_from_2_40(api):
    member, flavor, image = _setup(api)
    ids = []
    for _ in range(3):
        server_id = boot(api, member, flavor, image).json["server"]["id"]
        with api.db.begin() as session:
            session.execute(sa.update(Instance).where(Instance.id == server_id).values(launched_at=utcnow()))
        ids.append(server_id)
    url = f"{C}/os-simple-tenant-usage/{member.project_id}?detailed=1&limit=2"
    old = api.app.get(url, headers=at(member.headers, "2.39")).json
    assert len(old["tenant_usage"]["server_usages"]) == 3 and "tenant_usage_links" not in old
    page = api.app.get(url, headers=at(member.headers, "2.40")).json
    assert len(page["tenant_usage"]["server_usages"]) == 2 and "marker=" in page["tenant_usage_links"][0]["href"]


def test_action_events_for_members_from_2_51_and_flavor_description_at_2_55(api):
    member, flavor, image = _setup(api)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    with api.db.begin() as session:
        request_id = session.scalar(sa.select(InstanceAction.request_id).where(InstanceAction.instance_id == server_id))
    url = f"{C}/servers/{server_id}/os-instance-actions/{request_id}"
    assert "events" not in api.app.get(url, headers=at(member.headers, "2.50")).json["instanceAction"]
    events = api.app.get(url, headers=at(member.headers, "2.51")).json["instanceAction"]["events"]
    assert len(events) == 1 and "traceback" not in events[0]
    assert "traceback" in api.app.get(url, headers=at(admin_h(api), "2.50")).json["instanceAction"]["events"][0]

    assert "description" not in api.app.get(f"{C}/flavors/{flavor['id']}", headers=at(member.headers, "2.54")).json[
        "flavor"]
    assert api.app.get(f"{C}/flavors/{flavor['id']}", headers=at(member.headers, "2.55")).json["flavor"][
        "description"] is None
    body = {"flavor": {"name": "described", "ram": 64, "vcpus": 1, "description": "small"}}
    early = api.app.post_json(f"{C}/flavors", body, headers=at(admin_h(api), "2.54"), status=400)
    assert "flavor.description needs microversion 2.55" in early.json["badRequest"]["message"]
    created = api.app.post_json(f"{C}/flavors", body, headers=at(admin_h(api), "2.55")).json["flavor"]
    assert created["description"] == "small"
    url = f"{C}/flavors/{created['id']}"
    assert api.app.get(url, headers=at(member.headers, "2.55")).json["flavor"]["description"] == "small"
    listed = api.app.get(f"{C}/flavors/detail", headers=at(member.headers, "2.55")).json["flavors"]
    assert {f["id"]: f["description"] for f in listed}[created["id"]] == "small"
    assert "description" not in api.app.get(url, headers=at(member.headers, "2.54")).json["flavor"]


def test_flavor_description_updated_from_2_55_by_admins_alone(api):
    member = api.make_member()
    flavor = make_flavor(api)
    url = f"{C}/flavors/{flavor['id']}"
    early = api.app.put_json(url, {"flavor": {"description": "tiny"}}, headers=at(admin_h(api), "2.54"), status=400)
    assert "needs microversion 2.55" in early.json["badRequest"]["message"]
    api.app.put_json(url, {"flavor": {"description": "tiny"}}, headers=at(member.headers, "2.55"), status=403)
    changed = api.app.put_json(url, {"flavor": {"description": "tiny"}}, headers=at(admin_h(api), "2.55"))
    assert (changed.json["flavor"]["description"], changed.json["flavor"]["ram"]) == ("tiny", flavor["ram"])
    assert api.app.get(url, headers=at(member.headers, "2.55")).json["flavor"]["description"] == "tiny"
    other = api.app.put_json(url, {"flavor": {"name": "renamed"}}, headers=at(admin_h(api), "2.55"), status=400)
    assert "name" in other.json["badRequest"]["message"]  # only the description may change, as in Nova
    api.app.put_json(url, {"flavor": {"description": None}}, headers=at(admin_h(api), "2.55"))
    assert api.app.get(url, headers=at(member.headers, "2.55")).json["flavor"]["description"] is None
    api.app.put_json(f"{C}/flavors/no-such", {"flavor": {"description": "x"}}, headers=at(admin_h(api), "2.55"),
                     status=404)


def test_image_proxy_until_2_35(api):
    member, flavor, image = _setup(api)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    place(api, server_id)
    location = api.app.post_json(f"{C}/servers/{server_id}/action", {"createImage": {
        "name": "snap", "metadata": {"image_type": "test"}}}, headers=member.headers, status=202).headers["Location"]
    snapshot = location.rsplit("/", 1)[-1]
    shown = api.app.get(f"{C}/images/{snapshot}", headers=at(member.headers, "2.35")).json["image"]
    assert (shown["status"], shown["progress"], shown["server"]["id"]) == ("SAVING", 25, server_id)
    assert shown["metadata"]["image_type"] == "test"  # the request's metadata wins, as in Nova
    listed = api.app.get(f"{C}/images/detail", headers=member.headers).json["images"]
    assert {i["id"] for i in listed} == {image, snapshot}
    gone = api.app.get(f"{C}/images/{snapshot}", headers=at(member.headers, "2.36"), status=404)
    assert "removed at 2.36" in gone.json["itemNotFound"]["message"]
    other = api.make_member()
    api.app.get(f"{C}/images/{snapshot}", headers=other.headers, status=404)  # another project's private image
    api.app.delete(f"{C}/images/{snapshot}", headers=member.headers, status=204)
    api.app.get(f"{C}/images/{snapshot}", headers=member.headers, status=404)


def test_rebuild_answers_admin_pass_and_progress_only_while_running(api):
    member, flavor, image = _setup(api)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    place(api, server_id)
    assert api.app.get(f"{C}/servers/{server_id}", headers=member.headers).json["server"]["progress"] == 100
    rebuilt = api.app.post_json(f"{C}/servers/{server_id}/action", {"rebuild": {"imageRef": image,
                                                                                "adminPass": "pw-1"}},
                                headers=member.headers, status=202).json["server"]
    assert rebuilt["adminPass"] == "pw-1"
    place(api, server_id, vm_state="stopped")
    assert "progress" not in api.app.get(f"{C}/servers/{server_id}", headers=member.headers).json["server"]


def test_diagnostics_standard_fields_alone_from_2_48(api):
    member, flavor, image = _setup(api)
    server_id = boot(api, member, flavor, image).json["server"]["id"]
    place(api, server_id)
    api.recorder.answers["get_diagnostics"] = lambda kwargs: {"memory": 524288, "cpu0_time": 5}
    url = f"{C}/servers/{server_id}/diagnostics"
    before = api.app.get(url, headers=at(admin_h(api), "2.47")).json
    assert (before["memory"], before["num_cpus"]) == (524288, 1)  # the driver's blob, with the standard fields
    after = api.app.get(url, headers=at(admin_h(api), "2.48")).json
    assert "memory" not in after and (after["num_cpus"], after["memory_details"]["maximum"]) == (1, 512)
