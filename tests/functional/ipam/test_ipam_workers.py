"""Four fabric-ipam workers on one database over the real RabbitMQ, 16 concurrent clients.

5,000 allocations and as many releases, on PostgreSQL and on MariaDB, in an
IPv4 subnet pool small enough to be reused many times over and an IPv6
routed segment: no address is ever handed out while another client holds
it, none is lost, and the tables end consistent (nothing held, every
ordinal below each pool's mark free again, lowest addresses handed out
first afterwards).
"""

from __future__ import annotations

import random
import sys
import time

import eventlet
import pytest
import sqlalchemy as sa

from fabric import config, rpc
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import AddressAllocation, AddressPool, Base, FreeAddress
from fabric.exception import AddressInUse
from fabric.ipam.rpcapi import IpamAPI
from tests.fixtures.processes import REPO
from tests.unit.ipam.conftest import make_subnet

pytestmark = [pytest.mark.functional, pytest.mark.slow]

WORKERS = 4
CLIENTS = 16
ALLOCATIONS = 5000
HELD_PER_CLIENT = 4
CTX = RequestContext(user_id="functional", project_id="tenant-a")


@pytest.fixture
def workers_db(request, make_empty_database):
    db = Database(make_empty_database(request.param))
    Base.metadata.create_all(db.engine)
    yield db
    db.dispose()


@pytest.mark.parametrize("workers_db", ["postgresql", "mariadb"], indirect=True)
def test_four_workers_sixteen_clients_never_share_an_address(workers_db, rabbit_vhost, spawn):
    db = workers_db
    url = db.url.render_as_string(hide_password=False)
    env = {"FABRIC_DATABASE_URL": url, "FABRIC_RPC_TRANSPORT_URL": rabbit_vhost,
           "FABRIC_DEFAULT_LOG_LEVEL": "WARNING", "FABRIC_RPC_CALL_TIMEOUT": "60",
           # psycopg's C wait would block the worker's hub; select() is green there.
           "PSYCOPG_WAIT_FUNC": "wait_select"}
    workers = [spawn([sys.executable, str(REPO / "bin" / "fabric-ipam")],
                     env=env | {"FABRIC_DEFAULT_HOST": f"ipam-{n}"}, name=f"ipam-{n}")
               for n in range(WORKERS)]
    transport = rpc.get_transport(config.Settings().replace(
        rpc={"transport_url": rabbit_vhost, "call_timeout": 60}).rpc)
    try:
        _wait_for_workers(transport, workers)
        api = IpamAPI(transport)
        subnet = make_subnet(db, "10.77.0.0/24", project_id="tenant-a")  # 253 allocatable addresses
        api.configure_datacenter(CTX, "fd00:77::/48", 16, 8, 8, 48)
        api.add_host(CTX, "compute-1")
        segment = api.add_segment(CTX, "tenant-a", "routed")
        _run_clients(api, subnet, segment["id"], workers)
        _check_final_state(db, api, subnet, segment["id"])
        for worker in workers:
            assert worker.popen.poll() is None, worker.log()
            assert "Traceback" not in worker.log(), worker.log()
    finally:
        transport.cleanup()


def _wait_for_workers(transport, workers) -> None:
    deadline = time.monotonic() + 60
    for n, worker in enumerate(workers):
        client = rpc.RPCClient(transport, rpc.Target(topic="ipam", server=f"ipam-{n}"))
        while True:
            try:
                assert client.call(CTX, "describe", timeout=2)["topic"] == "ipam"
                break
            except Exception:  # noqa: BLE001 - not consuming yet: any failure means try again
                if worker.popen.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{worker.name} did not start:\n{worker.log()}")
                eventlet.sleep(0.1)


def _run_clients(api: IpamAPI, subnet: str, segment_id: int, workers) -> None:
    holders: dict[tuple[str, str], str] = {}  # (pool, address) -> token, while held
    violations: list[str] = []
    counter = iter(range(ALLOCATIONS))
    stats = {"allocations": 0, "releases": 0, "v6": 0}

    def release(mine: list[tuple[str, str, str]], rng: random.Random) -> None:
        pool, address, token = mine.pop(rng.randrange(len(mine)))
        # Forget it before asking: from here on another client may get it.
        del holders[(pool, address)]
        released = api.release(CTX, pool=pool, request_token=token)
        assert [r["address"] for r in released] == [address]
        stats["releases"] += 1

    def client(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[tuple[str, str, str]] = []
        for i in counter:
            token = f"c{seed}-{i}"
            if rng.random() < 0.2:
                got = api.allocate(CTX, token, segment_id=segment_id, host="compute-1")
                stats["v6"] += 1
            else:
                got = api.allocate(CTX, token, subnet_id=subnet)
            key = (got["pool"], got["address"])
            if key in holders:
                violations.append(f"{key} handed to {token} while {holders[key]} holds it")
            holders[key] = token
            mine.append((got["pool"], got["address"], token))
            stats["allocations"] += 1
            if i % 97 == 0:  # a retried request gets the same address back
                assert api.allocate(CTX, token, subnet_id=None if ":" in got["address"] else subnet,
                                    segment_id=segment_id if ":" in got["address"] else None,
                                    host="compute-1" if ":" in got["address"] else None) == got
            while len(mine) > HELD_PER_CLIENT or (mine and rng.random() < 0.5):
                release(mine, rng)
        while mine:
            release(mine, rng)

    pool = eventlet.GreenPool(CLIENTS)
    threads = [pool.spawn(client, seed) for seed in range(CLIENTS)]
    for thread in threads:
        thread.wait()
    assert violations == []
    assert stats["allocations"] == stats["releases"] == ALLOCATIONS
    assert stats["v6"] > 500
    assert holders == {}


def _check_final_state(db: Database, api: IpamAPI, subnet: str, segment_id: int) -> None:
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(AddressAllocation)).scalar() == 0
        for pool_id, mark in conn.execute(sa.select(AddressPool.id, AddressPool.next_ordinal)).all():
            free = conn.execute(sa.select(FreeAddress.ordinal).where(FreeAddress.pool_id == pool_id)).scalars().all()
            # None lost: every ordinal ever handed out is free again, exactly once.
            assert sorted(o for o in free if o < mark) == list(range(mark)), pool_id
    # And they come back lowest first.
    got = [api.allocate(CTX, f"final-{i}", subnet_id=subnet)["address"] for i in range(5)]
    assert got == [f"10.77.0.{i}" for i in range(2, 7)]
    v6 = api.allocate(CTX, "final-v6", segment_id=segment_id, host="compute-1")
    assert v6["address"].endswith("::2")
    # Conflicts cross the real broker as themselves, naming the pool and the holder.
    with pytest.raises(AddressInUse) as err:
        api.allocate(CTX, "intruder", subnet_id=subnet, address="10.77.0.2")
    assert err.value.fields == {"address": "10.77.0.2", "pool": subnet, "holder": "final-0"}
