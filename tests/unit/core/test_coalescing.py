"""fabric.coalescing: a burst of requests runs the work few times, and every request is
followed by a run that started after it."""

from __future__ import annotations

import itertools
import threading

import pytest

from fabric.coalescing import Coalesced


def test_a_lone_request_runs_the_work_once_in_its_caller():
    done = []
    work = Coalesced(lambda: done.append(1))
    assert work.request() is True
    assert done == [1] and work.runs == 1


def test_requests_during_a_run_return_at_once_and_cost_one_more_run():
    answers = []

    def run() -> None:
        if work.runs == 1:  # three requests arrive while the first run goes
            answers.extend(work.request() for _ in range(3))

    work = Coalesced(run)
    assert work.request() is True
    assert answers == [False, False, False]
    assert work.runs == 2


def test_a_failed_run_leaves_what_it_took_on_to_the_next_request():
    def run() -> None:
        if work.runs == 1:
            assert work.request() is False  # taken on by this run, which then fails
            raise RuntimeError("database gone")

    work = Coalesced(run)
    with pytest.raises(RuntimeError):
        work.request()
    assert work.request() is True
    assert work.runs == 2  # one more run, and a later request is not left waiting for a runner
    assert work.request() is True and work.runs == 3


def test_under_threads_every_request_is_followed_by_a_run_that_started_after_it():
    clock = itertools.count()
    lock = threading.Lock()
    run_starts: list[int] = []
    request_times: list[int] = []

    def run() -> None:
        with lock:
            run_starts.append(next(clock))

    work = Coalesced(run)
    start = threading.Barrier(8)

    def caller() -> None:
        start.wait()
        for _ in range(200):
            with lock:
                request_times.append(next(clock))
            work.request()

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(request_times) == 1600
    assert all(any(begun > asked for begun in run_starts) for asked in request_times)
    assert work.runs == len(run_starts) <= 1600
