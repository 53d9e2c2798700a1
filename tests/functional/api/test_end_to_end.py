"""The whole flow with the real CLI: every worker in its own process
(fabric-ipam, -network, -compute, -scheduler, -api) over the real RabbitMQ and
PostgreSQL, fake virt and recording network drivers. ``server create --wait``
reaches ACTIVE, reboot and delete wait for the workers, and ``server event list`` shows
each request's action as the workers finished it."""

from __future__ import annotations

import sys

import pytest

from fabric.api.bootstrap import bootstrap
from tests.fixtures.cli import openstack_env
from tests.fixtures.processes import fabric_conf, free_port
from tests.functional.api.test_openstack_clients import PASSWORD

pytestmark = [pytest.mark.functional, pytest.mark.slow]

WORKERS = ("ipam", "network", "compute", "scheduler", "objectstore", "api")


def test_server_lifecycle_through_every_worker(postgres_db, rabbit_vhost, spawn, osc, tmp_path):
    port = free_port()
    conf = fabric_conf(tmp_path / "fabric.conf", host="e2e1", api_port=port, transport_url=rabbit_vhost,
                       database_url=postgres_db.url.render_as_string(hide_password=False),
                       compute={"driver": "fake"}, network={"driver": "fake"},
                       objectstore={"port": free_port()})
    bootstrap(postgres_db, PASSWORD)
    started = {name: spawn([sys.executable, "-m", f"fabric.cmd.{name}", "--config-file", str(conf)],
                           name=f"fabric-{name}") for name in WORKERS}
    for name, worker in started.items():
        worker.wait_for_log(f"Started fabric-{name} on host e2e1", timeout=90)
    env = openstack_env(f"http://127.0.0.1:{port}/v3", "admin", PASSWORD, "admin")
    osc(env, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "1", "m1.nano")
    (tmp_path / "disk.raw").write_bytes(b"\0" * 65536)
    osc(env, "image", "create", "--file", str(tmp_path / "disk.raw"), "--disk-format", "raw",
        "--container-format", "bare", "nano")
    osc(env, "network", "create", "net")
    osc(env, "subnet", "create", "--network", "net", "--subnet-range", "10.20.0.0/24", "sub")
    server = osc(env, "server", "create", "--flavor", "m1.nano", "--image", "nano", "--network", "net", "--wait",
                 "vm")
    assert server["status"] == "ACTIVE", server.get("fault")
    assert server["addresses"] == {"net": ["10.20.0.2"]}
    assert server["OS-EXT-SRV-ATTR:host"] == "e2e1"
    osc(env, "server", "reboot", "--wait", "vm", json_out=False)
    assert osc(env, "server", "show", "vm")["status"] == "ACTIVE"
    # Each request's action, newest first, finished by the worker that carried it out.
    events = osc(env, "server", "event", "list", server["id"])
    assert [e["Action"] for e in events] == ["reboot", "create"]
    for event in events:
        shown = osc(env, "server", "event", "show", server["id"], event["Request ID"])
        assert [(e["event"], e["result"]) for e in shown["events"]] == [(f"compute_{event['Action']}", "Success")]
        assert shown["events"][0]["finish_time"] >= shown["events"][0]["start_time"]
    assert [h["Hypervisor Hostname"] for h in osc(env, "hypervisor", "list")] == ["e2e1"]
    osc(env, "server", "delete", "--wait", "vm", json_out=False)
    assert osc(env, "server", "list") == []
    limits = {row["Name"]: row["Value"] for row in osc(env, "limits", "show", "--absolute")}
    assert limits["instances_used"] == 0

    # The same create, wait and delete through openstacksdk.
    import openstack

    conn = openstack.connect(auth_url=env["OS_AUTH_URL"], username="admin", password=PASSWORD,
                             project_name="admin", user_domain_name="Default", project_domain_name="Default")
    try:
        flavor = conn.compute.find_flavor("m1.nano")
        image = conn.image.find_image("nano")
        network = conn.network.find_network("net")
        created = conn.compute.create_server(name="sdk-vm", flavor_id=flavor.id, image_id=image.id,
                                             networks=[{"uuid": network.id}])
        active = conn.compute.wait_for_server(created, status="ACTIVE", wait=60)
        assert active.addresses["net"][0]["addr"].startswith("10.20.0.")
        conn.compute.delete_server(active)
        conn.compute.wait_for_delete(active, wait=60)
        assert list(conn.compute.servers()) == []
    finally:
        conn.close()
