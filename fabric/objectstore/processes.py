"""More processes serving the objectstore's one listening socket, so every core answers requests.

One Python process runs on one core at a time (one interpreter lock, one eventlet hub), so
``[objectstore] workers`` processes serve the same port: the worker's own process (which also
answers RPC, heartbeats, and swept the blob store before it listened) plus ``workers - 1``
helpers it starts. Each binds its own socket with SO_REUSEPORT and the kernel spreads new
connections over them evenly (one shared accepting socket would not: the first process to
wake takes nearly every connection of a burst); each process has its own hub and its own
database connections. A worker configured on port 0 (any free port) runs no helpers.

A helper is a fresh interpreter (``fabric.cmd.objectstore.helper``), not a fork of a process
that holds database and broker connections and a running hub. It reads its parent's settings
from a pipe, binds the parent's port and serves until stopped.

Promises:

- a helper never outlives its parent: the kernel SIGKILLs it when the parent dies, however
  (PR_SET_PDEATHSIG), so a restarted objectstore never sweeps the blob store while a helper
  of the old one is still writing;
- helpers never sweep the blob store: only the parent does, before anything listens;
- a helper that dies is started again (an upload it was receiving stays in ``tmp/`` until the
  next start's sweep, as after any crash).
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
from typing import ClassVar

import eventlet

import fabric
from fabric import config, log
from fabric.db import Database
from fabric.exception import FabricError

LOG = logging.getLogger(__name__)

#: Seconds between checks that every helper still runs.
WATCH_INTERVAL = 1.0
#: Seconds a helper gets to exit after SIGTERM before SIGKILL, and to listen after it starts.
STOP_TIMEOUT = 10.0
START_TIMEOUT = 60.0
_PR_SET_PDEATHSIG = 1


class HelperFailed(FabricError):
    """A helper process could not start serving (local to the worker; never sent)."""

    remote_safe: ClassVar[bool] = False
    msg_fmt: ClassVar[str] = ("An objectstore helper process exited (status {status}) or took over a minute "
                              "before listening on port {port}; its output is in the worker's log")


def process_count(settings: config.Settings, backend: str) -> int:
    """How many processes serve requests: ``[objectstore] workers``, or for 0 one per CPU core
    (one on SQLite, whose writers take turns on one file lock anyway); one on port 0."""
    if settings.objectstore.port == 0:
        return 1
    configured = settings.objectstore.workers
    if configured:
        return configured
    return 1 if backend == "sqlite" else max(1, os.cpu_count() or 1)


class Helpers:
    """``count`` helper processes serving ``port`` beside this one: ``start()``, ``stop()``."""

    def __init__(self, settings: config.Settings, port: int, count: int) -> None:
        self.settings = settings
        self.port = port
        self.count = count
        self.procs: list[subprocess.Popen] = []
        self._watcher = None
        self._stopping = False

    def _spawn(self) -> tuple[subprocess.Popen, int]:
        """Start a helper: (its process, the read end of the pipe it closes once it listens)."""
        root = os.path.dirname(os.path.dirname(os.path.abspath(fabric.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        ready, ready_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from fabric.cmd.objectstore import helper; sys.exit(helper())",
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

    def _await_ready(self, proc: subprocess.Popen, ready: int) -> None:
        """Wait until the helper listens; HelperFailed when it exits or takes too long first."""
        try:
            with eventlet.Timeout(START_TIMEOUT, False):
                said = os.read(ready, 1)
                if said == b"1":
                    return
        finally:
            os.close(ready)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise HelperFailed(port=self.port, status=proc.returncode)

    def start(self) -> Helpers:
        """Start the helpers and return once every one listens; HelperFailed (the others stopped) if one cannot."""
        pipes: list[int | None] = []
        try:
            for _ in range(self.count):  # all at once: each takes a second or two to import
                proc, ready = self._spawn()
                self.procs.append(proc)
                pipes.append(ready)
            for index, proc in enumerate(self.procs):
                ready, pipes[index] = pipes[index], None  # _await_ready closes it
                self._await_ready(proc, ready)
        except BaseException:
            for ready in pipes:
                if ready is not None:
                    os.close(ready)
            self.stop()
            raise
        if self.procs:
            self._watcher = eventlet.spawn(self._watch)
            LOG.info("Objectstore helper processes %s serve port %d too", [p.pid for p in self.procs], self.port)
        return self

    def _watch(self) -> None:
        while not self._stopping:
            eventlet.sleep(WATCH_INTERVAL)
            for index, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stopping:
                    LOG.error("Objectstore helper process %d exited (status %s); starting another",
                              proc.pid, proc.returncode)
                    self.procs[index], ready = self._spawn()
                    os.close(ready)

    def stop(self) -> None:
        """SIGTERM every helper by its PID, wait for it (SIGKILL after STOP_TIMEOUT)."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.kill()
            self._watcher = None
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self.procs = []


def _die_with(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies; exit now if it already has."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(1)


def helper_main(argv: list[str]) -> int:
    """A helper's life: ``argv`` is (port, parent PID); settings come on stdin."""
    from fabric.objectstore.core import Objectstore
    from fabric.objectstore.server import ObjectstoreServer, listen

    port, parent, ready = int(argv[0]), int(argv[1]), int(argv[2])
    _die_with(parent)
    settings = pickle.load(sys.stdin.buffer)
    log.setup(settings.default.log_level, settings.default.log_file)
    # SIGTERM: stop at once, like the parent's server (which kills its serving thread on stop).
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    db = Database.from_settings(settings)
    server = ObjectstoreServer(settings, Objectstore.from_settings(settings, db), listen(settings, port))
    os.write(ready, b"1")
    os.close(ready)
    server.serve()
    return 0
