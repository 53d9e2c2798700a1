"""The compute worker as a process on the real RabbitMQ: killed mid-build, it never leaves the build stuck.

The worker runs the fake driver with a slow spawn (``fake_spawn_seconds``)
so it can be killed while the instance is ``building/spawning``. The build
message was not yet acknowledged, so the restarted worker gets it again and
finishes the build.
"""

from __future__ import annotations

import io
import signal
import sys

import pytest

from fabric import config
from fabric.api import image_store
from fabric.compute import states
from fabric.compute.faults import latest_fault
from fabric.compute.rpcapi import ComputeAPI
from fabric.context import RequestContext
from fabric.db.models import ComputeNode, Image
from tests.fixtures.image_objectstore import serving_objectstore
from tests.fixtures.instances import add_instance
from tests.fixtures.processes import REPO, wait_until

pytestmark = pytest.mark.functional

HOST = "cmpk"
# Image ids are UUIDs (fabric.images); the image and its kernel belong to the instance's project "p".
IMAGE_ID, KERNEL_ID = "0b7f5a52-8a3e-4c1e-9f57-3d4c2b1a0e01", "0b7f5a52-8a3e-4c1e-9f57-3d4c2b1a0e02"


@pytest.fixture
def env(rabbit_vhost, sqlite_db, tmp_path):
    # The kernel's bytes in an objectstore of this test process, uploaded by the Image API's writer;
    # the worker downloads them over HTTP into its own data directory.
    settings = config.Settings().replace(default={"data_dir": str(tmp_path / "control")})
    with serving_objectstore(settings, sqlite_db) as served:
        kernel = b"not really a kernel"
        facts = image_store.write(served.settings, sqlite_db, KERNEL_ID, io.BytesIO(kernel).read, 100, len(kernel))
        with sqlite_db.begin() as session:
            session.add(Image(id=KERNEL_ID, name="kernel", owner="p", status="active", disk_format="aki", **facts))
            session.add(Image(id=IMAGE_ID, name="direct-boot", owner="p", status="active", disk_format="ami",
                              properties={"kernel_id": KERNEL_ID}))
        yield {"FABRIC_RPC_TRANSPORT_URL": rabbit_vhost,
               "FABRIC_DATABASE_URL": sqlite_db.url.render_as_string(hide_password=False),
               "FABRIC_DEFAULT_HOST": HOST, "FABRIC_DEFAULT_DATA_DIR": str(tmp_path / "compute"),
               "FABRIC_SERVICE_REPORT_INTERVAL": "0.2", "FABRIC_COMPUTE_DRIVER": "fake",
               "FABRIC_OBJECTSTORE_PORT": str(served.settings.objectstore.port)}


def test_a_build_interrupted_by_sigkill_ends_active_after_restart(spawn, env, sqlite_db, rabbit_vhost):
    from fabric import rpc

    slow = spawn([sys.executable, str(REPO / "bin/fabric-compute")],
                 env=env | {"FABRIC_COMPUTE_FAKE_SPAWN_SECONDS": "60"}, name="compute-slow")
    slow.wait_for_log(f"Started fabric-compute on host {HOST}", timeout=60)
    # The first resource report made this host known with the fake capacity.
    wait_until(lambda: _node(sqlite_db), 60, "the first resource report", workers=[slow])
    assert _node(sqlite_db).vcpus == 16

    instance_id = add_instance(sqlite_db, project_id="p", host=HOST, memory_mb=64, image_id=IMAGE_ID)
    transport = rpc.get_transport(config.Settings().replace(rpc={"transport_url": rabbit_vhost}).rpc)
    try:
        ComputeAPI(transport).build_instance(RequestContext(), HOST, instance_id)
    finally:
        transport.cleanup()
    wait_until(lambda: states.get_instance(sqlite_db, instance_id)["task_state"] == "spawning", 60,
               "the build reaching spawning", workers=[slow])
    slow.signal(signal.SIGKILL)
    assert slow.wait(10) == -signal.SIGKILL
    assert states.get_instance(sqlite_db, instance_id)["task_state"] == "spawning"  # left mid-way

    fast = spawn([sys.executable, str(REPO / "bin/fabric-compute")], env=env, name="compute-restarted")
    row = wait_until(lambda: (r := states.get_instance(sqlite_db, instance_id))["vm_state"] != "building" and r,
                     60, "the redelivered build finishing", workers=[fast])
    assert (row["vm_state"], row["task_state"], row["power_state"]) == ("active", None, 1)
    assert latest_fault(sqlite_db, instance_id) is None
    fast.signal(signal.SIGTERM)
    assert fast.wait(30) == 0, fast.log()


def _node(db):
    import sqlalchemy as sa

    with db.begin() as session:
        node = session.scalars(sa.select(ComputeNode).where(ComputeNode.host == HOST)).first()
        if node is not None:
            session.expunge(node)
        return node
