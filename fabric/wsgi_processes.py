"""More processes serving one worker's listening port, so every core answers its HTTP requests.

One Python process runs on one core at a time (one interpreter lock, one eventlet hub), so a
worker with an HTTP port (the API, the objectstore) serves it from ``workers`` processes: the
worker's own process (which also answers RPC, heartbeats and runs periodic tasks) plus
``workers - 1`` helpers it starts. Each binds its own socket with SO_REUSEPORT and the kernel
spreads new connections over them evenly (one shared accepting socket would not: the first
process to wake takes nearly every connection of a burst); each process has its own hub and its
own database and broker connections. A worker configured on port 0 (any free port) runs no helpers.

A helper is a fresh interpreter, not a fork of a process that holds database and broker
connections and a running hub: ``python -c "from <launcher> import helper; ..."``, so ``ps``
names the worker it helps. The launcher module's ``helper()`` calls :func:`helper_main` with the
function that builds what the helper serves; the helper reads its parent's settings from a pipe,
binds the parent's port beside it and serves until stopped.

Promises:

- a helper never outlives its parent: the kernel SIGKILLs it when the parent dies, however
  (PR_SET_PDEATHSIG); :meth:`Helpers.stop` stops them by their PIDs (SIGTERM, SIGKILL after
  :data:`STOP_TIMEOUT`) and reaps them;
- a helper that dies is started again, and the parent logs both events; one that keeps dying
  soon after its start is restarted after a delay doubling up to :data:`MAX_RESTART_DELAY`;
- Ctrl-C in a terminal (SIGINT to the whole process group) stops the parent, which stops its
  helpers: a helper ignores SIGINT, so it is not restarted in the meantime;
- with metrics shared (:mod:`fabric.multiprocess_metrics`) a helper's counters reach its
  parent's ``/metrics``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import ClassVar

import eventlet
import eventlet.event
import eventlet.hubs

import fabric
from fabric import config, log, multiprocess_metrics
from fabric.exception import FabricError

LOG = logging.getLogger(__name__)

#: Seconds between checks that every helper still runs.
WATCH_INTERVAL = 1.0
#: Seconds a helper gets to exit after SIGTERM before SIGKILL, and to listen after it starts.
STOP_TIMEOUT = 10.0
START_TIMEOUT = 60.0
#: A helper that served this long is restarted at once when it dies; one that died sooner waits
#: a delay that doubles with each such death (1, 2, 4... seconds), up to MAX_RESTART_DELAY.
STABLE_AFTER = 30.0
MAX_RESTART_DELAY = 30.0
_PR_SET_PDEATHSIG = 1

#: What a helper serves: built from the settings and the port, it returns the function that stops it.
Serve = Callable[[config.Settings, int], Callable[[], None]]


class HelperFailed(FabricError):
    """A helper process could not start serving (local to the worker; never sent)."""

    remote_safe: ClassVar[bool] = False
    msg_fmt: ClassVar[str] = ("A helper process of {service} exited (status {status}) or took over a minute "
                              "before listening on port {port}; its output is in the worker's log")


def process_count(configured: int, *, port: int, backend: str) -> int:
    """How many processes serve a port: ``configured``, or for 0 one per CPU core (one on SQLite,
    whose writers take turns on one file lock anyway); always one on port 0."""
    if port == 0:
        return 1
    if configured:
        return configured
    return 1 if backend == "sqlite" else max(1, os.cpu_count() or 1)


class _Slot:
    """One helper's place: its current process, when it started, its next restart delay."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.started = time.monotonic()
        self.delay = 0.0
        self.restart_at: float | None = None


class Helpers:
    """``count`` helper processes serving ``port`` beside this one: ``start()``, ``stop()``.

    ``launcher`` is the module whose ``helper()`` a helper runs (``fabric.cmd.api``); ``service``
    names the worker in logs and errors.
    """

    def __init__(self, settings: config.Settings, *, service: str, launcher: str, port: int, count: int) -> None:
        self.settings = settings
        self.service = service
        self.launcher = launcher
        self.port = port
        self.count = count
        self._slots: list[_Slot] = []
        self._watcher = None
        self._stopping = eventlet.event.Event()

    @property
    def pids(self) -> list[int]:
        """The helpers' process ids now."""
        return [slot.proc.pid for slot in self._slots]

    def _spawn(self) -> tuple[subprocess.Popen, int]:
        """Start a helper: (its process, the read end of the pipe it writes to once it listens)."""
        root = os.path.dirname(os.path.dirname(os.path.abspath(fabric.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        ready, ready_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", f"import sys; from {self.launcher} import helper; sys.exit(helper())",
                 str(self.port), str(os.getpid()), str(ready_w)],
                stdin=subprocess.PIPE, pass_fds=(ready_w,), env=env)
        except BaseException:
            os.close(ready)
            raise
        finally:
            os.close(ready_w)
        proc.stdin.write(pickle.dumps(self.settings))
        proc.stdin.close()
        return proc, ready

    def _await_ready(self, proc: subprocess.Popen, ready: int) -> bool:
        """Wait until the helper listens (True), or exits or takes START_TIMEOUT first (False:
        it is killed and reaped). Closes ``ready``."""
        try:
            eventlet.hubs.trampoline(ready, read=True, timeout=START_TIMEOUT)
            if os.read(ready, 1) == b"1":
                return True
        except eventlet.Timeout:
            pass
        finally:
            os.close(ready)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        return False

    def start(self) -> Helpers:
        """Start the helpers and return once every one listens; HelperFailed (the others stopped) if one cannot."""
        pipes: list[int | None] = []
        try:
            for _ in range(self.count):  # all at once: each takes a second or two to import
                proc, ready = self._spawn()
                self._slots.append(_Slot(proc))
                pipes.append(ready)
            for index, slot in enumerate(self._slots):
                ready, pipes[index] = pipes[index], None  # _await_ready closes it
                if not self._await_ready(slot.proc, ready):
                    raise HelperFailed(service=self.service, port=self.port, status=slot.proc.returncode)
        except BaseException:
            for ready in pipes:
                if ready is not None:
                    os.close(ready)
            self.stop()
            raise
        if self._slots:
            self._watcher = eventlet.spawn(self._watch)
            LOG.info("%s helper processes %s serve port %d too", self.service, self.pids, self.port)
        return self

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL):
            for slot in self._slots:
                if self._stopping.ready():
                    return
                try:
                    self._tend(slot)
                except Exception:  # noqa: BLE001 - no helper could start (out of memory?): try again next round
                    LOG.exception("%s could not start a helper process; trying again in %gs", self.service,
                                  WATCH_INTERVAL)

    def _tend(self, slot: _Slot) -> None:
        """Restart ``slot``'s helper if it died (now, or once its delay has passed)."""
        now = time.monotonic()
        if slot.restart_at is None:
            if slot.proc.poll() is None:
                return
            lived = now - slot.started
            slot.delay = 0.0 if lived >= STABLE_AFTER else min(max(1.0, slot.delay * 2), MAX_RESTART_DELAY)
            slot.restart_at = now + slot.delay
            LOG.error("%s helper process %d exited (status %s) after %.1fs; starting another%s", self.service,
                      slot.proc.pid, slot.proc.returncode, lived, f" in {slot.delay:g}s" if slot.delay else "")
        if now < slot.restart_at:
            return
        dead = slot.proc.pid
        slot.proc, ready = self._spawn()
        slot.started, slot.restart_at = time.monotonic(), None
        eventlet.spawn_n(self._announce, slot.proc, ready, dead)

    def _announce(self, proc: subprocess.Popen, ready: int, dead: int) -> None:
        """Log whether the helper started in place of ``dead`` listens (the watcher restarts it if not)."""
        if self._await_ready(proc, ready):
            LOG.info("%s helper process %d serves port %d in place of %d", self.service, proc.pid, self.port, dead)
        elif not self._stopping.ready():
            LOG.error("%s helper process %d, started in place of %d, did not listen (status %s)",
                      self.service, proc.pid, dead, proc.returncode)

    def stop(self) -> None:
        """SIGTERM every helper by its PID, wait for it (SIGKILL after STOP_TIMEOUT); all reaped."""
        if not self._stopping.ready():
            self._stopping.send(True)
        if self._watcher is not None:
            # Not killed: it may be starting a helper, which must be in a slot to be stopped below.
            self._watcher.wait()
            self._watcher = None
        for slot in self._slots:
            if slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
        for slot in self._slots:
            try:
                slot.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                LOG.warning("%s helper process %d ignored SIGTERM for %gs; killing it", self.service,
                            slot.proc.pid, STOP_TIMEOUT)
                slot.proc.kill()
                slot.proc.wait(STOP_TIMEOUT)
        self._slots = []


def _die_with(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies; exit now if it already has."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(1)


def helper_main(argv: list[str], serve: Serve) -> int:
    """A helper's life: ``argv`` is (port, parent PID, ready pipe); settings come on stdin.
    ``serve(settings, port)`` starts serving and returns the function that stops it."""
    from fabric.service import SignalCatcher

    port, parent, ready = int(argv[0]), int(argv[1]), int(argv[2])
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops on Ctrl-C, then stops its helpers
    settings = pickle.load(sys.stdin.buffer)
    log.setup(settings.default.log_level, settings.default.log_file)
    publisher = multiprocess_metrics.RpcCountsPublisher().start() if multiprocess_metrics.shared() else None
    with SignalCatcher((signal.SIGTERM,)) as catcher:
        stop = serve(settings, port)
        os.write(ready, b"1")
        os.close(ready)
        catcher.wait()
    # Like the parent's server, which stops serving at once on its way out.
    with eventlet.Timeout(STOP_TIMEOUT / 2, False):
        stop()
    if publisher is not None:
        publisher.stop()
    return 0
