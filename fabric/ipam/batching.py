"""Group commit: concurrent requests on one key run together as one batch.

Every commit costs a WAL flush (PostgreSQL) or a redo-log flush (InnoDB):
on these machines that flush, not the statement, bounds how many
transactions per second one connection can make. So concurrent allocations
(green threads of one worker, or threads of one process) in the same pool
are combined: the first request becomes the batch's leader and runs at once
with whatever has queued; requests arriving while a batch runs queue up and
the next leader takes them all (up to ``max_batch``) in the next batch.
Nothing ever waits for company: a lone request runs immediately (as a batch
of one), and under load the batch size grows by itself with the time one
batch takes.

The batch function answers each request with a result, or with FALLBACK
(the batch could not decide it: a constraint violation, an exhausted pool,
an error), and the request's own thread then takes the one-request path,
which knows how to explain or retry. One request's failure therefore never
fails the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

LOG = logging.getLogger(__name__)

#: A batch's answer for a request it could not decide: take the single path.
FALLBACK = object()

BatchFunction = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class _Slot:
    __slots__ = ("request", "result", "batch", "done")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.result: Any = FALLBACK
        #: Set (under the lock) when this slot leads a batch: the slots it carries.
        self.batch: list[_Slot] | None = None
        # threading.Event: green under eventlet's monkey patching, real otherwise.
        self.done = threading.Event()


class _Lane:
    __slots__ = ("queue", "running", "last", "gathering")

    def __init__(self) -> None:
        self.queue: list[_Slot] = []
        self.running = 0
        #: Size of the lane's last batch: what the load has recently been.
        self.last = 1
        self.gathering = False


class GroupCommit:
    """Combines concurrent ``submit(key, request)`` calls into ``batch(key, requests)`` calls.

    At most ``lanes`` batches per key run at once (one keeps batches largest;
    two let one batch gather while another waits for its commit). A leader
    whose batch is less than half the lane's last one waits up to ``gather``
    seconds for the rest to come back: otherwise a steady load splits into a
    large batch and a straggler's batch of one, in turn. Thread-safe.
    """

    def __init__(self, batch: BatchFunction, max_batch: int = 64, lanes: int = 1,
                 gather: float = 0.002) -> None:
        if max_batch < 1 or lanes < 1:
            raise ValueError(f"max_batch {max_batch} and lanes {lanes}: at least 1 each is accepted")
        self._batch = batch
        self.max_batch = max_batch
        self.lanes = lanes
        self.gather = gather
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._keys: dict[Hashable, _Lane] = {}
        #: Batches run and requests they carried (for benchmarks and tests).
        self.batches = 0
        self.requests = 0
        #: Batches that failed as a whole (their requests went down the single path).
        self.failures = 0

    def submit(self, key: Hashable, request: Any) -> Any:
        """The batch's answer for ``request``: a result, or FALLBACK. Never raises the batch's errors."""
        slot = _Slot(request)
        with self._lock:
            lane = self._keys.get(key)
            if lane is None:
                lane = self._keys[key] = _Lane()
            if lane.running < self.lanes:
                lane.running += 1
                slot.batch = [slot] + self._claim(lane, self.max_batch - 1)
            else:
                lane.queue.append(slot)
                if lane.gathering:
                    self._arrived.notify_all()
        if slot.batch is None:
            slot.done.wait()
            if slot.batch is None:
                return slot.result
            # Handed the lead by the batch before ours.
        return self._lead(key, lane, slot)

    def waiting(self, key: Hashable) -> int:
        """How many requests on ``key`` wait for a batch to finish (for tests and benchmarks)."""
        with self._lock:
            lane = self._keys.get(key)
            return len(lane.queue) if lane is not None else 0

    def _claim(self, lane: _Lane, count: int) -> list[_Slot]:
        """Take up to ``count`` queued slots (the caller holds the lock)."""
        taken = lane.queue[:count]
        del lane.queue[:count]
        return taken

    def _lead(self, key: Hashable, lane: _Lane, own: _Slot) -> Any:
        batch = own.batch
        assert batch is not None
        wanted = min(self.max_batch, lane.last)
        if self.gather > 0 and len(batch) < wanted // 2:
            with self._lock:
                lane.gathering = True
                self._arrived.wait_for(lambda: len(batch) + len(lane.queue) >= wanted, self.gather)
                lane.gathering = False
                batch.extend(self._claim(lane, self.max_batch - len(batch)))
        try:
            answers = self._run(key, [slot.request for slot in batch])
            for slot, answer in zip(batch, answers, strict=True):
                slot.result = answer
        finally:
            with self._lock:
                self.batches += 1
                self.requests += len(batch)
                lane.last = len(batch)
                successor = None
                if lane.queue:
                    # Hand the lane on: the oldest waiter leads what has queued.
                    successor = lane.queue[0]
                    successor.batch = self._claim(lane, self.max_batch)
                else:
                    lane.running -= 1
                    if not lane.running:
                        self._keys.pop(key, None)
            for slot in batch:
                if slot is not own:
                    slot.done.set()
            if successor is not None:
                successor.done.set()
        return own.result

    def _run(self, key: Hashable, requests: list[Any]) -> Sequence[Any]:
        # A batch of one runs here too: the lane must stay busy while it commits,
        # or requests arriving meanwhile would never queue and never combine.
        try:
            answers = self._batch(key, requests)
        except Exception as exc:  # noqa: BLE001 - every request retries alone and reports its own error
            LOG.debug("batch of %d on %s failed (%s); each request goes alone", len(requests), key, exc)
            with self._lock:
                self.failures += 1
            return [FALLBACK] * len(requests)
        if len(answers) != len(requests):
            return [FALLBACK] * len(requests)
        return answers
