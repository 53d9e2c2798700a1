"""Work that a burst of requests needs done once, not once each: "apply what the database says now".

A host told N times in a second that security groups changed needs to read and apply their
state once after the last telling, not N times: each run reads everything afresh, so a run
that starts after a request covers it. :class:`Coalesced` keeps that promise with one flag:
a request made while a run is going marks the work stale, and the running caller goes round
once more when it ends; the request's own caller returns at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Coalesced:
    """``work`` run for requests, as few times as keeps this promise: every request is followed
    by a run of ``work`` that starts after it (in its own caller, or in the caller running
    ``work`` when it came). ``runs`` counts the runs."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._lock = threading.Lock()
        self._stale = False
        self._running = False
        self.runs = 0

    def request(self) -> bool:
        """Have ``work`` run after now. Runs it in this caller, again for as long as requests
        came meanwhile, unless another caller is running it (which then runs it once more for
        this one): returns whether this caller ran it. An error of ``work`` propagates to the
        caller running it, and requests it had taken on are run by the next request's run."""
        with self._lock:
            self._stale = True
            if self._running:
                return False
            self._running = True
        try:
            while True:
                with self._lock:
                    if not self._stale:
                        self._running = False
                        return True
                    self._stale = False
                self.runs += 1
                self._work()
        except BaseException:
            with self._lock:
                self._running = False
                self._stale = True  # what it had taken on is still to do
            raise
