"""Placement by host aggregates (availability zones, aggregate_instance_extra_specs) and the
soft server-group policies, through the scheduler manager over SQLite."""

from __future__ import annotations

import random

from fabric.config import Settings
from fabric.db.models import Aggregate, AggregateHost, Flavor, Instance, ServerGroup
from fabric.scheduler.filters.aggregates import AggregateAvailabilityZoneFilter
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import SOFT_AFFINITY, SOFT_ANTI_AFFINITY, RequestSpec
from fabric.scheduler.weighers import load_weighers, weigh_hosts
from tests.fixtures import scheduler as build
from tests.unit.scheduler.test_manager import CTX, RecordingCompute, manager_for


def aggregate(db, name: str, hosts: list[str], **metadata) -> None:
    with db.begin() as session:
        row = Aggregate(name=name, metadata_items=metadata)
        session.add(row)
        session.flush()
        session.add_all(AggregateHost(aggregate_id=row.id, host=h) for h in hosts)


def placed(db, iid: str) -> Instance:
    with db.begin() as session:
        row = session.get(Instance, iid)
        session.expunge(row)
        return row


def test_an_aggregate_zone_sends_the_server_to_its_hosts_only(sqlite_db):
    names = build.add_hosts(sqlite_db, 4)
    aggregate(sqlite_db, "rack", [names[2]], availability_zone="az1")
    manager = manager_for(sqlite_db, RecordingCompute())
    ids = build.add_instances(sqlite_db, 3, availability_zone="az1")
    for iid in ids:
        manager.schedule_and_build(CTX, instance_id=iid)
    assert {placed(sqlite_db, iid).host for iid in ids} == {names[2]}
    # The host's node zone no longer counts; the others keep theirs.
    [nova] = build.add_instances(sqlite_db, 1, availability_zone="nova")
    manager.schedule_and_build(CTX, instance_id=nova)
    assert placed(sqlite_db, nova).host in set(names) - {names[2]}


def test_no_host_in_the_zone_is_no_valid_host_naming_the_filter(sqlite_db):
    build.add_hosts(sqlite_db, 2)
    [iid] = build.add_instances(sqlite_db, 1, availability_zone="az9")
    manager_for(sqlite_db, RecordingCompute()).schedule_and_build(CTX, instance_id=iid)
    row = placed(sqlite_db, iid)
    assert row.vm_state == "error" and row.host is None
    assert "AggregateAvailabilityZoneFilter removed 2" in build.faults(sqlite_db)[iid][0]


def test_flavor_extra_specs_match_aggregate_metadata(sqlite_db):
    names = build.add_hosts(sqlite_db, 3)
    aggregate(sqlite_db, "fast", [names[1]], ssd="true")
    aggregate(sqlite_db, "slow", [names[0]], ssd="false")
    ids = build.add_instances(sqlite_db, 2)
    with sqlite_db.begin() as session:
        flavor = Flavor(name="ssd", vcpus=1, memory_mb=1024,
                        extra_specs={"aggregate_instance_extra_specs:ssd": "true"})
        session.add(flavor)
        session.flush()
        session.query(Instance).filter(Instance.id.in_(ids)).update({"flavor_id": flavor.id})
    manager = manager_for(sqlite_db, RecordingCompute())
    for iid in ids:
        manager.schedule_and_build(CTX, instance_id=iid)
    assert {placed(sqlite_db, iid).host for iid in ids} == {names[1]}


def test_the_filter_without_a_database_knows_no_aggregates():
    state = HostState(host="h", availability_zone="az1")
    assert AggregateAvailabilityZoneFilter().filter_all([state], RequestSpec(availability_zone="az1")) == [state]
    assert AggregateAvailabilityZoneFilter().filter_all([state], RequestSpec(availability_zone="az2")) == []


def test_soft_policies_weigh_the_groups_hosts_first_or_last():
    settings = Settings().scheduler
    states = [HostState(host=n, vcpus=8, memory_mb=8192, memory_mb_used=used)
              for n, used in (("roomy", 0), ("member", 6000))]
    weighers = load_weighers(settings)

    def best(policy: str) -> str:
        spec = RequestSpec(group_id="g", group_policy=policy, group_hosts={"member"})
        return weigh_hosts(weighers, states, spec, rng=random.Random(1))[0][1].host

    assert best(SOFT_AFFINITY) == "member"
    assert best(SOFT_ANTI_AFFINITY) == "roomy"


def test_soft_anti_affinity_spreads_while_hosts_last_then_shares(sqlite_db):
    names = build.add_hosts(sqlite_db, 2)
    with sqlite_db.begin() as session:
        group = ServerGroup(name="g", project_id=build.PROJECT, user_id=build.USER, policy=SOFT_ANTI_AFFINITY)
        session.add(group)
        session.flush()
        group_id = group.id
    ids = build.add_instances(sqlite_db, 3, group_id=group_id)
    manager = manager_for(sqlite_db, RecordingCompute())
    for iid in ids:
        manager.schedule_and_build(CTX, instance_id=iid)
    hosts = [placed(sqlite_db, iid).host for iid in ids]
    assert set(hosts[:2]) == set(names)  # one member per host while it can
    assert hosts[2] in names  # and a third is still placed (soft)
