"""Volumes served over the network: one ``qemu-nbd`` per exported volume.

Why NBD: a compute host's QEMU opens ``nbd://host:port/name`` itself, with no
kernel initiator or target on either side, so it works the same from any host and
inside network namespaces; the kernel's iSCSI target (LIO, driven by targetcli)
needs configfs, which these hosts' kernel lacks (``/sys/kernel/config`` absent).

Each export is a ``qemu-nbd --fork --persistent`` bound to the host's export
address on a free port of ``[volume] export_port_min..export_port_max``, serving
the qcow2 file as a raw disk under the export name ``<volume id>``. ``--fork``
returns only once the server listens, so a started export is ready. The child
runs in a session of its own: guests keep their disks when the worker restarts.
Every export is recorded in ``volume_exports`` (host, address, port, pid): a
restarted worker recognises a live one by its pid *and* its command line (a pid
reused by another process is not taken for it), and starts a dead one again on
the same port when it can. Stopping kills exactly the recorded pid and waits for
it to exit (a pidfd, no polling).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import VolumeExport
from fabric.exception import VolumeBackendError

LOG = logging.getLogger(__name__)

#: Clients a multi-attach export serves at once; a single-attach one serves two, so a guest
#: whose QEMU reconnects is not refused while its old connection is still being torn down.
MULTIATTACH_CLIENTS = 16
SINGLE_CLIENTS = 2
#: Seconds qemu-nbd gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0


def connection_info(export: dict[str, Any]) -> dict[str, Any]:
    """What a compute host needs to open the export (issue 21's contract)."""
    return {"driver_volume_type": "nbd",
            "data": {"host": export["address"], "port": export["port"], "export_name": export["export_name"],
                     "format": "raw", "volume_id": export["volume_id"]}}


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class NbdExports:
    """The exports of ``host``, recorded in ``db``; see the module docstring."""

    def __init__(self, db: Database, host: str, address: str, ports: range, qemu_nbd: str = "qemu-nbd",
                 run_dir: str | Path = "/tmp") -> None:
        self.db = db
        self.host = host
        self.address = address
        self.ports = ports
        self.qemu_nbd = qemu_nbd
        self.run_dir = Path(run_dir)

    def _command(self, volume_id: str, path: Path, port: int, clients: int) -> list[str]:
        return [self.qemu_nbd, "--fork", "--persistent", f"--shared={clients}", "--format=qcow2",
                f"--bind={self.address}", f"--port={port}", f"--export-name={volume_id}",
                f"--pid-file={self.run_dir / f'nbd-{volume_id}.pid'}", str(path)]

    def is_running(self, export: dict[str, Any], path: Path) -> bool:
        """Whether the recorded pid is alive and is this export's qemu-nbd (not a reused pid)."""
        pid = export.get("pid")
        if not pid:
            return False
        argv = _cmdline(pid)
        return bool(argv) and Path(argv[0]).name == Path(self.qemu_nbd).name and str(path) in argv \
            and f"--port={export['port']}" in argv

    def records(self) -> list[dict[str, Any]]:
        """Every export recorded for this host."""
        with self.db.begin() as session:
            return [self._dict(row) for row in session.scalars(
                sa.select(VolumeExport).where(VolumeExport.host == self.host))]

    def record(self, volume_id: str) -> dict[str, Any] | None:
        with self.db.begin() as session:
            row = session.get(VolumeExport, volume_id)
            return self._dict(row) if row is not None and row.host == self.host else None

    @staticmethod
    def _dict(row: VolumeExport) -> dict[str, Any]:
        return {"volume_id": row.volume_id, "host": row.host, "address": row.address, "port": row.port,
                "export_name": row.export_name, "pid": row.pid, "shared": row.shared}

    def _free_port(self, preferred: int | None) -> int:
        used = {export["port"] for export in self.records()}
        candidates = ([preferred] if preferred else []) + [p for p in self.ports if p not in used]
        for port in candidates:
            with socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET) as probe:
                try:
                    probe.bind((self.address, port))
                except OSError as exc:
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        continue
                    raise VolumeBackendError(host=self.host, action="export", ident="a volume",
                                             reason=f"cannot bind {self.address}:{port}: {exc}") from exc
            return port
        raise VolumeBackendError(host=self.host, action="export", ident="a volume",
                                 reason=f"no free port in {self.ports.start}..{self.ports.stop - 1} on "
                                        f"{self.address} ([volume] export_port_min/max)")

    def ensure(self, volume_id: str, path: Path, *, multiattach: bool = False) -> dict[str, Any]:
        """The volume's running export (started, or started again after a crash); its record."""
        existing = self.record(volume_id)
        if existing is not None and self.is_running(existing, path):
            return existing
        clients = MULTIATTACH_CLIENTS if multiattach else SINGLE_CLIENTS
        self.run_dir.mkdir(parents=True, exist_ok=True)
        port = self._free_port(existing["port"] if existing else None)
        pid_file = self.run_dir / f"nbd-{volume_id}.pid"
        pid_file.unlink(missing_ok=True)
        try:
            subprocess.run(self._command(volume_id, path, port, clients), check=True, capture_output=True,
                           text=True, start_new_session=True, stdin=subprocess.DEVNULL)
            pid = int(pid_file.read_text().strip())
        except FileNotFoundError as exc:
            raise VolumeBackendError(host=self.host, action="export", ident=volume_id,
                                     reason=f"{self.qemu_nbd} is not installed (Debian package qemu-utils), "
                                            f"or it wrote no pid file: {exc}") from exc
        except subprocess.CalledProcessError as exc:
            raise VolumeBackendError(host=self.host, action="export", ident=volume_id,
                                     reason=f"qemu-nbd: {exc.stderr.strip()[-300:]}") from exc
        export = {"volume_id": volume_id, "host": self.host, "address": self.address, "port": port,
                  "export_name": volume_id, "pid": pid, "shared": clients}
        with self.db.begin() as session:
            session.execute(sa.delete(VolumeExport).where(VolumeExport.volume_id == volume_id))
            session.add(VolumeExport(**export))
        LOG.info("volume %s exported over NBD at %s:%d (qemu-nbd pid %d)", volume_id, self.address, port, pid)
        return export

    def stop(self, volume_id: str, path: Path | None = None) -> bool:
        """End the volume's export (its recorded qemu-nbd only) and forget it; True when one ran."""
        export = self.record(volume_id)
        if export is None:
            return False
        ran = False
        if path is None or self.is_running(export, path):
            ran = self._terminate(export["pid"], export)
        with self.db.begin() as session:
            session.execute(sa.delete(VolumeExport).where(VolumeExport.volume_id == volume_id,
                                                          VolumeExport.host == self.host))
        (self.run_dir / f"nbd-{volume_id}.pid").unlink(missing_ok=True)
        return ran

    def _terminate(self, pid: int | None, export: dict[str, Any]) -> bool:
        if not pid:
            return False
        argv = _cmdline(pid)
        if not argv or Path(argv[0]).name != Path(self.qemu_nbd).name or \
                f"--export-name={export['export_name']}" not in argv:
            return False  # gone, or the pid now belongs to someone else
        try:
            handle = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        try:
            os.kill(pid, signal.SIGTERM)
            readable, _, _ = select.select([handle], [], [], STOP_TIMEOUT)
            if not readable:
                LOG.warning("qemu-nbd %d of volume %s ignored SIGTERM for %.0fs; killing it", pid,
                            export["volume_id"], STOP_TIMEOUT)
                os.kill(pid, signal.SIGKILL)
                select.select([handle], [], [], STOP_TIMEOUT)
        except ProcessLookupError:
            pass
        finally:
            os.close(handle)
        return True
