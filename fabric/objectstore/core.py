"""What every handler shares: the settings, the database, the blob store and the authenticator."""

from __future__ import annotations

import dataclasses
import mmap
import os
import time
from pathlib import Path

from fabric import config
from fabric.db import Database
from fabric.objectstore import access, metadata
from fabric.objectstore.auth import Authenticator
from fabric.objectstore.metadata import BucketInfo
from fabric.objectstore.request import S3Request
from fabric.objectstore.storage import BlobStore

#: Seconds a bucket's row (owner, ACL) is reused by this process. A change made by any process
#: serving the same storage directory drops it at once (:class:`BucketChanges`); a change made
#: by an objectstore on another host is seen this late at most.
BUCKET_CACHE_SECONDS = 1.0


class BucketChanges:
    """A stamp every process serving one storage directory maps from the file ``path``.

    A process that created, deleted or re-ACLed a bucket writes a new random stamp
    after its commit; a cached bucket row read under another stamp is read again, so the
    processes of one objectstore see each other's bucket changes at once.
    """

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)

    def stamp(self) -> bytes:
        return self._map[:8]

    def changed(self) -> None:
        self._map[:8] = os.urandom(8)


@dataclasses.dataclass
class Objectstore:
    settings: config.Settings
    db: Database
    store: BlobStore
    auth: Authenticator
    changes: BucketChanges
    _buckets: dict[str, tuple[float, bytes, BucketInfo]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: config.Settings, db: Database) -> Objectstore:
        store = BlobStore(settings.objectstore_dir)
        return cls(settings, db, store,
                   Authenticator(db, settings.objectstore.region, settings.objectstore.credential_cache_seconds),
                   BucketChanges(store.root / "bucket-changes"))

    @property
    def max_object_size(self) -> int:
        return self.settings.objectstore.max_object_size

    def lookup_bucket(self, name: str) -> BucketInfo:
        """The bucket called ``name`` (cached for a second); NoSuchBucket."""
        now = time.monotonic()
        stamp = self.changes.stamp()  # before the query: a change committed after it is not missed
        cached = self._buckets.get(name)
        if cached is not None and now - cached[0] < BUCKET_CACHE_SECONDS and cached[1] == stamp:
            return cached[2]
        bucket = metadata.get_bucket(self.db, name)
        if len(self._buckets) > 10000:
            self._buckets.clear()
        self._buckets[name] = (now, stamp, bucket)
        return bucket

    def forget_bucket(self, name: str) -> None:
        """Drop every process's cached row of a bucket this process just created, changed or
        deleted (call after the commit)."""
        self._buckets.pop(name, None)
        self.changes.changed()

    def bucket(self, req: S3Request, action: str) -> BucketInfo:
        """The request's bucket if the caller may do ``action`` to it; NoSuchBucket, AccessDenied."""
        bucket = self.lookup_bucket(req.bucket)
        access.require(bucket, req.caller, action)
        return bucket

    def recover(self) -> tuple[int, int]:
        """Remove what a crash left in the blob store (call before serving)."""
        return self.store.recover(lambda: metadata.referenced_blobs(self.db))
