"""Volumes as qcow2 files on the volume host, made and changed with ``qemu-img``.

Layout: ``<data_dir>/volume-<id>.qcow2``, one file per volume; nothing else of
the host is read or written. Every file is made under a temporary name and
renamed into place when complete, so a worker killed mid-create leaves no
half-made volume under the final name, and a redelivered create finds the
finished file and does nothing.

Snapshots are qcow2 *internal* snapshots (``qemu-img snapshot -c``) named
``snapshot-<id>`` inside the volume's own file, rather than external overlays:
an overlay would make the live file a backing file of a new one, so every
snapshot would change which file the volume *is* (and, for an exported volume,
which file qemu-nbd serves) and deleting a snapshot in the middle of a chain
would need a ``qemu-img commit``/``rebase`` of the neighbours. Internal
snapshots keep one file per volume whatever happens, make a snapshot's delete a
``qemu-img snapshot -d``, and a volume from a snapshot a ``qemu-img convert -l``
of it. Their cost: ``qemu-img`` needs the file's write lock, which qemu-nbd holds
while it serves an attached volume. A snapshot of an in-use volume (Cinder's
``force``) is therefore a standalone copy, ``snapshot-<id>.qcow2``, read with shared
access while the guest runs: crash-consistent only if the guest does not write
meanwhile, as any unquiesced snapshot. A volume from a snapshot reads whichever form
the snapshot has. Dropping an internal snapshot needs the write lock too: while the
volume is attached it fails (the snapshot ends ``error_deleting`` with the reason) and
succeeds once detached.

Block storage over iSCSI (LIO through ``targetcli``) needs configfs, which these
hosts' kernel lacks (``/sys/kernel/config`` is absent, measured); volumes are
exported over NBD instead (:mod:`fabric.volume.exports`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from fabric.exception import NotFound, VolumeBackendError

GIB = 1024**3


class QcowFileDriver:
    """qcow2 files under ``root`` on host ``host``, through the ``qemu_img`` binary."""

    def __init__(self, root: str | Path, host: str, qemu_img: str = "qemu-img") -> None:
        self.root = Path(root)
        self.host = host
        self.qemu_img_binary = qemu_img

    def path(self, volume_id: str) -> Path:
        """Where volume ``volume_id``'s file lives (ids are UUIDs written by the API)."""
        if "/" in volume_id or volume_id.startswith("."):
            raise VolumeBackendError(host=self.host, action="find", ident=volume_id, reason="not a volume id")
        return self.root / f"volume-{volume_id}.qcow2"

    def _partial(self, volume_id: str) -> Path:
        return self.root / f".volume-{volume_id}.qcow2.partial"

    def _run(self, action: str, ident: str, *args: str) -> str:
        try:
            done = subprocess.run([self.qemu_img_binary, *args], check=True, capture_output=True, text=True)
        except FileNotFoundError as exc:
            raise VolumeBackendError(host=self.host, action=action, ident=ident,
                                     reason=f"{self.qemu_img_binary} is not installed (Debian package qemu-utils)"
                                     ) from exc
        except subprocess.CalledProcessError as exc:
            raise VolumeBackendError(host=self.host, action=action, ident=ident,
                                     reason=f"qemu-img {args[0]}: {exc.stderr.strip()[-300:]}") from exc
        return done.stdout

    def exists(self, volume_id: str) -> bool:
        return self.path(volume_id).is_file()

    def _finish(self, volume_id: str, partial: Path, size_gb: int) -> None:
        """Grow the made file to ``size_gb`` if smaller, then rename it into place."""
        if self.virtual_size(partial, volume_id) < size_gb * GIB:
            self._run("resize", volume_id, "resize", "-f", "qcow2", str(partial), f"{size_gb}G")
        os.replace(partial, self.path(volume_id))

    def _start(self, volume_id: str) -> Path | None:
        """The temporary file to make, or None when the volume's file is complete already."""
        if self.exists(volume_id):
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self._partial(volume_id)
        partial.unlink(missing_ok=True)
        return partial

    def create_empty(self, volume_id: str, size_gb: int) -> None:
        """An empty (zeroed) volume of ``size_gb`` GiB; nothing when it exists."""
        if (partial := self._start(volume_id)) is not None:
            self._run("create", volume_id, "create", "-q", "-f", "qcow2", str(partial), f"{size_gb}G")
            os.replace(partial, self.path(volume_id))

    def create_from_file(self, volume_id: str, size_gb: int, source: str | Path, source_format: str) -> None:
        """A volume holding ``source``'s disk (an image file of ``source_format``), grown to ``size_gb``."""
        if (partial := self._start(volume_id)) is not None:
            self._run("convert", volume_id, "convert", "-q", "-f", source_format, "-O", "qcow2",
                      str(source), str(partial))
            self._finish(volume_id, partial, size_gb)

    def create_from_snapshot(self, volume_id: str, size_gb: int, parent_id: str, snapshot_id: str) -> None:
        """A standalone volume holding snapshot ``snapshot_id`` of volume ``parent_id``."""
        if (partial := self._start(volume_id)) is not None:
            copy = self.snapshot_copy(snapshot_id)
            source = ([str(copy)] if copy.is_file() else
                      ["-l", f"snapshot.name={self.snapshot_name(snapshot_id)}", str(self.path(parent_id))])
            self._run("convert", volume_id, "convert", "-q", "-U", "-f", "qcow2", "-O", "qcow2", *source,
                      str(partial))
            self._finish(volume_id, partial, size_gb)

    def clone(self, volume_id: str, size_gb: int, source_id: str) -> None:
        """A standalone copy of volume ``source_id`` (its current bytes, shared-read if it is exported)."""
        if (partial := self._start(volume_id)) is not None:
            self._run("convert", volume_id, "convert", "-q", "-U", "-f", "qcow2", "-O", "qcow2",
                      str(self.path(source_id)), str(partial))
            self._finish(volume_id, partial, size_gb)

    def convert_to(self, volume_id: str, target: str | Path, output_format: str) -> None:
        """Write the volume's current bytes to ``target`` as a disk of qemu-img's ``output_format``
        (read with shared access: an exported volume's qemu-nbd holds the write lock)."""
        self._run("convert", volume_id, "convert", "-q", "-U", "-f", "qcow2", "-O", output_format,
                  str(self.path(volume_id)), str(target))

    def virtual_size(self, path: str | Path, ident: str) -> int:
        """Bytes the guest sees of the qcow2 file at ``path``."""
        info = json.loads(self._run("inspect", ident, "info", "-U", "--output=json", str(path)))
        return int(info["virtual-size"])

    def size_of(self, volume_id: str) -> int:
        """Bytes the guest sees of the volume; NotFound when it has no file."""
        if not self.exists(volume_id):
            raise NotFound(kind="Volume file", ident=volume_id)
        return self.virtual_size(self.path(volume_id), volume_id)

    def extend(self, volume_id: str, size_gb: int) -> None:
        """Grow the volume to ``size_gb`` GiB (nothing when it is that big already)."""
        if self.size_of(volume_id) < size_gb * GIB:
            self._run("extend", volume_id, "resize", "-f", "qcow2", str(self.path(volume_id)), f"{size_gb}G")

    def delete(self, volume_id: str) -> None:
        """Remove the volume's file (and any partial one); nothing when it is gone."""
        self._partial(volume_id).unlink(missing_ok=True)
        self.path(volume_id).unlink(missing_ok=True)

    @staticmethod
    def snapshot_name(snapshot_id: str) -> str:
        return f"snapshot-{snapshot_id}"

    def snapshots(self, volume_id: str) -> set[str]:
        """Names of the internal snapshots in the volume's file."""
        info = json.loads(self._run("inspect", volume_id, "info", "-U", "--output=json",
                                    str(self.path(volume_id))))
        return {entry["name"] for entry in info.get("snapshots", [])}

    def snapshot_copy(self, snapshot_id: str) -> Path:
        """Where the standalone copy of a live snapshot lives (see the module docstring)."""
        return self.root / f"snapshot-{snapshot_id}.qcow2"

    def create_snapshot(self, volume_id: str, snapshot_id: str, *, live: bool = False) -> None:
        """Take snapshot ``snapshot-<id>`` of the volume: an internal one, or with ``live`` (the
        volume is served, qemu-nbd holds its lock) a standalone copy. Nothing when it exists."""
        if live:
            final = self.snapshot_copy(snapshot_id)
            if not final.is_file():
                partial = self.root / f".snapshot-{snapshot_id}.qcow2.partial"
                partial.unlink(missing_ok=True)
                self._run("snapshot", snapshot_id, "convert", "-q", "-U", "-f", "qcow2", "-O", "qcow2",
                          str(self.path(volume_id)), str(partial))
                os.replace(partial, final)
            return
        name = self.snapshot_name(snapshot_id)
        if name not in self.snapshots(volume_id):
            self._run("snapshot", snapshot_id, "snapshot", "-c", name, str(self.path(volume_id)))

    def delete_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        """Drop the snapshot, whichever its form; nothing when it (or the volume's file) is gone."""
        self.snapshot_copy(snapshot_id).unlink(missing_ok=True)
        if not self.exists(volume_id):
            return
        name = self.snapshot_name(snapshot_id)
        if name in self.snapshots(volume_id):
            self._run("delete snapshot", snapshot_id, "snapshot", "-d", name, str(self.path(volume_id)))
