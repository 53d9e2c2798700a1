"""A server boots on a compute host that shares no directory with the API: its image comes over HTTP.

Every worker is its own process over RabbitMQ and PostgreSQL. The control side
(``fabric-api``, ``-objectstore``, ``-scheduler``, ``-ipam``) keeps its files under
CONTROL; the compute host (``fabric-compute`` and ``fabric-network``, fake drivers)
keeps its own under HOST and runs in a mount namespace of its own where CONTROL is an
empty tmpfs, so nothing the API or the objectstore wrote can be read there except
through the objectstore's HTTP port. An image uploaded through the Image API is then
found, byte for byte, in the host's image cache once the server is ACTIVE.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import urllib.request

import pytest

from fabric.api.bootstrap import bootstrap
from fabric.db import Database
from tests.fixtures.databases import create_schema_database, unavailable
from tests.fixtures.processes import REPO, free_port, stop_process, wait_until
from tests.fixtures.rabbitmq import RabbitVhost, broker_problem

pytestmark = [pytest.mark.functional]

PASSWORD = "images-http-pw"
COMPUTE = "/compute/v2.1"


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = ""

    def call(self, method: str, path: str, body=None, raw: bytes | None = None) -> dict:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data, method=method, headers={
            "X-Auth-Token": self.token,
            "Content-Type": "application/octet-stream" if raw is not None else "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            if method == "POST" and path == "/v3/auth/tokens":
                self.token = answer.headers["X-Subject-Token"]
            text = answer.read()
        return json.loads(text) if text else {}


def test_a_server_boots_on_a_host_that_shares_no_directory_with_the_api(database_servers, spawn, tmp_path):
    problem = broker_problem()
    if problem:
        unavailable(problem)
    if shutil.which("unshare") is None or os.geteuid() != 0:
        unavailable("a mount namespace of the compute host's own needs root and unshare(1)")
    db = Database(create_schema_database(database_servers))
    bootstrap(db, PASSWORD)
    vhost = RabbitVhost()
    vhost.create()
    started: list = []
    try:
        control, host = tmp_path / "control", tmp_path / "host"
        control.mkdir()
        host.mkdir()
        api_port = free_port()
        env = {"FABRIC_RPC_TRANSPORT_URL": vhost.url, "FABRIC_DATABASE_URL": db.url.render_as_string(False),
               "FABRIC_COMPUTE_DRIVER": "fake", "FABRIC_NETWORK_DRIVER": "fake",
               "FABRIC_SERVICE_ADVERTISE_ADDRESS": "127.0.0.1", "FABRIC_SERVICE_REPORT_INTERVAL": "2",
               "FABRIC_COMPUTE_RESOURCE_REPORT_INTERVAL": "2", "FABRIC_DATABASE_POOL_SIZE": "3",
               "FABRIC_API_LISTEN": "127.0.0.1", "FABRIC_API_PORT": str(api_port),
               "FABRIC_OBJECTSTORE_LISTEN": "127.0.0.1", "FABRIC_OBJECTSTORE_PORT": str(free_port())}
        unset = [arg for key in sorted(os.environ) if key.startswith("FABRIC_TEST_") for arg in ("-u", key)]
        for binary in ("fabric-ipam", "fabric-scheduler", "fabric-objectstore", "fabric-api"):
            started.append((spawn(["env", *unset, sys.executable, str(REPO / "bin" / binary)], name=binary,
                                  env=env | {"FABRIC_DEFAULT_HOST": "ctl",
                                             "FABRIC_DEFAULT_DATA_DIR": str(control / "data")}), binary, "ctl"))
        # unshare execs sh, which execs the worker: the PID spawn stops is the worker's own.
        hide = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o size=1m,mode=0700 hidden "$0" && exec "$@"', str(control)]
        for binary in ("fabric-network", "fabric-compute"):
            started.append((spawn([*hide, "env", *unset, sys.executable, str(REPO / "bin" / binary)], name=binary,
                                  env=env | {"FABRIC_DEFAULT_HOST": "h1",
                                             "FABRIC_DEFAULT_DATA_DIR": str(host / "data")}), binary, "h1"))
        for worker, binary, name in started:
            worker.wait_for_log(f"Started {binary} on host {name}", timeout=120)
        compute = started[-1][0]
        # The compute host sees an empty CONTROL (its own tmpfs); we see the API's files there.
        assert os.listdir(f"/proc/{compute.pid}/root{control}") == []
        assert os.listdir(control) != []

        api = Api(api_port)
        api.call("POST", "/v3/auth/tokens", {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
        flavor = api.call("POST", f"{COMPUTE}/flavors", {"flavor": {"name": "f1", "ram": 64, "vcpus": 1,
                                                                     "disk": 1}})["flavor"]["id"]
        data = os.urandom(3 * 1024 * 1024 + 7)
        image = api.call("POST", "/image/v2/images", {"name": "disk", "disk_format": "raw",
                                                      "container_format": "bare"})["id"]
        api.call("PUT", f"/image/v2/images/{image}/file", raw=data)
        shown = api.call("GET", f"/image/v2/images/{image}")
        assert (shown["status"], shown["size"], shown["os_hash_value"]) == (
            "active", len(data), hashlib.sha512(data).hexdigest())
        network = api.call("POST", "/networking/v2.0/networks", {"network": {"name": "n1"}})["network"]["id"]
        api.call("POST", "/networking/v2.0/subnets", {"subnet": {"network_id": network, "ip_version": 4,
                                                                 "cidr": "10.41.0.0/24"}})
        workers = [worker for worker, _, _ in started]
        wait_until(lambda: api.call("GET", f"{COMPUTE}/os-hypervisors")["hypervisors"], timeout=60,
                   what="the compute host to report", workers=workers, interval=0.5)
        server = api.call("POST", f"{COMPUTE}/servers", {"server": {
            "name": "vm1", "flavorRef": flavor, "imageRef": image, "networks": [{"uuid": network}]}})["server"]["id"]

        def settled():
            doc = api.call("GET", f"{COMPUTE}/servers/{server}")["server"]
            return doc if doc["status"] in ("ACTIVE", "ERROR") else None

        doc = wait_until(settled, timeout=120, what="the server to settle", workers=workers, interval=0.5)
        assert doc["status"] == "ACTIVE", doc.get("fault")
        assert doc["OS-EXT-SRV-ATTR:host"] == "h1"
        cached = host / "data" / "image-cache" / f"{image}.{hashlib.sha512(data).hexdigest()}"
        assert cached.read_bytes() == data
        assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temporary file left
        # The objectstore's blobs stayed on the control side.
        assert not (host / "data" / "objects").exists() and (control / "data" / "objects").is_dir()
    finally:
        for worker, _, _ in reversed(started):  # before the vhost and database go
            stop_process(worker.popen)
        vhost.delete()
        db.dispose()
