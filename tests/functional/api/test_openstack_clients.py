"""The real `openstack` CLI and openstacksdk against a running ``fabric-api``
worker (its own process, over the real RabbitMQ and PostgreSQL).

The scheduler and compute queues are served here by recording RPC servers,
so each test can assert exactly what the API cast after it committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from fabric import config, rpc
from fabric.api.bootstrap import bootstrap
from fabric.db import Database
from fabric.db.models import ComputeNode, Instance, Service
from fabric.db.types import utcnow
from tests.fixtures.api import add_user
from tests.fixtures.cli import openstack_env
from tests.fixtures.databases import create_schema_database
from tests.fixtures.processes import REPO, Worker, fabric_conf, free_port, stop_process
from tests.fixtures.rabbitmq import RabbitVhost, broker_problem, unavailable
from tests.unit.rpc.conftest import wait_for

pytestmark = pytest.mark.functional

PASSWORD = "admin-pw"


class RecordingEndpoint:
    """An RPC endpoint that records what it was asked (handlers are its public methods)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def _record(self, name: str, ctx, kwargs: dict) -> None:
        self.calls.append((name, dict(kwargs, request_id=ctx.request_id, project_id=ctx.project_id)))

    def schedule_and_build(self, ctx, **kwargs):
        self._record("schedule_and_build", ctx, kwargs)

    def reboot_instance(self, ctx, **kwargs):
        self._record("reboot_instance", ctx, kwargs)

    def stop_instance(self, ctx, **kwargs):
        self._record("stop_instance", ctx, kwargs)

    def terminate_instance(self, ctx, **kwargs):
        self._record("terminate_instance", ctx, kwargs)


@dataclasses.dataclass
class Cloud:
    """A running fabric-api process shared by this module's tests (each works in its own project)."""

    db: Database
    auth_url: str
    scheduler: RecordingEndpoint
    compute: RecordingEndpoint

    def admin_env(self, name: str) -> dict[str, str]:
        """OS_* variables of a new user with the admin role on a new project ``name``."""
        add_user(self.db, name, "admin", PASSWORD)
        return openstack_env(self.auth_url, f"{name}-user", PASSWORD, name)

    def calls_for(self, endpoint: RecordingEndpoint, instance_id: str) -> list[tuple[str, dict]]:
        """What ``endpoint`` was asked about one server (other tests' servers share the workers)."""
        return [(name, kw) for name, kw in endpoint.calls if kw.get("instance_id") == instance_id]


@pytest.fixture(scope="module")
def cloud(database_servers, tmp_path_factory, signing_keys):
    """One fabric-api process (on its own PostgreSQL database and RabbitMQ vhost) with recording
    scheduler and compute RPC servers, for the whole module; stopped by its own PID after."""
    problem = broker_problem()
    if problem:
        unavailable(problem)
    tmp_path = tmp_path_factory.mktemp("cloud")
    db = Database(create_schema_database(database_servers))
    vhost = RabbitVhost()
    vhost.create()
    port = free_port()
    conf = fabric_conf(tmp_path / "fabric.conf", host="apitest", api_port=port, transport_url=vhost.url,
                       database_url=db.url.render_as_string(hide_password=False),
                       objectstore={"port": free_port(), "storage_dir": tmp_path / "objects"})
    bootstrap(db, PASSWORD)
    settings = config.load(conf)
    transport = rpc.get_transport(settings.rpc)
    scheduler, compute = RecordingEndpoint(), RecordingEndpoint()
    servers = [rpc.RPCServer(transport, topic="scheduler", host="sched1", endpoint=scheduler),
               rpc.RPCServer(transport, topic="compute", host="host1", endpoint=compute)]
    for server in servers:
        server.start()
    log_path = tmp_path / "fabric-api.log"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "fabric.cmd.api", "--config-file", str(conf)], cwd=REPO,
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, PYTHONPATH=str(REPO), FABRIC_SIGNING_KEY_DIR=str(signing_keys)))
    worker = Worker(popen, log_path, "fabric-api")
    # The Image API keeps image data in the objectstore.
    with open(tmp_path / "fabric-objectstore.log", "wb") as out:
        objectstore = subprocess.Popen([sys.executable, "-m", "fabric.cmd.objectstore", "--config-file", str(conf)],
                                       cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=dict(os.environ, PYTHONPATH=str(REPO),
                                                FABRIC_SIGNING_KEY_DIR=str(signing_keys)))
    try:
        worker.wait_for_log("fabric API listening on", timeout=60)
        Worker(objectstore, tmp_path / "fabric-objectstore.log", "fabric-objectstore").wait_for_log(
            "fabric objectstore listening on", timeout=60)
        yield Cloud(db, f"http://127.0.0.1:{port}/v3", scheduler, compute)
    finally:
        stop_process(objectstore)
        stop_process(popen)
        for server in servers:
            server.stop()
            server.wait(10)
        transport.cleanup()
        vhost.delete()
        db.dispose()


def test_openstack_cli_end_to_end(cloud, osc, tmp_path):
    env = cloud.admin_env("cli")
    db, scheduler, compute = cloud.db, cloud.scheduler, cloud.compute
    token = osc(env, "token", "issue")
    assert token["id"] and token["project_id"] and token["user_id"]

    osc(env, "flavor", "create", "--ram", "256", "--vcpus", "1", "--disk", "1", "m1.tiny")
    # Flavors are global and the module's other tests make their own: look at this test's.
    assert [f["Name"] for f in osc(env, "flavor", "list") if f["Name"] == "m1.tiny"] == ["m1.tiny"]

    key = osc(env, "keypair", "create", "key1", json_out=False)
    assert key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert [k["Name"] for k in osc(env, "keypair", "list")] == ["key1"]

    payload = os.urandom(300_000)
    (tmp_path / "disk.raw").write_bytes(payload)
    image = osc(env, "image", "create", "--file", str(tmp_path / "disk.raw"), "--disk-format", "raw",
                "--container-format", "bare", "tiny")
    assert image["status"] == "active" and image["size"] == len(payload)
    assert image["checksum"] == hashlib.md5(payload, usedforsecurity=False).hexdigest()
    osc(env, "image", "save", "--file", str(tmp_path / "back.raw"), "tiny", json_out=False)
    assert (tmp_path / "back.raw").read_bytes() == payload

    network = osc(env, "network", "create", "--provider-network-type", "vxlan", "--provider-segment", "4242",
                  "net1")
    assert (network["provider:network_type"], network["provider:segmentation_id"]) == ("vxlan", 4242)
    subnet = osc(env, "subnet", "create", "--network", "net1", "--subnet-range", "10.9.0.0/24", "sub1")
    assert subnet["gateway_ip"] == "10.9.0.1" and subnet["network_id"] == network["id"]

    server = osc(env, "server", "create", "--flavor", "m1.tiny", "--image", "tiny", "--network", "net1",
                 "--key-name", "key1", "vm1")
    assert server["status"] == "BUILD"
    # The row was committed, then the scheduler was cast over RabbitMQ.
    with db.begin() as session:
        row = session.get(Instance, server["id"])
        assert (row.vm_state, row.task_state, row.key_name) == ("building", "scheduling", "key1")
        assert row.requested_networks[0]["network_id"] == network["id"]
    wait_for(lambda: cloud.calls_for(scheduler, server["id"]), timeout=10, what="the scheduler cast")
    method, kwargs = cloud.calls_for(scheduler, server["id"])[0]
    assert (method, kwargs["project_id"]) == ("schedule_and_build", token["project_id"])

    listed = osc(env, "server", "list")
    assert [(s["Name"], s["Status"]) for s in listed] == [("vm1", "BUILD")]
    shown = osc(env, "server", "show", "vm1")
    assert shown["OS-EXT-STS:task_state"] == "scheduling" and shown["key_name"] == "key1"

    # What the scheduler and compute worker would record, then a hard reboot cast to that host.
    with db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == server["id"])
                        .values(host="host1", vm_state="active", task_state=None, power_state=1))
        session.add(Service(host="host1", binary="fabric-compute", topic="compute", last_heartbeat=utcnow()))
        session.add(ComputeNode(host="host1", vcpus=4, memory_mb=2048, disk_gb=20, vcpus_used=1))
    osc(env, "server", "reboot", "--hard", "vm1", json_out=False)
    wait_for(lambda: cloud.calls_for(compute, server["id"]), timeout=10, what="the compute cast")
    method, kwargs = cloud.calls_for(compute, server["id"])[0]
    assert method == "reboot_instance" and kwargs["hard"] is True
    assert osc(env, "server", "show", "vm1")["status"] == "HARD_REBOOT"

    hypervisors = osc(env, "hypervisor", "list")
    assert [(h["Hypervisor Hostname"], h["State"]) for h in hypervisors] == [("host1", "up")]
    services = osc(env, "compute", "service", "list")
    assert ("fabric-compute", "host1", "up") in [(s["Binary"], s["Host"], s["State"]) for s in services]

    # Delete: accepted at once (quota returned), terminate cast to the host.
    osc(env, "server", "delete", "vm1", json_out=False)
    wait_for(lambda: len(cloud.calls_for(compute, server["id"])) == 2, timeout=10, what="the terminate cast")
    assert cloud.calls_for(compute, server["id"])[1][0] == "terminate_instance"


def test_tenant_isolation_through_the_cli(cloud, osc, osc_fails, tmp_path):
    env = cloud.admin_env("owner")
    osc(env, "project", "create", "demo")
    osc(env, "user", "create", "--project", "demo", "--password", "demo-pw", "demo")
    osc(env, "role", "add", "--project", "demo", "--user", "demo", "member", json_out=False)
    demo = dict(env, OS_USERNAME="demo", OS_PASSWORD="demo-pw", OS_PROJECT_NAME="demo")

    osc(env, "flavor", "create", "--ram", "256", "--vcpus", "1", "m1.owner")
    network = osc(env, "network", "create", "admin-net")
    (tmp_path / "admin.img").write_bytes(b"admin image")
    image = osc(env, "image", "create", "--file", str(tmp_path / "admin.img"), "--disk-format", "raw",
                "--container-format", "bare", "admin-image")
    server = osc(env, "server", "create", "--flavor", "m1.owner", "--image", "admin-image", "--network",
                 "admin-net", "admin-vm")

    def owners_view() -> dict:
        """Each resource as its owner sees it through the CLI."""
        return {"server": osc(env, "server", "show", server["id"]), "image": osc(env, "image", "show", image["id"]),
                "network": osc(env, "network", "show", network["id"]),
                "flavors": sorted(f["Name"] for f in osc(env, "flavor", "list"))}

    before = owners_view()
    assert osc(env, "server", "list", user_env=demo) == []
    assert osc(env, "network", "list", user_env=demo) == []
    assert osc(env, "image", "list", user_env=demo) == []
    gone = f"Instance {server['id']} could not be found"
    assert f"No Server found for {server['id']}" in osc_fails(demo, 404, gone, "server", "show", server["id"])
    osc_fails(demo, 404, gone, "server", "delete", server["id"])
    osc_fails(demo, 404, gone, "server", "stop", server["id"])
    osc_fails(demo, 404, f"Image {image['id']} could not be found", "image", "delete", image["id"])
    osc_fails(demo, 404, f"Network {network['id']} could not be found", "network", "delete", network["id"])
    # Members cannot create flavors or see hypervisors.
    osc_fails(demo, 403, "creating flavors requires the admin role",
              "flavor", "create", "--ram", "1", "--vcpus", "1", "x")
    osc_fails(demo, 403, "listing hypervisors requires the admin role", "hypervisor", "list")

    # Every resource is still there and unchanged for its owner; nothing was cast to a worker.
    after = owners_view()
    assert after == before
    assert after["server"]["status"] == "BUILD" and "x" not in after["flavors"]
    with cloud.db.begin() as session:
        row = session.get(Instance, server["id"])
        assert (row.deleted, row.vm_state, row.task_state) == (False, "building", "scheduling")
    assert cloud.calls_for(cloud.compute, server["id"]) == []


def test_openstacksdk(cloud):
    import openstack

    env = cloud.admin_env("sdk")
    conn = openstack.connect(auth_url=env["OS_AUTH_URL"], username=env["OS_USERNAME"], password=PASSWORD,
                             project_name="sdk", user_domain_name="Default", project_domain_name="Default",
                             region_name="RegionOne", identity_api_version="3")
    try:
        flavor = conn.compute.create_flavor(name="sdk.small", ram=128, vcpus=1, disk=0)
        assert [f.name for f in conn.compute.flavors() if f.id == flavor.id] == ["sdk.small"]
        image = conn.image.create_image(name="sdk-image", data=b"x" * 1024, disk_format="raw",
                                        container_format="bare", allow_duplicates=True)
        assert conn.image.get_image(image.id).status == "active"
        network = conn.network.create_network(name="sdk-net")
        assert [n.id for n in conn.network.networks(name="sdk-net")] == [network.id]
        server = conn.compute.create_server(name="sdk-vm", flavor_id=flavor.id, image_id=image.id,
                                            networks=[{"uuid": network.id}])
        assert conn.compute.get_server(server.id).status == "BUILD"
        wait_for(lambda: cloud.calls_for(cloud.scheduler, server.id), timeout=10, what="the scheduler cast")
        conn.compute.delete_server(server.id)
        conn.compute.wait_for_delete(server, wait=30)
        assert list(conn.compute.servers()) == []
        limits = conn.compute.get_limits()
        assert limits.absolute.instances == 10 and limits.absolute.instances_used == 0
    finally:
        conn.close()


def test_the_shipped_openstack_script_works_unchanged(cloud):
    """The other tests send commands through one long-lived CLI process; this one runs the
    installed ``openstack`` executable itself, as a user would."""
    script = Path(sys.executable).parent / "openstack"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OS_")}, **cloud.admin_env("script")}

    def run(*argv: str) -> list | dict:
        done = subprocess.run([str(script), *argv, "-f", "json"], env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    token = run("token", "issue")
    assert token["project_id"] and token["user_id"]
    assert run("server", "list") == []
    assert {"compute", "image", "network", "identity"} <= {row["Type"] for row in run("catalog", "list")}
