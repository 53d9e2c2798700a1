"""Group commit: the combiner, and batched allocation and release on every backend."""

from __future__ import annotations

import threading

import pytest

from fabric.context import RequestContext
from fabric.exception import AddressExhausted
from fabric.ipam.allocator import EXTEND_BY
from fabric.ipam.batching import FALLBACK, GroupCommit
from tests.fixtures.databases import SERVER_BACKENDS
from tests.fixtures.processes import wait_until
from tests.unit.ipam.conftest import make_subnet, snapshot

CTX = RequestContext.admin()


class HeldBatches:
    """A batch function whose first call blocks until released, recording every call."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.go = threading.Event()
        self.fail_on = fail_on

    def __call__(self, key, requests):
        self.calls.append(list(requests))
        self.entered.set()
        self.go.wait(10)
        if self.fail_on in requests:
            raise RuntimeError("constraint violated")
        return [f"{key}:{r}" for r in requests]


def _submit_all(combiner: GroupCommit, batches: HeldBatches, key: str, requests: list[str]) -> dict:
    """The first request's batch is held open while the rest queue behind it."""
    results: dict[str, object] = {}

    def submit(request: str) -> None:
        results[request] = combiner.submit(key, request)

    threads = [threading.Thread(target=submit, args=(requests[0],))]
    threads[0].start()
    assert batches.entered.wait(10)
    for request in requests[1:]:
        threads.append(threading.Thread(target=submit, args=(request,)))
        threads[-1].start()
    wait_until(lambda: combiner.waiting(key) == len(requests) - 1, 10, "the requests to queue", interval=0.002)
    batches.go.set()
    for t in threads:
        t.join(10)
    return results


def test_requests_queued_behind_a_running_batch_go_together_in_the_next():
    batches = HeldBatches()
    combiner = GroupCommit(batches, max_batch=4)
    requests = ["r0", "r1", "r2", "r3", "r4", "r5"]
    results = _submit_all(combiner, batches, "pool", requests)
    assert results == {r: f"pool:{r}" for r in requests}
    assert batches.calls[0] == ["r0"]
    # At most max_batch per batch, every request exactly once.
    assert [len(c) for c in batches.calls[1:]] == [4, 1]
    assert sorted(sum(batches.calls, [])) == requests
    assert (combiner.batches, combiner.requests) == (3, 6)
    assert combiner.waiting("pool") == 0 and combiner._keys == {}


def test_a_failed_batch_answers_fallback_to_each_of_its_requests_only():
    batches = HeldBatches(fail_on="bad")
    combiner = GroupCommit(batches, max_batch=8)
    results = _submit_all(combiner, batches, "pool", ["r0", "bad", "r2"])
    assert results == {"r0": "pool:r0", "bad": FALLBACK, "r2": FALLBACK}
    assert combiner.submit("pool", "later") == "pool:later"


def test_keys_do_not_wait_for_each_other():
    batches = HeldBatches()
    combiner = GroupCommit(batches, max_batch=8)
    held = threading.Thread(target=combiner.submit, args=("pool-a", "a0"))
    held.start()
    assert batches.entered.wait(10)
    done = threading.Event()

    def other_key():
        # pool-a's lane is busy; pool-b runs at once (its batch function call is
        # recorded; it too blocks on the same gate, so only check it started).
        combiner.submit("pool-b", "b0")
        done.set()

    other = threading.Thread(target=other_key)
    other.start()
    wait_until(lambda: ["b0"] in batches.calls, 10, "pool-b's batch to start while pool-a's runs", interval=0.002)
    batches.go.set()
    held.join(10)
    other.join(10)
    assert done.is_set()


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="max_batch 0"):
        GroupCommit(lambda k, r: r, max_batch=0)


# --- batched allocation and release on every backend -------------------------------------------


def test_a_batch_takes_the_lowest_free_then_raises_the_mark_once(ipam, db):
    subnet = make_subnet(db, "10.30.0.0/24")  # ordinals 0.. are .2 ..
    first = [ipam.allocate(CTX, f"a{i}", subnet_id=subnet) for i in range(5)]  # .2-.6
    for token in ("a1", "a3"):
        ipam.release(CTX, pool=subnet, request_token=token)  # .3, .5 free again
    allocator = ipam.allocator
    count = 2 + EXTEND_BY  # both free rows, the rest of the chunk, and beyond the mark
    answers = allocator.allocate_many(subnet, [(f"b{i}", None) for i in range(count)])
    got = [a["address"] for a in answers]
    expected = ["10.30.0.3", "10.30.0.5"] + [f"10.30.0.{i}" for i in range(7, 7 + count - 2)]
    assert got == expected
    held = [r["address"] for r in ipam.list_allocations(CTX, pool=subnet)]
    assert len(held) == len(set(held)) == 3 + count
    # The spare ordinals of the raise are free rows: single allocations continue lowest first.
    assert ipam.allocate(CTX, "c0", subnet_id=subnet)["address"] == f"10.30.0.{7 + count - 2}"
    assert first[0]["address"] == "10.30.0.2"


def test_a_batch_answers_held_tokens_with_their_allocation_and_repeats_go_single(ipam, db):
    subnet = make_subnet(db, "10.31.0.0/24")
    held = ipam.allocate(CTX, "held", subnet_id=subnet)
    answers = ipam.allocator.allocate_many(subnet, [("new", None), ("held", None), ("new", None)])
    assert answers[0]["address"] == "10.31.0.3"
    assert answers[1]["address"] == held["address"] == "10.31.0.2"
    assert answers[2] is FALLBACK  # the single path answers it (idempotently)
    assert ipam.allocate(CTX, "new", subnet_id=subnet)["address"] == "10.31.0.3"


def test_a_batch_that_violates_a_constraint_changes_nothing(ipam, db):
    import sqlalchemy as sa

    subnet = make_subnet(db, "10.32.0.0/24")
    ipam.allocate(CTX, "first", subnet_id=subnet)  # .2; the chunk's spares are free rows
    ipam.allocate(CTX, "x", subnet_id=subnet, address="10.32.0.3")  # explicit: drops ordinal 1's row
    # Make the free row for .3 stale again (as a concurrent explicit allocation would).
    from fabric.db.models import FreeAddress

    with db.engine.begin() as conn:
        conn.execute(sa.insert(FreeAddress.__table__).values(pool_id=subnet, ordinal=1))
    before = snapshot(db)
    with pytest.raises(sa.exc.IntegrityError):
        ipam.allocator.allocate_many(subnet, [("p", None), ("q", None)])
    assert snapshot(db) == before
    # Through the combiner, a failing batch sends each request down the single path, which
    # drops the stale row and answers each request correctly.
    answers = ipam.allocator._allocations._run(subnet, [("p", None), ("q", None)])
    assert answers == [FALLBACK, FALLBACK]
    got = [ipam.allocate(CTX, t, subnet_id=subnet)["address"] for t in ("p", "q")]
    assert got == ["10.32.0.4", "10.32.0.5"]


def test_a_batch_near_the_end_of_the_pool_takes_what_is_left_and_leaves_the_rest_to_the_single_path(ipam, db):
    subnet = make_subnet(db, "10.33.0.0/27")  # .2-.30: 29 addresses, less than one chunk
    ipam.subnet_created(CTX, subnet)
    answers = ipam.allocator.allocate_many(subnet, [(f"t{i}", None) for i in range(3)])
    assert [a["address"] for a in answers] == ["10.33.0.2", "10.33.0.3", "10.33.0.4"]
    answers = ipam.allocator.allocate_many(subnet, [(f"u{i}", None) for i in range(30)])
    assert [a["address"] for a in answers[:26]] == [f"10.33.0.{i}" for i in range(5, 31)]
    assert answers[26:] == [FALLBACK] * 4
    before = snapshot(db)
    with pytest.raises(AddressExhausted) as err:
        ipam.allocate(CTX, "u26", subnet_id=subnet)
    assert err.value.fields == {"pool": subnet, "size": 29, "in_use": 29}
    assert snapshot(db) == before
    ipam.release(CTX, pool=subnet, request_token="t1")
    assert ipam.allocate(CTX, "u26", subnet_id=subnet)["address"] == "10.33.0.3"


def test_batched_release_frees_each_token_once(ipam, db):
    subnet = make_subnet(db, "10.34.0.0/24")
    for i in range(4):
        ipam.allocate(CTX, f"t{i}", subnet_id=subnet)
    answers = ipam.allocator.release_many(subnet, ["t1", "t3", "t1", "gone"])
    assert [a and a["address"] for a in answers] == ["10.34.0.3", "10.34.0.5", None, None]
    assert ipam.allocate(CTX, "n", subnet_id=subnet)["address"] == "10.34.0.3"


# SQLite serialises writers; the server backends are the concurrent case.
@pytest.mark.parametrize("db", SERVER_BACKENDS, indirect=True)
def test_concurrent_allocations_are_combined_and_never_share_an_address(ipam, db):
    subnet = make_subnet(db, "10.35.0.0/22")
    ipam.allocate(CTX, "warm", subnet_id=subnet)
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                results[f"w{n}-{i}"] = ipam.allocate(CTX, f"w{n}-{i}", subnet_id=subnet)["address"]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    combiner = ipam.allocator._allocations
    batches_before, requests_before = combiner.batches, combiner.requests
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert combiner.requests - requests_before == 200
    assert combiner.batches - batches_before < 200  # some requests shared a transaction
    assert len(set(results.values())) == 200
    # Lowest first overall: exactly the 201 lowest addresses are held.
    held = sorted(r["address"] for r in ipam.list_allocations(CTX, pool=subnet))
    assert len(held) == 201
    import ipaddress

    assert sorted(map(ipaddress.ip_address, held)) == [ipaddress.ip_address("10.35.0.2") + i
                                                       for i in range(201)]


def test_a_batch_of_one_takes_the_lowest_free_and_a_retried_token_takes_nothing(ipam, db):
    from fabric.db.models import Port, Subnet

    subnet = make_subnet(db, "10.36.0.0/24")
    ipam.subnet_created(CTX, subnet)
    with db.begin() as session:
        session.add(Port(id="port-a", network_id=session.get(Subnet, subnet).network_id, project_id="p1",
                         mac_address="fa:16:3e:00:00:0a"))
    allocate_one = ipam.allocator.allocate_many
    (first,) = allocate_one(subnet, [("a", "port-a")])
    assert (first["address"], first["port_id"], first["request_token"]) == ("10.36.0.2", "port-a", "a")
    # A retry (even naming no port) is answered with what the token holds, and uses up nothing:
    # by the portable batch itself, or (PostgreSQL) by the single path after the batch's insert
    # failed on the token.
    assert ipam.allocator._allocations._run(subnet, [("a", None)]) in ([first], [FALLBACK])
    again = ipam.allocate(CTX, "a", subnet_id=subnet)
    assert (again["address"], again["port_id"]) == ("10.36.0.2", "port-a")
    assert [a["address"] for a in allocate_one(subnet, [("b", None)])] == ["10.36.0.3"]
    ipam.release(CTX, pool=subnet, request_token="a")
    assert [a["address"] for a in allocate_one(subnet, [("c", None)])] == ["10.36.0.2"]
    held = [r["address"] for r in ipam.list_allocations(CTX, pool=subnet)]
    assert held == ["10.36.0.2", "10.36.0.3"]


@pytest.mark.parametrize("db", SERVER_BACKENDS, indirect=True)
def test_a_batch_skips_free_rows_another_worker_is_taking_without_waiting_for_it(ipam, db):
    import sqlalchemy as sa

    from fabric.db.models import FreeAddress

    subnet = make_subnet(db, "10.37.0.0/24")
    for i in range(3):
        ipam.allocate(CTX, f"a{i}", subnet_id=subnet)  # .2-.4; ordinals 3.. are free rows
    ipam.release(CTX, pool=subnet, request_token="a0")  # .2 free again: the lowest
    free = FreeAddress.__table__
    answers: list = []
    with db.engine.connect() as other:
        other.begin()  # another worker in the middle of taking .2
        other.execute(sa.select(free.c.ordinal).where(free.c.pool_id == subnet, free.c.ordinal == 0)
                      .with_for_update()).one()
        batch = threading.Thread(target=lambda: answers.extend(
            ipam.allocator.allocate_many(subnet, [("b0", None), ("b1", None)])))
        batch.start()
        batch.join(15)
        finished = not batch.is_alive()
        other.rollback()  # it gave up: .2 stays free
    batch.join(60)
    assert finished, "the batch waited for the other worker's row lock"
    assert [a["address"] for a in answers] == ["10.37.0.5", "10.37.0.6"]
    assert ipam.allocate(CTX, "c", subnet_id=subnet)["address"] == "10.37.0.2"
