"""Four scheduler workers on PostgreSQL over the real RabbitMQ, placing instances at once.

The hosts fit only some of the instances; one host fails every build (its
instances come back for rescheduling); an anti-affinity and an affinity group
compete with the rest. At the end no host is over capacity (read from the
database), every instance is active on a healthy host or in error with a
fault, and both group policies held although four processes decided
concurrently.
"""

from __future__ import annotations

import random

import pytest

from fabric import config, exception, rpc
from fabric.context import RequestContext
from fabric.scheduler.request import AFFINITY, ANTI_AFFINITY
from fabric.scheduler.rpcapi import SchedulerAPI
from tests.fixtures import scheduler as build
from tests.fixtures.processes import python_module, wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

WORKERS = 4
HOSTS = 6
FAILING_HOST = "host0005"
RATIOS = {"ram_ratio": 1.0, "cpu_ratio": 1.0, "disk_ratio": 1.0}


@pytest.fixture
def client_transport(rabbit):
    transport = rpc.get_transport(config.Settings().replace(
        rpc={"transport_url": rabbit.url, "call_timeout": 20}).rpc)
    yield transport
    transport.cleanup()


def test_four_workers_place_concurrently_without_overcommit(postgres_db, rabbit, spawn, client_transport):
    db = postgres_db
    hosts = build.add_hosts(db, HOSTS, vcpus=8, memory_mb=8192, disk_gb=100, with_services=False)
    anti = build.add_group(db, ANTI_AFFINITY)
    together = build.add_group(db, AFFINITY)
    anti_ids = build.add_instances(db, 8, memory_mb=1024, disk_gb=5, group_id=anti)
    together_ids = build.add_instances(db, 5, memory_mb=1024, disk_gb=5, group_id=together)
    plain_ids = build.add_instances(db, 24, memory_mb=2048, vcpus=2, disk_gb=10)
    # 8*1024 + 5*1024 + 24*2048 MiB asked of 6*8192: the hosts fit only some of them.
    all_ids = anti_ids + together_ids + plain_ids
    random.Random(3).shuffle(all_ids)

    env = {"FABRIC_RPC_TRANSPORT_URL": rabbit.url,
           "FABRIC_DATABASE_URL": db.url.render_as_string(hide_password=False),
           "FABRIC_SCHEDULER_RAM_ALLOCATION_RATIO": "1.0", "FABRIC_SCHEDULER_CPU_ALLOCATION_RATIO": "1.0",
           "FABRIC_SCHEDULER_DISK_ALLOCATION_RATIO": "1.0", "FABRIC_SCHEDULER_HOST_REFRESH_INTERVAL": "0.2",
           "FABRIC_SERVICE_GRACEFUL_SHUTDOWN_TIMEOUT": "5"}
    compute = spawn(python_module("tests.fixtures.scheduler_worker", "compute", "--hosts", ",".join(hosts),
                                  "--fail-hosts", FAILING_HOST),
                    env={**env, "FABRIC_DEFAULT_HOST": "computes"}, name="compute")
    schedulers = [spawn(python_module("tests.fixtures.scheduler_worker", "scheduler"),
                        env={**env, "FABRIC_DEFAULT_HOST": f"scheduler{i}"}, name=f"scheduler{i}")
                  for i in range(WORKERS)]
    workers = [compute, *schedulers]
    for host in hosts:
        compute.wait_for_log(f"Started fabric-compute on host {host}", timeout=60)
    for index, worker in enumerate(schedulers):
        worker.wait_for_log(f"Started fabric-scheduler on host scheduler{index}", timeout=60)

    api = SchedulerAPI(client_transport)
    ctx = RequestContext.admin()
    for iid in all_ids:
        api.schedule_and_build(ctx, iid)

    def settled():
        rows = build.instances(db, all_ids)
        return rows if all(r.vm_state in ("active", "error") for r in rows.values()) else None

    rows = wait_until(settled, timeout=180, what="every instance active or in error", workers=workers,
                      interval=0.1)
    faults = build.faults(db)

    # No host over capacity, and usage equals what the instances on it hold.
    assert build.overcommitted(db, **RATIOS) == []
    nodes = build.nodes(db)
    assert nodes[FAILING_HOST].running_vms == 0 and nodes[FAILING_HOST].failed_builds > 0

    active = {iid: r for iid, r in rows.items() if r.vm_state == "active"}
    errored = {iid: r for iid, r in rows.items() if r.vm_state == "error"}
    assert active and errored, "the hosts should fit some instances, not all"
    assert all(r.host not in (None, FAILING_HOST) for r in active.values())
    for iid in errored:
        assert errored[iid].host is None
        assert faults.get(iid), f"instance {iid} in error without a fault"
        message = faults[iid][-1]
        assert message.startswith(("No valid host was found: ", "Build of instance")), message
    # A plain instance refused for lack of room says which filter removed the hosts.
    plain_refused = [faults[iid][-1] for iid in plain_ids if iid in errored]
    assert any("RamFilter removed" in message for message in plain_refused), plain_refused

    # Groups held under concurrency.
    anti_hosts = [rows[iid].host for iid in anti_ids if iid in active]
    assert anti_hosts and len(anti_hosts) == len(set(anti_hosts)), anti_hosts
    together_hosts = {rows[iid].host for iid in together_ids if iid in active}
    assert len(together_hosts) <= 1, together_hosts

    # Every worker was up, and the decisions were really shared among them.
    decided_by = {}
    for index in range(WORKERS):
        stats = api.decision_stats(ctx, f"scheduler{index}")
        decided_by[index] = sum(stats["outcomes"].values())
    assert sum(1 for count in decided_by.values() if count) >= 2, decided_by

    # select_destinations over the wire: a ranking without a claim, or NoValidHost with counts.
    usage_before = {host: node.memory_mb_used for host, node in build.nodes(db).items()}
    ranked = api.select_destinations(ctx, {"memory_mb": 512, "vcpus": 1}, limit=3)
    assert 1 <= len(ranked) <= 3 and all(entry["host"] in hosts for entry in ranked)
    with pytest.raises(exception.NoValidHost, match=f"{HOSTS} hosts; RamFilter removed {HOSTS}"):
        api.select_destinations(ctx, {"memory_mb": 10**6})
    assert {host: node.memory_mb_used for host, node in build.nodes(db).items()} == usage_before
