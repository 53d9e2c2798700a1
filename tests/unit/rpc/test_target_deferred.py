"""Target names and routing keys; Deferred's promises (one outcome, callbacks on the hub)."""

from __future__ import annotations

import eventlet
import pytest

from fabric.exception import Invalid, NotFound
from fabric.rpc import Deferred, Target


def test_target_routing_keys():
    assert Target("compute").routing_key == "compute"
    assert Target("compute", server="node1.example").routing_key == "compute.node1.example"
    assert Target("compute").fanout_exchange == "compute_fanout"
    assert str(Target("network", fanout=True)) == "network (fanout)"


@pytest.mark.parametrize("kwargs", [{"topic": "a*"}, {"topic": "#"}, {"topic": ""},
                                    {"topic": "ok", "server": "h#1"}])
def test_target_rejects_wildcards_and_empty_names(kwargs):
    with pytest.raises(Invalid, match="is not a valid name"):
        Target(**kwargs)


def test_callbacks_run_on_the_hub_not_inside_resolve():
    seen = []
    deferred = Deferred()
    deferred.add_callback(lambda result: seen.append(("first", result)))
    deferred.add_callback(lambda result: seen.append(("second", result)))
    assert deferred.resolve(42)
    assert seen == []  # not run inside resolve(): the resolver may hold a connection
    eventlet.sleep(0)
    assert seen == [("first", 42), ("second", 42)]


def test_only_the_first_outcome_counts():
    deferred = Deferred()
    errors = []
    deferred.add_errback(errors.append)
    assert deferred.fail(NotFound(kind="x", ident=1))
    assert not deferred.resolve(1)
    assert not deferred.fail(RuntimeError("late"))
    with pytest.raises(NotFound):
        deferred.wait()
    eventlet.sleep(0)
    assert len(errors) == 1 and isinstance(errors[0], NotFound)


def test_callback_added_after_outcome_still_runs_once():
    deferred = Deferred()
    deferred.resolve("done")
    seen = []
    deferred.add_callback(seen.append)
    deferred.add_errback(lambda e: seen.append("errback"))
    eventlet.sleep(0)
    assert seen == ["done"]


def test_failing_callback_is_logged_and_others_run(caplog):
    deferred = Deferred("call ping to t")
    seen = []
    deferred.add_callback(lambda r: 1 / 0)
    deferred.add_callback(seen.append)
    deferred.resolve("ok")
    eventlet.sleep(0)
    assert seen == ["ok"]
    assert "call ping to t failed" in caplog.text


def test_wait_with_timeout_raises_when_nothing_came():
    deferred = Deferred("call ping to t")
    with pytest.raises(TimeoutError, match="call ping to t has no outcome after 0.01s"):
        deferred.wait(0.01)
    eventlet.sleep(0.03)  # nothing armed is left behind to fire into later code
    deferred.resolve("late")
    assert deferred.wait() == "late"


def test_get_transport_refuses_unknown_schemes(settings):
    from fabric import rpc

    settings = settings.replace(rpc={"transport_url": "kafka://broker:9092"})
    with pytest.raises(Invalid, match="'kafka://broker:9092': accepted schemes are amqp:// and memory://"):
        rpc.get_transport(settings.rpc)


def test_a_deferred_given_a_wake_wakes_its_waiter_only_through_it():
    """A call's Deferred wakes its caller through the transport's wake_soon (on AMQP, the
    reply's reader switches to the caller when it next waits)."""
    from eventlet import hubs

    handed = []
    deferred = Deferred("call", wake=handed.append)
    waiter = eventlet.spawn(deferred.wait)
    eventlet.sleep(0)  # the caller waits
    deferred.resolve(5)
    eventlet.sleep(0)
    assert len(handed) == 1 and not waiter.dead  # not woken by a hub timer of its own
    hubs.get_hub().schedule_call_global(0, handed[0])
    assert waiter.wait() == 5


def test_a_waiter_that_timed_out_is_not_woken_by_a_later_outcome():
    handed = []
    deferred = Deferred("call", wake=handed.append)
    with pytest.raises(TimeoutError):
        deferred.wait(0.01)
    deferred.fail(NotFound(kind="x", ident=1))
    assert handed == []
    with pytest.raises(NotFound):
        deferred.wait()
