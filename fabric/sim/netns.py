"""Network namespaces of simulated hosts, the processes inside them, and process identity.

Everything here is named and found by fabric's own prefix: a simulated
cloud's namespaces are ``<prefix>-<cloud>-h<N>`` (hosts) and
``<prefix>-<cloud>-ul`` (the underlay), nothing else is ever touched. A
process is known by its pid *and* its start time (``/proc/<pid>/stat``), so
a pid recorded by a crashed run and since reused by someone else's process
is never signalled.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
from typing import ClassVar

from fabric.exception import FabricError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
#: A cloud's name: short, so every namespace and host name stays legible.
CLOUD_NAME = re.compile(r"[a-z][a-z0-9]{0,7}")

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


class SimulationError(FabricError):
    """Simulated hosts could not be set up or taken down (local to the tool; never sent)."""

    remote_safe: ClassVar[bool] = False
    code: ClassVar[int] = 500
    msg_fmt: ClassVar[str] = "{reason}"


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a short command; SimulationError with its stderr when ``check`` and it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise SimulationError(reason=f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command inside namespace ``ns``."""
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def namespace_pattern(prefix: str) -> re.Pattern[str]:
    """Names of simulated-cloud namespaces under ``prefix``: groups ``cloud`` and ``role``."""
    return re.compile(rf"{re.escape(prefix)}-(?P<cloud>{CLOUD_NAME.pattern})-(?P<role>h[0-9]{{1,3}}|ul)")


def list_namespaces() -> list[str]:
    """Names of the namespaces under /run/netns."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def add_namespace(name: str) -> None:
    """A new namespace with loopback up and IPv6 off (nothing leaves by router solicitation)."""
    sh("ip", "netns", "add", name)
    in_ns(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    sh("ip", "-n", name, "link", "set", "lo", "up")


def delete_namespace(name: str) -> None:
    """Delete a namespace (its links go with it); no error when it is already gone."""
    if os.path.exists(os.path.join(NETNS_RUN_DIR, name)):
        sh("ip", "netns", "del", name, check=False)


def enter(name: str) -> None:
    """Move the calling thread into namespace ``name`` (setns(2) is per thread for network namespaces)."""
    fd = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise SimulationError(reason=f"setns into {name} failed: {os.strerror(errno)}")
    finally:
        os.close(fd)


# --- processes ---------------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has finished; only its parent's wait is missing
        return None
    return int(fields[19])


def is_same_process(pid: int, started: int) -> bool:
    """True when ``pid`` is still the process that started at ``started``."""
    return start_time(pid) == started


def pids_in(ns: str) -> list[int]:
    """Pids of the processes whose network namespace is ``ns`` (never this process)."""
    try:
        target = os.stat(os.path.join(NETNS_RUN_DIR, ns))
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
                found.append(int(entry))
    return sorted(found)


def stop_processes(processes: list[tuple[int, int]], grace: float = 15.0) -> None:
    """SIGTERM each (pid, start time) that is still that process, SIGKILL what outlives ``grace``.

    A finished child that is not reaped yet (a zombie) counts as gone: its owner's
    Popen reaps it; nothing here waits on other code's children.
    """
    alive = [(pid, started) for pid, started in processes if is_same_process(pid, started)]
    for pid, _ in alive:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for sig_deadline, sig in ((deadline, signal.SIGKILL), (time.monotonic() + grace + 10, None)):
        while alive and time.monotonic() < sig_deadline:
            alive = [(pid, started) for pid, started in alive if is_same_process(pid, started)]
            if alive:
                time.sleep(0.05)
        if sig is None:
            break
        for pid, _ in alive:
            _signal(pid, sig)
    if alive:
        raise SimulationError(reason=f"processes {[pid for pid, _ in alive]} did not exit after SIGKILL")


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the process that started it dies, even by SIGKILL."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_namespace_processes(ns: str, grace: float = 5.0) -> None:
    """Stop every process living in namespace ``ns`` (QEMU, dnsmasq, workers)."""
    stop_processes([(pid, started) for pid in pids_in(ns) if (started := start_time(pid)) is not None], grace)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
