"""Periodic tasks: they run at their spacing, survive exceptions, and stop."""

from __future__ import annotations

import eventlet
import pytest

from fabric import context
from fabric.periodic import PeriodicRunner, periodic_task, periodic_tasks
from tests.fixtures.processes import wait_until


class Ticker:
    def __init__(self):
        self.ticks = 0
        self.request_ids = []
        self.fails_left = 3
        self.after_failures = 0

    @periodic_task(spacing=0.01, run_immediately=True)
    def tick(self, ctx):
        self.ticks += 1
        self.request_ids.append(context.current().request_id)
        assert ctx.is_admin

    @periodic_task(spacing=lambda self: 0.01)
    def flaky(self, ctx):
        if self.fails_left:
            self.fails_left -= 1
            raise RuntimeError("boom")
        self.after_failures += 1

    def not_periodic(self, ctx):
        raise AssertionError("never scheduled")


def test_tasks_are_found_with_their_spacing():
    tasks = {t.name: t for t in periodic_tasks(Ticker())}
    assert set(tasks) == {"tick", "flaky"}
    assert tasks["tick"].spacing == 0.01 and tasks["tick"].run_immediately
    assert not tasks["flaky"].run_immediately


def test_tasks_run_repeatedly_and_survive_exceptions(caplog):
    ticker = Ticker()
    runner = PeriodicRunner(ticker)
    runner.start()
    try:
        wait_until(lambda: ticker.ticks >= 3 and ticker.after_failures >= 2)
    finally:
        runner.stop(timeout=5)
    flaky = next(t for t in runner.tasks if t.name == "flaky")
    assert flaky.failures == 3
    assert "Periodic task flaky failed" in caplog.text and "RuntimeError: boom" in caplog.text
    # Each run has its own request id, so its log lines can be told apart.
    assert len(set(ticker.request_ids)) == len(ticker.request_ids)


def test_stop_ends_the_loops():
    ticker = Ticker()
    runner = PeriodicRunner(ticker)
    runner.start()
    wait_until(lambda: ticker.ticks >= 1)
    runner.stop(timeout=5)
    ticks = ticker.ticks
    eventlet.sleep(0.05)  # several spacings: a live loop would have ticked again
    assert ticker.ticks == ticks


def test_bad_spacing_is_named():
    class Bad:
        @periodic_task(spacing=lambda self: 0)
        def never(self, ctx):
            pass

    with pytest.raises(ValueError, match=r"Bad.never has spacing 0"):
        periodic_tasks(Bad())


class Gated:
    """A periodic task that waits for the test's gate, counting how many of its kind run at once."""

    def __init__(self, gate, tally):
        self.gate, self.tally = gate, tally

    @periodic_task(spacing=60, run_immediately=True)
    def report(self, ctx):
        self.tally["running"] += 1
        self.tally["most"] = max(self.tally["most"], self.tally["running"])
        self.gate.wait()
        self.tally["running"] -= 1
        self.tally["runs"] += 1


def test_runners_sharing_a_limiter_run_one_task_at_a_time_between_them():
    from eventlet.semaphore import Semaphore

    gate, tally, limiter = eventlet.event.Event(), {"running": 0, "most": 0, "runs": 0}, Semaphore(1)
    runners = [PeriodicRunner(Gated(gate, tally), limiter) for _ in range(3)]
    for runner in runners:
        runner.start()
    try:
        wait_until(lambda: limiter.balance == -2)  # one runs, the other two wait for the limiter
        assert tally == {"running": 1, "most": 1, "runs": 0}
        gate.send(True)
        wait_until(lambda: tally["runs"] == 3)
        assert tally["most"] == 1 and limiter.balance == 1
    finally:
        gate.ready() or gate.send(True)
        for runner in runners:
            runner.stop(timeout=5)
