"""A volume worker killed mid-create: its volume does not stay ``creating``. Another volume
host's reaper ends it in ``error`` with the reason, over RabbitMQ and PostgreSQL, worker
processes killed by their own PID."""

from __future__ import annotations

import os
import signal
import sys
import textwrap

import pytest

from fabric.context import RequestContext
from fabric.db.models import Project, Volume
from fabric.volume.api import VolumeService
from fabric.volume.rpcapi import VolumeAPI
from tests.fixtures.processes import fabric_conf, wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def test_a_volume_whose_worker_died_mid_create_ends_in_error(postgres_db, rabbit_vhost, rabbit_transport, spawn,
                                                             tmp_path):
    db = postgres_db
    started = tmp_path / "qemu-img-started"
    # vol1's qemu-img announces itself, then hangs: the worker is killed while it runs.
    hanging = tmp_path / "hanging-qemu-img"
    hanging.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo $$ > {started}.partial && mv {started}.partial {started}
        exec sleep 600
        """))
    hanging.chmod(0o755)
    workers = {}
    for host, qemu_img in (("vol1", str(hanging)), ("vol2", "qemu-img")):
        (tmp_path / host).mkdir()
        conf = fabric_conf(tmp_path / host / "fabric.conf", host=host, transport_url=rabbit_vhost,
                           database_url=db.url.render_as_string(hide_password=False),
                           volume={"qemu_img": qemu_img, "transient_timeout": 3, "reap_interval": 1})
        workers[host] = spawn([sys.executable, "-m", "fabric.cmd.volume", "--config-file", str(conf)],
                              name=f"fabric-volume-{host}")
    for host, worker in workers.items():
        worker.wait_for_log(f"Started fabric-volume on host {host}", timeout=90)
    with db.begin() as session:
        session.add(Project(id="p-death", name="p-death"))
    service = VolumeService(db, VolumeAPI(rabbit_transport))
    ctx = RequestContext(user_id="u", project_id="p-death", roles=("member",))
    # Both hosts hold no volume: the emptier, then by name, takes it: vol1.
    volume = service.create(ctx, size=1, name="doomed")
    assert volume["host"] == "vol1"
    wait_until(started.exists, timeout=30, what="vol1's qemu-img running", workers=workers.values())
    hung = int(started.read_text())
    try:
        os.kill(workers["vol1"].popen.pid, signal.SIGKILL)
        workers["vol1"].popen.wait(30)
    finally:
        os.kill(hung, signal.SIGKILL)  # the orphaned stand-in, by its own PID
    ended = wait_until(lambda: (row := service.get(ctx, volume["id"]))["status"] != "creating" and row,
                       timeout=60, what="the reaper ending the create", workers=[workers["vol2"]])
    assert ended["status"] == "error" and "transient_timeout" in ended["status_reason"], ended
    with db.begin() as session:
        assert session.get(Volume, volume["id"]).status_reason == ended["status_reason"]
    assert not (tmp_path / "vol1" / "data" / "volumes" / f"volume-{volume['id']}.qcow2").exists()
    workers["vol2"].wait_for_log(f"volume reaper: volume {volume['id']}: creating -> error", timeout=10)
