"""The Compute extras through the real `openstack` CLI against every worker in its own process
(tests/fixtures/process_cloud.py: fabric-api, -scheduler, -ipam, -objectstore, and a
fabric-compute and fabric-network per host h1 and h2, fake virt and network drivers) over the
real RabbitMQ and PostgreSQL.

What the CLI negotiates is what it gets: it asks for microversion 2.26 (fabric's newest),
so ``server set --description`` (2.19), ``--tag`` and ``server list --tags`` (2.26) and the
soft server-group policies (2.15) work as on Nova. Checked through the results, not only
the exit status: flavor properties set and unset, one matching an aggregate's metadata
placing servers on that aggregate's host; a name and description set and cleared; tags added, listed, filtered and
removed; diagnostics read from the fake driver on the server's host (and refused to a
member); an aggregate with a zone and a host, and a server created into that zone landing on
that host; server groups of each policy placing their members as the policy says; the legacy
host list and hypervisor show.
"""

from __future__ import annotations

import pytest

from fabric.api.bootstrap import bootstrap
from tests.fixtures.api import add_user
from tests.fixtures.cli import openstack_env
from tests.fixtures.process_cloud import start_cloud

pytestmark = [pytest.mark.functional, pytest.mark.slow]

PASSWORD = "extras-admin-pw"
HOSTS = ("h1", "h2")


def test_compute_extras_through_the_cli(postgres_db, rabbit_vhost, spawn, osc, osc_fails, tmp_path):
    bootstrap(postgres_db, PASSWORD)
    cloud = start_cloud(spawn, tmp_path, postgres_db.url.render_as_string(hide_password=False), rabbit_vhost,
                        hosts=HOSTS)
    auth_url = f"http://127.0.0.1:{cloud.api_port}/v3"
    admin = openstack_env(auth_url, "admin", PASSWORD, "admin")
    osc(admin, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "1", "x.tiny")
    (tmp_path / "disk.raw").write_bytes(b"\0" * 4096)
    osc(admin, "image", "create", "--file", str(tmp_path / "disk.raw"), "--disk-format", "raw",
        "--container-format", "bare", "--public", "x-image")
    osc(admin, "network", "create", "--share", "x-net")
    osc(admin, "subnet", "create", "--network", "x-net", "--subnet-range", "10.61.0.0/24", "x-sub")
    boot = ["--flavor", "x.tiny", "--image", "x-image", "--network", "x-net"]

    def host_of(server: dict) -> str:
        return server["OS-EXT-SRV-ATTR:host"]

    # --- aggregates, zones, hosts ------------------------------------------------------------
    made = osc(admin, "aggregate", "create", "--zone", "az-x", "--property", "ssd=true", "agg-x")
    assert (made["name"], made["availability_zone"]) == ("agg-x", "az-x")
    osc(admin, "aggregate", "add", "host", "agg-x", "h2")
    shown = osc(admin, "aggregate", "show", "agg-x")
    assert shown["hosts"] == ["h2"] and shown["properties"] in ({"ssd": "true"}, "ssd='true'")
    osc(admin, "aggregate", "set", "--property", "rack=r7", "agg-x", json_out=False)
    assert osc(admin, "aggregate", "show", "agg-x")["properties"] in (
        {"rack": "r7", "ssd": "true"}, "rack='r7', ssd='true'")
    assert [(a["Name"], a["Availability Zone"]) for a in osc(admin, "aggregate", "list")] == [("agg-x", "az-x")]
    osc_fails(admin, 404, "nowhere", "aggregate", "add", "host", "agg-x", "nowhere")
    zones = {z["Zone Name"]: z["Zone Status"] for z in osc(admin, "availability", "zone", "list", "--compute")}
    assert zones == {"az-x": "available", "nova": "available", "internal": "available"}  # admins see internal
    hosts = {(h["Host Name"], h["Service"]): h["Zone"] for h in osc(admin, "host", "list")}
    assert (hosts[("h1", "compute")], hosts[("h2", "compute")], hosts[("ctl", "scheduler")]) == (
        "nova", "az-x", "internal")
    hypervisor = osc(admin, "hypervisor", "show", "h2")
    assert (hypervisor["hypervisor_hostname"], hypervisor["aggregates"]) == ("h2", ["agg-x"])

    # A server asked into the zone lands on the zone's one host, twice over.
    for name in ("in-az-1", "in-az-2"):
        server = osc(admin, "server", "create", *boot, "--availability-zone", "az-x", "--wait", name)
        assert (server["status"], host_of(server)) == ("ACTIVE", "h2"), server.get("fault")

    # --- flavor extra specs: a flavor asking for the aggregate's "ssd" places on its host ------------
    ssd = osc(admin, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "1",
              "--property", "aggregate_instance_extra_specs:ssd=true", "x.ssd")
    assert ssd["properties"] in ({"aggregate_instance_extra_specs:ssd": "true"},
                                 "aggregate_instance_extra_specs:ssd='true'"), ssd
    osc(admin, "flavor", "set", "--property", "hw:cpu_policy=shared", "--property", "note=x", "x.ssd", json_out=False)
    osc(admin, "flavor", "unset", "--property", "note", "x.ssd", json_out=False)
    assert osc(admin, "flavor", "show", "x.ssd")["properties"] in (
        {"aggregate_instance_extra_specs:ssd": "true", "hw:cpu_policy": "shared"},
        "aggregate_instance_extra_specs:ssd='true', hw:cpu_policy='shared'")
    for name in ("ssd-1", "ssd-2"):
        server = osc(admin, "server", "create", "--flavor", "x.ssd", "--image", "x-image", "--network", "x-net",
                     "--wait", name)
        assert (server["status"], host_of(server)) == ("ACTIVE", "h2"), server.get("fault")
    osc(admin, "server", "delete", "--wait", "ssd-1", "ssd-2", json_out=False)

    # --- name, description, tags ----------------------------------------------------------------
    osc(admin, "server", "set", "--name", "renamed", "--description", "web tier", "in-az-1", json_out=False)
    shown = osc(admin, "server", "show", "renamed")
    assert (shown["name"], shown["description"]) == ("renamed", "web tier")
    osc(admin, "server", "unset", "--description", "renamed", json_out=False)
    assert osc(admin, "server", "show", "renamed")["description"] in ("", None)

    osc(admin, "server", "set", "--tag", "web", "--tag", "blue", "renamed", json_out=False)
    assert osc(admin, "server", "show", "renamed")["tags"] in (["blue", "web"], "blue, web")
    assert [s["Name"] for s in osc(admin, "server", "list", "--tags", "web")] == ["renamed"]
    assert [s["Name"] for s in osc(admin, "server", "list", "--tags", "web,blue")] == ["renamed"]
    assert "renamed" not in [s["Name"] for s in osc(admin, "server", "list", "--not-tags", "web")]
    osc(admin, "server", "unset", "--tag", "web", "renamed", json_out=False)
    assert osc(admin, "server", "show", "renamed")["tags"] in (["blue"], "blue")
    assert osc(admin, "server", "list", "--tags", "web") == []
    osc_fails(admin, 400, "'a,b'", "server", "set", "--tag", "a,b", "renamed")

    # --- diagnostics: asked of the fake driver on h2; admins only -------------------------------
    diagnostics = osc(admin, "server", "show", "--diagnostics", "renamed")
    assert (diagnostics["state"], diagnostics["driver"], diagnostics["num_cpus"], diagnostics["num_nics"]) == (
        "running", "fake", 1, 1), diagnostics
    assert diagnostics["memory_details"] in ({"maximum": 128, "used": 128}, "maximum='128', used='128'")
    add_user(postgres_db, "x-member", "member", "member-pw")
    member = openstack_env(auth_url, "x-member-user", "member-pw", "x-member")
    own = osc(member, "server", "create", *boot, "--wait", "members-vm")
    osc_fails(member, 403, "reading server diagnostics requires the admin role", "server", "show",
              "--diagnostics", own["id"])

    # --- server groups, one per policy ------------------------------------------------------------
    for policy, together in (("affinity", True), ("anti-affinity", False), ("soft-affinity", True),
                             ("soft-anti-affinity", False)):
        group = osc(admin, "server", "group", "create", "--policy", policy, f"g-{policy}")
        assert group["policies"] in ([policy], policy), group
        placed = [host_of(osc(admin, "server", "create", *boot, "--hint", f"group={group['id']}", "--wait",
                              f"{policy}-{n}")) for n in (1, 2)]
        assert (placed[0] == placed[1]) is together, (policy, placed)
        members = osc(admin, "server", "group", "show", group["id"])["members"]
        assert len(members if isinstance(members, list) else members.split(", ")) == 2
        osc(admin, "server", "delete", "--wait", f"{policy}-1", f"{policy}-2", json_out=False)
        osc(admin, "server", "group", "delete", group["id"], json_out=False)
    assert osc(admin, "server", "group", "list") == []

    # An aggregate with hosts is not deleted; without them it is.
    osc_fails(admin, 400, "still has hosts h2", "aggregate", "delete", "agg-x")
    osc(admin, "aggregate", "remove", "host", "agg-x", "h2")
    osc(admin, "aggregate", "delete", "agg-x", json_out=False)
    assert osc(admin, "aggregate", "list") == []
