"""A database restart in the middle of a boot storm costs nothing but time.

On PostgreSQL, then MariaDB. Every worker is its own process (``bin/fabric-api``, ``-scheduler``, ``-ipam``, and
a ``fabric-compute`` and ``fabric-network`` per host, fake virt and network
drivers) over RabbitMQ and the machine's database server. 200 servers are
created through the API (``POST /servers``, eight clients at once, each sending
a create again after the Retry-After of a 503, as a client should); once a third
of them are accepted the database server is stopped, kept down until the API has
answered 503 a few times (or a few seconds), and started again. Then:

* every create was answered 202 or 503 (with Retry-After), never anything else;
* every accepted server ends ACTIVE, or ERROR with a fault, within
  :data:`SETTLE_WITHIN` seconds (the reaper's timeout is ten minutes: it cannot
  be what settled them);
* nothing is doubled: exactly one instance per accepted create (a 503 wrote no
  row), one port and one address per active server, the claims on each host
  equal to what its servers hold, and each hypervisor runs exactly its active
  servers' guests.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from fabric.api.bootstrap import bootstrap
from fabric.compute import states
from fabric.db import Database
from fabric.db.models import AddressAllocation, ComputeNode, Instance, InstanceFault, Port
from fabric.db.types import utcnow
from tests.fixtures.databases import create_schema_database
from tests.fixtures.process_cloud import COMPUTE, Api, prepare, start_cloud
from tests.fixtures.processes import wait_until
from tests.functional.resilience.database_server import DatabaseServer

pytestmark = [pytest.mark.functional, pytest.mark.slow, pytest.mark.disruptive]

SERVERS = 200
CLIENTS = 8
HOSTS = ("h1", "h2")
#: Creates accepted before the database goes down.
RESTART_AFTER = SERVERS // 3
#: 503s the API must have given before the database comes back (or MAX_OUTAGE passes).
OUTAGE_503S = 3
MAX_OUTAGE = 5.0
#: Seconds after the storm within which every accepted server must have settled.
SETTLE_WITHIN = 60.0
PASSWORD = "restart-admin-pw"


def _start_cloud(spawn, tmp_path, db_url: str, vhost: str) -> tuple[list, int]:
    """Every worker its own process (tests/fixtures/process_cloud.py), a boot taking a moment so
    builds are in flight when the database goes: (workers, API port)."""
    cloud = start_cloud(spawn, tmp_path, db_url, vhost, hosts=HOSTS,
                        env={"FABRIC_COMPUTE_FAKE_SPAWN_SECONDS": "0.3"})
    return cloud.workers, cloud.api_port


def _prepare(api: Api) -> tuple[str, dict]:
    """Logged in as the admin, with what a create needs and quota for the storm: (project, server body)."""
    project = api.login(PASSWORD)
    return project, prepare(api, project, SERVERS)


class Storm:
    """200 creates from eight clients, each sent until accepted (after Retry-After on a 503);
    every answer, an event once RESTART_AFTER are accepted and one once OUTAGE_503S were 503."""

    def __init__(self, api: Api, body: dict) -> None:
        self.api = api
        self.body = body
        self.answers: list[tuple[int, str, dict]] = []  # (status, server id or "", headers/body)
        self.lock = threading.Lock()
        self.third_accepted = threading.Event()
        self.enough_503s = threading.Event()

    def create(self, n: int) -> None:
        body = {"server": dict(self.body["server"], name=f"storm-{n}")}
        for _ in range(60):
            status, headers, doc = self.api.request("POST", f"{COMPUTE}/servers", body)
            server_id = doc.get("server", {}).get("id", "") if status == 202 else ""
            retry_after = headers.get("retry-after")
            with self.lock:
                self.answers.append((status, server_id, {"retry-after": retry_after, "body": doc}))
                if len(self.accepted()) >= RESTART_AFTER:
                    self.third_accepted.set()
                if sum(1 for a in self.answers if a[0] == 503) >= OUTAGE_503S:
                    self.enough_503s.set()
            if status != 503 or not retry_after:
                return
            time.sleep(float(retry_after))

    def accepted(self) -> set[str]:
        return {server_id for status, server_id, _ in self.answers if status == 202}


def _in_flight(db: Database, project: str) -> int:
    with db.begin() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Instance).where(
            Instance.project_id == project, Instance.task_state.is_not(None)))


def _rows(db: Database, project: str) -> dict[str, dict]:
    with db.begin() as session:
        return {r.id: {"vm_state": r.vm_state, "task_state": r.task_state, "host": r.host,
                       "memory_mb": r.memory_mb, "vcpus": r.vcpus, "network_info": r.network_info}
                for r in session.scalars(sa.select(Instance).where(Instance.project_id == project,
                                                                   Instance.deleted.is_(False)))}


def _settled(rows: dict[str, dict]) -> bool:
    return all(r["task_state"] is None and r["vm_state"] in (states.ACTIVE, states.ERROR) for r in rows.values())


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_a_database_restart_during_a_boot_storm_costs_only_time(backend, database_servers, spawn, tmp_path,
                                                                rabbit_vhost):
    server = DatabaseServer(backend)
    db = Database(create_schema_database(database_servers, backend))
    try:
        bootstrap(db, PASSWORD)
        workers, port = _start_cloud(spawn, tmp_path, db.url.render_as_string(hide_password=False), rabbit_vhost)
        wait_until(lambda: _hosts_reported(db), 60, "both compute hosts to report", workers=workers)
        api = Api(port)
        project, body = _prepare(api)
        storm = Storm(api, body)
        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                answered = [pool.submit(storm.create, n) for n in range(SERVERS)]
                assert storm.third_accepted.wait(120), f"only {len(storm.accepted())} creates accepted in 120 s"
                building_at_stop = _in_flight(db, project)
                stopped_at = time.monotonic()
                server.stop()
                storm.enough_503s.wait(MAX_OUTAGE)
                server.start()
                outage = time.monotonic() - stopped_at
                for future in answered:
                    future.result()
        finally:
            server.ensure_running()
        storm_done = time.monotonic()

        others = [a for a in storm.answers if a[0] not in (202, 503)]
        assert not others, f"creates answered other than 202/503: {others[:5]}"
        refused = [extra for status, _, extra in storm.answers if status == 503]
        assert all(extra["retry-after"] for extra in refused)
        accepted = storm.accepted()
        assert len(accepted) == SERVERS, f"{len(accepted)} of {SERVERS} creates accepted in the end"
        # The restart really came in the middle: builds in flight, creates refused while it was down.
        assert building_at_stop > 0 and refused

        wait_until(lambda: _settled(_rows(db, project)), SETTLE_WITHIN,
                   f"every accepted server ACTIVE or ERROR (outage {outage:.1f}s)", workers=workers,
                   interval=0.5)
        settle_seconds = time.monotonic() - storm_done
        rows, active, errors, faults = check_storm_outcome(db, project, accepted, workers)
        # Handlers the outage interrupted were run again and went through (fabric.db.retry logs it).
        resumed = sum(w.log().count("went through after") for w in workers)
        assert resumed > 0, "no handler was interrupted by the outage"
        print(f"{backend} down {outage:.1f}s mid-storm with {building_at_stop} servers building: "
              f"{len(refused)} creates answered 503 and sent again, {resumed} handlers resumed; "
              f"{len(active)} ACTIVE, "
              f"{len(errors)} ERROR {sorted(set(m for f in faults.values() for m in f))[:3]}; "
              f"settled {settle_seconds:.1f}s after the storm")
    finally:
        server.ensure_running()
        db.dispose()


def _hosts_reported(db: Database, since=None) -> bool:
    with db.begin() as session:
        nodes = session.scalars(sa.select(ComputeNode).where(ComputeNode.host.in_(HOSTS))).all()
        return len(nodes) == len(HOSTS) and all(since is None or n.last_report > since for n in nodes)


def _faults(db: Database, instance_ids: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    with db.begin() as session:
        for row in session.scalars(sa.select(InstanceFault).where(InstanceFault.instance_id.in_(instance_ids))):
            found.setdefault(row.instance_id, []).append(row.message)
    return found


def check_storm_outcome(db, project: str, accepted: set[str], workers) -> tuple[dict, set, set, dict]:
    """A settled storm's end state, whatever the outage was: one instance per accepted create
    (a create answered 503 left nothing behind), every ERROR with a fault, nothing doubled, and
    each fake hypervisor running exactly its ACTIVE servers. Returns (rows, active ids, error ids,
    faults by id)."""
    rows = _rows(db, project)
    assert set(rows) == accepted
    errors = {i for i, r in rows.items() if r["vm_state"] == states.ERROR}
    active = set(rows) - errors
    faults = _faults(db, errors)
    assert all(faults.get(i) for i in errors), {i: faults.get(i) for i in errors}
    _assert_nothing_doubled(db, rows, active)
    settled_report = utcnow()
    wait_until(lambda: _hosts_reported(db, since=settled_report), 30, "a resource report after settling",
               workers=workers)
    _assert_hypervisors_run_exactly(db, rows, active)
    return rows, active, errors, faults


def _assert_nothing_doubled(db: Database, rows: dict[str, dict], active: set[str]) -> None:
    with db.begin() as session:
        ports = session.execute(sa.select(Port.device_id, Port.id).where(Port.device_id.in_(rows))).all()
        allocations = session.execute(sa.select(AddressAllocation.request_token, AddressAllocation.address)
                                      .where(AddressAllocation.request_token.startswith("instance:"))).all()
        nodes = {n.host: n for n in session.scalars(sa.select(ComputeNode).where(ComputeNode.host.in_(HOSTS)))}
    assert sorted(device for device, _ in ports) == sorted(active), "one port per active server, none else"
    owners = [token.split(":")[1] for token, _ in allocations]
    assert sorted(owners) == sorted(active), "one address per active server, none else"
    assert len({address for _, address in allocations}) == len(allocations)
    for server_id in active:
        assert len(rows[server_id]["network_info"]) == 1, rows[server_id]
    for host, node in nodes.items():
        held = [r for r in rows.values() if r["host"] == host]
        assert (node.memory_mb_used, node.vcpus_used) == (sum(r["memory_mb"] for r in held),
                                                         sum(r["vcpus"] for r in held)), host


def _assert_hypervisors_run_exactly(db: Database, rows: dict[str, dict], active: set[str]) -> None:
    with db.begin() as session:
        running = {n.host: n.stats.get("guests_running") for n in
                   session.scalars(sa.select(ComputeNode).where(ComputeNode.host.in_(HOSTS)))}
    expected = {host: sum(1 for i in active if rows[i]["host"] == host) for host in HOSTS}
    assert running == expected
