"""The Image API's writes to the image store (:class:`fabric.images.ImageStore`, one file per
image id in ``[api] image_dir``, default ``data_dir/images``). Uploads stream to a temporary
file that is renamed into place only once complete, so a reader never sees a partial image.

The compute worker on the same host reads the store through
:class:`fabric.compute.collaborators.LocalImageStore`, which resolves what an instance
boots with :func:`fabric.images.resolve_boot` and opens only
:meth:`fabric.images.ImageStore.existing_file`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from fabric import config, exception
from fabric.images import ImageStore

CHUNK = 1024 * 1024


def write(settings: config.Settings, image_id: str, read: Callable[[int], bytes], max_size: int) -> dict:
    """Stream ``read`` into the store; returns size, md5 checksum and sha512 hash.

    Raises Invalid when ``image_id`` is not an image id, ImageTooLarge (413) past
    ``max_size``; leaves nothing behind on failure.
    """
    final = ImageStore.from_settings(settings).path(image_id)
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
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
    """Delete the image's bytes, if any (idempotent; a row whose id is no image id has no file)."""
    try:
        path = ImageStore.from_settings(settings).path(image_id)
    except exception.Invalid:
        return
    path.unlink(missing_ok=True)
