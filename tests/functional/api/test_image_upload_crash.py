"""An image upload whose API process is killed mid-stream does not leave the image ``saving``:
its lease lapses, the restarted API's reaper puts it back to ``queued``, and its owner uploads
again through openstacksdk. A slow upload that keeps sending holds its image throughout.

The real ``fabric-api`` and ``fabric-objectstore`` processes over PostgreSQL and RabbitMQ, the
openstacksdk (and a raw HTTP client for the upload cut short); ``[api] image_upload_lease`` is
2 s so the test waits seconds, not minutes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import sys
import time

import openstack
import pytest

from fabric.api.bootstrap import bootstrap
from tests.fixtures.api import add_user
from tests.fixtures.processes import fabric_conf, free_port, wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

PASSWORD = "upload-crash-pw"
LEASE = 2.0


def _put_started(port: int, token: str, image_id: str, length: int, first: bytes) -> http.client.HTTPConnection:
    """A ``PUT .../file`` of ``length`` bytes of which only ``first`` has been sent."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest("PUT", f"/image/v2/images/{image_id}/file")
    for name, value in {"X-Auth-Token": token, "Content-Type": "application/octet-stream",
                        "Content-Length": str(length)}.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(first)
    return connection


def test_an_upload_killed_with_its_api_process_frees_the_image_for_a_new_one(postgres_db, rabbit_vhost, spawn,
                                                                              tmp_path):
    port = free_port()
    conf = fabric_conf(tmp_path / "fabric.conf", host="uploads", transport_url=rabbit_vhost,
                       database_url=postgres_db.url.render_as_string(hide_password=False),
                       api={"listen": "127.0.0.1", "port": port, "workers": 1, "image_upload_lease": LEASE},
                       objectstore={"port": free_port(), "workers": 1, "storage_dir": tmp_path / "objects"})
    bootstrap(postgres_db, PASSWORD)
    add_user(postgres_db, "uploads", "member", PASSWORD)
    objectstore = spawn([sys.executable, "-m", "fabric.cmd.objectstore", "--config-file", str(conf)],
                        name="fabric-objectstore")
    argv = [sys.executable, "-m", "fabric.cmd.api", "--config-file", str(conf)]
    api = spawn(argv, name="fabric-api")
    objectstore.wait_for_log("fabric objectstore listening on", timeout=90)
    api.wait_for_log("Started fabric-api on host uploads", timeout=120)

    cloud = openstack.connect(auth_url=f"http://127.0.0.1:{port}/v3", username="uploads-user", password=PASSWORD,
                              project_name="uploads", user_domain_name="Default", project_domain_name="Default",
                              region_name="RegionOne")
    try:
        _slow_then_killed(cloud, port, api, lambda: spawn(argv, name="fabric-api-restarted"))
    finally:
        cloud.close()


def _slow_then_killed(cloud, port: int, api, restart) -> None:
    def create(name: str):
        return cloud.image.create_image(name=name, disk_format="raw", container_format="bare",
                                        allow_duplicates=True)

    def status(image_id: str) -> str:
        return cloud.image.get_image(image_id).status

    # A slow client that keeps sending holds its image for more than two leases, and finishes.
    slow = create("slow")
    assert slow.status == "queued"
    token = cloud.auth_token
    chunks = [os.urandom(64 * 1024) for _ in range(5)]
    connection = _put_started(port, token, slow.id, sum(map(len, chunks)), chunks[0])
    started = time.monotonic()
    for chunk in chunks[1:]:
        time.sleep(LEASE * 0.6)  # the client's own pace, which is what is tested
        connection.send(chunk)
    assert connection.getresponse().status == 204 and time.monotonic() - started > 2 * LEASE
    connection.close()
    shown = cloud.image.get_image(slow.id)
    assert shown.status == "active" and shown.checksum == hashlib.md5(b"".join(chunks),
                                                                      usedforsecurity=False).hexdigest()
    assert "saving -> queued" not in api.log()

    # An upload whose API process is killed mid-stream.
    doomed = create("doomed")
    connection = _put_started(port, token, doomed.id, 4 * 1024 * 1024, os.urandom(256 * 1024))
    wait_until(lambda: status(doomed.id) == "saving", 30, "the upload under way", workers=[api], interval=0.2)
    os.kill(api.pid, signal.SIGKILL)
    api.wait(30)
    connection.close()
    api = restart()
    api.wait_for_log("Started fabric-api on host uploads", timeout=120)
    wait_until(lambda: status(doomed.id) == "queued", 10 * LEASE + 30, "the stalled upload put back to queued",
               workers=[api], interval=0.2)
    assert f"image {doomed.id}: its upload stopped" in api.log()

    # Its owner uploads again, through openstacksdk, and gets back what was sent.
    data = os.urandom(300_000)
    cloud.image.get_image(doomed.id).upload(cloud.image, data=data)
    again = cloud.image.get_image(doomed.id)
    assert again.status == "active" and again.size == len(data)
    assert again.checksum == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert b"".join(cloud.image.download_image(again, stream=True).iter_content(65536)) == data
