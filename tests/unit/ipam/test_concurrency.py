"""Several ipam workers at once on one database (PostgreSQL and MariaDB), each a lone caller.

Each worker here is a manager of its own (its own connections and its own
batching), driven by one thread that allocates one address at a time: every
request is a batch of one, so they race each other on the single-request path
(on PostgreSQL the prepared statement) rather than being combined. No address
is ever handed out while another request holds it, a retried request gets its
address back, and nothing is lost: afterwards every ordinal ever handed out is
free exactly once and the lowest addresses come back first.
"""

from __future__ import annotations

import random
import threading

import pytest
import sqlalchemy as sa

from fabric import config
from fabric.context import RequestContext
from fabric.db.models import AddressAllocation, AddressPool, FreeAddress
from fabric.ipam.manager import IpamManager
from tests.fixtures.databases import SERVER_BACKENDS
from tests.unit.ipam.conftest import make_subnet

CTX = RequestContext.admin()
WORKERS = 4
ALLOCATIONS_EACH = 80
HELD_EACH = 12


# SQLite serialises writers; the server backends are the concurrent case.
@pytest.mark.parametrize("db", SERVER_BACKENDS, indirect=True)
def test_lone_callers_in_several_workers_never_share_an_address_and_lose_none(db):
    managers = [IpamManager(config.Settings(), host=f"ipam-{n}", db=db) for n in range(WORKERS)]
    subnet = make_subnet(db, "10.40.0.0/25")  # 125 addresses, each handed out several times over
    holders: dict[str, str] = {}  # address -> token, while held
    violations: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def release(n: int, mine: list[tuple[str, str]], rng: random.Random) -> None:
        token, address = mine.pop(rng.randrange(len(mine)))
        with lock:  # forgotten before asking: from here on another worker may get it
            del holders[address]
        # Through another worker: any worker may free what one handed out.
        released = managers[(n + 1) % WORKERS].release(CTX, pool=subnet, request_token=token)
        assert [r["address"] for r in released] == [address]

    def worker(n: int) -> None:
        rng = random.Random(n)
        mine: list[tuple[str, str]] = []
        try:
            for i in range(ALLOCATIONS_EACH):
                token = f"w{n}-{i}"
                address = managers[n].allocate(CTX, token, subnet_id=subnet)["address"]
                with lock:
                    if address in holders:
                        violations.append(f"{address} handed to {token} while {holders[address]} holds it")
                    holders[address] = token
                mine.append((token, address))
                if i % 10 == 0:  # a retried request, to another worker: the same address
                    assert managers[(n + 2) % WORKERS].allocate(CTX, token, subnet_id=subnet)["address"] == address
                while len(mine) > HELD_EACH or (mine and rng.random() < 0.3):
                    release(n, mine, rng)
            while mine:
                release(n, mine, rng)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and violations == []
        assert holders == {}
        with db.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(AddressAllocation)).scalar() == 0
            mark = conn.execute(sa.select(AddressPool.next_ordinal).where(AddressPool.id == subnet)).scalar()
            free = conn.execute(sa.select(FreeAddress.ordinal).where(FreeAddress.pool_id == subnet)).scalars()
            # None lost: every ordinal ever handed out is free again, exactly once.
            assert sorted(o for o in free if o < mark) == list(range(mark))
        got = [managers[n % WORKERS].allocate(CTX, f"final-{n}", subnet_id=subnet)["address"] for n in range(3)]
        assert got == ["10.40.0.2", "10.40.0.3", "10.40.0.4"]
    finally:
        for manager in managers:
            manager.cleanup_host()
