"""Claims in the database: all-or-nothing, idempotent, and never over-committing under races."""

from __future__ import annotations

import random
import threading

import pytest
import sqlalchemy as sa

from fabric import exception
from fabric.config import Settings
from fabric.db.models import Instance
from fabric.scheduler import claims
from fabric.scheduler.host_state import HostStateCache
from fabric.scheduler.request import (
    AFFINITY,
    ANTI_AFFINITY,
    SOFT_ANTI_AFFINITY,
    RequestSpec,
    load_group_hosts,
    load_instance_request,
    load_instance_requests,
)
from fabric.scheduler.scheduler import Scheduler
from tests.fixtures import scheduler as build

RATIOS = claims.Ratios(ram=1.0, cpu=1.0, disk=1.0)
SETTINGS = Settings().replace(scheduler={"ram_allocation_ratio": 1.0, "cpu_allocation_ratio": 1.0,
                                         "disk_allocation_ratio": 1.0, "host_refresh_interval": 0.0})


def host_state(db, name):
    cache = HostStateCache(db, SETTINGS.scheduler, 60)
    cache.refresh(full=True)
    return cache.get(name)


def spec_for(instance_id, vcpus=1, memory_mb=1024, disk_gb=10, **extra):
    return RequestSpec(instance_id=instance_id, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb, **extra)


def test_claim_moves_usage_generation_and_instance_together(sqlite_db):
    build.add_hosts(sqlite_db, 1, vcpus=4, memory_mb=4096, disk_gb=40)
    [iid] = build.add_instances(sqlite_db, 1)
    row = claims.claim(sqlite_db, spec_for(iid), host_state(sqlite_db, "host0000"), RATIOS)
    assert (row["vcpus_used"], row["memory_mb_used"], row["disk_gb_used"], row["generation"]) == (1, 1024, 10, 1)
    instance = build.instances(sqlite_db)[iid]
    assert instance.host == "host0000" and instance.scheduling_attempts == 1


def test_claim_of_a_placed_instance_changes_nothing(sqlite_db):
    build.add_hosts(sqlite_db, 2)
    [iid] = build.add_instances(sqlite_db, 1)
    claims.claim(sqlite_db, spec_for(iid), host_state(sqlite_db, "host0000"), RATIOS)
    with pytest.raises(exception.InstanceStateConflict):
        claims.claim(sqlite_db, spec_for(iid), host_state(sqlite_db, "host0001"), RATIOS)
    assert build.nodes(sqlite_db)["host0001"].memory_mb_used == 0


def test_claim_that_no_longer_fits_is_lost_and_rolled_back(sqlite_db):
    build.add_hosts(sqlite_db, 1, memory_mb=2048)
    first, second = build.add_instances(sqlite_db, 2, memory_mb=2048)
    stale = host_state(sqlite_db, "host0000")  # read before the first claim
    claims.claim(sqlite_db, spec_for(first, memory_mb=2048), stale, RATIOS)
    with pytest.raises(claims.ClaimLost):
        claims.claim(sqlite_db, spec_for(second, memory_mb=2048), stale, RATIOS)
    assert build.instances(sqlite_db)[second].host is None  # the instance step was rolled back too
    assert build.nodes(sqlite_db)["host0000"].memory_mb_used == 2048


def test_allocation_ratio_is_applied_by_the_claim(sqlite_db):
    build.add_hosts(sqlite_db, 1, memory_mb=1000)
    a, b = build.add_instances(sqlite_db, 2, memory_mb=750)
    state = host_state(sqlite_db, "host0000")
    ratios = claims.Ratios(ram=1.5, cpu=1.0, disk=1.0)
    claims.claim(sqlite_db, spec_for(a, memory_mb=750), state, ratios)
    claims.claim(sqlite_db, spec_for(b, memory_mb=750), state, ratios)
    assert build.nodes(sqlite_db)["host0000"].memory_mb_used == 1500


def test_release_after_failed_build_is_idempotent(sqlite_db):
    build.add_hosts(sqlite_db, 1)
    [iid] = build.add_instances(sqlite_db, 1)
    claims.claim(sqlite_db, spec_for(iid), host_state(sqlite_db, "host0000"), RATIOS)
    assert claims.release(sqlite_db, iid, "host0000", failed_build=True)
    assert not claims.release(sqlite_db, iid, "host0000", failed_build=True)
    node = build.nodes(sqlite_db)["host0000"]
    assert (node.memory_mb_used, node.vcpus_used, node.running_vms, node.failed_builds) == (0, 0, 0, 1)
    assert node.last_build_failure_at is not None
    instance = build.instances(sqlite_db)[iid]
    assert instance.host is None and instance.failed_hosts == ["host0000"]


def test_anti_affinity_slot_blocks_a_second_member_and_is_freed_by_release(sqlite_db):
    build.add_hosts(sqlite_db, 1)
    group = build.add_group(sqlite_db, ANTI_AFFINITY)
    a, b = build.add_instances(sqlite_db, 2, group_id=group)
    state = host_state(sqlite_db, "host0000")
    claims.claim(sqlite_db, spec_for(a, group_id=group, group_policy=ANTI_AFFINITY), state, RATIOS)
    with pytest.raises(claims.ClaimLost, match="group"):
        claims.claim(sqlite_db, spec_for(b, group_id=group, group_policy=ANTI_AFFINITY), state, RATIOS)
    assert build.nodes(sqlite_db)["host0000"].memory_mb_used == 1024
    claims.release(sqlite_db, a, "host0000")
    claims.claim(sqlite_db, spec_for(b, group_id=group, group_policy=ANTI_AFFINITY), state, RATIOS)


def test_affinity_pin_holds_until_the_last_member_leaves(sqlite_db):
    build.add_hosts(sqlite_db, 2)
    group = build.add_group(sqlite_db, AFFINITY)
    a, b, c = build.add_instances(sqlite_db, 3, group_id=group)
    h0, h1 = host_state(sqlite_db, "host0000"), host_state(sqlite_db, "host0001")
    member = dict(group_id=group, group_policy=AFFINITY)
    claims.claim(sqlite_db, spec_for(a, **member), h0, RATIOS)
    with pytest.raises(claims.ClaimLost, match="group"):
        claims.claim(sqlite_db, spec_for(b, **member), h1, RATIOS)
    claims.claim(sqlite_db, spec_for(b, **member), h0, RATIOS)
    claims.release(sqlite_db, a, "host0000")
    with pytest.raises(claims.ClaimLost):  # b still holds the pin on host0000
        claims.claim(sqlite_db, spec_for(c, **member), h1, RATIOS)
    claims.release(sqlite_db, b, "host0000")
    claims.claim(sqlite_db, spec_for(c, **member), h1, RATIOS)  # unpinned: a new host may be chosen
    assert build.instances(sqlite_db)[c].host == "host0001"


def test_fail_instance_writes_the_fault_once(sqlite_db):
    [iid] = build.add_instances(sqlite_db, 1)
    error = exception.NoValidHost(reason="0 hosts; no filter removed any")
    assert claims.fail_instance(sqlite_db, iid, error)
    assert not claims.fail_instance(sqlite_db, iid, error)
    assert build.instances(sqlite_db)[iid].vm_state == "error"
    assert build.faults(sqlite_db)[iid] == ["No valid host was found: 0 hosts; no filter removed any"]


# --- races between scheduler workers (one Scheduler, i.e. one cache, per thread) ----------



def run_workers(work, workers: int, errors: list) -> None:
    """``work(seed)`` on ``workers`` threads at once, waited for; none may have failed (``errors``)."""
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors

def run_schedulers(db, instance_ids, workers=4, settings=SETTINGS):
    """Place every instance with ``workers`` threads, each its own Scheduler; returns outcomes."""
    outcomes: dict[str, str] = {}
    queue = list(instance_ids)
    lock = threading.Lock()
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []
    lost: list[int] = []

    def work(seed):
        scheduler = Scheduler(settings, db, rng=random.Random(seed))
        scheduler.cache.hosts()  # every worker reads its cache before any claim: all are stale
        barrier.wait()
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    iid = queue.pop()
                with db.begin() as session:
                    spec = load_instance_request(session, iid).spec
                try:
                    outcomes[iid] = scheduler.place(spec)
                except exception.NoValidHost as exc:
                    outcomes[iid] = "novalidhost: " + exc.message
                finally:
                    lost.append(scheduler.claims_lost)
                    scheduler.claims_lost = 0
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    run_workers(work, workers, errors)
    return outcomes, sum(lost)


def test_concurrent_claims_never_overcommit(server_db):
    build.add_hosts(server_db, 3, vcpus=64, memory_mb=3072, disk_gb=1000)  # 3 x 1024 MiB each
    ids = build.add_instances(server_db, 20, memory_mb=1024)
    # Caches that are never refreshed on a timer: every worker believes hosts are empty,
    # so only the claims in the database stand between them and over-commit.
    stale = SETTINGS.replace(scheduler={"host_refresh_interval": 3600.0})
    outcomes, lost = run_schedulers(server_db, ids, settings=stale)
    assert lost > 0
    placed = [iid for iid, result in outcomes.items() if not result.startswith("novalidhost")]
    assert len(placed) == 9
    assert build.overcommitted(server_db, ram_ratio=1.0, cpu_ratio=1.0, disk_ratio=1.0) == []
    assert all(n.memory_mb_used == 3072 for n in build.nodes(server_db).values())


def test_concurrent_anti_affinity_puts_one_member_per_host(server_db):
    build.add_hosts(server_db, 5)
    group = build.add_group(server_db, ANTI_AFFINITY)
    ids = build.add_instances(server_db, 8, group_id=group)
    outcomes, _lost = run_schedulers(server_db, ids)
    hosts = [result for result in outcomes.values() if not result.startswith("novalidhost")]
    assert len(hosts) == 5 and len(set(hosts)) == 5
    refused = [result for result in outcomes.values() if result.startswith("novalidhost")]
    assert all("AntiAffinityFilter removed 5" in message for message in refused)


def test_concurrent_affinity_puts_every_member_on_one_host(server_db):
    build.add_hosts(server_db, 6)
    group = build.add_group(server_db, AFFINITY)
    ids = build.add_instances(server_db, 6, group_id=group)
    outcomes, _lost = run_schedulers(server_db, ids)
    assert len(set(outcomes.values())) == 1, outcomes
    assert next(iter(outcomes.values())).startswith("host")


def test_an_instance_being_built_is_never_placed(sqlite_db):
    build.add_hosts(sqlite_db, 1)
    [iid] = build.add_instances(sqlite_db, 1)
    with sqlite_db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == iid).values(task_state="spawning"))
    with pytest.raises(exception.InstanceStateConflict):
        claims.claim(sqlite_db, spec_for(iid), host_state(sqlite_db, "host0000"), RATIOS)
    assert build.nodes(sqlite_db)["host0000"].memory_mb_used == 0
    assert build.instances(sqlite_db)[iid].host is None


# --- many claims in one transaction (a scheduler worker's batch) ---------------------------


def placements(db, pairs):
    """claims.Placement for each (instance id, host name, memory_mb), hosts as read now."""
    return [claims.Placement(spec_for(iid, memory_mb=memory_mb), host_state(db, host))
            for iid, host, memory_mb in pairs]


def test_claim_many_claims_each_hosts_share_in_one_statement(sqlite_db):
    build.add_hosts(sqlite_db, 2, vcpus=4, memory_mb=4096, disk_gb=40)
    a, b, c = build.add_instances(sqlite_db, 3)
    chosen = placements(sqlite_db, [(a, "host0000", 1024), (b, "host0000", 1024), (c, "host0001", 1024)])
    staged = []
    with sqlite_db.engine.connect() as conn:
        rows, claimed, lost = claims.claim_many(
            conn, chosen, RATIOS, also=lambda conn, claimed: staged.append([(p.spec.instance_id, p.host.host)
                                                                            for p in claimed]))
    # ``also`` ran once, for all of them, in the claim's transaction.
    assert len(claimed) == 3 and lost == [] and staged == [[(a, "host0000"), (b, "host0000"), (c, "host0001")]]
    assert {row["host"]: (row["memory_mb_used"], row["running_vms"], row["generation"]) for row in rows} == {
        "host0000": (2048, 2, 1), "host0001": (1024, 1, 1)}
    instances = build.instances(sqlite_db)
    assert [(instances[i].host, instances[i].scheduling_attempts) for i in (a, b, c)] == [
        ("host0000", 1), ("host0000", 1), ("host0001", 1)]


def test_claim_many_leaves_out_what_a_host_no_longer_fits_and_claims_the_rest(db):
    build.add_hosts(db, 1, prefix="small", memory_mb=2048)
    build.add_hosts(db, 1, prefix="big", memory_mb=8192)
    first, second, third, fourth = build.add_instances(db, 4, memory_mb=1024)
    # Chosen on a stale view: small0000 had room for two more, and another claim took one since.
    chosen = placements(db, [(second, "small0000", 1024), (third, "big0000", 1024), (fourth, "small0000", 1024)])
    claims.claim(db, spec_for(first, memory_mb=1024), host_state(db, "small0000"), RATIOS)
    staged, unstaged = [], []
    with db.engine.connect() as conn:
        rows, claimed, left = claims.claim_many(
            conn, chosen, RATIOS, also=lambda conn, claimed: staged.append([p.spec.instance_id for p in claimed]),
            unstage=lambda conn, dropped: unstaged.append([p.spec.instance_id for p in dropped]))
    # Both placements on small0000 are left out (the host takes all of its placements or none):
    # what ``also`` wrote for them is undone through ``unstage``, in the same transaction.
    assert [p.spec.instance_id for p in claimed] == [third]
    assert staged == [[second, third, fourth]] and unstaged == [[second, fourth]]
    assert [p.spec.instance_id for p in left] == [second, fourth]
    instances, nodes = build.instances(db), build.nodes(db)
    assert (instances[second].host, instances[third].host, instances[fourth].host) == (None, "big0000", None)
    assert [instances[i].scheduling_attempts for i in (second, third, fourth)] == [0, 1, 0]
    assert (nodes["small0000"].memory_mb_used, nodes["big0000"].memory_mb_used) == (1024, 1024)
    # The rows returned are every locked host's, as the claim left them (what the cache takes in).
    assert {row["host"]: (row["memory_mb_used"], row["running_vms"], row["generation"]) for row in rows} == {
        "small0000": (1024, 1, 1), "big0000": (1024, 1, 1)}
    assert {row["host"]: row["updated_at"] for row in rows} == {n.host: n.updated_at for n in nodes.values()}


def test_claim_many_keeps_what_still_fits_when_a_host_filled_before_its_lock(server_db):
    build.add_hosts(server_db, 1, prefix="small", memory_mb=2048)
    build.add_hosts(server_db, 1, prefix="big", memory_mb=8192)
    early, second, third = build.add_instances(server_db, 3, memory_mb=1024)
    chosen = placements(server_db, [(second, "small0000", 1024), (third, "big0000", 1024)])
    staged, unstaged = [], []

    def meanwhile(conn, claimed):
        staged.append([p.spec.instance_id for p in claimed])
        # The instances took their hosts, whose rows are not locked yet: another claim takes
        # small0000's room now and commits.
        claims.claim(server_db, spec_for(early, memory_mb=2048), host_state(server_db, "small0000"), RATIOS)

    with server_db.engine.connect() as conn:
        rows, claimed, left = claims.claim_many(
            conn, chosen, RATIOS, also=meanwhile,
            unstage=lambda conn, dropped: unstaged.append([p.spec.instance_id for p in dropped]))
    # The lock saw it: the placement on small0000 was undone in the same transaction, the rest committed.
    assert staged == [[second, third]] and unstaged == [[second]]
    assert [p.spec.instance_id for p in claimed] == [third] and [p.spec.instance_id for p in left] == [second]
    instances, nodes = build.instances(server_db), build.nodes(server_db)
    assert (instances[early].host, instances[second].host, instances[third].host) == ("small0000", None, "big0000")
    assert (nodes["small0000"].memory_mb_used, nodes["big0000"].memory_mb_used) == (2048, 1024)
    assert (instances[second].scheduling_attempts, instances[third].scheduling_attempts) == (0, 1)
    # The rows returned are as the database holds them (the cache chooses again with them).
    assert {row["host"]: (row["memory_mb_used"], row["generation"]) for row in rows} == {
        "small0000": (2048, 1), "big0000": (1024, 1)}


def test_a_fractional_allocation_ratio_is_not_rounded(db):
    build.add_hosts(db, 1, vcpus=8, memory_mb=1024, disk_gb=100)
    ids = build.add_instances(db, 5, memory_mb=512)
    ratios = claims.Ratios(ram=1.5, cpu=1.0, disk=1.0)  # 1,536 MiB: room for three of 512 (not four: 2.0)
    claims.claim(db, spec_for(ids[0], memory_mb=512), host_state(db, "host0000"), ratios)
    with db.engine.connect() as conn:
        _rows, claimed, left = claims.claim_many(
            conn, placements(db, [(ids[1], "host0000", 512), (ids[2], "host0000", 512)]), ratios)
    assert len(claimed) == 2 and left == []
    with pytest.raises(claims.ClaimLost):
        claims.claim(db, spec_for(ids[3], memory_mb=512), host_state(db, "host0000"), ratios)
    assert build.nodes(db)["host0000"].memory_mb_used == 1536


def test_claim_many_changes_nothing_when_an_instance_stopped_waiting(sqlite_db):
    build.add_hosts(sqlite_db, 2)
    a, b = build.add_instances(sqlite_db, 2)
    claims.claim(sqlite_db, spec_for(a), host_state(sqlite_db, "host0000"), RATIOS)
    with sqlite_db.engine.connect() as conn, pytest.raises(exception.InstanceStateConflict):
        claims.claim_many(conn, placements(sqlite_db, [(a, "host0001", 1024), (b, "host0001", 1024)]), RATIOS)
    assert build.nodes(sqlite_db)["host0001"].memory_mb_used == 0
    assert build.instances(sqlite_db)[b].host is None


def test_claim_many_takes_no_affinity_group_member(sqlite_db):
    build.add_hosts(sqlite_db, 1)
    group = build.add_group(sqlite_db, AFFINITY)
    [iid] = build.add_instances(sqlite_db, 1, group_id=group)
    chosen = [claims.Placement(spec_for(iid, group_id=group, group_policy=AFFINITY),
                               host_state(sqlite_db, "host0000"))]
    with sqlite_db.engine.connect() as conn, pytest.raises(ValueError, match="anti-affinity"):
        claims.claim_many(conn, chosen, RATIOS)


def test_claim_many_loses_a_member_whose_anti_affinity_slot_is_taken(sqlite_db):
    build.add_hosts(sqlite_db, 2)
    group = build.add_group(sqlite_db, ANTI_AFFINITY)
    first, second, third = build.add_instances(sqlite_db, 3, group_id=group)
    anti = {"group_id": group, "group_policy": ANTI_AFFINITY}
    claims.claim(sqlite_db, spec_for(first, **anti), host_state(sqlite_db, "host0000"), RATIOS)
    chosen = [claims.Placement(spec_for(second, **anti), host_state(sqlite_db, "host0000")),
              claims.Placement(spec_for(third, **anti), host_state(sqlite_db, "host0001"))]
    with sqlite_db.engine.connect() as conn:
        rows, claimed, lost = claims.claim_many(conn, chosen, RATIOS)
    assert [p.spec.instance_id for p in claimed] == [third] and [p.spec.instance_id for p in lost] == [second]
    # The row of the host it locked, as the claim left it (host0000, which only lost a slot, was not
    # locked: place_many reads it again); host0000 kept the first member only.
    assert {row["host"]: row["running_vms"] for row in rows} == {"host0001": 1}
    nodes, instances = build.nodes(sqlite_db), build.instances(sqlite_db)
    assert (nodes["host0000"].running_vms, nodes["host0001"].running_vms) == (1, 1)
    assert (instances[second].host, instances[third].host) == (None, "host0001")
    with sqlite_db.engine.connect() as conn:
        assert load_group_hosts(conn, group, ANTI_AFFINITY) == {"host0000", "host0001"}


def test_claim_many_takes_no_slot_on_a_host_that_no_longer_fits(sqlite_db):
    build.add_hosts(sqlite_db, 1, memory_mb=1024)
    group = build.add_group(sqlite_db, ANTI_AFFINITY)
    [member] = build.add_instances(sqlite_db, 1, group_id=group)
    [other] = build.add_instances(sqlite_db, 1)
    stale = host_state(sqlite_db, "host0000")
    claims.claim(sqlite_db, spec_for(other), stale, RATIOS)
    chosen = [claims.Placement(spec_for(member, group_id=group, group_policy=ANTI_AFFINITY), stale)]
    with sqlite_db.engine.connect() as conn:
        _rows, claimed, left = claims.claim_many(conn, chosen, RATIOS)
    assert claimed == [] and left == chosen
    with sqlite_db.engine.connect() as conn:
        assert load_group_hosts(conn, group, ANTI_AFFINITY) == set()


def test_claim_many_gives_back_the_slot_of_a_member_whose_host_no_longer_fits(db):
    build.add_hosts(db, 1, prefix="small", memory_mb=1024)
    build.add_hosts(db, 1, prefix="big", memory_mb=8192)
    group = build.add_group(db, ANTI_AFFINITY)
    first, second = build.add_instances(db, 2, group_id=group)
    [other] = build.add_instances(db, 1)
    anti = {"group_id": group, "group_policy": ANTI_AFFINITY}
    chosen = [claims.Placement(spec_for(first, **anti), host_state(db, "small0000")),
              claims.Placement(spec_for(second, **anti), host_state(db, "big0000"))]
    claims.claim(db, spec_for(other), host_state(db, "small0000"), RATIOS)  # small0000 is full now
    with db.engine.connect() as conn:
        _rows, claimed, left = claims.claim_many(conn, chosen, RATIOS)
    assert [p.spec.instance_id for p in claimed] == [second] and [p.spec.instance_id for p in left] == [first]
    instances = build.instances(db)
    assert (instances[first].host, instances[first].scheduling_attempts) == (None, 0)
    with db.engine.connect() as conn:
        assert load_group_hosts(conn, group, ANTI_AFFINITY) == {"big0000"}  # the slot on small0000 is gone
    assert build.overcommitted(db, ram_ratio=1.0, cpu_ratio=1.0, disk_ratio=1.0) == []


def test_place_many_leaves_out_what_a_stale_cache_chose_on_a_full_host(sqlite_db):
    build.add_hosts(sqlite_db, 2, vcpus=8, memory_mb=2048, disk_gb=100)
    [early] = build.add_instances(sqlite_db, 1, memory_mb=2048)
    ids = build.add_instances(sqlite_db, 3, memory_mb=1024)
    stale = Settings().replace(scheduler={**SETTINGS.scheduler.__dict__, "host_refresh_interval": 3600.0})
    scheduler = Scheduler(stale, sqlite_db, rng=random.Random(1))
    scheduler.cache.hosts()
    claims.claim(sqlite_db, spec_for(early, memory_mb=2048), host_state(sqlite_db, "host0000"), RATIOS)
    with sqlite_db.engine.connect() as conn:
        specs = [load_instance_request(conn, iid).spec for iid in ids]
        placed, left = scheduler.place_many(specs, conn)
    # host0000 filled up unseen: what was chosen there is left out, the rest is placed.
    assert set(placed.values()) == {"host0001"} and len(placed) + len(left) == 3
    assert build.overcommitted(sqlite_db, ram_ratio=1.0, cpu_ratio=1.0, disk_ratio=1.0) == []


def _big_host_filled_unseen(sqlite_db, small_memory_mb: int, count: int) -> tuple[Scheduler, list[str]]:
    """Hosts big0000 (4096 MiB) and small0000 (``small_memory_mb``), ``count`` instances of 1024 MiB
    to place, and a scheduler whose cache saw big0000 empty before a claim of 3072 MiB there."""
    build.add_hosts(sqlite_db, 1, prefix="big", vcpus=8, memory_mb=4096, disk_gb=100)
    build.add_hosts(sqlite_db, 1, prefix="small", vcpus=8, memory_mb=small_memory_mb, disk_gb=100)
    [early] = build.add_instances(sqlite_db, 1, memory_mb=3072)
    ids = build.add_instances(sqlite_db, count, memory_mb=1024)
    stale = Settings().replace(scheduler={**SETTINGS.scheduler.__dict__, "host_refresh_interval": 3600.0})
    scheduler = Scheduler(stale, sqlite_db, rng=random.Random(1))
    scheduler.cache.hosts()
    claims.claim(sqlite_db, spec_for(early, memory_mb=3072), host_state(sqlite_db, "big0000"), RATIOS)
    return scheduler, ids


def test_place_many_chooses_again_what_its_claim_left_out(sqlite_db):
    scheduler, ids = _big_host_filled_unseen(sqlite_db, small_memory_mb=2048, count=2)  # both chosen on big0000
    commits = []

    def count(conn):
        commits.append(conn)

    sa.event.listen(sqlite_db.engine, "commit", count)
    try:
        with sqlite_db.engine.connect() as conn:
            specs = [load_instance_request(conn, iid).spec for iid in ids]
            placed, left = scheduler.place_many(specs, conn)
    finally:
        sa.event.remove(sqlite_db.engine, "commit", count)
    # The first claim left both out (big0000 has 1024 MiB left), writing nothing (rolled back, no
    # commit); the second round placed them.
    assert left == [] and sorted(placed) == sorted(ids) and len(commits) == 1
    assert set(placed.values()) <= {"big0000", "small0000"} and scheduler.claims_lost == 2
    assert build.overcommitted(sqlite_db, ram_ratio=1.0, cpu_ratio=1.0, disk_ratio=1.0) == []


def test_place_many_reports_each_rounds_placements_once_that_round_committed(sqlite_db):
    # Two of the three are chosen on big0000 (it looks empty), one on small0000.
    scheduler, ids = _big_host_filled_unseen(sqlite_db, small_memory_mb=3072, count=3)
    reported: list[tuple[dict[str, str], dict[str, str | None]]] = []

    def committed(placed):
        # What the database holds when told: each reported placement is committed already.
        reported.append((dict(placed), {iid: build.instances(sqlite_db)[iid].host for iid in placed}))

    with sqlite_db.engine.connect() as conn:
        specs = [load_instance_request(conn, iid).spec for iid in ids]
        placed, left = scheduler.place_many(specs, conn, committed=committed)
    # Round 1 placed the one on small0000 (big0000 had room for one, not two); round 2 the other two.
    assert [sorted(first.values()) for first, _seen in reported] == [["small0000"], ["big0000", "small0000"]]
    assert left == []
    assert all(first == seen for first, seen in reported)
    assert {iid: host for first, _seen in reported for iid, host in first.items()} == placed


def test_place_many_counts_each_choice_against_the_next(sqlite_db):
    build.add_hosts(sqlite_db, 2, vcpus=8, memory_mb=2048, disk_gb=100)
    ids = build.add_instances(sqlite_db, 5, memory_mb=1024)
    scheduler = Scheduler(SETTINGS, sqlite_db, rng=random.Random(1))
    with sqlite_db.engine.connect() as conn:
        specs = [load_instance_request(conn, iid).spec for iid in ids]
        placed, left = scheduler.place_many(specs, conn)
    assert sorted(placed.values()) == ["host0000", "host0000", "host0001", "host0001"]
    assert [spec.instance_id for spec in left] == [ids[4]]  # no room left for the fifth
    assert all(n.memory_mb_used == 2048 for n in build.nodes(sqlite_db).values())
    assert all(state.free_ram_mb == 0 for state in scheduler.cache.hosts())


def run_batches(db, chunks, settings=SETTINGS, workers=4):
    """Place every chunk of instances with ``workers`` threads, each its own Scheduler, a chunk
    at a time (what place_many leaves, one by one); returns instance id -> host of those placed."""
    chunks = list(chunks)
    lock, barrier, errors = threading.Lock(), threading.Barrier(workers), []
    placed: dict[str, str] = {}

    def work(seed):
        scheduler = Scheduler(settings, db, rng=random.Random(seed))
        scheduler.cache.hosts()  # every worker's cache is read before any claim: all go stale
        barrier.wait()
        try:
            while True:
                with lock:
                    if not chunks:
                        return
                    chunk = chunks.pop()
                with db.engine.connect() as conn:
                    specs = [load_instance_request(conn, iid).spec for iid in chunk]
                    done, left = scheduler.place_many(specs, conn)
                placed.update(done)
                for spec in left:
                    with db.engine.connect() as conn:
                        spec = load_instance_request(conn, spec.instance_id).spec
                    try:
                        placed[spec.instance_id] = scheduler.place(spec)
                    except exception.NoValidHost:
                        pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    run_workers(work, workers, errors)
    return placed


def test_concurrent_batches_never_overcommit(server_db):
    build.add_hosts(server_db, 4, vcpus=64, memory_mb=3072, disk_gb=1000)  # 3 x 1024 MiB each
    ids = build.add_instances(server_db, 30, memory_mb=1024)
    stale = SETTINGS.replace(scheduler={"host_refresh_interval": 3600.0})
    placed = run_batches(server_db, [ids[start:start + 5] for start in range(0, len(ids), 5)], stale)
    assert len(placed) == 12
    assert build.overcommitted(server_db, ram_ratio=1.0, cpu_ratio=1.0, disk_ratio=1.0) == []
    assert all(n.memory_mb_used == 3072 for n in build.nodes(server_db).values())


def test_concurrent_batches_put_one_anti_affinity_member_per_host(server_db):
    build.add_hosts(server_db, 5)
    group = build.add_group(server_db, ANTI_AFFINITY)
    ids = build.add_instances(server_db, 12, group_id=group)
    placed = run_batches(server_db, [ids[start:start + 3] for start in range(0, len(ids), 3)])
    assert len(placed) == 5 and len(set(placed.values())) == 5
    assert build.overcommitted(server_db, ram_ratio=1.0, cpu_ratio=1.0, disk_ratio=1.0) == []


def test_requests_read_together_hold_their_groups_hosts_in_one_query(db):
    build.add_hosts(db, 3)
    anti, pinned, soft = (build.add_group(db, policy) for policy in (ANTI_AFFINITY, AFFINITY, SOFT_ANTI_AFFINITY))
    anti_members = build.add_instances(db, 4, group_id=anti)
    affinity_members = build.add_instances(db, 2, group_id=pinned)
    soft_members = build.add_instances(db, 2, group_id=soft)
    [alone] = build.add_instances(db, 1)
    for member, host in zip(anti_members, ("host0000", "host0001"), strict=False):
        claims.claim(db, spec_for(member, group_id=anti, group_policy=ANTI_AFFINITY), host_state(db, host), RATIOS)
    claims.claim(db, spec_for(affinity_members[0], group_id=pinned, group_policy=AFFINITY),
                 host_state(db, "host0002"), RATIOS)
    waiting = [*anti_members[2:], affinity_members[1], alone]
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.engine.connect() as conn:
            together = load_instance_requests(conn, waiting)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    assert len(statements) == 1
    assert {iid: request.spec.group_hosts for iid, request in together.items()} == {
        anti_members[2]: {"host0000", "host0001"}, anti_members[3]: {"host0000", "host0001"},
        affinity_members[1]: {"host0002"}, alone: set()}
    with db.engine.connect() as conn:
        for iid, request in together.items():
            assert request == load_instance_request(conn, iid)  # the same request as read alone
        # A soft policy's members hold no slot: their group's hosts are read from the members.
        assert load_instance_requests(conn, soft_members)[soft_members[0]].spec.group_hosts == set()


def test_claim_many_of_a_member_that_stopped_waiting_changes_nothing(db):
    build.add_hosts(db, 2)
    group = build.add_group(db, ANTI_AFFINITY)
    first, second = build.add_instances(db, 2, group_id=group)
    [alone] = build.add_instances(db, 1)
    anti = {"group_id": group, "group_policy": ANTI_AFFINITY}
    claims.claim(db, spec_for(first, **anti), host_state(db, "host0000"), RATIOS)
    before = build.instances(db)[second].updated_at
    chosen = [claims.Placement(spec_for(first, **anti), host_state(db, "host0001")),  # placed already
              claims.Placement(spec_for(second, **anti), host_state(db, "host0000")),  # its slot is taken
              claims.Placement(spec_for(alone), host_state(db, "host0001"))]
    with db.engine.connect() as conn, pytest.raises((exception.InstanceStateConflict, claims.ClaimLost)):
        claims.claim_many(conn, chosen, RATIOS)
    with db.engine.connect() as conn:
        assert load_group_hosts(conn, group, ANTI_AFFINITY) == {"host0000"}  # no slot left on host0001
    instances = build.instances(db)
    assert (instances[first].host, instances[second].host, instances[alone].host) == ("host0000", None, None)
    assert build.nodes(db)["host0001"].running_vms == 0 and instances[second].updated_at == before
    # A member whose slot is free is placed with the rest, its row stamped as any update stamps it.
    with db.engine.connect() as conn:
        _rows, claimed, left = claims.claim_many(conn, chosen[1:2] and [
            claims.Placement(spec_for(second, **anti), host_state(db, "host0001")), chosen[2]], RATIOS)
    instances = build.instances(db)
    assert len(claimed) == 2 and left == [] and (instances[second].host, instances[alone].host) == (
        "host0001", "host0001")
    assert instances[second].updated_at is not None and instances[second].updated_at != before
