"""Guest disks: a cached base copy of each image and a qcow2 overlay per guest (or a blank qcow2
for a guest that boots a kernel without a disk image)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from fabric.exception import HypervisorError


def qemu_img(*args: str, host: str, instance: str) -> str:
    try:
        done = subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise HypervisorError(host=host, action="prepare the disk of", instance=instance,
                              reason="qemu-img is not installed (Debian package qemu-utils)") from exc
    except subprocess.CalledProcessError as exc:
        raise HypervisorError(host=host, action="prepare the disk of", instance=instance,
                              reason=f"qemu-img {args[0]}: {exc.stderr.strip()[-300:]}") from exc
    return done.stdout


class ImageCache:
    """Base images under ``<instances_path>/_base``, shared by every guest on the host."""

    def __init__(self, instances_path: str | Path, host: str) -> None:
        self.base_dir = Path(instances_path) / "_base"
        self.host = host

    def cached_base(self, source: str, instance: str) -> Path:
        """A read-only cached copy of ``source`` (copied once per content version)."""
        src = Path(source)
        try:
            st = src.stat()
        except OSError as exc:
            raise HypervisorError(host=self.host, action="prepare the disk of", instance=instance,
                                  reason=f"image {source} is unreadable: {exc.strerror}") from exc
        key = hashlib.sha256(f"{src.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:20]
        target = self.base_dir / key
        if not target.exists():
            self.base_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".part{os.getpid()}")
            shutil.copyfile(src, partial)
            partial.chmod(0o444)
            os.replace(partial, target)  # atomic: concurrent spawns never see half a base
        return target

    def create_overlay(self, source: str, source_format: str, target: Path, disk_gb: int, instance: str) -> Path:
        """A qcow2 overlay at ``target`` on the cached base of ``source``, at least ``disk_gb`` GiB."""
        base = self.cached_base(source, instance)
        info = json.loads(qemu_img("info", "--output=json", "-f", source_format, str(base),
                                    host=self.host, instance=instance))
        size = max(int(info.get("virtual-size", 0)), disk_gb * 1024**3)
        qemu_img("create", "-q", "-f", "qcow2", "-F", source_format, "-b", str(base), str(target), str(size),
                  host=self.host, instance=instance)
        return target

    def create_blank(self, target: Path, disk_gb: int, instance: str) -> Path:
        """An empty qcow2 of ``disk_gb`` GiB at ``target`` (sparse: it grows as the guest writes)."""
        qemu_img("create", "-q", "-f", "qcow2", str(target), f"{disk_gb}G", host=self.host, instance=instance)
        return target
