"""The host-state cache: joins nodes and services, reads only what changed."""

from __future__ import annotations

import datetime

import sqlalchemy as sa

from fabric.config import SchedulerSection
from fabric.db.models import ComputeNode, Service
from fabric.db.types import utcnow
from fabric.scheduler import claims
from fabric.scheduler.host_state import HostStateCache
from fabric.scheduler.request import RequestSpec
from tests.fixtures import scheduler as build


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def cache_for(db, clock, **options):
    section = SchedulerSection(**{"host_refresh_interval": 1.0, "host_full_refresh_interval": 100.0, **options})
    return HostStateCache(db, section, service_down_time=60, clock=clock)


def test_host_state_joins_node_and_service(sqlite_db):
    build.add_hosts(sqlite_db, 1, stats={"cpu_arch": "x86_64"}, capabilities={"vm_modes": ["hvm"]})
    build.add_hosts(sqlite_db, 1, prefix="down", up=False)
    build.add_hosts(sqlite_db, 1, prefix="off", disabled=True)
    hosts = {h.host: h for h in cache_for(sqlite_db, Clock()).hosts()}
    assert hosts["host0000"].up and not hosts["host0000"].disabled
    assert hosts["host0000"].properties()["cpu_arch"] == "x86_64"
    assert hosts["host0000"].properties()["vm_modes"] == ["hvm"]
    assert not hosts["down0000"].up
    assert hosts["off0000"].disabled and hosts["off0000"].disabled_reason == "test"


def test_node_without_a_compute_service_is_down(sqlite_db):
    with sqlite_db.begin() as session:
        session.add(ComputeNode(host="orphan", vcpus=4, memory_mb=4096, disk_gb=10))
    [state] = cache_for(sqlite_db, Clock()).hosts()
    assert not state.up


def test_refresh_reads_only_changed_rows_and_only_when_due(sqlite_db):
    build.add_hosts(sqlite_db, 50)
    [iid] = build.add_instances(sqlite_db, 1)
    clock = Clock()
    cache = cache_for(sqlite_db, clock)
    cache.hosts()
    full_read = cache.rows_read
    assert full_read == 100  # 50 nodes + 50 services
    # Another scheduler claims on host0007; rows stamped more than the commit margin ago are old news.
    old = utcnow() - datetime.timedelta(seconds=30)
    with sqlite_db.begin() as session:
        session.execute(sa.update(ComputeNode).values(updated_at=old, created_at=old))
        session.execute(sa.update(Service).values(updated_at=old, created_at=old))
    cache.refresh(full=True)
    other = cache_for(sqlite_db, Clock())
    claims.claim(sqlite_db, RequestSpec(instance_id=iid, vcpus=1, memory_mb=512),
                 other.hosts()[7], claims.Ratios(1.0, 1.0, 1.0))
    before = cache.rows_read
    assert cache.get("host0007").memory_mb_used == 0
    cache.hosts()  # not due yet: nothing read
    assert cache.rows_read == before and cache.get("host0007").memory_mb_used == 0
    clock.now += 1.5
    cache.hosts()
    assert cache.get("host0007").memory_mb_used == 512
    assert cache.rows_read - before == 1  # just the changed node


def test_full_refresh_drops_deleted_hosts(sqlite_db):
    build.add_hosts(sqlite_db, 3)
    clock = Clock()
    cache = cache_for(sqlite_db, clock)
    assert len(cache.hosts()) == 3
    with sqlite_db.begin() as session:
        session.execute(sa.delete(ComputeNode).where(ComputeNode.host == "host0001"))
    clock.now += 101
    assert sorted(h.host for h in cache.hosts()) == ["host0000", "host0002"]


def test_service_disabled_later_is_seen_by_the_incremental_refresh(sqlite_db):
    build.add_hosts(sqlite_db, 2)
    clock = Clock()
    cache = cache_for(sqlite_db, clock)
    cache.hosts()
    with sqlite_db.begin() as session:
        session.execute(sa.update(Service).where(Service.host == "host0001")
                        .values(disabled=True, disabled_reason="maintenance", updated_at=utcnow()))
    clock.now += 2
    hosts = {h.host: h for h in cache.hosts()}
    assert hosts["host0001"].disabled and hosts["host0001"].disabled_reason == "maintenance"
    assert not hosts["host0000"].disabled


def test_an_older_row_never_overwrites_a_newer_claim(sqlite_db):
    build.add_hosts(sqlite_db, 1)
    cache = cache_for(sqlite_db, Clock())
    [state] = cache.hosts()
    with sqlite_db.engine.connect() as connection:
        row = dict(connection.execute(sa.select(ComputeNode.__table__)).mappings().one())
    cache.apply_rows([{**row, "generation": 5, "memory_mb_used": 5000}])
    cache.apply_rows([{**row, "generation": 4, "memory_mb_used": 4000}])
    assert state.memory_mb_used == 5000


def test_a_host_added_after_the_first_read_is_seen_by_the_incremental_refresh(sqlite_db):
    # A cache read before any compute host registered; a new node row has no updated_at.
    clock = Clock()
    cache = cache_for(sqlite_db, clock)
    assert cache.hosts() == []
    with sqlite_db.begin() as session:
        session.add(ComputeNode(host="late", vcpus=4, memory_mb=4096, disk_gb=10))
    clock.now += 1.5
    assert [h.host for h in cache.hosts()] == ["late"]


def test_json_documents_are_decoded_again_only_when_their_text_changed(db):
    """Every backend reads stats and capabilities as text (its own CAST) and decodes them once
    per change: a row read again with the same documents keeps the decoded ones (the same
    objects), a changed document is decoded, and a heartbeat alone still moves the host."""
    build.add_hosts(db, 2, stats={"cpu_arch": "x86_64"}, capabilities={"vm_modes": ["hvm"]})
    clock = Clock()
    cache = cache_for(db, clock)
    cache.hosts()
    state = cache.get("host0000")
    stats, capabilities = state.stats, state.capabilities
    assert (stats, capabilities) == ({"cpu_arch": "x86_64"}, {"vm_modes": ["hvm"]})

    beat = utcnow().replace(microsecond=0)
    with db.begin() as session:  # a heartbeat and a claim: neither document changes
        session.execute(sa.update(Service).where(Service.host == "host0000")
                        .values(last_heartbeat=beat, updated_at=utcnow()))
        session.execute(sa.update(ComputeNode).where(ComputeNode.host == "host0000")
                        .values(generation=ComputeNode.generation + 1, memory_mb_used=512, updated_at=utcnow()))
    clock.now += 2
    cache.hosts()
    assert state.last_heartbeat == beat and state.memory_mb_used == 512
    assert state.stats is stats and state.capabilities is capabilities

    with db.begin() as session:  # both documents change
        session.execute(sa.update(Service).where(Service.host == "host0000")
                        .values(capabilities={"vm_modes": ["hvm", "xen"]}, updated_at=utcnow()))
        session.execute(sa.update(ComputeNode).where(ComputeNode.host == "host0000")
                        .values(stats={"cpu_arch": "aarch64"}, generation=ComputeNode.generation + 1,
                                updated_at=utcnow()))
    clock.now += 2
    cache.hosts()
    assert (state.stats, state.capabilities) == ({"cpu_arch": "aarch64"}, {"vm_modes": ["hvm", "xen"]})
    assert cache.get("host0001").capabilities == {"vm_modes": ["hvm"]}
