"""fabric.wsgi_processes: helper processes serving one port beside their worker, started, replaced
when they die, stopped by their PIDs; and fabric.wsgi.listen's refusal to share a port by mistake.

The helpers are real interpreters running ``tests.fixtures.pid_server`` (a WSGI app answering the
PID of the process that served the request); this test process plays their parent."""

from __future__ import annotations

import http.client
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from fabric import config, multiprocess_metrics, wsgi, wsgi_processes
from fabric.api import processes as api_processes
from fabric.exception import InvalidSetting
from fabric.objectstore import processes as objectstore_processes
from fabric.rpc.metrics import RpcMetrics
from tests.fixtures.processes import REPO, alive, free_port, helper_pids, wait_until

LAUNCHER = "tests.fixtures.pid_server"


def _answering_pid(port: int) -> int:
    """The PID that answers a request on a new connection (the kernel picks the process)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/")
        return int(connection.getresponse().read())
    finally:
        connection.close()


def _pids_answering(port: int, connections: int = 40) -> set[int]:
    # Two processes on one port: 40 connections all reach the same one with odds of 2**-39.
    return {_answering_pid(port) for _ in range(connections)}


@pytest.fixture
def helpers(request):
    """``helpers(count, listen=address) -> Helpers`` started on a free port; stopped after."""
    started: list[wsgi_processes.Helpers] = []

    def start(count: int, listen: str = "127.0.0.1") -> wsgi_processes.Helpers:
        settings = config.Settings().replace(api={"listen": listen})
        running = wsgi_processes.Helpers(settings, service="Test", launcher=LAUNCHER, port=free_port(), count=count)
        started.append(running)
        return running.start()

    yield start
    for running in started:
        running.stop()


# --- how many -------------------------------------------------------------------------------

@pytest.mark.parametrize(("configured", "port", "backend", "expected"), [
    (0, 8774, "postgresql", os.cpu_count()),
    (0, 8774, "sqlite", 1),
    (3, 8774, "sqlite", 3),
    (3, 0, "postgresql", 1),
    (0, 0, "postgresql", 1),
])
def test_process_count_follows_the_setting_the_cores_and_the_port(configured, port, backend, expected):
    assert wsgi_processes.process_count(configured, port=port, backend=backend) == expected


def test_the_api_and_the_objectstore_count_from_their_own_sections():
    settings = config.Settings().replace(rpc={"transport_url": "amqp://guest:guest@127.0.0.1:5672//"},
                                         api={"workers": 3, "port": 8774}, objectstore={"workers": 2, "port": 3333})
    assert api_processes.process_count(settings, "postgresql") == 3
    assert objectstore_processes.process_count(settings, "postgresql") == 2
    assert api_processes.helpers(settings, "postgresql").count == 2
    assert objectstore_processes.helpers(settings, "postgresql").count == 1


def test_the_api_on_the_memory_transport_is_one_process_and_refuses_more():
    settings = config.Settings().replace(rpc={"transport_url": "memory://"}, api={"port": 8774})
    assert api_processes.process_count(settings, "postgresql") == 1
    with pytest.raises(InvalidSetting) as refused:
        api_processes.process_count(settings.replace(api={"workers": 2}), "postgresql")
    assert "[api] workers = 2" in refused.value.message
    assert "memory:// transport reaches no other process" in refused.value.message


# --- one port, several processes --------------------------------------------------------------

def test_helpers_serve_one_port_from_distinct_processes_and_stop_by_their_pids(helpers):
    running = helpers(2)
    pids = running.pids
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert _pids_answering(running.port) == set(pids)
    command = Path(f"/proc/{pids[0]}/cmdline").read_bytes()
    assert f"from {LAUNCHER} import helper".encode() in command  # ps names whom it helps
    running.stop()
    assert not any(alive(pid) for pid in pids)
    assert running.pids == []
    with pytest.raises(OSError):
        _answering_pid(running.port)


def test_a_helper_that_dies_is_replaced_and_the_parent_says_so(helpers, caplog):
    caplog.set_level(logging.INFO, logger="fabric.wsgi_processes")
    running = helpers(2)
    victim, survivor = running.pids
    os.kill(victim, signal.SIGKILL)
    replaced = wait_until(lambda: "serves port" in caplog.text and running.pids, timeout=30,
                          what="the helper to be replaced")
    newcomer = next(pid for pid in replaced if pid not in (victim, survivor))
    assert f"Test helper process {victim} exited (status -9)" in caplog.text
    assert f"Test helper process {newcomer} serves port {running.port} in place of {victim}" in caplog.text
    assert _pids_answering(running.port) == {survivor, newcomer}
    assert not alive(victim)


def test_a_helper_that_keeps_dying_is_restarted_ever_later(helpers, caplog):
    caplog.set_level(logging.INFO, logger="fabric.wsgi_processes")
    running = helpers(1)
    delays = []
    for _ in range(2):
        victim = running.pids[0]
        mark = len(caplog.text)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda v=victim: f"in place of {v}" in caplog.text, timeout=30,
                   what=f"a helper in place of {victim}")
        said = caplog.text[mark:]
        delays.append(said.split("starting another in ", 1)[1].split("s", 1)[0])
    assert delays == ["1", "2"]  # each died within STABLE_AFTER of its start: the delay doubles
    assert _pids_answering(running.port) == set(running.pids)


def test_a_helper_ignores_ctrl_c_which_its_parent_handles(helpers):
    running = helpers(1)
    pid = running.pids[0]
    os.kill(pid, signal.SIGINT)
    assert _answering_pid(running.port) == pid
    assert running.pids == [pid] and alive(pid)


def test_a_helper_that_cannot_listen_fails_the_start_and_leaves_nothing(helpers, caplog):
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the helper's bind fails.
    with pytest.raises(wsgi_processes.HelperFailed) as failed:
        helpers(2, listen="192.0.2.1")
    assert "A helper process of Test exited (status 1)" in failed.value.message
    assert helper_pids(os.getpid(), LAUNCHER) == []


# --- the port is shared on purpose only ----------------------------------------------------------

def test_a_port_with_a_listener_is_refused_to_a_new_worker_and_open_to_its_helpers():
    port = free_port()
    first = wsgi.listen("127.0.0.1", port, reuse_port=True)
    try:
        with pytest.raises(wsgi.PortInUse) as refused:
            wsgi.listen("127.0.0.1", port, reuse_port=True)
        assert f"Cannot listen on 127.0.0.1 port {port}" in refused.value.message
        with pytest.raises(wsgi.PortInUse):
            wsgi.listen("127.0.0.1", port)
        wsgi.listen("127.0.0.1", port, reuse_port=True, join=True).close()
    finally:
        first.close()


def test_a_port_held_by_a_plain_listener_is_refused_even_to_reuse_port():
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(wsgi.PortInUse):
            wsgi.listen("127.0.0.1", plain.getsockname()[1], reuse_port=True)


# --- metrics ------------------------------------------------------------------------------------

def test_the_helpers_rpc_counts_reach_the_parents_scrape(helpers, tmp_path, monkeypatch):
    monkeypatch.setenv(multiprocess_metrics.VARIABLE, str(tmp_path))  # the helpers inherit it
    running = helpers(2)
    answered = [_answering_pid(running.port) for _ in range(30)]
    collector = multiprocess_metrics.MergedRpcCollector(RpcMetrics(), str(tmp_path))

    def sent() -> float:
        family = next(f for f in collector.collect() if f.name == "fabric_rpc_sent")
        return sum(s.value for s in family.samples if s.labels == {"kind": "cast", "topic": "pid",
                                                                   "method": "answered"})

    wait_until(lambda: sent() == 30, timeout=30, what="30 casts counted over both helpers")
    assert sorted(p.name for p in tmp_path.glob("rpc_*.json")) == sorted(
        f"rpc_{pid}.json" for pid in set(answered))
    running.stop()
    assert sent() == 30  # a helper's counts outlive it: they are totals


def test_fabric_api_on_a_port_something_listens_on_exits_with_one_clear_line(spawn, sqlite_db):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = spawn([sys.executable, str(REPO / "bin" / "fabric-api")], name="fabric-api",
                       env={"FABRIC_DATABASE_URL": str(sqlite_db.url), "FABRIC_API_LISTEN": "127.0.0.1",
                            "FABRIC_API_PORT": str(port)})
        assert worker.wait(60) == 2, worker.log()
    assert f"fabric-api: error: Cannot listen on 127.0.0.1 port {port}: something listens there already" \
        in worker.log()
