"""``[api] workers = 2``: the real ``fabric-api`` (and ``fabric-all``) serves its port from two
processes over PostgreSQL and RabbitMQ. New connections are answered by both (told apart by the
kernel: the process holding the connection's server-side socket is the one that answered it);
both reach the workers over RPC; the one ``/metrics`` counts every process's requests and casts;
a helper killed is replaced and the API keeps answering; SIGTERM to the launcher leaves no
process and no metrics directory behind."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fabric.api.bootstrap import bootstrap
from tests.fixtures.processes import alive, fabric_conf, free_port, helper_pids, wait_until
from tests.functional.api.test_openstack_clients import PASSWORD

pytestmark = [pytest.mark.functional, pytest.mark.slow]

#: Two processes on one port: this many new connections all reach one of them with odds of 2**-39.
CONNECTIONS = 40


# --- which process answered ------------------------------------------------------------------------

def _socket_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server side of the loopback connection client_port -> server_port."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return fields[9]
    return None


def _holder(inode: str, pids: list[int]) -> int | None:
    """Which of ``pids`` has the socket ``inode`` open."""
    wanted = f"socket:[{inode}]"
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        try:
            if any(os.readlink(fd) == wanted for fd in fds.iterdir()):
                return pid
        except FileNotFoundError:  # an fd closed while we looked
            continue
    return None


def _answered_by(port: int, pids: list[int], method: str = "GET", path: str = "/v3",
                 body: dict | None = None, token: str | None = None) -> tuple[int, int]:
    """(status, PID of the process that answered) for one request on a new connection. The
    connection is kept alive after the answer, so its server-side socket is still open then."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} | ({"X-Auth-Token": token} if token else {})
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        response.read()
        inode = _socket_inode(port, connection.sock.getsockname()[1])
        assert inode is not None, "the server closed a keep-alive connection"
        holder = _holder(inode, pids)
        assert holder is not None, f"none of {pids} holds the connection's socket"
        return response.status, holder
    finally:
        connection.close()


# --- the processes ---------------------------------------------------------------------------------

def _helpers_of(parent: int) -> list[int]:
    return helper_pids(parent, "fabric.cmd.api")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        return answer.read().decode()


def _value(text: str, sample: str, **labels: str) -> float | None:
    """The value of ``sample`` with exactly ``labels`` in the scrape ``text``, None when absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return found.value
    return None


def _token(port: int) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v3/auth/tokens", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.headers["X-Subject-Token"]


@pytest.mark.parametrize("launcher", ["api", "all"])
def test_two_processes_serve_the_api_are_replaced_when_killed_and_stop_together(
        launcher, postgres_db, rabbit_vhost, spawn, tmp_path):
    port, metrics_port = free_port(), free_port()
    conf = fabric_conf(tmp_path / "fabric.conf", host="apiprocs", transport_url=rabbit_vhost,
                       database_url=postgres_db.url.render_as_string(hide_password=False),
                       api={"listen": "127.0.0.1", "port": port, "workers": 2},
                       metrics={"port": metrics_port}, compute={"driver": "fake"}, network={"driver": "fake"},
                       objectstore={"port": free_port(), "workers": 1}, dashboard={"port": free_port()})
    bootstrap(postgres_db, PASSWORD)
    api = spawn([sys.executable, "-m", f"fabric.cmd.{launcher}", "--config-file", str(conf)], name=f"fabric-{launcher}")
    if launcher == "api":  # the casts of network creation need a network worker to take them
        network = spawn([sys.executable, "-m", "fabric.cmd.network", "--config-file", str(conf)],
                        env={"FABRIC_METRICS_PORT": "0"}, name="fabric-network")  # the port is the API's
        network.wait_for_log("Started fabric-network on host apiprocs", timeout=90)
    api.wait_for_log("Started fabric-api on host apiprocs", timeout=120)
    [helper] = _helpers_of(api.pid)
    assert f"API helper processes [{helper}] serve port {port} too" in api.log()
    # The launcher made the directory its processes count in after it started: its helpers'
    # environment names it.
    metrics_dir = Path(dict(line.split("=", 1) for line in Path(f"/proc/{helper}/environ").read_text()
                            .split("\0") if "=" in line)["PROMETHEUS_MULTIPROC_DIR"])
    assert metrics_dir.is_dir()

    # Both processes answer new connections.
    answers = [_answered_by(port, [api.pid, helper]) for _ in range(CONNECTIONS)]
    assert {status for status, _ in answers} == {200}
    assert {pid for _, pid in answers} == {api.pid, helper}

    # Both reach the workers over RPC (their casts signed as the API's): networks created through
    # either process are announced to the network workers, and /metrics counts every cast.
    token = _token(port)
    created = [_answered_by(port, [api.pid, helper], "POST", "/networking/v2.0/networks",
                            {"network": {"name": f"n{i}"}}, token) for i in range(CONNECTIONS // 2)]
    assert {status for status, _ in created} == {201}
    assert helper in {pid for _, pid in created}
    wait_until(lambda: _value(_scrape(metrics_port), "fabric_rpc_sent_total", kind="cast", topic="network",
                              method="network_created") == len(created),
               30, f"{len(created)} network_created casts counted", workers=[api])
    scraped = _scrape(metrics_port)
    assert _value(scraped, "fabric_api_requests_total", route="/v3", method="GET", status="200") == CONNECTIONS
    assert _value(scraped, "fabric_api_requests_total", route="/networking/v2.0/networks", method="POST",
                  status="201") == len(created)
    assert "# TYPE fabric_instances gauge" in scraped  # the API's own collector, beside the shared files

    # A helper killed is replaced, and the parent says so.
    mark = api.log_mark()
    os.kill(helper, signal.SIGKILL)
    api.wait_for_log(f"API helper process {helper} exited (status -9)", since=mark, timeout=30)
    api.wait_for_log(f"serves port {port} in place of {helper}", since=mark, timeout=60)
    [newcomer] = _helpers_of(api.pid)
    assert newcomer != helper and not alive(helper)
    answers = [_answered_by(port, [api.pid, newcomer]) for _ in range(CONNECTIONS)]
    assert {status for status, _ in answers} == {200}
    assert {pid for _, pid in answers} == {api.pid, newcomer}

    # SIGTERM to the launcher stops every process serving the port, and nothing is left.
    api.signal(signal.SIGTERM)
    assert api.wait(60) == 0
    assert not alive(newcomer) and _helpers_of(api.pid) == []
    assert not metrics_dir.exists()
    with pytest.raises(ConnectionRefusedError):
        _answered_by(port, [])
