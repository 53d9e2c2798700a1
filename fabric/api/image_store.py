"""The image store: one file per image id in ``[api] image_dir`` (default
``data_dir/images``). Uploads stream to a temporary file that is renamed into
place only once complete, so a reader never sees a partial image.

The compute worker reads images from here with :func:`image_path` (same
host) or downloads them through ``GET /image/v2/images/{id}/file``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from fabric import config, exception

CHUNK = 1024 * 1024


def store_dir(settings: config.Settings) -> Path:
    path = Path(settings.api.image_dir or Path(settings.default.data_dir) / "images")
    path.mkdir(parents=True, exist_ok=True)
    return path


def image_path(settings: config.Settings, image_id: str) -> Path:
    """Where an image's bytes live (the file exists only once uploaded)."""
    if "/" in image_id or image_id in ("", ".", ".."):
        raise exception.Invalid(reason=f"image id {image_id!r} is not a valid image id")
    return store_dir(settings) / image_id


def write(settings: config.Settings, image_id: str, read: Callable[[int], bytes], max_size: int) -> dict:
    """Stream ``read`` into the store; returns size, md5 checksum and sha512 hash.

    Raises Invalid (413) past ``max_size``; leaves nothing behind on failure.
    """
    final = image_path(settings, image_id)
    partial = final.with_name(f".{image_id}.partial-{os.getpid()}")
    md5, sha512, size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
    try:
        with open(partial, "wb") as handle:
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_size:
                    raise exception.ImageTooLarge(image=image_id, limit=max_size)
                md5.update(chunk)
                sha512.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return {"size": size, "checksum": md5.hexdigest(), "os_hash_algo": "sha512",
            "os_hash_value": sha512.hexdigest()}


def remove(settings: config.Settings, image_id: str) -> None:
    image_path(settings, image_id).unlink(missing_ok=True)

