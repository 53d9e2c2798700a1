"""Weighers on hand-built host states."""

from __future__ import annotations

import datetime
import random

import pytest

from fabric import exception
from fabric.config import SchedulerSection
from fabric.db.types import utcnow
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import RequestSpec
from fabric.scheduler.weighers import CoreWeigher, RamWeigher, load_weighers, weigh_hosts


def hosts() -> list[HostState]:
    return [
        HostState(host="empty", vcpus=8, memory_mb=8192, vcpus_used=0, memory_mb_used=0),
        HostState(host="half", vcpus=8, memory_mb=8192, vcpus_used=4, memory_mb_used=4096),
        HostState(host="full", vcpus=8, memory_mb=8192, vcpus_used=7, memory_mb_used=7168),
    ]


def order(settings: SchedulerSection, states: list[HostState]) -> list[str]:
    ranked = weigh_hosts(load_weighers(settings), states, RequestSpec(), rng=random.Random(1))
    return [state.host for _weight, state in ranked]


def test_spread_prefers_the_emptiest_host():
    assert order(SchedulerSection(spread=True), hosts()) == ["empty", "half", "full"]


def test_stack_prefers_the_fullest_host():
    assert order(SchedulerSection(spread=False), hosts()) == ["full", "half", "empty"]


def test_ram_weigher_alone_normalises_to_zero_one():
    settings = SchedulerSection(weighers="RamWeigher")
    ranked = weigh_hosts(load_weighers(settings), hosts(), RequestSpec())
    weights = {state.host: weight for weight, state in ranked}
    assert weights == {"empty": 1.0, "half": pytest.approx((4096 - 1024) / (8192 - 1024)), "full": 0.0}


def test_core_weigher_uses_free_vcpus_under_the_ratio():
    states = [HostState(host="a", vcpus=2, vcpus_used=0, cpu_ratio=16.0),
              HostState(host="b", vcpus=8, vcpus_used=0, cpu_ratio=1.0)]
    assert order(SchedulerSection(weighers="CoreWeigher"), states) == ["a", "b"]  # 32 free vs 8


def test_recent_failed_builds_push_a_host_down():
    states = hosts()
    states[0].failed_builds = 2
    states[0].last_build_failure_at = utcnow()
    assert order(SchedulerSection(), states)[-1] == "empty"


def test_old_failed_builds_are_forgotten():
    states = hosts()
    states[0].failed_builds = 5
    states[0].last_build_failure_at = utcnow() - datetime.timedelta(hours=2)
    assert order(SchedulerSection(failed_build_window=600), states)[0] == "empty"


def test_equal_hosts_are_ordered_differently_by_each_process():
    # Each scheduler process draws its own tie-break keys (here: fresh host states).
    weighers = load_weighers(SchedulerSection())
    firsts = set()
    for _ in range(10):
        states = [HostState(host=f"h{i}", vcpus=4, memory_mb=4096) for i in range(20)]
        firsts.add(weigh_hosts(weighers, states, RequestSpec())[0][1].host)
    assert len(firsts) > 1


def test_equal_hosts_keep_their_order_within_one_process():
    weighers = load_weighers(SchedulerSection())
    states = [HostState(host=f"h{i}", vcpus=4, memory_mb=4096) for i in range(20)]
    orders = {tuple(h.host for _w, h in weigh_hosts(weighers, states, RequestSpec())) for _ in range(3)}
    assert len(orders) == 1


def test_limit_returns_the_best_only():
    ranked = weigh_hosts(load_weighers(SchedulerSection()), hosts(), RequestSpec(), limit=2)
    assert [h.host for _w, h in ranked] == ["empty", "half"]


def test_unknown_weigher_is_a_clear_setting_error():
    with pytest.raises(exception.InvalidSetting) as caught:
        load_weighers(SchedulerSection(weighers="RamWeigher,Heaviest"))
    assert "Heaviest" in caught.value.message and "CoreWeigher" in caught.value.message


def test_the_default_weighers_rank_by_ram_then_vcpus_then_each_hosts_tiebreak():
    # The one-pass ranking of the default weighers gives the order their two terms give.
    draw = random.Random(5)
    states = [HostState(host=f"h{i}", vcpus=16, memory_mb=32768, vcpus_used=draw.choice([0, 4, 8]),
                        memory_mb_used=draw.choice([0, 8192, 16384]), cpu_ratio=4.0) for i in range(60)]
    ranked = [h.host for _w, h in weigh_hosts(load_weighers(SchedulerSection()), states, RequestSpec())]
    free_ram = [h.free_ram_mb for h in states]
    free_cpu = [h.free_vcpus for h in states]

    def normalised(values, value):
        return (value - min(values)) / (max(values) - min(values))

    expected = sorted(states, reverse=True, key=lambda h: (
        round(normalised(free_ram, h.free_ram_mb) + normalised(free_cpu, h.free_vcpus), 9), h.tiebreak))
    assert ranked == [h.host for h in expected]
    assert [h.host for _w, h in weigh_hosts(load_weighers(SchedulerSection()), states, RequestSpec(),
                                            limit=1)] == ranked[:1]


def test_the_default_weighers_fast_keys_order_and_weigh_as_the_general_loop():
    class Ram(RamWeigher):  # the same weigher, not recognised by the fast path
        pass

    class Core(CoreWeigher):
        pass

    rng = random.Random(3)
    states = [HostState(host=f"h{i}", vcpus=16, memory_mb=32768, vcpus_used=rng.randrange(0, 16),
                        memory_mb_used=rng.randrange(0, 32768), cpu_ratio=4.0) for i in range(200)]
    settings = SchedulerSection(spread=True)
    fast = load_weighers(settings)
    general = [Ram(settings), Core(settings), *fast[2:]]
    for limit in (1, 8, None):
        assert ([(weight, state.host) for weight, state in weigh_hosts(fast, states, RequestSpec(), limit=limit)]
                == [(weight, state.host) for weight, state in weigh_hosts(general, states, RequestSpec(),
                                                                          limit=limit)])
