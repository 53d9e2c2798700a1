"""The Image API's image data: one object per image id in the objectstore (:mod:`fabric.images`
names the bucket and key), written and read over HTTP with the image service's EC2 credential.

Uploads stream from the request into the objectstore (one PUT, or a multipart upload when
the length is unknown or larger than ``[objectstore] max_object_size``) while size, MD5 and
SHA-512 are computed; the objectstore keeps nothing of an upload that fails or ends early.
Downloads stream the object back. Compute hosts fetch the same objects themselves
(:class:`fabric.compute.collaborators.ObjectstoreImages`): no directory is shared.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
from collections.abc import Callable

from fabric import config, exception, images
from fabric.api.bootstrap import ensure_image_service
from fabric.db import Database
from fabric.objectstore.client import S3Client


def client(settings: config.Settings, db: Database) -> S3Client:
    """A client of the objectstore at ``settings.objectstore_url`` signing with the image service's key."""
    access, secret = ensure_image_service(db)
    return S3Client(settings.objectstore_url, access, secret, settings.objectstore.region)


class _Hashing:
    """``read`` passed through, counted and hashed; ImageTooLarge past ``max_size``."""

    def __init__(self, image_id: str, read: Callable[[int], bytes], max_size: int) -> None:
        self.image_id, self._read, self.max_size = image_id, read, max_size
        self.md5, self.sha512, self.size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0

    def read(self, size: int) -> bytes:
        data = self._read(size)
        self.size += len(data)
        if self.size > self.max_size:
            raise exception.ImageTooLarge(image=self.image_id, limit=self.max_size)
        self.md5.update(data)
        self.sha512.update(data)
        return data


def write(settings: config.Settings, db: Database, image_id: str, read: Callable[[int], bytes], max_size: int,
          length: int | None = None) -> dict:
    """Stream ``read`` (``length`` bytes when known) into image ``image_id``'s object; returns size,
    md5 checksum and sha512 hash.

    Raises Invalid when ``image_id`` is not an image id or the data ends before ``length``,
    ImageTooLarge (413) past ``max_size``, ObjectstoreError when the objectstore refuses or
    stores other bytes than were sent; no object is left behind by a failed upload.
    """
    key = images.object_key(image_id)
    if length is not None and length > max_size:
        raise exception.ImageTooLarge(image=image_id, limit=max_size)
    s3 = client(settings, db)
    s3.ensure_bucket(images.BUCKET)
    source = _Hashing(image_id, read, max_size)
    etag = s3.upload(images.BUCKET, key, source.read, length, settings.objectstore.max_object_size)
    md5 = source.md5.hexdigest()
    if "-" not in etag and not hmac.compare_digest(etag, md5):
        s3.delete_object(images.BUCKET, key)
        raise exception.ObjectstoreError(url=s3.endpoint, request=f"PUT /{images.BUCKET}/{key}", status=200,
                                         code="BadDigest", reason=f"ETag {etag} is not the MD5 {md5} sent")
    return {"size": source.size, "checksum": md5, "os_hash_algo": "sha512",
            "os_hash_value": source.sha512.hexdigest()}


def open_data(settings: config.Settings, db: Database, image_id: str) -> http.client.HTTPResponse:
    """The open response of a GET of image ``image_id``'s object (read it, then close it).

    NotFound when the objectstore has no such object; ObjectstoreError otherwise.
    """
    try:
        return client(settings, db).get_object(images.BUCKET, images.object_key(image_id))
    except exception.ObjectstoreError as exc:
        if exc.fields.get("code") in ("NoSuchKey", "NoSuchBucket"):
            raise exception.NotFound(kind="Image data of", ident=image_id) from None
        raise


def remove(settings: config.Settings, db: Database, image_id: str) -> None:
    """Delete the image's bytes, if any (idempotent; a row whose id is no image id has no object)."""
    try:
        key = images.object_key(image_id)
    except exception.Invalid:
        return
    try:
        client(settings, db).delete_object(images.BUCKET, key)
    except exception.ObjectstoreError as exc:
        if exc.fields.get("code") != "NoSuchBucket":
            raise
